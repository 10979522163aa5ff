//! Contexts (persistent interpreters): create, list, delete, restart; adapters over
//! [`cerver_control::ops::contexts`]. Runs in a context are `/run` and `/run/stream` with
//! `"context_id"`.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use cerver_control::Caller;
use cerver_control::ops::{self, CreateContext};
use cerver_types::{ContextInfo, ContextList, CreateContextRequest, DeleteContextResponse};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::JsonBody;

#[utoipa::path(
    post,
    path = "/sandbox/{id}/contexts",
    tag = "contexts",
    operation_id = "create_context",
    summary = "Start a persistent Python interpreter (a context)",
    description = "Starts a Python interpreter in the sandbox, with the same isolation, user and limits as any run. Runs with `\"context_id\"` execute in it one after the other: variables, imports and open files persist between them. A run's `timeout` first raises `KeyboardInterrupt` in it, then (after 2 s) kills the interpreter, which `restart` replaces. At most 8 per sandbox; they end with the sandbox.",
    params(("id" = String, Path, description = "The sandbox's `sandbox_id`.")),
    request_body(content = CreateContextRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The context, running.", body = ContextInfo),
        (status = 400, description = "Malformed JSON, or invalid cwd or envs.", body = cerver_types::ErrorBody),
        (status = 404, description = "No such sandbox (or it has ended).", body = cerver_types::ErrorBody),
        (status = 422, description = "A field has the wrong type.", body = cerver_types::ErrorBody),
        (status = 429, description = "The sandbox already has 8 contexts, or is at its process limit.", body = cerver_types::ErrorBody),
        (status = 503, description = "The interpreter could not be started (`cannot_start`); retry later.", body = cerver_types::ErrorBody),
    )
)]
pub async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<CreateContextRequest>,
) -> Result<Json<ContextInfo>, ApiError> {
    let req = CreateContext {
        cwd: req.cwd,
        envs: req.envs.unwrap_or_default(),
    };
    Ok(Json(
        ops::contexts::create(&st.control, &caller, &id, req).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/sandbox/{id}/contexts",
    tag = "contexts",
    operation_id = "list_contexts",
    summary = "List a sandbox's contexts",
    params(("id" = String, Path, description = "The sandbox's `sandbox_id`.")),
    responses(
        (status = 200, description = "Its contexts, oldest first.", body = ContextList),
        (status = 404, description = "No such sandbox (or it has ended).", body = cerver_types::ErrorBody),
    )
)]
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ContextList>, ApiError> {
    Ok(Json(ops::contexts::list(&st.control, &caller, &id).await?))
}

#[utoipa::path(
    delete,
    path = "/sandbox/{id}/contexts/{context_id}",
    tag = "contexts",
    operation_id = "delete_context",
    summary = "End a context's interpreter and everything it started",
    params(
        ("id" = String, Path, description = "The sandbox's `sandbox_id`."),
        ("context_id" = String, Path, description = "The context's `context_id`."),
    ),
    responses(
        (status = 200, description = "The context is gone.", body = DeleteContextResponse),
        (status = 404, description = "No such sandbox, or no such context in it.", body = cerver_types::ErrorBody),
    )
)]
pub async fn delete(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, context_id)): Path<(String, String)>,
) -> Result<Json<DeleteContextResponse>, ApiError> {
    Ok(Json(
        ops::contexts::delete(&st.control, &caller, &id, &context_id).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/sandbox/{id}/contexts/{context_id}/restart",
    tag = "contexts",
    operation_id = "restart_context",
    summary = "Replace a context's interpreter with a fresh one",
    description = "Kills the interpreter (if it still runs) and starts a new one with the same `context_id`, `cwd` and `envs`; its state is lost.",
    params(
        ("id" = String, Path, description = "The sandbox's `sandbox_id`."),
        ("context_id" = String, Path, description = "The context's `context_id`."),
    ),
    responses(
        (status = 200, description = "The context, running again.", body = ContextInfo),
        (status = 404, description = "No such sandbox, or no such context in it.", body = cerver_types::ErrorBody),
        (status = 429, description = "The sandbox is at its process limit.", body = cerver_types::ErrorBody),
        (status = 503, description = "The interpreter could not be started (`cannot_start`); retry later.", body = cerver_types::ErrorBody),
    )
)]
pub async fn restart(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, context_id)): Path<(String, String)>,
) -> Result<Json<ContextInfo>, ApiError> {
    Ok(Json(
        ops::contexts::restart(&st.control, &caller, &id, &context_id).await?,
    ))
}
