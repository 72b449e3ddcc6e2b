//! Images allowed by name that still have requirements to meet, and settling them once the
//! registry answers are in (DESIGN §12). Pure: the webhook gathers the answers.
//!
//! An image may be admitted through several allowances (a default registry, a grant for its
//! registry, a grant for any registry); each gives alternatives, and the image is admitted
//! when one alternative holds. Each alternative is settled requirement by requirement, so that
//! `registryLookups.failureMode` applies per requirement: `allow` admits an image whose check
//! could not be made because a lookup failed (with a warning), never one whose check was made
//! and failed.

use std::collections::BTreeSet;
use std::fmt;

use byoc_api::Requirements;

use super::{Answer, Context, Facts, Lookup, Requirement, Verdict, check};
use crate::config::{FailureMode, FailureModes};
use crate::reference::ImageRef;
use crate::workload::ContainerKind;

/// Where requirements come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `platformRequirements`, for images of the default registries.
    Platform,
    /// The namespace's grants for this allowance key (a registry entry, or `any`).
    Grant(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Platform => f.write_str("the platform (platformRequirements)"),
            Self::Grant(key) if key == "any" => f.write_str("the grant for any registry"),
            Self::Grant(key) => write!(f, "the grant for {key}"),
        }
    }
}

/// One way to admit an image: these requirements, from there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alternative {
    /// Where they come from.
    pub origin: Origin,
    /// What they require (not empty).
    pub requirements: Requirements,
}

/// A container whose image is allowed by name when one of its alternatives holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    /// The object, like `Pod tool-a/web`.
    pub subject: String,
    /// Which list the container is in.
    pub kind: ContainerKind,
    /// The container's name.
    pub container: String,
    /// The image as written.
    pub image: String,
    /// The image, parsed.
    pub reference: ImageRef,
    /// The alternatives (at least one).
    pub alternatives: Vec<Alternative>,
}

/// Why a pending container is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmet {
    /// Where the requirement comes from.
    pub origin: Origin,
    /// Which requirement.
    pub requirement: Requirement,
    /// Why it does not hold, or why it could not be checked.
    pub reason: String,
    /// Whether it could not be checked (a lookup failed) rather than checked and not met.
    pub lookup_failed: bool,
}

/// The outcome for a pending container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// An alternative holds; the warnings say which failed lookups `allow` let pass.
    Met {
        /// One line per softened requirement.
        softened: Vec<String>,
    },
    /// No alternative holds: the first one's refusal, and how many others failed too.
    Refused {
        /// The first alternative's refusal.
        unmet: Unmet,
        /// How many other alternatives do not hold either.
        others: usize,
    },
}

/// The parts of `requirements`, each alone.
fn parts(requirements: &Requirements) -> Vec<(Requirement, Requirements)> {
    let mut parts = Vec::new();
    if requirements.require_digest {
        let only = Requirements {
            require_digest: true,
            ..Requirements::default()
        };
        parts.push((Requirement::RequireDigest, only));
    }
    if !requirements.built_on.is_empty() {
        let only = Requirements {
            built_on: requirements.built_on.clone(),
            ..Requirements::default()
        };
        parts.push((Requirement::BuiltOn, only));
    }
    if !requirements.source_from.is_empty() {
        let only = Requirements {
            source_from: requirements.source_from.clone(),
            ..Requirements::default()
        };
        parts.push((Requirement::SourceFrom, only));
    }
    parts
}

/// Whether the refusal of `requirements` rests on a failed lookup: without the failed
/// answers, the check would need lookups instead of refusing.
fn rests_on_failure(
    image: &ImageRef,
    requirements: &Requirements,
    ctx: &Context,
    facts: &Facts,
) -> bool {
    fn failed<T>(a: &Answer<T>) -> bool {
        matches!(a, Answer::Failed(_))
    }
    let any_failed = facts.tags.values().any(failed)
        || facts.manifests.values().any(failed)
        || facts.configs.values().any(failed);
    if !any_failed {
        return false;
    }
    let mut known = facts.clone();
    known.tags.retain(|_, a| !failed(a));
    known.manifests.retain(|_, a| !failed(a));
    known.configs.retain(|_, a| !failed(a));
    matches!(
        check(image, requirements, ctx, &known),
        Verdict::NeedsLookup(_)
    )
}

