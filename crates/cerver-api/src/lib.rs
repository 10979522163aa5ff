//! Cerver's HTTP API. Handlers and MCP tools are thin adapters over the operations layer
//! ([`cerver_control::ops`]): extract, call, map the error. Errors become HTTP in exactly one
//! place ([`error`]). This crate depends on the control plane and the wire types only, never
//! on the runtime.
//!
//! # Layout
//! - [`routes`]: the router (every documented route).
//! - [`sandboxes`]: create / info / list / delete / timeout.
//! - [`runs`]: synchronous and SSE runs (and starting background ones).
//! - [`sse`]: Server-Sent Events framing of the operations' event streams.
//! - [`processes`]: background processes: list, inspect, follow, kill.
//! - [`files`]: the files API.
//! - [`extract`]: JSON/query extractors with JSON errors.
//! - [`mcp`]: `/mcp`, the same operations as Model Context Protocol tools.
//! - [`dashboard`], [`account`], [`session`]: the web dashboard, its session-authenticated
//!   JSON API (`/account*`) and the session cookie + CSRF middleware.
//! - [`proxy`]: the port proxy in front of the router (`<label>-<port>.<sandbox domain>`).
//! - [`metrics`]: `GET /metrics` and the per-route HTTP metrics.
//! - [`cluster`]: forwarding to the node that holds a sandbox (cluster mode).
//! - [`request_id`]: one id per request, in `X-Request-Id` and on its log lines.

pub mod account;
pub mod auth;
pub mod cluster;
pub mod contexts;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod files;
pub mod mcp;
pub mod metrics;
pub mod openapi;
mod openapi_constraints;
pub mod pause;
pub mod processes;
pub mod proxy;
pub mod request_id;
pub mod routes;
pub mod runs;
pub mod sandboxes;
pub mod session;
pub mod sse;

use std::sync::Arc;

use cerver_control::{Accounts, Control};

#[derive(Clone)]
pub struct AppState {
    pub control: Arc<Control>,
    pub accounts: Arc<Accounts>,
    /// The operator's token for `GET /metrics` from a non-loopback peer (none: loopback only).
    pub metrics_token: Option<String>,
    /// This node's view of the cluster (cluster mode only).
    pub cluster: Option<Arc<cerver_control::cluster::Cluster>>,
}

pub use routes::router;

#[cfg(test)]
mod fuzz;
