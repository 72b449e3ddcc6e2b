//! Plain-text tables laid out like `kubectl get`: upper-case headers, columns three spaces
//! apart, no padding after the last column.

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

    /// Adds a row. Missing cells print empty; extra cells are dropped.
    pub fn push(&mut self, mut row: Vec<String>) {
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }
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
    fn header_only() {
        assert_eq!(Table::new(vec!["A", "B"]).to_string(), "A   B\n");
    }
}
