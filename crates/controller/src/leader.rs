//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): every replica watches
//! and keeps its caches warm, only the leader writes.

use futures::Stream;
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Whether this replica leads right now. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Leadership(watch::Receiver<bool>);

impl Leadership {
    /// A leadership that never changes (tests, or a single replica without a Lease).
    pub fn fixed(leader: bool) -> Self {
        Self(watch::channel(leader).1)
    }

    /// Whether this replica holds the lease.
    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Yields each time this replica becomes the leader, and at once if it already is: the
    /// moment to reconcile everything, since a standby skipped every change it saw.
    pub fn acquired(&self) -> impl Stream<Item = ()> + Send + use<> {
        let mut rx = self.0.clone();
        rx.mark_changed();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                rx.changed().await.ok()?;
                if *rx.borrow_and_update() {
                    return Some(((), rx));
                }
            }
        })
    }

    /// Completes when leadership changes; returns the new value, or `None` once the election
    /// has ended.
    pub async fn changed(&mut self) -> Option<bool> {
        self.0.changed().await.ok()?;
        Some(*self.0.borrow_and_update())
    }
}

/// How to take part in the election.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity (`holderIdentity`); unique per replica.
    pub identity: String,
    /// How long a lease lasts without renewal, in seconds; the holder renews a third of it
    /// before the end.
    pub duration_secs: u64,
}

/// The running election: the leadership it reports, and the task that renews the lease. The
/// task ends only when every [`Leadership`] is dropped (it then releases the lease, so a
/// standby takes over without waiting for it to expire) or when it fails.
pub struct Election {
    /// Whether this replica leads.
    pub leadership: Leadership,
    /// The lease task.
    pub task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

impl Election {
    /// Joins the election (creating the Lease if it does not exist).
    pub async fn join(client: Client, settings: &LeaseSettings) -> Result<Self, LeaseManagerError> {
        let duration = settings.duration_secs.max(2);
        let manager = LeaseManagerBuilder::new(client, &settings.name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(duration)
            .with_grace((duration / 3).max(1))
            .with_field_manager(format!("byoc-controller-lease-{}", settings.identity))
            .build()
            .await?;
        let (rx, task) = manager.watch().await;
        Ok(Self {
            leadership: Leadership(rx),
            task,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn acquired_fires_on_each_acquisition() {
        let (tx, rx) = watch::channel(false);
        let leadership = Leadership(rx);
        let mut acquired = Box::pin(leadership.acquired());
        assert!(!leadership.is_leader());
        tx.send(true).unwrap();
        acquired.next().await.unwrap();
        assert!(leadership.is_leader());
        tx.send(false).unwrap();
        tx.send(true).unwrap();
        acquired.next().await.unwrap();
        drop(tx);
        assert!(
            acquired.next().await.is_none(),
            "the stream ends with the election"
        );
    }

    #[tokio::test]
    async fn acquired_fires_at_once_when_already_leading() {
        let leadership = Leadership::fixed(true);
        let mut acquired = Box::pin(leadership.acquired());
        acquired.next().await.unwrap();
        assert!(acquired.next().await.is_none());
        let standby = Leadership::fixed(false);
        assert!(Box::pin(standby.acquired()).next().await.is_none());
    }
}
