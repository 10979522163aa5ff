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

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri, Version};
use axum::middleware::Next;
use axum::response::Response;
use cerver_control::Entry;
use cerver_control::ports::{PortTokens, TOKEN_PARAM};
use cerver_runtime::Engine;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;

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
/// Largest response head (status line and headers) accepted from a sandbox's server; hyper
/// reads at most this much before the head must be complete.
const MAX_UPSTREAM_HEAD: usize = 64 * 1024;
/// How often a proxied exchange checks that its sandbox still lives (a deleted sandbox's
/// network vanishes without closing connections, so they would otherwise hang).
const LIVENESS_POLL: Duration = Duration::from_secs(1);
/// Header that may carry a port token.
pub const TOKEN_HEADER: &str = "x-cerver-token";
/// Cookie in which a browser keeps a port token (host-only: scoped to that sandbox host).
pub const TOKEN_COOKIE: &str = "cerver_port_token";
/// Cookies whose name starts with this are the server's own: a sandbox may not set them.
const RESERVED_COOKIE_PREFIX: &[u8] = b"cerver_";

/// Where a request's host name sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    /// Not a sandbox host: the API.
    Api,
    /// `<label>-<port>.<domain>`.
    Sandbox { label: String, port: u16 },
    /// Under the sandbox domain but not a sandbox host name: never the API, always 404.
    Invalid,
}

/// Classifies a request's host (the `Host` header or an absolute URI's authority) against the
/// sandbox domain (lower case, no trailing dot). A port suffix is ignored; case and one
/// trailing dot do not matter. The bare domain is left to the API, so the API may share it.
pub fn classify_host(host: &[u8], domain: &str) -> HostKind {
    let host = String::from_utf8_lossy(host);
    let host = host.trim();
    if host.starts_with('[') {
        return HostKind::Api; // an IPv6 literal
    }
    let name = host.rsplit_once(':').map_or(host, |(name, _port)| name);
    let name = name.to_ascii_lowercase();
    let name = name.strip_suffix('.').unwrap_or(&name);
    let Some(first) = name.strip_suffix(domain).and_then(|n| n.strip_suffix('.')) else {
        return HostKind::Api;
    };
    parse_first_label(first).unwrap_or(HostKind::Invalid)
}

/// `<8 hex>-<port>`, the port in canonical decimal (1-65535, no leading zero).
fn parse_first_label(first: &str) -> Option<HostKind> {
    let (label, port) = first.split_once('-')?;
    let valid_label = label.len() == cerver_control::ports::LABEL_LEN
        && label.bytes().all(|b| b.is_ascii_hexdigit());
    let canonical_port = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && !port.starts_with('0');
    if !valid_label || !canonical_port {
        return None;
    }
    let port = port.parse::<u16>().ok()?;
    Some(HostKind::Sandbox {
        label: label.to_string(),
        port,
    })
}

/// The host a request names: an absolute-form URI's authority wins over `Host` (RFC 9112
/// §3.2.2).
fn request_host(req: &Request) -> &[u8] {
    match req.uri().authority() {
        Some(a) => a.as_str().as_bytes(),
        None => req
            .headers()
            .get(header::HOST)
            .map_or(&[][..], HeaderValue::as_bytes),
    }
}

/// Whether the client prefers a JSON error to an HTML page.
pub fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json") || v.contains("+json"))
}

/// The middleware in front of the whole router.
pub async fn intercept(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let ports = st.control.ports();
    match classify_host(request_host(&req), &ports.domain) {
        HostKind::Api => next.run(req).await,
        HostKind::Invalid => proxy_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no sandbox has this host name",
            accepts_json(req.headers()),
        ),
        HostKind::Sandbox { label, port } => {
            crate::metrics::proxied(to_sandbox(&st, req, &label, port).await)
        }
    }
}

