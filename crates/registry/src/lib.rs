//! The registry client of image requirements (DESIGN §12): it fetches manifests and config
//! blobs and hands out raw, digest-verified bytes with their media type; parsing and deciding
//! are `byoc-policy`'s.
//!
//! - Anonymous first: the distribution spec's token flow (401 + `WWW-Authenticate: Bearer` →
//!   token endpoint), with a registry's credentials from a `.dockerconfigjson` when given
//!   ([`Credentials`]); HTTP Basic when the registry asks for it.
//! - Verified: by-digest content must hash to the digest; a manifest fetched by tag must hash
//!   to the registry's `Docker-Content-Digest` claim. A registry that lies gets
//!   [`RegistryError::DigestMismatch`].
//! - Bounded: bytes per manifest and per blob, time per fetch, requests per host, and the
//!   caller's [`Budget`] per review.
//! - Cached: content by digest (immutable, LRU bounded in bytes); tag → digest for a short TTL;
//!   concurrent lookups of one key share one request.
//!
//! [`Lookups`] is the loop that settles a review's pending containers with this client, shared
//! by the webhook and `kubectl byoc check`.
//!
//! HTTPS always, except for registries configured as insecure (plain HTTP: loopback tests).
//! The caller decides which registries may be asked (only those a grant or the platform
//! lists), so a tenant cannot point the webhook at a host of its choosing.

mod auth;
pub mod bases;
mod cache;
mod client;
mod digest;
mod error;
mod fetch;
mod gather;
pub mod lookups;

pub use auth::{Credentials, CredentialsError};
pub use bases::BaseChecks;
pub use client::{Budget, BuildError, CacheStats, Client, ClientConfig, Fetched, Repository};
pub use digest::{Digest, DigestParseError};
pub use error::RegistryError;
pub use gather::{Outcome, split_repository};
pub use lookups::{LookupMetrics, Lookups};