/// The message of a failed lookup in `facts`, if any (each names the registry).
fn first_failure(facts: &Facts) -> Option<&str> {
    fn why<T>(a: &Answer<T>) -> Option<&str> {
        match a {
            Answer::Failed(why) => Some(why),
            Answer::Found(_) => None,
        }
    }
    facts
        .tags
        .values()
        .find_map(why)
        .or_else(|| facts.manifests.values().find_map(why))
        .or_else(|| facts.configs.values().find_map(why))
}

impl Pending {
    /// The lookups still needed to settle every alternative.
    pub fn needs(&self, ctx: &Context, facts: &Facts) -> BTreeSet<Lookup> {
        let mut need = BTreeSet::new();
        for alternative in &self.alternatives {
            if let Verdict::NeedsLookup(n) =
                check(&self.reference, &alternative.requirements, ctx, facts)
            {
                need.extend(n);
            }
        }
        need
    }

    /// Settles the container with the answers in `facts`. A lookup still missing (the
    /// review's budget or lookup cap ran out first) counts as a failed one, `unfinished`
    /// saying why.
    pub fn settle(
        &self,
        ctx: &Context,
        facts: &Facts,
        modes: FailureModes,
        unfinished: &str,
    ) -> Settled {
        let mut refusals = Vec::new();
        for alternative in &self.alternatives {
            match self.settle_one(alternative, ctx, facts, modes, unfinished) {
                Ok(softened) => return Settled::Met { softened },
                Err(unmet) => refusals.push(unmet),
            }
        }
        let others = refusals.len().saturating_sub(1);
        match refusals.into_iter().next() {
            Some(unmet) => Settled::Refused { unmet, others },
            None => Settled::Met {
                softened: Vec::new(),
            },
        }
    }

    fn settle_one(
        &self,
        alternative: &Alternative,
        ctx: &Context,
        facts: &Facts,
        modes: FailureModes,
        unfinished: &str,
    ) -> Result<Vec<String>, Unmet> {
        let mut softened = Vec::new();
        for (requirement, only) in parts(&alternative.requirements) {
            let (reason, lookup_failed) = match check(&self.reference, &only, ctx, facts) {
                Verdict::Satisfied(_) => continue,
                Verdict::NeedsLookup(need) => {
                    let what = need.iter().next().map(ToString::to_string);
                    let reason = format!(
                        "cannot check {}: {unfinished} before {}",
                        self.reference,
                        what.unwrap_or_default()
                    );
                    // requireDigest is decided by the reference: only its message needs a
                    // lookup, and a tag is refused with or without it.
                    (reason, requirement != Requirement::RequireDigest)
                }
                Verdict::Refused(refusal) => {
                    let failed = requirement != Requirement::RequireDigest
                        && rests_on_failure(&self.reference, &only, ctx, facts);
                    (refusal.reason, failed)
                }
            };
            let mode = match requirement {
                Requirement::BuiltOn => modes.built_on,
                Requirement::SourceFrom => modes.source_from,
                Requirement::RequireDigest => FailureMode::Fail,
            };
            if lookup_failed && mode == FailureMode::Allow {
                // Short (the API server may cut warnings at 256 characters): what failed first.
                let why = first_failure(facts).unwrap_or(&reason);
                softened.push(format!(
                    "{} {:?}: {requirement} not checked (failureMode allow): {why}",
                    self.kind, self.container
                ));
                continue;
            }
            return Err(Unmet {
                origin: alternative.origin.clone(),
                requirement,
                reason,
                lookup_failed,
            });
        }
        Ok(softened)
    }
}
