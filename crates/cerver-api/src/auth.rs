//! Authentication: the API-key middleware on every sandbox route, and the account routes
//! (sign-up by email, verification, login links for the dashboard session).

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use cerver_control::accounts::SESSION_TTL_MS;
use serde::Deserialize;

use crate::AppState;
use crate::error::{ApiError, rate_limit_headers};
use crate::extract::{JsonBody, Query};

/// Name of the dashboard session cookie.
pub const SESSION_COOKIE: &str = "cerver_session";

/// Requires `Authorization: Bearer <key>` (or `X-API-Key: <key>`), charges one request to the
/// key's daily budget, hands the [`cerver_control::Caller`] to the handler and reports the
/// budget in `X-RateLimit-*` headers.
pub async fn require_key(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let key = bearer(req.headers());
    let Some(key) = key else {
        return ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing API key: send `Authorization: Bearer <key>`",
        )
        .into_response();
    };
    // A request another node forwarded was counted there.
    let forwarded = req
        .extensions()
        .get::<crate::cluster::Forwarded>()
        .is_some();
    let (caller, usage) = match st.accounts.authenticate_as(&key, !forwarded).await {
        Ok(ok) => ok,
        Err(e) => return ApiError::from(e).into_response(),
    };
    crate::request_id::record_user(&caller.user.id);
    req.extensions_mut().insert(caller);
    let mut response = next.run(req).await;
    for (name, value) in rate_limit_headers(&usage) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Per-client-address limit on the `/auth/*` routes (no key needed there): the address is the
/// socket's peer (proxies' `X-Forwarded-For` is not trusted), 429 + `Retry-After` when over.
pub async fn limit_client(State(st): State<AppState>, req: Request, next: Next) -> Response {
    use cerver_control::client_limits::RouteClass;
    let class = if req.method() == axum::http::Method::POST {
        RouteClass::Mail
    } else {
        RouteClass::Lookup
    };
    // Without connection info (a router served without it) everyone shares one bucket.
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    if let Err(e) = st.accounts.check_client(client, class) {
        return ApiError::from(e).into_response();
    }
    next.run(req).await
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v);
        return Some(token.trim().to_string());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The token from the emailed link.
    #[param(example = "3kTq9...")]
    #[serde(default)]
    pub token: String,
}

/// `POST /auth/signup {"email"}`: mails a verification link.
#[utoipa::path(
    post,
    path = "/auth/signup",
    tag = "accounts",
    operation_id = "signup",
    summary = "Sign up with an email address (sends a verification link)",
    request_body(content = cerver_types::EmailRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The link is on its way (same answer for known addresses).", body = cerver_types::SignupResponse),
        (status = 400, description = "Malformed JSON or email address.", body = cerver_types::ErrorBody),
        (status = 422, description = "`email` is missing or not a string.", body = cerver_types::ErrorBody),
        (status = 429, description = "Too many mails to this address, or requests from this client address (`Retry-After`).", body = cerver_types::ErrorBody),
        (status = 503, description = "The email could not be sent.", body = cerver_types::ErrorBody),
    )
)]
pub async fn signup(
    State(st): State<AppState>,
    JsonBody(body): JsonBody<cerver_types::EmailRequest>,
) -> Result<Json<cerver_types::SignupResponse>, ApiError> {
    st.accounts.signup(&body.email).await?;
    Ok(Json(cerver_types::SignupResponse {
        message: "Verification email sent!".into(),
        email: body.email.trim().to_lowercase(),
        next: "Click the link in the email to get your API key.".into(),
    }))
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>{t}</h1>{body}</body></html>",
        t = html_escape(title)
    ))
}

