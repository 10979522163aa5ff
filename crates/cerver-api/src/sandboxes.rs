//! Sandbox lifecycle routes.

use axum::Json;
use axum::extract::{Path, State};
use cerver_control::{CreateOptions, Entry, LifetimeView, unix};
use cerver_types::{
    CreateSandboxRequest, DeleteResponse, SandboxInfo, SandboxList, SetTimeoutRequest,
    SetTimeoutResponse,
};

use crate::error::ApiError;
use crate::extract::{JsonBody, OptionalJson, non_negative_int};
use crate::{AppState, LOCAL_OWNER};

pub fn info_of(e: &Entry, lifetime: LifetimeView, max_ms: u64) -> SandboxInfo {
    SandboxInfo {
        sandbox_id: e.id.clone(),
        engine: e.engine.as_str().into(),
        status: "ready".into(),
        timeout_ms: lifetime.timeout_ms,
        expires_at: lifetime.expires_at_unix,
        time_remaining_ms: lifetime.remaining_ms,
        created_at: unix(e.created_at),
        envs: e.envs.keys().cloned().collect(),
        metadata: e.metadata.clone(),
        notice: lifetime
            .capped
            .then(|| format!("timeout_ms was capped to the maximum of {max_ms} ms")),
    }
}

pub async fn create(
    State(st): State<AppState>,
    OptionalJson(req): OptionalJson<CreateSandboxRequest>,
) -> Result<Json<SandboxInfo>, ApiError> {
    let timeout_ms = req
        .timeout_ms
        .as_ref()
        .map(|n| non_negative_int(n, "timeout_ms", u64::MAX))
        .transpose()?;
    let opts = CreateOptions {
        engine: req.engine,
        envs: req.envs.unwrap_or_default(),
        timeout_ms,
        metadata: req.metadata.unwrap_or_default(),
    };
    let (entry, lifetime) = st.control.create(LOCAL_OWNER, opts).await?;
    Ok(Json(info_of(&entry, lifetime, st.control.max_timeout_ms())))
}

pub async fn info(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    let e = st.control.get(LOCAL_OWNER, &id)?;
    Ok(Json(info_of(&e, e.lifetime(), st.control.max_timeout_ms())))
}

pub async fn list(State(st): State<AppState>) -> Json<SandboxList> {
    let max = st.control.max_timeout_ms();
    let sandboxes = st
        .control
        .list(LOCAL_OWNER)
        .iter()
        .map(|e| info_of(e, e.lifetime(), max))
        .collect();
    Json(SandboxList { sandboxes })
}

pub async fn delete(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeleteResponse>, ApiError> {
    st.control.delete(LOCAL_OWNER, &id).await?;
    Ok(Json(DeleteResponse {
        success: true,
        sandbox_id: id,
    }))
}

pub async fn set_timeout(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<SetTimeoutRequest>,
) -> Result<Json<SetTimeoutResponse>, ApiError> {
    let ms = non_negative_int(&req.timeout_ms, "timeout_ms", u64::MAX)?;
    let l = st.control.set_timeout(LOCAL_OWNER, &id, ms)?;
    let max = st.control.max_timeout_ms();
    Ok(Json(SetTimeoutResponse {
        sandbox_id: id,
        timeout_ms: l.timeout_ms,
        expires_at: l.expires_at_unix,
        time_remaining_ms: l.remaining_ms,
        notice: l
            .capped
            .then(|| format!("timeout_ms was capped to the maximum of {max} ms")),
    }))
}
