//! Running code: synchronously (`/run`) or as Server-Sent Events (`/run/stream`); adapters
//! over [`cerver_control::ops::runs`].

use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Json};
use cerver_control::Caller;
use cerver_control::ops::{self, RunRequest};
use cerver_types::RunResult;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::JsonBody;

/// The wire request as the operation's: a timeout that is not a number the operation can
/// check (it cannot happen with JSON numbers) becomes NaN, which it refuses.
fn request(req: cerver_types::RunRequest) -> RunRequest {
    RunRequest {
        code: req.code,
        envs: req.envs.unwrap_or_default(),
        timeout_s: req.timeout.map(|n| n.as_f64().unwrap_or(f64::NAN)),
        background: req.background == Some(true),
        context_id: req.context_id,
    }
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
    JsonBody(req): JsonBody<cerver_types::RunRequest>,
) -> Result<Json<RunResult>, ApiError> {
    Ok(Json(
        ops::runs::run(&st.control, &caller, &id, request(req)).await?,
    ))
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
    JsonBody(req): JsonBody<cerver_types::RunRequest>,
) -> Result<Response, ApiError> {
    let events = ops::runs::run_stream(&st.control, &caller, &id, request(req)).await?;
    Ok(crate::sse::response(events))
}
