//! Wiring: the admin server, the leader election, the three controllers (four with the
//! PolicyReports of [`crate::reports`]), and an orderly
//! shutdown (controllers drain, then the lease is released, then the admin server stops).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use byoc_api::LeanNamespace;
use byoc_api::StoredGrant;
use byoc_runtime::{AdminServer, Readiness, Shutdown};
use futures::StreamExt;
use jiff::SignedDuration;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerError;
use prometheus_client::registry::Registry;
use tracing::{debug, error, info, warn};

use crate::leader::{Election, LeaseSettings};
use crate::reports::Reporter;
use crate::reports::metrics::ReportMetrics;
use crate::requests::WatchedRequest;
use crate::{Context, GrantCache, Metrics, grants, namespaces, requests};

/// How to run the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the admin server (`/healthz`, `/readyz`, `/metrics`) listens.
    pub admin_addr: SocketAddr,
    /// The leader election.
    pub lease: LeaseSettings,
    /// How many reconciles of each controller may run at once.
    pub concurrency: u16,
    /// The policy's `expiryWarning` window, for `ExpiringSoon` reminders.
    pub expiry_warning: SignedDuration,
    /// The policy's `defaultGrantRequirements`, for grants without `spec.requirements`.
    pub default_requirements: Option<byoc_api::Requirements>,
    /// The policy configuration when the PolicyReports of [`crate::reports`] are on.
    pub reports: Option<byoc_policy::Config>,
    /// How many values of a tenant-controlled metric label (namespace, registry) get series of
    /// their own; the rest are summed under `other`.
    pub metrics_label_limit: usize,
}

/// Why the controller stopped other than by a shutdown signal.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The admin port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Lease could not be read or created.
    #[error("cannot join the leader election: {0}")]
    JoinElection(#[source] LeaseManagerError),
    /// The task renewing the lease ended while the controllers ran.
    #[error("the leader election task ended: {0}")]
    ElectionEnded(String),
}

