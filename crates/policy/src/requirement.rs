//! Whether an image meets a grant's [`Requirements`] (DESIGN §12), decided from registry answers
//! without doing any I/O.
//!
//! [`check`] walks from the reference to what it needs (the digest a tag points to, the
//! manifest, the index's images for the nodes' platforms, their configs, and the same for every
//! candidate base image) and answers [`Verdict::NeedsLookup`] with everything still missing; the
//! registry client fetches it into [`Facts`] and asks again. A lookup that failed is kept in the
//! facts as [`Answer::Failed`] and refuses what depends on it. Only facts ever satisfy a
//! requirement:
//!
//! - **builtOn** holds for an image when its manifest's layer digests begin with the layer
//!   digests of a candidate base image and its config's `rootfs.diff_ids` begin with the
//!   base's diff_ids (compared in order, so repeated layers count), the image's two lists being
//!   equally long, and the base having at least one layer (an empty base proves nothing). The
//!   candidates of an entry are the entry itself (`repository` meaning `:latest`) and the
//!   [`ListedBase`]s of that repository (of that tag, with a tag; of that digest, with a
//!   digest). An image equal to its base meets it. Labels and annotations are not read.
//! - **requireDigest** holds when the reference has a digest; a tag is refused with the digest
//!   it points to now.
//! - **sourceFrom** holds when the config label `org.opencontainers.image.source` equals an
//!   allowed prefix (templates expanded for the namespace) or continues it with `/` and further
//!   path segments of URL-safe characters, none `.` or `..`.
//!
//! An image that is not in an index is checked whatever platform it is for. For an index,
//! every image a node could run is checked: the entries whose platform has the
//! OS and architecture of one of the nodes' platforms (any variant, as the runtime's pick
//! depends on the CPU), and entries without a platform. A node platform without an entry, and
//! an entry that is itself an index, are refused.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::fmt;

use byoc_api::requirements::{self, BasePattern, Pin, Requirements};
use jiff::Timestamp;

use crate::oci::{Digest, ImageConfig, Manifest, Platform, SOURCE_LABEL};
use crate::reference::ImageRef;

pub mod base;
pub mod pending;

/// The platform the nodes run when none is configured.
pub const DEFAULT_PLATFORM: &str = "linux/amd64";

/// A base image the platform lists: `repository:tag` is the image the tag points to now (current),
/// `repository[:tag]@digest` an older image it still accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedBase {
    /// The image.
    pub image: ImageRef,
    /// When the platform deprecated it (or will), if it has.
    pub deprecated: Option<Timestamp>,
}

/// What the decision is made in.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The namespace of the pod, for `{namespace}` and `{tool}`.
    pub namespace: &'a str,
    /// The prefix `{tool}` strips from the namespace (`tool-` by default).
    pub tool_prefix: &'a str,
    /// The platforms the nodes run; every image of an index for one of them is checked.
    pub platforms: &'a [Platform],
    /// The base images the platform lists.
    pub bases: &'a [ListedBase],
    /// Now, for deprecation dates.
    pub now: Timestamp,
}

/// Something [`check`] needs from the registry. Repositories are `host[:port]/path`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lookup {
    /// The digest a tag points to now.
    Tag {
        /// The repository.
        repository: String,
        /// The tag.
        tag: String,
    },
    /// A manifest or index, by digest.
    Manifest {
        /// The repository to fetch it from.
        repository: String,
        /// Its digest.
        digest: Digest,
    },
    /// An image config blob, by digest.
    Config {
        /// The repository to fetch it from.
        repository: String,
        /// Its digest.
        digest: Digest,
    },
}

impl fmt::Display for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag { repository, tag } => write!(f, "the digest of {repository}:{tag}"),
            Self::Manifest { repository, digest } => {
                write!(f, "the manifest {repository}@{digest}")
            }
            Self::Config { repository, digest } => write!(f, "the config {repository}@{digest}"),
        }
    }
}

