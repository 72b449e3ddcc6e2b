//! Reading manifests the way `kubectl apply -f` reads them: files or standard input, a JSON
//! stream when the input starts with `{`, otherwise a multi-document YAML stream; any object
//! with `items` is a list whose items are the objects.
//!
//! `check` must never pass input from which kubectl would create an object it did not
//! evaluate, so wherever this reader cannot be sure to read what kubectl reads, it refuses the
//! input (exit 2) rather than guess:
//!
//! - documents are split by the YAML library's own multi-document reader, so a document that
//!   starts on the `---` line (`--- {kind: Pod, ...}`) is read, not dropped;
//! - a YAML merge key (`<<`) is refused: kubectl's YAML library (go-yaml v2) merges in document
//!   order, so a merged key replaces one written before the `<<`, which YAML 1.1 and this
//!   reader's library do the other way round;
//! - a key repeated in one YAML mapping is refused (kubectl keeps the last one);
//! - an object with `items` is expanded whatever its kind (`PodList`, `DeploymentList`, even a
//!   `Pod` with `items`), and an item without `kind` and `apiVersion` takes the list's
//!   `apiVersion` and its kind without the `List` suffix, as kubectl's unstructured decoder
//!   does; a list inside a list is refused.

use std::fmt;
use std::io::Read;

use serde_json::Value;
use thiserror::Error;

/// Where a document came from, for messages: `app.yaml document 2`, `- document 1 item 3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file name as given (`-` for standard input).
    pub file: String,
    /// 1-based number of the document among the file's non-empty documents.
    pub document: usize,
    /// 1-based position in a list object, if the object came from one.
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document {}", self.file, self.document)?;
        if let Some(item) = self.item {
            write!(f, " item {item}")?;
        }
        Ok(())
    }
}

/// An input that cannot be read or parsed.
#[derive(Debug, Error)]
pub enum ManifestError {
    /// The file cannot be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a YAML or JSON stream that can be read as kubectl reads it.
    #[error("{file}: {problem}")]
    Stream {
        /// The file.
        file: String,
        /// What is wrong, with the line and column.
        problem: String,
    },
    /// A document is not a Kubernetes object.
    #[error("{origin}: {problem}")]
    Invalid {
        /// The document.
        origin: Origin,
        /// What is wrong.
        problem: String,
    },
}

impl ManifestError {
    /// An error about one document.
    pub fn invalid(origin: &Origin, problem: impl fmt::Display) -> Self {
        Self::Invalid {
            origin: origin.clone(),
            problem: problem.to_string(),
        }
    }
}

/// One object read from an input.
#[derive(Clone, Debug)]
pub struct Document {
    /// Where it came from.
    pub origin: Origin,
    /// The object.
    pub value: Value,
}

impl Document {
    /// The object's `kind`, required.
    pub fn kind(&self) -> Result<&str, ManifestError> {
        self.str_field("kind")
    }

    /// The object's `apiVersion`, required.
    pub fn api_version(&self) -> Result<&str, ManifestError> {
        self.str_field("apiVersion")
    }

    fn str_field(&self, field: &str) -> Result<&str, ManifestError> {
        match self.value.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(_) => Err(ManifestError::invalid(
                &self.origin,
                format!("{field} must be a non-empty string"),
            )),
            None => Err(ManifestError::invalid(
                &self.origin,
                format!("missing {field}: not a Kubernetes object"),
            )),
        }
    }
}

/// Reads every object of `file` (`-` is standard input): empty documents are skipped, list
/// objects expanded into their items.
pub fn read(file: &str) -> Result<Vec<Document>, ManifestError> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|source| ManifestError::Read {
                file: file.to_owned(),
                source,
            })?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|source| ManifestError::Read {
            file: file.to_owned(),
            source,
        })?
    };
    parse(file, &text)
}

/// Parses the objects of one input.
pub fn parse(file: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    // kubectl reads a JSON stream when the input starts with `{`, YAML otherwise.
    let values = if text.trim_start().starts_with('{') {
        json_stream(file, text)?
    } else {
        yaml_stream(file, text)?
    };
    let mut documents = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let origin = Origin {
            file: file.to_owned(),
            document: i + 1,
            item: None,
        };
        if !value.is_object() {
            return Err(ManifestError::invalid(
                &origin,
                format!("expected an object, found {}", type_name(&value)),
            ));
        }
        let doc = Document { origin, value };
        doc.kind()?;
        expand_list(doc, &mut documents)?;
    }
    Ok(documents)
}

