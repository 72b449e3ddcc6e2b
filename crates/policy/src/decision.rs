//! Checking container images against what a namespace may use (DESIGN §4).

use std::fmt;

use byoc_api::RegistryPattern;
use byoc_api::duration;
use byoc_api::labels::{Allowance, Expiry};
use byoc_api::requirements::{Effective, NamespaceRequirements};
use jiff::Timestamp;

use crate::config::Config;
use crate::reference::{ImageRef, ReferenceError};
use crate::requirement::Requirement;
use crate::requirement::pending::{Alternative, Origin, Pending, Settled};
use crate::workload::{Container, ContainerKind};

/// Why one container is refused.
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// The image reference does not parse.
    InvalidReference(ReferenceError),
    /// The image comes from a registry the namespace may not use.
    NotAllowed {
        /// The registry the reference resolves to, `host[:port]`.
        registry: String,
        /// The fully normalized reference.
        resolved: String,
    },
    /// The image is allowed by name, but requirements apply and none of their alternatives
    /// holds (or could be checked).
    RequirementNotMet {
        /// Where the requirement comes from (`the grant for quay.io`).
        origin: String,
        /// Which requirement; `None` when the namespace's requirements cannot be read.
        requirement: Option<Requirement>,
        /// Why.
        reason: String,
        /// Whether it could not be checked (a registry lookup failed).
        lookup_failed: bool,
    },
}

/// A namespace's requirements annotation as the webhook cached it: read, or why not.
pub type NamespaceAnnotation = Result<NamespaceRequirements, String>;

/// One refused container, with everything its denial line names.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    /// The object, like `Deployment tool-a/web`.
    pub subject: String,
    /// Which list the container is in.
    pub kind: ContainerKind,
    /// The container's name.
    pub container: String,
    /// The image as written.
    pub image: String,
    /// What is wrong.
    pub problem: Problem,
    /// The namespace the object is in.
    pub namespace: String,
    /// What the namespace may use, for the message.
    pub allowed_here: String,
    /// How to ask for a grant, for the message.
    pub how_to_ask: String,
}

impl fmt::Display for Violation {
    /// The one-line denial message of DESIGN §4.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            subject,
            kind,
            container,
            image,
            ..
        } = self;
        match &self.problem {
            Problem::InvalidReference(e) => write!(
                f,
                "{subject}: {kind} {container:?} image {image:?} is not a valid image reference: {}",
                e.kind()
            ),
            Problem::NotAllowed { registry, resolved } => write!(
                f,
                "{subject}: {kind} {container:?} image {image:?} resolves to registry {registry} \
                 ({resolved}), which namespace {} may not use; allowed here: {}; {}",
                self.namespace, self.allowed_here, self.how_to_ask
            ),
            Problem::RequirementNotMet {
                origin,
                requirement: Some(requirement),
                reason,
                lookup_failed: true,
            } => write!(
                f,
                "{subject}: {kind} {container:?} image {image:?} could not be checked against \
                 requirement {requirement} of {origin}: {reason}"
            ),
            Problem::RequirementNotMet {
                origin,
                requirement: Some(requirement),
                reason,
                ..
            } => write!(
                f,
                "{subject}: {kind} {container:?} image {image:?} does not meet requirement \
                 {requirement} of {origin}: {reason}"
            ),
            Problem::RequirementNotMet { reason, .. } => write!(
                f,
                "{subject}: {kind} {container:?} image {image:?} is allowed only with \
                 requirements, and {reason}"
            ),
        }
    }
}

impl Violation {
    /// The refusal of a pending container whose requirements [`Pending::settle`] refused.
    pub fn unmet(pending: &Pending, namespace: &str, settled: &Settled) -> Option<Self> {
        let Settled::Refused { unmet, others } = settled else {
            return None;
        };
        let mut reason = unmet.reason.clone();
        if *others > 0 {
            reason.push_str(&format!(
                " (and {others} other grant requirement(s) for it do not hold either)"
            ));
        }
        Some(Self {
            subject: pending.subject.clone(),
            kind: pending.kind,
            container: pending.container.clone(),
            image: pending.image.clone(),
            problem: Problem::RequirementNotMet {
                origin: unmet.origin.to_string(),
                requirement: Some(unmet.requirement),
                reason,
                lookup_failed: unmet.lookup_failed,
            },
            namespace: namespace.to_owned(),
            allowed_here: String::new(),
            how_to_ask: String::new(),
        })
    }

    /// A shorter form for AdmissionResponse warnings, which the API server may cut at 256
    /// characters.
    pub fn warning(&self) -> String {
        let Self {
            kind,
            container,
            image,
            ..
        } = self;
        match &self.problem {
            Problem::InvalidReference(_) => {
                format!("{kind} {container:?}: image {image:?} is not a valid image reference")
            }
            Problem::NotAllowed { registry, .. } => format!(
                "{kind} {container:?}: registry {registry} of image {image:?} is not allowed in \
                 namespace {}; the policy is not enforced yet",
                self.namespace
            ),
            Problem::RequirementNotMet {
                requirement,
                reason,
                ..
            } => {
                let what = requirement.map_or_else(|| "requirements".to_owned(), |r| r.to_string());
                format!(
                    "{kind} {container:?}: image {image:?} does not meet {what}; the policy is \
                     not enforced yet: {reason}"
                )
            }
        }
    }
}

