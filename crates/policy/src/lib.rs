//! The registry policy of DESIGN §4, pure and without I/O: image-reference parsing, registry
//! matching, and the admission decision shared by the webhook and `kubectl-byoc check`.
//!
//! The webhook and the CLI both go through [`admission::decide`]; the CLI builds its input the
//! same way the webhook's cache does (grants → namespace labels → [`Allowance`]), so an offline
//! check gives exactly the answer the cluster would.

pub mod admission;
pub mod config;
pub mod decision;
pub mod default_registry;
pub mod inventory;
pub mod oci;
pub mod read;
pub mod reference;
pub mod requirement;
pub mod workload;

pub use admission::{Decision, Reason, decide, decide_requiring, respond};
pub use byoc_api::labels::Allowance;
pub use config::{Config, ConfigError, Mode};
pub use reference::{ImageRef, ReferenceError};
