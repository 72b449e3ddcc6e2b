//! A bounded reader of registry answers: image manifests (OCI and Docker v2 schema 2), image
//! indexes (OCI and Docker manifest lists) and image configs, keeping only what the
//! requirements read (DESIGN §12).
//!
//! The bytes come from a registry the tenant may control, already checked against their digest
//! by the registry client, so they are what the runtime will read, but they are hostile:
//!
//! - at most [`MAX_DOCUMENT_BYTES`] are read; unknown keys are skipped unparsed by serde_json's
//!   iterative skipping (no depth limit), and the known shape is four levels deep;
//! - lists keep at most [`MAX_LAYERS`] layers or diff_ids and [`MAX_MANIFESTS`] index entries
//!   (the rest is counted, not kept), and a longer list is an error;
//! - of the config labels only `org.opencontainers.image.*` ones are kept, at most
//!   [`MAX_LABELS`], each value at most [`MAX_LABEL_BYTES`]; a repeated key is an error;
//! - a document whose media type (the `Content-Type` and the `mediaType` field) is missing,
//!   contradictory or unknown, or which is shaped both as a manifest and as an index, is an
//!   error, as are repeated fields, bad digests and a `schemaVersion` other than 2;
//! - a key that Go's `encoding/json` (containerd, distribution) would take for a field read
//!   here, because it ignores case, without being that field (`"Layers"`) is an error: the
//!   runtime would otherwise run the document Go reads, not the one judged here.
//!
//! Every failure is an [`OciError`]; nothing here panics on any input.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use thiserror::Error;

/// The largest manifest, index or config read (the distribution spec's 4 MiB for manifests).
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// The most layers of a manifest, and diff_ids of a config.
pub const MAX_LAYERS: usize = 512;

/// The most entries of an index.
pub const MAX_MANIFESTS: usize = 256;

/// The most `org.opencontainers.image.*` labels kept from a config.
pub const MAX_LABELS: usize = 64;

/// The longest kept label value.
pub const MAX_LABEL_BYTES: usize = 4096;

/// The prefix of the config labels kept.
pub const LABEL_PREFIX: &str = "org.opencontainers.image.";

/// The label that names the image's source repository.
pub const SOURCE_LABEL: &str = "org.opencontainers.image.source";

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image manifest, v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The media types of image manifests and of indexes, for a registry client's `Accept`.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// A content digest, `algorithm:hex`, as image references accept them (sha256, sha384, sha512;
/// lowercase hex of the right length).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// The digest as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = OciError;

    fn from_str(s: &str) -> Result<Self, OciError> {
        crate::reference::check_digest(s)
            .map(|()| Self(s.to_owned()))
            .map_err(|e| OciError::Digest {
                digest: shorten(s),
                why: e.to_string(),
            })
    }
}

/// An OS and architecture (and variant), normalized as containerd normalizes them: lowercase,
/// `x86_64`/`x86-64` → `amd64`, `aarch64` → `arm64`, `i386` → `386`, `armhf`/`armel` → `arm`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    /// The OS, such as `linux` (empty when the document gives none).
    pub os: String,
    /// The CPU architecture, such as `amd64` (empty when the document gives none).
    pub architecture: String,
    /// The variant, such as `v8`, when given.
    pub variant: Option<String>,
}