/// An admitted container whose image is allowed only by a grant that ends within the
/// configured `expiryWarning` window: no default registry and no longer-lasting grant covers it.
#[derive(Clone, Debug, PartialEq)]
pub struct Reminder {
    /// The object, like `Deployment tool-a/web`.
    pub subject: String,
    /// Which list the container is in.
    pub kind: ContainerKind,
    /// The container's name.
    pub container: String,
    /// The image as written.
    pub image: String,
    /// The registry entry of the allowance that admits it; `None` for "any registry".
    pub entry: Option<RegistryPattern>,
    /// When that allowance ends.
    pub expires_at: Timestamp,
    /// Whole days left until then (rounded down).
    pub days_left: i64,
    /// How to ask for a new grant, for the message.
    pub how_to_ask: String,
}

impl fmt::Display for Reminder {
    /// The reminder as webhook warnings and `kubectl byoc check` show it; the part the API
    /// server keeps of a long warning (256 characters) names the image, the grant and the time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            subject,
            kind,
            container,
            image,
            expires_at,
            ..
        } = self;
        let what = match &self.entry {
            Some(entry) => entry.to_string(),
            None => "any registry".to_owned(),
        };
        let days = duration::days_left_note(self.days_left);
        write!(
            f,
            "{subject}: {kind} {container:?} image {image:?} is allowed only by a BYOC grant for \
             {what} that expires at {expires_at} ({days}); to keep using it, {}",
            self.how_to_ask
        )
    }
}

/// How many refused containers, or reminders, of one object are kept in full; the rest are
/// only counted. It bounds what an object with 100,000 refused containers (a review sent
/// straight to the webhook port) costs to decide, answer and log; what is not kept is still
/// counted, so messages and reports say how many more.
pub const LISTED: usize = 128;

/// Items of one object, the first [`LISTED`] kept and the rest counted.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed<T> {
    /// The first [`LISTED`] items, in container order.
    pub items: Vec<T>,
    /// How many more there were.
    pub unlisted: usize,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            unlisted: 0,
        }
    }
}

/// The kept items.
impl<T> std::ops::Deref for Listed<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.items
    }
}

impl<T> Listed<T> {
    /// How many there were, kept or not.
    pub fn total(&self) -> usize {
        self.items.len() + self.unlisted
    }

    /// Keeps or counts each of `items`.
    pub fn extend(&mut self, items: impl IntoIterator<Item = T>) {
        for item in items {
            if self.has_room() {
                self.items.push(item);
            }
        }
    }

    /// Whether one more would be kept; when not, it is counted.
    fn has_room(&mut self) -> bool {
        let room = self.items.len() < LISTED;
        if !room {
            self.unlisted += 1;
        }
        room
    }

    /// The line that counts the ones not kept, if any: `…and N more <what>`.
    pub fn more(&self, what: &str) -> Option<String> {
        (self.unlisted > 0).then(|| format!("…and {} more {what}", self.unlisted))
    }
}

/// What requirements apply to an image allowed by name.
#[derive(Clone, Debug, PartialEq)]
pub enum Applies {
    /// None: it is admitted by name.
    Nothing,
    /// It is admitted when one of these holds.
    AnyOf(Vec<Alternative>),
    /// Every allowance that admits it has requirements, and none can be used: why.
    Unusable(String),
}

/// What [`Checker::review`] finds among containers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reviewed {
    /// The refused containers, the first [`LISTED`] in full.
    pub violations: Listed<Violation>,
    /// The containers allowed by name that have requirements to check against the registry.
    pub pending: Vec<Pending>,
}

/// Checks containers of one namespace at one instant.
pub struct Checker<'a> {
    config: &'a Config,
    allowance: &'a Allowance,
    requirements: Option<&'a NamespaceAnnotation>,
    namespace: &'a str,
    now: Timestamp,
}

impl<'a> Checker<'a> {
    /// A checker for `namespace`, whose grants are `allowance`.
    pub fn new(
        config: &'a Config,
        allowance: &'a Allowance,
        namespace: &'a str,
        now: Timestamp,
    ) -> Self {
        Self {
            config,
            allowance,
            requirements: None,
            namespace,
            now,
        }
    }

    /// The same checker, reading the grants' requirements from the namespace's annotation
    /// (`None`: the namespace has none, so its grants require nothing).
    #[must_use]
    pub fn requiring(mut self, requirements: Option<&'a NamespaceAnnotation>) -> Self {
        self.requirements = requirements;
        self
    }

