//! `GET /metrics` (Prometheus text format, via `metrics-exporter-prometheus`) and the HTTP
//! metrics: requests by matched route template, method and status, and their latency.
//!
//! The runtime and the control plane count their own events (`cerver_control::metrics` names
//! them all); this module installs the recorder those counts go to, adds the gauges read at
//! scrape time, and guards the endpoint: a scrape needs no API key from a loopback peer;
//! from anywhere else it needs the operator's metrics token (`Authorization: Bearer`),
//! compared in constant time. Without a token configured, only loopback can scrape.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cerver_control::metrics as names;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;

pub const HTTP_REQUESTS: &str = "cerver_http_requests_total";
pub const HTTP_DURATION: &str = "cerver_http_request_duration_seconds";
/// The route label of requests that matched no route (their raw path is never a label).
pub const UNMATCHED: &str = "unmatched";

/// The process-wide recorder, installed the first time a router is built (the `metrics`
/// facade has one global recorder; a second router in the same process shares it).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), names::DURATION_BUCKETS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        let help = names::DESCRIPTIONS.iter().chain(&[
            (
                HTTP_REQUESTS,
                "API requests by matched route template, method and status",
            ),
            (
                HTTP_DURATION,
                "API request latency by route template and method",
            ),
        ]);
        for (name, text) in help {
            metrics::describe_counter!(*name, *text);
        }
        handle
    })
}

/// Counts every API request under its route template (the layer runs after routing, so
/// [`MatchedPath`] is known; the fallback's requests count as [`UNMATCHED`]).
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, |m| m.as_str())
        .to_string();
    let method = bounded_method(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Methods outside the standard set share one label (a client can send any token).
fn bounded_method(m: &axum::http::Method) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|k| *k == m.as_str())
        .unwrap_or("OTHER")
}

/// Counts a port-proxy exchange by how it ended, and passes its response on.
pub fn proxied(response: Response) -> Response {
    let result = match response.status() {
        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => "unreachable",
        s if s.is_client_error() || s == StatusCode::SERVICE_UNAVAILABLE => "refused",
        _ => "forwarded",
    };
    names::proxy_connection(result);
    response
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    operation_id = "metrics",
    summary = "Prometheus metrics (loopback peers, or the operator's metrics token)",
    description = "The server's metrics in the Prometheus text exposition format. No API key: \
                   a peer on loopback may always scrape; any other peer must send \
                   `Authorization: Bearer <metrics token>` (the `--metrics-token` setting).",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "Not loopback and no token sent", body = cerver_types::ErrorBody),
        (status = 403, description = "Wrong token, or no token configured", body = cerver_types::ErrorBody),
    )
)]
pub async fn scrape(State(st): State<AppState>, req: Request) -> Response {
    let loopback = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(a)| a.ip().is_loopback());
    if !loopback && let Err(e) = check_token(st.metrics_token.as_deref(), req.headers()) {
        return e.into_response();
    }
    st.control.update_gauges();
    let handle = handle();
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

fn check_token(expected: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("Bearer "))
        .map(str::trim);
    let Some(sent) = sent else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "metrics are served to loopback, or with `Authorization: Bearer <metrics token>`",
        ));
    };
    match expected {
        Some(token) if bool::from(token.as_bytes().ct_eq(sent.as_bytes())) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "wrong metrics token",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn token_is_required_and_compared() {
        let none = HeaderMap::new();
        assert_eq!(check_token(Some("s3cret"), &none).unwrap_err().status, 401);
        assert_eq!(
            check_token(Some("s3cret"), &bearer("Bearer nope"))
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            check_token(Some("s3cret"), &bearer("Bearer s3cret2"))
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            check_token(None, &bearer("Bearer x")).unwrap_err().status,
            403
        );
        assert!(check_token(Some("s3cret"), &bearer("Bearer s3cret")).is_ok());
    }

    #[test]
    fn odd_methods_share_a_label() {
        let odd = axum::http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(bounded_method(&odd), "OTHER");
        assert_eq!(bounded_method(&axum::http::Method::DELETE), "DELETE");
    }
}