impl Platform {
    /// A normalized platform.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let architecture = architecture.to_ascii_lowercase();
        let architecture = match architecture.as_str() {
            "x86_64" | "x86-64" => "amd64".to_owned(),
            "aarch64" => "arm64".to_owned(),
            "i386" => "386".to_owned(),
            "armhf" | "armel" => "arm".to_owned(),
            _ => architecture,
        };
        Self {
            os: os.to_ascii_lowercase(),
            architecture,
            variant: variant
                .filter(|v| !v.is_empty())
                .map(str::to_ascii_lowercase),
        }
    }

    /// Whether a runtime on this platform may pick an image for `other`, a superset of what
    /// containerd's default matcher picks: an OS or architecture left empty may be taken for
    /// this one's (containerd reads an empty OS as its own), `386` runs on `amd64` and `arm`
    /// on `arm64`, and the variant is ignored (which one a runtime picks depends on the CPU).
    pub fn may_run(&self, other: &Platform) -> bool {
        let os = other.os.is_empty() || self.os == other.os;
        let architecture = other.architecture.is_empty()
            || self.architecture == other.architecture
            || matches!(
                (self.architecture.as_str(), other.architecture.as_str()),
                ("amd64", "386") | ("arm64", "arm")
            );
        os && architecture
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = OciError;

    /// Reads `os/architecture[/variant]`.
    fn from_str(s: &str) -> Result<Self, OciError> {
        let parts: Vec<&str> = s.split('/').collect();
        let word = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        };
        match parts.as_slice() {
            [os, arch] if word(os) && word(arch) => Ok(Self::new(os, arch, None)),
            [os, arch, variant] if word(os) && word(arch) && word(variant) => {
                Ok(Self::new(os, arch, Some(variant)))
            }
            _ => Err(OciError::Platform(shorten(s))),
        }
    }
}

/// A reference to content: its media type, digest and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// The media type of the content.
    pub media_type: String,
    /// The digest of the content.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// An image manifest (OCI, or Docker v2 schema 2): a config and layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageManifest {
    /// The config blob (an image config, [`OCI_CONFIG`] or [`DOCKER_CONFIG`]).
    pub config: Descriptor,
    /// The layer blobs, bottom first.
    pub layers: Vec<Descriptor>,
}

/// One entry of an index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The manifest it points to.
    pub manifest: Descriptor,
    /// The platform it is for, when the index says.
    pub platform: Option<Platform>,
}

impl IndexEntry {
    /// Whether the entry points to another index.
    pub fn is_index(&self) -> bool {
        matches!(self.manifest.media_type.as_str(), OCI_INDEX | DOCKER_LIST)
    }
}

/// A manifest as the registry answers for a reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Manifest {
    /// One image.
    Image(ImageManifest),
    /// An index of images (a multi-arch image).
    Index(Vec<IndexEntry>),
}

/// What is read of an image config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// The platform it says it is for.
    pub platform: Option<Platform>,
    /// `rootfs.diff_ids`: the digests of the uncompressed layers, bottom first.
    pub diff_ids: Vec<Digest>,
    /// The `org.opencontainers.image.*` labels of `config.Labels`.
    pub labels: BTreeMap<String, String>,
}

/// A registry answer that cannot be used.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum OciError {
    /// Longer than [`MAX_DOCUMENT_BYTES`].
    #[error("the {what} is {len} bytes long, more than {MAX_DOCUMENT_BYTES}")]
    TooLarge {
        /// manifest or config.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// Not JSON of the expected shape (including repeated fields, and keys that Go readers
    /// would take for a field because they ignore case).
    #[error("the {what} does not read: {why}")]
    Malformed {
        /// manifest or config.
        what: &'static str,
        /// serde_json's message, with line and column.
        why: String,
    },
    /// Neither the `Content-Type` nor the `mediaType` field says what the document is.
    #[error("the manifest has no media type (neither a Content-Type nor a mediaType field)")]
    NoMediaType,
    /// The `Content-Type` and the `mediaType` field disagree.
    #[error("the manifest's Content-Type {header:?} and its mediaType {body:?} disagree")]
    MediaTypeMismatch {
        /// The Content-Type.
        header: String,
        /// The mediaType field.
        body: String,
    },
    /// The media type is not an image manifest or index.
    #[error(
        "media type {0:?} is not an OCI or Docker v2 image manifest or index (Docker schema 1 and artifacts are not read)"
    )]
    UnsupportedMediaType(String),
    /// The document has the fields of another kind (a manifest with `manifests`, an index
    /// with `layers` or `config`), so readers could take it for either.
    #[error("the {kind} also has the fields of an {other}, so it is ambiguous")]
    Ambiguous {
        /// What its media type says it is.
        kind: &'static str,
        /// The other kind.
        other: &'static str,
    },
    /// A required field is missing.
    #[error("the {what} has no {field}")]
    Missing {
        /// manifest, index entry, or config.
        what: &'static str,
        /// The field.
        field: &'static str,
    },
    /// `schemaVersion` is not 2.
    #[error("the manifest has schemaVersion {0}, not 2")]
    SchemaVersion(u64),
    /// A manifest's config is not an image config (an artifact, a signature, a chart).
    #[error("the manifest's config has media type {0:?}: it is not a container image")]
    NotAnImage(String),
    /// `rootfs.type` is not `layers`.
    #[error("the config's rootfs.type is {0:?}, not \"layers\"")]
    RootfsType(String),
    /// A list is longer than its bound.
    #[error("the {what} has {count} {items}, more than {limit}")]
    TooMany {
        /// manifest, index or config.
        what: &'static str,
        /// layers, manifests, diff_ids or labels.
        items: &'static str,
        /// How many it has.
        count: usize,
        /// The bound.
        limit: usize,
    },
    /// A digest is not valid.
    #[error("digest {digest:?} is invalid: {why}")]
    Digest {
        /// The digest (shortened when long).
        digest: String,
        /// Why.
        why: String,
    },
    /// A platform is not `os/architecture[/variant]`.
    #[error("platform {0:?} is not os/architecture[/variant]")]
    Platform(String),
    /// A kept label is repeated or too long.
    #[error("the config label {key:?} {why}")]
    Label {
        /// The label key (shortened when long).
        key: String,
        /// `is repeated` or `is longer than ...`.
        why: String,
    },
}