    /// What requirements apply to `image`, which is allowed by name. Without platform
    /// requirements and without a requirements annotation this is [`Applies::Nothing`] at
    /// once, allocating nothing.
    pub fn applies(&self, image: &ImageRef) -> Applies {
        let platform = self.config.platform_requirements.as_ref();
        if self.requirements.is_none() && platform.is_none() {
            return Applies::Nothing;
        }
        let mut alternatives = Vec::new();
        let mut unusable = None;
        if self
            .config
            .default_registry_for(image, self.namespace)
            .is_some()
        {
            match platform {
                Some(r) if !r.is_empty() => alternatives.push(Alternative {
                    origin: Origin::Platform,
                    requirements: r.clone(),
                }),
                _ => return Applies::Nothing,
            }
        }
        let any = self
            .allowance
            .allows_any_at(self.now)
            .then_some(None::<&byoc_api::RegistryPattern>);
        let entries = self
            .allowance
            .registries_at(self.now)
            .filter(|p| image.is_allowed_by(p))
            .map(Some);
        for entry in any.into_iter().chain(entries) {
            let key = entry.map_or_else(
                || NamespaceRequirements::ANY.to_owned(),
                ToString::to_string,
            );
            match self.requirements {
                None => return Applies::Nothing,
                Some(Err(why)) => {
                    unusable.get_or_insert_with(|| {
                        format!(
                            "the requirements of namespace {} cannot be read, so nothing is \
                             admitted through its grants until the byoc controller repairs \
                             them: {why}",
                            self.namespace
                        )
                    });
                }
                Some(Ok(annotation)) => match annotation.effective_at(entry, self.now) {
                    Effective::Unconditional => return Applies::Nothing,
                    Effective::AnyOf(list) => {
                        if list.is_empty() {
                            unusable.get_or_insert_with(|| {
                                format!("no active grant for {key} lists requirements it can meet")
                            });
                        }
                        alternatives.extend(list.into_iter().map(|r| Alternative {
                            origin: Origin::Grant(key.clone()),
                            requirements: r.clone(),
                        }));
                    }
                },
            }
        }
        if !alternatives.is_empty() {
            return Applies::AnyOf(alternatives);
        }
        Applies::Unusable(unusable.unwrap_or_else(|| "no allowance admits it".to_owned()))
    }

    /// Whether `image` may run here.
    fn allows(&self, image: &ImageRef) -> bool {
        self.allowance.allows_any_at(self.now)
            || self
                .config
                .default_registry_for(image, self.namespace)
                .is_some()
            || self
                .allowance
                .registries_at(self.now)
                .any(|p| image.is_allowed_by(p))
    }

    /// The problem with one image, if any.
    pub fn problem(&self, image: &str) -> Option<Problem> {
        match image.parse::<ImageRef>() {
            Err(e) => Some(Problem::InvalidReference(e)),
            Ok(r) if self.allows(&r) => None,
            Ok(r) => Some(Problem::NotAllowed {
                registry: r.registry(),
                resolved: r.to_string(),
            }),
        }
    }