/// A registry's answer to one [`Lookup`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer<T> {
    /// The answer, digest-checked and read.
    Found(T),
    /// The registry answered, and the answer cannot be used: a client error status (404), a
    /// digest mismatch, an answer over the caps or one that does not read; the text says which
    /// and names the registry. Whoever pushes the image controls this: never softened.
    Failed(String),
    /// The registry could not be asked: unreachable, timed out, or a server error status; the
    /// text says which and names the registry. An outage: `failureMode: allow` softens it.
    Unavailable(String),
}

impl<T> Answer<T> {
    /// Why the lookup did not give an answer, if it did not.
    pub fn failure(&self) -> Option<&str> {
        match self {
            Self::Found(_) => None,
            Self::Failed(why) | Self::Unavailable(why) => Some(why),
        }
    }
}

/// The registry answers known so far. Manifests and configs are keyed by digest: content
/// checked against its digest is the same in every repository.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Tag → digest, keyed by (repository, tag).
    pub tags: HashMap<(String, String), Answer<Digest>>,
    /// Manifests and indexes.
    pub manifests: HashMap<Digest, Answer<Manifest>>,
    /// Image configs.
    pub configs: HashMap<Digest, Answer<ImageConfig>>,
}

/// Which requirement a refusal is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `builtOn`.
    BuiltOn,
    /// `requireDigest`.
    RequireDigest,
    /// `sourceFrom`.
    SourceFrom,
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BuiltOn => "builtOn",
            Self::RequireDigest => "requireDigest",
            Self::SourceFrom => "sourceFrom",
        })
    }
}

/// Why an image does not meet the requirements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The requirement that does not hold.
    pub requirement: Requirement,
    /// Why, in a sentence that names what it checked.
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "requirement {}: {}", self.requirement, self.reason)
    }
}

/// Whether a base image is still the one to build on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseState {
    /// The image its tag points to now, not deprecated.
    Current,
    /// An older image the platform still lists; rebuild on the current one.
    Older {
        /// The current base to rebuild on, when one is known.
        rebuild_on: Option<String>,
    },
    /// Deprecated by the platform since this time.
    Deprecated {
        /// Since when.
        since: Timestamp,
        /// The current base to rebuild on, when one is known.
        rebuild_on: Option<String>,
    },
}

/// The base one image of the reference is built on, for the reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltOn {
    /// The platform of the image (`None` for an image that is not in an index and whose config
    /// names no platform).
    pub platform: Option<Platform>,
    /// The base, `repository[:tag]@digest`.
    pub base: String,
    /// Whether it is current.
    pub state: BaseState,
}

impl BuiltOn {
    /// The report line: `built on X`, with `rebuild on Y` when X is not current.
    pub fn summary(&self) -> String {
        let rebuild = |on: &Option<String>| match on {
            Some(on) => format!("rebuild on {on}"),
            None => "rebuild on a current base image".to_owned(),
        };
        match &self.state {
            BaseState::Current => format!("built on {}", self.base),
            BaseState::Older { rebuild_on } => format!(
                "built on {}, an older base image: {}",
                self.base,
                rebuild(rebuild_on)
            ),
            BaseState::Deprecated { since, rebuild_on } => format!(
                "built on {}, deprecated since {}: {}",
                self.base,
                since.strftime("%Y-%m-%d"),
                rebuild(rebuild_on)
            ),
        }
    }
}

/// The decision for one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every requirement holds; with `builtOn`, the bases the images are built on.
    Satisfied(Vec<BuiltOn>),
    /// A requirement does not hold.
    Refused(Refusal),
    /// These answers are needed first.
    NeedsLookup(BTreeSet<Lookup>),
}

/// One step of the walk: done, waiting for lookups, or failed with a reason.
enum Step<T> {
    Ready(T),
    Need(BTreeSet<Lookup>),
    Fail(String),
}

/// `?` for [`Step`]: returns a `Need` or `Fail` from the enclosing function.
macro_rules! ready {
    ($step:expr) => {
        match $step {
            Step::Ready(value) => value,
            Step::Need(need) => return Step::Need(need),
            Step::Fail(why) => return Step::Fail(why),
        }
    };
}