/// At most 80 characters of `s`, for messages.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_owned(),
    }
}

/// A JSON list of which at most `N` items are kept; `count` is its full length.
struct Bounded<T, const N: usize> {
    items: Vec<T>,
    count: usize,
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Bounded<T, N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for V<T, N> {
            type Value = Bounded<T, N>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                let mut count = 0;
                loop {
                    let more = if items.len() < N {
                        seq.next_element::<T>()?.map(|item| items.push(item))
                    } else {
                        seq.next_element::<IgnoredAny>()?.map(|_| ())
                    };
                    if more.is_none() {
                        return Ok(Bounded { items, count });
                    }
                    count += 1;
                }
            }
        }
        deserializer.deserialize_seq(V(PhantomData))
    }
}

impl<T, const N: usize> Bounded<T, N> {
    fn check(self, what: &'static str, items: &'static str) -> Result<Vec<T>, OciError> {
        if self.count > N {
            return Err(OciError::TooMany {
                what,
                items,
                count: self.count,
                limit: N,
            });
        }
        Ok(self.items)
    }
}

/// The `org.opencontainers.image.*` entries of a label map; other labels are skipped unread
/// (buildpacks write large JSON labels). Records the first problem instead of failing, so the
/// error is typed.
#[derive(Default)]
struct Labels {
    kept: BTreeMap<String, String>,
    count: usize,
    problem: Option<OciError>,
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of labels, or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Labels, E> {
                Ok(Labels::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
                let mut labels = Labels::default();
                while let Some(key) = map.next_key::<String>()? {
                    if !key.starts_with(LABEL_PREFIX) {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    let value = map.next_value::<String>()?;
                    labels.count += 1;
                    let problem = if labels.kept.contains_key(&key) {
                        Some("is repeated".to_owned())
                    } else if value.len() > MAX_LABEL_BYTES {
                        Some(format!("is longer than {MAX_LABEL_BYTES} bytes"))
                    } else {
                        None
                    };
                    match problem {
                        Some(why) if labels.problem.is_none() => {
                            labels.problem = Some(OciError::Label {
                                key: shorten(&key),
                                why,
                            })
                        }
                        Some(_) => {}
                        None if labels.kept.len() < MAX_LABELS => {
                            labels.kept.insert(key, value);
                        }
                        None => {}
                    }
                }
                Ok(labels)
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    schema_version: Option<u64>,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Bounded<RawDescriptor, MAX_LAYERS>>,
    manifests: Option<Bounded<RawEntry, MAX_MANIFESTS>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<u64>,
}

/// An index entry: a descriptor with a platform (not `#[serde(flatten)]`, which would buffer
/// unknown fields into a depth-limited value).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEntry {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<u64>,
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
}

impl RawDescriptor {
    fn read(self, what: &'static str) -> Result<Descriptor, OciError> {
        let missing = |field| OciError::Missing { what, field };
        Ok(Descriptor {
            media_type: self.media_type.ok_or_else(|| missing("mediaType"))?,
            digest: self.digest.ok_or_else(|| missing("digest"))?.parse()?,
            size: self.size.ok_or_else(|| missing("size"))?,
        })
    }
}

impl RawPlatform {
    fn read(self) -> Platform {
        Platform::new(
            self.os.as_deref().unwrap_or_default(),
            self.architecture.as_deref().unwrap_or_default(),
            self.variant.as_deref(),
        )
    }
}

/// The fields of an object of the known shape, each with the shape of its value when that
/// value is an object (or a list of objects) whose keys are checked too.
struct Shape(&'static [(&'static str, Option<&'static Shape>)]);

static PLATFORM: Shape = Shape(&[("os", None), ("architecture", None), ("variant", None)]);
static DESCRIPTOR: Shape = Shape(&[("mediaType", None), ("digest", None), ("size", None)]);
static ENTRY: Shape = Shape(&[
    ("mediaType", None),
    ("digest", None),
    ("size", None),
    ("platform", Some(&PLATFORM)),
]);
static DOCUMENT: Shape = Shape(&[
    ("schemaVersion", None),
    ("mediaType", None),
    ("config", Some(&DESCRIPTOR)),
    ("layers", Some(&DESCRIPTOR)),
    ("manifests", Some(&ENTRY)),
]);
static ROOTFS: Shape = Shape(&[("type", None), ("diff_ids", None)]);
static CONTAINER_CONFIG: Shape = Shape(&[("Labels", None)]);
static CONFIG: Shape = Shape(&[
    ("os", None),
    ("architecture", None),
    ("variant", None),
    ("rootfs", Some(&ROOTFS)),
    ("config", Some(&CONTAINER_CONFIG)),
]);

/// `key` as Go's `encoding/json` (containerd, distribution) matches object keys to field
/// names: ASCII case ignored, and `ſ` and the Kelvin sign taken for `s` and `k` (the only
/// non-ASCII letters whose simple case folding reaches ASCII).
fn go_folded(key: &str) -> impl Iterator<Item = char> + '_ {
    key.chars().map(|c| match c {
        '\u{17f}' => 's',
        '\u{212a}' => 'k',
        c => c.to_ascii_lowercase(),
    })
}

/// Checks that no key of an object of `Shape` is a field under Go's case folding without
/// being exactly that field (`"Layers"` beside or instead of `"layers"`): Go readers would
/// take it for the field, the last one winning, and so run another document than the one
/// judged here. Values of other types are left to the typed read.
struct Keys(&'static Shape);

impl<'de> de::DeserializeSeed<'de> for Keys {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Keys {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match self
                .0
                .0
                .iter()
                .find(|(field, _)| go_folded(field).eq(go_folded(&key)))
            {
                Some((field, _)) if *field != key => {
                    return Err(de::Error::custom(format!(
                        "key {:?} would be read as {field:?} by readers that ignore case \
                         (containerd, the registry), so the document is ambiguous",
                        shorten(&key)
                    )));
                }
                Some((_, Some(shape))) => map.next_value_seed(Keys(shape))?,
                _ => map.next_value::<IgnoredAny>().map(drop)?,
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Keys(self.0))?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Reads `bytes` as a `T` after checking its keys against `shape` ([`Keys`]).
fn parse<'a, T: Deserialize<'a>>(
    what: &'static str,
    shape: &'static Shape,
    bytes: &'a [u8],
) -> Result<T, OciError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(OciError::TooLarge {
            what,
            len: bytes.len(),
        });
    }
    let malformed = |e: serde_json::Error| OciError::Malformed {
        what,
        why: e.to_string(),
    };
    de::DeserializeSeed::deserialize(
        Keys(shape),
        &mut serde_json::Deserializer::from_slice(bytes),
    )
    .map_err(malformed)?;
    serde_json::from_slice(bytes).map_err(malformed)
}

/// Reads a manifest or index as a registry answered it: `content_type` is the answer's
/// `Content-Type` (parameters ignored), `bytes` its digest-checked body.
pub fn read_manifest(content_type: Option<&str>, bytes: &[u8]) -> Result<Manifest, OciError> {
    let doc: RawDocument = parse("manifest", &DOCUMENT, bytes)?;
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or_default().trim())
        .filter(|c| !c.is_empty());
    let media_type = match (header, doc.media_type.as_deref()) {
        (Some(h), Some(b)) if h != b => {
            return Err(OciError::MediaTypeMismatch {
                header: shorten(h),
                body: shorten(b),
            });
        }
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => return Err(OciError::NoMediaType),
    };
    let is_index = match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        OCI_INDEX | DOCKER_LIST => true,
        other => return Err(OciError::UnsupportedMediaType(shorten(other))),
    };
    match doc.schema_version {
        Some(2) => {}
        Some(v) => return Err(OciError::SchemaVersion(v)),
        None => {
            return Err(OciError::Missing {
                what: "manifest",
                field: "schemaVersion",
            });
        }
    }
    if is_index {
        if doc.layers.is_some() || doc.config.is_some() {
            return Err(OciError::Ambiguous {
                kind: "index",
                other: "image manifest",
            });
        }
        let entries = doc
            .manifests
            .ok_or(OciError::Missing {
                what: "index",
                field: "manifests",
            })?
            .check("index", "manifests")?;
        let entries = entries
            .into_iter()
            .map(|e| {
                let descriptor = RawDescriptor {
                    media_type: e.media_type,
                    digest: e.digest,
                    size: e.size,
                };
                Ok(IndexEntry {
                    manifest: descriptor.read("index entry")?,
                    platform: e.platform.map(RawPlatform::read),
                })
            })
            .collect::<Result<_, OciError>>()?;
        return Ok(Manifest::Index(entries));
    }
    if doc.manifests.is_some() {
        return Err(OciError::Ambiguous {
            kind: "image manifest",
            other: "index",
        });
    }
    let config = doc
        .config
        .ok_or(OciError::Missing {
            what: "manifest",
            field: "config",
        })?
        .read("manifest config")?;
    if !matches!(config.media_type.as_str(), OCI_CONFIG | DOCKER_CONFIG) {
        return Err(OciError::NotAnImage(shorten(&config.media_type)));
    }
    let layers = doc
        .layers
        .ok_or(OciError::Missing {
            what: "manifest",
            field: "layers",
        })?
        .check("manifest", "layers")?
        .into_iter()
        .map(|l| l.read("layer"))
        .collect::<Result<_, _>>()?;
    Ok(Manifest::Image(ImageManifest { config, layers }))
}

#[derive(Deserialize)]
struct RawConfig {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
    rootfs: Option<RawRootfs>,
    config: Option<RawContainerConfig>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(rename = "type")]
    type_: Option<String>,
    diff_ids: Option<Bounded<String, MAX_LAYERS>>,
}

