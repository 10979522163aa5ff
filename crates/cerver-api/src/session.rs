//! Dashboard sessions at the HTTP edge: the `cerver_session` cookie, the session middleware
//! in front of `/account*` and `POST /auth/logout`, and its CSRF rule.
//!
//! CSRF: a request that can change something (any method but GET/HEAD/OPTIONS) made with the
//! session cookie must carry `X-CSRF-Token` equal to the session's token, and must not come
//! from a foreign `Origin`; otherwise it is refused with 403 before any handler runs. The
//! cookie is `SameSite=Lax` as well, so browsers do not send it on cross-site POSTs at all;
//! the token covers older browsers and same-site attackers (another port on the same host).
//! API-key requests never pass through here.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::auth::SESSION_COOKIE;
use crate::error::ApiError;

/// The session secret of a session-authenticated request (for its CSRF token and logout); the
/// user is the request's [`cerver_control::Caller`].
#[derive(Clone)]
pub struct SignedIn {
    pub session: String,
}

/// The value of the `cerver_session` cookie ("" when there is none).
pub fn session_cookie(headers: &HeaderMap) -> String {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (name, value) = c.trim().split_once('=')?;
            (name == SESSION_COOKIE).then(|| value.to_string())
        })
        .unwrap_or_default()
}

/// The `Set-Cookie` value that opens a session (`Secure` when the public URL is https).
pub fn set_cookie(public_url: &str, session: &str, max_age_s: i64) -> String {
    let secure = if public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{secure}"
    )
}

fn forbidden(message: &str) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response()
}

/// Whether `Origin` (when sent) is this server: its public URL's origin or the origin the
/// request was addressed to (`Host`).
fn origin_allowed(public_url: &str, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let public = public_url.trim_end_matches('/');
    let public_origin = match public.find("://") {
        Some(i) => match public[i + 3..].find('/') {
            Some(j) => &public[..i + 3 + j],
            None => public,
        },
        None => public,
    };
    if origin.eq_ignore_ascii_case(public_origin) {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    !host.is_empty()
        && ["http://", "https://"]
            .iter()
            .any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}{host}")))
}

/// Requires a valid session cookie (401) and, on state-changing methods, the session's CSRF
/// token and no foreign `Origin` (403); hands [`SignedIn`] and the session's
/// [`cerver_control::Caller`] to the handler.
pub async fn require_session(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let session = session_cookie(req.headers());
    let user = match st.accounts.session_user(&session).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "no valid session: sign in at /dashboard",
            )
            .into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        if !origin_allowed(st.accounts.public_url(), req.headers()) {
            return forbidden("cross-origin request refused");
        }
        let presented = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !st.accounts.csrf_matches(&session, presented) {
            return forbidden("missing or wrong X-CSRF-Token (see `csrf_token` in GET /account)");
        }
    }
    req.extensions_mut().insert(st.accounts.caller_of(user));
    req.extensions_mut().insert(SignedIn { session });
    next.run(req).await
}

/// `POST /auth/logout`: ends the session and clears the cookie.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "accounts",
    operation_id = "logout",
    summary = "End the dashboard session",
    description = "Session-authenticated; needs `X-CSRF-Token`.",
    responses(
        (status = 200, description = "Signed out; the cookie is cleared.", body = cerver_types::MessageResponse),
        (status = 401, description = "No valid session cookie.", body = cerver_types::ErrorBody),
        (status = 403, description = "Missing or wrong CSRF token, or a foreign origin.", body = cerver_types::ErrorBody),
    )
)]
pub async fn logout(
    State(st): State<AppState>,
    axum::Extension(signed_in): axum::Extension<SignedIn>,
) -> Result<Response, ApiError> {
    st.accounts.logout(&signed_in.session).await?;
    let mut response = Json(cerver_types::MessageResponse {
        message: "Signed out.".into(),
    })
    .into_response();
    let cookie = set_cookie(st.accounts.public_url(), "", 0);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn reads_the_session_cookie_among_others() {
        let h = headers(&[("cookie", "a=1; cerver_session=abc; b=2")]);
        assert_eq!(session_cookie(&h), "abc");
        let h = headers(&[("cookie", "xcerver_session=no")]);
        assert_eq!(session_cookie(&h), "");
    }

    #[test]
    fn origins_of_this_server_only() {
        let public = "https://cerver.example.com/";
        assert!(origin_allowed(public, &headers(&[])));
        assert!(origin_allowed(
            public,
            &headers(&[("origin", "https://cerver.example.com")])
        ));
        assert!(origin_allowed(
            public,
            &headers(&[
                ("origin", "http://127.0.0.1:8080"),
                ("host", "127.0.0.1:8080")
            ])
        ));
        assert!(!origin_allowed(
            public,
            &headers(&[
                ("origin", "https://evil.example"),
                ("host", "127.0.0.1:8080")
            ])
        ));
        assert!(!origin_allowed(public, &headers(&[("origin", "null")])));
    }

    #[test]
    fn the_cookie_is_secure_behind_https() {
        assert!(set_cookie("https://x.io", "s", 1).ends_with("; Secure"));
        let plain = set_cookie("http://127.0.0.1:1", "s", 1);
        assert!(plain.contains("HttpOnly; SameSite=Lax") && !plain.contains("Secure"));
    }
}