    /// The violations among `containers` of `subject` (the first [`LISTED`] in full), by name only: requirements that need
    /// the registry are not checked ([`Checker::review`] lists them).
    pub fn check<'c>(
        &self,
        subject: &str,
        containers: impl IntoIterator<Item = &'c Container>,
    ) -> Listed<Violation> {
        self.review(subject, containers).violations
    }

    /// The violations among `containers` of `subject`, and the containers allowed by name
    /// that have requirements to check. Containers without an image (allowed in workload
    /// templates) have nothing to check.
    pub fn review<'c>(
        &self,
        subject: &str,
        containers: impl IntoIterator<Item = &'c Container>,
    ) -> Reviewed {
        let mut violations = Listed::default();
        let mut pending = Vec::new();
        for c in containers {
            let Some(image) = c.image.as_deref() else {
                continue;
            };
            let problem = match image.parse::<ImageRef>() {
                Err(e) => Some(Problem::InvalidReference(e)),
                Ok(r) if self.allows(&r) => match self.applies(&r) {
                    Applies::Nothing => None,
                    // Each pending container costs a check per lookup round: past LISTED of
                    // one object the rest are refused, never admitted unchecked.
                    Applies::AnyOf(_) if pending.len() >= LISTED => {
                        Some(Problem::RequirementNotMet {
                            origin: String::new(),
                            requirement: None,
                            reason: format!(
                                "more than {LISTED} containers of one object need registry \
                                 checks; split the object"
                            ),
                            lookup_failed: false,
                        })
                    }
                    Applies::AnyOf(alternatives) => {
                        pending.push(Pending {
                            subject: subject.to_owned(),
                            kind: c.kind,
                            container: c.name.clone(),
                            image: image.to_owned(),
                            reference: r,
                            alternatives,
                        });
                        None
                    }
                    Applies::Unusable(reason) => Some(Problem::RequirementNotMet {
                        origin: String::new(),
                        requirement: None,
                        reason,
                        lookup_failed: false,
                    }),
                },
                Ok(r) => Some(Problem::NotAllowed {
                    registry: r.registry(),
                    resolved: r.to_string(),
                }),
            };
            if let Some(problem) = problem
                && violations.has_room()
            {
                violations.items.push(Violation {
                    subject: subject.to_owned(),
                    kind: c.kind,
                    container: c.name.clone(),
                    image: image.to_owned(),
                    problem,
                    namespace: self.namespace.to_owned(),
                    allowed_here: String::new(),
                    how_to_ask: String::new(),
                });
            }
        }
        if !violations.is_empty() {
            let allowed_here = self.allowed_here();
            for v in &mut violations.items {
                v.allowed_here.clone_from(&allowed_here);
                let registry = match &v.problem {
                    Problem::NotAllowed { registry, .. } => Some(registry.as_str()),
                    Problem::InvalidReference(_) | Problem::RequirementNotMet { .. } => None,
                };
                v.how_to_ask = self.config.how_to_ask(self.namespace, registry);
            }
        }
        Reviewed {
            violations,
            pending,
        }
    }

    /// The reminders among `containers` of `subject`, the first [`LISTED`] in full: allowed
    /// images that only an allowance ending within the `expiryWarning` window admits. Images
    /// that are refused, or allowed by a default registry or by an allowance that lasts
    /// longer, get none.
    pub fn reminders<'c>(
        &self,
        subject: &str,
        containers: impl IntoIterator<Item = &'c Container>,
    ) -> Listed<Reminder> {
        let window = self.config.expiry_warning;
        let soon = |e: Expiry| matches!(e, Expiry::At(t) if t.duration_since(self.now) <= window);
        let mut reminders = Listed::default();
        // Most namespaces have no grant ending soon: nothing to parse then.
        if !self.allowance.parts_at(self.now).any(|(_, e)| soon(e)) {
            return reminders;
        }
        for c in containers {
            let Some(Ok(image)) = c.image.as_deref().map(str::parse::<ImageRef>) else {
                continue;
            };
            if self
                .config
                .default_registry_for(&image, self.namespace)
                .is_some()
            {
                continue;
            }
            // The longest-lasting part that covers the image; on a tie the specific entry,
            // which `parts_at` lists after "any".
            let Some((entry, Expiry::At(expires_at))) = self
                .allowance
                .parts_at(self.now)
                .filter(|(p, _)| p.is_none_or(|p| image.is_allowed_by(p)))
                .max_by_key(|(_, e)| *e)
                .filter(|(_, e)| soon(*e))
            else {
                continue;
            };
            if !reminders.has_room() {
                continue;
            }
            let registry = entry.map_or_else(|| image.registry(), ToString::to_string);
            reminders.items.push(Reminder {
                subject: subject.to_owned(),
                kind: c.kind,
                container: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                entry: entry.cloned(),
                expires_at,
                days_left: duration::days_left(expires_at, self.now),
                how_to_ask: self.config.ask_for_grant(self.namespace, Some(&registry)),
            });
        }
        reminders
    }

    /// The registries this namespace may use, for messages.
    fn allowed_here(&self) -> String {
        let mut all: Vec<String> = self
            .config
            .default_registries_in(self.namespace)
            .map(|p| p.to_string())
            .chain(
                self.allowance
                    .registries_at(self.now)
                    .map(ToString::to_string),
            )
            .collect();
        all.sort();
        all.dedup();
        if all.is_empty() {
            "no registry".to_owned()
        } else {
            all.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use byoc_api::ByocGrantSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn now() -> Timestamp {
        "2026-11-21T12:00:00Z".parse().unwrap()
    }

    fn allowance(grants: &[(&[&str], Option<&str>)]) -> Allowance {
        let mut a = Allowance::default();
        for (registries, expires) in grants {
            a.merge(
                Allowance::for_grant(&ByocGrantSpec {
                    namespace: "tool-a".into(),
                    reason: "t".into(),
                    registries: registries.iter().map(|s| s.to_string()).collect(),
                    any_registry: registries.is_empty(),
                    namespace_uid: None,
                    expires_at: expires.map(|e| Time(e.parse().unwrap())),
                    requirements: None,
                })
                .unwrap(),
            );
        }
        a
    }

    #[test]
    fn decisions() {
        let config = Config::default();
        let none = allowance(&[]);
        let quay = allowance(&[(&["quay.io", "ghcr.io/wikimedia"], None)]);
        let any = allowance(&[(&[], None)]);
        let expired_any = allowance(&[(&[], Some("2026-11-21T11:59:59Z"))]);
        let future_quay = allowance(&[(&["quay.io"], Some("2026-11-21T12:00:01Z"))]);
        let cases: &[(&Allowance, &str, bool)] = &[
            (
                &none,
                "docker-registry.tools.wmflabs.org/toolforge-python311:latest",
                true,
            ),
            (&none, "DOCKER-REGISTRY.tools.wmflabs.org/x", true),
            (&none, "docker-registry.tools.wmflabs.org:443/x", false),
            (&none, "docker-registry.tools.wmflabs.org.evil.com/x", false),
            (&none, "evil.com/docker-registry.tools.wmflabs.org/x", false),
            (&none, "nginx", false),
            (&none, "quay.io/x", false),
            (&quay, "quay.io/prometheus/node-exporter", true),
            (&quay, "ghcr.io/wikimedia/x:1", true),
            (&quay, "ghcr.io/wikimediaevil/x", false),
            (&quay, "ghcr.io/other/x", false),
            (&quay, "nginx", false),
            (&any, "nginx", true),
            (
                &any,
                "anything.example.org:5000/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                true,
            ),
            (&any, "Not A Reference", false),
            // An image ID is refused even where any registry is allowed.
            (
                &any,
                "sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa",
                false,
            ),
            (&any, "sha256:7cc4b5ae", false),
            (&expired_any, "nginx", false),
            (&future_quay, "quay.io/x", true),
        ];
        for (allowance, image, ok) in cases {
            let checker = Checker::new(&config, allowance, "tool-a", now());
            assert_eq!(checker.problem(image).is_none(), *ok, "{image}");
        }
    }

    /// A templated default registry: each tool its own project, in decisions, in the
    /// "allowed here" of denials and against reminders.
    #[test]
    fn templated_default_registries_allow_each_namespace_its_own() {
        let config = Config::from_yaml(
            "defaultRegistries: [docker-registry.svc.toolforge.org, \"tools-harbor.wmcloud.org/{namespace}\"]\n",
        )
        .unwrap();
        let none = Allowance::default();
        // (namespace, image, admitted)
        let cases = [
            ("tool-a", "tools-harbor.wmcloud.org/tool-a/x:1", true),
            ("tool-a", "tools-harbor.wmcloud.org/tool-b/x:1", false),
            ("tool-a", "tools-harbor.wmcloud.org/tool-ab/x:1", false),
            ("tool-ab", "tools-harbor.wmcloud.org/tool-a/x:1", false),
            ("tool-b", "tools-harbor.wmcloud.org/tool-b/x:1", true),
            ("tool-a", "tools-harbor.wmcloud.org/x:1", false),
            ("tool-a", "docker-registry.svc.toolforge.org/x:1", true),
        ];
        for (namespace, image, ok) in cases {
            let checker = Checker::new(&config, &none, namespace, now());
            assert_eq!(checker.problem(image).is_none(), ok, "{namespace}: {image}");
        }
        let checker = Checker::new(&config, &none, "tool-a", now());
        let [v] = &checker.check(
            "Pod tool-a/p",
            &containers(&["tools-harbor.wmcloud.org/tool-b/x:1"]),
        )[..] else {
            panic!("one violation")
        };
        assert!(
            v.to_string().contains(
                "allowed here: docker-registry.svc.toolforge.org, tools-harbor.wmcloud.org/tool-a;"
            ),
            "{v}"
        );
        // The tool's own project needs no grant, so a grant ending soon gets no reminder for it.
        let soon = allowance(&[(&["tools-harbor.wmcloud.org"], Some("2026-11-22T12:00:00Z"))]);
        let checker = Checker::new(&config, &soon, "tool-a", now());
        let images = containers(&[
            "tools-harbor.wmcloud.org/tool-a/x:1",
            "tools-harbor.wmcloud.org/tool-b/x:1",
        ]);
        let reminders = checker.reminders("Pod tool-a/p", &images);
        assert_eq!(
            reminders
                .iter()
                .map(|r| r.image.as_str())
                .collect::<Vec<_>>(),
            ["tools-harbor.wmcloud.org/tool-b/x:1"]
        );
    }

    fn containers(images: &[&str]) -> Vec<Container> {
        images
            .iter()
            .enumerate()
            .map(|(i, image)| Container {
                kind: ContainerKind::Container,
                name: format!("c{i}"),
                image: Some((*image).to_owned()),
            })
            .collect()
    }

    #[test]
    fn reminders_only_for_images_that_a_grant_ending_soon_alone_admits() {
        type Grants<'a> = &'a [(&'a [&'a str], Option<&'a str>)];
        // (what, grants, window, image, expected (entry, expiry, days left))
        type Case<'a> = (
            &'a str,
            Grants<'a>,
            &'a str,
            &'a str,
            Option<(&'a str, &'a str, i64)>,
        );
        const IN_3D: &str = "2026-11-24T12:00:00Z";
        const IN_5D: &str = "2026-11-26T12:00:00Z";
        const IN_60D: &str = "2027-01-20T12:00:00Z";
        let cases: &[Case] = &[
            (
                "a grant ending in 3 days",
                &[(&["quay.io"], Some(IN_3D))],
                "",
                "quay.io/x:1",
                Some(("quay.io", IN_3D, 3)),
            ),
            (
                "a grant ending in 60 days",
                &[(&["quay.io"], Some(IN_60D))],
                "",
                "quay.io/x",
                None,
            ),
            (
                "a grant that never ends",
                &[(&["quay.io"], None)],
                "",
                "quay.io/x",
                None,
            ),
            (
                "overlapping grants: the later one still covers it",
                &[(&["quay.io"], Some(IN_3D)), (&["quay.io"], Some(IN_60D))],
                "",
                "quay.io/x",
                None,
            ),
            (
                "an unexpiring any-registry grant covers it too",
                &[(&["quay.io"], Some(IN_3D)), (&[], None)],
                "",
                "quay.io/x",
                None,
            ),
            (
                "any registry ending soon, the image's registry granted for good",
                &[(&[], Some(IN_3D)), (&["quay.io"], None)],
                "",
                "quay.io/x",
                None,
            ),
            (
                "any registry ending soon is all that admits ghcr.io",
                &[(&[], Some(IN_3D)), (&["quay.io"], None)],
                "",
                "ghcr.io/x",
                Some(("any", IN_3D, 3)),
            ),
            (
                "two grants ending soon: the later one is named",
                &[(&[], Some(IN_3D)), (&["quay.io"], Some(IN_5D))],
                "",
                "quay.io/x",
                Some(("quay.io", IN_5D, 5)),
            ),
            (
                "a path-prefix grant ending soon under a host-wide one that lasts",
                &[
                    (&["ghcr.io/wikimedia"], Some(IN_3D)),
                    (&["ghcr.io"], Some(IN_60D)),
                ],
                "",
                "ghcr.io/wikimedia/x",
                None,
            ),
            (
                "a host-wide grant ending soon, the lasting prefix does not cover the image",
                &[
                    (&["ghcr.io/wikimedia"], Some(IN_60D)),
                    (&["ghcr.io"], Some(IN_3D)),
                ],
                "",
                "ghcr.io/other/x",
                Some(("ghcr.io", IN_3D, 3)),
            ),
            (
                "exactly at the window's edge",
                &[(&["quay.io"], Some("2026-12-05T12:00:00Z"))],
                "",
                "quay.io/x",
                Some(("quay.io", "2026-12-05T12:00:00Z", 14)),
            ),
            (
                "one second beyond the window",
                &[(&["quay.io"], Some("2026-12-05T12:00:01Z"))],
                "",
                "quay.io/x",
                None,
            ),
            (
                "one second left",
                &[(&["quay.io"], Some("2026-11-21T12:00:01Z"))],
                "",
                "quay.io/x",
                Some(("quay.io", "2026-11-21T12:00:01Z", 0)),
            ),
            (
                "already expired: refused, no reminder",
                &[(&["quay.io"], Some("2026-11-21T12:00:00Z"))],
                "",
                "quay.io/x",
                None,
            ),
            (
                "a platform image",
                &[(&[], Some(IN_3D))],
                "",
                "docker-registry.tools.wmflabs.org/toolforge-python311",
                None,
            ),
            (
                "an image that does not parse",
                &[(&[], Some(IN_3D))],
                "",
                "Not An Image",
                None,
            ),
            (
                "a wider window",
                &[(&["quay.io"], Some(IN_60D))],
                "expiryWarning: 60d\n",
                "quay.io/x",
                Some(("quay.io", IN_60D, 60)),
            ),
            (
                "reminders turned off",
                &[(&["quay.io"], Some(IN_3D))],
                "expiryWarning: 0s\n",
                "quay.io/x",
                None,
            ),
        ];
        for (what, grants, config, image, want) in cases {
            let config = Config::from_yaml(config).unwrap();
            let allowance = allowance(grants);
            let checker = Checker::new(&config, &allowance, "tool-a", now());
            let got = checker.reminders("Pod tool-a/p", &containers(&[image]));
            let got: Option<(String, Timestamp, i64)> = match &*got {
                [] => None,
                [r] => Some((
                    r.entry
                        .as_ref()
                        .map_or_else(|| "any".to_owned(), ToString::to_string),
                    r.expires_at,
                    r.days_left,
                )),
                more => panic!("{what}: {more:?}"),
            };
            let want = want.map(|(e, t, d)| (e.to_owned(), t.parse().unwrap(), d));
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn reminder_lines() {
        let allowance = allowance(&[(&[], Some("2026-11-24T12:00:00Z"))]);
        let images = ["ghcr.io/x:1", "quay.io/y"];
        let config = Config::default();
        let checker = Checker::new(&config, &allowance, "tool-a", now());
        let r = checker.reminders("Deployment tool-a/web", &containers(&images));
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0].to_string(),
            "Deployment tool-a/web: container \"c0\" image \"ghcr.io/x:1\" is allowed only by a \
             BYOC grant for any registry that expires at 2026-11-24T12:00:00Z (3 days left); to \
             keep using it, ask for a grant: kubectl byoc request -n tool-a --registry ghcr.io \
             --reason '...'"
        );
        assert!(r[1].to_string().contains("--registry quay.io "), "{}", r[1]);
        let with_url = Config {
            grant_request_url: Some("https://example.org/byoc".into()),
            ..Config::default()
        };
        let checker = Checker::new(&with_url, &allowance, "tool-a", now());
        let r = checker.reminders("Pod tool-a/p", &containers(&images[..1]));
        assert!(
            r[0].to_string()
                .ends_with("to keep using it, ask for a BYOC grant at https://example.org/byoc"),
            "{}",
            r[0]
        );
        assert!(r[0].to_string().len() < 256, "{}", r[0]);
    }

    #[test]
    fn denials_name_the_request_command() {
        let config = Config::default();
        let none = allowance(&[]);
        let checker = Checker::new(&config, &none, "tool-a", now());
        let v = checker.check("Pod tool-a/p", &containers(&["quay.io/x", "UPPER/Case"]));
        assert!(
            v[0].to_string().ends_with(
                "allowed here: docker-registry.tools.wmflabs.org; to use it, ask for a grant: \
                 kubectl byoc request -n tool-a --registry quay.io --reason '...'"
            ),
            "{}",
            v[0]
        );
        // An invalid reference is refused whatever the grants: no "how to ask".
        assert!(
            !v[1].to_string().contains("kubectl byoc request"),
            "{}",
            v[1]
        );
    }

    #[test]
    fn denial_line_names_everything() {
        let config = Config {
            grant_request_url: Some("https://example.org/byoc".into()),
            ..Config::default()
        };
        let quay = allowance(&[(&["quay.io"], None)]);
        let checker = Checker::new(&config, &quay, "tool-a", now());
        let containers = [
            Container {
                kind: ContainerKind::Container,
                name: "ok".into(),
                image: Some("quay.io/x".into()),
            },
            Container {
                kind: ContainerKind::InitContainer,
                name: "init".into(),
                image: Some("busybox:1.36".into()),
            },
            Container {
                kind: ContainerKind::Container,
                name: "bad".into(),
                image: Some("UPPER/Case".into()),
            },
            Container {
                kind: ContainerKind::Container,
                name: "later".into(),
                image: None,
            },
            Container {
                kind: ContainerKind::ImageVolume,
                name: "models".into(),
                image: Some("docker.io/org/models:v1".into()),
            },
            Container {
                kind: ContainerKind::ImageVolume,
                name: "cached".into(),
                image: Some("sha256:7cc4b5ae".into()),
            },
        ];
        let v = checker.check("Deployment tool-a/web", &containers);
        assert_eq!(v.len(), 4);
        assert_eq!(
            v[0].to_string(),
            "Deployment tool-a/web: initContainer \"init\" image \"busybox:1.36\" resolves to \
             registry docker.io (docker.io/library/busybox:1.36), which namespace tool-a may not \
             use; allowed here: docker-registry.tools.wmflabs.org, quay.io; to use it, ask for \
             a BYOC grant at https://example.org/byoc"
        );
        let line = v[1].to_string();
        assert!(
            line.starts_with("Deployment tool-a/web: container \"bad\" image \"UPPER/Case\" is not a valid image reference: "),
            "{line}"
        );
        assert!(
            v[2].to_string().starts_with(
                "Deployment tool-a/web: volume \"models\" image \"docker.io/org/models:v1\" \
                 resolves to registry docker.io (docker.io/org/models:v1), which namespace tool-a \
                 may not use"
            ),
            "{}",
            v[2]
        );
        assert_eq!(
            v[3].to_string(),
            "Deployment tool-a/web: volume \"cached\" image \"sha256:7cc4b5ae\" is not a valid \
             image reference: it is an image ID, not an image name: the runtime runs whatever \
             image it has cached with that ID, whichever registry it came from; name the image \
             as registry/repository[:tag][@sha256:<digest>]"
        );
        assert!(v.iter().all(|v| !v.to_string().contains('\n')));
        assert!(
            v[2].warning()
                .starts_with("volume \"models\": registry docker.io")
        );
        assert!(v[0].warning().len() < 256, "{}", v[0].warning());
    }

    #[test]
    fn past_the_listed_bound_refusals_and_reminders_are_counted_not_kept() {
        let none = allowance(&[]);
        let ending = allowance(&[(&[], Some("2026-11-24T12:00:00Z"))]);
        let config = Config::default();
        // (containers, kept, counted)
        let cases = [
            (0, 0, 0),
            (1, 1, 0),
            (LISTED, LISTED, 0),
            (LISTED + 1, LISTED, 1),
            (100_000, LISTED, 100_000 - LISTED),
        ];
        for (n, kept, counted) in cases {
            let images = vec!["quay.io/x"; n];
            let all = containers(&images);
            let refused = Checker::new(&config, &none, "tool-a", now()).check("Pod tool-a/p", &all);
            let reminded =
                Checker::new(&config, &ending, "tool-a", now()).reminders("Pod tool-a/p", &all);
            for (what, got) in [
                (
                    "refused",
                    (refused.len(), refused.unlisted, refused.total()),
                ),
                (
                    "reminded",
                    (reminded.len(), reminded.unlisted, reminded.total()),
                ),
            ] {
                assert_eq!(got, (kept, counted, n), "{what} of {n}");
            }
            // The kept ones are the first, in container order.
            assert!(
                refused
                    .iter()
                    .enumerate()
                    .all(|(i, v)| v.container == format!("c{i}"))
            );
            let more = refused.more("refused containers");
            assert_eq!(
                more,
                (counted > 0).then(|| format!("…and {counted} more refused containers")),
                "{n}"
            );
        }
    }

    #[test]
    fn past_the_listed_bound_containers_that_need_lookups_are_refused_not_admitted() {
        use byoc_api::requirements::NamespaceRequirements;
        let digest = r#"{"version":1,"registries":{"quay.io":[{"expires":"never","requirements":{"requireDigest":true}}]}}"#;
        let annotation: NamespaceAnnotation =
            NamespaceRequirements::read(digest).map_err(|e| e.to_string());
        let quay = allowance(&[(&["quay.io"], None)]);
        let config = Config::default();
        let checker = Checker::new(&config, &quay, "tool-a", now()).requiring(Some(&annotation));
        // (containers, pending, refused)
        for (n, pending, refused) in [(LISTED, LISTED, 0), (LISTED + 72, LISTED, 72)] {
            let images = vec!["quay.io/x:1"; n];
            let got = checker.review("Pod tool-a/p", &containers(&images));
            assert_eq!(
                (got.pending.len(), got.violations.total()),
                (pending, refused),
                "{n}"
            );
            assert!(
                got.violations
                    .iter()
                    .all(|v| v.to_string().contains("need registry checks")),
                "{n}"
            );
        }
    }

    #[test]
    fn which_requirements_apply() {
        use byoc_api::requirements::NamespaceRequirements;
        let annotation = |json: &str| -> NamespaceAnnotation {
            NamespaceRequirements::read(json).map_err(|e| e.to_string())
        };
        let digest = r#"{"version":1,"registries":{"quay.io":[{"expires":"never","requirements":{"requireDigest":true}}]}}"#;
        let unconditional = r#"{"version":1,"registries":{"quay.io":[{"expires":"never","requirements":{"requireDigest":true}},{"expires":"never"}]}}"#;
        let expired = r#"{"version":1,"registries":{"quay.io":[{"expires":"20260101T000000Z","requirements":{"requireDigest":true}}]}}"#;
        let with_digest = annotation(digest);
        let with_unconditional = annotation(unconditional);
        let with_expired = annotation(expired);
        let unreadable = annotation("{");
        let quay = allowance(&[(&["quay.io"], None)]);
        let platform = Config {
            platform_requirements: Some(byoc_api::Requirements {
                require_digest: true,
                ..Default::default()
            }),
            ..Config::default()
        };
        let plain = Config::default();
        let platform_image = "docker-registry.tools.wmflabs.org/x:1";
        // (what, config, requirements, image, expected: "nothing" | origins | "unusable: text")
        let cases: &[(&str, &Config, Option<&NamespaceAnnotation>, &str, &str)] = &[
            (
                "no annotation, no platform requirements",
                &plain,
                None,
                "quay.io/x",
                "nothing",
            ),
            (
                "platform image, none configured",
                &plain,
                Some(&with_digest),
                platform_image,
                "nothing",
            ),
            (
                "platform image, configured",
                &platform,
                None,
                platform_image,
                "platform",
            ),
            (
                "grant with requirements",
                &plain,
                Some(&with_digest),
                "quay.io/x",
                "quay.io",
            ),
            (
                "one grant without requirements",
                &plain,
                Some(&with_unconditional),
                "quay.io/x",
                "nothing",
            ),
            (
                "no annotation: grants require nothing",
                &platform,
                None,
                "quay.io/x",
                "nothing",
            ),
            (
                "unreadable annotation",
                &plain,
                Some(&unreadable),
                "quay.io/x",
                "unusable: namespace tool-a cannot be read",
            ),
            (
                "unreadable annotation, platform image",
                &plain,
                Some(&unreadable),
                platform_image,
                "nothing",
            ),
            (
                "every grant with requirements expired",
                &plain,
                Some(&with_expired),
                "quay.io/x",
                "unusable: no active grant for quay.io",
            ),
        ];
        for (what, config, requirements, image, want) in cases {
            let checker = Checker::new(config, &quay, "tool-a", now()).requiring(*requirements);
            let got = match checker.applies(&image.parse().unwrap()) {
                Applies::Nothing => "nothing".to_owned(),
                Applies::AnyOf(alts) => alts
                    .iter()
                    .map(|a| match &a.origin {
                        Origin::Platform => "platform".to_owned(),
                        Origin::Grant(key) => key.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                Applies::Unusable(why) => format!("unusable: {why}"),
            };
            if let Some(text) = want.strip_prefix("unusable: ") {
                assert!(
                    got.starts_with("unusable: ") && got.contains(text),
                    "{what}: {got}"
                );
            } else {
                assert_eq!(&got, want, "{what}");
            }
        }
    }
}