#[derive(Deserialize)]
struct RawContainerConfig {
    #[serde(rename = "Labels")]
    labels: Option<Labels>,
}

/// Reads an image config blob (digest-checked by the client).
pub fn read_config(bytes: &[u8]) -> Result<ImageConfig, OciError> {
    let raw: RawConfig = parse("config", &CONFIG, bytes)?;
    let missing = |field| OciError::Missing {
        what: "config",
        field,
    };
    let rootfs = raw.rootfs.ok_or_else(|| missing("rootfs"))?;
    match rootfs.type_.as_deref() {
        Some("layers") => {}
        Some(other) => return Err(OciError::RootfsType(shorten(other))),
        None => return Err(missing("rootfs.type")),
    }
    let diff_ids = rootfs
        .diff_ids
        .ok_or_else(|| missing("rootfs.diff_ids"))?
        .check("config", "diff_ids")?
        .iter()
        .map(|d| d.parse())
        .collect::<Result<_, _>>()?;
    let labels = raw.config.and_then(|c| c.labels).unwrap_or_default();
    if let Some(problem) = labels.problem {
        return Err(problem);
    }
    if labels.count > MAX_LABELS {
        return Err(OciError::TooMany {
            what: "config",
            items: "org.opencontainers.image labels",
            count: labels.count,
            limit: MAX_LABELS,
        });
    }
    let platform = match (raw.os, raw.architecture) {
        (Some(os), Some(arch)) => Some(Platform::new(&os, &arch, raw.variant.as_deref())),
        _ => None,
    };
    Ok(ImageConfig {
        platform,
        diff_ids,
        labels: labels.kept,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A digest made of one repeated hex digit, for tests.
    pub(crate) fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    pub(crate) fn manifest_json(layers: &[String]) -> Value {
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": digest('c'), "size": 10 },
            "layers": layers.iter().map(|d| json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": 1
            })).collect::<Vec<_>>(),
        })
    }

    fn read(content_type: Option<&str>, doc: &Value) -> Result<Manifest, OciError> {
        read_manifest(content_type, doc.to_string().as_bytes())
    }

    #[test]
    fn manifests_and_indexes_read() {
        let m = read(
            Some(OCI_MANIFEST),
            &manifest_json(&[digest('1'), digest('2')]),
        )
        .unwrap();
        let Manifest::Image(m) = m else {
            panic!("{m:?}")
        };
        assert_eq!(m.layers.len(), 2);
        assert_eq!(m.layers[1].digest.as_str(), digest('2'));

        // Docker v2 schema 2, told by its Content-Type only, with unknown fields.
        let mut docker = manifest_json(&[digest('1')]);
        docker["mediaType"] = Value::Null;
        docker["config"]["mediaType"] = json!(DOCKER_CONFIG);
        docker["future"] = json!({"a": [1, {"b": null}]});
        assert!(matches!(
            read(Some(&format!("{DOCKER_MANIFEST}; charset=utf-8")), &docker),
            Ok(Manifest::Image(_))
        ));

        let index = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [
                { "mediaType": DOCKER_MANIFEST, "digest": digest('a'), "size": 5,
                  "platform": { "os": "Linux", "architecture": "x86_64" } },
                { "mediaType": OCI_INDEX, "digest": digest('b'), "size": 5 },
            ],
        });
        let Manifest::Index(entries) = read(None, &index).unwrap() else {
            panic!()
        };
        assert_eq!(
            entries[0]
                .platform
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("linux/amd64")
        );
        assert!(entries[1].platform.is_none() && entries[1].is_index());
    }

    #[test]
    fn hostile_manifests_are_typed_errors() {
        let good = manifest_json(&[digest('1')]);
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = good.clone();
            f(&mut v);
            v
        };
        let many = (0..=MAX_LAYERS).map(|_| digest('1')).collect::<Vec<_>>();
        let cases: Vec<(Option<&str>, Value, &str)> = vec![
            (Some(OCI_INDEX), good.clone(), "disagree"),
            (
                None,
                with(&|v| v["mediaType"] = Value::Null),
                "no media type",
            ),
            (
                None,
                with(&|v| {
                    v["mediaType"] =
                        json!("application/vnd.docker.distribution.manifest.v1+prettyjws")
                }),
                "not an OCI or Docker v2",
            ),
            (None, with(&|v| v["manifests"] = json!([])), "ambiguous"),
            (
                None,
                with(&|v| v["schemaVersion"] = json!(1)),
                "schemaVersion 1",
            ),
            (
                None,
                with(&|v| v["layers"][0]["digest"] = json!("sha256:abc")),
                "invalid",
            ),
            (
                None,
                with(&|v| v["layers"][0]["digest"] = json!("md5:abc")),
                "invalid",
            ),
            (
                None,
                with(&|v| v["layers"][0]["size"] = json!(-1)),
                "does not read",
            ),
            (None, with(&|v| v["layers"] = json!("x")), "does not read"),
            (
                None,
                with(&|v| {
                    v["config"]["mediaType"] = json!("application/vnd.cncf.helm.config.v1+json")
                }),
                "not a container image",
            ),
            (
                None,
                with(&|v| v["layers"] = manifest_json(&many)["layers"].clone()),
                "more than 512",
            ),
            (
                None,
                with(&|v| {
                    v.as_object_mut()
                        .unwrap()
                        .remove("config")
                        .map(drop)
                        .unwrap()
                }),
                "no config",
            ),
            (None, json!([1, 2]), "does not read"),
            // Keys Go readers take for a field (case ignored, last one wins): refused wherever
            // the known shape has them, alone or beside the field.
            (
                None,
                with(&|v| v["Layers"] = json!([])),
                r#"key "Layers" would be read as "layers""#,
            ),
            (
                None,
                with(&|v| {
                    let layers = v.as_object_mut().unwrap().remove("layers").unwrap();
                    v["LAYERS"] = layers;
                }),
                r#"would be read as "layers""#,
            ),
            (
                None,
                with(&|v| v["config"]["Digest"] = json!(digest('e'))),
                r#"would be read as "digest""#,
            ),
            (
                None,
                with(&|v| v["layers"][0]["SIZE"] = json!(1)),
                r#"would be read as "size""#,
            ),
            (
                None,
                with(&|v| v["\u{17f}chemaVersion"] = json!(2)),
                r#"would be read as "schemaVersion""#,
            ),
            (
                None,
                json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{
                    "mediaType": OCI_MANIFEST, "digest": digest('e'), "size": 1,
                    "platform": {"os": "linux", "architecture": "s390x", "Architecture": "amd64"},
                }]}),
                r#"would be read as "architecture""#,
            ),
            (
                None,
                json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
                       "Manifests": [{"mediaType": OCI_MANIFEST, "digest": digest('e'), "size": 1}]}),
                r#"would be read as "manifests""#,
            ),
        ];
        for (content_type, doc, want) in cases {
            let e = read(content_type, &doc).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        // An index that also has layers, repeated fields, trailing bytes, too many bytes.
        let index =
            json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [], "layers": []});
        assert!(matches!(
            read(None, &index),
            Err(OciError::Ambiguous { .. })
        ));
        let text = good.to_string();
        let repeated = text.replacen('{', r#"{"layers":[],"#, 1);
        assert!(
            read_manifest(None, repeated.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("duplicate")
        );
        assert!(read_manifest(None, format!("{text}x").as_bytes()).is_err());
        let big = format!("{}{text}", " ".repeat(MAX_DOCUMENT_BYTES));
        assert!(matches!(
            read_manifest(None, big.as_bytes()),
            Err(OciError::TooLarge { .. })
        ));
        // Deep unknown fields are skipped; a deep known one is a type error, never a crash.
        let deep = text.replacen(
            '{',
            &format!(r#"{{"x":{}0{},"#, "[".repeat(100_000), "]".repeat(100_000)),
            1,
        );
        assert!(read_manifest(None, deep.as_bytes()).is_ok());
        let deep_known = text.replacen(
            r#""layers":["#,
            &format!(r#""layers":[{}"#, "[".repeat(100_000)),
            1,
        );
        assert!(read_manifest(None, deep_known.as_bytes()).is_err());
    }

    pub(crate) fn config_json(diff_ids: &[String], source: Option<&str>) -> Value {
        let mut labels = json!({ "io.buildpacks.build.metadata": "x".repeat(10_000) });
        if let Some(source) = source {
            labels[SOURCE_LABEL] = json!(source);
        }
        json!({
            "architecture": "amd64", "os": "linux",
            "config": { "Env": ["A=1"], "Labels": labels },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": [{ "created_by": "x" }],
        })
    }

    #[test]
    fn configs_read() {
        let c = read_config(
            config_json(&[digest('d')], Some("https://x.org/a"))
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(c.diff_ids.len(), 1);
        assert_eq!(
            c.labels.get(SOURCE_LABEL).map(String::as_str),
            Some("https://x.org/a")
        );
        assert_eq!(
            c.labels.len(),
            1,
            "only org.opencontainers.image labels are kept"
        );
        assert_eq!(c.platform, Some(Platform::new("linux", "amd64", None)));
        let null_labels =
            json!({"rootfs": {"type": "layers", "diff_ids": []}, "config": {"Labels": null}});
        assert!(
            read_config(null_labels.to_string().as_bytes())
                .unwrap()
                .labels
                .is_empty()
        );
    }

    #[test]
    fn hostile_configs_are_typed_errors() {
        let good = config_json(&[digest('d')], Some("https://x.org/a"));
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = good.clone();
            f(&mut v);
            v.to_string()
        };
        let text = good.to_string();
        let cases: Vec<(String, &str)> = vec![
            (with(&|v| v["rootfs"]["type"] = json!("zfs")), "rootfs.type"),
            (
                with(&|v| {
                    v.as_object_mut()
                        .unwrap()
                        .remove("rootfs")
                        .map(drop)
                        .unwrap()
                }),
                "no rootfs",
            ),
            (
                with(&|v| v["rootfs"]["diff_ids"] = json!(["sha256:zz"])),
                "invalid",
            ),
            (
                with(&|v| v["config"]["Labels"][SOURCE_LABEL] = json!(5)),
                "does not read",
            ),
            (
                with(&|v| {
                    v["config"]["Labels"][SOURCE_LABEL] = json!("x".repeat(MAX_LABEL_BYTES + 1))
                }),
                "longer than",
            ),
            (
                text.replacen(
                    r#""Labels":{"#,
                    &format!(r#""Labels":{{"{SOURCE_LABEL}":"https://evil.org","#),
                    1,
                ),
                "is repeated",
            ),
            (
                with(&|v| {
                    for i in 0..=MAX_LABELS {
                        v["config"]["Labels"][format!("{LABEL_PREFIX}x{i}")] = json!("y");
                    }
                }),
                "more than 64",
            ),
            (
                with(&|v| v["rootfs"]["diff_ids"] = json!(vec![digest('d'); MAX_LAYERS + 1])),
                "513 diff_ids",
            ),
        ];
        for (key, field) in [
            ("Rootfs", "rootfs"),
            ("Config", "config"),
            ("OS", "os"),
            ("rootfs.DIFF_IDS", "diff_ids"),
            ("rootfs.Type", "type"),
            ("config.labels", "Labels"),
        ] {
            let mut v = good.clone();
            match key.split_once('.') {
                Some((outer, inner)) => v[outer][inner] = json!(null),
                None => v[key] = json!(null),
            }
            let e = read_config(v.to_string().as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("would be read as {field:?}")),
                "{key}: {e}"
            );
        }
        // Label names are map keys, which Go matches exactly: any case is fine there.
        let mut v = good.clone();
        v["config"]["Labels"]["Org.Opencontainers.Image.Source"] = json!("https://evil.org");
        assert!(read_config(v.to_string().as_bytes()).is_ok());
        for (text, want) in cases {
            let e = read_config(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn platforms_parse_and_match() {
        let amd64: Platform = "linux/amd64".parse().unwrap();
        let arm64: Platform = "linux/arm64".parse().unwrap();
        for (node, image, runs) in [
            (&amd64, Platform::new("LINUX", "x86_64", Some("v3")), true),
            (&amd64, Platform::new("linux", "i686", None), false),
            (&amd64, Platform::new("linux", "i386", None), true),
            (&amd64, Platform::new("", "amd64", None), true),
            (&amd64, Platform::new("linux", "", None), true),
            (&amd64, Platform::new("", "", None), true),
            (&amd64, Platform::new("linux", "arm64", None), false),
            (&amd64, Platform::new("windows", "amd64", None), false),
            (&amd64, Platform::new("unknown", "unknown", None), false),
            (&arm64, Platform::new("linux", "arm", Some("v7")), true),
            (&arm64, Platform::new("linux", "aarch64", Some("v8")), true),
            (&arm64, Platform::new("linux", "amd64", None), false),
        ] {
            assert_eq!(node.may_run(&image), runs, "{node} runs {image:?}");
        }
        assert_eq!(
            "linux/arm64/V8".parse::<Platform>().unwrap().to_string(),
            "linux/arm64/v8"
        );
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }
}
