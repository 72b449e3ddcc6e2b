//! Reading manifests: files or standard input, YAML (multi-document) or JSON.

use std::fmt;
use std::io::Read;

use serde_json::Value;
use thiserror::Error;

/// Where a document came from, for messages: `app.yaml document 2`, `- document 1 item 3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file name as given (`-` for standard input).
    pub file: String,
    /// 1-based document number in the file.
    pub document: usize,
    /// 1-based position in a `v1 List`, if the object came from one.
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
    /// A document is not valid YAML or JSON, or not a Kubernetes object.
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

/// Reads every document of `file` (`-` is standard input). Empty documents are skipped; a
/// `v1 List` is expanded into its items.
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

/// Parses the documents of one input.
pub fn parse(file: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    let mut documents = Vec::new();
    for (i, chunk) in split_documents(text).into_iter().enumerate() {
        let origin = Origin {
            file: file.to_owned(),
            document: i + 1,
            item: None,
        };
        let trimmed = chunk.trim_start();
        let value: Value = if trimmed.starts_with('{') || trimmed.starts_with('[') {
            serde_json::from_str(chunk)
                .map_err(|e| ManifestError::invalid(&origin, format!("invalid JSON: {e}")))?
        } else {
            serde_saphyr::from_str(chunk)
                .map_err(|e| ManifestError::invalid(&origin, format!("invalid YAML: {e}")))?
        };
        match value {
            Value::Null => continue,
            Value::Object(_) => {}
            other => {
                return Err(ManifestError::invalid(
                    &origin,
                    format!("expected an object, found {}", type_name(&other)),
                ));
            }
        }
        let doc = Document { origin, value };
        if doc.kind()? == "List" {
            let Some(Value::Array(items)) = doc.value.get("items") else {
                return Err(ManifestError::invalid(
                    &doc.origin,
                    "a List needs an items array",
                ));
            };
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
                documents.push(Document {
                    origin,
                    value: item.clone(),
                });
            }
        } else {
            documents.push(doc);
        }
    }
    Ok(documents)
}

/// Splits a YAML stream on `---` document markers, as kubectl does.
fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") {
            docs.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(&text[start..]);
    // Content before a leading marker is an (empty) document of its own only if it has content.
    if docs.first().is_some_and(|d| d.trim().is_empty()) && docs.len() > 1 {
        docs.remove(0);
    }
    docs
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

    #[test]
    fn documents_lists_and_json() {
        let yaml = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n# only a comment\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: b}}\n\
                    - {apiVersion: v1, kind: Pod, metadata: {name: c}}\n--- # trailing comment\n\
                    apiVersion: apps/v1\nkind: Deployment\n";
        let docs = parse("f.yaml", yaml).unwrap();
        let origins: Vec<String> = docs.iter().map(|d| d.origin.to_string()).collect();
        assert_eq!(
            origins,
            [
                "f.yaml document 1",
                "f.yaml document 3 item 1",
                "f.yaml document 3 item 2",
                "f.yaml document 4"
            ]
        );
        let json = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j"}}"#;
        assert_eq!(
            parse("f.json", json).unwrap()[0].value["metadata"]["name"],
            "j"
        );
        assert!(parse("e.yaml", "").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_document() {
        let cases = [
            (
                "apiVersion: v1\nkind: Pod\n---\nkind: [unclosed\n",
                "f document 2: invalid YAML",
            ),
            (
                "apiVersion: v1\nkind: Pod\n---\n- a\n- b\n",
                "f document 2: expected an object, found a list",
            ),
            ("metadata: {name: x}\n", "f document 1: missing kind"),
            (
                "kind: List\napiVersion: v1\nitems: 3\n",
                "f document 1: a List needs an items array",
            ),
            ("{\"kind\": ", "f document 1: invalid JSON"),
            ("kind: 7\n", "f document 1: kind must be a non-empty string"),
        ];
        for (text, want) in cases {
            let err = parse("f", text).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }
}
