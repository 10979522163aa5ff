//! A request for a sandbox host: the sandbox, the exposure, the token and the connection slots
//! are checked, then the request is forwarded.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};

use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::Response;
use cerver_control::Engine;
use cerver_control::Entry;
use tokio::sync::OwnedSemaphorePermit;

use super::TOKEN_COOKIE;
use super::forward::{ForwardOptions, forward};
use super::headers::accepts_json;
use super::token::{check_token, strip_token};
use crate::AppState;
use crate::error::proxy_error;

pub(super) async fn to_sandbox(
    st: &AppState,
    mut req: Request,
    label: &str,
    port: u16,
) -> Response {
    let json = accepts_json(req.headers());
    let not_found = || {
        proxy_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no sandbox exposes this host",
            json,
        )
    };
    if req.method() == axum::http::Method::CONNECT {
        return proxy_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "CONNECT is not forwarded to sandboxes",
            json,
        );
    }
    let Some(entry) = st.control.by_label(label) else {
        return not_found();
    };
    if entry.engine != Engine::Containers || !entry.is_exposed(port) {
        return not_found();
    }
    let mut set_cookie = None;
    if let Some(tokens) = &st.control.ports().tokens {
        match check_token(tokens, &req, &entry.id, port) {
            Ok(Some(token)) => set_cookie = Some(token),
            Ok(None) => {}
            Err(response) => return response(json),
        }
    }
    strip_token(&mut req);
    let Some(ip) = entry.sandbox.ip_addr() else {
        return proxy_error(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "this sandbox has no network address",
            json,
        );
    };
    let (permit, server_permit) = match slots(st, &entry) {
        Ok(p) => p,
        Err(message) => {
            return proxy_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                message,
                json,
            );
        }
    };
    let weak: Weak<Entry> = Arc::downgrade(&entry);
    drop(entry);
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    let opts = ForwardOptions {
        scheme: st.control.ports().scheme.clone(),
        client,
        permit: Some(permit),
        server_permit: Some(server_permit),
        alive: Some(Arc::new(move || {
            weak.upgrade().is_some_and(|e| e.is_live())
        })),
        closing: Some(st.control.closing()),
        ..ForwardOptions::default()
    };
    let mut response = forward(req, SocketAddr::new(IpAddr::V4(ip), port), opts).await;
    if let Some(token) = set_cookie {
        keep_token_in_cookie(st, &mut response, &token);
    }
    response
}

/// A connection slot of the sandbox and one of the server, or why there is none (a 503).
fn slots(
    st: &AppState,
    entry: &Entry,
) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), &'static str> {
    let permit = entry
        .proxy_permit()
        .ok_or("too many connections to this sandbox at once; retry shortly")?;
    let server_permit = st
        .control
        .proxy_permit()
        .ok_or("this server is proxying too many connections at once; retry shortly")?;
    Ok((permit, server_permit))
}

/// A token presented in the URL or a header is kept in a host-only cookie, so a browser's
/// next requests (links, assets) carry it.
fn keep_token_in_cookie(st: &AppState, response: &mut Response, token: &str) {
    let secure = if st.control.ports().scheme == "https" {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax{secure}");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}
