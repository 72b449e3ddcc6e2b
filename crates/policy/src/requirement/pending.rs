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
        /// One line per softened requirement, about the image: the same for every container of
        /// it, so that a review settles each distinct image once ([`Decision::settle`] names
        /// the container).
        ///
        /// [`Decision::settle`]: crate::Decision::settle
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

/// Which answers a refusal may rest on, for [`rests_on`].
#[derive(Clone, Copy)]
enum Gone {
    /// Any lookup that gave no answer.
    Failed,
    /// Only lookups the registry could not answer: an outage ([`Answer::Unavailable`]).
    /// Answers that were given and cannot be used ([`Answer::Failed`]) are not: whoever
    /// pushes the image controls them, so `failureMode: allow` never softens them.
    Unavailable,
}

impl Gone {
    fn of<T>(self, a: &Answer<T>) -> bool {
        match self {
            Self::Failed => a.failure().is_some(),
            Self::Unavailable => matches!(a, Answer::Unavailable(_)),
        }
    }
}

/// Whether the refusal of `requirements` rests on the `gone` answers of `facts`: without
/// them, the check would need lookups instead of refusing.
fn rests_on(
    image: &ImageRef,
    requirements: &Requirements,
    ctx: &Context,
    facts: &Facts,
    gone: Gone,
) -> bool {
    let any = facts.tags.values().any(|a| gone.of(a))
        || facts.manifests.values().any(|a| gone.of(a))
        || facts.configs.values().any(|a| gone.of(a));
    if !any {
        return false;
    }
    let mut known = facts.clone();
    known.tags.retain(|_, a| !gone.of(a));
    known.manifests.retain(|_, a| !gone.of(a));
    known.configs.retain(|_, a| !gone.of(a));
    matches!(
        check(image, requirements, ctx, &known),
        Verdict::NeedsLookup(_)
    )
}

/// The message of a lookup the registry could not answer in `facts`, if any (each names
/// the registry).
fn first_outage(facts: &Facts) -> Option<&str> {
    fn why<T>(a: &Answer<T>) -> Option<&str> {
        match a {
            Answer::Unavailable(why) => Some(why),
            Answer::Found(_) | Answer::Failed(_) => None,
        }
    }
    facts
        .tags
        .values()
        .find_map(why)
        .or_else(|| facts.manifests.values().find_map(why))
        .or_else(|| facts.configs.values().find_map(why))
}

/// Why a review's lookups stopped before every answer was in.
#[derive(Clone, Debug, PartialEq)]
pub struct Unfinished {
    /// What stopped them, for messages.
    pub why: String,
    /// Whether it is an outage (the budget ran out, or there is no client), which
    /// `failureMode: allow` softens; the lookup cap is not, since the image's own index can
    /// reach it.
    pub outage: bool,
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
        unfinished: &Unfinished,
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
        unfinished: &Unfinished,
    ) -> Result<Vec<String>, Unmet> {
        let mut softened = Vec::new();
        for (requirement, only) in parts(&alternative.requirements) {
            // requireDigest is decided by the reference: only its message needs a lookup, and a
            // tag is refused with or without it.
            let lookups_count = requirement != Requirement::RequireDigest;
            let (reason, lookup_failed, outage) = match check(&self.reference, &only, ctx, facts) {
                Verdict::Satisfied(_) => continue,
                Verdict::NeedsLookup(need) => {
                    let what = need.iter().next().map(ToString::to_string);
                    let reason = format!(
                        "cannot check {}: {} before {}",
                        self.reference,
                        unfinished.why,
                        what.unwrap_or_default()
                    );
                    (reason, lookups_count, lookups_count && unfinished.outage)
                }
                Verdict::Refused(refusal) => {
                    let on =
                        |gone| lookups_count && rests_on(&self.reference, &only, ctx, facts, gone);
                    (refusal.reason, on(Gone::Failed), on(Gone::Unavailable))
                }
            };
            let mode = match requirement {
                Requirement::BuiltOn => modes.built_on,
                Requirement::SourceFrom => modes.source_from,
                Requirement::RequireDigest => FailureMode::Fail,
            };
            if outage && mode == FailureMode::Allow {
                // Short (the API server may cut warnings at 256 characters): what failed first.
                let why = first_outage(facts).unwrap_or(&reason);
                softened.push(format!(
                    "{requirement} not checked (failureMode allow): {why}"
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
