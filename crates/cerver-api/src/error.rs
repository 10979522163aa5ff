//! The one place where errors become HTTP responses: `{"error": "...", "code": "..."}`.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cerver_control::{ControlError, Usage};
use cerver_runtime::{FileErrorKind, RuntimeError};
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
        match e {
            ControlError::BadRequest(m) => ApiError::bad_request("bad_request", m),
            ControlError::NotFound => ApiError::not_found(),
            e @ (ControlError::ProcessNotFound(_) | ControlError::KeyNotFound) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            ControlError::Limit(m) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "limit_exceeded", m)
            }
            ControlError::Runtime(e) => e.into(),
            ControlError::Unauthorized(m) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
            }
            ControlError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            ControlError::RateLimited { message, usage } => {
                let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                e.headers = rate_limit_headers(&usage);
                e.headers.push((
                    axum::http::header::RETRY_AFTER,
                    usage.reset_unix.saturating_sub(now).max(1).to_string(),
                ));
                e
            }
            ControlError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            ControlError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            ControlError::Internal(m) => {
                tracing::error!("internal error: {m}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal server error",
                )
            }
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        use StatusCode as S;
        match e {
            RuntimeError::BadPath(m) => ApiError::bad_request("invalid_path", m),
            RuntimeError::File { kind, message } => {
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
            RuntimeError::Gone => ApiError::new(
                S::NOT_FOUND,
                "not_found",
                "the sandbox is no longer running",
            ),
            e @ RuntimeError::ProcessLimit(_) => {
                ApiError::new(S::TOO_MANY_REQUESTS, "limit_exceeded", e.to_string())
            }
            // Not the caller's doing and not a limit: retrying later may work.
            e @ RuntimeError::CannotStart(_) => {
                ApiError::new(S::SERVICE_UNAVAILABLE, "cannot_start", e.to_string())
            }
            RuntimeError::Create(m) => {
                tracing::error!("sandbox creation failed: {m}");
                ApiError::new(
                    S::SERVICE_UNAVAILABLE,
                    "sandbox_unavailable",
                    "could not create a sandbox right now; retry shortly",
                )
            }
            RuntimeError::Unavailable(m) => {
                ApiError::new(S::SERVICE_UNAVAILABLE, "engine_unavailable", m)
            }
            RuntimeError::Unsupported(m) | RuntimeError::Internal(m) => {
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
    fn only_the_process_limit_is_a_limit() {
        let e = ApiError::from(RuntimeError::ProcessLimit(
            "[Errno 11] Resource temporarily unavailable".into(),
        ));
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.code, "limit_exceeded");
        assert!(e.message.contains("process limit"), "{}", e.message);
        for cause in [
            "the process did not start in time",
            "could not start a run process",
        ] {
            let e = ApiError::from(RuntimeError::CannotStart(cause.into()));
            assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE, "{cause}");
            assert_eq!(e.code, "cannot_start", "{cause}");
            assert!(e.message.contains(cause), "{}", e.message);
        }
    }
}