/// One image (of one platform) as the requirements read it.
#[derive(Clone, Debug)]
struct PlatformImage {
    platform: Option<Platform>,
    digest: Digest,
    layers: Vec<Digest>,
    diff_ids: Vec<Digest>,
    source: Option<String>,
}

impl PlatformImage {
    /// `for linux/amd64 (sha256:...)`, naming the image in messages about an index.
    fn label(&self) -> String {
        match &self.platform {
            Some(p) => format!("its image for {p} ({})", self.digest),
            None => format!("its image ({})", self.digest),
        }
    }
}

/// `host[:port]/path` of a reference.
fn repository(image: &ImageRef) -> String {
    format!("{}/{}", image.registry(), image.path())
}

impl Facts {
    fn digest_of(&self, image: &ImageRef) -> Step<Digest> {
        if let Some(digest) = image.digest() {
            return match digest.parse() {
                Ok(d) => Step::Ready(d),
                Err(e) => Step::Fail(e.to_string()),
            };
        }
        let tag = image.tag().unwrap_or("latest").to_owned();
        let key = (repository(image), tag);
        match self.tags.get(&key) {
            Some(Answer::Found(d)) => Step::Ready(d.clone()),
            Some(Answer::Failed(why) | Answer::Unavailable(why)) => Step::Fail(format!(
                "the digest of {}:{} could not be looked up: {why}",
                key.0, key.1
            )),
            None => Step::Need(BTreeSet::from([Lookup::Tag {
                repository: key.0,
                tag: key.1,
            }])),
        }
    }

    fn manifest(&self, repository: &str, digest: &Digest) -> Step<&Manifest> {
        match self.manifests.get(digest) {
            Some(Answer::Found(m)) => Step::Ready(m),
            Some(Answer::Failed(why) | Answer::Unavailable(why)) => Step::Fail(format!(
                "the manifest {repository}@{digest} could not be read: {why}"
            )),
            None => Step::Need(BTreeSet::from([Lookup::Manifest {
                repository: repository.to_owned(),
                digest: digest.clone(),
            }])),
        }
    }

    fn config(&self, repository: &str, digest: &Digest) -> Step<&ImageConfig> {
        match self.configs.get(digest) {
            Some(Answer::Found(c)) => Step::Ready(c),
            Some(Answer::Failed(why) | Answer::Unavailable(why)) => Step::Fail(format!(
                "the config {repository}@{digest} could not be read: {why}"
            )),
            None => Step::Need(BTreeSet::from([Lookup::Config {
                repository: repository.to_owned(),
                digest: digest.clone(),
            }])),
        }
    }

    /// The images of `digest` a node on one of `platforms` could run.
    fn images(
        &self,
        repository: &str,
        digest: &Digest,
        platforms: &[Platform],
    ) -> Step<Vec<PlatformImage>> {
        let entries = match ready!(self.manifest(repository, digest)) {
            Manifest::Image(_) => {
                return match self.image(repository, digest, None) {
                    Step::Ready(image) => Step::Ready(vec![image]),
                    Step::Need(n) => Step::Need(n),
                    Step::Fail(f) => Step::Fail(f),
                };
            }
            Manifest::Index(entries) => entries,
        };
        let runnable = |p: &Option<Platform>| {
            p.as_ref()
                .is_none_or(|p| platforms.iter().any(|node| node.may_run(p)))
        };
        if let Some(missing) = platforms.iter().find(|node| {
            !entries
                .iter()
                .any(|e| e.platform.as_ref().is_none_or(|p| node.may_run(p)))
        }) {
            return Step::Fail(format!("the index {digest} has no image for {missing}"));
        }
        let mut images = Vec::new();
        let mut need = BTreeSet::new();
        for entry in entries.iter().filter(|e| runnable(&e.platform)) {
            let shown = entry
                .platform
                .as_ref()
                .map_or_else(|| "no platform".to_owned(), ToString::to_string);
            if entry.is_index() {
                return Step::Fail(format!(
                    "the index {digest} lists another index ({}, for {shown}); nested indexes are not read",
                    entry.manifest.digest
                ));
            }
            match self.image(repository, &entry.manifest.digest, entry.platform.clone()) {
                Step::Ready(image) => images.push(image),
                Step::Need(n) => need.extend(n),
                Step::Fail(why) => return Step::Fail(format!("for {shown}: {why}")),
            }
        }
        if need.is_empty() {
            Step::Ready(images)
        } else {
            Step::Need(need)
        }
    }

