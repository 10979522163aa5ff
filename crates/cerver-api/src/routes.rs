//! Every route of the API.

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cerver_types::Health;

use crate::error::ApiError;
use crate::{
    AppState, account, auth, contexts, dashboard, files, mcp, processes, runs, sandboxes, session,
};

/// Largest request body: a file write of `max_file_bytes` (10 MiB) as JSON, with room for
/// escaping.
const MAX_BODY: usize = 24 << 20;

pub fn router(state: AppState) -> Router {
    crate::metrics::handle();
    Router::new()
        .route("/health", get(health))
        .route("/llms.txt", get(llms_txt))
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .route("/metrics", get(crate::metrics::scrape))
        .merge(auth_routes(state.clone()))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/{asset}", get(dashboard::asset))
        .merge(session_routes(state.clone()))
        .merge(sandbox_routes(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Per route (after routing, so the route template is known): metrics, then the
        // request id and its span around everything else.
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(axum::middleware::from_fn(crate::request_id::layer))
        // Outermost: a sandbox host name never reaches the API's routes (nor its key check).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::proxy::intercept,
        ))
        // Before everything: a node-to-node request's cluster secret is checked and removed.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::cluster::admit,
        ))
        .with_state(state)
}

/// The dashboard's routes: a session cookie, and a CSRF token on every change.
fn session_routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/auth/logout", post(session::logout))
        .route("/account", get(account::account))
        .route(
            "/account/keys",
            get(account::list_keys).post(account::create_key),
        )
        .route("/account/keys/{key_id}", delete(account::revoke_key))
        .route("/account/sandboxes", get(account::sandboxes))
        .route("/account/sandboxes/{id}", delete(account::kill_sandbox))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            session::require_session,
        ))
}

/// The routes anyone can call without a key, limited per client address.
fn auth_routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/auth/signup", post(auth::signup))
        .route("/auth/verify-signup", get(auth::verify_signup))
        .route("/auth/login", post(auth::login))
        .route("/auth/login/verify", get(auth::verify_login))
        .route("/auth/session", get(auth::session))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            auth::limit_client,
        ))
}

/// The routes that need an API key.
fn sandbox_routes(state: AppState) -> Router<AppState> {
    let mcp = mcp::service(state.clone(), MAX_BODY);
    Router::new()
        .route("/sandbox", post(sandboxes::create))
        .route("/sandboxes", get(sandboxes::list))
        .route(
            "/sandbox/{id}",
            get(sandboxes::info).delete(sandboxes::delete),
        )
        .route("/sandbox/{id}/timeout", post(sandboxes::set_timeout))
        .route("/sandbox/{id}/pause", post(crate::pause::pause))
        .route("/sandbox/{id}/resume", post(crate::pause::resume))
        .route("/sandbox/{id}/run", post(runs::run))
        .route("/sandbox/{id}/run/stream", post(runs::run_stream))
        .route(
            "/sandbox/{id}/contexts",
            get(contexts::list).post(contexts::create),
        )
        .route(
            "/sandbox/{id}/contexts/{context_id}",
            delete(contexts::delete),
        )
        .route(
            "/sandbox/{id}/contexts/{context_id}/restart",
            post(contexts::restart),
        )
        .route("/sandbox/{id}/processes", get(processes::list))
        .route(
            "/sandbox/{id}/processes/{pid}",
            get(processes::get).delete(processes::kill),
        )
        .route(
            "/sandbox/{id}/processes/{pid}/stream",
            get(processes::stream),
        )
        .route("/sandbox/{id}/files", get(files::get).post(files::write))
        .route("/sandbox/{id}/install", post(sandboxes::install))
        .route("/sandbox/{id}/host", get(sandboxes::host))
        // Stateless Streamable HTTP: POST only; GET and DELETE answer 405 like any other
        // method a route does not have.
        .route(
            "/mcp",
            post(move |req: Request| mcp::handle(mcp.clone(), req)),
        )
        // Inside the key check: the request is counted where it arrived, then forwarded.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::cluster::route,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            auth::require_key,
        ))
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// The machine-readable quick reference of this server's API.
async fn llms_txt() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        include_str!("llms.txt"),
    )
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}
