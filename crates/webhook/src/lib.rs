//! The byoc validating admission webhook (DESIGN §5): the registry policy of `byoc-policy`
//! served over HTTPS to the API server, for pods, `kubectl debug`, workload templates and the
//! namespace label guard.
//!
//! - [`review`]: an AdmissionReview body in, the request or a refusal out (pure);
//! - [`cache`]: a watch of Namespaces (read as `LeanNamespace`), whose labels carry the grants;
//! - [`health`]: whether that watch works, for readiness and metrics;
//! - [`tls`]: the serving certificate, re-read when its files change;
//! - [`server`]: `POST /validate`, with a tracing span and metrics per request, read timeouts,
//!   and `byoc_runtime::connections` caps on open connections and their age;
//! - image requirements are checked against registries by `byoc_registry::Lookups`, bounded
//!   per review and counted in [`metrics`];
//! - [`budget`]: the bound on bytes of request bodies read and parsed at once;
//! - [`metrics`]: what `/metrics` on the admin port exports.

pub mod budget;
pub mod cache;
pub mod health;
pub mod metrics;
pub mod review;
pub mod server;
pub mod tls;

pub use cache::NamespaceCache;
pub use metrics::Metrics;
pub use server::{VALIDATE_PATH, Webhook};
pub use tls::{CertFiles, CertResolver};
