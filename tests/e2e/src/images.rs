//! The container images, built two ways: by the `Dockerfile` (releases with a container engine)
//! and by `hack/build-images.sh` (no Docker: Debian packages, umoci, skopeo). [`Layout`] is what
//! a container runtime takes from an image; [`dockerfile_layouts`] reads it from the Dockerfile's
//! stages and [`Layout::from_oci_config`] from a built image, so a test can compare the two.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// What a runtime takes from an image besides its files, plus the files the build copied in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// `USER`, e.g. `65532:65532`.
    pub user: String,
    /// `ENTRYPOINT` (exec form).
    pub entrypoint: Vec<String>,
    /// `CMD` (exec form).
    pub cmd: Vec<String>,
    /// `EXPOSE`, each as `PORT/PROTOCOL`.
    pub exposed_ports: BTreeSet<String>,
    /// `LABEL`s.
    pub labels: BTreeMap<String, String>,
    /// Destinations of `COPY` (empty for a built image: its files are checked on disk).
    pub copied: BTreeSet<String>,
    /// Instructions this model does not cover (`ENV`, `WORKDIR`, `RUN`, ...), as written: a
    /// runtime stage that has one needs this model extended before the comparison means much.
    pub unmodelled: Vec<String>,
}

impl Layout {
    /// The layout of a built image from its OCI image configuration (`skopeo inspect --config`).
    ///
    /// # Errors
    /// When the configuration has no `config` object or a field has the wrong type.
    pub fn from_oci_config(image: &Value) -> Result<Self, String> {
        let config = image
            .get("config")
            .and_then(Value::as_object)
            .ok_or("the image configuration has no \"config\" object")?;
        let strings = |key: &str| -> Result<Vec<String>, String> {
            match config.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("config.{key} holds a non-string: {v}"))
                    })
                    .collect(),
                Some(other) => Err(format!("config.{key} is not an array: {other}")),
            }
        };
        let keys = |key: &str| -> Result<Vec<String>, String> {
            match config.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Object(map)) => Ok(map.keys().cloned().collect()),
                Some(other) => Err(format!("config.{key} is not an object: {other}")),
            }
        };
        let labels = match config.get("Labels") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|v| (k.clone(), v.to_owned()))
                        .ok_or_else(|| format!("label {k} is not a string: {v}"))
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(format!("config.Labels is not an object: {other}")),
        };
        Ok(Self {
            user: config
                .get("User")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            entrypoint: strings("Entrypoint")?,
            cmd: strings("Cmd")?,
            exposed_ports: keys("ExposedPorts")?.into_iter().collect(),
            labels,
            copied: BTreeSet::new(),
            unmodelled: Vec::new(),
        })
    }
}

/// The layout of every named stage (`FROM ... AS NAME`) of a Dockerfile. A stage built `FROM`
/// an earlier stage starts from that stage's layout; one built from an image starts empty.
///
/// Understands line continuations, comments, `LABEL k=v ...` with quoted values, `EXPOSE`
/// (`/tcp` when no protocol is given) and the exec (JSON) form of `ENTRYPOINT` and `CMD`.
///
/// # Errors
/// A line before the first `FROM`, a `FROM` without an image, a shell-form `ENTRYPOINT` or
/// `CMD`, a `LABEL` that is not `key=value` pairs, or a `COPY` without a destination.
pub fn dockerfile_layouts(text: &str) -> Result<BTreeMap<String, Layout>, String> {
    let mut stages: BTreeMap<String, Layout> = BTreeMap::new();
    let mut current: Option<(Option<String>, Layout)> = None;
    let finish = |stages: &mut BTreeMap<String, Layout>,
                  stage: Option<(Option<String>, Layout)>| {
        if let Some((Some(name), layout)) = stage {
            stages.insert(name, layout);
        }
    };
    for line in logical_lines(text) {
        let (instruction, rest) = line
            .split_once(char::is_whitespace)
            .map_or((line.as_str(), ""), |(i, r)| (i, r.trim()));
        let instruction = instruction.to_ascii_uppercase();
        if instruction == "FROM" {
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let image = *words.first().ok_or("FROM without an image")?;
            let name = match words.get(1..) {
                Some([as_, name]) if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                Some([]) => None,
                _ => return Err(format!("cannot read `FROM {rest}`")),
            };
            finish(&mut stages, current.take());
            let base = stages.get(image).cloned().unwrap_or_default();
            current = Some((name, base));
            continue;
        }
        if instruction == "ARG" && current.is_none() {
            continue; // global build arguments
        }
        let (_, layout) = current
            .as_mut()
            .ok_or_else(|| format!("`{line}` comes before the first FROM"))?;
        match instruction.as_str() {
            "ARG" => {}
            "USER" => rest.clone_into(&mut layout.user),
            "ENTRYPOINT" => layout.entrypoint = exec_form(&instruction, rest)?,
            "CMD" => layout.cmd = exec_form(&instruction, rest)?,
            "EXPOSE" => layout
                .exposed_ports
                .extend(rest.split_whitespace().map(|p| {
                    if p.contains('/') {
                        p.to_owned()
                    } else {
                        format!("{p}/tcp")
                    }
                })),
            "LABEL" => layout.labels.extend(label_pairs(rest)?),
            "COPY" => {
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                match words.as_slice() {
                    [_, .., dest] => layout.copied.insert((*dest).to_owned()),
                    _ => return Err(format!("COPY without a destination: `{line}`")),
                };
            }
            _ => layout.unmodelled.push(line.clone()),
        }
    }
    finish(&mut stages, current);
    Ok(stages)
}

