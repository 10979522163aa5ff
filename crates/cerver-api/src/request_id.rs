//! One id per API request: taken from `X-Request-Id` when well-formed (1 to 64 characters of
//! `[A-Za-z0-9._-]`), generated otherwise; returned in the response's `X-Request-Id` and
//! carried by a tracing span around the request, so every log line of the request names it.
//! The span also gets `user.id` (set by the API-key check) and `sandbox.id` (from the route's
//! `{id}`, when it has one) — ids only, never a key or any other secret.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Longest id accepted from a client.
pub const MAX_LEN: usize = 64;

/// Whether a client-sent id may be used as is (it ends up in logs and a response header).
pub fn is_well_formed(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The request's id: the client's when well-formed, else a fresh UUID.
pub fn pick(sent: Option<&HeaderValue>) -> String {
    sent.and_then(|v| v.to_str().ok())
        .filter(|id| is_well_formed(id))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string)
}

/// The sandbox id a path names, for routes under `/sandbox/{id}` (only when it looks like an
/// id: the path is the client's).
fn sandbox_id(route: Option<&str>, path: &str) -> Option<String> {
    route?.strip_prefix("/sandbox/{id}")?;
    let id = path.strip_prefix("/sandbox/")?.split('/').next()?;
    is_well_formed(id).then(|| id.to_string())
}

/// The middleware (a router layer, so it runs after routing and sees the route template).
pub async fn layer(mut req: Request, next: Next) -> Response {
    let id = pick(req.headers().get(&HEADER));
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str());
    let sandbox = sandbox_id(route, req.uri().path());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        route = route.unwrap_or(crate::metrics::UNMATCHED),
        user.id = tracing::field::Empty,
        sandbox.id = tracing::field::Empty,
    );
    if let Some(s) = &sandbox {
        span.record("sandbox.id", s.as_str());
    }
    let value = HeaderValue::from_str(&id).expect("ids are visible ASCII");
    req.headers_mut().insert(HEADER, value.clone());
    let mut response = next.run(req).instrument(span).await;
    response.headers_mut().insert(HEADER, value);
    response
}

/// Records the authenticated caller on the current request's span.
pub fn record_user(user_id: &str) {
    tracing::Span::current().record("user.id", user_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_ids_are_kept_others_replaced() {
        let ok = HeaderValue::from_static("abc-DEF_1.2");
        assert_eq!(pick(Some(&ok)), "abc-DEF_1.2");
        for bad in ["", "a b", "a/b", "x\u{7f}", &"a".repeat(65)] {
            let v = HeaderValue::from_str(bad).ok();
            let id = pick(v.as_ref());
            assert_ne!(id, bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        }
        assert!(is_well_formed(&"a".repeat(64)));
    }

    #[test]
    fn sandbox_ids_come_from_sandbox_routes_only() {
        let r = Some("/sandbox/{id}/run");
        assert_eq!(
            sandbox_id(r, "/sandbox/abc-1/run").as_deref(),
            Some("abc-1")
        );
        assert_eq!(sandbox_id(r, "/sandbox/a%20b/run"), None);
        assert_eq!(sandbox_id(Some("/sandboxes"), "/sandboxes"), None);
        assert_eq!(sandbox_id(None, "/sandbox/abc"), None);
    }
}
