//! Base checks for the reports (issue 22 part 4): which base a running image is built on and
//! whether it is current ([`byoc_policy::requirement::base`]), its answers gathered with the
//! same [`Client`] (digest cache, tag TTL cache, one request per key in flight) the webhook
//! uses. Shared by the controller's reports and `kubectl byoc images --stale`, so both reach
//! the same finding from the same registry answers.
//!
//! Paced: every lookup (cache hits included) takes a slot of `reportLookupsPerSecond`, over all
//! the checks of one [`BaseChecks`]; one check makes at most [`MAX_LOOKUPS`] lookups, within
//! the configured budget per round. The digests the base tags pointed to are remembered (at
//! most [`MAX_REMEMBERED`] per tag), so that an image on a base whose tag has moved since is
//! found stale, not unknown.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use byoc_api::requirements::BasePattern;
use byoc_policy::Config;
use byoc_policy::ImageRef;
use byoc_policy::oci::{Digest, Platform};
use byoc_policy::requirement::base::{self, Finding, Found};
use byoc_policy::requirement::{Context, Facts, ListedBase, Lookup};
use jiff::Timestamp;
use tokio::time::Instant;

use crate::lookups::{MAX_CONCURRENT, MAX_LOOKUPS};
use crate::{Budget, Client};

/// Digests remembered per base tag.
pub const MAX_REMEMBERED: usize = 16;

/// Base tags remembered in all (the bases are the platform's and its grants', a few dozen).
const MAX_TAGS: usize = 1024;

/// Spaces lookups `interval` apart, over all callers.
struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    fn new(per_second: u32) -> Self {
        Self {
            interval: Duration::from_secs(1) / per_second.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for `n` slots.
    async fn wait(&self, n: usize) {
        let at = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let start = (*next).max(Instant::now());
            *next = start + self.interval * u32::try_from(n).unwrap_or(u32::MAX);
            start
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Base checks under one configuration, paced together.
pub struct BaseChecks {
    client: Result<Client, String>,
    platforms: Vec<Platform>,
    listed: Vec<ListedBase>,
    budget: Duration,
    pacer: Pacer,
    seen: Mutex<BTreeMap<(String, String), Vec<Digest>>>,
}

impl BaseChecks {
    /// Checks with `client` (an error: every check is unknown, with it) under `config`.
    pub fn new(config: &Config, client: Result<Client, String>) -> Self {
        Self {
            client,
            platforms: config.node_platforms(),
            listed: config.listed_bases(),
            budget: config.registry_lookups.budget.unsigned_abs(),
            pacer: Pacer::new(config.registry_lookups.report_lookups_per_second),
            seen: Mutex::default(),
        }
    }

    /// The finding on `image` against `patterns` (the `builtOn` bases that apply to it) at
    /// `now`; `None` when no base applies, without a lookup.
    pub async fn check(
        &self,
        image: &ImageRef,
        patterns: &[BasePattern],
        now: Timestamp,
    ) -> Option<Finding> {
        let seen: Vec<(String, String, Digest)> = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flat_map(|((repo, tag), digests)| {
                digests
                    .iter()
                    .map(|d| (repo.clone(), tag.clone(), d.clone()))
            })
            .collect();
        let bases = base::remembered(&self.listed, &seen);
        let ctx = Context {
            namespace: "",
            tool_prefix: "",
            platforms: &self.platforms,
            bases: &bases,
            now,
        };
        let mut facts = Facts::default();
        let mut asked = 0;
        loop {
            let need: BTreeSet<Lookup> = match base::find(image, patterns, &ctx, &facts) {
                Found::NotChecked => return None,
                Found::Done(finding) => {
                    self.remember(base::tags_seen(patterns, &self.listed, &facts));
                    return Some(finding);
                }
                Found::Needs(need) => need,
            };
            let client = match &self.client {
                Ok(client) => client,
                Err(why) => {
                    return Some(Finding::Unknown(format!(
                        "registry lookups are not available ({why})"
                    )));
                }
            };
            if asked >= MAX_LOOKUPS {
                return Some(Finding::Unknown(format!(
                    "the check's cap of {MAX_LOOKUPS} registry lookups was reached"
                )));
            }
            let take: BTreeSet<Lookup> = need.into_iter().take(MAX_LOOKUPS - asked).collect();
            asked += take.len();
            self.pacer.wait(take.len()).await;
            let budget = Budget::new(self.budget);
            client
                .gather(take, &mut facts, &budget, MAX_CONCURRENT)
                .await;
        }
    }

    /// Remembers the digests base tags point to, newest last, bounded.
    fn remember(&self, tags: Vec<(String, String, Digest)>) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        for (repo, tag, digest) in tags {
            let key = (repo, tag);
            if !seen.contains_key(&key) && seen.len() >= MAX_TAGS {
                continue;
            }
            let digests = seen.entry(key).or_default();
            if !digests.contains(&digest) {
                if digests.len() >= MAX_REMEMBERED {
                    digests.remove(0);
                }
                digests.push(digest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lookups_are_paced_over_all_callers() {
        let pacer = Pacer::new(10);
        let start = Instant::now();
        pacer.wait(5).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "the first slots are free");
        pacer.wait(1).await;
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        pacer.wait(2).await;
        pacer.wait(1).await;
        assert_eq!(start.elapsed(), Duration::from_millis(800));
    }

    #[tokio::test]
    async fn no_base_no_lookup_and_no_client_is_unknown() {
        let config = Config::from_yaml(
            "platformRequirements: {builtOn: [tools-harbor.wmcloud.org/toolforge/base]}",
        )
        .unwrap();
        let checks = BaseChecks::new(&config, Err("offline".to_owned()));
        let image: ImageRef = "tools-harbor.wmcloud.org/tool-a/web:1".parse().unwrap();
        // Without a client every lookup would be an unknown finding: none means none was tried.
        assert_eq!(checks.check(&image, &[], Timestamp::now()).await, None);
        let patterns = config
            .platform_requirements
            .as_ref()
            .unwrap()
            .validate()
            .unwrap();
        match checks.check(&image, &patterns, Timestamp::now()).await {
            Some(Finding::Unknown(why)) => assert!(why.contains("offline"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn remembered_digests_are_bounded() {
        let checks = BaseChecks::new(&Config::default(), Err(String::new()));
        let d = |n: usize| -> Digest { format!("sha256:{n:064x}").parse().unwrap() };
        for n in 0..MAX_REMEMBERED + 3 {
            checks.remember(vec![("r/b".into(), "latest".into(), d(n))]);
            checks.remember(vec![("r/b".into(), "latest".into(), d(n))]);
        }
        let seen = checks.seen.lock().unwrap();
        let digests = &seen[&("r/b".to_owned(), "latest".to_owned())];
        assert_eq!(digests.len(), MAX_REMEMBERED);
        assert_eq!(digests.last(), Some(&d(MAX_REMEMBERED + 2)));
    }
}
