//! Routing between nodes (cluster mode; see `cerver_control::cluster`): a request for a
//! sandbox held by another node is forwarded to it, a create goes where there is room, and a
//! request forwarded by another node is checked for the cluster secret and served here.
//!
//! Forwarding reuses the port proxy's exchange ([`crate::proxy::forward`]): one fresh HTTP/1.1
//! connection per request, both bodies streamed (an SSE stream's events arrive as the owner
//! sends them), an `Upgrade` joined. The owner node marks every response it serves for another
//! node with [`NODE_HEADER`]; a 502/504 without it came from the forwarding itself: the owner is
//! unreachable, which the client sees as `503 node_unavailable`.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cerver_control::cluster::{Destination, Placement, SECRET_HEADER};

use crate::AppState;
use crate::error::ApiError;
use crate::proxy::{ForwardOptions, forward};

/// The name of the node that served a forwarded request (set on its response).
pub const NODE_HEADER: &str = "x-cerver-node";

/// Marks a request that another node forwarded here with the right cluster secret: it is
/// served here (never forwarded again) and its daily request was already counted.
#[derive(Clone, Copy, Debug)]
pub struct Forwarded;

/// Outermost layer: a request carrying [`SECRET_HEADER`] must carry the right secret of a
/// node in cluster mode (else 403); the header is removed before anything else sees it (a
/// sandbox's server behind the port proxy never does).
pub async fn admit(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(presented) = req.headers_mut().remove(SECRET_HEADER) else {
        return next.run(req).await;
    };
    let Some(cluster) = &st.cluster else {
        return forbidden();
    };
    if !cluster.is_secret(presented.as_bytes()) {
        return forbidden();
    }
    req.extensions_mut().insert(Forwarded);
    let mut response = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&cluster.config().node) {
        response.headers_mut().insert(NODE_HEADER, v);
    }
    response
}

fn forbidden() -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "node-to-node requests need this cluster's secret",
    )
    .into_response()
}

/// Inside the API-key check: forwards a sandbox request to the node holding the sandbox, and a
/// create to the node with room.
pub async fn route(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(cluster) = st.cluster.clone() else {
        return next.run(req).await;
    };
    if req.extensions().get::<Forwarded>().is_some() {
        return next.run(req).await;
    }
    match target(req.method(), req.uri().path()) {
        Target::Create => match cluster.place(st.control.has_room()).await {
            Ok(Destination::There(addr)) => to_node(&st, req, addr).await,
            Ok(_) => next.run(req).await,
            Err(e) => ApiError::from(e).into_response(),
        },
        Target::List => {
            let others = cluster_list_request(&req);
            let here = next.run(req).await;
            merge_lists(&st, here, others).await
        }
        Target::Sandbox(id) if !st.control.holds(&id) => match cluster.locate(&id).await {
            Ok(Placement::There { addr, .. }) => to_node(&st, req, addr).await,
            Ok(Placement::Unavailable { node }) => unavailable(&node),
            Ok(Placement::Here) => next.run(req).await,
            Err(e) => ApiError::from(e).into_response(),
        },
        _ => next.run(req).await,
    }
}

/// A port-proxy request for a sandbox label not held here: forwarded to its node, or `None`
/// (then the local proxy answers, with its 404).
pub async fn proxy_elsewhere(
    st: &AppState,
    req: Request,
    label: &str,
) -> Result<Response, Request> {
    let Some(cluster) = st.cluster.clone() else {
        return Err(req);
    };
    if req.extensions().get::<Forwarded>().is_some() || st.control.by_label(label).is_some() {
        return Err(req);
    }
    match cluster.locate_label(label).await {
        Ok(Placement::There { addr, .. }) => Ok(to_node(st, req, addr).await),
        Ok(Placement::Unavailable { node }) => Ok(unavailable(&node)),
        Ok(Placement::Here) => Err(req),
        Err(e) => Ok(ApiError::from(e).into_response()),
    }
}

/// What routing a request needs.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Create,
    /// `GET /sandboxes`: this node's list merged with the other live nodes'.
    List,
    Sandbox(String),
    Other,
}

fn target(method: &Method, path: &str) -> Target {
    let mut segments = path.trim_start_matches('/').split('/');
    match (segments.next(), segments.next()) {
        (Some("sandbox"), None) | (Some("sandbox"), Some("")) if method == Method::POST => {
            Target::Create
        }
        (Some("sandbox"), Some(id)) if !id.is_empty() => Target::Sandbox(id.to_string()),
        (Some("sandboxes"), None) if method == Method::GET => Target::List,
        _ => Target::Other,
    }
}

