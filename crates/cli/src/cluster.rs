//! Connecting to the cluster like kubectl does, and the API errors worth explaining.

use std::path::PathBuf;
use std::sync::OnceLock;

use byoc_api::{ByocGrant, StoredGrant};
use clap::{Args, ValueHint};
use jiff::SignedDuration;
use kube::api::{ListParams, ObjectList};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Api, Client, Config, Resource};
use thiserror::Error;

use crate::duration::parse_duration;

/// The kubectl connection flags every cluster command takes.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Cluster connection")]
pub struct ClusterArgs {
    /// The kubeconfig file (default: $KUBECONFIG, which may list several files, then
    /// ~/.kube/config; in a pod, its service account).
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The kubeconfig cluster to use (default: the context's).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// The kubeconfig user to use (default: the context's).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Give up on a single API request after this long, like 30s or 2m (default: no limit).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub request_timeout: Option<SignedDuration>,
}

impl ClusterArgs {
    /// A client for the selected context.
    pub async fn client(&self) -> Result<Client, ClusterError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
        };
        let explicit = self.kubeconfig.is_some()
            || options.context.is_some()
            || options.cluster.is_some()
            || options.user.is_some();
        let kubeconfig = match &self.kubeconfig {
            Some(path) => Some(Kubeconfig::read_from(path)?),
            None => match Kubeconfig::read() {
                Ok(kc) => Some(kc),
                // Like kubectl: without a kubeconfig, a pod uses its service account.
                Err(_) if !explicit && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
                    None
                }
                Err(e) => return Err(ClusterError::NoConfig(e)),
            },
        };
        let mut config = match kubeconfig {
            Some(kc) => Config::from_custom_kubeconfig(kc, &options).await?,
            None => Config::incluster()?,
        };
        if let Some(timeout) = self.request_timeout {
            let timeout = timeout.unsigned_abs();
            config.connect_timeout = Some(timeout);
            config.read_timeout = Some(timeout);
            config.write_timeout = Some(timeout);
        }
        let _ = SERVER.set(config.cluster_url.to_string());
        Client::try_from(config).map_err(ClusterError::Client)
    }
}

/// The API server this process talks to (one per run), for messages.
static SERVER: OnceLock<String> = OnceLock::new();

/// Why a cluster command could not talk to the cluster.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// The kubeconfig cannot be read or has no usable context.
    #[error("kubeconfig: {}", chain(.0))]
    Kubeconfig(#[from] KubeconfigError),
    /// No kubeconfig anywhere, and not in a pod.
    #[error(
        "no kubeconfig: set KUBECONFIG or pass --kubeconfig (looked in $KUBECONFIG and \
         ~/.kube/config: {})",
        chain(.0)
    )]
    NoConfig(#[source] KubeconfigError),
    /// In a pod, but the service account files are missing.
    #[error("in-cluster configuration: {}", chain(.0))]
    InCluster(#[from] kube::config::InClusterError),
    /// The client cannot be built (TLS setup, proxy).
    #[error("cannot create a Kubernetes client: {}", chain(.0))]
    Client(#[source] kube::Error),
    /// An API request failed.
    #[error("{what}: {}", describe(.source))]
    Api {
        /// What was being done, like `list ByocGrants`.
        what: String,
        /// The failure.
        source: kube::Error,
    },
    /// The ByocGrant CustomResourceDefinition is not installed.
    #[error(
        "the ByocGrant API (byocgrants.byoc.toolforge.org/v1alpha1) is not installed in this \
         cluster: install the byoc-operator chart, or `kubectl apply --server-side -f \
         crds/byocgrants.yaml`"
    )]
    NoCrd,
    /// The ByocRequest CustomResourceDefinition is not installed.
    #[error(
        "the ByocRequest API (byocrequests.byoc.toolforge.org/v1alpha1) is not installed in this \
         cluster: install the byoc-operator chart, or `kubectl apply --server-side -f \
         crds/byocrequests.yaml`"
    )]
    NoRequestCrd,
}

impl ClusterError {
    /// The HTTP status of a failed API request, if that is what this is.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api {
                source: kube::Error::Api(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }
}

/// An error message without kube's debug dump: the API server's message for API errors,
/// the chain of causes otherwise (`connection refused` is several levels down).
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        kube::Error::Service(cause) => format!(
            "cannot reach the API server {}: {}",
            SERVER.get().map_or("", String::as_str),
            chain(cause.as_ref())
        ),
        other => chain(other),
    }
}

/// An error and its causes, `a: b: c`, skipping causes already quoted by their parent.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// Adds what was being done to a failed request.
pub trait Context<T> {
    /// Wraps a kube error with `what`.
    fn context(self, what: impl FnOnce() -> String) -> Result<T, ClusterError>;
    /// Like [`Context::context`] for requests on ByocGrants: a 404 that names no object means
    /// the CRD is missing.
    fn grant_context(self, what: impl FnOnce() -> String) -> Result<T, ClusterError>;
    /// The same for requests on ByocRequests.
    fn request_context(self, what: impl FnOnce() -> String) -> Result<T, ClusterError>;
}

impl<T> Context<T> for Result<T, kube::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, ClusterError> {
        self.map_err(|source| ClusterError::Api {
            what: what(),
            source,
        })
    }

    fn grant_context(self, what: impl FnOnce() -> String) -> Result<T, ClusterError> {
        self.map_err(|source| missing_crd(source, ClusterError::NoCrd, what))
    }

    fn request_context(self, what: impl FnOnce() -> String) -> Result<T, ClusterError> {
        self.map_err(|source| missing_crd(source, ClusterError::NoRequestCrd, what))
    }
}

