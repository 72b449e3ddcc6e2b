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
//!
//! Each distinct image of a review (its reference and its alternatives) is looked up and
//! judged once, whatever number of containers run it; the outcome is given to each of them.
//! Judging (reading what the answers need next, comparing layer lists) is pure CPU whose cost
//! the registry's answers set: a tenant-pushed index of hundreds of entries to a 512-layer
//! manifest costs milliseconds per check. Answers under [`INLINE_WEIGHT`] are judged in place;
//! heavier ones on the blocking pool, at most [`judges`] at once, and only until the budget's
//! deadline: a review whose judging is not done by then is answered as if its lookups had
//! run out of budget (refused, or admitted with a warning under `failureMode: allow`), while
//! the async workers go on answering every other review.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use byoc_policy::Config;
use byoc_policy::config::FailureModes;
use byoc_policy::oci::{Manifest, Platform};
use byoc_policy::requirement::pending::{Pending, Settled, Unfinished};
use byoc_policy::requirement::{Answer, Context, Facts, ListedBase, Lookup};
use jiff::Timestamp;
use thiserror::Error;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::{Budget, Client, ClientConfig, Credentials};

/// Lookups in flight at once for one review.
pub const MAX_CONCURRENT: usize = 16;

/// Lookups one review may make in all (cache hits included).
pub const MAX_LOOKUPS: usize = 64;

/// The largest `weight` (of the answers, times the images) judged on the async worker that runs the review: about 50 µs of
/// CPU. Ordinary images (one index of a few platforms, tens of layers) weigh a few hundred.
pub const INLINE_WEIGHT: usize = 4096;

/// Judgements on the blocking pool at once, all reviews together: the machine's cores.
pub fn judges() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

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

    /// `images` distinct images judged in one pass, `place` saying where: `inline` (on the
    /// review's async worker), `pool` (on the blocking pool) or `late` (the pass did not end
    /// within the budget; the review was answered without it).
    fn judged(&self, place: &'static str, images: usize);
}

