//! Plain-text tables laid out like `kubectl get`: upper-case headers, columns three spaces
//! apart, no padding after the last column. Cells may hold tenant text (a request's reason),
//! so control and bidirectional-formatting characters print as visible escapes: a cell can
//! neither start a new line nor move the cursor nor reorder what a terminal shows.

use std::fmt;

/// A table of text cells; every row has one cell per header.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(headers: Vec<&'static str>) -> Self {
        Self {
            headers,
            rows: Vec::new(),
        }
    }

    /// Adds a row, each cell made [`visible`]. Missing cells print empty; extra cells are
    /// dropped.
    pub fn push(&mut self, row: Vec<String>) {
        let mut row: Vec<String> = row.iter().map(|cell| visible(cell)).collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }
}

/// `cell` with every control character (C0, DEL, C1) and every bidirectional formatting
/// character (marks, embeddings, overrides, isolates) written as a visible escape: `\n`, `\r`,
/// `\t`, else `\u{..}` as Rust writes it.
pub fn visible(cell: &str) -> String {
    let mut out = String::with_capacity(cell.len());
    for c in cell.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_bidi_format(c) => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

/// The Unicode bidirectional formatting characters: ALM, LRM, RLM, the embeddings and
/// overrides U+202A..U+202E, and the isolates U+2066..U+2069.
fn is_bidi_format(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([self.headers[i].len()])
                .max()
                .unwrap_or_default()
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let header = self.headers.iter().map(|h| h.to_string());
        for row in std::iter::once(header.collect()).chain(self.rows.iter().cloned()) {
            let last = row.len().saturating_sub(1);
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i < last {
                    let pad = widths[i] - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_like_kubectl() {
        let mut t = Table::new(vec!["NAME", "NAMESPACE", "REGISTRIES", "EXPIRES"]);
        t.push(vec![
            "tool-wikibugs".into(),
            "tool-wikibugs".into(),
            "quay.io,ghcr.io/wikimedia".into(),
            "89d".into(),
        ]);
        t.push(vec!["a".into(), "tool-ä".into(), "any".into()]);
        assert_eq!(
            t.to_string(),
            "NAME            NAMESPACE       REGISTRIES                  EXPIRES\n\
             tool-wikibugs   tool-wikibugs   quay.io,ghcr.io/wikimedia   89d\n\
             a               tool-ä          any\n"
        );
    }

    #[test]
    fn control_and_bidi_characters_print_as_escapes() {
        let cases = [
            ("plain text, ä, 日本", "plain text, ä, 日本"),
            ("a\nb", "a\\nb"),
            ("a\r\nb\tc", "a\\r\\nb\\tc"),
            ("\u{1b}[1A\u{1b}[2K", "\\u{1b}[1A\\u{1b}[2K"),
            ("nul\0", "nul\\u{0}"),
            ("del\u{7f}", "del\\u{7f}"),
            ("csi\u{9b}2K nel\u{85}", "csi\\u{9b}2K nel\\u{85}"),
            ("abc\u{202e}fed", "abc\\u{202e}fed"),
            (
                "\u{202a}\u{202b}\u{202c}\u{202d}",
                "\\u{202a}\\u{202b}\\u{202c}\\u{202d}",
            ),
            (
                "\u{2066}x\u{2067}\u{2068}\u{2069}",
                "\\u{2066}x\\u{2067}\\u{2068}\\u{2069}",
            ),
            ("\u{200e}\u{200f}\u{61c}", "\\u{200e}\\u{200f}\\u{61c}"),
            // Not formatting: zero-width joiner (emoji), no-break space, a literal backslash.
            ("\u{200d}\u{a0}\\n", "\u{200d}\u{a0}\\n"),
        ];
        for (cell, want) in cases {
            assert_eq!(visible(cell), want, "{cell:?}");
        }
    }

    #[test]
    fn a_cell_cannot_forge_a_row() {
        let mut t = Table::new(vec!["NAME", "REASON"]);
        t.push(vec![
            "aaa".into(),
            "T9\n\u{1b}[1A\u{1b}[2K\rtool-a   ghcr.io   Pending".into(),
        ]);
        let text = t.to_string();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
        assert_eq!(
            text.lines().nth(1),
            Some("aaa    T9\\n\\u{1b}[1A\\u{1b}[2K\\rtool-a   ghcr.io   Pending")
        );
    }

    #[test]
    fn header_only() {
        assert_eq!(Table::new(vec!["A", "B"]).to_string(), "A   B\n");
    }
}
