//! Forwarding one exchange: connect to the sandbox's port, send the request, stream the
//! response back (or join both connections after a `101`).

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::Response;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};

use super::guard::{Activity, Guard, Tracked};
use super::headers::{
    accepts_json, outbound_request, restrict_set_cookies, strip_hop_by_hop, upgrade_protocol,
};
use super::{CONNECT_TIMEOUT, IDLE_TIMEOUT, RESPONSE_TIMEOUT, upgrade};
use crate::error::proxy_error;

/// Largest response head (status line and headers) accepted from a sandbox's server; hyper
/// reads at most this much before the head must be complete.
const MAX_UPSTREAM_HEAD: usize = 64 * 1024;

/// Settings of one forwarded exchange.
pub struct ForwardOptions {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// After the response head: the longest time without a byte moving either way.
    pub idle_timeout: Duration,
    /// `X-Forwarded-Proto`: the scheme the client used.
    pub scheme: String,
    /// The client's address: appended to `X-Forwarded-For`, and `X-Real-IP`.
    pub client: Option<IpAddr>,
    /// Held for as long as the exchange (or the upgraded connection) lasts: the sandbox's slot.
    pub permit: Option<OwnedSemaphorePermit>,
    /// Held likewise: the server's slot.
    pub server_permit: Option<OwnedSemaphorePermit>,
    /// Polled every second: once it answers false (the sandbox ended) the exchange is cut.
    pub alive: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    /// Once it turns true (the server is shutting down) the exchange is cut.
    pub closing: Option<watch::Receiver<bool>>,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            connect_timeout: CONNECT_TIMEOUT,
            response_timeout: RESPONSE_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            scheme: "http".into(),
            client: None,
            permit: None,
            server_permit: None,
            alive: None,
            closing: None,
        }
    }
}

/// The upstream connection, driven until the response head is in, then by a task of its own
/// (hyper does not name its upgradeable connection type, hence the trait object).
type Upstream = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// Why no response head came back.
enum HeadError {
    /// The sandbox ended or the server started shutting down.
    Ended,
    Invalid(hyper::Error),
    TimedOut,
}

/// How one exchange answers its failures: 502/504, JSON or HTML as the client prefers.
struct Failure {
    target: SocketAddr,
    json: bool,
}

impl Failure {
    fn bad_gateway(&self, message: String) -> Response {
        tracing::debug!(target = %self.target, "proxy: {message}");
        proxy_error(StatusCode::BAD_GATEWAY, "bad_gateway", &message, self.json)
    }

    fn head(&self, e: HeadError, response_timeout: Duration) -> Response {
        let port = self.target.port();
        match e {
            HeadError::Ended => {
                self.bad_gateway("the sandbox has ended or the server is stopping".into())
            }
            HeadError::Invalid(e) => self.bad_gateway(format!(
                "the server on port {port} sent no valid response: {e}"
            )),
            HeadError::TimedOut => proxy_error(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                &format!(
                    "the server on port {port} did not answer within {} s",
                    response_timeout.as_secs()
                ),
                self.json,
            ),
        }
    }
}

/// Forwards `req` to `target` and answers with the upstream's response, streaming both bodies.
/// An `Upgrade` request that the upstream accepts (101) joins both connections. Failures to
/// reach the upstream answer 502 (504 when its response head takes too long), as JSON for
/// clients that accept JSON and as a small HTML page otherwise.
pub async fn forward(mut req: Request, target: SocketAddr, opts: ForwardOptions) -> Response {
    let failure = Failure {
        target,
        json: accepts_json(req.headers()),
    };
    let upgrade = upgrade_protocol(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    outbound_request(&mut parts, upgrade.as_ref(), &opts.scheme, opts.client);
    let outbound = axum::http::Request::from_parts(parts, body);

    let activity = Arc::new(Activity::new());
    let (sender, conn) = match connect(target, opts.connect_timeout, activity.clone()).await {
        Ok(pair) => pair,
        Err(message) => return failure.bad_gateway(message),
    };
    let guard = Arc::new(Guard {
        _permits: [opts.permit, opts.server_permit],
        alive: opts.alive,
        closing: opts.closing,
        idle_timeout: opts.idle_timeout,
        activity,
    });
    let (mut response, conn) =
        match response_head(sender, conn, outbound, &guard, opts.response_timeout).await {
            Ok(pair) => pair,
            Err(e) => return failure.head(e, opts.response_timeout),
        };
    // From the head on, the idle clock runs (the head itself counts as activity).
    guard.activity.touch();
    // The body (or the upgrade hand-over) still needs the connection driven. Ending it here
    // (sandbox gone, shutdown, idle) fails the response body, which aborts the client's
    // connection and frees the slots.
    if let Some(conn) = conn {
        let conn_guard = guard.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%target, "proxy: upstream connection: {e}");
                },
                _ = conn_guard.ended_or_idle() => {}
            }
        });
    }

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return failure.bad_gateway(format!(
                "the server on port {} switched protocols unasked",
                target.port()
            ));
        };
        let protocol = response.headers().get(header::UPGRADE).cloned();
        upgrade::join(client_upgrade, &mut response, guard, target);
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        restrict_set_cookies(&mut parts.headers);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = protocol {
            parts.headers.insert(header::UPGRADE, protocol);
        }
        return Response::from_parts(parts, Body::new(body));
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    restrict_set_cookies(&mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}

/// Connects to the sandbox's port and starts an HTTP/1.1 client connection over it; the error
/// is the message of the 502.
async fn connect(
    target: SocketAddr,
    timeout: Duration,
    activity: Arc<Activity>,
) -> Result<(SendRequest<Body>, Upstream), String> {
    let port = target.port();
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(format!(
                "nothing is listening on port {port} in the sandbox"
            ));
        }
        Ok(Err(e)) => return Err(format!("could not reach port {port}: {e}")),
        Err(_) => {
            return Err(format!(
                "port {port} did not accept a connection within {} s",
                timeout.as_secs()
            ));
        }
    };
    let _ = stream.set_nodelay(true);
    let stream = Tracked {
        io: stream,
        activity,
    };
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_UPSTREAM_HEAD)
        .handshake::<_, Body>(TokioIo::new(stream))
        .await
        .map_err(|e| format!("port {port}: {e}"))?;
    Ok((sender, Box::pin(conn.with_upgrades())))
}

/// Sends the request and waits for the response head, driving the connection meanwhile: if
/// the client goes away, dropping this future closes the upstream connection too. Returns the
/// connection too unless it already ended (an upgrade hands its IO over right after the 101;
/// it must then not be polled again).
async fn response_head(
    mut sender: SendRequest<Body>,
    mut conn: Upstream,
    outbound: axum::http::Request<Body>,
    guard: &Guard,
    timeout: Duration,
) -> Result<(hyper::Response<Incoming>, Option<Upstream>), HeadError> {
    let mut conn_done = false;
    let head = async {
        let sent = sender.send_request(outbound);
        tokio::pin!(sent);
        tokio::select! {
            biased;
            r = &mut sent => r,
            r = &mut conn => {
                conn_done = true;
                if let Err(e) = r {
                    tracing::debug!("proxy: upstream connection: {e}");
                }
                sent.await
            }
        }
    };
    let response = tokio::select! {
        r = tokio::time::timeout(timeout, head) => r,
        _ = guard.ended() => return Err(HeadError::Ended),
    };
    match response {
        Ok(Ok(r)) => Ok((r, (!conn_done).then_some(conn))),
        Ok(Err(e)) => Err(HeadError::Invalid(e)),
        Err(_) => Err(HeadError::TimedOut),
    }
}
