//! The port proxy's forwarding, over real HTTP on loopback: a real upstream (axum, a raw TCP
//! server and a WebSocket echo) behind a front server whose only handler is
//! [`cerver_api::proxy::forward`] to a fixed address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::routing::{any, get, post};
use bytes::Bytes;
use cerver_api::proxy::{ForwardOptions, forward};
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

type Chunks = Arc<Mutex<Option<mpsc::Receiver<Bytes>>>>;

/// The upstream's shared state: chunks the test feeds to `/stream`, chunks `/upload` reports.
#[derive(Clone)]
struct Upstream {
    to_stream: Chunks,
    uploaded: mpsc::Sender<Bytes>,
}

async fn echo(req: Request) -> axum::Json<Value> {
    let (parts, body) = req.into_parts();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("?"))))
        .collect();
    let body = body.collect().await.unwrap().to_bytes();
    axum::Json(json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

async fn stream(State(u): State<Upstream>) -> Body {
    let rx = u
        .to_stream
        .lock()
        .await
        .take()
        .expect("one /stream per test");
    let s = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (Ok::<_, Infallible>(c), rx))
    });
    Body::from_stream(s)
}

async fn upload(State(u): State<Upstream>, req: Request) -> String {
    let mut body = req.into_body();
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len();
            u.uploaded.send(data).await.unwrap();
        }
    }
    format!("received {total} bytes")
}

struct Harness {
    front: SocketAddr,
    upstream: SocketAddr,
    to_stream: mpsc::Sender<Bytes>,
    uploaded: mpsc::Receiver<Bytes>,
}

async fn serve(app: Router) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap()
    });
    addr
}

/// A front server forwarding everything to `target`, each exchange holding a permit of
/// `slots` when given.
async fn front(target: SocketAddr, slots: Option<Arc<Semaphore>>) -> SocketAddr {
    let app = Router::new().fallback(
        move |ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request| {
            let slots = slots.clone();
            async move {
                let permit = slots.map(|s| s.try_acquire_owned().expect("a free slot"));
                let opts = ForwardOptions {
                    client: Some(peer.ip()),
                    scheme: "https".into(),
                    permit,
                    connect_timeout: Duration::from_secs(2),
                    ..Default::default()
                };
                forward(req, target, opts).await
            }
        },
    );
    serve(app).await
}

async fn harness() -> Harness {
    let (to_stream, rx) = mpsc::channel(4);
    let (uploaded_tx, uploaded) = mpsc::channel(16);
    let state = Upstream {
        to_stream: Arc::new(Mutex::new(Some(rx))),
        uploaded: uploaded_tx,
    };
    let upstream = Router::new()
        .route("/stream", get(stream))
        .route("/upload", post(upload))
        .fallback(any(echo))
        .with_state(state);
    let target = serve(upstream).await;
    Harness {
        front: front(target, None).await,
        upstream: target,
        to_stream,
        uploaded,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test]
async fn requests_and_headers_go_through() {
    let h = harness().await;
    let r = client()
        .post(format!("http://{}/some/path?a=1&b=%20", h.front))
        .header("host", "9f83e711-8080.sandbox.localhost:9999")
        .header("x-end-to-end", "kept")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "gopher")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic eDp5")
        .body("hello upstream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["uri"], "/some/path?a=1&b=%20");
    assert_eq!(v["body"], "hello upstream");
    let hd = &v["headers"];
    assert_eq!(hd["host"], "9f83e711-8080.sandbox.localhost:9999");
    assert_eq!(
        hd["x-forwarded-host"],
        "9f83e711-8080.sandbox.localhost:9999"
    );
    assert_eq!(hd["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(hd["x-forwarded-proto"], "https");
    assert_eq!(hd["x-end-to-end"], "kept");
    for hop in [
        "x-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(hd.get(hop).is_none(), "{hop} was forwarded: {hd}");
    }
}

/// A raw upstream: answers one request with `response` and hands the request head it got to
/// the test.
async fn raw_upstream(response: &'static [u8]) -> (SocketAddr, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let _ = tx.send(String::from_utf8_lossy(&head).into_owned()).await;
                s.write_all(response).await.unwrap();
                s.shutdown().await.unwrap();
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_dropped() {
    let (target, mut heads) = raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close, X-Hop\r\n\
          X-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\n\
          Trailer: X-T\r\nUpgrade: h2c\r\nX-Kept: yes\r\nSet-Cookie: a=1\r\n\
          Content-Length: 5\r\n\r\nhello",
    )
    .await;
    let front = front(target, None).await;
    let r = client()
        .get(format!("http://{front}/x"))
        .header("host", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let headers: HeaderMap = r.headers().clone();
    assert_eq!(r.text().await.unwrap(), "hello");
    assert_eq!(headers["x-kept"], "yes");
    assert_eq!(headers["set-cookie"], "a=1");
    for hop in [
        "x-hop",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    ] {
        assert!(headers.get(hop).is_none(), "{hop} came back: {headers:?}");
    }
    let head = heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /x http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nhost: abc\r\n"), "{head}");
}

#[tokio::test]
async fn response_bodies_stream() {
    let h = harness().await;
    let mut r = client()
        .get(format!("http://{}/stream", h.front))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Each chunk arrives before the next one exists: nothing is buffered whole.
    for i in 0..3 {
        let chunk = format!("chunk {i}\n");
        h.to_stream.send(Bytes::from(chunk.clone())).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), r.chunk())
            .await
            .expect("the chunk came through while the stream was open")
            .unwrap()
            .unwrap();
        assert_eq!(got, chunk.as_bytes());
    }
    drop(h.to_stream);
    assert!(r.chunk().await.unwrap().is_none());
}

#[tokio::test]
async fn request_bodies_stream() {
    let mut h = harness().await;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(1);
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }));
    let url = format!("http://{}/upload", h.front);
    let response = tokio::spawn(async move { client().post(url).body(body).send().await });
    // The upstream sees each chunk before the client has sent the next one.
    for i in 0..3 {
        let chunk = Bytes::from(format!("part {i};"));
        tx.send(Ok(chunk.clone())).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), h.uploaded.recv())
            .await
            .expect("the chunk reached the upstream while the upload was open")
            .unwrap();
        assert_eq!(got, chunk);
    }
    drop(tx);
    let r = response.await.unwrap().unwrap();
    assert_eq!(r.text().await.unwrap(), "received 21 bytes");
}

