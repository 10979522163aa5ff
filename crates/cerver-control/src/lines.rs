//! Line-buffered output events: a stream's text goes out one whole line per event, so
//! `print(0)` (which Python writes to the pipe as `0`, then `\n`) is one `"0\n"` event, as the
//! documentation shows. A partial line waits at most [`PARTIAL_WAIT`] for the rest of its
//! line (so a prompt or a progress dot written without a newline still arrives promptly), and
//! never grows past [`MAX_PARTIAL`].

use std::time::Duration;

use tokio::time::Instant;

use crate::stream::Utf8Stream;

/// How long the start of a line is held back waiting for its end.
pub const PARTIAL_WAIT: Duration = Duration::from_millis(25);
/// A partial line this long goes out without waiting.
pub const MAX_PARTIAL: usize = 64 * 1024;

/// One output stream: UTF-8 decoding across chunks, then whole lines.
#[derive(Default)]
pub struct Lines {
    utf8: Utf8Stream,
    partial: String,
    /// When the oldest byte of `partial` arrived.
    since: Option<Instant>,
}

impl Lines {
    /// Takes a chunk of the stream; returns the whole lines it completed, one per item.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let text = self.utf8.push(chunk);
        if text.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find('\n') {
            let (line, tail) = rest.split_at(i + 1);
            if self.partial.is_empty() {
                out.push(line.to_string());
            } else {
                self.partial.push_str(line);
                out.push(std::mem::take(&mut self.partial));
            }
            rest = tail;
        }
        self.partial.push_str(rest);
        if self.partial.len() >= MAX_PARTIAL {
            out.push(std::mem::take(&mut self.partial));
        }
        self.since = if self.partial.is_empty() {
            None
        } else {
            self.since.or_else(|| Some(Instant::now()))
        };
        out
    }

    /// When the partial line must go out, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|t| t + PARTIAL_WAIT)
    }

    /// The partial line, now (its wait is over, or the stream ended).
    pub fn flush(&mut self) -> Option<String> {
        self.since = None;
        (!self.partial.is_empty()).then(|| std::mem::take(&mut self.partial))
    }

    /// The stream ended: whatever is left, including an incomplete character (as U+FFFD).
    pub fn finish(&mut self) -> Option<String> {
        let rest = self.utf8.finish();
        self.partial.push_str(&rest);
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_item_per_line_and_partials_held() {
        let mut l = Lines::default();
        assert!(l.push(b"0").is_empty());
        assert!(l.deadline().is_some());
        assert_eq!(l.push(b"\n1\n2\npart"), vec!["0\n", "1\n", "2\n"]);
        assert_eq!(l.flush().as_deref(), Some("part"));
        assert_eq!(l.deadline(), None);
        assert_eq!(l.push("é".as_bytes()[..1].as_ref()), Vec::<String>::new());
        assert_eq!(l.deadline(), None, "nothing decoded yet");
        assert_eq!(l.finish().as_deref(), Some("\u{FFFD}"));
    }

    #[tokio::test]
    async fn a_long_partial_goes_out() {
        let mut l = Lines::default();
        let out = l.push(&vec![b'x'; MAX_PARTIAL]);
        assert_eq!(out.len(), 1);
        assert_eq!(l.flush(), None);
    }
}
