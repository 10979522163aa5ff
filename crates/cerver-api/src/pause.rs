//! `POST /sandbox/:id/pause` and `/resume`; adapters over [`cerver_control::ops::sandboxes`].

use axum::extract::{Path, State};
use axum::{Extension, Json};
use cerver_control::{Caller, ops};
use cerver_types::SandboxInfo;

use crate::AppState;
use crate::error::ApiError;

#[utoipa::path(
    post,
    path = "/sandbox/{id}/pause",
    tag = "sandboxes",
    operation_id = "pause_sandbox",
    summary = "Pause a sandbox",
    description = "Every process of the sandbox ends and its memory and network are released; \
        its files, env, metadata and exposed ports stay, and its lifetime is frozen \
        (`time_remaining_ms` does not fall while paused). A paused sandbox does not count \
        against the plan's sandbox limit; a user may keep 10× that limit paused, for the \
        server's paused retention (7 days by default), after which it is deleted. A run, \
        stream, file, context, install or timeout request resumes it first; other sandbox \
        requests answer 409 until it is resumed. Pausing a paused sandbox answers 200 with it \
        as it is.",
    params(("id" = String, Path, description = "The sandbox's `sandbox_id`.")),
    responses(
        (status = 200, description = "The sandbox, with `status` `paused`.", body = cerver_types::SandboxInfo),
        (status = 404, description = "No such sandbox (or it has ended).", body = cerver_types::ErrorBody),
        (status = 409, description = "The sandbox is being upgraded.", body = cerver_types::ErrorBody),
        (status = 429, description = "The user keeps the most paused sandboxes their plan allows.", body = cerver_types::ErrorBody),
        (status = 500, description = "Internal server error.", body = cerver_types::ErrorBody),
    )
)]
pub async fn pause(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    Ok(Json(
        ops::sandboxes::pause(&st.control, &caller, &id).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/sandbox/{id}/resume",
    tag = "sandboxes",
    operation_id = "resume_sandbox",
    summary = "Resume a paused sandbox",
    description = "Rebuilds the sandbox on its files (same id, env, metadata, exposed ports; \
        no process from before the pause); its lifetime counts down again from what was left. \
        Resuming a ready sandbox answers 200 with it as it is.",
    params(("id" = String, Path, description = "The sandbox's `sandbox_id`.")),
    responses(
        (status = 200, description = "The sandbox, with `status` `ready`.", body = cerver_types::SandboxInfo),
        (status = 404, description = "No such sandbox (or it has ended).", body = cerver_types::ErrorBody),
        (status = 429, description = "The user runs the most sandboxes their plan allows at once, or the server its maximum.", body = cerver_types::ErrorBody),
        (status = 503, description = "The sandbox could not be rebuilt right now (it stays paused); retry shortly.", body = cerver_types::ErrorBody),
        (status = 500, description = "Internal server error.", body = cerver_types::ErrorBody),
    )
)]
pub async fn resume(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    Ok(Json(
        ops::sandboxes::resume(&st.control, &caller, &id).await?,
    ))
}
