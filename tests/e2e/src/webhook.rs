//! A running `byoc-webhook`, registered with the local cluster the way `make run` and the Helm
//! chart register it, for end-to-end tests.
//!
//! [`Webhook::start`] starts a [`WebhookProcess`] (certificates from a test CA, free loopback
//! ports, ready once its namespace cache has synced), registers it (the chart's configuration,
//! rendered by `hack/webhook-registration.sh` for its URL and CA) and waits until the API server
//! calls it. Dropping it removes the registration, stops the process and, when the test failed,
//! prints its log.
//!
//! The registration covers every namespace except the exempt ones, exactly as deployed, so only
//! one fixture may be registered at a time: [`Webhook::start`] waits for the previous one of the
//! same test binary to be dropped.

use std::sync::{Arc, OnceLock};

use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::chaos::{WebhookOptions, WebhookProcess};

/// The name of the webhook entry for pods and workloads, shown by `kubectl` in denials.
pub const PODS_WEBHOOK: &str = "pods.byoc.toolforge.org";

/// The name of the webhook entry guarding namespace labels.
pub const NAMESPACES_WEBHOOK: &str = "namespaces.byoc.toolforge.org";

/// The service account whose identity may write `byoc.toolforge.org/` labels.
pub const CONTROLLER_USER: &str = "system:serviceaccount:byoc-system:byoc-controller";

/// How the webhook is run.
#[derive(Clone, Debug)]
pub struct Options {
    /// `enforce`, `warn` or `audit`.
    pub mode: &'static str,
    /// More policy configuration (YAML), after `mode`.
    pub policy: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mode: "enforce",
            policy: String::new(),
        }
    }
}

/// A running, registered webhook; unregistered and stopped when dropped.
pub struct Webhook {
    // Dropped first: unregistered and stopped before the next fixture may start.
    process: WebhookProcess,
    _exclusive: OwnedMutexGuard<()>,
}

impl Webhook {
    /// Starts the webhook with `options` and registers it.
    ///
    /// # Panics
    /// When the binary cannot be built, the webhook does not become ready within 60 s, or the
    /// API server does not call it within 60 s.
    pub async fn start(options: Options) -> Self {
        static ONE_AT_A_TIME: OnceLock<Arc<Mutex<()>>> = OnceLock::new();
        let exclusive = ONE_AT_A_TIME
            .get_or_init(|| Arc::new(Mutex::new(())))
            .clone()
            .lock_owned()
            .await;
        let mut process = WebhookProcess::start(WebhookOptions {
            mode: options.mode,
            policy: options.policy,
            ..WebhookOptions::default()
        });
        process.register().await;
        Self {
            process,
            _exclusive: exclusive,
        }
    }

    /// The webhook's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The webhook's Prometheus metrics.
    pub fn metrics(&self) -> String {
        self.process.metrics()
    }

    /// The value of the sample `NAME{LABELS}` in [`Self::metrics`] (0 when absent).
    pub fn metric(&self, sample: &str) -> f64 {
        self.process.metric(sample)
    }
}

/// The start of `kubectl`'s message when the webhook entry `webhook` refuses a request.
pub fn denied_by(webhook: &str) -> String {
    format!("admission webhook \"{webhook}\" denied the request")
}

/// Runs `kubectl run hub --image=nginx:1.27` in `namespace` and asserts the pods webhook refuses
/// it with the §4 message (object, container, image, resolved registry, what is allowed, and the
/// command that asks for a grant).
pub fn assert_docker_hub_refused(namespace: &str) {
    crate::kubectl_run(namespace, "hub", "nginx:1.27").fails_with(&[
        &denied_by(PODS_WEBHOOK),
        &format!(
            "Pod {namespace}/hub: container \"hub\" image \"nginx:1.27\" resolves to registry \
             docker.io (docker.io/library/nginx:1.27), which namespace {namespace} may not use; \
             allowed here: docker-registry.tools.wmflabs.org; to use it, ask for a grant: \
             kubectl byoc request -n {namespace} --registry docker.io --reason '...'"
        ),
    ]);
}
