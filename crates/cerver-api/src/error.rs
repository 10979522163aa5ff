//! The one place where errors become HTTP responses: `{"error": "...", "code": "..."}`.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cerver_control::{ControlError, FileErrorKind, Usage};
use cerver_types::ErrorBody;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra response headers (e.g. `Retry-After` on 429).
    pub headers: Vec<(HeaderName, String)>,
}

/// `X-RateLimit-*` headers describing a caller's daily budget.
pub fn rate_limit_headers(u: &Usage) -> Vec<(HeaderName, String)> {
    vec![
        (
            HeaderName::from_static("x-ratelimit-limit"),
            u.limit.to_string(),
        ),
        (
            HeaderName::from_static("x-ratelimit-remaining"),
            u.remaining.to_string(),
        ),
        (
            HeaderName::from_static("x-ratelimit-reset"),
            u.reset_unix.to_string(),
        ),
    ]
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "sandbox not found")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            code: self.code.to_string(),
        };
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        use StatusCode as S;
        match e {
            ControlError::BadRequest(m) => ApiError::bad_request("bad_request", m),
            ControlError::Invalid { code, message } => ApiError::bad_request(code, message),
            ControlError::BadPath(m) => ApiError::bad_request("invalid_path", m),
            ControlError::File { kind, message } => {
                let (status, code) = match kind {
                    FileErrorKind::NotFound => (S::NOT_FOUND, "file_not_found"),
                    FileErrorKind::IsDirectory => (S::BAD_REQUEST, "is_a_directory"),
                    FileErrorKind::NotADirectory => (S::BAD_REQUEST, "not_a_directory"),
                    FileErrorKind::TooLarge => (S::PAYLOAD_TOO_LARGE, "file_too_large"),
                    FileErrorKind::Permission => (S::FORBIDDEN, "permission_denied"),
                    FileErrorKind::NoSpace => (S::PAYLOAD_TOO_LARGE, "no_space"),
                    FileErrorKind::TimedOut => (S::REQUEST_TIMEOUT, "file_operation_timed_out"),
                    FileErrorKind::Other => (S::BAD_REQUEST, "file_error"),
                };
                ApiError::new(status, code, message)
            }
            ControlError::NotFound => ApiError::not_found(),
            e @ (ControlError::ProcessNotFound(_)
            | ControlError::ContextNotFound(_)
            | ControlError::Gone
            | ControlError::KeyNotFound) => ApiError::new(S::NOT_FOUND, "not_found", e.to_string()),
            ControlError::Limit(m) => ApiError::new(S::TOO_MANY_REQUESTS, "limit_exceeded", m),
            ControlError::Busy(m) => {
                let mut e = ApiError::new(S::TOO_MANY_REQUESTS, "busy", m);
                e.headers
                    .push((axum::http::header::RETRY_AFTER, "1".into()));
                e
            }
            ControlError::Unauthorized(m) => ApiError::new(S::UNAUTHORIZED, "unauthorized", m),
            ControlError::Forbidden(m) => ApiError::new(S::FORBIDDEN, "forbidden", m),
            ControlError::RateLimited { message, usage } => rate_limited(message, &usage),
            ControlError::Conflict(m) => ApiError::new(S::CONFLICT, "conflict", m),
            ControlError::Unavailable(m) => ApiError::new(S::SERVICE_UNAVAILABLE, "unavailable", m),
            // Not the caller's doing and not a limit: retrying later may work.
            ControlError::CannotStart(m) => {
                ApiError::new(S::SERVICE_UNAVAILABLE, "cannot_start", m)
            }
            e @ ControlError::SandboxUnavailable => {
                ApiError::new(S::SERVICE_UNAVAILABLE, "sandbox_unavailable", e.to_string())
            }
            ControlError::EngineUnavailable(m) => {
                ApiError::new(S::SERVICE_UNAVAILABLE, "engine_unavailable", m)
            }
            ControlError::DiskFull(m) => ApiError::new(S::INSUFFICIENT_STORAGE, "disk_full", m),
            ControlError::Internal(m) => {
                tracing::error!("internal error: {m}");
                ApiError::new(
                    S::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal server error",
                )
            }
        }
    }
}

/// 429 with `Retry-After` and the `X-RateLimit-*` headers.
fn rate_limited(message: String, usage: &Usage) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    e.headers = rate_limit_headers(usage);
    e.headers.push((
        axum::http::header::RETRY_AFTER,
        usage.reset_unix.saturating_sub(now).max(1).to_string(),
    ));
    e
}

/// An error of the port proxy, answered to whoever visits an exposed port: the usual JSON body
/// for clients that accept JSON, a small HTML page for browsers and everyone else.
pub fn proxy_error(status: StatusCode, code: &'static str, message: &str, json: bool) -> Response {
    let mut response = if json {
        ApiError::new(status, code, message).into_response()
    } else {
        let reason = status.canonical_reason().unwrap_or("Error");
        let message = html_escape(message);
        let page = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\n\
             <body><h1>{code} {reason}</h1>\n<p>{message}</p>\n<p><small>cerver</small></p></body></html>\n",
            code = status.as_u16(),
        );
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page,
        )
            .into_response()
    };
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        let cases = [
            (ControlError::invalid("x"), 400, "invalid_request"),
            (
                ControlError::Invalid {
                    code: "invalid_pid",
                    message: "x".into(),
                },
                400,
                "invalid_pid",
            ),
            (ControlError::BadPath("x".into()), 400, "invalid_path"),
            (
                ControlError::File {
                    kind: FileErrorKind::TimedOut,
                    message: "x".into(),
                },
                408,
                "file_operation_timed_out",
            ),
            (ControlError::Gone, 404, "not_found"),
            (ControlError::Limit("x".into()), 429, "limit_exceeded"),
            (ControlError::Busy("x".into()), 429, "busy"),
            (ControlError::CannotStart("x".into()), 503, "cannot_start"),
            (ControlError::SandboxUnavailable, 503, "sandbox_unavailable"),
            (
                ControlError::EngineUnavailable("x".into()),
                503,
                "engine_unavailable",
            ),
            (ControlError::DiskFull("x".into()), 507, "disk_full"),
            (ControlError::Internal("secret".into()), 500, "internal"),
        ];
        for (e, status, code) in cases {
            let e = ApiError::from(e);
            assert_eq!((e.status.as_u16(), e.code), (status, code));
            assert!(!e.message.contains("secret"));
        }
    }
}
