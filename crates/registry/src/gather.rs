//! [`Client::gather`]: fetching what `byoc_policy::requirement::check` asks for into its
//! [`Facts`]. The answers are read by `byoc_policy::oci`; a lookup that fails, or an answer
//! that does not read, goes into the facts as [`Answer::Failed`] with a message naming the
//! registry.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use byoc_policy::oci::{self, Manifest};
use byoc_policy::requirement::{Answer, Facts, Lookup};
use futures::StreamExt as _;

use crate::client::{Budget, Client, Fetched, Repository};
use crate::digest::Digest;
use crate::error::RegistryError;

/// How one lookup went, for metrics: a bounded result label and how long it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `found`, `unreadable` (an answer `byoc_policy::oci` refuses) or
    /// [`RegistryError::kind`].
    pub result: &'static str,
    /// How long it took.
    pub elapsed: Duration,
}

/// `host[:port]/path` (as [`Lookup`] names repositories) as a [`Repository`].
pub fn split_repository(repository: &str) -> Option<Repository> {
    let (registry, path) = repository.split_once('/')?;
    (!registry.is_empty() && !path.is_empty()).then(|| Repository {
        registry: registry.to_owned(),
        path: path.to_owned(),
    })
}

/// One answer, ready for the facts.
enum Found {
    Tag {
        key: (String, String),
        digest: Answer<oci::Digest>,
        manifest: Option<(oci::Digest, Answer<Manifest>)>,
    },
    Manifest(oci::Digest, Answer<Manifest>),
    Config(oci::Digest, Answer<oci::ImageConfig>),
}

fn policy_digest(digest: &Digest) -> Result<oci::Digest, String> {
    digest.as_str().parse().map_err(|e| format!("{e}"))
}

fn client_digest(registry: &str, digest: &oci::Digest) -> Result<Digest, RegistryError> {
    digest
        .as_str()
        .parse()
        .map_err(|e: crate::DigestParseError| RegistryError::Malformed {
            registry: registry.to_owned(),
            what: format!("digest {digest}"),
            reason: e.to_string(),
        })
}

/// A lookup that failed with `e`, as a fact: an outage (the registry unreachable, too slow, or
/// a server error) is [`Answer::Unavailable`]; an answer that was given and cannot be used
/// (a client error such as 404, a digest mismatch, too large, malformed) is [`Answer::Failed`].
fn answer_of<T>(e: &RegistryError) -> Answer<T> {
    let why = e.to_string();
    if e.is_outage() {
        Answer::Unavailable(why)
    } else {
        Answer::Failed(why)
    }
}

/// The manifest read, and the result label.
fn read_manifest(registry: &str, fetched: &Fetched) -> (Answer<Manifest>, &'static str) {
    match oci::read_manifest(fetched.media_type.as_deref(), &fetched.bytes) {
        Ok(m) => (Answer::Found(m), "found"),
        Err(e) => (
            Answer::Failed(format!(
                "registry {registry} served a manifest {} that cannot be read: {e}",
                fetched.digest
            )),
            "unreadable",
        ),
    }
}

impl Client {
    /// Fetches `lookups` (at most `concurrency` at once, all within `budget`) into `facts`,
    /// returning how each went. Repositories that are not `host/path` fail without a request.
    pub async fn gather(
        &self,
        lookups: BTreeSet<Lookup>,
        facts: &mut Facts,
        budget: &Budget,
        concurrency: usize,
    ) -> Vec<Outcome> {
        let answers: Vec<(Found, Outcome)> = futures::stream::iter(lookups)
            .map(|lookup| self.one(lookup, budget))
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut outcomes = Vec::with_capacity(answers.len());
        for (found, outcome) in answers {
            outcomes.push(outcome);
            match found {
                Found::Tag {
                    key,
                    digest,
                    manifest,
                } => {
                    facts.tags.insert(key, digest);
                    if let Some((digest, manifest)) = manifest {
                        facts.manifests.entry(digest).or_insert(manifest);
                    }
                }
                Found::Manifest(digest, answer) => {
                    facts.manifests.insert(digest, answer);
                }
                Found::Config(digest, answer) => {
                    facts.configs.insert(digest, answer);
                }
            }
        }
        outcomes
    }

    async fn one(&self, lookup: Lookup, budget: &Budget) -> (Found, Outcome) {
        let started = Instant::now();
        let (found, result) = match lookup {
            Lookup::Tag { repository, tag } => {
                let fetched = match split_repository(&repository) {
                    Some(repo) => self.resolve_tag(&repo, &tag, budget).await,
                    None => Err(unnamed(&repository)),
                };
                let (digest, manifest, result) = match fetched {
                    Ok(fetched) => match policy_digest(&fetched.digest) {
                        Ok(digest) => {
                            let registry = repository.split('/').next().unwrap_or_default();
                            let (manifest, result) = read_manifest(registry, &fetched);
                            (
                                Answer::Found(digest.clone()),
                                Some((digest, manifest)),
                                result,
                            )
                        }
                        Err(why) => (Answer::Failed(why), None, "unreadable"),
                    },
                    Err(e) => (answer_of(&e), None, e.kind()),
                };
                let key = (repository, tag);
                (
                    Found::Tag {
                        key,
                        digest,
                        manifest,
                    },
                    result,
                )
            }
            Lookup::Manifest { repository, digest } => {
                let fetched = match split_repository(&repository) {
                    Some(repo) => match client_digest(&repo.registry, &digest) {
                        Ok(d) => self.manifest(&repo, &d, budget).await.map(|f| (repo, f)),
                        Err(e) => Err(e),
                    },
                    None => Err(unnamed(&repository)),
                };
                let (answer, result) = match fetched {
                    Ok((repo, fetched)) => read_manifest(&repo.registry, &fetched),
                    Err(e) => (answer_of(&e), e.kind()),
                };
                (Found::Manifest(digest, answer), result)
            }
            Lookup::Config { repository, digest } => {
                let fetched = match split_repository(&repository) {
                    Some(repo) => match client_digest(&repo.registry, &digest) {
                        Ok(d) => self.blob(&repo, &d, budget).await.map(|f| (repo, f)),
                        Err(e) => Err(e),
                    },
                    None => Err(unnamed(&repository)),
                };
                let (answer, result) = match fetched {
                    Ok((repo, fetched)) => match oci::read_config(&fetched.bytes) {
                        Ok(config) => (Answer::Found(config), "found"),
                        Err(e) => (
                            Answer::Failed(format!(
                                "registry {} served a config {digest} that cannot be read: {e}",
                                repo.registry
                            )),
                            "unreadable",
                        ),
                    },
                    Err(e) => (answer_of(&e), e.kind()),
                };
                (Found::Config(digest, answer), result)
            }
        };
        let outcome = Outcome {
            result,
            elapsed: started.elapsed(),
        };
        (found, outcome)
    }
}

fn unnamed(repository: &str) -> RegistryError {
    RegistryError::Malformed {
        registry: repository.to_owned(),
        what: format!("repository {repository}"),
        reason: "not host/path".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_split_at_the_first_slash() {
        let r = split_repository("127.0.0.1:5000/toolforge/base").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.path, "toolforge/base");
        assert!(split_repository("quay.io").is_none());
        assert!(split_repository("/x").is_none());
        assert!(split_repository("quay.io/").is_none());
    }
}
