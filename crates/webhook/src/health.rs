//! The health of the namespace watch: whether it fails, since when, and when it last heard from
//! the API server. The watch reports what happens ([`WatchHealth::contact`],
//! [`WatchHealth::failed`]); readiness and metrics read it ([`WatchHealth::check`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct State {
    /// The first failure since the last contact; `None` while the watch works.
    failing_since: Option<Instant>,
    /// The error of the last failure.
    last_error: String,
    /// The last event, or the last answer of the API server to the watch's list or watch.
    last_contact: Instant,
}

/// Shared health of one watch. Cheap to clone; clones share the state.
#[derive(Clone, Debug)]
pub struct WatchHealth(Arc<Mutex<State>>);

impl WatchHealth {
    /// A watch started at `now`, not failing.
    pub fn new(now: Instant) -> Self {
        Self(Arc::new(Mutex::new(State {
            failing_since: None,
            last_error: String::new(),
            last_contact: now,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The watch received an event, or the API server answered its list or watch request: it
    /// works.
    pub fn contact(&self, now: Instant) {
        let mut state = self.state();
        state.failing_since = None;
        state.last_contact = now;
    }

    /// The watch failed with `error`; it stays failing until the next contact.
    pub fn failed(&self, now: Instant, error: &str) {
        let mut state = self.state();
        state.failing_since.get_or_insert(now);
        error.clone_into(&mut state.last_error);
    }

    /// Whether the watch works now (it may have failed before).
    pub fn is_healthy(&self) -> bool {
        self.state().failing_since.is_none()
    }

    /// How long ago the watch last heard from the API server.
    pub fn since_contact(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.state().last_contact)
    }

    /// `Err` naming the failure once the watch has failed without a contact for longer than
    /// `tolerance`.
    pub fn check(&self, now: Instant, tolerance: Duration) -> Result<(), String> {
        let state = self.state();
        match state.failing_since {
            Some(since) if now.saturating_duration_since(since) > tolerance => Err(format!(
                "the namespace watch has been failing for {}s (more than {}s), so grants may \
                 be stale; last error: {}",
                now.saturating_duration_since(since).as_secs(),
                tolerance.as_secs(),
                state.last_error
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_longer_than_the_tolerance_is_unhealthy_until_the_next_contact() {
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        let tolerance = Duration::from_secs(30);
        let health = WatchHealth::new(start);
        assert!(health.is_healthy());
        assert_eq!(health.check(at(100), tolerance), Ok(()));

        health.failed(at(10), "connection refused");
        assert!(!health.is_healthy());
        assert_eq!(
            health.check(at(40), tolerance),
            Ok(()),
            "within the tolerance"
        );
        // Later failures do not move the start of the outage.
        health.failed(at(35), "connection reset");
        let why = health.check(at(41), tolerance).unwrap_err();
        assert!(why.contains("failing for 31s"), "{why}");
        assert!(why.ends_with("last error: connection reset"), "{why}");
        assert_eq!(health.since_contact(at(41)), Duration::from_secs(41));

        health.contact(at(50));
        assert!(health.is_healthy());
        assert_eq!(health.check(at(200), tolerance), Ok(()));
        assert_eq!(health.since_contact(at(52)), Duration::from_secs(2));

        // A new outage counts from its own first failure.
        health.failed(at(60), "timed out");
        assert_eq!(health.check(at(90), tolerance), Ok(()));
        assert!(health.check(at(91), tolerance).is_err());
    }
}
