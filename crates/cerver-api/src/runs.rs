//! Running code: synchronously (`/run`) or as Server-Sent Events (`/run/stream`).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use cerver_control::RunParams;
use cerver_runtime::{RunEvent, RunHandle};
use cerver_types::{RunRequest, RunResponse, RunResult, StreamEvent};

use crate::error::ApiError;
use crate::extract::JsonBody;
use axum::Extension;
use cerver_control::Caller;

use crate::AppState;

const TRUNCATED: &str = "\n[output truncated: the run wrote more than the limit of";

pub(crate) fn params(req: RunRequest) -> Result<RunParams, ApiError> {
    let timeout_s = match &req.timeout {
        None => None,
        Some(n) => match n.as_f64() {
            Some(t) if t.is_finite() && t > 0.0 => Some(t),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "timeout must be a positive number of seconds",
                ));
            }
        },
    };
    Ok(RunParams {
        code: req.code,
        envs: req.envs.unwrap_or_default(),
        timeout_s,
    })
}

async fn start(
    st: &AppState,
    caller: &Caller,
    id: &str,
    req: RunRequest,
) -> Result<RunHandle, ApiError> {
    Ok(st.control.run(&caller.user.id, id, params(req)?).await?)
}

/// As in the documented examples: one trailing newline is not part of the value.
fn trim_one_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

#[utoipa::path(
    post,
    path = "/sandbox/{id}/run",
    tag = "runs",
    operation_id = "run_code",
    summary = "Run code and wait for the result (or start it in the background)",
    description = "Runs `code` as a fresh Python 3 process in the sandbox. A run that times out still answers 200, with the reason in `error`. With `\"background\": true` it answers at once with the started process (`ProcessInfo`); see `/sandbox/{id}/processes`.",
    params(("id" = String, Path, description = "The sandbox's `sandbox_id`.")),
    request_body(content = cerver_types::RunRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "How the run ended and what it wrote (`RunResponse`), or with `background` the started process (`ProcessInfo`).", body = cerver_types::RunResult),
        (status = 400, description = "Malformed JSON, or invalid code, envs or timeout.", body = cerver_types::ErrorBody),
        (status = 404, description = "No such sandbox (or it has ended).", body = cerver_types::ErrorBody),
        (status = 413, description = "The request body is too large.", body = cerver_types::ErrorBody),
        (status = 422, description = "A field is missing or has the wrong type.", body = cerver_types::ErrorBody),
        (status = 429, description = "Too many runs in progress in this sandbox, or (background) 16 background processes already running (one counts until everything it started has closed its output), or the sandbox is at its process limit.", body = cerver_types::ErrorBody),
        (status = 500, description = "Internal server error.", body = cerver_types::ErrorBody),
        (status = 503, description = "(background) The process could not be started for another reason, e.g. it did not start in time (`cannot_start`); retry later.", body = cerver_types::ErrorBody),
    )
)]
pub async fn run(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RunRequest>,
) -> Result<Json<RunResult>, ApiError> {
    if req.background == Some(true) {
        let (process, _live) = st
            .control
            .start_process(&caller.user.id, &id, params(req)?)
            .await?;
        return Ok(Json(RunResult::Background(crate::processes::info_of(
            &process,
        ))));
    }
    let handle = start(&st, &caller, &id, req).await?;
    let max = st.control.runtime().config().max_output_bytes;
    let out = handle.collect(max).await;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.stdout_truncated {
        output.push_str(&format!("{TRUNCATED} {max} bytes]"));
    }
    let mut error = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.stderr_truncated {
        error.push_str(&format!("{TRUNCATED} {max} bytes]"));
    }
    let mut error = trim_one_newline(error);
    if let Some(msg) = out.exit.error.as_deref() {
        if !error.is_empty() {
            error.push('\n');
        }
        error.push_str(msg);
    }
    Ok(Json(RunResult::Finished(RunResponse {
        output: trim_one_newline(output),
        error,
        exit_code: out.exit.exit_code,
        duration: out.exit.duration.as_millis() as u64,
    })))
}

