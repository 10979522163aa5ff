//! The port proxy: a request whose `Host` is `<label>-<port>.<sandbox domain>` never reaches the
//! API; it is forwarded to `<sandbox address>:<port>` of the live containers sandbox with that
//! label, if its owner exposed that port through `GET /sandbox/:id/host` (which checks the
//! plan). Exposed ports need no API key: their URLs are public, optionally guarded by a token.
//!
//! Forwarding is HTTP/1.1 over one fresh connection per request (hyper's client connection
//! API): bodies stream both ways, hop-by-hop headers are dropped (RFC 9110 §7.6.1), and an
//! `Upgrade` (WebSocket) joins both upgraded connections. One connection per request keeps an
//! upgrade, a slow stream and the per-sandbox cap simple to reason about; connecting over the
//! host's own veth costs microseconds.
//!
//! Every exchange is bounded: it holds a slot of its sandbox and one of the server, and ends
//! when its sandbox ends, when the server starts shutting down (a stream or an upgraded
//! connection would otherwise keep the graceful shutdown waiting forever) and when no byte has
//! moved either way for [`IDLE_TIMEOUT`]. The sandbox's server may set cookies only for its own
//! host, and none named `cerver_*`.
//!
//! # Layout
//! - `host`: which sandbox and port a `Host` names.
//! - `sandbox`: checks a sandbox request (exposure, token, slots) and hands it to `forward`.
//! - `token`: port tokens (where presented, verification, stripping).
//! - `forward`: one exchange over a fresh upstream connection; `upgrade` joins a `101`.
//! - `headers`: hop-by-hop headers, `X-Forwarded-*`, host-only `Set-Cookie`.
//! - `guard`: connection slots, liveness, shutdown and idle cut-off of an exchange.

mod forward;
mod guard;
mod headers;
mod host;
mod sandbox;
mod token;
mod upgrade;

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

pub use forward::{ForwardOptions, forward};
pub use headers::{accepts_json, restrict_set_cookies, strip_hop_by_hop};
pub use host::{HostKind, classify_host};

use crate::AppState;
use crate::error::proxy_error;

/// How long connecting to a sandbox's port may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a sandbox's server may take to send its response head.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// Once the response head is in, how long an exchange (its bodies, or an upgraded connection)
/// may go without a byte moving in either direction before it is cut: a client that stops
/// reading, or an idle WebSocket, must not hold a connection slot forever.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Header that may carry a port token.
pub const TOKEN_HEADER: &str = "x-cerver-token";
/// Cookie in which a browser keeps a port token (host-only: scoped to that sandbox host).
pub const TOKEN_COOKIE: &str = "cerver_port_token";

/// The middleware in front of the whole router.
pub async fn intercept(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let ports = st.control.ports();
    match classify_host(host::request_host(&req), &ports.domain) {
        HostKind::Api => next.run(req).await,
        HostKind::Invalid => proxy_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no sandbox has this host name",
            accepts_json(req.headers()),
        ),
        HostKind::Sandbox { label, port } => {
            let req = match crate::cluster::proxy_elsewhere(&st, req, &label).await {
                Ok(forwarded) => return forwarded,
                Err(req) => req,
            };
            crate::metrics::proxied(sandbox::to_sandbox(&st, req, &label, port).await)
        }
    }
}
