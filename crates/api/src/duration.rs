//! Durations as people write them in this project (`90d`, `12h`, `2w`, `1d12h`): a
//! request's `spec.duration`, the CLI's `--expires`, the policy's `expiryWarning`. One grammar,
//! [`DURATION_PATTERN`](crate::request::DURATION_PATTERN), parsed here.

use jiff::{SignedDuration, Timestamp};
use thiserror::Error;

/// Seconds in a day, the unit of `d`.
const DAY: i64 = 86_400;

/// A duration that does not follow the grammar.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum DurationError {
    /// Not of the form `<number><unit>...`, or too large.
    #[error(
        "not a duration: write a number and a unit, s, m, h, d (24h) or w (7d), for example \
         90d, 12h, 2w or 1d12h"
    )]
    Invalid,
    /// Every term is zero.
    #[error("the duration is zero")]
    Zero,
}

/// The `<number><unit>` terms of `input` (digits, unit byte), or `None` when it is not one or
/// more such terms. The one reader of the grammar: [`parse`] sums the terms, and
/// [`is_duration`](crate::request::is_duration) checks them against the CRD's limits.
pub(crate) fn terms(input: &str) -> Option<Vec<(&str, u8)>> {
    let mut terms = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit = *rest.as_bytes().get(digits)?;
        if digits == 0 || !b"smhdw".contains(&unit) {
            return None;
        }
        terms.push((&rest[..digits], unit));
        rest = &rest[digits + 1..];
    }
    (!terms.is_empty()).then_some(terms)
}

/// Parses `90d`, `12h`, `2w`, `1d12h`, `30m`, `45s`: one or more `<number><unit>` terms, units
/// `s`, `m`, `h`, `d` (24 hours) and `w` (7 days). A total of zero is [`DurationError::Zero`],
/// which callers may accept or refuse.
pub fn parse(input: &str) -> Result<SignedDuration, DurationError> {
    let mut seconds: i64 = 0;
    for (number, unit) in terms(input).ok_or(DurationError::Invalid)? {
        let unit: i64 = match unit {
            b's' => 1,
            b'm' => 60,
            b'h' => 3_600,
            b'd' => DAY,
            _ => 7 * DAY,
        };
        let n: i64 = number.parse().map_err(|_| DurationError::Invalid)?;
        seconds = n
            .checked_mul(unit)
            .and_then(|s| s.checked_add(seconds))
            .ok_or(DurationError::Invalid)?;
    }
    if seconds == 0 {
        return Err(DurationError::Zero);
    }
    Ok(SignedDuration::from_secs(seconds))
}

/// A duration in the grammar [`parse`] reads, largest units first: `14d`, `1d12h`, `90s`, `0s`.
/// Weeks are written as days, which is how admins count a warning window.
pub fn format(duration: SignedDuration) -> String {
    let mut seconds = duration.as_secs().max(0);
    if seconds == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for (unit, name) in [(DAY, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')] {
        if seconds >= unit {
            text.push_str(&format!("{}{name}", seconds / unit));
            seconds %= unit;
        }
    }
    text
}

/// Whole days from `now` until `at` (rounded down; zero once less than a day is left, negative
/// once `at` has passed).
pub fn days_left(at: Timestamp, now: Timestamp) -> i64 {
    at.duration_since(now).as_secs().div_euclid(DAY)
}

/// `3 days left`, `1 day left`, `less than a day left`: [`days_left`] as reminders say it.
pub fn days_left_note(days: i64) -> String {
    match days {
        ..=0 => "less than a day left".to_owned(),
        1 => "1 day left".to_owned(),
        n => format!("{n} days left"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_grammar() {
        let cases = [
            ("90d", 90 * DAY),
            ("12h", 12 * 3_600),
            ("2w", 14 * DAY),
            ("1d12h", 36 * 3_600),
            ("30m", 1_800),
            ("45s", 45),
            ("1w1d1h1m1s", 694_861),
            ("0d1h", 3_600),
        ];
        for (input, secs) in cases {
            assert_eq!(parse(input), Ok(SignedDuration::from_secs(secs)), "{input}");
        }
        for bad in [
            "",
            "d",
            "90",
            "90 d",
            "-1d",
            "1.5d",
            "90D",
            "1y",
            "1d 2h",
            "h1",
            "99999999999999w",
        ] {
            assert_eq!(parse(bad), Err(DurationError::Invalid), "{bad}");
        }
        assert_eq!(parse("0d"), Err(DurationError::Zero));
        assert_eq!(parse("0s0m"), Err(DurationError::Zero));
    }

    #[test]
    fn the_crd_pattern_accepts_what_parses() {
        let re = regex::Regex::new(crate::request::DURATION_PATTERN).unwrap();
        for input in [
            "90d", "12h", "2w", "1d12h", "0d", "0s0m", "999999d", "", "90", "d", "-1d", "1.5d",
            "90D", "1y", " 90d", "1d 2h", "h1",
        ] {
            let parses = matches!(parse(input), Ok(_) | Err(DurationError::Zero));
            assert_eq!(re.is_match(input), parses, "{input:?}");
        }
    }

    #[test]
    fn formats_what_it_parses() {
        for (secs, text) in [
            (0, "0s"),
            (45, "45s"),
            (90, "1m30s"),
            (14 * DAY, "14d"),
            (36 * 3_600, "1d12h"),
            (DAY + 1, "1d1s"),
        ] {
            let d = SignedDuration::from_secs(secs);
            assert_eq!(format(d), text);
            if secs > 0 {
                assert_eq!(parse(text), Ok(d));
            }
        }
    }

    #[test]
    fn days_left_round_down() {
        let now = ts("2026-11-21T12:00:00Z");
        let cases = [
            ("2026-11-24T12:00:00Z", 3, "3 days left"),
            ("2026-11-24T11:59:59Z", 2, "2 days left"),
            ("2026-11-22T12:00:00Z", 1, "1 day left"),
            ("2026-11-22T11:59:59Z", 0, "less than a day left"),
            ("2026-11-21T12:00:01Z", 0, "less than a day left"),
            ("2026-11-21T11:59:59Z", -1, "less than a day left"),
        ];
        for (at, days, note) in cases {
            assert_eq!(days_left(ts(at), now), days, "{at}");
            assert_eq!(days_left_note(days), note, "{at}");
        }
    }
}