/// The values of a stream of JSON documents, `null`s skipped as kubectl skips them.
fn json_stream(file: &str, text: &str) -> Result<Vec<Value>, ManifestError> {
    let mut values = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        let value = value.map_err(|e| ManifestError::Invalid {
            origin: Origin {
                file: file.to_owned(),
                document: values.len() + 1,
                item: None,
            },
            problem: format!("invalid JSON: {e}"),
        })?;
        if !value.is_null() {
            values.push(value);
        }
    }
    Ok(values)
}

/// The values of a multi-document YAML stream, empty and null documents skipped, read by the
/// YAML library's own document reader; merge keys and repeated keys are refused.
fn yaml_stream(file: &str, text: &str) -> Result<Vec<Value>, ManifestError> {
    let options = serde_saphyr::options! {
        merge_keys: serde_saphyr::MergeKeyPolicy::Error,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        with_snippet: false,
    };
    serde_saphyr::from_multiple_with_options(text, options).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" at line {} column {}", l.line(), l.column()))
            .unwrap_or_default();
        let problem = match e.without_snippet() {
            serde_saphyr::Error::MergeKeyNotAllowed { .. } => format!(
                "YAML merge key (<<){at} is not read: kubectl's YAML library merges in \
                 document order, so a merged key replaces one written before the <<, and the \
                 check could evaluate another value than kubectl sends; write the keys out"
            ),
            serde_saphyr::Error::DuplicateMappingKey { key, .. } => format!(
                "invalid YAML: key {}{at} appears twice in one mapping",
                key.as_deref()
                    .map_or_else(|| "(complex)".to_owned(), |k| format!("{k:?}"))
            ),
            _ => format!("invalid YAML: {e}"),
        };
        ManifestError::Stream {
            file: file.to_owned(),
            problem,
        }
    })
}

/// Adds `doc` to `documents`, or its items if it is a list object. kubectl's unstructured
/// decoder treats any object with an `items` key as a list (`items: null` is an empty one),
/// and gives an item without `kind` and `apiVersion` the list's `apiVersion` and its kind
/// without the `List` suffix.
fn expand_list(doc: Document, documents: &mut Vec<Document>) -> Result<(), ManifestError> {
    let items = match doc.value.get("items") {
        None => {
            documents.push(doc);
            return Ok(());
        }
        Some(Value::Null) => &[][..],
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ManifestError::invalid(
                &doc.origin,
                format!(
                    "items must be a list of objects, found {}",
                    type_name(other)
                ),
            ));
        }
    };
    let list_kind = non_empty_str(&doc.value, "kind").unwrap_or_default();
    let item_kind = list_kind.strip_suffix("List").unwrap_or(list_kind);
    let api_version = non_empty_str(&doc.value, "apiVersion").unwrap_or_default();
    for (j, item) in items.iter().enumerate() {
        let origin = Origin {
            item: Some(j + 1),
            ..doc.origin.clone()
        };
        if !item.is_object() {
            return Err(ManifestError::invalid(
                &origin,
                format!("expected an object, found {}", type_name(item)),
            ));
        }
        if item.get("items").is_some_and(Value::is_array) {
            return Err(ManifestError::invalid(
                &origin,
                "a list inside a list is not read: put its items in the outer list",
            ));
        }
        let mut value = item.clone();
        if non_empty_str(item, "kind").is_none() && non_empty_str(item, "apiVersion").is_none() {
            value["kind"] = Value::from(item_kind);
            value["apiVersion"] = Value::from(api_version);
        }
        documents.push(Document { origin, value });
    }
    Ok(())
}

