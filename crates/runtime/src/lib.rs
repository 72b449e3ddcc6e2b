//! Process plumbing shared by the byoc controller and webhook: the plain-HTTP admin server
//! (`/healthz`, `/readyz`, `/metrics`), caps on connections and the open-files limit, bounded
//! metric labels, logging set-up and one shutdown signal for every task.

pub mod admin;
pub mod cardinality;
pub mod connections;
pub mod logging;
pub mod shutdown;

pub use admin::{AdminServer, Readiness};
pub use shutdown::Shutdown;
