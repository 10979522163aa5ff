//! Rich results of a run: the JSON lines its main process writes to its results pipe
//! (`cerver-jail/src/display.py`), framed, validated and bounded here.
//!
//! The pipe is not stdout, so printing cannot forge a result; user code can still write to the
//! descriptor, but only into its own run, and nothing it writes can break the framing: a line is
//! one result or it is dropped, a line longer than the remaining budget is skipped to its end,
//! and after [`MAX_RESULTS`] results or [`MAX_RESULT_BYTES`] bytes the rest is dropped and a
//! truncation marker ends the list.

use serde::{Deserialize, Serialize};

/// Most results one run keeps (then a truncation marker).
pub const MAX_RESULTS: usize = 32;
/// Most bytes of results (as written on the pipe) one run keeps.
pub const MAX_RESULT_BYTES: usize = 8 << 20;
/// Largest `error` line (the traceback is cut to 64 KiB on the sandbox side).
const MAX_ERROR_LINE: usize = 256 << 10;

/// One display output: the representations it came with.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RichResult {
    pub text: Option<String>,
    pub html: Option<String>,
    pub markdown: Option<String>,
    pub svg: Option<String>,
    /// Base64.
    pub png: Option<String>,
    /// Base64.
    pub jpeg: Option<String>,
    pub latex: Option<String>,
    pub json: Option<serde_json::Value>,
    #[serde(default)]
    pub is_main_result: bool,
    /// Set on the marker that ends a truncated list (never by the sandbox).
    #[serde(skip_deserializing)]
    pub truncated: bool,
}

/// The exception a run's code raised.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorInfo {
    pub name: String,
    pub value: String,
    pub traceback: String,
}

/// What one line of the results pipe is.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Result(RichResult),
    Error(ErrorInfo),
    /// The sandbox side stopped writing results at its bounds.
    Truncated {},
}

/// One item read from the results pipe.
#[derive(Debug, Clone, PartialEq)]
pub enum Display {
    Result(RichResult),
    Error(ErrorInfo),
}

/// Splits the results pipe into lines and keeps what is valid and within the bounds.
#[derive(Debug, Default)]
pub struct ResultsReader {
    line: Vec<u8>,
    /// The current line is over its budget: drop bytes up to its end.
    skipping: bool,
    count: usize,
    bytes: usize,
    truncated: bool,
    marked: bool,
    errors: usize,
}

impl ResultsReader {
    /// Takes a chunk of the pipe; returns the items it completed.
    pub fn push(&mut self, mut chunk: &[u8]) -> Vec<Display> {
        let mut out = Vec::new();
        while !chunk.is_empty() {
            let (part, rest, ended) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &[][..], false),
            };
            chunk = rest;
            if !self.skipping {
                if self.line.len() + part.len() > self.line_budget() {
                    self.skipping = true;
                    self.truncated = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(part);
                }
            }
            if ended {
                if !self.skipping {
                    let line = std::mem::take(&mut self.line);
                    out.extend(self.parse(&line));
                }
                self.skipping = false;
            }
        }
        out
    }

    /// The pipe is done: a marker result when anything was dropped for the bounds.
    pub fn finish(&mut self) -> Option<Display> {
        if !self.truncated || self.marked {
            return None;
        }
        self.marked = true;
        Some(Display::Result(RichResult {
            text: Some(format!(
                "[results truncated: a run keeps at most {MAX_RESULTS} results and {} MiB of them]",
                MAX_RESULT_BYTES >> 20
            )),
            truncated: true,
            ..Default::default()
        }))
    }

    /// A line may be a result that fits the remaining budget, or an error line.
    fn line_budget(&self) -> usize {
        MAX_ERROR_LINE.max(MAX_RESULT_BYTES.saturating_sub(self.bytes))
    }

    fn parse(&mut self, line: &[u8]) -> Option<Display> {
        match serde_json::from_slice::<Line>(line).ok()? {
            Line::Result(r) => {
                if self.count >= MAX_RESULTS || self.bytes + line.len() + 1 > MAX_RESULT_BYTES {
                    self.truncated = true;
                    return None;
                }
                self.count += 1;
                self.bytes += line.len() + 1;
                Some(Display::Result(r))
            }
            // One exception per run: the first one (the run's own) counts.
            Line::Error(e) if self.errors == 0 && line.len() <= MAX_ERROR_LINE => {
                self.errors += 1;
                Some(Display::Error(e))
            }
            Line::Error(_) => None,
            Line::Truncated {} => {
                self.truncated = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result_line(text: &str) -> Vec<u8> {
        format!("{{\"type\":\"result\",\"text\":{text:?},\"is_main_result\":false}}\n").into_bytes()
    }

    #[test]
    fn lines_split_across_chunks_and_garbage_dropped() {
        let mut r = ResultsReader::default();
        let line = result_line("a");
        assert!(r.push(&line[..5]).is_empty());
        let got = r.push(&[&line[5..], b"not json\n{\"type\":\"result\",\"bogus\":1}\n"].concat());
        assert_eq!(got.len(), 1);
        assert!(matches!(&got[0], Display::Result(x) if x.text.as_deref() == Some("a")));
        assert_eq!(r.finish(), None);
    }

    #[test]
    fn count_bound_adds_one_marker() {
        let mut r = ResultsReader::default();
        let mut n = 0;
        for i in 0..MAX_RESULTS + 5 {
            n += r.push(&result_line(&i.to_string())).len();
        }
        assert_eq!(n, MAX_RESULTS);
        assert!(matches!(r.finish(), Some(Display::Result(m)) if m.truncated));
        assert_eq!(r.finish(), None);
    }

    #[test]
    fn an_endless_line_is_skipped_to_its_end() {
        let mut r = ResultsReader::default();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..10 {
            assert!(r.push(&chunk).is_empty());
        }
        assert!(r.line.len() <= MAX_RESULT_BYTES);
        let got = r.push(&[b"\n".as_slice(), &result_line("ok")].concat());
        assert_eq!(got.len(), 1);
        assert!(r.finish().is_some());
    }

    #[test]
    fn only_the_first_error_counts() {
        let mut r = ResultsReader::default();
        let e =
            b"{\"type\":\"error\",\"name\":\"ValueError\",\"value\":\"x\",\"traceback\":\"t\"}\n";
        assert_eq!(r.push(e).len(), 1);
        assert!(r.push(e).is_empty());
    }

    #[test]
    fn the_sandbox_cannot_set_the_marker_flag() {
        let mut r = ResultsReader::default();
        let got = r.push(b"{\"type\":\"result\",\"text\":\"t\",\"truncated\":true}\n");
        assert!(got.is_empty(), "unknown field rejected");
    }
}