/// Decodes a byte stream as UTF-8 across chunk boundaries (a multi-byte character may be split
/// between two reads); invalid bytes become U+FFFD.
#[derive(Default)]
pub(crate) struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub(crate) fn push(&mut self, chunk: &[u8]) -> String {
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

    pub(crate) fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

pub(crate) fn sse(ev: &StreamEvent) -> Result<Event, Infallible> {
    Ok(Event::default().data(serde_json::to_string(ev).expect("events serialize")))
}

#[utoipa::path(
    post,
    path = "/sandbox/{id}/run/stream",
    tag = "runs",
    operation_id = "run_code_stream",
    summary = "Run code, streaming its output as Server-Sent Events",
    description = "Same body as `/run`. Each event is one `data:` line holding a JSON `StreamEvent`: `stdout` and `stderr` chunks in order, then one `exit` event. Closing the connection kills the run. With `\"background\": true` the first event is `{\"type\": \"process\", \"pid\": N}`, then the process's output as it comes (and `exit` if it ends); closing the connection leaves the process running.",
    params(("id" = String, Path, description = "The sandbox's `sandbox_id`.")),
    request_body(content = cerver_types::RunRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A `text/event-stream` whose every `data:` line is a JSON `StreamEvent`.", content_type = "text/event-stream", body = cerver_types::StreamEvent),
        (status = 400, description = "Malformed JSON, or invalid code, envs or timeout.", body = cerver_types::ErrorBody),
        (status = 404, description = "No such sandbox (or it has ended).", body = cerver_types::ErrorBody),
        (status = 413, description = "The request body is too large.", body = cerver_types::ErrorBody),
        (status = 422, description = "A field is missing or has the wrong type.", body = cerver_types::ErrorBody),
        (status = 429, description = "Too many runs in progress in this sandbox, or (background) 16 background processes already running (one counts until everything it started has closed its output), or the sandbox is at its process limit.", body = cerver_types::ErrorBody),
        (status = 500, description = "Internal server error.", body = cerver_types::ErrorBody),
        (status = 503, description = "(background) The process could not be started for another reason, e.g. it did not start in time (`cannot_start`); retry later.", body = cerver_types::ErrorBody),
    )
)]
pub async fn run_stream(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RunRequest>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    if req.background == Some(true) {
        let (process, live) = st
            .control
            .start_process(&caller.user.id, &id, params(req)?)
            .await?;
        let pid = process.process.pid() as u32;
        let closing = st.control.closing();
        let events =
            crate::processes::events(pid, Default::default(), None, Some(live), closing, None);
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response());
    }
    let handle = start(&st, &caller, &id, req).await?;
    struct S {
        handle: RunHandle,
        out: Utf8Stream,
        err: Utf8Stream,
        queued: std::collections::VecDeque<StreamEvent>,
        done: bool,
    }
    let state = S {
        handle,
        out: Utf8Stream::default(),
        err: Utf8Stream::default(),
        queued: Default::default(),
        done: false,
    };
    // Dropping the stream (client gone) drops the handle, which kills the run.
    let stream = futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(ev) = s.queued.pop_front() {
                return Some((sse(&ev), s));
            }
            if s.done {
                return None;
            }
            match s.handle.next().await {
                Some(RunEvent::Stdout(b)) => s.queued.push_back(StreamEvent::Stdout {
                    data: s.out.push(&b),
                }),
                Some(RunEvent::Stderr(b)) => s.queued.push_back(StreamEvent::Stderr {
                    data: s.err.push(&b),
                }),
                Some(RunEvent::Exit(exit)) => {
                    s.done = true;
                    s.queued.push_back(StreamEvent::Stdout {
                        data: s.out.finish(),
                    });
                    s.queued.push_back(StreamEvent::Stderr {
                        data: s.err.finish(),
                    });
                    s.queued.push_back(StreamEvent::Exit {
                        code: exit.exit_code,
                        error: exit.error.clone(),
                        duration: exit.duration.as_millis() as u64,
                    });
                }
                None => s.done = true,
            }
            s.queued.retain(|ev| !matches!(ev, StreamEvent::Stdout { data } | StreamEvent::Stderr { data } if data.is_empty()));
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::{Utf8Stream, trim_one_newline};

    #[test]
    fn trims_exactly_one_newline() {
        assert_eq!(trim_one_newline("50\n".into()), "50");
        assert_eq!(trim_one_newline("a\n\n".into()), "a\n");
        assert_eq!(trim_one_newline("a\r\n".into()), "a");
        assert_eq!(trim_one_newline("".into()), "");
    }

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
}