/// `missing` for a 404 that names no object (the API is not installed), else the error with
/// `what`.
fn missing_crd(
    source: kube::Error,
    missing: ClusterError,
    what: impl FnOnce() -> String,
) -> ClusterError {
    match &source {
        kube::Error::Api(s)
            if s.code == 404 && s.details.as_ref().is_none_or(|d| d.name.is_empty()) =>
        {
            missing
        }
        _ => ClusterError::Api {
            what: what(),
            source,
        },
    }
}

/// The cluster-scoped ByocGrant API, for writing grants.
pub fn grants(client: &Client) -> Api<ByocGrant> {
    Api::all(client.clone())
}

/// The same API for reading (and deleting) grants: an object that does not read as a ByocGrant
/// comes back as [`StoredGrant::Unreadable`] instead of failing the request.
pub fn stored_grants(client: &Client) -> Api<StoredGrant> {
    Api::all(client.clone())
}

/// Every ByocGrant, those that do not read included, sorted by namespace (unknown last) then
/// name.
pub async fn list_grants(client: &Client) -> Result<Vec<StoredGrant>, ClusterError> {
    let mut all = list_all(&stored_grants(client))
        .await
        .grant_context(|| "list ByocGrants".into())?;
    all.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    Ok(all)
}

/// Every object `api` lists, 500 a page.
pub async fn list_all<K>(api: &Api<K>) -> Result<Vec<K>, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut all = Vec::new();
    let mut pages = Pages::new(500);
    while let Some(lp) = pages.next_params() {
        all.extend(pages.take(api.list(&lp).await?));
    }
    Ok(all)
}

/// Namespace (unknown last), then name.
fn sort_key(grant: &StoredGrant) -> (bool, Option<&str>, Option<&str>) {
    let namespace = grant.target_namespace();
    (namespace.is_none(), namespace, grant.meta().name.as_deref())
}

/// Warns on stderr about each grant that does not read, once per command.
pub fn warn_unreadable(grants: &[StoredGrant]) {
    for grant in grants {
        if let StoredGrant::Unreadable(u) = grant {
            let name = u.metadata.name.as_deref().unwrap_or_default();
            eprintln!(
                "warning: byocgrant/{name} cannot be read, so it grants nothing: {}; fix it \
                 (kubectl edit byocgrant {name}) or delete it (kubectl byoc revoke --name {name})",
                u.error
            );
        }
    }
}

/// The state of a paginated list: `limit` per page, following `continue` tokens.
#[derive(Debug)]
pub struct Pages {
    limit: u32,
    token: Option<String>,
    done: bool,
    /// Pages received so far.
    pub count: usize,
}

impl Pages {
    /// Pages of at most `limit` objects (0: the server's choice, everything at once).
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            token: None,
            done: false,
            count: 0,
        }
    }

    /// The parameters of the next request, or `None` when the list is complete.
    pub fn next_params(&self) -> Option<ListParams> {
        if self.done {
            return None;
        }
        let mut lp = ListParams::default();
        if self.limit > 0 {
            lp = lp.limit(self.limit);
        }
        if let Some(token) = &self.token {
            lp = lp.continue_token(token);
        }
        Some(lp)
    }

    /// Records a received page and returns its items.
    pub fn take<K: Clone>(&mut self, page: ObjectList<K>) -> Vec<K> {
        self.count += 1;
        self.token = page.metadata.continue_.filter(|t| !t.is_empty());
        self.done = self.token.is_none();
        page.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
    use kube::core::Status;
    use kube::core::response::StatusDetails;

    fn page(items: Vec<u8>, token: Option<&str>) -> ObjectList<u8> {
        ObjectList {
            types: Default::default(),
            metadata: ListMeta {
                continue_: token.map(Into::into),
                ..ListMeta::default()
            },
            items,
        }
    }

    #[test]
    fn pages_follow_continue_tokens() {
        let mut pages = Pages::new(2);
        let first = pages.next_params().unwrap();
        assert_eq!((first.limit, first.continue_token), (Some(2), None));
        assert_eq!(pages.take(page(vec![1, 2], Some("abc"))), [1, 2]);
        let second = pages.next_params().unwrap();
        assert_eq!(second.continue_token.as_deref(), Some("abc"));
        assert_eq!(pages.take(page(vec![3], Some(""))), [3]);
        assert!(pages.next_params().is_none());
        assert_eq!(pages.count, 2);
    }

    fn api_error(code: u16, name: &str, message: &str) -> Result<(), kube::Error> {
        let details = StatusDetails {
            name: name.into(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            causes: Vec::new(),
            retry_after_seconds: 0,
        };
        let status = Status::failure(message, "NotFound")
            .with_code(code)
            .with_details(details);
        Err(kube::Error::Api(status.boxed()))
    }

    #[test]
    fn missing_crd_and_api_errors_read_well() {
        let missing = api_error(404, "", "the server could not find the requested resource");
        assert!(matches!(
            missing.grant_context(|| "list".into()),
            Err(ClusterError::NoCrd)
        ));
        let missing = api_error(404, "", "the server could not find the requested resource");
        assert!(matches!(
            missing.request_context(|| "list".into()),
            Err(ClusterError::NoRequestCrd)
        ));
        let gone = api_error(404, "x", "byocgrants.byoc.toolforge.org \"x\" not found")
            .grant_context(|| "delete ByocGrant x".into())
            .unwrap_err();
        assert_eq!(gone.status(), Some(404));
        assert_eq!(
            gone.to_string(),
            "delete ByocGrant x: byocgrants.byoc.toolforge.org \"x\" not found"
        );
        let forbidden = api_error(403, "", "namespaces is forbidden: User \"u\" cannot list")
            .context(|| "list Namespaces".into())
            .unwrap_err();
        assert_eq!(
            forbidden.to_string(),
            "list Namespaces: namespaces is forbidden: User \"u\" cannot list"
        );
    }
}