    /// One image manifest and its config.
    fn image(
        &self,
        repository: &str,
        digest: &Digest,
        platform: Option<Platform>,
    ) -> Step<PlatformImage> {
        let manifest = match ready!(self.manifest(repository, digest)) {
            Manifest::Image(m) => m,
            Manifest::Index(_) => {
                return Step::Fail(format!(
                    "{repository}@{digest} is an index where an image manifest was expected"
                ));
            }
        };
        let config = ready!(self.config(repository, &manifest.config.digest));
        Step::Ready(PlatformImage {
            platform: platform.or_else(|| config.platform.clone()),
            digest: digest.clone(),
            layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            diff_ids: config.diff_ids.clone(),
            source: config.labels.get(SOURCE_LABEL).cloned(),
        })
    }
}

/// Decides whether `image` meets `requirements`, from `facts`. Requirements that are empty
/// need no lookup.
pub fn check(
    image: &ImageRef,
    requirements: &Requirements,
    ctx: &Context,
    facts: &Facts,
) -> Verdict {
    if requirements.is_empty() {
        return Verdict::Satisfied(Vec::new());
    }
    let built_on = match requirements.validate() {
        Ok(patterns) => patterns,
        Err(e) => {
            let requirement = match e {
                requirements::InvalidRequirement::SourceFrom { .. } => Requirement::SourceFrom,
                _ => Requirement::BuiltOn,
            };
            return Verdict::Refused(Refusal {
                requirement,
                reason: format!("the grant's requirements are invalid: {e}"),
            });
        }
    };
    evaluate(image, requirements, &built_on, ctx, facts)
}

/// [`check`] on validated requirements, `built_on` being the parsed `builtOn`.
fn evaluate(
    image: &ImageRef,
    requirements: &Requirements,
    built_on: &[BasePattern],
    ctx: &Context,
    facts: &Facts,
) -> Verdict {
    let repo = repository(image);

    if requirements.require_digest && image.digest().is_none() {
        let shown = image.to_string();
        let tag = image.tag().unwrap_or("latest");
        let name = shown.strip_suffix(&format!(":{tag}")).unwrap_or(&shown);
        let reason = match facts.digest_of(image) {
            Step::Ready(digest) => format!(
                "{shown} is referenced by tag; write it with its digest, {name}@{digest} (the image the tag points to now)"
            ),
            Step::Fail(why) => {
                format!("{shown} is referenced by tag; write it as {name}@sha256:<digest> ({why})")
            }
            Step::Need(need) => return Verdict::NeedsLookup(need),
        };
        return Verdict::Refused(Refusal {
            requirement: Requirement::RequireDigest,
            reason,
        });
    }
    if built_on.is_empty() && requirements.source_from.is_empty() {
        return Verdict::Satisfied(Vec::new());
    }
    let first = if built_on.is_empty() {
        Requirement::SourceFrom
    } else {
        Requirement::BuiltOn
    };
    let fail = |requirement, reason| {
        Verdict::Refused(Refusal {
            requirement,
            reason,
        })
    };
    let candidates = candidates(built_on, ctx.bases);
    let bases = resolve(&candidates, ctx, facts);
    let waiting = |mut need: BTreeSet<Lookup>| {
        need.extend(bases.need.iter().cloned());
        Verdict::NeedsLookup(need)
    };
    let digest = match facts.digest_of(image) {
        Step::Ready(d) => d,
        Step::Need(need) => return waiting(need),
        Step::Fail(why) => return fail(first, format!("cannot check {image}: {why}")),
    };
    let images = match facts.images(&repo, &digest, ctx.platforms) {
        Step::Ready(images) => images,
        Step::Need(need) => return waiting(need),
        Step::Fail(why) => return fail(first, format!("cannot check {image}: {why}")),
    };

    let mut need = BTreeSet::new();
    let mut found = Vec::new();
    if !built_on.is_empty() {
        match check_built_on(&images, built_on, bases, ctx.now) {
            Step::Ready(bases) => found = bases,
            Step::Need(n) => need = n,
            Step::Fail(reason) => return fail(Requirement::BuiltOn, reason),
        }
    }
    if !requirements.source_from.is_empty()
        && let Err(reason) = check_source(&images, &requirements.source_from, ctx)
    {
        return fail(Requirement::SourceFrom, reason);
    }
    if need.is_empty() {
        Verdict::Satisfied(found)
    } else {
        Verdict::NeedsLookup(need)
    }
}

