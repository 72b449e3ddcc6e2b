//! Stale bases in the reports (issue 22 part 4): which base each running image is built on and
//! whether it is current, looked up in the background so that a report is written at once with
//! what the names decide and enriched when the registry answers.
//!
//! One check per distinct (image, `builtOn` bases) across all namespaces, made by a
//! [`BaseChecks`] (paced at `registryLookups.reportLookupsPerSecond`, on the registry client's
//! digest and tag caches); a finding is re-checked once `registryLookups.tagTtl` (at least
//! [`MIN_RECHECK`]) has passed, by a sweep, not per report write. When a finding changes, the
//! namespaces that run the image are reconciled again. Images no base check applies to are
//! never asked about; entries no namespace uses any more are dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use byoc_policy::ImageRef;
use byoc_policy::requirement::base::Finding;
use byoc_registry::BaseChecks;
use jiff::Timestamp;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tracing::debug;

use super::build::BaseLine;

/// The shortest time between two checks of one image.
pub const MIN_RECHECK: Duration = Duration::from_secs(1);

/// Checks in flight at once (the pacing bounds the rate; this bounds the tasks).
const CONCURRENT_CHECKS: usize = 8;

pub use byoc_policy::requirement::base::Key;

#[derive(Default)]
struct Entry {
    line: Option<BaseLine>,
    checked: Option<Instant>,
    queued: bool,
    users: BTreeSet<String>,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<Key, Entry>,
    by_namespace: HashMap<String, BTreeSet<Key>>,
}

/// The base findings of the images in use, kept current in the background.
pub struct Stale {
    checks: Arc<BaseChecks>,
    recheck: Duration,
    state: Mutex<State>,
    queue: mpsc::UnboundedSender<Key>,
    wake: mpsc::UnboundedSender<String>,
}

impl Stale {
    /// Starts the checks (their worker and the re-check sweep, which end with the returned
    /// value's last owner); namespaces whose findings changed come out of the receiver.
    pub fn start(
        checks: BaseChecks,
        recheck: Duration,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<String>) {
        let (queue, mut queued) = mpsc::unbounded_channel::<Key>();
        let (wake, woken) = mpsc::unbounded_channel();
        let stale = Arc::new(Self {
            checks: Arc::new(checks),
            recheck: recheck.max(MIN_RECHECK),
            state: Mutex::default(),
            queue,
            wake,
        });
        let weak = Arc::downgrade(&stale);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(CONCURRENT_CHECKS));
            while let Some(key) = queued.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let Some(stale) = weak.upgrade() else { break };
                tokio::spawn(async move {
                    stale.check(key).await;
                    drop(slot);
                });
            }
        });
        let weak = Arc::downgrade(&stale);
        let every = stale.recheck;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(stale) = weak.upgrade() else { break };
                stale.sweep();
            }
        });
        (stale, woken)
    }

    /// What is known of the images `namespace` runs now (`keys`), by image; the namespace no
    /// longer uses the others. Unknown and expired ones are queued for a check.
    pub fn lines(&self, namespace: &str, keys: BTreeSet<Key>) -> HashMap<String, BaseLine> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let old = state
            .by_namespace
            .insert(namespace.to_owned(), keys.clone())
            .unwrap_or_default();
        for gone in old.difference(&keys) {
            release(&mut state, gone, namespace);
        }
        if keys.is_empty() {
            state.by_namespace.remove(namespace);
        }
        let now = Instant::now();
        let mut lines = HashMap::new();
        for key in keys {
            let entry = state.entries.entry(key.clone()).or_default();
            entry.users.insert(namespace.to_owned());
            self.queue_if_due(&key, entry, now);
            lines.insert(key.0, entry.line.clone().unwrap_or(BaseLine::Checking));
        }
        lines
    }

    /// `namespace` runs nothing any more (deleted, exempt, or without workloads).
    pub fn forget(&self, namespace: &str) {
        self.lines(namespace, BTreeSet::new());
    }

    /// Queues every finding older than the re-check time.
    fn sweep(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        for (key, entry) in &mut state.entries {
            self.queue_if_due(key, entry, now);
        }
    }

    /// Queues `key` for a check unless it is queued already or was checked less than the
    /// re-check time before `now` (one never checked is queued from its creation on).
    fn queue_if_due(&self, key: &Key, entry: &mut Entry, now: Instant) {
        let due = entry
            .checked
            .is_none_or(|at| now.saturating_duration_since(at) >= self.recheck);
        if due && !entry.queued {
            entry.queued = true;
            let _ = self.queue.send(key.clone());
        }
    }

    /// Checks one key and wakes its namespaces when the finding changed.
    async fn check(&self, key: Key) {
        // A key always has bases, so a check always finds something.
        let line = match key.0.parse::<ImageRef>() {
            Ok(image) => self
                .checks
                .check(&image, &key.1, Timestamp::now())
                .await
                .map_or(BaseLine::Checking, BaseLine::Found),
            Err(e) => BaseLine::Found(Finding::Unknown(format!("{e}"))),
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = state.entries.get_mut(&key) else {
            return;
        };
        entry.queued = false;
        entry.checked = Some(Instant::now());
        if entry.line.as_ref() != Some(&line) {
            debug!(image = %key.0, ?line, "base finding changed");
            entry.line = Some(line);
            for namespace in &entry.users {
                let _ = self.wake.send(namespace.clone());
            }
        }
    }
}

/// `namespace` no longer runs `key`: dropped when no namespace does.
fn release(state: &mut State, key: &Key, namespace: &str) {
    if let Some(entry) = state.entries.get_mut(key) {
        entry.users.remove(namespace);
        if entry.users.is_empty() {
            state.entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use byoc_policy::Config;

    #[tokio::test]
    async fn one_check_per_image_across_namespaces_and_both_are_woken() {
        let config = Config::default();
        let checks = BaseChecks::new(&config, Err("offline".to_owned()));
        let (stale, mut woken) = Stale::start(checks, Duration::from_secs(3600));
        let pattern =
            byoc_api::requirements::BaseImage("tools-harbor.wmcloud.org/toolforge/base".into())
                .parse()
                .unwrap();
        let key: Key = (
            "tools-harbor.wmcloud.org/tool-a/web:1".to_owned(),
            vec![pattern],
        );
        let image = key.0.clone();
        for ns in ["tool-a", "tool-b"] {
            let lines = stale.lines(ns, BTreeSet::from([key.clone()]));
            assert_eq!(
                lines[&image],
                BaseLine::Checking,
                "written before the answer"
            );
        }
        let mut names = BTreeSet::new();
        while names.len() < 2 {
            names.insert(woken.recv().await.unwrap());
        }
        assert_eq!(names, BTreeSet::from(["tool-a".into(), "tool-b".into()]));
        match &stale.lines("tool-a", BTreeSet::from([key.clone()]))[&image] {
            BaseLine::Found(Finding::Unknown(why)) => assert!(why.contains("offline"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Checked once, and not again before the re-check time.
        assert_eq!(stale.state.lock().unwrap().entries.len(), 1);
        assert!(woken.try_recv().is_err());
        stale.forget("tool-a");
        assert_eq!(stale.state.lock().unwrap().entries.len(), 1);
        stale.forget("tool-b");
        assert!(stale.state.lock().unwrap().entries.is_empty());
        assert!(stale.state.lock().unwrap().by_namespace.is_empty());
    }
}