/// The value of a string field, when it is a non-empty string.
fn non_empty_str<'v>(value: &'v Value, field: &str) -> Option<&'v str> {
    value
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(text: &str) -> Vec<String> {
        parse("f", text)
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .iter()
            .map(|d| {
                format!(
                    "{} {} {}",
                    d.origin,
                    d.value["kind"].as_str().unwrap_or("?"),
                    d.value["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    #[test]
    fn documents_lists_and_json() {
        let cases: &[(&str, &[&str])] = &[
            (
                "---\napiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n# only a comment\n---\n\
                 apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: b}}\n\
                 - {apiVersion: apps/v1, kind: Deployment, metadata: {name: c}}\n--- # trailing comment\n\
                 apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
                &[
                    "f document 1 Pod a",
                    "f document 2 item 1 Pod b",
                    "f document 2 item 2 Deployment c",
                    "f document 3 Deployment d",
                ],
            ),
            // A document that starts on the marker line is read, not dropped.
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n--- {apiVersion: v1, kind: Pod, metadata: {name: b}}\n\
                 --- !!map\napiVersion: v1\nkind: Pod\nmetadata: {name: c}\n",
                &[
                    "f document 1 ConfigMap a",
                    "f document 2 Pod b",
                    "f document 3 Pod c",
                ],
            ),
            // Typed lists: items without kind and apiVersion take the list's.
            (
                "apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: a}\n- {apiVersion: v1, kind: Secret, metadata: {name: s}}\n",
                &["f document 1 item 1 Pod a", "f document 1 item 2 Secret s"],
            ),
            (
                "apiVersion: apps/v1\nkind: DeploymentList\nitems: [{metadata: {name: web}}]\n",
                &["f document 1 item 1 Deployment web"],
            ),
            // Any object with items is a list to kubectl, whatever its kind.
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: outer}\nitems: [{metadata: {name: inner}}]\n",
                &["f document 1 item 1 Pod inner"],
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nitems: null\n",
                &[],
            ),
            // A quoted '<<' is an ordinary key, to go-yaml v2 too.
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: q, '<<': {name: x}}\n",
                &["f document 1 Pod q"],
            ),
            // A JSON stream: kubectl reads every value of it.
            (
                "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"j\"}}\n\
                 null\n{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"k\"}}",
                &["f document 1 Pod j", "f document 2 Pod k"],
            ),
            ("", &[]),
            ("---\n---\n# nothing\n...\n", &[]),
        ];
        for (text, want) in cases {
            assert_eq!(sources(text), *want, "{text:?}");
        }
    }

    #[test]
    fn errors_name_the_file_and_document() {
        let cases = [
            (
                "apiVersion: v1\nkind: Pod\n---\nkind: [unclosed\n",
                "f: invalid YAML",
            ),
            (
                "apiVersion: v1\nkind: Pod\n---\n- a\n- b\n",
                "f document 2: expected an object, found a list",
            ),
            ("metadata: {name: x}\n", "f document 1: missing kind"),
            (
                "kind: List\napiVersion: v1\nitems: 3\n",
                "f document 1: items must be a list of objects, found a number",
            ),
            (
                "kind: List\napiVersion: v1\nitems: [3]\n",
                "f document 1 item 1: expected an object, found a number",
            ),
            (
                "kind: List\napiVersion: v1\nitems: [{kind: List, apiVersion: v1, items: []}]\n",
                "f document 1 item 1: a list inside a list is not read",
            ),
            ("{\"kind\": ", "f document 1: invalid JSON"),
            (
                "{\"apiVersion\": \"v1\", \"kind\": \"Pod\"}\n---\nkind: Pod\n",
                "f document 2: invalid JSON",
            ),
            ("kind: 7\n", "f document 1: kind must be a non-empty string"),
            (
                "apiVersion: v1\nkind: Pod\nkind: Secret\n",
                "f: invalid YAML: key \"kind\" at line 3 column 1 appears twice in one mapping",
            ),
            (
                "x: &c {image: quay.io/x}\napiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n    image: docker-registry.tools.wmflabs.org/a\n    <<: *c\n",
                "f: YAML merge key (<<) at line 8 column 5 is not read: kubectl's YAML library merges in document order",
            ),
            (
                "apiVersion: v1\nkind: Pod\nspec: {containers: [{name: a, !!merge <<: {image: quay.io/x}}]}\n",
                "f: YAML merge key (<<)",
            ),
        ];
        for (text, want) in cases {
            let err = parse("f", text).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }
}
