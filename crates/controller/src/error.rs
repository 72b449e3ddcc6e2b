//! Why a reconcile failed. Each variant has a bounded [`Error::metric_label`] for the errors
//! counter; its `Display` text is what the `Error` condition and the `Failed` event say.

use crate::desired::DesiredError;
use kube::runtime::finalizer;

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The merge patch of a namespace's labels failed.
    #[error("cannot write the labels of namespace {namespace}: {source}")]
    WriteLabels {
        /// The namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },

    /// Removing labels under the prefix that someone else put on a namespace failed.
    #[error("cannot remove foreign labels {keys:?} from namespace {namespace}: {source}")]
    RemoveForeignLabels {
        /// The namespace.
        namespace: String,
        /// The label keys that should have gone.
        keys: Vec<String>,
        /// The API error.
        #[source]
        source: kube::Error,
    },

    /// The union of a namespace's grants does not fit in labels (the CRD schema refuses such
    /// entries, so this means a grant slipped past it), or their requirements do not fit in
    /// the annotation the webhook reads. Nothing is written.
    #[error("the grants of namespace {namespace} cannot be stored on it: {source}")]
    EncodeLabels {
        /// The namespace.
        namespace: String,
        /// Why.
        #[source]
        source: DesiredError,
    },

    /// Writing a grant's status failed.
    #[error("cannot update the status of ByocGrant {grant}: {source}")]
    PatchStatus {
        /// The grant.
        grant: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },

    /// Removing the finalizer of a deleted grant that does not read failed.
    #[error("cannot remove the finalizer of ByocGrant {grant}: {source}")]
    RemoveFinalizer {
        /// The grant.
        grant: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },

    /// Writing a request's status failed.
    #[error("cannot update the status of ByocRequest {request}: {source}")]
    UpdateRequestStatus {
        /// The request, `namespace/name`.
        request: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },

    /// Reading the grant an approved request led to failed.
    #[error("cannot read ByocGrant {grant}: {source}")]
    ReadGrant {
        /// The grant.
        grant: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },

    /// Adding or removing the finalizer failed, or the apply/cleanup inside it did.
    #[error(transparent)]
    Finalizer(#[from] Box<finalizer::Error<Error>>),
}

impl Error {
    /// A short, bounded name for the `error` label of the errors counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::WriteLabels { .. } => "write_labels",
            Self::RemoveForeignLabels { .. } => "remove_foreign_labels",
            Self::EncodeLabels { .. } => "encode_labels",
            Self::PatchStatus { .. } => "patch_status",
            Self::RemoveFinalizer { .. } => "remove_finalizer",
            Self::UpdateRequestStatus { .. } => "update_request_status",
            Self::ReadGrant { .. } => "read_grant",
            Self::Finalizer(e) => match &**e {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.metric_label()
                }
                finalizer::Error::AddFinalizer(_) => "add_finalizer",
                finalizer::Error::RemoveFinalizer(_) => "remove_finalizer",
                finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => "finalizer",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error() -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("boom", "InternalError")
                .with_code(500)
                .boxed(),
        )
    }

    #[test]
    fn metric_labels_see_through_the_finalizer() {
        let apply = || Error::WriteLabels {
            namespace: "ns".into(),
            source: api_error(),
        };
        let cases = [
            (apply(), "write_labels"),
            (
                Error::Finalizer(Box::new(finalizer::Error::ApplyFailed(apply()))),
                "write_labels",
            ),
            (
                Error::Finalizer(Box::new(finalizer::Error::CleanupFailed(
                    Error::RemoveForeignLabels {
                        namespace: "ns".into(),
                        keys: vec![],
                        source: api_error(),
                    },
                ))),
                "remove_foreign_labels",
            ),
            (
                Error::Finalizer(Box::new(finalizer::Error::AddFinalizer(api_error()))),
                "add_finalizer",
            ),
            (
                Error::Finalizer(Box::new(finalizer::Error::RemoveFinalizer(api_error()))),
                "remove_finalizer",
            ),
            (
                Error::PatchStatus {
                    grant: "g".into(),
                    source: api_error(),
                },
                "patch_status",
            ),
            (
                Error::UpdateRequestStatus {
                    request: "ns/r".into(),
                    source: api_error(),
                },
                "update_request_status",
            ),
            (
                Error::ReadGrant {
                    grant: "g".into(),
                    source: api_error(),
                },
                "read_grant",
            ),
        ];
        for (error, label) in cases {
            assert_eq!(error.metric_label(), label, "{error}");
        }
    }

    #[test]
    fn messages_name_the_object() {
        let e = Error::Finalizer(Box::new(finalizer::Error::ApplyFailed(
            Error::WriteLabels {
                namespace: "tool-a".into(),
                source: api_error(),
            },
        )));
        let text = e.to_string();
        assert!(
            text.contains("cannot write the labels of namespace tool-a"),
            "{text}"
        );
    }
}
