//! The byoc-operator controller: turns `ByocGrant`s into the `byoc.toolforge.org/` labels of
//! their namespaces and their `byoc.toolforge.org/requirements` annotation (DESIGN §3, §6,
//! §12), which the webhook reads.
//!
//! The unit of work is a namespace, since its labels are the union of every grant that targets
//! it; [`sync::sync_namespace`] is the only code that writes them. Two reconcilers call it:
//!
//! - [`grants`], keyed on ByocGrants and also triggered by changes of the namespaces they
//!   target: a finalizer so that deletion removes the grant's labels, the `Ready` condition,
//!   events, a requeue at `expiresAt`, and the `ExpiringSoon` reminder of [`expiry`]. Grants
//!   are watched as [`byoc_api::StoredGrant`]s, so
//!   one stored object that does not read is reported (condition `Invalid`, a Warning event,
//!   the `Invalid` gauge) and grants nothing, while every other grant is reconciled;
//! - [`namespaces`], keyed on Namespaces: removes labels under the prefix from namespaces that
//!   no grant targets (hand-made or left over).
//!
//! A third, [`requests`], keeps the status of each ByocRequest true to the grant approving it
//! created (it never writes labels or grants).
//! With `--reports`, a fourth reconciler, [`reports`], keeps a `PolicyReport` per namespace: the
//! inventory of what runs there and whether the policy allows it.
//!
//! Every replica watches; only the lease holder ([`leader`]) reconciles, and a replica that
//! becomes leader reconciles everything once. Grants are read from [`cache::GrantCache`], which
//! also indexes them by target namespace, so each reconcile reads only the grants it concerns.
//! What to write is decided by pure functions in [`desired`], [`binding`] (a grant applies to
//! the namespace it was first applied to, by UID) and [`status`], tested without a cluster.

pub mod binding;
pub mod cache;
pub mod desired;
pub mod error;
pub mod expiry;
pub mod grants;
pub mod leader;
pub mod metrics;
pub mod namespaces;
pub mod reports;
pub mod requests;
pub mod run;
pub mod status;
pub mod sync;

#[cfg(test)]
mod fixtures;

use std::sync::Arc;

use byoc_api::{LeanNamespace, Requirements};
use jiff::SignedDuration;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::reflector::Store;
use tokio::sync::watch;

pub use cache::GrantCache;
pub use error::Error;
pub use leader::Leadership;
pub use metrics::Metrics;
pub use run::{RunError, Settings, run};

/// The field manager of every write, and the events' reporting controller.
pub const FIELD_MANAGER: &str = "byoc-controller";

/// What the reconcilers share.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Every ByocGrant, as the watch last saw it (those that do not read are kept as such),
    /// indexed by target namespace.
    pub grants: GrantCache,
    /// Every Namespace, as the watch last saw it.
    pub namespaces: Store<LeanNamespace>,
    /// Whether this replica may write.
    pub leadership: Leadership,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Who publishes the events about grants and requests ([`Context::publish`]).
    reporter: Reporter,
    /// The policy's `expiryWarning`: how long before its end a grant is announced as expiring.
    pub expiry_warning: SignedDuration,
    /// The policy's `defaultGrantRequirements`: what a grant without `spec.requirements`
    /// requires.
    pub default_requirements: Option<Requirements>,
    /// Becomes true once both caches have been filled.
    synced: watch::Receiver<bool>,
    locks: sync::NamespaceLocks,
}

impl Context {
    /// A context; `instance` names this replica in the events it publishes, and `synced`
    /// turns true once both stores have been filled.
    pub fn new(
        client: Client,
        grants: GrantCache,
        namespaces: Store<LeanNamespace>,
        leadership: Leadership,
        metrics: Arc<Metrics>,
        instance: &str,
        synced: watch::Receiver<bool>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(instance.to_owned()),
        };
        Self {
            reporter,
            client,
            grants,
            namespaces,
            leadership,
            metrics,
            expiry_warning: byoc_policy::config::DEFAULT_EXPIRY_WARNING,
            default_requirements: None,
            synced,
            locks: sync::NamespaceLocks::default(),
        }
    }

    /// This context with the policy's `expiryWarning` window (default 14 days).
    pub fn with_expiry_warning(mut self, window: SignedDuration) -> Self {
        self.expiry_warning = window;
        self
    }

    /// This context with the policy's `defaultGrantRequirements`.
    pub fn with_default_requirements(mut self, default: Option<Requirements>) -> Self {
        self.default_requirements = default;
        self
    }

    /// Publishes `event` about the object `reference`, best effort.
    ///
    /// Every event is published as a new one: they tell changes of state, which do not repeat
    /// back to back, so there is no series to count. (kube's `Recorder` would keep each event it
    /// sent for six minutes to count repeats, and scan them all on every publish: 10,000 new
    /// grants kept 10,000 events in memory.)
    pub async fn publish(
        &self,
        event: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        Recorder::new(self.client.clone(), self.reporter.clone())
            .publish(event, reference)
            .await
    }

    /// Waits until both caches have been filled (false if that can no longer happen). Each
    /// controller's runner waits for its own cache only, but a reconcile reads both: before
    /// the other is filled, a namespace or grant that exists would look missing.
    pub async fn caches_synced(&self) -> bool {
        self.synced.clone().wait_for(|synced| *synced).await.is_ok()
    }
}
