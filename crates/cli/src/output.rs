//! Writing results: stdout for what scripts read, stderr for notes and progress.

use std::io::Write;

use clap::ValueEnum;
use serde::Serialize;

use crate::Failure;

/// A machine-readable rendering of objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ObjectFormat {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

impl ObjectFormat {
    /// `value` in this format, ending with a newline.
    pub fn render<T: Serialize>(self, value: &T) -> Result<String, Failure> {
        let text = match self {
            Self::Json => serde_json::to_string_pretty(value)
                .map(|s| s + "\n")
                .map_err(|e| e.to_string()),
            Self::Yaml => serde_saphyr::to_string(value).map_err(|e| e.to_string()),
        };
        text.map_err(|e| Failure::Usage(format!("cannot render the output: {e}")))
    }
}

/// Writes `text` to stdout as is.
pub fn emit(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Usage(format!("cannot write the output: {e}")))
}

/// Quotes `s` for a POSIX shell when it needs it, so printed commands can be pasted.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("quay.io"), "quay.io");
        assert_eq!(shell_quote("localhost:5000/a_b"), "localhost:5000/a_b");
        assert_eq!(shell_quote("T1: needs java"), "'T1: needs java'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn formats() {
        let v = serde_json::json!({"a": [1], "b": null});
        assert_eq!(
            ObjectFormat::Json.render(&v).unwrap(),
            "{\n  \"a\": [\n    1\n  ],\n  \"b\": null\n}\n"
        );
        let yaml = ObjectFormat::Yaml.render(&v).unwrap();
        assert!(yaml.starts_with("a:"), "{yaml}");
        assert!(yaml.ends_with('\n'), "{yaml}");
    }
}