/// The token a request presents: `?cerver_token=`, `X-Cerver-Token`, then the cookie.
/// Returns the token and whether it came from the cookie.
fn presented_token(req: &Request) -> Option<(String, bool)> {
    let from_query = req.uri().query().and_then(|q| {
        q.split('&').find_map(|pair| match pair.split_once('=') {
            Some((TOKEN_PARAM, v)) => Some(v.to_string()),
            _ => None,
        })
    });
    let from_header = || {
        req.headers()
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
    };
    if let Some(t) = from_query.or_else(from_header) {
        return Some((t, false));
    }
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| cookie_pairs(v.as_bytes()))
        .find_map(token_cookie_value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|t| (t.to_string(), true))
}

/// The pairs of one `Cookie` header value, as bytes: `;`-separated, surrounding spaces trimmed,
/// empty ones skipped. Nothing else is assumed about them (a pair may lack `=`, a value may
/// hold any byte a header may).
fn cookie_pairs(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
}

/// The value of a `cerver_port_token=<value>` pair.
fn token_cookie_value(pair: &[u8]) -> Option<&[u8]> {
    let eq = pair.iter().position(|&b| b == b'=')?;
    (pair[..eq].trim_ascii() == TOKEN_COOKIE.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
}

/// Removes the port token from the query, the headers and the cookies: the sandbox's server
/// never sees it. A `Cookie` header without the token pair is left as it is; one with it loses
/// that pair only, every other pair kept byte for byte.
fn strip_token(req: &mut Request) {
    req.headers_mut().remove(TOKEN_HEADER);
    let has_token =
        |v: &HeaderValue| cookie_pairs(v.as_bytes()).any(|p| token_cookie_value(p).is_some());
    if req.headers().get_all(header::COOKIE).iter().any(has_token) {
        let values: Vec<HeaderValue> = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .cloned()
            .collect();
        req.headers_mut().remove(header::COOKIE);
        for value in values {
            if !has_token(&value) {
                req.headers_mut().append(header::COOKIE, value);
                continue;
            }
            let kept: Vec<&[u8]> = cookie_pairs(value.as_bytes())
                .filter(|p| token_cookie_value(p).is_none())
                .collect();
            if kept.is_empty() {
                continue;
            }
            // The kept bytes come from a valid header value, so they make one again.
            if let Ok(v) = HeaderValue::from_bytes(&kept.join(&b"; "[..])) {
                req.headers_mut().append(header::COOKIE, v);
            }
        }
    }
    let Some(query) = req.uri().query() else {
        return;
    };
    if !query
        .split('&')
        .any(|p| p.split_once('=').map_or(p, |(k, _)| k) == TOKEN_PARAM)
    {
        return;
    }
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| p.split_once('=').map_or(*p, |(k, _)| k) != TOKEN_PARAM)
        .collect();
    let path = req.uri().path();
    let pq = if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = pq.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// A request for a sandbox host: the sandbox, the exposure and the token are checked, then the
/// request is forwarded.
async fn to_sandbox(st: &AppState, mut req: Request, label: &str, port: u16) -> Response {
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
    let Some(permit) = entry.proxy_permit() else {
        return proxy_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "too many connections to this sandbox at once; retry shortly",
            json,
        );
    };
    let Some(server_permit) = st.control.proxy_permit() else {
        return proxy_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "this server is proxying too many connections at once; retry shortly",
            json,
        );
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
    response
}

type ErrorPage = fn(bool) -> Response;

/// `Ok(Some(token))`: valid, and a cookie should keep it; `Ok(None)`: valid from the cookie;
/// `Err`: 401 without a token, 403 with a wrong one.
fn check_token(
    tokens: &PortTokens,
    req: &Request,
    sandbox_id: &str,
    port: u16,
) -> Result<Option<String>, ErrorPage> {
    let Some((token, from_cookie)) = presented_token(req) else {
        return Err(|json| {
            proxy_error(
                StatusCode::UNAUTHORIZED,
                "token_required",
                "this port needs its access token: open the URL that GET /sandbox/:id/host gave",
                json,
            )
        });
    };
    if !tokens.verify(sandbox_id, port, &token) {
        return Err(|json| {
            proxy_error(
                StatusCode::FORBIDDEN,
                "invalid_token",
                "this access token does not open this port",
                json,
            )
        });
    }
    Ok((!from_cookie).then_some(token))
}

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

