//! Background processes: list, inspect, follow and kill (`/sandbox/{id}/processes...`).
//! They are started by `/run` and `/run/stream` with `"background": true` (see `runs.rs`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::{Extension, Json};
use cerver_control::processes::BackgroundProcess;
use cerver_control::{Caller, unix};
use cerver_runtime::{ProcessOutput, RunEvent, RunExit};
use cerver_types::{KillProcessResponse, ProcessDetail, ProcessInfo, ProcessList, StreamEvent};
use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, broadcast, watch};

use crate::AppState;
use crate::error::ApiError;
use crate::runs::{Utf8Stream, sse};

/// A pid from the path: a positive decimal integer that fits a pid.
pub(crate) fn parse_pid(s: &str) -> Result<i32, ApiError> {
    let valid = !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit());
    match s.parse::<i32>() {
        Ok(pid) if valid && pid > 0 => Ok(pid),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_pid",
            "pid must be a positive integer",
        )),
    }
}

pub(crate) fn info_of(p: &BackgroundProcess) -> ProcessInfo {
    let s = p.process.snapshot();
    ProcessInfo {
        pid: s.pid as u32,
        status: s.status.as_str().into(),
        code: p.code.clone(),
        started_at: unix(s.started_at),
        exit_code: s.exit.as_ref().map(|e| e.exit_code),
        ended_at: s.ended_at.map(unix),
    }
}

fn exit_event(exit: &RunExit) -> StreamEvent {
    StreamEvent::Exit {
        code: exit.exit_code,
        error: exit.error.clone(),
        duration: exit.duration.as_millis() as u64,
    }
}

/// The SSE events of a background process: a `process` event, its buffered output (`replay`,
/// raw bytes), then either `exit` (already ended) or the live events until it ends. The replay
/// goes through the same UTF-8 decoders as the live chunks that continue it, so a character
/// split between the two arrives whole. The stream also ends when the server starts shutting
/// down (`closing`); `permit` (a follower slot) is held until the stream is dropped.
pub(crate) fn events(
    pid: u32,
    replay: ProcessOutput,
    exit: Option<RunExit>,
    live: Option<broadcast::Receiver<RunEvent>>,
    closing: watch::Receiver<bool>,
    permit: Option<OwnedSemaphorePermit>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct S {
        queued: VecDeque<StreamEvent>,
        live: Option<broadcast::Receiver<RunEvent>>,
        out: Utf8Stream,
        err: Utf8Stream,
        closing: watch::Receiver<bool>,
        _permit: Option<OwnedSemaphorePermit>,
    }
    let mut out = Utf8Stream::default();
    let mut err = Utf8Stream::default();
    let mut queued: VecDeque<StreamEvent> = VecDeque::from([
        StreamEvent::Process { pid },
        StreamEvent::Stdout {
            data: out.push(&replay.stdout),
        },
        StreamEvent::Stderr {
            data: err.push(&replay.stderr),
        },
    ]);
    if let Some(exit) = &exit {
        queued.push_back(StreamEvent::Stdout { data: out.finish() });
        queued.push_back(StreamEvent::Stderr { data: err.finish() });
        queued.push_back(exit_event(exit));
    }
    queued.retain(|ev| !is_empty_output(ev));
    let state = S {
        queued,
        live: if exit.is_some() { None } else { live },
        out,
        err,
        closing,
        _permit: permit,
    };
    // Dropping the stream (client gone) only drops the subscription: the process runs on.
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(ev) = s.queued.pop_front() {
                return Some((sse(&ev), s));
            }
            let live = s.live.as_mut()?;
            let next = tokio::select! {
                next = live.recv() => next,
                _ = s.closing.wait_for(|c| *c) => return None,
            };
            match next {
                Ok(RunEvent::Stdout(b)) => s.queued.push_back(StreamEvent::Stdout {
                    data: s.out.push(&b),
                }),
                Ok(RunEvent::Stderr(b)) => s.queued.push_back(StreamEvent::Stderr {
                    data: s.err.push(&b),
                }),
                Ok(RunEvent::Exit(exit)) => {
                    s.live = None;
                    s.queued.push_back(StreamEvent::Stdout {
                        data: s.out.finish(),
                    });
                    s.queued.push_back(StreamEvent::Stderr {
                        data: s.err.finish(),
                    });
                    s.queued.push_back(exit_event(&exit));
                }
                // Fell behind: those chunks are in the process's buffer, not in this stream.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                // The process is gone with its sandbox.
                Err(broadcast::error::RecvError::Closed) => s.live = None,
            }
            s.queued.retain(|ev| !is_empty_output(ev));
        }
    })
}

fn is_empty_output(ev: &StreamEvent) -> bool {
    matches!(ev, StreamEvent::Stdout { data } | StreamEvent::Stderr { data } if data.is_empty())
}

