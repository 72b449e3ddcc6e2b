//! Checking image requirements against registries during a review (DESIGN §12): the loop that
//! asks [`Pending::needs`] what is missing, fetches it with the registry client within the
//! review's budget, and settles each pending container with the pure policy code. The webhook
//! and `kubectl byoc check` share it, so both reach the same verdict from the same registry
//! answers; what is counted goes to a [`LookupMetrics`].
//!
//! Bounded per review: at most [`MAX_CONCURRENT`] lookups at once, [`MAX_LOOKUPS`] in all,
//! and the configured budget (`registryLookups.budget`, default 2 s, at most 10 s). Only
//! repositories a requirement names are asked: the image's own (its registry is allowed by
//! name) and the `builtOn` bases of the grant or the platform.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use byoc_policy::Config;
use byoc_policy::config::FailureModes;
use byoc_policy::oci::Platform;
use byoc_policy::requirement::pending::{Pending, Settled, Unfinished};
use byoc_policy::requirement::{Context, Facts, ListedBase, Lookup};
use jiff::Timestamp;
use thiserror::Error;
use tracing::Instrument as _;

use crate::{Budget, Client, ClientConfig, Credentials};

/// Lookups in flight at once for one review.
pub const MAX_CONCURRENT: usize = 16;

/// Lookups one review may make in all (cache hits included).
pub const MAX_LOOKUPS: usize = 64;

/// Why the registry client cannot be set up.
#[derive(Debug, Error)]
pub enum SetupError {
    /// The credentials file cannot be read.
    #[error("registryLookups.credentialsFile {path}: {why}")]
    Credentials {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// HTTPS cannot be set up.
    #[error(transparent)]
    Build(#[from] crate::BuildError),
}

/// Where [`Lookups::settle`] reports what it did: the webhook's Prometheus metrics.
pub trait LookupMetrics: Send + Sync {
    /// One lookup with its bounded result label (`found`, `server_error`, `over_cap`, ...)
    /// and how long it took.
    fn lookup(&self, result: &'static str, elapsed: Duration);

    /// The client's cache totals after a review: `hits` and `misses` since it started,
    /// `bytes` cached now.
    fn registry_cache(&self, hits: u64, misses: u64, bytes: usize);
}

/// Nothing is counted: for a one-shot run such as `kubectl byoc check`.
impl LookupMetrics for () {
    fn lookup(&self, _: &'static str, _: Duration) {}

    fn registry_cache(&self, _: u64, _: u64, _: usize) {}
}

/// The registry client as the configuration sets it up (with `tls`, or the system's roots).
pub fn client(config: &Config, tls: Option<rustls::ClientConfig>) -> Result<Client, SetupError> {
    let lookups = &config.registry_lookups;
    let credentials = match &lookups.credentials_file {
        None => Credentials::default(),
        Some(path) => {
            let shown = path.display().to_string();
            let bytes = std::fs::read(path).map_err(|e| SetupError::Credentials {
                path: shown.clone(),
                why: e.to_string(),
            })?;
            Credentials::from_docker_config_json(&bytes).map_err(|e| SetupError::Credentials {
                path: shown,
                why: e.to_string(),
            })?
        }
    };
    Ok(Client::new(ClientConfig {
        insecure_registries: lookups.insecure_registries.clone(),
        credentials,
        cache_bytes: usize::try_from(lookups.cache_bytes).unwrap_or(usize::MAX),
        tag_ttl: lookups.tag_ttl.unsigned_abs(),
        per_host_concurrency: lookups.per_host_concurrency,
        tls,
        ..ClientConfig::default()
    })?)
}

/// What reviews need to check requirements: the client (or why there is none), the nodes'
/// platforms, the listed bases, the budget and the failure modes.
pub struct Lookups {
    client: Result<Client, String>,
    platforms: Vec<Platform>,
    bases: Vec<ListedBase>,
    budget: Duration,
    modes: FailureModes,
    metrics: Box<dyn LookupMetrics>,
}

impl Lookups {
    /// Lookups with `client` (an error: every lookup fails with it) under `config`,
    /// counted by `metrics`.
    pub fn new(
        config: &Config,
        client: Result<Client, String>,
        metrics: impl LookupMetrics + 'static,
    ) -> Self {
        Self {
            client,
            platforms: config.node_platforms(),
            bases: config.listed_bases(),
            budget: config.registry_lookups.budget.unsigned_abs(),
            modes: config.registry_lookups.failure_mode,
            metrics: Box::new(metrics),
        }
    }

    /// The same lookups with the failure modes `modes` instead of the configured ones.
    #[must_use]
    pub fn with_failure_modes(mut self, modes: FailureModes) -> Self {
        self.modes = modes;
        self
    }

    /// Settles `pending` (of `namespace`) at `now`: gathers the registry answers they need,
    /// then judges each. In the order of `pending`.
    pub async fn settle(
        &self,
        namespace: &str,
        tool_prefix: &str,
        pending: &[Pending],
        now: Timestamp,
    ) -> Vec<Settled> {
        let ctx = Context {
            namespace,
            tool_prefix,
            platforms: &self.platforms,
            bases: &self.bases,
            now,
        };
        let budget = Budget::new(self.budget);
        let mut facts = Facts::default();
        let mut asked = 0;
        let mut unfinished = Unfinished {
            why: "the lookups stopped".to_owned(),
            outage: false,
        };
        let span = tracing::info_span!("registry_lookups", containers = pending.len());
        async {
            loop {
                let need: BTreeSet<Lookup> =
                    pending.iter().flat_map(|p| p.needs(&ctx, &facts)).collect();
                if need.is_empty() {
                    break;
                }
                let client = match &self.client {
                    Ok(client) => client,
                    Err(why) => {
                        unfinished = Unfinished {
                            why: format!("registry lookups are not available ({why})"),
                            outage: true,
                        };
                        break;
                    }
                };
                if Instant::now() >= budget.deadline() {
                    unfinished = Unfinished {
                        why: format!(
                            "the review's registry budget of {:?} ran out",
                            budget.total()
                        ),
                        outage: true,
                    };
                    break;
                }
                if asked >= MAX_LOOKUPS {
                    self.metrics.lookup("over_cap", Duration::ZERO);
                    // The image's own index can reach the cap: never an outage.
                    unfinished = Unfinished {
                        why: format!(
                            "the review's cap of {MAX_LOOKUPS} registry lookups was reached"
                        ),
                        outage: false,
                    };
                    break;
                }
                let take: BTreeSet<Lookup> = need.into_iter().take(MAX_LOOKUPS - asked).collect();
                asked += take.len();
                tracing::debug!(lookups = take.len(), "asking registries");
                for outcome in client
                    .gather(take, &mut facts, &budget, MAX_CONCURRENT)
                    .await
                {
                    self.metrics.lookup(outcome.result, outcome.elapsed);
                }
            }
            if let Ok(client) = &self.client {
                let stats = client.stats();
                self.metrics
                    .registry_cache(stats.hits, stats.misses, stats.bytes);
            }
            tracing::debug!(asked, "registry answers gathered");
        }
        .instrument(span)
        .await;
        pending
            .iter()
            .map(|p| p.settle(&ctx, &facts, self.modes, &unfinished))
            .collect()
    }
}
