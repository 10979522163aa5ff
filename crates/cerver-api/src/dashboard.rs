//! `/dashboard`: the web dashboard, plain HTML/CSS/JS embedded in the binary (no build step).
//! Without a session the page shows the sign-in and sign-up forms; with one, the page carries
//! the session's CSRF token (a `<meta>` tag) and the script fills it from the `/account*` API.
//!
//! The script puts server data on the page as text only, and a strict Content-Security-Policy
//! (scripts and styles from this origin only, no inline script) backs that up.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;
use crate::session::session_cookie;

const INDEX: &str = include_str!("../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../assets/dashboard/app.js");
const APP_CSS: &str = include_str!("../assets/dashboard/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn respond(content_type: &'static str, cache: &'static str, body: String) -> Response {
    let headers: [(HeaderName, HeaderValue); 5] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    (headers, body).into_response()
}

/// `GET /dashboard`.
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "dashboard",
    operation_id = "dashboard",
    summary = "The web dashboard (HTML)",
    description = "Sign-in and sign-up forms without a session; the account, its keys, usage \
        and sandboxes with one.",
    responses(
        (status = 200, description = "The dashboard page.", content_type = "text/html", body = String),
    )
)]
pub async fn page(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let session = session_cookie(&headers);
    // Only a valid session gets a token; the token is hex, so it needs no escaping.
    let csrf = match st.accounts.session_user(&session).await? {
        Some(_) => cerver_control::accounts::csrf_token(&session),
        None => String::new(),
    };
    let html = INDEX.replace("{{CSRF_TOKEN}}", &csrf);
    Ok(respond("text/html; charset=utf-8", "no-store", html))
}

/// `GET /dashboard/{asset}`: the page's script and style sheet.
#[utoipa::path(
    get,
    path = "/dashboard/{asset}",
    tag = "dashboard",
    operation_id = "dashboard_asset",
    summary = "The dashboard's script and style sheet",
    params(("asset" = String, Path, description = "`app.js` or `app.css`.")),
    responses(
        (status = 200, description = "The asset.", content_type = "text/javascript", body = String),
        (status = 404, description = "No such asset.", body = cerver_types::ErrorBody),
    )
)]
pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let cache = "no-cache";
    match name.as_str() {
        "app.js" => Ok(respond(
            "text/javascript; charset=utf-8",
            cache,
            APP_JS.into(),
        )),
        "app.css" => Ok(respond("text/css; charset=utf-8", cache, APP_CSS.into())),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such asset",
        )),
    }
}
