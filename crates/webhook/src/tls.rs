//! The serving certificate: loaded from PEM files and re-read when they change, with no restart
//! and no failed handshake.
//!
//! Each TLS handshake asks [`CertResolver`] for the current key, so swapping it takes effect on
//! the next connection while open connections keep theirs. [`CertResolver::watch`] polls the
//! files' metadata: a Kubernetes Secret volume replaces them by swapping a `..data` symlink,
//! which changes the inode the path resolves to, while an in-place rewrite changes size or
//! mtime. A new certificate is only served once it parses and matches its key, so a
//! half-written pair (certificate updated, key not yet) keeps the old one until both are done.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// Why the certificate and key cannot be served.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file holds no usable PEM certificate.
    #[error("{path}: no PEM certificate: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// The key file holds no usable PEM private key.
    #[error("{path}: no PEM private key: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// The key is unsupported or does not belong to the certificate.
    #[error("the key in {key} does not fit the certificate in {cert}: {source}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The TLS configuration cannot be built.
    #[error("cannot configure TLS: {0}")]
    Config(#[from] rustls::Error),
}

impl TlsError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Certificate { .. } => "certificate",
            Self::Key { .. } => "key",
            Self::Mismatch { .. } => "mismatch",
            Self::Config(_) => "config",
        }
    }
}

/// Where the certificate chain and key are read from.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl CertFiles {
    /// Reads and checks the pair.
    pub fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let cert_pem = read(&self.cert)?;
        let key_pem = read(&self.key)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Certificate {
                path: self.cert.clone(),
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::Certificate {
                path: self.cert.clone(),
                reason: "the file has no CERTIFICATE block".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Key {
            path: self.key.clone(),
            reason: e.to_string(),
        })?;
        CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Mismatch {
            cert: self.cert.clone(),
            key: self.key.clone(),
            source,
        })
    }

    /// What identifies the files' current contents without reading them.
    fn fingerprint(&self) -> Option<Fingerprint> {
        Some(Fingerprint([stat(&self.cert)?, stat(&self.key)?]))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Device, inode, size, mtime and ctime of what a path resolves to (following symlinks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat([i64; 6]);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint([Stat; 2]);

#[allow(clippy::cast_possible_wrap)] // only compared for equality
fn stat(path: &Path) -> Option<Stat> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stat([
        m.dev() as i64,
        m.ino() as i64,
        m.size() as i64,
        m.mtime(),
        m.mtime_nsec(),
        m.ctime_nsec(),
    ]))
}

/// Hands the current certificate to every TLS handshake.
pub struct CertResolver {
    files: CertFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' fingerprint taken just before the first load.
    loaded: Option<Fingerprint>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The outcome of one check of the files, for metrics.
#[derive(Debug)]
pub enum Reload {
    /// The files changed and the new pair is served.
    Reloaded,
    /// The files changed but cannot be served; the previous pair stays.
    Failed(TlsError),
}

impl CertResolver {
    /// Loads `files`; fails when they cannot be served.
    pub fn load(files: CertFiles, provider: Arc<CryptoProvider>) -> Result<Arc<Self>, TlsError> {
        // Taken before reading, so a change made while reading is seen by the next poll.
        let loaded = files.fingerprint();
        let key = files.load(&provider)?;
        Ok(Arc::new(Self {
            files,
            provider,
            current: RwLock::new(Arc::new(key)),
            loaded,
        }))
    }

    /// The pair served to new connections.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A TLS server configuration (TLS 1.2 and 1.3, HTTP/1.1) that asks this resolver.
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, TlsError> {
        const VERSIONS: &[&SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(VERSIONS)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Polls the files every `interval` and serves a changed pair once it is valid; calls
    /// `report` after each attempt. Runs until dropped.
    pub async fn watch(self: Arc<Self>, interval: Duration, mut report: impl FnMut(&Reload)) {
        let mut seen = self.loaded;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = self.files.fingerprint();
            // A file that vanished mid-swap is looked at again on the next tick.
            if now.is_none() || now == seen {
                continue;
            }
            seen = now;
            let outcome = match self.files.load(&self.provider) {
                Ok(key) => {
                    *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
                    Reload::Reloaded
                }
                Err(error) => Reload::Failed(error),
            };
            report(&outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertifiedKey as Generated, generate_simple_self_signed};

    fn generate(name: &str) -> Generated<rcgen::KeyPair> {
        generate_simple_self_signed(vec![name.to_owned()]).unwrap()
    }

    fn write(dir: &Path, g: &Generated<rcgen::KeyPair>) -> CertFiles {
        let files = CertFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&files.cert, g.cert.pem()).unwrap();
        std::fs::write(&files.key, g.signing_key.serialize_pem()).unwrap();
        files
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    #[test]
    fn bad_pairs_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path(), &generate("a.test"));
        assert!(files.load(&provider()).is_ok());

        let other = generate("b.test");
        std::fs::write(&files.key, other.signing_key.serialize_pem()).unwrap();
        let err = files.load(&provider()).unwrap_err();
        assert_eq!(err.metric_label(), "mismatch", "{err}");

        std::fs::write(&files.cert, "not pem").unwrap();
        assert_eq!(
            files.load(&provider()).unwrap_err().metric_label(),
            "certificate"
        );

        std::fs::write(&files.cert, other.cert.pem()).unwrap();
        std::fs::write(
            &files.key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(matches!(
            files.load(&provider()),
            Err(TlsError::Mismatch { .. } | TlsError::Key { .. })
        ));

        let missing = CertFiles {
            cert: dir.path().join("nope.crt"),
            key: files.key.clone(),
        };
        let err = missing.load(&provider()).unwrap_err();
        assert_eq!(err.metric_label(), "read");
        assert!(err.to_string().contains("nope.crt"), "{err}");
    }

    #[tokio::test]
    async fn follows_a_secret_volume_symlink_swap() {
        // The layout kubelet gives a Secret volume: tls.crt -> ..data/tls.crt, ..data -> ..v1.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let version = |name: &str, g: &Generated<rcgen::KeyPair>| {
            let d = root.join(name);
            std::fs::create_dir(&d).unwrap();
            write(&d, g);
        };
        let (first, second) = (generate("first.test"), generate("second.test"));
        version("..v1", &first);
        std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), root.join(f)).unwrap();
        }
        let files = CertFiles {
            cert: root.join("tls.crt"),
            key: root.join("tls.key"),
        };
        let resolver = CertResolver::load(files, provider()).unwrap();
        let served = |r: &CertResolver| r.current().cert[0].to_vec();
        assert_eq!(served(&resolver), first.cert.der().to_vec());

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(resolver.clone().watch(Duration::from_millis(20), move |r| {
            tx.send(matches!(r, Reload::Reloaded)).unwrap();
        }));
        // Swap atomically, as kubelet does: a new version dir, then rename a new symlink over.
        version("..v2", &second);
        std::os::unix::fs::symlink("..v2", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        assert_eq!(rx.recv().await, Some(true));
        assert_eq!(served(&resolver), second.cert.der().to_vec());

        // A broken pair is reported and the previous one stays.
        std::fs::write(
            root.join("..v2/tls.key"),
            generate("x.test").signing_key.serialize_pem(),
        )
        .unwrap();
        assert_eq!(rx.recv().await, Some(false));
        assert_eq!(served(&resolver), second.cert.der().to_vec());
        task.abort();
    }
}
