//! Durations and expiry times as admins type them (`90d`, `12h`, `2w`, RFC 3339) and as
//! kubectl prints them (`89d`, `5h30m`).

use byoc_api::duration::DurationError;
use jiff::{SignedDuration, Timestamp};
use thiserror::Error;

/// A duration or expiry that cannot be used.
#[derive(Debug, Error, PartialEq)]
pub enum TimeError {
    /// Not of the form `<number><unit>...`.
    #[error(
        "{0:?} is not a duration: write a number and a unit, s, m, h, d (24h) or w (7d), \
         for example 90d, 12h, 2w or 1d12h"
    )]
    Duration(String),
    /// A duration that ends past the last time there is (the end of year 9999).
    #[error("{0:?} is too long: from now it ends past the last representable time (year 9999)")]
    TooLong(String),
    /// A duration of zero.
    #[error("{0:?} is zero: a duration must be positive")]
    Zero(String),
    /// Neither a duration nor a time.
    #[error(
        "{0:?} is neither a duration (90d, 12h, 2w) nor an RFC 3339 time \
         (2027-03-31T00:00:00Z) nor a date (2027-03-31, midnight UTC)"
    )]
    Expiry(String),
    /// An expiry that is not in the future.
    #[error("{input:?} is {ago} in the past ({at}): an expiry must be in the future")]
    Past {
        /// As typed.
        input: String,
        /// The instant it names.
        at: Timestamp,
        /// How long ago, like `3d`.
        ago: String,
    },
}

/// The current time in whole seconds, as the API stores times and reports print them.
pub fn now() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// Parses `90d`, `12h`, `2w`, `1d12h`, `30m`, `45s` ([`byoc_api::duration::parse`]); the total
/// must be positive.
pub fn parse_duration(input: &str) -> Result<SignedDuration, TimeError> {
    byoc_api::duration::parse(input).map_err(|e| match e {
        DurationError::Invalid => TimeError::Duration(input.to_owned()),
        DurationError::Zero => TimeError::Zero(input.to_owned()),
    })
}

/// The instant `--expires` names: `now` plus a duration, an RFC 3339 time, or a date (midnight
/// UTC). Whole seconds, as the API stores it; it must be after `now`.
pub fn parse_expiry(input: &str, now: Timestamp) -> Result<Timestamp, TimeError> {
    let looks_like_duration = input.starts_with(|c: char| c.is_ascii_digit())
        && input
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    let at = if looks_like_duration {
        let duration = parse_duration(input)?;
        now.checked_add(duration)
            .map_err(|_| TimeError::TooLong(input.to_owned()))?
    } else if let Ok(t) = input.parse::<Timestamp>() {
        t
    } else if let Some(date) = input
        .parse::<jiff::civil::Date>()
        .ok()
        .filter(|_| input.len() == "2027-03-31".len())
    {
        date.to_zoned(jiff::tz::TimeZone::UTC)
            .map_err(|_| TimeError::Expiry(input.to_owned()))?
            .timestamp()
    } else {
        return Err(TimeError::Expiry(input.to_owned()));
    };
    let at = Timestamp::from_second(at.as_second()).map_err(|_| TimeError::Expiry(input.into()))?;
    if at <= now {
        return Err(TimeError::Past {
            input: input.to_owned(),
            at,
            ago: human(now.duration_since(at)),
        });
    }
    Ok(at)
}

/// A duration as kubectl prints ages: `45s`, `5m30s`, `2h`, `3d4h`, `89d`, `2y10d`. Negative
/// durations print as `0s`.
pub fn human(duration: SignedDuration) -> String {
    let seconds = duration.as_secs().max(0);
    let (minutes, hours) = (seconds / 60, seconds / 3_600);
    let days = hours / 24;
    let with = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small}{small_unit}")
        }
    };
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        with(minutes, "m", seconds % 60, "s")
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        with(hours, "h", minutes % 60, "m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        with(days, "d", hours % 24, "h")
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        with(days / 365, "y", days % 365, "d")
    } else {
        format!("{}y", days / 365)
    }
}

/// How long until `expires` at `now`: `89d`, or `expired` once it has passed.
pub fn time_left(expires: Timestamp, now: Timestamp) -> String {
    if expires <= now {
        "expired".to_owned()
    } else {
        human(expires.duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn durations() {
        // The grammar is byoc_api::duration's (tested there); here, the CLI's errors.
        assert_eq!(parse_duration("1d12h"), Ok(SignedDuration::from_hours(36)));
        for bad in ["", "90", "1.5d", "99999999999999w"] {
            assert_eq!(
                parse_duration(bad),
                Err(TimeError::Duration(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(parse_duration("0d"), Err(TimeError::Zero("0d".into())));
        assert!(
            TimeError::Duration("x".into())
                .to_string()
                .contains("for example 90d")
        );
    }

    #[test]
    fn expiries() {
        let now = ts("2026-11-21T12:00:00.750Z");
        let cases = [
            ("90d", "2027-02-19T12:00:00Z"),
            ("12h", "2026-11-22T00:00:00Z"),
            ("2027-03-31T00:00:00Z", "2027-03-31T00:00:00Z"),
            ("2027-03-31T02:00:00+02:00", "2027-03-31T00:00:00Z"),
            ("2027-03-31T00:00:00.9Z", "2027-03-31T00:00:00Z"),
            ("2027-03-31", "2027-03-31T00:00:00Z"),
        ];
        for (input, want) in cases {
            assert_eq!(parse_expiry(input, now), Ok(ts(want)), "{input}");
        }
        let past = parse_expiry("2026-11-18T12:00:00Z", now).unwrap_err();
        assert_eq!(
            past.to_string(),
            "\"2026-11-18T12:00:00Z\" is 3d in the past (2026-11-18T12:00:00Z): an expiry must be \
             in the future"
        );
        assert!(matches!(
            parse_expiry("2026-11-21", now),
            Err(TimeError::Past { .. })
        ));
        for bad in ["tomorrow", "2027-03-31T00:00:00", "31/03/2027", ""] {
            assert_eq!(
                parse_expiry(bad, now),
                Err(TimeError::Expiry(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            parse_expiry("5x", now),
            Err(TimeError::Duration("5x".into()))
        );
        assert_eq!(parse_expiry("0h", now), Err(TimeError::Zero("0h".into())));
        // A duration that reads but ends past year 9999 is too long, not "not a duration".
        let long = parse_expiry("999999w", now).unwrap_err();
        assert_eq!(long, TimeError::TooLong("999999w".into()));
        assert_eq!(
            long.to_string(),
            "\"999999w\" is too long: from now it ends past the last representable time (year \
             9999)"
        );
    }

    #[test]
    fn human_durations_match_kubectl() {
        let cases = [
            (-5, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (599, "9m59s"),
            (600, "10m"),
            (3 * 3_600 - 1, "179m"),
            (3 * 3_600, "3h"),
            (3 * 3_600 + 60, "3h1m"),
            (8 * 3_600, "8h"),
            (47 * 3_600 + 59, "47h"),
            (48 * 3_600, "2d"),
            (7 * 86_400 + 5 * 3_600, "7d5h"),
            (8 * 86_400, "8d"),
            (90 * 86_400 - 1, "89d"),
            (730 * 86_400, "2y"),
            (740 * 86_400, "2y10d"),
            (8 * 365 * 86_400, "8y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human(SignedDuration::from_secs(secs)), want, "{secs}s");
        }
        let now = ts("2026-11-21T12:00:00Z");
        assert_eq!(time_left(ts("2027-02-19T11:59:59Z"), now), "89d");
        assert_eq!(time_left(now, now), "expired");
    }
}
