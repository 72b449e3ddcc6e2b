//! The byoc-operator API: the cluster-scoped [`ByocGrant`] custom resource, the namespaced
//! [`ByocRequest`] a tool maintainer files to ask for one, [`StoredGrant`]
//! (which reads stored grants one object at a time), the allow-list entry type
//! [`RegistryPattern`], the duration grammar ([`duration`]), the namespace label contract between controller and webhook
//! ([`labels`]) and what a namespace's grants give it under that contract ([`granted`]), and readers of watched objects that never fail on fields the operator does
//! not use ([`lenient`]), and the `PolicyReport` the controller keeps per namespace
//! ([`report`]). Every other crate depends on this one and on nothing else of the project.

pub mod duration;
pub mod grant;
pub mod granted;
pub mod labels;
pub mod lenient;
pub mod registry;
pub mod report;
pub mod request;
pub mod requirements;
pub mod stored;

pub use grant::{ByocGrant, ByocGrantSpec, ByocGrantStatus, InvalidGrant, ReadyReason};
pub use lenient::{LeanNamespace, Lenient};
pub use registry::{REGISTRY_PATTERN_REGEX, RegistryPattern, RegistryPatternError};
pub use request::{
    ByocRequest, ByocRequestSpec, ByocRequestStatus, InvalidRequest, REQUEST_ANNOTATION,
    RequestPhase, RequestRecord,
};
pub use requirements::{BaseImage, NamespaceRequirements, Requirements};
pub use stored::{StoredGrant, UnreadableGrant};

/// The API group of [`ByocGrant`], also the prefix of every label the controller owns.
pub const GROUP: &str = "byoc.toolforge.org";
