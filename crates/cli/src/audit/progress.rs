//! Progress on stderr while the audit lists a large cluster: a live line on a terminal, a line
//! per finished kind (and every 5,000 objects) otherwise.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use super::scan::Source;

/// How often, in objects, a non-terminal stderr gets a line while a kind is listed.
const EVERY: usize = 5_000;

/// The progress display.
pub struct Progress {
    live: bool,
    start: Instant,
    listed: Mutex<BTreeMap<Source, usize>>,
}

impl Progress {
    /// Progress on stderr; a live line when stderr is a terminal.
    pub fn new() -> Self {
        Self {
            live: std::io::stderr().is_terminal(),
            start: Instant::now(),
            listed: Mutex::new(BTreeMap::new()),
        }
    }

    /// `count` objects of `source` listed so far.
    pub fn page(&self, source: Source, count: usize) {
        let Ok(mut listed) = self.listed.lock() else {
            return;
        };
        let before = listed.insert(source, count).unwrap_or_default();
        if self.live {
            let parts: Vec<String> = listed
                .iter()
                .map(|(s, n)| format!("{n} {}", s.kind()))
                .collect();
            eprint!("\r\x1b[Klisting: {}", parts.join(", "));
            let _ = std::io::stderr().flush();
        } else if count / EVERY > before / EVERY {
            eprintln!("listing {}s: {count} so far", source.kind());
        }
    }

    /// `source` is listed: `count` objects in `pages` pages.
    pub fn done(&self, source: Source, count: usize, pages: usize) {
        let clear = if self.live { "\r\x1b[K" } else { "" };
        eprintln!(
            "{clear}listed {count} {}s in {pages} {} ({:.1}s)",
            source.kind(),
            if pages == 1 { "page" } else { "pages" },
            self.start.elapsed().as_secs_f64()
        );
    }
}