/// Which listed base `image` is built on, for the reports: [`check`] with `builtOn` naming the
/// repository of every listed base. `Satisfied` names the base and its state for each image of
/// the reference; `Refused` says it is built on none of them.
pub fn base_of(image: &ImageRef, ctx: &Context, facts: &Facts) -> Verdict {
    let mut repositories: Vec<BasePattern> = listed_repositories(ctx.bases).collect();
    repositories.sort();
    repositories.dedup();
    if repositories.is_empty() {
        return Verdict::Satisfied(Vec::new());
    }
    evaluate(image, &Requirements::default(), &repositories, ctx, facts)
}

/// The repositories of the listed bases, as `builtOn` entries of any image of them.
fn listed_repositories(bases: &[ListedBase]) -> impl Iterator<Item = BasePattern> + '_ {
    bases
        .iter()
        .filter_map(|b| repository(&b.image).parse().ok())
        .map(|repository| BasePattern {
            repository,
            pin: Pin::Repository,
        })
}

/// A candidate base image of a `builtOn` entry.
struct Candidate {
    image: ImageRef,
    deprecated: Option<Timestamp>,
}

/// A candidate resolved: its digest and the layer lists of its images.
struct Resolved<'c> {
    candidate: &'c Candidate,
    digest: Digest,
    chains: Vec<PlatformImage>,
}

fn same_repository(image: &ImageRef, pattern: &BasePattern) -> bool {
    image.host() == pattern.repository.host()
        && image.port() == pattern.repository.port()
        && Some(image.path()) == pattern.repository.path()
}

/// The candidates of the entries: each entry itself, and the listed bases it covers.
fn candidates(entries: &[BasePattern], listed: &[ListedBase]) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    for entry in entries {
        let own = entry
            .to_string()
            .parse::<ImageRef>()
            .ok()
            .map(|image| Candidate {
                image,
                deprecated: None,
            });
        let covered = listed
            .iter()
            .filter(|b| same_repository(&b.image, entry))
            .filter(|b| match &entry.pin {
                Pin::Repository => true,
                Pin::Tag(tag) => b.image.tag() == Some(tag),
                Pin::Digest(digest) => b.image.digest() == Some(digest),
            })
            .map(|b| Candidate {
                image: b.image.clone(),
                deprecated: b.deprecated,
            });
        for candidate in own.into_iter().chain(covered) {
            match out.iter_mut().find(|c| c.image == candidate.image) {
                Some(existing) => {
                    existing.deprecated = existing.deprecated.or(candidate.deprecated)
                }
                None => out.push(candidate),
            }
        }
    }
    out
}

/// The candidate bases as far as the facts go: those resolved, the lookups the others need,
/// and notes on those that failed or prove nothing.
struct Bases<'c> {
    resolved: Vec<Resolved<'c>>,
    need: BTreeSet<Lookup>,
    notes: Vec<String>,
}

