//! The one function that writes namespace labels, [`sync_namespace`], and the per-namespace
//! lock that makes its calls for one namespace run one at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use byoc_api::LeanNamespace;
use jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use tracing::{debug, info};

use crate::desired::{self, NamespaceState};
use crate::metrics::LabelWrite;
use crate::{Context, Error, FIELD_MANAGER};

/// Brings the labels under the prefix of namespace `name`, and its requirements annotation, in
/// line with the grants that target it and are bound to it ([`crate::binding`]), as the caches
/// see them at `now` ([`desired::desired`], with the policy's `defaultGrantRequirements`):
///
/// - nothing is written when the namespace already carries exactly the desired labels and
///   annotation, so repeated and restarted reconciles write nothing;
/// - otherwise one JSON merge patch ([`desired::label_patch`], field manager [`FIELD_MANAGER`])
///   sets the desired labels and deletes the other labels under the prefix the cache shows,
///   and sets or deletes the annotation in the same write;
/// - when the answer still carries labels under the prefix that the cache did not show yet
///   (written meanwhile), a second patch deletes them;
/// - a missing or terminating namespace is left alone;
/// - both writes name the namespace's UID, so they fail rather than reach a namespace that
///   replaced the one the cache saw.
///
/// Only keys under the prefix are ever named, so labels outside it are never touched.
/// Calls for the same namespace are serialized.
pub async fn sync_namespace(
    ctx: &Context,
    name: &str,
    now: Timestamp,
) -> Result<NamespaceState, Error> {
    let _guard = ctx.locks.lock(name).await;
    let Some(namespace) = ctx.namespaces.get(&ObjectRef::new(name)) else {
        return Ok(NamespaceState::Missing);
    };
    if namespace.metadata.deletion_timestamp.is_some() {
        return Ok(NamespaceState::Terminating);
    }
    let uid = namespace.metadata.uid.as_deref();
    let grants = ctx.grants.targeting(name);
    let readable = grants.iter().filter_map(|g| g.readable());
    let default = ctx.default_requirements.as_ref();
    let desired = desired::desired(readable, name, uid, now, default).map_err(|source| {
        Error::EncodeLabels {
            namespace: name.to_owned(),
            source,
        }
    })?;
    let labelled = NamespaceState::Labelled {
        uid: uid.map(str::to_owned),
    };
    if desired::in_sync(&namespace.metadata, &desired) {
        debug!(namespace = name, "labels in sync");
        return Ok(labelled);
    }

    let api: Api<LeanNamespace> = Api::all(ctx.client.clone());
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let written = api
        .patch(
            name,
            &params,
            &Patch::Merge(desired::label_patch(uid, &namespace.metadata, &desired)),
        )
        .await
        .map_err(|source| Error::WriteLabels {
            namespace: name.to_owned(),
            source,
        })?;
    ctx.metrics.label_write(LabelWrite::Set);
    info!(namespace = name, labels = ?desired.labels, requirements = ?desired.requirements, "wrote namespace labels");

    let foreign = desired::foreign_keys(written.metadata.labels.as_ref(), &desired.labels);
    if !foreign.is_empty() {
        api.patch(
            name,
            &params,
            &Patch::Merge(desired::label_patch(uid, &written.metadata, &desired)),
        )
        .await
        .map_err(|source| Error::RemoveForeignLabels {
            namespace: name.to_owned(),
            keys: foreign.clone(),
            source,
        })?;
        ctx.metrics.label_write(LabelWrite::RemoveForeign);
        info!(namespace = name, keys = ?foreign, "removed labels written meanwhile");
    }
    Ok(labelled)
}

/// One async mutex per namespace name, created on demand and dropped when unused.
#[derive(Debug, Default)]
pub(crate) struct NamespaceLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl NamespaceLocks {
    /// Waits for, and takes, the lock of `name`.
    pub(crate) async fn lock(&self, name: &str) -> NamespaceGuard<'_> {
        let mutex = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_owned())
            .or_default()
            .clone();
        let guard = mutex.lock_owned().await;
        NamespaceGuard {
            locks: self,
            name: name.to_owned(),
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// Holds a namespace's lock; the entry is removed when nobody else holds or awaits it.
pub(crate) struct NamespaceGuard<'a> {
    locks: &'a NamespaceLocks,
    name: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for NamespaceGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Clones are only made under the map's lock, so a count of one (the map's own) means
        // nobody holds or waits for this mutex.
        if map
            .get(&self.name)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_per_namespace_and_no_leak() {
        let locks = Arc::new(NamespaceLocks::default());
        let a = locks.lock("a").await;
        let _b = locks.lock("b").await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _a = locks.lock("a").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the second holder of 'a' must wait");
        drop(a);
        waiter.await.unwrap();
        assert_eq!(locks.len(), 1, "only 'b' is still held");
        drop(_b);
        assert_eq!(locks.len(), 0);
    }
}