async fn ws_echo_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() || m.is_binary() {
                        ws.send(m).await.unwrap();
                    } else if m.is_close() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websockets_are_joined_through_the_proxy() {
    let slots = Arc::new(Semaphore::new(1));
    let front = front(ws_echo_upstream().await, Some(slots.clone())).await;
    let stream = TcpStream::connect(front).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{front}/ws"), stream)
        .await
        .expect("the upgrade went through");
    assert_eq!(response.status(), 101);
    for msg in [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text("x".repeat(100_000)),
    ] {
        ws.send(msg.clone()).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed, msg);
    }
    // The slot is held while the connection is open, and released when it closes.
    assert_eq!(slots.available_permits(), 0);
    ws.close(None).await.unwrap();
    drop(ws);
    for _ in 0..100 {
        if slots.available_permits() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the connection slot was not released");
}

#[tokio::test]
async fn an_exchange_releases_its_slot_when_done() {
    let h = harness().await;
    let slots = Arc::new(Semaphore::new(1));
    let front = front(h.upstream, Some(slots.clone())).await;
    for _ in 0..3 {
        let r = client()
            .get(format!("http://{front}/again"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        let mut released = false;
        for _ in 0..100 {
            if slots.available_permits() == 1 {
                released = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(released, "the slot stayed taken after the exchange");
    }
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_frees_the_slot() {
    let h = harness().await;
    let slots = Arc::new(Semaphore::new(1));
    let front = front(h.upstream, Some(slots.clone())).await;
    let mut r = client()
        .get(format!("http://{front}/stream"))
        .send()
        .await
        .unwrap();
    h.to_stream.send(Bytes::from("first")).await.unwrap();
    assert_eq!(r.chunk().await.unwrap().unwrap(), "first");
    assert_eq!(slots.available_permits(), 0);
    drop(r); // the upstream's stream never ends; the client goes away
    for _ in 0..100 {
        if slots.available_permits() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the slot stayed taken after the client left");
}

#[tokio::test]
async fn nothing_listening_is_a_502_as_json_or_html() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let front = front(dead, None).await;
    let r = client()
        .get(format!("http://{front}/"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "bad_gateway");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("nothing is listening"),
        "{v}"
    );

    let r = client()
        .get(format!("http://{front}/page"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = r.text().await.unwrap();
    assert!(
        page.contains("502") && page.contains("nothing is listening"),
        "{page}"
    );

    // A WebSocket upgrade to nothing is a 502 too.
    let stream = TcpStream::connect(front).await.unwrap();
    match tokio_tungstenite::client_async(format!("ws://{front}/ws"), stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 502),
        other => panic!("expected a 502: {other:?}"),
    }
}

#[tokio::test]
async fn an_upstream_that_hangs_up_is_a_502() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"not http at all\r\n\r\n").await;
            drop(s);
        }
    });
    let front = front(target, None).await;
    let r = client()
        .get(format!("http://{front}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
}

/// A front server forwarding everything to `target` with the options `make` builds per
/// exchange.
async fn front_with<F>(target: SocketAddr, make: F) -> SocketAddr
where
    F: Fn(SocketAddr) -> ForwardOptions + Clone + Send + Sync + 'static,
{
    let app = Router::new().fallback(
        move |ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request| {
            let make = make.clone();
            async move { forward(req, target, make(peer)).await }
        },
    );
    serve(app).await
}

async fn wait_for_permits(slots: &Semaphore, n: usize, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if slots.available_permits() == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn client_claims_about_the_client_are_not_forwarded() {
    let h = harness().await;
    let r = client()
        .get(format!("http://{}/who", h.front))
        .header("forwarded", "for=203.0.113.9;proto=https")
        .header("x-real-ip", "203.0.113.9")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let hd = &v["headers"];
    assert!(hd.get("forwarded").is_none(), "{hd}");
    assert_eq!(hd["x-real-ip"], "127.0.0.1");
    assert_eq!(hd["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn upstream_cookies_are_host_only_and_never_the_servers() {
    let (target, _heads) = raw_upstream(
        b"HTTP/1.1 200 OK\r\n\
          Set-Cookie: a=1; Path=/; Domain=sandbox.localhost; HttpOnly\r\n\
          Set-Cookie: cerver_session=planted; Domain=sandbox.localhost; Path=/\r\n\
          Set-Cookie: CERVER_port_token=x\r\n\
          Set-Cookie:  cerver_x=1\r\n\
          Set-Cookie: b=2;domain=.sandbox.localhost\r\n\
          Set-Cookie: c=\"3\"; SameSite=Lax;Max-Age=60\r\n\
          Set-Cookie: d=\xe9t\xe9; DOMAIN = x.example ; Secure\r\n\
          Content-Length: 2\r\n\r\nok",
    )
    .await;
    let front = front(target, None).await;
    let r = client()
        .get(format!("http://{front}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookies: Vec<&[u8]> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    assert_eq!(
        cookies,
        [
            &b"a=1; Path=/; HttpOnly"[..],
            b"b=2",
            b"c=\"3\"; SameSite=Lax;Max-Age=60",
            b"d=\xe9t\xe9; Secure",
        ]
    );
}

#[tokio::test]
async fn shutting_down_ends_streams_and_upgraded_connections() {
    let h = harness().await;
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let slots = Arc::new(Semaphore::new(2));
    let make = {
        let slots = slots.clone();
        move |_peer| ForwardOptions {
            permit: Some(slots.clone().try_acquire_owned().expect("a free slot")),
            closing: Some(closing.clone()),
            ..Default::default()
        }
    };
    let front = front_with(h.upstream, make.clone()).await;
    let ws_front = front_with(ws_echo_upstream().await, make).await;

    let mut r = client()
        .get(format!("http://{front}/stream"))
        .send()
        .await
        .unwrap();
    h.to_stream.send(Bytes::from("first")).await.unwrap();
    assert_eq!(r.chunk().await.unwrap().unwrap(), "first");
    let stream = TcpStream::connect(ws_front).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{ws_front}/ws"), stream)
        .await
        .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
    assert_eq!(slots.available_permits(), 0);

    closing_tx.send_replace(true);
    // The stream is cut (never ends cleanly: the upstream's stream is still open) ...
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match r.chunk().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await
    .expect("the stream ended once shutdown began");
    assert!(end.is_err(), "the stream ended as if complete");
    // ... and so is the WebSocket; both slots come back.
    let ws_end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the WebSocket ended once shutdown began");
    assert!(!matches!(ws_end, Some(Ok(Message::Text(_)))), "{ws_end:?}");
    assert!(wait_for_permits(&slots, 2, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn idle_exchanges_are_cut_and_free_their_slot() {
    // An upstream that writes as fast as it is read, for ever.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let firehose = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
                if s.write_all(head).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                while s.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    let slots = Arc::new(Semaphore::new(3));
    let make = {
        let slots = slots.clone();
        move |_peer| ForwardOptions {
            permit: Some(slots.clone().try_acquire_owned().expect("a free slot")),
            idle_timeout: Duration::from_millis(500),
            ..Default::default()
        }
    };
    let h = harness().await;
    let stuck = front_with(firehose, make.clone()).await;
    let quiet = front_with(h.upstream, make.clone()).await;
    let ws_front = front_with(ws_echo_upstream().await, make).await;

    // A client that stops reading a response.
    let unread = client()
        .get(format!("http://{stuck}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(unread.status(), 200);
    // A stream on which nothing comes, after a first chunk.
    let mut silent = client()
        .get(format!("http://{quiet}/stream"))
        .send()
        .await
        .unwrap();
    h.to_stream.send(Bytes::from("first")).await.unwrap();
    assert_eq!(silent.chunk().await.unwrap().unwrap(), "first");
    // A WebSocket nobody talks on, after one echo.
    let stream = TcpStream::connect(ws_front).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{ws_front}/ws"), stream)
        .await
        .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
    assert!(slots.available_permits() < 3);

    assert!(
        wait_for_permits(&slots, 3, Duration::from_secs(10)).await,
        "idle exchanges kept their slots"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(5), silent.chunk())
            .await
            .expect("the silent stream was cut")
            .is_err()
    );
    let ws_end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the idle WebSocket was cut");
    assert!(!matches!(ws_end, Some(Ok(Message::Text(_)))), "{ws_end:?}");
    drop(unread);

    // Traffic keeps an exchange alive past the idle timeout.
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("ws://{ws_front}/ws"),
        TcpStream::connect(ws_front).await.unwrap(),
    )
    .await
    .unwrap();
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let msg = Message::text(format!("still here {i}"));
        ws.send(msg.clone()).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), msg);
    }
}