/// Resolves the candidates; done alongside the image, so a cold check takes as few rounds of
/// lookups as the deeper of the two walks.
fn resolve<'c>(candidates: &'c [Candidate], ctx: &Context, facts: &Facts) -> Bases<'c> {
    let mut resolved = Vec::new();
    let mut need = BTreeSet::new();
    let mut notes = Vec::new();
    for candidate in candidates {
        let step = match facts.digest_of(&candidate.image) {
            Step::Ready(digest) => {
                match facts.images(&repository(&candidate.image), &digest, ctx.platforms) {
                    Step::Ready(chains) => Step::Ready((digest, chains)),
                    Step::Need(n) => Step::Need(n),
                    Step::Fail(f) => Step::Fail(f),
                }
            }
            Step::Need(n) => Step::Need(n),
            Step::Fail(f) => Step::Fail(f),
        };
        match step {
            Step::Ready((digest, chains)) => resolved.push(Resolved {
                candidate,
                digest,
                chains,
            }),
            Step::Need(n) => need.extend(n),
            Step::Fail(why) => notes.push(format!(
                "base {} could not be checked: {why}",
                candidate.image
            )),
        }
    }
    for r in &resolved {
        for chain in &r.chains {
            if chain.layers.is_empty() {
                notes.push(format!(
                    "base {}@{} has no layers and proves nothing",
                    r.candidate.image, r.digest
                ));
            } else if chain.layers.len() != chain.diff_ids.len() {
                notes.push(format!(
                    "base {}@{} lists {} layers but {} diff_ids and proves nothing",
                    r.candidate.image,
                    r.digest,
                    chain.layers.len(),
                    chain.diff_ids.len()
                ));
            }
        }
    }
    Bases {
        resolved,
        need,
        notes,
    }
}

fn check_built_on(
    images: &[PlatformImage],
    entries: &[BasePattern],
    bases: Bases,
    now: Timestamp,
) -> Step<Vec<BuiltOn>> {
    let Bases {
        resolved,
        need,
        mut notes,
    } = bases;
    let shown = entries
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut found = Vec::new();
    for image in images {
        if image.layers.len() != image.diff_ids.len() {
            return Step::Fail(format!(
                "not built on {shown}: {} lists {} layers in its manifest but {} diff_ids in its config",
                image.label(),
                image.layers.len(),
                image.diff_ids.len()
            ));
        }
        let matches = resolved.iter().filter(|r| {
            r.chains.iter().any(|base| {
                !base.layers.is_empty()
                    && base.layers.len() == base.diff_ids.len()
                    && image.layers.starts_with(&base.layers)
                    && image.diff_ids.starts_with(&base.diff_ids)
            })
        });
        let best = matches
            .map(|r| (state(r, &resolved, now), r))
            .min_by_key(|(state, r)| (rank(state), std::cmp::Reverse(longest(r))));
        match best {
            Some((state, r)) => found.push(BuiltOn {
                platform: image.platform.clone(),
                base: based(&r.candidate.image, &r.digest),
                state,
            }),
            // Unproven: wait for the candidates not yet looked up, else refuse.
            None if !need.is_empty() => {}
            None => {
                let mut reason = format!("not built on {shown}: {}", mismatch(image, &resolved));
                notes.dedup();
                for note in &notes {
                    reason.push_str("; ");
                    reason.push_str(note);
                }
                return Step::Fail(reason);
            }
        }
    }
    if found.len() == images.len() {
        Step::Ready(found)
    } else {
        Step::Need(need)
    }
}

/// The longest layer list of a resolved base.
fn longest(r: &Resolved) -> usize {
    r.chains.iter().map(|c| c.layers.len()).max().unwrap_or(0)
}

/// `repository[:tag]@digest`.
fn based(image: &ImageRef, digest: &Digest) -> String {
    let mut shown = repository(image);
    if let Some(tag) = image.tag() {
        shown.push(':');
        shown.push_str(tag);
    }
    format!("{shown}@{digest}")
}

fn rank(state: &BaseState) -> u8 {
    match state {
        BaseState::Current => 0,
        BaseState::Older { .. } => 1,
        BaseState::Deprecated { .. } => 2,
    }
}