/// Runs the controller until `shutdown` fires (Ok) or the leader election dies (Err).
pub async fn run(client: Client, settings: Settings, shutdown: Shutdown) -> Result<(), RunError> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let report_metrics = settings.reports.is_some().then(|| {
        Arc::new(ReportMetrics::register(
            &mut registry,
            settings.metrics_label_limit,
        ))
    });
    let readiness = Readiness::default();
    let addr = settings.admin_addr;
    let admin = AdminServer::bind(addr, readiness.clone(), registry)
        .await
        .map_err(|source| RunError::Admin { addr, source })?;
    info!(addr = %admin.local_addr().unwrap_or(addr), "admin server listening");
    let admin_task = tokio::spawn(admin.serve(shutdown.clone()));

    let lease = &settings.lease;
    info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "joining the leader election");
    let Election {
        leadership,
        task: mut election,
    } = Election::join(client.clone(), lease)
        .await
        .map_err(RunError::JoinElection)?;
    let gauge_task = tokio::spawn({
        let mut leadership = leadership.clone();
        let metrics = metrics.clone();
        async move {
            metrics.set_leader(leadership.is_leader());
            while let Some(leader) = leadership.changed().await {
                info!(leader, "leadership changed");
                metrics.set_leader(leader);
            }
        }
    });

    let config = controller::Config::default().concurrency(settings.concurrency);
    let (grant_cache, grant_changes) = GrantCache::watch(Api::all(client.clone()));
    let grant_controller = Controller::for_stream(grant_changes, grant_cache.store().clone())
        .with_config(config.clone());
    // Of each namespace only its identity and byoc labels and annotations are cached: tenants'
    // own labels, megabytes each where a tenant may patch its namespace, cost no memory.
    let (namespace_store, namespace_writer) = reflector::store();
    let namespaces = watcher(
        Api::<LeanNamespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(LeanNamespace::retain_ours)
    .reflect(namespace_writer)
    .applied_objects();
    let namespace_controller =
        Controller::for_stream(namespaces, namespace_store.clone()).with_config(config.clone());
    let request_controller = Controller::new(
        Api::<WatchedRequest>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(config);
    let reporter = settings
        .reports
        .clone()
        .zip(report_metrics)
        .map(|(config, metrics)| {
            info!(mode = %config.mode, "PolicyReports on");
            Reporter::new(
                client.clone(),
                config,
                grant_cache.clone(),
                leadership.clone(),
                metrics,
            )
        });
    let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            grant_cache.clone(),
            namespace_store.clone(),
            leadership.clone(),
            metrics.clone(),
            &lease.identity,
            synced_rx,
        )
        .with_expiry_warning(settings.expiry_warning)
        .with_default_requirements(settings.default_requirements.clone()),
    );

    let ready_task = tokio::spawn(async move {
        if synced(grant_cache.store()).await && synced(&namespace_store).await {
            info!("caches synced; ready");
            let _ = synced_tx.send(true);
            readiness.set(true);
            // Keep the sender: reconciles read `true` from it until the end.
            std::future::pending::<()>().await;
        }
    });

    let outcome = {
        let cache = ctx.grants.clone();
        let request_run = request_controller
            .watches(
                Api::<StoredGrant>::all(client.clone()),
                watcher::Config::default(),
                requests::for_grant,
            )
            .reconcile_all_on(leadership.acquired())
            .graceful_shutdown_on(stopped(&shutdown))
            .run(requests::reconcile, requests::error_policy, ctx.clone())
            .for_each(|result| log_result("byocrequest", result));
        let grant_run = grant_controller
            .watches(
                Api::<LeanNamespace>::all(client),
                watcher::Config::default(),
                move |ns| grants::targeting(&cache, &ns),
            )
            .reconcile_all_on(leadership.acquired())
            .graceful_shutdown_on(stopped(&shutdown))
            .run(grants::reconcile, grants::error_policy, ctx.clone())
            .for_each(|result| log_result("byocgrant", result));
        let namespace_run = namespace_controller
            .reconcile_all_on(leadership.acquired())
            .graceful_shutdown_on(stopped(&shutdown))
            .run(namespaces::reconcile, namespaces::error_policy, ctx)
            .for_each(|result| log_result("namespace", result));
        let report_run = async {
            if let Some(reporter) = reporter {
                reporter
                    .run(settings.concurrency, stopped(&shutdown))
                    .for_each(|result| log_result("policyreport", result))
                    .await;
            }
        };
        tokio::select! {
            ((), (), (), ()) = futures::future::join4(grant_run, namespace_run, request_run, report_run) => Ok(()),
            ended = &mut election => Err(RunError::ElectionEnded(match ended {
                Ok(Ok(_)) => "it stopped".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            })),
        }
    };
    // The controllers, and with them the context, are gone: no more writes from this replica.
    shutdown.trigger();
    ready_task.abort();
    gauge_task.abort();
    drop(leadership);
    if outcome.is_ok() {
        // With its last receiver dropped, the election task releases the lease and ends.
        match tokio::time::timeout(Duration::from_secs(5), election).await {
            Ok(Ok(Ok(_))) => info!("lease released"),
            Ok(Ok(Err(e))) => warn!(error = %e, "cannot release the lease"),
            Ok(Err(e)) => warn!(error = %e, "the election task failed"),
            Err(_) => warn!("the lease was not released within 5s"),
        }
    }
    match admin_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "admin server failed"),
        Err(e) => warn!(error = %e, "admin server task failed"),
    }
    outcome
}

/// Whether the cache has been filled (false if its writer went away first).
///
/// The controller's own runner waits on the same store; kube-runtime 5 wakes only one waiter of
/// a store, so this one polls again every 100 ms rather than wait for a wake-up that may never
/// come.
pub(crate) async fn synced<K>(store: &Store<K>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        let attempt = tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready());
        if let Ok(result) = attempt.await {
            return result.is_ok();
        }
    }
}

/// A `Send + Sync` future that completes on shutdown, as `graceful_shutdown_on` wants.
fn stopped(shutdown: &Shutdown) -> impl Future<Output = ()> + Send + Sync + 'static {
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        shutdown.wait().await;
        let _ = tx.send(());
    });
    async move {
        let _ = rx.await;
    }
}

async fn log_result<T: std::fmt::Debug, E: std::error::Error>(
    controller: &'static str,
    result: Result<T, controller::Error<E, watcher::Error>>,
) {
    match result {
        Ok(object) => debug!(controller, ?object, "reconciled"),
        // The reconciler's own errors are logged and counted by its error policy.
        Err(controller::Error::ReconcilerFailed(..)) => {}
        // A namespace deleted before its turn came: nothing to do.
        Err(controller::Error::ObjectNotFound(object)) => debug!(controller, %object, "gone"),
        Err(e) => error!(controller, error = %e, "controller error"),
    }
}
