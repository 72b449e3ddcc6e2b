//! A bound on the bytes of request bodies read and parsed at once, so that the webhook's memory
//! stays bounded however many large reviews arrive together.
//!
//! A request takes its declared length (or [`MAX_BODY_BYTES`] when it declares none) from the
//! budget before its body is read, and gives it back once answered. Bodies up to
//! [`SMALL_BODY_BYTES`] (every ordinary review) draw on a quarter of the budget of their own,
//! so they never queue behind large ones. A request that cannot get its bytes within the wait
//! is refused as busy: waiting a little is better than refusing, but the API server gives a
//! webhook only `timeoutSeconds` (5 s in the chart) for the whole call.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::review::{MAX_BODY_BYTES, ReviewError};

/// The default budget: a largest body and a 3 MiB one at once, beside 4 MiB of ordinary
/// reviews (docs/benchmarks.md measures the memory this bounds).
pub const DEFAULT_BYTES: usize = 16 * 1024 * 1024;

/// How long a request waits for its share by default: well within the API server's 5 s.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(3);

/// Bodies up to this size draw on the small share of the budget.
pub const SMALL_BODY_BYTES: usize = 64 * 1024;

/// Bytes of request bodies read or parsed at once.
#[derive(Clone, Debug)]
pub struct BodyBudget {
    small: Arc<Semaphore>,
    large: Arc<Semaphore>,
    large_bytes: usize,
    wait: Duration,
    in_flight: Gauge,
}

/// Bytes taken from a [`BodyBudget`], given back when dropped.
#[derive(Debug)]
pub struct Taken {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
    in_flight: Gauge,
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.in_flight.dec_by(self.bytes as i64);
    }
}

impl BodyBudget {
    /// A budget of `bytes` (at least twice [`MAX_BODY_BYTES`] is sensible, so that a largest
    /// body always fits beside another); a request waits at most `wait` for its share.
    /// `in_flight` shows the bytes taken.
    pub fn new(bytes: usize, wait: Duration, in_flight: Gauge) -> Self {
        let small = (bytes / 4).max(SMALL_BODY_BYTES);
        let large_bytes = bytes.saturating_sub(small).max(SMALL_BODY_BYTES);
        Self {
            small: Arc::new(Semaphore::new(small)),
            large: Arc::new(Semaphore::new(large_bytes)),
            large_bytes,
            wait,
            in_flight,
        }
    }

    /// Takes the bytes of a body of `declared` length (unknown: [`MAX_BODY_BYTES`]), waiting
    /// for them up to the budget's wait.
    pub async fn take(&self, declared: Option<u64>) -> Result<Taken, ReviewError> {
        let size = declared.map_or(MAX_BODY_BYTES, |n| {
            usize::try_from(n).unwrap_or(usize::MAX).min(MAX_BODY_BYTES)
        });
        let (pool, bytes) = if size <= SMALL_BODY_BYTES {
            (&self.small, size.max(1))
        } else {
            // A body larger than the whole share would never get it: it waits for all of it.
            (&self.large, size.min(self.large_bytes))
        };
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        let acquire = Arc::clone(pool).acquire_many_owned(permits);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => {
                self.in_flight.inc_by(bytes as i64);
                Ok(Taken {
                    _permit: permit,
                    bytes,
                    in_flight: self.in_flight.clone(),
                })
            }
            // Timed out, or (never: it is not closed) the semaphore closed.
            _ => Err(ReviewError::Busy(self.wait)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[tokio::test]
    async fn large_bodies_wait_their_turn_and_small_ones_do_not_queue_behind_them() {
        let gauge = Gauge::default();
        let budget = BodyBudget::new(16 * MIB, Duration::from_millis(300), gauge.clone());
        let seven = Some(7 * MIB as u64);
        let first = budget.take(seven).await.unwrap();
        assert_eq!(gauge.get(), 7 * MIB as i64);
        // 12 MiB for large bodies: a second 7 MiB one waits for the first.
        let second = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(seven).await.map(|t| t.bytes) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!second.is_finished());
        // An ordinary review is not behind it.
        let small = budget.take(Some(4096)).await.unwrap();
        assert_eq!(small.bytes, 4096);
        drop(first);
        assert_eq!(second.await.unwrap().unwrap(), 7 * MIB);
        // Bytes taken come back when answered.
        drop(small);
        assert_eq!(gauge.get(), 0);

        // Past the wait, a request is refused as busy; an unknown length counts as the largest.
        let held = budget.take(None).await.unwrap();
        assert_eq!(gauge.get(), 7 * MIB as i64);
        let busy = budget.take(seven).await.unwrap_err();
        assert!(matches!(busy, ReviewError::Busy(_)), "{busy}");
        drop(held);
        // More than the whole share still gets in, alone.
        let all = budget.take(Some(u64::MAX)).await.unwrap();
        assert_eq!(all.bytes, 7 * MIB);
    }

    #[tokio::test]
    async fn a_budget_smaller_than_a_body_still_admits_it_alone() {
        let budget = BodyBudget::new(MIB, Duration::from_millis(100), Gauge::default());
        let taken = budget.take(Some(7 * MIB as u64)).await.unwrap();
        assert_eq!(taken.bytes, 768 * 1024);
        assert!(budget.take(Some(100_000)).await.is_err());
        assert!(budget.take(Some(100)).await.is_ok());
    }
}
