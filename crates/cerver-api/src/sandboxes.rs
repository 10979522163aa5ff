//! Sandbox lifecycle routes; adapters over [`cerver_control::ops::sandboxes`].

use axum::extract::{Path, State};
use axum::{Extension, Json};
use cerver_control::{Caller, CreateOptions, ops};
use cerver_types::{
    CreateSandboxRequest, DeleteResponse, HostQuery, HostResponse, InstallRequest, InstallResponse,
    SandboxInfo, SandboxList, SetTimeoutRequest, SetTimeoutResponse,
};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{JsonBody, OptionalJson, Query, non_negative_int};

/// The largest `timeout_ms` a request may give (then lowered to the server's maximum): the
/// documented `format: int64`'s bound, so that the document and the server agree.
pub(crate) const MAX_TIMEOUT_MS: u64 = i64::MAX as u64;

#[utoipa::path(
    post,
    path = "/sandbox",
    tag = "sandboxes",
    operation_id = "create_sandbox",
    summary = "Create a sandbox",
    description = "Every field is optional; an empty body means all defaults.",
    request_body(content = cerver_types::CreateSandboxRequest, content_type = "application/json", description = "Optional; an empty body means all defaults."),
    responses(
        (status = 200, description = "The new sandbox, ready to run code.", body = cerver_types::SandboxInfo),
        (status = 400, description = "Malformed JSON, or an invalid engine, env, metadata or timeout_ms.", body = cerver_types::ErrorBody),
        (status = 413, description = "The request body is too large.", body = cerver_types::ErrorBody),
        (status = 422, description = "A field is missing or has the wrong type.", body = cerver_types::ErrorBody),
        (status = 429, description = "The server runs its maximum number of sandboxes.", body = cerver_types::ErrorBody),
        (status = 503, description = "No sandbox could be created right now; retry shortly.", body = cerver_types::ErrorBody),
        (status = 507, description = "`disk_full`: the server's disk budget for sandboxes is spent (its `--max-disk-mb`, or 10% of its disk must stay free); delete sandboxes or retry later.", body = cerver_types::ErrorBody),
        (status = 500, description = "Internal server error.", body = cerver_types::ErrorBody),
    )
)]
pub async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    OptionalJson(req): OptionalJson<CreateSandboxRequest>,
) -> Result<Json<SandboxInfo>, ApiError> {
    let timeout_ms = req
        .timeout_ms
        .as_ref()
        .map(|n| non_negative_int(n, "timeout_ms", MAX_TIMEOUT_MS))
        .transpose()?;
    let opts = CreateOptions {
        engine: req.engine,
        envs: req.envs.unwrap_or_default(),
        timeout_ms,
        metadata: req.metadata.unwrap_or_default(),
    };
    Ok(Json(
        ops::sandboxes::create(&st.control, &caller, opts).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/sandbox/{id}",
    tag = "sandboxes",
    operation_id = "get_sandbox",
    summary = "Get a sandbox",
    params(("id" = String, Path, description = "The sandbox's `sandbox_id`.")),
    responses(
        (status = 200, description = "The sandbox, with its current time_remaining_ms.", body = cerver_types::SandboxInfo),
        (status = 404, description = "No such sandbox (or it has ended).", body = cerver_types::ErrorBody),
    )
)]
pub async fn info(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    Ok(Json(ops::sandboxes::get(&st.control, &caller, &id)?))
}

#[utoipa::path(
    get,
    path = "/sandboxes",
    tag = "sandboxes",
    operation_id = "list_sandboxes",
    summary = "List active sandboxes",
    responses(
        (status = 200, description = "The caller's active sandboxes, oldest first.", body = cerver_types::SandboxList),
    )
)]
pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<SandboxList> {
    Json(ops::sandboxes::list(&st.control, &caller))
}

