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
