//! Runs and background processes as a stream of documented events ([`StreamEvent`]): output
//! decoded as UTF-8 across chunk boundaries, one event per line ([`crate::lines`]), rich
//! results as `result` events, then one `exit` event. One
//! machine serves `/run/stream` (a run's own events; dropping the stream kills the run) and
//! following a background process (a broadcast subscription; dropping it only unsubscribes).

use std::collections::VecDeque;

use cerver_runtime::{RunEvent, RunExit, RunHandle};
use cerver_types::StreamEvent;

use crate::lines::Lines;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{OwnedSemaphorePermit, broadcast, watch};

/// The events of a run or process, in order; it ends after `exit` (or when its source ends).
pub type EventStream = BoxStream<'static, StreamEvent>;

/// Decodes a byte stream as UTF-8 across chunk boundaries (a multi-byte character may be split
/// between two reads); invalid bytes become U+FFFD.
#[derive(Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, chunk: &[u8]) -> String {
        self.pending.extend_from_slice(chunk);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[..valid]).expect("valid prefix"),
                    );
                    match e.error_len() {
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// The `exit` event of how a run ended.
pub(crate) fn exit_event(
    exit: &RunExit,
    error_info: Option<cerver_types::ErrorInfo>,
) -> StreamEvent {
    StreamEvent::Exit {
        code: exit.exit_code,
        error: exit.error.clone(),
        duration: exit.duration.as_millis() as u64,
        status: crate::runs::status(exit),
        error_info,
    }
}

/// Where the events come from.
pub(crate) enum Source {
    /// A run of this stream's own: dropping it kills the run.
    Run(RunHandle),
    /// A background process's live events; ends when the server starts shutting down.
    Live {
        events: broadcast::Receiver<RunEvent>,
        closing: watch::Receiver<bool>,
    },
    /// Nothing more (the process had ended).
    Ended,
}

impl Source {
    async fn next(&mut self) -> Option<RunEvent> {
        match self {
            Source::Run(handle) => handle.next().await,
            Source::Live { events, closing } => loop {
                let next = tokio::select! {
                    next = events.recv() => next,
                    _ = closing.wait_for(|c| *c) => return None,
                };
                match next {
                    Ok(ev) => return Some(ev),
                    // Fell behind: those chunks are in the process's buffer, not in this stream.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    // The process is gone with its sandbox.
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
            Source::Ended => None,
        }
    }
}

/// Builds an [`EventStream`]: first `first` (e.g. a `process` event), then `replay` (raw
/// buffered output, through the same decoders as the live chunks that continue it, so a
/// character split between the two arrives whole), then `exit` if the process has ended,
/// else the source's events. `permit` (e.g. a follower slot) is held until the stream is
/// dropped.
pub(crate) struct Events {
    queued: VecDeque<StreamEvent>,
    source: Source,
    out: Lines,
    err: Lines,
    error_info: Option<cerver_types::ErrorInfo>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Events {
    pub(crate) fn new(source: Source) -> Self {
        Events {
            queued: VecDeque::new(),
            source,
            out: Lines::default(),
            err: Lines::default(),
            error_info: None,
            permit: None,
        }
    }

    pub(crate) fn first(mut self, ev: StreamEvent) -> Self {
        self.queued.push_back(ev);
        self
    }

    pub(crate) fn replay(mut self, stdout: &[u8], stderr: &[u8]) -> Self {
        self.on(RunEvent::Stdout(stdout.to_vec().into()));
        self.on(RunEvent::Stderr(stderr.to_vec().into()));
        self
    }

    pub(crate) fn ended(mut self, exit: Option<RunExit>) -> Self {
        if let Some(exit) = exit {
            self.on(RunEvent::Exit(exit));
        }
        self
    }

    pub(crate) fn holding(mut self, permit: OwnedSemaphorePermit) -> Self {
        self.permit = Some(permit);
        self
    }

    fn on(&mut self, ev: RunEvent) {
        match ev {
            RunEvent::Stdout(b) => {
                let lines = self.out.push(&b);
                let events = lines.into_iter().map(|data| StreamEvent::Stdout { data });
                self.queued.extend(events);
            }
            RunEvent::Stderr(b) => {
                let lines = self.err.push(&b);
                let events = lines.into_iter().map(|data| StreamEvent::Stderr { data });
                self.queued.extend(events);
            }
            RunEvent::Result(r) => {
                self.flush_partials(false);
                let result = crate::runs::wire_result(*r);
                self.queued.push_back(StreamEvent::from(result));
            }
            RunEvent::Error(e) => self.error_info = Some(crate::runs::wire_error(*e)),
            RunEvent::Exit(exit) => {
                self.source = Source::Ended;
                self.flush_partials(true);
                let info = self.error_info.take();
                self.queued.push_back(exit_event(&exit, info));
            }
        }
    }

    /// Partial lines go out (their wait is over, or the stream ends with `finish`).
    fn flush_partials(&mut self, finish: bool) {
        let (out, err) = if finish {
            (self.out.finish(), self.err.finish())
        } else {
            (self.out.flush(), self.err.flush())
        };
        self.queued
            .extend(out.map(|data| StreamEvent::Stdout { data }));
        self.queued
            .extend(err.map(|data| StreamEvent::Stderr { data }));
    }

    /// The next event of the source, or `None` when a partial line's wait is over first.
    async fn next_or_partial(&mut self) -> Option<Option<RunEvent>> {
        let deadline = match (self.out.deadline(), self.err.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match deadline {
            None => Some(self.source.next().await),
            Some(at) => tokio::time::timeout_at(at, self.source.next()).await.ok(),
        }
    }

    pub(crate) fn into_stream(self) -> EventStream {
        futures::stream::unfold(self, |mut s| async move {
            loop {
                if let Some(ev) = s.queued.pop_front() {
                    return Some((ev, s));
                }
                match s.next_or_partial().await {
                    Some(ev) => s.on(ev?),
                    None => s.flush_partials(false),
                }
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_chunks() {
        let mut d = Utf8Stream::default();
        let euro = "€".as_bytes();
        assert_eq!(d.push(&euro[..1]), "");
        assert_eq!(d.push(&euro[1..]), "€");
        assert_eq!(d.push(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(d.push(&euro[..2]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }

    #[tokio::test]
    async fn replay_then_exit_joins_split_characters_and_drops_empty_chunks() {
        let euro = "€".as_bytes();
        let exit = RunExit {
            exit_code: 0,
            signal: None,
            timed_out: false,
            out_of_memory: false,
            error: None,
            duration: std::time::Duration::from_millis(7),
        };
        let events: Vec<_> = Events::new(Source::Ended)
            .first(StreamEvent::Process { pid: 9 })
            .replay(&euro[..2], b"")
            .ended(Some(exit))
            .into_stream()
            .collect()
            .await;
        assert_eq!(
            events,
            vec![
                StreamEvent::Process { pid: 9 },
                StreamEvent::Stdout {
                    data: "\u{FFFD}".into()
                },
                StreamEvent::Exit {
                    code: 0,
                    error: None,
                    duration: 7,
                    status: cerver_types::RunStatus::Ok,
                    error_info: None,
                },
            ]
        );
    }
}