#[utoipa::path(
    get,
    path = "/sandbox/{id}/processes",
    tag = "processes",
    operation_id = "list_processes",
    summary = "List the sandbox's background processes",
    description = "Running background processes and the most recently ended ones (at most 32 ended are kept), oldest first.",
    params(("id" = String, Path, description = "The sandbox's `sandbox_id`.")),
    responses(
        (status = 200, description = "The processes.", body = cerver_types::ProcessList),
        (status = 404, description = "No such sandbox (or it has ended).", body = cerver_types::ErrorBody),
    )
)]
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ProcessList>, ApiError> {
    let processes = st.control.processes(&caller.user.id, &id)?;
    Ok(Json(ProcessList {
        processes: processes.iter().map(info_of).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/sandbox/{id}/processes/{pid}",
    tag = "processes",
    operation_id = "get_process",
    summary = "A background process with its recent output",
    description = "`output` and `error` hold the last 1 MiB of the process's standard output and error (`truncated` says older output was dropped); when it has ended, `error` ends with why it was stopped, if it was.",
    params(
        ("id" = String, Path, description = "The sandbox's `sandbox_id`."),
        ("pid" = String, Path, description = "The process's pid (a positive integer)."),
    ),
    responses(
        (status = 200, description = "The process and its recent output.", body = cerver_types::ProcessDetail),
        (status = 400, description = "The pid is not a positive integer.", body = cerver_types::ErrorBody),
        (status = 404, description = "No such sandbox, or no such process in it.", body = cerver_types::ErrorBody),
    )
)]
pub async fn get(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, pid)): Path<(String, String)>,
) -> Result<Json<ProcessDetail>, ApiError> {
    let pid = parse_pid(&pid)?;
    let p = st.control.process(&caller.user.id, &id, pid)?;
    let info = info_of(&p);
    let out = p.process.output();
    let mut error = String::from_utf8_lossy(&out.stderr).into_owned();
    if let Some(msg) = p.process.snapshot().exit.and_then(|e| e.error) {
        if !error.is_empty() && !error.ends_with('\n') {
            error.push('\n');
        }
        error.push_str(&msg);
    }
    Ok(Json(ProcessDetail {
        pid: info.pid,
        status: info.status,
        code: info.code,
        started_at: info.started_at,
        exit_code: info.exit_code,
        ended_at: info.ended_at,
        output: String::from_utf8_lossy(&out.stdout).into_owned(),
        error,
        truncated: out.truncated,
    }))
}

#[utoipa::path(
    get,
    path = "/sandbox/{id}/processes/{pid}/stream",
    tag = "processes",
    operation_id = "stream_process",
    summary = "Follow a background process as Server-Sent Events",
    description = "A `process` event, the buffered output (its last 1 MiB: `stdout`, then `stderr`), then live `stdout`/`stderr` events until it ends with `exit` (at once for an ended process). Closing the connection leaves the process running. A client that falls more than 16 chunks behind misses chunks (they stay in the buffer). At most 16 clients follow a sandbox's processes at once.",
    params(
        ("id" = String, Path, description = "The sandbox's `sandbox_id`."),
        ("pid" = String, Path, description = "The process's pid (a positive integer)."),
    ),
    responses(
        (status = 200, description = "A `text/event-stream` whose every `data:` line is a JSON `StreamEvent`.", content_type = "text/event-stream", body = cerver_types::StreamEvent),
        (status = 400, description = "The pid is not a positive integer.", body = cerver_types::ErrorBody),
        (status = 404, description = "No such sandbox, or no such process in it.", body = cerver_types::ErrorBody),
        (status = 429, description = "16 clients already follow this sandbox's processes.", body = cerver_types::ErrorBody),
    )
)]
pub async fn stream(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, pid)): Path<(String, String)>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let pid = parse_pid(&pid)?;
    let (p, permit) = st.control.follow_process(&caller.user.id, &id, pid)?;
    let follow = p.process.follow();
    let closing = st.control.closing();
    let events = events(
        pid as u32,
        follow.output,
        follow.exit,
        follow.live,
        closing,
        Some(permit),
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[utoipa::path(
    delete,
    path = "/sandbox/{id}/processes/{pid}",
    tag = "processes",
    operation_id = "kill_process",
    summary = "Kill a background process and everything it started",
    description = "SIGKILLs the process and all its descendants, and answers once they are gone. Idempotent: a process that has already ended answers 200 too (and stays listed until it is dropped from the ended ones).",
    params(
        ("id" = String, Path, description = "The sandbox's `sandbox_id`."),
        ("pid" = String, Path, description = "The process's pid (a positive integer)."),
    ),
    responses(
        (status = 200, description = "The process is gone.", body = cerver_types::KillProcessResponse),
        (status = 400, description = "The pid is not a positive integer.", body = cerver_types::ErrorBody),
        (status = 404, description = "No such sandbox, or no such process in it.", body = cerver_types::ErrorBody),
    )
)]
pub async fn kill(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, pid)): Path<(String, String)>,
) -> Result<Json<KillProcessResponse>, ApiError> {
    let pid = parse_pid(&pid)?;
    st.control.kill_process(&caller.user.id, &id, pid).await?;
    Ok(Json(KillProcessResponse {
        success: true,
        pid: pid as u32,
    }))
}

#[cfg(test)]
mod tests {
    use super::parse_pid;

    #[test]
    fn pids_are_positive_integers() {
        assert_eq!(parse_pid("1").unwrap(), 1);
        assert_eq!(parse_pid("2147483647").unwrap(), i32::MAX);
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            " 1",
            "1.0",
            "abc",
            "2147483648",
            "99999999999999999999",
            "0x10",
        ] {
            assert!(parse_pid(bad).is_err(), "{bad:?}");
        }
    }
}
