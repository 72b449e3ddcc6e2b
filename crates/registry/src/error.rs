//! What can go wrong when asking a registry, each case naming the registry and what was asked.

use std::time::Duration;

use thiserror::Error;

use crate::digest::Digest;

/// A failed registry lookup. `registry` is `host[:port]`; `what` says what was asked for, such
/// as `manifest toolforge/base:latest` or `blob sha256:… of toolforge/base`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RegistryError {
    /// No connection could be made (refused, DNS, TLS handshake, connection reset).
    #[error("registry {registry} is unreachable ({what}): {reason}")]
    Unreachable {
        /// The registry.
        registry: String,
        /// What was being fetched.
        what: String,
        /// The transport error.
        reason: String,
    },
    /// The review's registry budget ran out first.
    #[error("registry {registry} did not answer within {budget:?} ({what})")]
    Timeout {
        /// The registry.
        registry: String,
        /// What was being fetched.
        what: String,
        /// The budget the lookup had.
        budget: Duration,
    },
    /// An HTTP status other than success (after authentication, when the registry asked for it).
    #[error("registry {registry} answered HTTP {status} for {what}")]
    Status {
        /// The registry.
        registry: String,
        /// What was being fetched.
        what: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The content does not hash to the digest asked for or to the one the registry claimed.
    #[error(
        "registry {registry} served {what} whose content does not match its digest: \
         expected {expected}, content is {actual}"
    )]
    DigestMismatch {
        /// The registry.
        registry: String,
        /// What was being fetched.
        what: String,
        /// The digest asked for, or the one the registry's `Docker-Content-Digest` claimed.
        expected: Digest,
        /// The digest of what was served.
        actual: Digest,
    },
    /// The answer is larger than allowed for this kind of object.
    #[error("registry {registry} served {what} larger than {limit} bytes")]
    TooLarge {
        /// The registry.
        registry: String,
        /// What was being fetched.
        what: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The answer breaks the distribution spec (bad digest header, bad authentication
    /// challenge or token, a redirect without a usable location).
    #[error("registry {registry} gave a malformed answer for {what}: {reason}")]
    Malformed {
        /// The registry.
        registry: String,
        /// What was being fetched.
        what: String,
        /// What is wrong.
        reason: String,
    },
}

impl RegistryError {
    /// A bounded label for metrics: `unreachable`, `timeout`, `client_error` (4xx),
    /// `server_error` (5xx and other statuses), `digest_mismatch`, `too_large` or `malformed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::Timeout { .. } => "timeout",
            Self::Status { status, .. } if (400..500).contains(status) => "client_error",
            Self::Status { .. } => "server_error",
            Self::DigestMismatch { .. } => "digest_mismatch",
            Self::TooLarge { .. } => "too_large",
            Self::Malformed { .. } => "malformed",
        }
    }

    /// Whether the registry could not be asked (unreachable, timed out, a server error or
    /// rate limit), as opposed to an answer that was given and cannot be used.
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::DigestMismatch { .. } | Self::TooLarge { .. } | Self::Malformed { .. } => false,
        }
    }

    /// The registry the error is about.
    pub fn registry(&self) -> &str {
        match self {
            Self::Unreachable { registry, .. }
            | Self::Timeout { registry, .. }
            | Self::Status { registry, .. }
            | Self::DigestMismatch { registry, .. }
            | Self::TooLarge { registry, .. }
            | Self::Malformed { registry, .. } => registry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> RegistryError {
        RegistryError::Status {
            registry: "r.example".into(),
            what: "manifest a/b:c".into(),
            status,
        }
    }

    #[test]
    fn only_what_keeps_the_registry_from_answering_is_an_outage() {
        // (status, outage)
        for (code, outage) in [
            (404, false),
            (401, false),
            (400, false),
            (429, true),
            (500, true),
            (503, true),
        ] {
            assert_eq!(status(code).is_outage(), outage, "{code}");
        }
    }

    #[test]
    fn kinds_split_statuses_by_class() {
        assert_eq!(status(404).kind(), "client_error");
        assert_eq!(status(401).kind(), "client_error");
        assert_eq!(status(503).kind(), "server_error");
        assert_eq!(status(302).kind(), "server_error");
    }

    #[test]
    fn messages_name_the_registry_and_what_was_asked() {
        let timeout = RegistryError::Timeout {
            registry: "tools-harbor.wmcloud.org".into(),
            what: "manifest tool-a/web:latest".into(),
            budget: Duration::from_secs(2),
        };
        assert_eq!(
            timeout.to_string(),
            "registry tools-harbor.wmcloud.org did not answer within 2s (manifest tool-a/web:latest)"
        );
        assert_eq!(timeout.registry(), "tools-harbor.wmcloud.org");
        assert_eq!(
            status(503).to_string(),
            "registry r.example answered HTTP 503 for manifest a/b:c"
        );
    }
}