/// `GET /auth/verify-signup?token=`: mints the user's key (JSON when asked for, else a page).
#[utoipa::path(
    get,
    path = "/auth/verify-signup",
    tag = "accounts",
    operation_id = "verify_signup",
    summary = "Verify an email address and get the API key",
    params(TokenQuery),
    responses(
        (status = 200, description = "The key: JSON with `Accept: application/json`, otherwise an HTML page.", body = cerver_types::VerifySignupResponse),
        (status = 400, description = "The link is invalid, used or expired.", body = cerver_types::ErrorBody),
        (status = 429, description = "Too many requests from this client address (`Retry-After`).", body = cerver_types::ErrorBody),
    )
)]
pub async fn verify_signup(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    let (key, user) = st.accounts.verify_signup(&q.token).await?;
    if wants_json(&headers) {
        return Ok(Json(cerver_types::VerifySignupResponse {
            api_key: key,
            plan: user.plan.as_str().into(),
            email: user.email,
            message: "Email verified. Keep this key secret: it is shown only once.".into(),
        })
        .into_response());
    }
    Ok(page(
        "Your Cerver API key",
        &format!(
            "<p>Email verified for {email} (plan: {plan}).</p><p>Your API key, shown only once:</p>\
             <pre style=\"font-size:1.2em\">{key}</pre><p>Use it as <code>Authorization: Bearer &lt;key&gt;</code>.</p>",
            email = html_escape(&user.email),
            plan = user.plan.as_str(),
            key = html_escape(&key)
        ),
    )
    .into_response())
}

/// `POST /auth/login {"email"}`: mails a login link (same answer for unknown addresses).
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "accounts",
    operation_id = "login",
    summary = "Request a magic link for the dashboard",
    request_body(content = cerver_types::EmailRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Sent if the address has an account (same answer otherwise).", body = cerver_types::MessageResponse),
        (status = 400, description = "Malformed JSON or email address.", body = cerver_types::ErrorBody),
        (status = 422, description = "`email` is missing or not a string.", body = cerver_types::ErrorBody),
        (status = 429, description = "Too many mails to this address, or requests from this client address (`Retry-After`).", body = cerver_types::ErrorBody),
        (status = 503, description = "The email could not be sent.", body = cerver_types::ErrorBody),
    )
)]
pub async fn login(
    State(st): State<AppState>,
    JsonBody(body): JsonBody<cerver_types::EmailRequest>,
) -> Result<Json<cerver_types::MessageResponse>, ApiError> {
    st.accounts.login(&body.email).await?;
    Ok(Json(cerver_types::MessageResponse {
        message: "If this address has an account, a login link is on its way.".into(),
    }))
}

/// `GET /auth/login/verify?token=`: opens a dashboard session (HttpOnly, SameSite cookie).
#[utoipa::path(
    get,
    path = "/auth/login/verify",
    tag = "accounts",
    operation_id = "verify_login",
    summary = "Open a dashboard session from a magic link",
    params(TokenQuery),
    responses(
        (status = 200, description = "Signed in (with `Accept: application/json`): sets the `cerver_session` cookie (HttpOnly, SameSite=Lax, Secure behind https).", body = cerver_types::SessionInfo),
        (status = 303, description = "Signed in: sets the cookie and redirects to `/dashboard`."),
        (status = 400, description = "The link is invalid, used or expired.", body = cerver_types::ErrorBody),
        (status = 429, description = "Too many requests from this client address (`Retry-After`).", body = cerver_types::ErrorBody),
    )
)]
pub async fn verify_login(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    let (session, user) = st.accounts.verify_login(&q.token).await?;
    let cookie =
        crate::session::set_cookie(st.accounts.public_url(), &session, SESSION_TTL_MS / 1000);
    let mut response = if wants_json(&headers) {
        Json(cerver_types::SessionInfo {
            email: user.email.clone(),
            plan: user.plan.as_str().into(),
        })
        .into_response()
    } else {
        axum::response::Redirect::to("/dashboard").into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// `GET /auth/session`: who the session cookie belongs to (401 without a valid session).
#[utoipa::path(
    get,
    path = "/auth/session",
    tag = "accounts",
    operation_id = "session",
    summary = "The dashboard session's user",
    responses(
        (status = 200, description = "The signed-in user.", body = cerver_types::SessionInfo),
        (status = 401, description = "No valid session cookie.", body = cerver_types::ErrorBody),
        (status = 429, description = "Too many requests from this client address (`Retry-After`).", body = cerver_types::ErrorBody),
    )
)]
pub async fn session(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<cerver_types::SessionInfo>, ApiError> {
    let token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| {
            c.trim()
                .strip_prefix(&format!("{SESSION_COOKIE}="))
                .map(str::to_string)
        })
        .next()
        .unwrap_or_default();
    match st.accounts.session_user(&token).await? {
        Some(user) => Ok(Json(cerver_types::SessionInfo {
            email: user.email,
            plan: user.plan.as_str().into(),
        })),
        None => Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no valid session",
        )),
    }
}