/// Nothing is counted: for a one-shot run such as `kubectl byoc check`.
impl LookupMetrics for () {
    fn lookup(&self, _: &'static str, _: Duration) {}

    fn registry_cache(&self, _: u64, _: u64, _: usize) {}

    fn judged(&self, _: &'static str, _: usize) {}
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
    platforms: Arc<[Platform]>,
    bases: Arc<[ListedBase]>,
    budget: Duration,
    modes: FailureModes,
    metrics: Box<dyn LookupMetrics>,
    /// Permits for judgements on the blocking pool ([`judges`]).
    judges: Arc<Semaphore>,
}

/// The distinct images of a review's pending containers, with what judging them needs, owned
/// so that a pass can run on the blocking pool.
struct Judging {
    namespace: String,
    tool_prefix: String,
    platforms: Arc<[Platform]>,
    bases: Arc<[ListedBase]>,
    now: Timestamp,
    modes: FailureModes,
    /// One pending container per distinct image.
    images: Vec<Pending>,
}

impl Judging {
    fn ctx(&self) -> Context<'_> {
        Context {
            namespace: &self.namespace,
            tool_prefix: &self.tool_prefix,
            platforms: &self.platforms,
            bases: &self.bases,
            now: self.now,
        }
    }

    fn needs(&self, facts: &Facts) -> BTreeSet<Lookup> {
        let ctx = self.ctx();
        self.images
            .iter()
            .flat_map(|p| p.needs(&ctx, facts))
            .collect()
    }

    fn settle(&self, facts: &Facts, unfinished: &Unfinished) -> Vec<Settled> {
        let ctx = self.ctx();
        (self.images.iter())
            .map(|p| p.settle(&ctx, facts, self.modes, unfinished))
            .collect()
    }
}

/// The distinct images of `pending` (the first container of each), and for each container
/// the index of its image. Containers of one image have the same alternatives, as the
/// allowances come from the image's registry; both are compared all the same.
fn distinct(pending: &[Pending]) -> (Vec<Pending>, Vec<usize>) {
    let mut images: Vec<Pending> = Vec::new();
    let mut seen: HashMap<_, Vec<usize>> = HashMap::new();
    let mut of = Vec::with_capacity(pending.len());
    for p in pending {
        let same = seen.entry(&p.reference).or_default();
        let found = same
            .iter()
            .copied()
            .find(|&i| images[i].alternatives == p.alternatives);
        let i = found.unwrap_or_else(|| {
            images.push(p.clone());
            same.push(images.len() - 1);
            images.len() - 1
        });
        of.push(i);
    }
    (images, of)
}

/// How much CPU judging `images` images with `facts` may take, in units of one layer or index
/// entry looked at: every image may walk every index entry to every image manifest's layers.
fn weight(facts: &Facts, images: usize) -> usize {
    let (mut entries, mut layers) = (0usize, 0usize);
    for manifest in facts.manifests.values() {
        match manifest {
            Answer::Found(Manifest::Index(e)) => entries = entries.saturating_add(e.len()),
            Answer::Found(Manifest::Image(m)) => layers = layers.max(m.layers.len()),
            Answer::Failed(_) | Answer::Unavailable(_) => {}
        }
    }
    let configs: usize = (facts.configs.values())
        .map(|c| match c {
            Answer::Found(c) => c.diff_ids.len(),
            Answer::Failed(_) | Answer::Unavailable(_) => 0,
        })
        .sum();
    let per_image = (entries.saturating_add(1))
        .saturating_mul(layers.saturating_add(1))
        .saturating_add(configs);
    per_image.saturating_mul(images)
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
            platforms: config.node_platforms().into(),
            bases: config.listed_bases().into(),
            budget: config.registry_lookups.budget.unsigned_abs(),
            modes: config.registry_lookups.failure_mode,
            metrics: Box::new(metrics),
            judges: Arc::new(Semaphore::new(judges())),
        }
    }

    /// The same lookups with the failure modes `modes` instead of the configured ones.
    #[must_use]
    pub fn with_failure_modes(mut self, modes: FailureModes) -> Self {
        self.modes = modes;
        self
    }

    /// Runs `pass` over `facts`: in place when light, else on the blocking pool until
    /// `deadline`. `None` when it did not end by then (it still ends, holding its permit).
    async fn judge<T, F>(
        &self,
        judging: &Arc<Judging>,
        facts: Facts,
        deadline: Instant,
        pass: F,
    ) -> Option<(Facts, T)>
    where
        T: Send + 'static,
        F: FnOnce(&Judging, &Facts) -> T + Send + 'static,
    {
        let images = judging.images.len();
        if weight(&facts, images) <= INLINE_WEIGHT {
            self.metrics.judged("inline", images);
            let out = pass(judging, &facts);
            return Some((facts, out));
        }
        let judges = Arc::clone(&self.judges);
        let judging = Arc::clone(judging);
        let off = async move {
            let permit = judges.acquire_owned().await.ok()?;
            let task = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let out = pass(&judging, &facts);
                (facts, out)
            });
            match task.await {
                Ok(done) => Some(done),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // The runtime is shutting down.
                Err(_) => None,
            }
        };
        let done = tokio::time::timeout_at(deadline.into(), off)
            .await
            .ok()
            .flatten();
        self.metrics
            .judged(if done.is_some() { "pool" } else { "late" }, images);
        done
    }

    /// Settles `pending` (of `namespace`) at `now`: gathers the registry answers they need,
    /// then judges each distinct image once. In the order of `pending`.
    pub async fn settle(
        &self,
        namespace: &str,
        tool_prefix: &str,
        pending: &[Pending],
        now: Timestamp,
    ) -> Vec<Settled> {
        let (images, of) = distinct(pending);
        let judging = Arc::new(Judging {
            namespace: namespace.to_owned(),
            tool_prefix: tool_prefix.to_owned(),
            platforms: Arc::clone(&self.platforms),
            bases: Arc::clone(&self.bases),
            now,
            modes: self.modes,
            images,
        });
        let budget = Budget::new(self.budget);
        let ran_out = || Unfinished {
            why: format!(
                "the review's registry budget of {:?} ran out",
                budget.total()
            ),
            outage: true,
        };
        let mut facts = Some(Facts::default());
        let mut asked = 0;
        let mut unfinished = Unfinished {
            why: "the lookups stopped".to_owned(),
            outage: false,
        };
        let span = tracing::info_span!(
            "registry_lookups",
            containers = pending.len(),
            images = judging.images.len()
        );
        async {
            while let Some(known) = facts.take() {
                let Some((known, need)) = self
                    .judge(&judging, known, budget.deadline(), Judging::needs)
                    .await
                else {
                    unfinished = ran_out();
                    break;
                };
                let known = facts.insert(known);
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
                    unfinished = ran_out();
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
                for outcome in client.gather(take, known, &budget, MAX_CONCURRENT).await {
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
        let settled = match facts {
            Some(facts) => self
                .judge(&judging, facts, budget.deadline(), move |j, f| {
                    j.settle(f, &unfinished)
                })
                .await
                .map(|(_, settled)| settled),
            None => None,
        };
        // Past the deadline: answered with no registry answer at all, which needs no work
        // that the answers set.
        let settled = settled.unwrap_or_else(|| judging.settle(&Facts::default(), &ran_out()));
        of.into_iter().map(|i| settled[i].clone()).collect()
    }
}
