//! The legacy BYOC allow-list (option 4 of T302863 as first proposed): one namespace per line,
//! `#` starts a comment, blank lines are ignored.

use byoc_api::grant::is_dns1123_label;

/// A parsed allow-list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    /// Namespaces in file order, each once.
    pub entries: Vec<Entry>,
    /// Repeated namespaces: (line, namespace, line of its first mention).
    pub duplicates: Vec<(usize, String, usize)>,
    /// Lines that are not a namespace name.
    pub invalid: Vec<Invalid>,
}

/// One namespace of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number.
    pub line: usize,
    /// The namespace.
    pub namespace: String,
}

/// A line that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// 1-based line number.
    pub line: usize,
    /// The line without its comment, trimmed.
    pub text: String,
    /// Why it is not a namespace.
    pub problem: &'static str,
}

impl AllowList {
    /// Parses the text of the list. Never fails: bad lines are collected in `invalid`.
    pub fn parse(text: &str) -> Self {
        let mut list = Self::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
            if content.is_empty() {
                continue;
            }
            if content.split_whitespace().nth(1).is_some() {
                list.invalid.push(Invalid {
                    line,
                    text: content.to_owned(),
                    problem: "more than one word: write one namespace per line",
                });
                continue;
            }
            if !is_dns1123_label(content) {
                list.invalid.push(Invalid {
                    line,
                    text: content.to_owned(),
                    problem: "not a namespace name (lowercase letters, digits and '-', at most 63)",
                });
                continue;
            }
            match list.entries.iter().find(|e| e.namespace == content) {
                Some(first) => list.duplicates.push((line, content.to_owned(), first.line)),
                None => list.entries.push(Entry {
                    line,
                    namespace: content.to_owned(),
                }),
            }
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_comments_duplicates_and_errors() {
        let text = "# BYOC allow-list, reviewed by WMCS\n\
                    tool-wikibugs\n\
                    \n\
                    \ttool-k8s-status   # T123\r\n\
                    tool-wikibugs\n\
                    Tool_Upper\n\
                    tool-a tool-b\n\
                    #tool-disabled\n\
                    -bad\n\
                    tools.something\n\
                    toolforge-rs";
        let list = AllowList::parse(text);
        let entries: Vec<(usize, &str)> = list
            .entries
            .iter()
            .map(|e| (e.line, e.namespace.as_str()))
            .collect();
        assert_eq!(
            entries,
            [
                (2, "tool-wikibugs"),
                (4, "tool-k8s-status"),
                (11, "toolforge-rs")
            ]
        );
        assert_eq!(list.duplicates, [(5, "tool-wikibugs".to_owned(), 2)]);
        let invalid: Vec<(usize, &str)> = list
            .invalid
            .iter()
            .map(|i| (i.line, i.text.as_str()))
            .collect();
        assert_eq!(
            invalid,
            [
                (6, "Tool_Upper"),
                (7, "tool-a tool-b"),
                (9, "-bad"),
                (10, "tools.something")
            ]
        );
        assert!(list.invalid[1].problem.contains("one namespace per line"));
        assert_eq!(AllowList::parse(""), AllowList::default());
        assert_eq!(
            AllowList::parse("# only\n\n  # comments\n"),
            AllowList::default()
        );
    }
}
