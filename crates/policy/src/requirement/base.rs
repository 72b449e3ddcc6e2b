//! Which base a running image is built on and whether that base is still current, for the
//! reports (DESIGN §11, §12; issue 22 part 4). Pure, like the rest of [`requirement`](super):
//! the caller gathers what [`find`] asks for.
//!
//! An image is checked against the `builtOn` bases that apply to it (the patterns passed) and
//! the repositories of the listed bases, with the same layer-prefix rule as admission. It is
//! **current** when its layer chain begins with that of the image a listed tag points to now,
//! not deprecated; **stale** when it begins with that of an older image of the base (listed by
//! digest, or [remembered](remembered) as an image the tag pointed to before it moved) or of a
//! base the platform deprecated with a date now past; and **unknown** when no base matches or a
//! lookup failed: never called current without proof.

use std::collections::BTreeSet;

use byoc_api::requirements::BasePattern;

use super::{
    BaseState, BuiltOn, Context, Facts, ListedBase, Lookup, Verdict, evaluate, listed_repositories,
    repository,
};
use crate::ImageRef;
use crate::oci::Digest;

/// What the reports say of an image's base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Built on a current base (for an index, every image the nodes could run).
    Current {
        /// The base, `repository[:tag]@digest`.
        base: String,
    },
    /// Built on a base that is no longer current.
    Stale {
        /// The base, `repository[:tag]@digest`.
        base: String,
        /// `older` or `deprecated`.
        state: &'static str,
        /// What to rebuild on: the current image of the base, when one is known.
        rebuild_on: String,
    },
    /// Which base it is built on cannot be told: why.
    Unknown(String),
}

/// The longest `baseError.N` kept: the reason names the registry and what it answered.
pub const MAX_BASE_ERROR: usize = 300;

impl Finding {
    /// As a report result's properties say it (`baseError` cut at [`MAX_BASE_ERROR`] bytes).
    pub fn property(&self) -> byoc_api::report::BaseProperty {
        let (base, state, rebuild_on, error) = match self {
            Self::Current { base } => (base.clone(), "current", None, None),
            Self::Stale {
                base,
                state,
                rebuild_on,
            } => (base.clone(), *state, Some(rebuild_on.clone()), None),
            Self::Unknown(why) => {
                let mut why = why.clone();
                if why.len() > MAX_BASE_ERROR {
                    let mut end = MAX_BASE_ERROR;
                    while !why.is_char_boundary(end) {
                        end -= 1;
                    }
                    why.truncate(end);
                    why.push('…');
                }
                ("unknown".to_owned(), "unknown", None, Some(why))
            }
        };
        byoc_api::report::BaseProperty {
            base,
            state: state.to_owned(),
            rebuild_on,
            error,
        }
    }
}

/// The answer of [`find`]: a finding, or the lookups still needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// No base applies: nothing to look up, nothing to report.
    NotChecked,
    /// The finding.
    Done(Finding),
    /// These answers are needed first.
    Needs(BTreeSet<Lookup>),
}

/// The message of a stale finding, in the style of the policy's messages.
pub fn rebuild_message(image: &str, base: &str, rebuild_on: &str) -> String {
    format!("{image}: built on {base}, which is no longer current: rebuild on {rebuild_on}")
}

/// Which base `image` is built on and whether it is current, from `facts`. The candidates are
/// `patterns` (the `builtOn` bases that apply to it) and, when there are any, the repositories
/// of `ctx.bases`; with no pattern the image needs no base check and nothing is asked.
pub fn find(image: &ImageRef, patterns: &[BasePattern], ctx: &Context, facts: &Facts) -> Found {
    if patterns.is_empty() {
        return Found::NotChecked;
    }
    let mut all: Vec<BasePattern> = patterns
        .iter()
        .cloned()
        .chain(listed_repositories(ctx.bases))
        .collect();
    all.sort();
    all.dedup();
    match evaluate(image, &Default::default(), &all, ctx, facts) {
        Verdict::NeedsLookup(need) => Found::Needs(need),
        Verdict::Refused(refusal) => Found::Done(Finding::Unknown(refusal.reason)),
        Verdict::Satisfied(bases) => Found::Done(finding(&bases)),
    }
}