/// What keeps an exchange's resources (its connection slots) and knows when it must end.
struct Guard {
    _permits: [Option<OwnedSemaphorePermit>; 2],
    alive: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    closing: Option<watch::Receiver<bool>>,
    idle_timeout: Duration,
    activity: Arc<Activity>,
}

impl Guard {
    /// Resolves once the sandbox has ended or the server starts shutting down.
    async fn ended(&self) {
        tokio::select! {
            _ = self.sandbox_ended() => {}
            _ = self.shutting_down() => {}
        }
    }

    /// [`Guard::ended`], or no byte moved through the upstream connection (the only way
    /// anything goes between client and sandbox) for the idle timeout.
    async fn ended_or_idle(&self) {
        tokio::select! {
            _ = self.ended() => {}
            _ = self.activity.idle_for(self.idle_timeout) => {}
        }
    }

    /// Never resolves without a liveness check.
    async fn sandbox_ended(&self) {
        let Some(alive) = &self.alive else {
            return std::future::pending().await;
        };
        let mut tick = tokio::time::interval(LIVENESS_POLL);
        loop {
            tick.tick().await;
            if !alive() {
                return;
            }
        }
    }

    /// Never resolves without a `closing` watch (or once its sender is gone).
    async fn shutting_down(&self) {
        let Some(closing) = &self.closing else {
            return std::future::pending().await;
        };
        if closing.clone().wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// When a byte last moved through an upstream connection.
struct Activity {
    since: Instant,
    /// Milliseconds from `since` to the last byte read or written.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = self.since + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// The upstream connection, noting in [`Activity`] every byte read or written.
struct Tracked {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Makes the upstream's `Set-Cookie` headers safe for the sandbox domain: a cookie named
/// `cerver_*` is dropped (the server's own names), and a `Domain` attribute is removed, so a
/// cookie is host-only and cannot reach other sandboxes or an API on a parent domain (cookie
/// tossing). Everything else is kept byte for byte.
pub fn restrict_set_cookies(headers: &mut HeaderMap) {
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let values: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for value in values {
        if let Some(v) = host_only_cookie(value.as_bytes()) {
            headers.append(header::SET_COOKIE, v);
        }
    }
}

fn host_only_cookie(value: &[u8]) -> Option<HeaderValue> {
    let mut parts = value.split(|&b| b == b';');
    let pair = parts.next()?;
    // Without `=`, browsers take the whole pair as the value of a nameless cookie; treating it
    // as a name here only drops more.
    let name = pair.split(|&b| b == b'=').next()?.trim_ascii();
    if name.len() >= RESERVED_COOKIE_PREFIX.len()
        && name[..RESERVED_COOKIE_PREFIX.len()].eq_ignore_ascii_case(RESERVED_COOKIE_PREFIX)
    {
        return None;
    }
    let mut out = pair.to_vec();
    for attribute in parts {
        let attribute_name = attribute.split(|&b| b == b'=').next()?.trim_ascii();
        if !attribute_name.eq_ignore_ascii_case(b"domain") {
            out.push(b';');
            out.extend_from_slice(attribute);
        }
    }
    HeaderValue::from_bytes(&out).ok()
}

/// The protocol a request asks to switch to (`Connection: upgrade` + `Upgrade: <protocol>`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Drops the hop-by-hop headers (RFC 9110 §7.6.1): those `Connection` names, `Connection`
/// itself, `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade` and every `Proxy-*`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// Forwards `req` to `target` and answers with the upstream's response, streaming both bodies.
/// An `Upgrade` request that the upstream accepts (101) joins both connections. Failures to
/// reach the upstream answer 502 (504 when its response head takes too long), as JSON for
/// clients that accept JSON and as a small HTML page otherwise.
pub async fn forward(mut req: Request, target: SocketAddr, opts: ForwardOptions) -> Response {
    let json = accepts_json(req.headers());
    let port = target.port();
    let bad_gateway = |message: String| {
        tracing::debug!(%target, "proxy: {message}");
        proxy_error(StatusCode::BAD_GATEWAY, "bad_gateway", &message, json)
    };
    let upgrade = upgrade_protocol(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();

    // The host the client asked for goes through unchanged (an absolute URI's authority if any).
    let host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    strip_hop_by_hop(&mut parts.headers);
    if let Some(host) = &host {
        parts.headers.insert(header::HOST, host.clone());
        parts
            .headers
            .insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    if let Some(protocol) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&opts.scheme) {
        parts
            .headers
            .insert(HeaderName::from_static("x-forwarded-proto"), v);
    }
    // Client-supplied claims about the client are not passed on as if the proxy made them:
    // `Forwarded` (RFC 7239) goes, `X-Real-IP` becomes the real peer.
    parts.headers.remove(header::FORWARDED);
    let x_real_ip = HeaderName::from_static("x-real-ip");
    parts.headers.remove(&x_real_ip);
    if let Some(client) = opts.client {
        if let Ok(v) = HeaderValue::from_str(&client.to_string()) {
            parts.headers.insert(x_real_ip, v);
        }
        let xff = HeaderName::from_static("x-forwarded-for");
        let prior: Vec<&str> = parts
            .headers
            .get_all(&xff)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let value = if prior.is_empty() {
            client.to_string()
        } else {
            format!("{}, {client}", prior.join(", "))
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            parts.headers.insert(xff, v);
        }
    }
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    parts.version = Version::HTTP_11;
    let outbound = axum::http::Request::from_parts(parts, body);

    let stream = match tokio::time::timeout(opts.connect_timeout, TcpStream::connect(target)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return bad_gateway(format!(
                "nothing is listening on port {port} in the sandbox"
            ));
        }
        Ok(Err(e)) => return bad_gateway(format!("could not reach port {port}: {e}")),
        Err(_) => {
            return bad_gateway(format!(
                "port {port} did not accept a connection within {} s",
                opts.connect_timeout.as_secs()
            ));
        }
    };
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let stream = Tracked {
        io: stream,
        activity: activity.clone(),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_UPSTREAM_HEAD)
        .handshake::<_, Body>(TokioIo::new(stream))
        .await
    {
        Ok(pair) => pair,
        Err(e) => return bad_gateway(format!("port {port}: {e}")),
    };
    let guard = Arc::new(Guard {
        _permits: [opts.permit, opts.server_permit],
        alive: opts.alive,
        closing: opts.closing,
        idle_timeout: opts.idle_timeout,
        activity,
    });

    // Until the response head arrives, the connection is driven here: if the client goes
    // away, dropping this future closes the upstream connection too.
    let mut conn = Box::pin(conn.with_upgrades());
    // The connection future may end first (an upgrade hands its IO over right after the 101);
    // it must then not be polled again.
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
                    tracing::debug!(%target, "proxy: upstream connection: {e}");
                }
                sent.await
            }
        }
    };
    let response = tokio::select! {
        r = tokio::time::timeout(opts.response_timeout, head) => r,
        _ = guard.ended() => return bad_gateway("the sandbox has ended or the server is stopping".into()),
    };
    let mut response = match response {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return bad_gateway(format!(
                "the server on port {port} sent no valid response: {e}"
            ));
        }
        Err(_) => {
            return proxy_error(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                &format!(
                    "the server on port {port} did not answer within {} s",
                    opts.response_timeout.as_secs()
                ),
                json,
            );
        }
    };
    drop(sender);
    // From the head on, the idle clock runs (the head itself counts as activity).
    guard.activity.touch();
    // The body (or the upgrade hand-over) still needs the connection driven. Ending it here
    // (sandbox gone, shutdown, idle) fails the response body, which aborts the client's
    // connection and frees the slots.
    if !conn_done {
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
            return bad_gateway(format!(
                "the server on port {port} switched protocols unasked"
            ));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let protocol = response.headers().get(header::UPGRADE).cloned();
        tokio::spawn(async move {
            let (client, upstream) = match tokio::join!(client_upgrade, upstream_upgrade) {
                (Ok(c), Ok(u)) => (c, u),
                (c, u) => {
                    tracing::debug!(%target, client_ok = c.is_ok(), upstream_ok = u.is_ok(), "proxy: upgrade failed");
                    return;
                }
            };
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            tokio::select! {
                r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                    if let Err(e) = r {
                        tracing::debug!(%target, "proxy: upgraded connection: {e}");
                    }
                }
                _ = guard.ended_or_idle() => {}
            }
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sandbox.localhost";

    fn sb(label: &str, port: u16) -> HostKind {
        HostKind::Sandbox {
            label: label.into(),
            port,
        }
    }

    #[test]
    fn sandbox_hosts_are_recognised() {
        let cases: &[(&[u8], HostKind)] = &[
            (b"9f83e711-8080.sandbox.localhost", sb("9f83e711", 8080)),
            (
                b"9f83e711-8080.sandbox.localhost:8080",
                sb("9f83e711", 8080),
            ),
            (b"9F83E711-8080.SANDBOX.Localhost", sb("9f83e711", 8080)),
            (b"9f83e711-8080.sandbox.localhost.", sb("9f83e711", 8080)),
            (b"9f83e711-8080.sandbox.localhost.:80", sb("9f83e711", 8080)),
            (b"9f83e711-1.sandbox.localhost", sb("9f83e711", 1)),
            (b"9f83e711-65535.sandbox.localhost", sb("9f83e711", 65535)),
            (b" 9f83e711-80.sandbox.localhost ", sb("9f83e711", 80)),
            // A port suffix is ignored whatever it is.
            (b"9f83e711-80.sandbox.localhost:", sb("9f83e711", 80)),
            (b"9f83e711-80.sandbox.localhost:abc", sb("9f83e711", 80)),
            (
                b"9f83e711-80.sandbox.localhost:99999999",
                sb("9f83e711", 80),
            ),
        ];
        for (host, want) in cases {
            assert_eq!(
                &classify_host(host, D),
                want,
                "{}",
                String::from_utf8_lossy(host)
            );
        }
    }

    #[test]
    fn other_hosts_go_to_the_api() {
        for host in [
            &b""[..],
            b"127.0.0.1:8080",
            b"localhost",
            b"localhost:8080",
            b"sandbox.localhost",
            b"sandbox.localhost.",
            b"SANDBOX.LOCALHOST:8080",
            b"[::1]:8080",
            b"[9f83e711-80.sandbox.localhost]",
            b"9f83e711-80.sandbox.localhost.evil.com",
            b"9f83e711-80.xsandbox.localhost",
            b"9f83e711-80sandbox.localhost",
            b"example.com",
            b":",
            b":::::",
            b"\xff\xfe",
            "例え.jp".as_bytes(),
        ] {
            assert_eq!(
                classify_host(host, D),
                HostKind::Api,
                "{}",
                String::from_utf8_lossy(host)
            );
        }
    }

    #[test]
    fn malformed_names_under_the_domain_are_never_the_api() {
        for host in [
            &b".sandbox.localhost"[..],
            b"9f83e711.sandbox.localhost",
            b"9f83e711-.sandbox.localhost",
            b"-8080.sandbox.localhost",
            b"9f83e71-8080.sandbox.localhost",
            b"9f83e7111-8080.sandbox.localhost",
            b"9f83e71g-8080.sandbox.localhost",
            b"9f83e711-0.sandbox.localhost",
            b"9f83e711-08080.sandbox.localhost",
            b"9f83e711-65536.sandbox.localhost",
            b"9f83e711-123456.sandbox.localhost",
            b"9f83e711-80-1.sandbox.localhost",
            b"9f83e711-+80.sandbox.localhost",
            b"x.9f83e711-8080.sandbox.localhost",
            b"9f83e711-8080.x.sandbox.localhost",
            b"..sandbox.localhost",
            "9f83e711-８０.sandbox.localhost".as_bytes(),
            "é9f83e711-80.sandbox.localhost".as_bytes(),
            b"9f83e711-80\xff.sandbox.localhost",
        ] {
            assert_eq!(
                classify_host(host, D),
                HostKind::Invalid,
                "{}",
                String::from_utf8_lossy(host)
            );
        }
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret-Hop"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-secret-hop", "1"),
            ("x-end-to-end", "kept"),
            ("content-type", "text/plain"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-end-to-end"]);
    }

    #[test]
    fn tokens_are_found_and_stripped() {
        let mut req = axum::http::Request::builder()
            .uri("/a/b?x=1&cerver_token=abc&y=2")
            .header(TOKEN_HEADER, "def")
            .header("cookie", "a=1; cerver_port_token=ghi; b=2")
            .body(Body::empty())
            .unwrap();
        assert_eq!(presented_token(&req), Some(("abc".into(), false)));
        strip_token(&mut req);
        assert_eq!(req.uri().to_string(), "/a/b?x=1&y=2");
        assert!(req.headers().get(TOKEN_HEADER).is_none());
        assert_eq!(req.headers()["cookie"], "a=1; b=2");

        let mut req = axum::http::Request::builder()
            .uri("/?cerver_token=abc")
            .header("cookie", "cerver_port_token=ghi")
            .body(Body::empty())
            .unwrap();
        strip_token(&mut req);
        assert_eq!(req.uri().to_string(), "/");
        assert!(req.headers().get("cookie").is_none());

        let req = axum::http::Request::builder()
            .uri("/")
            .header("cookie", "cerver_port_token=ghi")
            .body(Body::empty())
            .unwrap();
        assert_eq!(presented_token(&req), Some(("ghi".into(), true)));
        let req = axum::http::Request::builder()
            .uri("/?cerver_tokenx=1")
            .body(Body::empty())
            .unwrap();
        assert_eq!(presented_token(&req), None);
    }

    fn cookie_after_strip(cookies: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut req = axum::http::Request::builder()
            .uri("/")
            .body(Body::empty())
            .unwrap();
        for c in cookies {
            req.headers_mut()
                .append(header::COOKIE, HeaderValue::from_bytes(c).unwrap());
        }
        strip_token(&mut req);
        req.headers()
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn cookies_are_untouched_unless_they_carry_the_token() {
        // No token pair: every byte stays, odd pairs included.
        for cookies in [
            &[&b"a=1;b=2;;  c"[..]][..],
            &[b"x=\xe9\xff; y=\"q\"", b"z"],
            &[b"cerver_port_tokenx=1; cerver_port_token"],
        ] {
            let want: Vec<Vec<u8>> = cookies.iter().map(|c| c.to_vec()).collect();
            assert_eq!(cookie_after_strip(cookies), want);
        }
        // With it: only that pair goes; the other pairs are kept as they were.
        assert_eq!(
            cookie_after_strip(&[b"a=\xe9; cerver_port_token=abc;noeq; b==2 ", b"c=3"]),
            [b"a=\xe9; noeq; b==2".to_vec(), b"c=3".to_vec()]
        );
        assert_eq!(
            cookie_after_strip(&[b" cerver_port_token = abc ", b"c=3"]),
            [b"c=3".to_vec()]
        );
        let req = axum::http::Request::builder()
            .uri("/")
            .header(
                "cookie",
                HeaderValue::from_bytes(b"a=\xff; cerver_port_token=ghi").unwrap(),
            )
            .body(Body::empty())
            .unwrap();
        assert_eq!(presented_token(&req), Some(("ghi".into(), true)));
    }
}