#[utoipa::path(
    delete,
    path = "/sandbox/{id}",
    tag = "sandboxes",
    operation_id = "delete_sandbox",
    summary = "Delete a sandbox",
    description = "Every process and file of the sandbox is gone when this returns.",
    params(("id" = String, Path, description = "The sandbox's `sandbox_id`.")),
    responses(
        (status = 200, description = "The sandbox is gone.", body = cerver_types::DeleteResponse),
        (status = 404, description = "No such sandbox (or it has ended).", body = cerver_types::ErrorBody),
    )
)]
pub async fn delete(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<DeleteResponse>, ApiError> {
    Ok(Json(
        ops::sandboxes::delete(&st.control, &caller, &id).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/sandbox/{id}/timeout",
    tag = "sandboxes",
    operation_id = "set_sandbox_timeout",
    summary = "Set a sandbox's remaining lifetime",
    description = "The remaining lifetime becomes `timeout_ms` from now, lowered to the server's maximum.",
    params(("id" = String, Path, description = "The sandbox's `sandbox_id`.")),
    request_body(content = cerver_types::SetTimeoutRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The lifetime now in force.", body = cerver_types::SetTimeoutResponse),
        (status = 400, description = "Malformed JSON or an invalid timeout_ms.", body = cerver_types::ErrorBody),
        (status = 404, description = "No such sandbox (or it has ended).", body = cerver_types::ErrorBody),
        (status = 413, description = "The request body is too large.", body = cerver_types::ErrorBody),
        (status = 422, description = "A field is missing or has the wrong type.", body = cerver_types::ErrorBody),
    )
)]
pub async fn set_timeout(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<SetTimeoutRequest>,
) -> Result<Json<SetTimeoutResponse>, ApiError> {
    let ms = non_negative_int(&req.timeout_ms, "timeout_ms", MAX_TIMEOUT_MS)?;
    Ok(Json(
        ops::sandboxes::set_timeout(&st.control, &caller, &id, ms).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/sandbox/{id}/install",
    tag = "sandboxes",
    operation_id = "install_packages",
    summary = "Install pip packages (containers engine)",
    params(("id" = String, Path, description = "The sandbox's `sandbox_id`.")),
    request_body(content = cerver_types::InstallRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The installer ran: `success` says whether it installed everything, `output` (on success) or `error` (on failure) carries its log (bounded). `upgraded` is true when a workers sandbox was turned into a containers one in place (same id, files kept, network attached).", body = cerver_types::InstallResponse),
        (status = 400, description = "A requirement is not a plain PEP 508 requirement (options, URLs, paths and shell syntax are refused).", body = cerver_types::ErrorBody),
        (status = 404, description = "No such sandbox.", body = cerver_types::ErrorBody),
        (status = 422, description = "A field has the wrong type.", body = cerver_types::ErrorBody),
        (status = 409, description = "Upgrading a workers sandbox failed: its workspace could not be carried over (e.g. too large, or an unreadable file).", body = cerver_types::ErrorBody),
        (status = 429, description = "Too many runs in progress in this sandbox, or it is being upgraded already.", body = cerver_types::ErrorBody),
        (status = 503, description = "This host cannot run the containers engine or has no installer.", body = cerver_types::ErrorBody),
    )
)]
pub async fn install(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<InstallRequest>,
) -> Result<Json<InstallResponse>, ApiError> {
    let (packages, package) = (req.packages.as_deref(), req.package.as_deref());
    Ok(Json(
        ops::sandboxes::install(&st.control, &caller, &id, packages, package).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/sandbox/{id}/host",
    tag = "sandboxes",
    operation_id = "get_host",
    summary = "External URL of a port (containers engine)",
    description = "Exposes the port: from now on, requests whose `Host` is the answer's `host` are \
        forwarded to that port of the sandbox (HTTP/1.1, streaming, WebSockets), without an API key. \
        When the server requires port tokens, `url` carries `?cerver_token=...`; the proxy also takes \
        it as an `X-Cerver-Token` header and keeps it in a cookie for browsers.",
    params(("id" = String, Path, description = "The sandbox's `sandbox_id`."), cerver_types::HostQuery),
    responses(
        (status = 200, description = "The port's external address: `host` is `<first 8 hex characters of the sandbox id>-<port>.<sandbox domain>`.", body = cerver_types::HostResponse),
        (status = 400, description = "Bad port (not 1-65535), or a workers sandbox (use containers).", body = cerver_types::ErrorBody),
        (status = 403, description = "The plan does not include port exposure (trial; checked first).", body = cerver_types::ErrorBody),
        (status = 404, description = "No such sandbox.", body = cerver_types::ErrorBody),
    )
)]
pub async fn host(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<HostQuery>,
) -> Result<Json<HostResponse>, ApiError> {
    let port = q.port.as_deref().unwrap_or("");
    Ok(Json(ops::sandboxes::host(&st.control, &caller, &id, port)?))
}
