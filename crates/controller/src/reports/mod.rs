//! The inventory (DESIGN §11): one `PolicyReport` named `byoc-registry-policy` per non-exempt
//! namespace with workloads, one result per top-level workload or bare pod, decided by the
//! policy core as the webhook would decide an UPDATE adding those images now.
//!
//! The unit of work is a namespace. Its reconcile is woken by a change of the namespace (its
//! labels carry the grants), of a pod-bearing object in it, of a grant that targets it, or of
//! its report (a hand edit or deletion is undone), and is requeued at the earliest expiry of
//! its allowances and grants. Pod-bearing objects are watched trimmed ([`index`]); reports are
//! written only when their content differs from the stored one ([`build`]). Like the other
//! reconcilers, it runs on every replica and writes only on the leader.

pub mod build;
pub mod index;
pub mod metrics;
pub mod stale;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use byoc_api::labels::REQUIREMENTS_ANNOTATION;
use byoc_api::report::{PolicyReport, REPORT_NAME};
use byoc_api::{ByocGrant, LeanNamespace, StoredGrant};
use byoc_policy::inventory::{AllowedBy, Inventoried, Of, judge_namespace};
use byoc_policy::requirement::base;
use byoc_policy::{Allowance, Config};
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, instrument, warn};

use crate::{FIELD_MANAGER, GrantCache, Leadership};
use index::Index;
use metrics::{ReportMetrics, ReportWrite};

/// How long to wait before retrying a failed reconcile.
const RETRY: Duration = Duration::from_secs(5);