async fn to_node(st: &AppState, mut req: Request, addr: std::net::SocketAddr) -> Response {
    let Some(cluster) = &st.cluster else {
        return unavailable("?");
    };
    if let Ok(v) = HeaderValue::from_str(&cluster.config().secret) {
        req.headers_mut().insert(SECRET_HEADER, v);
    }
    let opts = ForwardOptions {
        closing: Some(st.control.closing()),
        // Runs and streams are bounded by their own timeouts on the owner; a stream without
        // output still sends a keep-alive comment every 15 s.
        idle_timeout: std::time::Duration::from_secs(120),
        response_timeout: std::time::Duration::from_secs(24 * 3600),
        ..ForwardOptions::default()
    };
    let response = forward(req, addr, opts).await;
    let from_owner = response.headers().contains_key(NODE_HEADER);
    if !from_owner
        && matches!(
            response.status(),
            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
        )
    {
        cluster.forget_nodes();
        return unavailable(&addr.to_string());
    }
    response
}

/// The headers of a `GET /sandboxes` to send to the other nodes (the caller's key).
fn cluster_list_request(req: &Request) -> axum::http::HeaderMap {
    let mut headers = axum::http::HeaderMap::new();
    for name in [
        axum::http::header::AUTHORIZATION,
        "x-api-key".try_into().unwrap(),
    ] {
        if let Some(v) = req.headers().get(&name) {
            headers.insert(name, v.clone());
        }
    }
    headers
}

/// Largest list body read from a node (a pro user's 100 sandboxes take ~60 KiB).
const MAX_LIST_BODY: usize = 4 << 20;

/// This node's `GET /sandboxes` answer with the caller's sandboxes on the other live nodes
/// added (oldest first). A node that does not answer is left out of the list (and logged).
async fn merge_lists(st: &AppState, here: Response, headers: axum::http::HeaderMap) -> Response {
    let Some(cluster) = &st.cluster else {
        return here;
    };
    if here.status() != StatusCode::OK {
        return here;
    }
    let (parts, body) = here.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_LIST_BODY).await else {
        return unavailable("this node");
    };
    let Ok(mut list) = serde_json::from_slice::<cerver_types::SandboxList>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    let nodes = match cluster.nodes().await {
        Ok(nodes) => nodes,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let now = cerver_control::cluster::now_ms();
    let others = nodes
        .iter()
        .filter(|n| n.name != cluster.config().node && n.is_live(now))
        .filter_map(|n| n.addr.map(|addr| (n.name.clone(), addr)));
    let asks = others.map(|(name, addr)| {
        let headers = headers.clone();
        async move { (name, list_of(st, addr, headers).await) }
    });
    for (name, answer) in futures::future::join_all(asks).await {
        match answer {
            Some(theirs) => list.sandboxes.extend(theirs.sandboxes),
            None => tracing::warn!(node = %name, "cluster: the node did not list its sandboxes"),
        }
    }
    list.sandboxes.sort_by_key(|s| s.created_at);
    (parts, axum::Json(list)).into_response()
}

/// One node's list of the caller's sandboxes.
async fn list_of(
    st: &AppState,
    addr: std::net::SocketAddr,
    headers: axum::http::HeaderMap,
) -> Option<cerver_types::SandboxList> {
    let mut req = Request::new(axum::body::Body::empty());
    *req.uri_mut() = "/sandboxes".parse().ok()?;
    *req.headers_mut() = headers;
    let response = to_node(st, req, addr).await;
    if response.status() != StatusCode::OK {
        return None;
    }
    let bytes = axum::body::to_bytes(response.into_body(), MAX_LIST_BODY)
        .await
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn unavailable(node: &str) -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "node_unavailable",
        format!("the node holding this sandbox ({node}) is not reachable right now; retry shortly"),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_target() {
        assert_eq!(target(&Method::POST, "/sandbox"), Target::Create);
        assert_eq!(target(&Method::GET, "/sandbox"), Target::Other);
        assert_eq!(
            target(&Method::POST, "/sandbox/abc/run/stream"),
            Target::Sandbox("abc".into())
        );
        assert_eq!(
            target(&Method::DELETE, "/sandbox/abc"),
            Target::Sandbox("abc".into())
        );
        assert_eq!(target(&Method::GET, "/sandboxes"), Target::List);
        assert_eq!(target(&Method::POST, "/sandboxes"), Target::Other);
        assert_eq!(target(&Method::POST, "/mcp"), Target::Other);
    }
}