/// The finding of the bases an image's platforms are built on: the first that is not current,
/// else current.
fn finding(bases: &[BuiltOn]) -> Finding {
    let rebuild = |on: &Option<String>| {
        on.clone()
            .unwrap_or_else(|| "a current base image".to_owned())
    };
    let stale = bases.iter().find_map(|b| match &b.state {
        BaseState::Current => None,
        BaseState::Older { rebuild_on } => Some(Finding::Stale {
            base: b.base.clone(),
            state: "older",
            rebuild_on: rebuild(rebuild_on),
        }),
        BaseState::Deprecated { rebuild_on, .. } => Some(Finding::Stale {
            base: b.base.clone(),
            state: "deprecated",
            rebuild_on: rebuild(rebuild_on),
        }),
    });
    match (stale, bases.first()) {
        (Some(stale), _) => stale,
        (None, Some(first)) => Finding::Current {
            base: first.base.clone(),
        },
        (None, None) => Finding::Unknown("no image of it was checked".to_owned()),
    }
}

/// The listed bases plus the images their tags pointed to before (`seen`: for a listed tag
/// `repository:tag`, digests it was seen to point to), each as an older image of that tag with
/// the tag's deprecation: an image built on a base whose tag has since moved is then found
/// stale rather than unknown.
pub fn remembered(listed: &[ListedBase], seen: &[(String, String, Digest)]) -> Vec<ListedBase> {
    let mut out = listed.to_vec();
    for (repository, tag, digest) in seen {
        let Ok(image) = format!("{repository}:{tag}@{digest}").parse::<ImageRef>() else {
            continue;
        };
        if out.iter().any(|b| b.image == image) {
            continue;
        }
        let deprecated = listed
            .iter()
            .find(|b| {
                b.image.digest().is_none()
                    && repository == &super::repository(&b.image)
                    && b.image.tag().unwrap_or("latest") == tag
            })
            .and_then(|b| b.deprecated);
        out.push(ListedBase { image, deprecated });
    }
    out
}

/// The digests the base tags of `patterns` and `listed` point to according to `facts`, as
/// (repository, tag, digest), for [`remembered`] to keep after the tags move.
pub fn tags_seen(
    patterns: &[BasePattern],
    listed: &[ListedBase],
    facts: &Facts,
) -> Vec<(String, String, Digest)> {
    let repositories: BTreeSet<String> = patterns
        .iter()
        .map(|p| p.repository.to_string())
        .chain(listed.iter().map(|b| repository(&b.image)))
        .collect();
    let mut seen: Vec<(String, String, Digest)> = facts
        .tags
        .iter()
        .filter(|((repo, _), _)| repositories.contains(repo))
        .filter_map(|((repo, tag), answer)| match answer {
            super::Answer::Found(digest) => Some((repo.clone(), tag.clone(), digest.clone())),
            _ => None,
        })
        .collect();
    seen.sort();
    seen
}

/// The `builtOn` bases of what applies to an image allowed by name (an image no `builtOn`
/// applies to gets none, and so no base check): of every alternative, sorted, without repeats;
/// invalid requirements contribute nothing.
pub fn patterns_of(applies: &crate::decision::Applies) -> Vec<BasePattern> {
    let crate::decision::Applies::AnyOf(alternatives) = applies else {
        return Vec::new();
    };
    let mut patterns: Vec<BasePattern> = alternatives
        .iter()
        .filter_map(|a| a.requirements.validate().ok())
        .flatten()
        .collect();
    patterns.sort();
    patterns.dedup();
    patterns
}

/// An image as written and the `builtOn` bases that apply to it: what one base check is for.
pub type Key = (String, Vec<BasePattern>);

/// The allowed images of `verdicts` (of `namespace`, with its `allowance` and the requirements
/// annotation `annotation` as the controller wrote it) that a `builtOn` requirement applies
/// to, with those bases: the platform's for images of the default registries, the grants' as
/// the annotation says. The images no base applies to are never looked up.
pub fn keys(
    config: &crate::Config,
    namespace: &str,
    allowance: &crate::Allowance,
    annotation: Option<&str>,
    verdicts: &[crate::inventory::Verdict],
    now: jiff::Timestamp,
) -> BTreeSet<Key> {
    let annotation: Option<crate::decision::NamespaceAnnotation> = annotation.map(|text| {
        byoc_api::requirements::NamespaceRequirements::read(text).map_err(|e| e.to_string())
    });
    let checker = crate::decision::Checker::new(config, allowance, namespace, now)
        .requiring(annotation.as_ref());
    verdicts
        .iter()
        .flat_map(|v| &v.images)
        .filter(|u| u.allowed_by.is_some())
        .filter_map(|u| {
            let image = u.image.parse::<ImageRef>().ok()?;
            let patterns = patterns_of(&checker.applies(&image));
            (!patterns.is_empty()).then(|| (u.image.clone(), patterns))
        })
        .collect()
}