/// The Dockerfile's logical lines: continuations joined, comments and blank lines dropped.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head.trim_end());
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                lines.push(std::mem::take(&mut pending).trim().to_owned());
            }
        }
    }
    if !pending.trim().is_empty() {
        lines.push(pending.trim().to_owned());
    }
    lines
}

fn exec_form(instruction: &str, rest: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(rest).map_err(|e| {
        format!(
            "{instruction} {rest}: only the exec form (a JSON array of strings) is understood ({e})"
        )
    })
}

/// `key="value" key2=value2 ...`: double-quoted values may hold spaces and `\"`.
fn label_pairs(rest: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        if chars.next() != Some('=') || key.is_empty() {
            return Err(format!("LABEL {rest}: expected key=value pairs"));
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err(format!("LABEL {rest}: unterminated quote")),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())));
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTI_STAGE: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=example/base
FROM docker.io/rust AS build
WORKDIR /src
RUN cargo build \
 && install -D target/release/app /out/app

FROM ${BASE} AS runtime
LABEL org.example.source="https://example.org/x" \
      org.example.licenses="Apache-2.0"
USER 65532:65532

FROM runtime AS app
LABEL title="app" description="Does \"things\", well"
COPY --from=build /out/app /usr/local/bin/app
EXPOSE 8443 8080 53/udp
ENTRYPOINT ["/usr/local/bin/app"]
"#;

    #[test]
    fn reads_stages_with_inheritance() {
        let stages = dockerfile_layouts(MULTI_STAGE).expect("parses");
        assert_eq!(
            stages.keys().collect::<Vec<_>>(),
            ["app", "build", "runtime"]
        );
        let app = &stages["app"];
        assert_eq!(app.user, "65532:65532", "USER is inherited from runtime");
        assert_eq!(app.entrypoint, ["/usr/local/bin/app"]);
        assert!(app.cmd.is_empty());
        assert_eq!(
            app.exposed_ports.iter().collect::<Vec<_>>(),
            ["53/udp", "8080/tcp", "8443/tcp"]
        );
        let labels: Vec<(&str, &str)> = app
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("description", "Does \"things\", well"),
                ("org.example.licenses", "Apache-2.0"),
                ("org.example.source", "https://example.org/x"),
                ("title", "app"),
            ]
        );
        assert_eq!(
            app.copied.iter().collect::<Vec<_>>(),
            ["/usr/local/bin/app"]
        );
        assert!(app.unmodelled.is_empty(), "{:?}", app.unmodelled);
        assert_eq!(
            stages["build"].unmodelled,
            [
                "WORKDIR /src",
                "RUN cargo build && install -D target/release/app /out/app"
            ]
        );
        assert!(
            stages["runtime"].copied.is_empty() && stages["runtime"].entrypoint.is_empty(),
            "a stage does not see what later stages add"
        );
    }

    #[test]
    fn refuses_what_it_cannot_model() {
        let cases = [
            ("USER 1", "before the first FROM"),
            ("FROM", "FROM without an image"),
            ("FROM a AS b c", "cannot read"),
            (
                "FROM a AS b\nENTRYPOINT /bin/app --flag",
                "only the exec form",
            ),
            ("FROM a AS b\nCMD [\"x\", 1]", "only the exec form"),
            ("FROM a AS b\nLABEL novalue", "expected key=value"),
            ("FROM a AS b\nLABEL k=\"open", "unterminated quote"),
            ("FROM a AS b\nCOPY onlyone", "COPY without a destination"),
        ];
        for (text, want) in cases {
            let err = dockerfile_layouts(text).expect_err(text);
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn reads_an_oci_image_config() {
        let config = serde_json::json!({
            "architecture": "amd64",
            "config": {
                "User": "65532:65532",
                "ExposedPorts": {"8080/tcp": {}, "8443/tcp": {}},
                "Entrypoint": ["/usr/local/bin/app"],
                "Cmd": null,
                "Labels": {"title": "app"}
            }
        });
        let layout = Layout::from_oci_config(&config).expect("reads");
        assert_eq!(layout.user, "65532:65532");
        assert_eq!(layout.entrypoint, ["/usr/local/bin/app"]);
        assert!(layout.cmd.is_empty());
        assert_eq!(layout.exposed_ports.len(), 2);
        assert_eq!(layout.labels["title"], "app");

        let bad = [
            (serde_json::json!({}), "no \"config\""),
            (
                serde_json::json!({"config": {"Entrypoint": "/x"}}),
                "not an array",
            ),
            (serde_json::json!({"config": {"Cmd": [1]}}), "non-string"),
            (
                serde_json::json!({"config": {"ExposedPorts": ["80"]}}),
                "not an object",
            ),
            (
                serde_json::json!({"config": {"Labels": {"a": 1}}}),
                "label a",
            ),
        ];
        for (config, want) in bad {
            let err = Layout::from_oci_config(&config).expect_err(&config.to_string());
            assert!(err.contains(want), "{config}: {err:?} lacks {want:?}");
        }
    }
}