/// A failed report reconcile.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The server-side apply of a report failed.
    #[error("cannot apply the PolicyReport of namespace {namespace}: {source}")]
    Apply {
        /// The namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting a report no longer wanted failed.
    #[error("cannot delete the PolicyReport of namespace {namespace}: {source}")]
    Delete {
        /// The namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// What the report reconciles share.
pub struct ReportContext {
    client: Client,
    config: Config,
    index: Arc<Index>,
    reports: Store<PolicyReport>,
    grants: GrantCache,
    leadership: Leadership,
    metrics: Arc<ReportMetrics>,
    synced: watch::Receiver<bool>,
    written: Arc<Written>,
    stale: Arc<stale::Stale>,
}

/// The reports this replica wrote whose watch event has not arrived yet, by namespace: until it
/// does, the cache holds an older report, and comparing with it would write the same content
/// again. Watch events come in resourceVersion order, so once a namespace's event for its
/// written version has arrived, any later difference in the cache is someone else's change.
#[derive(Default)]
struct Written(Mutex<HashMap<String, PolicyReport>>);

impl Written {
    /// What the report of `namespace` is: the one written last, if the cache has not caught up.
    fn get(&self, namespace: &str) -> Option<PolicyReport> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
            .cloned()
    }

    /// Remembers a report just written, unless the cache (`cached`, read under the lock that
    /// [`Written::seen`] takes) already holds it: its watch event may beat the write's response.
    fn insert(&self, report: PolicyReport, cached: impl FnOnce() -> Option<Arc<PolicyReport>>) {
        let namespace = report.metadata.namespace.clone().unwrap_or_default();
        let mut written = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if cached().is_some_and(|c| c.metadata.resource_version == report.metadata.resource_version)
        {
            written.remove(&namespace);
        } else {
            written.insert(namespace, report);
        }
    }

    /// Forgets a namespace's written report.
    fn remove(&self, namespace: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(namespace);
    }

    /// The cache has seen `report`: forget the written one if this is it.
    fn seen(&self, report: &PolicyReport) {
        let namespace = report.metadata.namespace.as_deref().unwrap_or_default();
        let mut written = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if written
            .get(namespace)
            .is_some_and(|w| w.metadata.resource_version == report.metadata.resource_version)
        {
            written.remove(namespace);
        }
    }
}

/// The report reconciler's watches and what it shares, ready to run.
pub struct Reporter {
    ctx: Arc<ReportContext>,
    namespaces: Store<LeanNamespace>,
    triggers: BoxStream<'static, Result<ObjectRef<LeanNamespace>, watcher::Error>>,
}

impl Reporter {
    /// Sets up the watches: namespaces, the eight pod-bearing kinds (trimmed), grants, and the
    /// reports named [`REPORT_NAME`]. `grants` is the grant reconciler's cache, read to name
    /// the grant behind each allowance.
    pub fn new(
        client: Client,
        config: Config,
        grants: GrantCache,
        leadership: Leadership,
        metrics: Arc<ReportMetrics>,
    ) -> Self {
        let index = Arc::new(Index::default());
        let (namespaces, ns_writer) = reflector::store::<LeanNamespace>();
        let (reports, report_writer) = reflector::store::<PolicyReport>();
        let forget = metrics.clone();
        let namespace_events = reflector::reflector(
            ns_writer,
            watcher(
                Api::<LeanNamespace>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
        )
        .map_ok(move |event| {
            if let watcher::Event::Delete(ns) = &event {
                forget.forget(&ns.name_any());
            }
            let names: Vec<String> = match event {
                watcher::Event::Apply(ns)
                | watcher::Event::Delete(ns)
                | watcher::Event::InitApply(ns) => vec![ns.name_any()],
                watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
            };
            stream::iter(names.into_iter().map(|n| Ok(ObjectRef::new(&n))))
        })
        .try_flatten();
        let written = Arc::new(Written::default());
        let seen = written.clone();
        let report_events = reflector::reflector(
            report_writer,
            watcher(
                Api::<PolicyReport>::all(client.clone()),
                watcher::Config::default().fields(&format!("metadata.name={REPORT_NAME}")),
            )
            .default_backoff(),
        )
        .touched_objects()
        .map_ok(move |report| {
            seen.seen(&report);
            ObjectRef::new(&report.namespace().unwrap_or_default())
        });
        let grant_events = watcher(
            Api::<StoredGrant>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .touched_objects()
        .try_filter_map(|grant| async move { Ok(grant.target_namespace().map(ObjectRef::new)) });
        let checks = byoc_registry::BaseChecks::new(
            &config,
            byoc_registry::lookups::client(&config, None).map_err(|e| e.to_string()),
        );
        let (stale, woken) =
            stale::Stale::start(checks, config.registry_lookups.tag_ttl.unsigned_abs());
        let base_events = stream::unfold(woken, |mut woken| async move {
            let namespace = woken.recv().await?;
            Some((Ok(ObjectRef::new(&namespace)), woken))
        });
        let triggers = stream::select_all([
            namespace_events.boxed(),
            base_events.boxed(),
            report_events.boxed(),
            grant_events.boxed(),
            kind_events::<Deployment>(&client, &index),
            kind_events::<ReplicaSet>(&client, &index),
            kind_events::<StatefulSet>(&client, &index),
            kind_events::<DaemonSet>(&client, &index),
            kind_events::<CronJob>(&client, &index),
            kind_events::<Job>(&client, &index),
            kind_events::<ReplicationController>(&client, &index),
            kind_events::<Pod>(&client, &index),
        ])
        .boxed();
        let (synced_tx, synced) = watch::channel(false);
        tokio::spawn({
            let mut listed = index.synced();
            let (namespaces, reports, grants) =
                (namespaces.clone(), reports.clone(), grants.clone());
            async move {
                // Grants too: a report written before they are known would name no grant,
                // and be written again once they are.
                let all = listed.wait_for(|l| *l).await.is_ok()
                    && crate::run::synced(&namespaces).await
                    && crate::run::synced(&reports).await
                    && crate::run::synced(grants.store()).await;
                if all {
                    info!("inventory caches synced");
                    let _ = synced_tx.send(true);
                    std::future::pending::<()>().await;
                }
            }
        });
        Self {
            ctx: Arc::new(ReportContext {
                client,
                config,
                index,
                reports,
                grants,
                leadership,
                metrics,
                synced,
                written,
                stale,
            }),
            namespaces,
            triggers,
        }
    }

    /// Runs the reconciler until `stop` completes, reconciling every namespace each time this
    /// replica becomes the leader; yields each reconcile's outcome.
    pub fn run(
        self,
        concurrency: u16,
        stop: impl Future<Output = ()> + Send + Sync + 'static,
    ) -> impl Stream<
        Item = Result<
            (ObjectRef<LeanNamespace>, Action),
            controller::Error<ReportError, watcher::Error>,
        >,
    > {
        let Self {
            ctx,
            namespaces,
            triggers,
        } = self;
        let all = {
            let namespaces = namespaces.clone();
            ctx.leadership.acquired().flat_map(move |()| {
                stream::iter(
                    namespaces
                        .state()
                        .into_iter()
                        .map(|ns| Ok(ObjectRef::from_obj(&*ns))),
                )
            })
        };
        let queue = stream::select(triggers, all).take_until(stop);
        controller::applier(
            |namespace, ctx| Box::pin(reconcile(namespace, ctx)),
            error_policy,
            ctx,
            namespaces,
            queue,
            controller::Config::default().concurrency(concurrency),
        )
    }
}

/// The namespaces whose objects of kind `K` change, from a trimmed watch of `K`.
fn kind_events<K>(
    client: &Client,
    index: &Arc<Index>,
) -> BoxStream<'static, Result<ObjectRef<LeanNamespace>, watcher::Error>>
where
    K: Inventoried + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let index = index.clone();
    watcher(
        Api::<Of<K>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map_ok(move |event| {
        let event = match event {
            watcher::Event::Apply(o) => watcher::Event::Apply(o.object),
            watcher::Event::Delete(o) => watcher::Event::Delete(o.object),
            watcher::Event::InitApply(o) => watcher::Event::InitApply(o.object),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitDone => watcher::Event::InitDone,
        };
        let changed = index.apply(K::SOURCE, event);
        stream::iter(changed.into_iter().map(|ns| Ok(ObjectRef::new(&ns))))
    })
    .try_flatten()
    .boxed()
}

/// Brings the report of one namespace in line with its workloads and allowance; a standby
/// does nothing.
#[instrument(skip_all, fields(namespace = %namespace.name_any()))]
async fn reconcile(
    namespace: Arc<LeanNamespace>,
    ctx: Arc<ReportContext>,
) -> Result<Action, ReportError> {
    if !ctx.leadership.is_leader() || ctx.synced.clone().wait_for(|s| *s).await.is_err() {
        return Ok(Action::await_change());
    }
    let name = namespace.name_any();
    let stored = ctx
        .written
        .get(&name)
        .map(Arc::new)
        .or_else(|| ctx.reports.get(&ObjectRef::new(REPORT_NAME).within(&name)));
    if namespace.metadata.deletion_timestamp.is_some() {
        // The namespace controller deletes the report with everything else.
        ctx.metrics.forget(&name);
        ctx.stale.forget(&name);
        return Ok(Action::await_change());
    }
    if ctx.config.is_exempt(&name) {
        ctx.metrics.forget(&name);
        ctx.stale.forget(&name);
        if stored.is_some() {
            delete(&ctx, &name).await?;
        }
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let (mut allowance, errors) = Allowance::from_labels(namespace.labels());
    for e in errors {
        debug!(namespace = %name, error = %e, "label ignored, as the webhook ignores it");
    }
    let objects = ctx.index.objects(&name);
    let verdicts = judge_namespace(&ctx.config, &allowance, now, &objects);
    let grants: Vec<ByocGrant> = ctx
        .grants
        .targeting(&name)
        .iter()
        .filter_map(|g| g.readable())
        .cloned()
        .collect();
    let grant_name = |a: &AllowedBy| a.grant_name(&grants, &name, now);
    let annotation = namespace
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REQUIREMENTS_ANNOTATION));
    let keys = base::keys(
        &ctx.config,
        &name,
        &allowance,
        annotation.map(String::as_str),
        &verdicts,
        now,
    );
    let lines = ctx.stale.lines(&name, keys);
    let desired = build::report(
        &ctx.config,
        &name,
        &verdicts,
        grant_name,
        |image| lines.get(image).cloned(),
        stored.as_deref(),
        now,
    );
    match &desired {
        Some(report) => {
            let images: BTreeSet<(String, String)> = verdicts
                .iter()
                .flat_map(|v| &v.images)
                .filter_map(|u| Some((u.registry.clone()?, u.image.clone())))
                .collect();
            ctx.metrics.record(&name, report.summary, images);
        }
        None => ctx.metrics.forget(&name),
    }
    match (desired, stored) {
        (None, None) => {}
        (None, Some(_)) => delete(&ctx, &name).await?,
        (Some(desired), Some(stored)) if build::is_current(&desired, &stored) => {
            debug!(namespace = %name, "report current");
        }
        (Some(desired), stored) => write(&ctx, &name, &desired, stored.is_some()).await?,
    }
    // The verdicts change when an allowance or a grant ends.
    allowance.retain_active_at(now);
    let next = allowance
        .next_expiry()
        .into_iter()
        .chain(grants.iter().filter_map(ByocGrant::expires_at))
        .filter(|t| *t > now)
        .min();
    Ok(match next {
        Some(t) => Action::requeue(
            Duration::try_from(t.duration_since(now)).unwrap_or_default()
                + Duration::from_millis(100),
        ),
        None => Action::await_change(),
    })
}

/// Writes the report: created when there is none (cheaper for the API server than an apply),
/// else applied server-side, forced (the report is ours). Remembered until the watch shows it.
async fn write(
    ctx: &ReportContext,
    namespace: &str,
    report: &PolicyReport,
    exists: bool,
) -> Result<(), ReportError> {
    let api: Api<PolicyReport> = Api::namespaced(ctx.client.clone(), namespace);
    let mut body = json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {
            "name": REPORT_NAME,
            "namespace": namespace,
            "labels": report.metadata.labels,
        },
        "summary": report.summary,
        "results": report.results,
    });
    // Applied only when there are some: an annotation left out of an apply is removed.
    if let Some(annotations) = &report.metadata.annotations {
        body["metadata"]["annotations"] = json!(annotations);
    }
    let error = |source| ReportError::Apply {
        namespace: namespace.to_owned(),
        source,
    };
    let created = if exists {
        None
    } else {
        let dynamic: Api<DynamicObject> = Api::namespaced_with(
            ctx.client.clone(),
            namespace,
            &ApiResource::erase::<PolicyReport>(&()),
        );
        let object: DynamicObject =
            serde_json::from_value(body.clone()).map_err(|e| error(kube::Error::SerdeError(e)))?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match dynamic.create(&params, &object).await {
            Ok(created) => Some(
                serde_json::to_value(created)
                    .and_then(serde_json::from_value)
                    .map_err(|e| error(kube::Error::SerdeError(e)))?,
            ),
            // Created meanwhile (by someone else, or before the cache knew): apply.
            Err(kube::Error::Api(s)) if s.code == 409 => None,
            Err(e) => return Err(error(e)),
        }
    };
    let written = match created {
        Some(report) => report,
        None => api
            .patch(
                REPORT_NAME,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
            .map_err(error)?,
    };
    ctx.written.insert(written, || {
        ctx.reports
            .get(&ObjectRef::new(REPORT_NAME).within(namespace))
    });
    ctx.metrics.write(ReportWrite::Apply);
    info!(namespace, summary = ?report.summary, "report written");
    Ok(())
}

/// Deletes the report of a namespace that should carry none (a 404 is success).
async fn delete(ctx: &ReportContext, namespace: &str) -> Result<(), ReportError> {
    ctx.written.remove(namespace);
    let api: Api<PolicyReport> = Api::namespaced(ctx.client.clone(), namespace);
    match api.delete(REPORT_NAME, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(source) => {
            return Err(ReportError::Delete {
                namespace: namespace.to_owned(),
                source,
            });
        }
    }
    ctx.metrics.write(ReportWrite::Delete);
    info!(namespace, "report deleted");
    Ok(())
}

/// Logs a failed reconcile and retries it after [`RETRY`].
fn error_policy(
    namespace: Arc<LeanNamespace>,
    error: &ReportError,
    _: Arc<ReportContext>,
) -> Action {
    warn!(namespace = %namespace.name_any(), error = %error, "report reconcile failed");
    Action::requeue(RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn report(namespace: &str, rv: &str) -> PolicyReport {
        PolicyReport {
            metadata: ObjectMeta {
                name: Some(REPORT_NAME.into()),
                namespace: Some(namespace.into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            ..PolicyReport::default()
        }
    }

    #[test]
    fn a_written_report_counts_until_the_watch_shows_it() {
        let written = Written::default();
        // The watch was faster than the write's response: nothing to remember.
        written.insert(report("a", "7"), || Some(Arc::new(report("a", "7"))));
        assert_eq!(written.get("a"), None);
        written.insert(report("a", "7"), || Some(Arc::new(report("a", "6"))));
        // An older event (the cache catching up to before the write) changes nothing.
        written.seen(&report("a", "6"));
        assert_eq!(written.get("a"), Some(report("a", "7")));
        written.seen(&report("b", "7"));
        assert!(written.get("a").is_some());
        // The write's own event: from now on the cache is at least as new.
        written.seen(&report("a", "7"));
        assert_eq!(written.get("a"), None);
        written.insert(report("a", "9"), || None);
        written.remove("a");
        assert_eq!(written.get("a"), None);
    }
}
