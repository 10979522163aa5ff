//! Background processes: list, inspect, follow and kill (`/sandbox/{id}/processes...`);
//! adapters over [`cerver_control::ops::processes`]. They are started by `/run` and
//! `/run/stream` with `"background": true`.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Json};
use cerver_control::{Caller, ops};
use cerver_types::{KillProcessResponse, ProcessDetail, ProcessList};

use crate::AppState;
use crate::error::ApiError;

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
    Ok(Json(ops::processes::list(&st.control, &caller, &id)?))
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
    Ok(Json(ops::processes::get(&st.control, &caller, &id, &pid)?))
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
) -> Result<Response, ApiError> {
    let events = ops::processes::follow(&st.control, &caller, &id, &pid)?;
    Ok(crate::sse::response(events))
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
    Ok(Json(
        ops::processes::kill(&st.control, &caller, &id, &pid).await?,
    ))
}
