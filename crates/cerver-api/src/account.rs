//! The dashboard's JSON API, behind the session middleware ([`crate::session`]): the account
//! overview, the user's API keys, and their sandboxes (the same control operations as the
//! API-key routes, acting as the session's user). Thin: each handler calls one operation of
//! [`cerver_control::Accounts`] or [`cerver_control::Control`].

use axum::extract::{Path, State};
use axum::{Extension, Json};
use cerver_control::Caller;
use cerver_types::account::{
    AccountResponse, CreateKeyRequest, CreatedKey, KeyInfo, KeyList, PlanLimitsInfo, RevokedKey,
    UsageDay, UsageInfo,
};
use cerver_types::{DeleteResponse, SandboxList};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::OptionalJson;
use crate::session::SignedIn;

fn secs(ms: i64) -> u64 {
    u64::try_from(ms / 1000).unwrap_or(0)
}

fn key_info(k: &cerver_control::accounts::ApiKey) -> KeyInfo {
    KeyInfo {
        key_id: k.id.clone(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        masked: format!("{}{}", k.prefix, "•".repeat(12)),
        created_at: secs(k.created_at),
        last_used_at: k.last_used_at.map(secs),
    }
}

#[utoipa::path(
    get,
    path = "/account",
    tag = "dashboard",
    operation_id = "account",
    summary = "The signed-in account: plan, limits, usage, CSRF token",
    description = "Session-authenticated (the `cerver_session` cookie).",
    responses(
        (status = 200, description = "The account.", body = AccountResponse),
        (status = 401, description = "No valid session cookie.", body = cerver_types::ErrorBody),
    )
)]
pub async fn account(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(signed_in): Extension<SignedIn>,
) -> Result<Json<AccountResponse>, ApiError> {
    let view = st.accounts.account(&caller.user).await?;
    let l = view.limits;
    Ok(Json(AccountResponse {
        email: view.user.email.clone(),
        plan: view.user.plan.as_str().into(),
        limits: PlanLimitsInfo {
            requests_per_day: l.requests_per_day,
            max_sandboxes: l.max_sandboxes,
            max_timeout_ms: l.max_timeout_ms,
            port_exposure: l.port_exposure,
        },
        usage: UsageInfo {
            today: view.requests_today,
            daily_limit: l.requests_per_day,
            resets_at: secs(view.resets_at_ms),
            days: view
                .history
                .iter()
                .map(|&(day, requests)| UsageDay {
                    date: secs(day * cerver_control::accounts::DAY_MS),
                    requests,
                })
                .collect(),
        },
        csrf_token: cerver_control::accounts::csrf_token(&signed_in.session),
    }))
}

#[utoipa::path(
    get,
    path = "/account/keys",
    tag = "dashboard",
    operation_id = "list_keys",
    summary = "The account's active API keys (masked)",
    description = "Session-authenticated.",
    responses(
        (status = 200, description = "Active keys, oldest first.", body = KeyList),
        (status = 401, description = "No valid session cookie.", body = cerver_types::ErrorBody),
    )
)]
pub async fn list_keys(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<KeyList>, ApiError> {
    let keys = st.accounts.keys(&caller.user).await?;
    Ok(Json(KeyList {
        keys: keys.iter().map(key_info).collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/account/keys",
    tag = "dashboard",
    operation_id = "create_key",
    summary = "Create an API key (shown once)",
    description = "Session-authenticated; needs `X-CSRF-Token`. The body is optional.",
    request_body(content = CreateKeyRequest, content_type = "application/json", description = "Optional."),
    responses(
        (status = 200, description = "The new key, `api_key`, shown this once.", body = CreatedKey),
        (status = 400, description = "Malformed JSON or an invalid name.", body = cerver_types::ErrorBody),
        (status = 401, description = "No valid session cookie.", body = cerver_types::ErrorBody),
        (status = 403, description = "Missing or wrong CSRF token, or a foreign origin.", body = cerver_types::ErrorBody),
        (status = 409, description = "The account holds the most active keys it may.", body = cerver_types::ErrorBody),
        (status = 422, description = "`name` is not a string.", body = cerver_types::ErrorBody),
    )
)]
pub async fn create_key(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    OptionalJson(req): OptionalJson<CreateKeyRequest>,
) -> Result<Json<CreatedKey>, ApiError> {
    let (api_key, record) = st
        .accounts
        .create_key(&caller.user, req.name.as_deref())
        .await?;
    Ok(Json(CreatedKey {
        api_key,
        key: key_info(&record),
    }))
}

#[utoipa::path(
    delete,
    path = "/account/keys/{key_id}",
    tag = "dashboard",
    operation_id = "revoke_key",
    summary = "Revoke one of the account's API keys",
    description = "Session-authenticated; needs `X-CSRF-Token`. The key stops working at once.",
    params(("key_id" = String, Path, description = "The key's `key_id`.")),
    responses(
        (status = 200, description = "The key is revoked.", body = RevokedKey),
        (status = 401, description = "No valid session cookie.", body = cerver_types::ErrorBody),
        (status = 403, description = "Missing or wrong CSRF token, or a foreign origin.", body = cerver_types::ErrorBody),
        (status = 404, description = "No such active key in this account.", body = cerver_types::ErrorBody),
    )
)]
pub async fn revoke_key(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key_id): Path<String>,
) -> Result<Json<RevokedKey>, ApiError> {
    st.accounts.revoke_own_key(&caller.user, &key_id).await?;
    Ok(Json(RevokedKey {
        key_id,
        revoked: true,
    }))
}

#[utoipa::path(
    get,
    path = "/account/sandboxes",
    tag = "dashboard",
    operation_id = "account_sandboxes",
    summary = "The account's active sandboxes",
    description = "Session-authenticated; the same list as `GET /sandboxes`.",
    responses(
        (status = 200, description = "Active sandboxes, oldest first.", body = SandboxList),
        (status = 401, description = "No valid session cookie.", body = cerver_types::ErrorBody),
    )
)]
pub async fn sandboxes(state: State<AppState>, caller: Extension<Caller>) -> Json<SandboxList> {
    crate::sandboxes::list(state, caller).await
}

#[utoipa::path(
    delete,
    path = "/account/sandboxes/{id}",
    tag = "dashboard",
    operation_id = "account_kill_sandbox",
    summary = "Kill one of the account's sandboxes",
    description = "Session-authenticated; needs `X-CSRF-Token`. The same operation as `DELETE /sandbox/{id}`.",
    params(("id" = String, Path, description = "The sandbox's `sandbox_id`.")),
    responses(
        (status = 200, description = "The sandbox is gone.", body = DeleteResponse),
        (status = 401, description = "No valid session cookie.", body = cerver_types::ErrorBody),
        (status = 403, description = "Missing or wrong CSRF token, or a foreign origin.", body = cerver_types::ErrorBody),
        (status = 404, description = "No such sandbox in this account.", body = cerver_types::ErrorBody),
    )
)]
pub async fn kill_sandbox(
    state: State<AppState>,
    caller: Extension<Caller>,
    id: Path<String>,
) -> Result<Json<DeleteResponse>, ApiError> {
    crate::sandboxes::delete(state, caller, id).await
}