/// Whether a resolved base is current: listed by tag (or the entry itself), or listed by a
/// digest that some tag of the same repository points to now; and not deprecated.
fn state(r: &Resolved, all: &[Resolved], now: Timestamp) -> BaseState {
    let repo = repository(&r.candidate.image);
    let current = |other: &Resolved| {
        other.candidate.image.digest().is_none()
            && other.candidate.deprecated.is_none_or(|d| d > now)
            && repository(&other.candidate.image) == repo
    };
    let rebuild_on = all
        .iter()
        .filter(|o| current(o))
        .max_by_key(|o| o.candidate.image.tag() == r.candidate.image.tag())
        .map(|o| o.candidate.image.to_string());
    if let Some(since) = r.candidate.deprecated.filter(|d| *d <= now) {
        return BaseState::Deprecated { since, rebuild_on };
    }
    if r.candidate.image.digest().is_none()
        || all.iter().any(|o| current(o) && o.digest == r.digest)
    {
        BaseState::Current
    } else {
        BaseState::Older { rebuild_on }
    }
}

/// Why an image's layers begin with no candidate's: where the closest one parts from them.
fn mismatch(image: &PlatformImage, resolved: &[Resolved]) -> String {
    let Some(first) = image.layers.first() else {
        return format!("{} has no layers", image.label());
    };
    let closest = resolved
        .iter()
        .flat_map(|r| r.chains.iter().map(move |c| (r, c)))
        .filter(|(_, c)| !c.layers.is_empty())
        .map(|(r, c)| {
            let shared = image
                .layers
                .iter()
                .zip(&c.layers)
                .take_while(|(a, b)| a == b)
                .count();
            (shared, r, c)
        })
        .max_by_key(|(shared, _, _)| *shared);
    match closest {
        None => format!(
            "{} cannot be compared: no listed base image could be read",
            image.label()
        ),
        Some((0, _, _)) => format!(
            "the first layer of {}, {first}, is not the first layer of any listed base image",
            image.label()
        ),
        Some((shared, r, c)) if shared < c.layers.len() => format!(
            "{} shares the first {shared} of the {} layers of {}, then has {} where the base has {}",
            image.label(),
            c.layers.len(),
            based(&r.candidate.image, &r.digest),
            image
                .layers
                .get(shared)
                .map_or_else(|| "no more layers".to_owned(), ToString::to_string),
            c.layers[shared]
        ),
        Some((_, r, _)) => format!(
            "the layers of {} begin with those of {}, but its config's diff_ids do not begin with the base's",
            image.label(),
            based(&r.candidate.image, &r.digest)
        ),
    }
}

fn check_source(
    images: &[PlatformImage],
    prefixes: &[String],
    ctx: &Context,
) -> Result<(), String> {
    let mut allowed = Vec::new();
    let mut errors = Vec::new();
    for prefix in prefixes {
        match requirements::expand(prefix, ctx.namespace, ctx.tool_prefix) {
            Ok(p) => allowed.push(p),
            Err(e) => errors.push(format!("{prefix}: {e}")),
        }
    }
    let shown = if allowed.is_empty() {
        format!(
            "no allowed source applies to namespace {} ({})",
            ctx.namespace,
            errors.join("; ")
        )
    } else {
        format!("allowed: {}", allowed.join(", "))
    };
    for image in images {
        let Some(source) = &image.source else {
            return Err(format!(
                "{} has no {SOURCE_LABEL} label ({shown})",
                image.label()
            ));
        };
        if !allowed.iter().any(|prefix| is_under(source, prefix)) {
            return Err(format!(
                "the {SOURCE_LABEL} label of {}, {source:?}, is not under an allowed source ({shown})",
                image.label()
            ));
        }
    }
    Ok(())
}

/// Whether `source` is `prefix` or continues it with `/` and path segments of URL-safe
/// characters that are neither `.` nor `..` (so `.../foo` never covers `.../foobar`, and no
/// `..`, query, fragment or escape leads elsewhere).
pub fn is_under(source: &str, prefix: &str) -> bool {
    let Some(rest) = source.strip_prefix(prefix.trim_end_matches('/')) else {
        return false;
    };
    rest.is_empty()
        || rest.strip_prefix('/').is_some_and(|path| {
            path.split('/').all(|segment| {
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"._~-".contains(&c))
            })
        })
}

#[cfg(test)]
mod tests;
