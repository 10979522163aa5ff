//! Port exposure against the real binary: `GET /sandbox/:id/host` and the Host-header proxy in
//! front of the API.

mod common;

use std::time::Duration;

use common::WEB_SERVER;
use common::{Server, client_with_key, create_key};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// The label of a sandbox id: its first 8 hex characters.
fn label(id: &str) -> String {
    id.chars().filter(|c| *c != '-').take(8).collect()
}

fn server_port(s: &Server) -> u16 {
    s.base.rsplit(':').next().unwrap().parse().unwrap()
}

/// A plain client (no API key): exposed ports are public.
fn anonymous() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `GET <path>` on the server with `Host: <host>`; status, content type and body.
async fn via_host(s: &Server, host: &str, path: &str, accept: &str) -> (u16, String, String) {
    let r = anonymous()
        .get(s.url(path))
        .header("host", host)
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

#[tokio::test]
async fn host_checks_the_plan_then_the_sandbox_the_port_and_the_engine() {
    let s = Server::start();
    let workers = s.sandbox().await;
    let containers = s.sandbox_with(json!({"engine": "containers"})).await;

    // Trial: 403 before anything else, whatever the sandbox or the port.
    let trial = client_with_key(&create_key(&s.data_dir, "trial@example.com", "trial"));
    for path in [
        format!("/sandbox/{containers}/host?port=8080"),
        format!("/sandbox/{workers}/host?port=99999"),
        "/sandbox/no-such-sandbox/host?port=8080".to_string(),
        "/sandbox/no-such-sandbox/host".to_string(),
    ] {
        let r = trial.get(s.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"].as_str().unwrap().contains("port exposure"),
            "{v}"
        );
    }

    // Workers: 400, pointing at containers.
    let (status, v) = s.get(&format!("/sandbox/{workers}/host?port=8080")).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("containers"), "{v}");

    // Bad ports: 400.
    for bad in [
        "", "0", "65536", "99999", "-1", "abc", "80.5", "08080", "+80", "%2080", "1e3",
    ] {
        let (status, v) = s
            .get(&format!("/sandbox/{containers}/host?port={bad}"))
            .await;
        assert_eq!(status, 400, "port {bad:?}: {v}");
    }
    let (status, _) = s.get(&format!("/sandbox/{containers}/host")).await;
    assert_eq!(status, 400);

    // Unknown and other users' sandboxes: 404.
    let (status, _) = s.get("/sandbox/no-such-sandbox/host?port=8080").await;
    assert_eq!(status, 404);
    let other = client_with_key(&create_key(&s.data_dir, "other@example.com", "pro"));
    let r = other
        .get(s.url(&format!("/sandbox/{containers}/host?port=8080")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Containers on pro and free: the documented answer.
    for (port, want_port) in [("8080", 8080), ("1", 1), ("65535", 65535)] {
        let (status, v) = s
            .get(&format!("/sandbox/{containers}/host?port={port}"))
            .await;
        assert_eq!(status, 200, "{v}");
        let host = format!("{}-{want_port}.sandbox.localhost", label(&containers));
        assert_eq!(v["sandbox_id"], containers.as_str());
        assert_eq!(v["port"], want_port);
        assert_eq!(v["host"], host.as_str());
        assert_eq!(
            v["url"],
            format!("http://{host}:{}/", server_port(&s)).as_str()
        );
    }
    let free_key = create_key(&s.data_dir, "free@example.com", "free");
    let free = client_with_key(&free_key);
    let r = free
        .post(s.url("/sandbox"))
        .json(&json!({"engine": "containers"}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["sandbox_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = free
        .get(s.url(&format!("/sandbox/{id}/host?port=3000")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn labels_are_unique_among_live_sandboxes() {
    let s = Server::start();
    let mut labels = std::collections::HashSet::new();
    for _ in 0..8 {
        let id = s.sandbox().await;
        assert!(labels.insert(label(&id)), "label of {id} repeated");
    }
}

#[tokio::test]
async fn the_public_address_is_configurable() {
    let dir = std::env::temp_dir().join(format!("cerver-ports-{}", common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("cerver.toml");
    std::fs::write(
        &config,
        "[ports]\ndomain = \"Apps.Example.TEST.\"\nscheme = \"http\"\npublic_port = 8000\n",
    )
    .unwrap();
    // The TOML file sets the domain; flags win over it for the scheme and the port.
    let s = Server::start_in(
        dir.join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--sandbox-scheme",
            "https",
            "--sandbox-public-port",
            "443",
        ],
    );
    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    let (status, v) = s.get(&format!("/sandbox/{id}/host?port=80")).await;
    assert_eq!(status, 200, "{v}");
    let host = format!("{}-80.apps.example.test", label(&id));
    assert_eq!(v["host"], host.as_str());
    assert_eq!(v["url"], format!("https://{host}/").as_str());
    // The proxy answers for the configured domain, not the default one.
    let (status, _, _) = via_host(&s, &host, "/", "application/json").await;
    assert_eq!(status, 502, "exposed, but no network address in this build");
    let default_host = format!("{}-80.sandbox.localhost", label(&id));
    let (status, _, body) = via_host(&s, &default_host, "/health", "*/*").await;
    assert_eq!((status, body.contains("ok")), (200, true), "{body}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sandbox_hosts_never_reach_the_api() {
    let s = Server::start();
    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    let workers = s.sandbox().await;
    let lbl = label(&id);

    // A port nobody exposed, a workers sandbox, an unknown label: 404, as JSON or a page, and
    // never the API's answer (no 401 for a missing key).
    for host in [
        format!("{lbl}-8080.sandbox.localhost"),
        format!("{}-8080.sandbox.localhost", label(&workers)),
        "00000000-8080.sandbox.localhost".to_string(),
        format!("x.{lbl}-8080.sandbox.localhost"),
    ] {
        for path in ["/", "/health", "/sandboxes", "/openapi.json"] {
            let (status, ct, body) = via_host(&s, &host, path, "application/json").await;
            assert_eq!(status, 404, "{host}{path}: {body}");
            assert!(ct.starts_with("application/json"), "{ct}");
            assert!(!body.contains("openapi"), "{body}");
            let (status, ct, body) = via_host(&s, &host, path, "text/html").await;
            assert_eq!(status, 404, "{host}{path}: {body}");
            assert!(ct.starts_with("text/html"), "{ct}: {body}");
        }
    }

    // Exposed: the proxy takes it (no address in this build: 502), without an API key.
    let (status, _) = s.get(&format!("/sandbox/{id}/host?port=8080")).await;
    assert_eq!(status, 200);
    let host = format!("{lbl}-8080.sandbox.localhost");
    let (status, ct, body) = via_host(&s, &host, "/health", "application/json").await;
    assert_eq!(status, 502, "{body}");
    assert!(ct.starts_with("application/json"), "{ct}");
    let (status, ct, _) = via_host(&s, &host.to_uppercase(), "/", "text/html").await;
    assert_eq!((status, ct.starts_with("text/html")), (502, true));
    // Only that port.
    let (status, _, _) = via_host(&s, &format!("{lbl}-8081.sandbox.localhost"), "/", "*/*").await;
    assert_eq!(status, 404);

    // Once the sandbox is gone, so is its host.
    let (status, _) = s.delete(&format!("/sandbox/{id}")).await;
    assert_eq!(status, 200);
    let (status, _, _) = via_host(&s, &host, "/", "*/*").await;
    assert_eq!(status, 404);
}

/// Sends raw bytes as one HTTP/1.1 request and returns the status code of the answer.
async fn raw_status(s: &Server, request: &[u8]) -> u16 {
    let addr = s.base.trim_start_matches("http://");
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        if n == 0 {
            return 0; // closed without an answer (hyper refusing a malformed request)
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn hostile_host_headers_are_handled() {
    let s = Server::start();
    let hosts: Vec<&[u8]> = vec![
        b"",
        b":",
        b"::::",
        b"[::1]:1",
        b"[",
        b"sandbox.localhost",
        b".sandbox.localhost",
        b"..sandbox.localhost",
        b"abcdef01-0.sandbox.localhost",
        b"abcdef01-65536.sandbox.localhost",
        b"abcdef01-99999999999999999999.sandbox.localhost",
        b"abcdef01-80.sandbox.localhost:",
        b"abcdef01-80.sandbox.localhost:-1",
        b"abcdef01-80.sandbox.localhost:99999999999",
        b"ABCDEF01-80.SANDBOX.LOCALHOST.",
        b"abcdef01-80.sandbox.localhost..",
        b"a.b.c.d.e.abcdef01-80.sandbox.localhost",
        b"abcdef01-80.sandbox.localhost.evil.example",
        b"\xc3\xa9\xc3\xa9.sandbox.localhost",
        b"abcdef01-80.sandbox.localhost\xff",
        b"\xff\xfe\xfd",
        b"\t abcdef01-80.sandbox.localhost \t",
    ];
    let long = format!("{}.sandbox.localhost", "a".repeat(10_000));
    let mut all = hosts.clone();
    all.push(long.as_bytes());
    for host in &all {
        let r = anonymous()
            .get(s.url("/health"))
            .header(
                "host",
                reqwest::header::HeaderValue::from_bytes(host).unwrap(),
            )
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!(
            status == 200 || status == 404,
            "Host {:?} answered {status}",
            String::from_utf8_lossy(host)
        );
    }
    // No Host at all, two of them, an absolute URI naming a sandbox host.
    assert_eq!(raw_status(&s, b"GET /health HTTP/1.1\r\n\r\n").await, 200);
    assert_eq!(raw_status(&s, b"GET /health HTTP/1.0\r\n\r\n").await, 200);
    let two =
        b"GET /health HTTP/1.1\r\nHost: abcdef01-80.sandbox.localhost\r\nHost: 127.0.0.1\r\n\r\n";
    assert!(matches!(raw_status(&s, two).await, 0 | 400 | 404));
    let absolute =
        b"GET http://abcdef01-80.sandbox.localhost/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_eq!(raw_status(&s, absolute).await, 404);
    // The API still works.
    let (status, _) = s.get("/sandboxes").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn port_tokens_when_required() {
    let s = Server::start_with(&["--port-tokens"]);
    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    let (status, v) = s.get(&format!("/sandbox/{id}/host?port=8080")).await;
    assert_eq!(status, 200, "{v}");
    let host = v["host"].as_str().unwrap().to_string();
    let url = v["url"].as_str().unwrap().to_string();
    let token = url
        .split_once("?cerver_token=")
        .expect("the URL carries the token")
        .1
        .to_string();
    assert_eq!(token.len(), 32);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    assert_eq!(
        url,
        format!("http://{host}:{}/?cerver_token={token}", server_port(&s))
    );
    // The same token every time; another port has another one.
    let (_, again) = s.get(&format!("/sandbox/{id}/host?port=8080")).await;
    assert_eq!(again["url"], url.as_str());
    let (_, other) = s.get(&format!("/sandbox/{id}/host?port=8081")).await;
    let other_token = other["url"].as_str().unwrap().split_once('=').unwrap().1;
    assert_ne!(other_token, token);
    // The secret lives in the data dir, private.
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(s.data_dir.join("port-token.secret")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // Missing: 401; wrong: 403; right (query, header or cookie): through to the sandbox (no
    // network address in this build: 502).
    let (status, ct, _) = via_host(&s, &host, "/", "application/json").await;
    assert_eq!((status, ct.starts_with("application/json")), (401, true));
    let (status, ct, _) = via_host(&s, &host, "/", "text/html").await;
    assert_eq!((status, ct.starts_with("text/html")), (401, true));
    let (status, _, _) = via_host(&s, &host, &format!("/?cerver_token={other_token}"), "*/*").await;
    assert_eq!(status, 403);
    let (status, _, _) = via_host(&s, &host, "/?cerver_token=", "*/*").await;
    assert_eq!(status, 403);
    let (status, _, _) = via_host(&s, &host, &format!("/?cerver_token={token}"), "*/*").await;
    assert_eq!(status, 502);
    for (name, value) in [
        ("x-cerver-token", token.clone()),
        ("cookie", format!("a=b; cerver_port_token={token}")),
    ] {
        let r = anonymous()
            .get(s.url("/"))
            .header("host", &host)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "{name}");
    }
    // A token of another server's secret does not open the port either.
    let r = anonymous()
        .get(s.url("/"))
        .header("host", &host)
        .header("x-cerver-token", "0".repeat(32))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn without_the_switch_urls_carry_no_token() {
    let s = Server::start();
    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    let (_, v) = s.get(&format!("/sandbox/{id}/host?port=8080")).await;
    assert!(!v["url"].as_str().unwrap().contains('?'), "{v}");
    assert!(!s.data_dir.join("port-token.secret").exists());
}

#[tokio::test]

async fn a_web_server_in_a_sandbox_is_reachable_through_its_host() {
    let s = Server::start();
    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/files"),
            json!({"path": "index.html", "content": "<h1>hello from the sandbox</h1>"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/run"),
            json!({"code": WEB_SERVER, "background": true}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = s.get(&format!("/sandbox/{id}/host?port=8080")).await;
    assert_eq!(status, 200, "{v}");
    let host = v["host"].as_str().unwrap().to_string();

    // The page, through the proxy (the server may take a moment to listen).
    let mut page = String::new();
    for _ in 0..100 {
        let (status, _, body) = via_host(&s, &host, "/", "text/html").await;
        if status == 200 {
            page = body;
            break;
        }
        assert_eq!(status, 502, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(page.contains("hello from the sandbox"), "{page}");
    let (status, _, body) = via_host(&s, &host, "/index.html", "*/*").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "<h1>hello from the sandbox</h1>")
    );

    // A WebSocket echo through the proxy.
    let addr = s.base.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{host}/ws"), stream)
        .await
        .expect("the WebSocket upgrade went through the proxy");
    assert_eq!(response.status(), 101);
    for msg in [
        Message::text("hello"),
        Message::text("é".repeat(1000)),
        Message::binary(vec![7u8; 70_000]),
    ] {
        ws.send(msg.clone()).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an echo")
            .unwrap()
            .unwrap();
        assert_eq!(echoed, msg);
    }
    let _ = ws.close(None).await;

    // The server killed: 502.
    let out = s
        .output(
            &id,
            "import os, signal\nos.kill(int(open('/home/user/server.pid').read()), signal.SIGKILL)\nprint('killed')",
        )
        .await;
    assert_eq!(out, "killed");
    let mut last = 0;
    for _ in 0..50 {
        let (status, ct, _) = via_host(&s, &host, "/", "application/json").await;
        last = status;
        if status == 502 {
            assert!(ct.starts_with("application/json"), "{ct}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, 502);
}

/// A sandbox server: `/stream` sends a line every 0.2 s for ever; anything else answers with
/// the request headers it got, as `name: value` lines (bytes as received).
const HEADERS_AND_STREAM_SERVER: &str = r#"
import time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        if self.path.startswith("/stream"):
            while True:
                self.wfile.write(b"tick\n")
                self.wfile.flush()
                time.sleep(0.2)
        body = "".join(f"{k.lower()}: {v}\n" for k, v in self.headers.items())
        self.wfile.write(body.encode("latin-1"))

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"#;

/// The header lines the sandbox server echoed, by lower-case name.
fn echoed(body: &[u8], name: &str) -> Vec<Vec<u8>> {
    body.split(|&b| b == b'\n')
        .filter_map(|line| {
            let rest = line.strip_prefix(name.as_bytes())?;
            rest.strip_prefix(b": ").map(<[u8]>::to_vec)
        })
        .collect()
}

#[tokio::test]
async fn cookies_slots_and_shutdown_through_a_real_sandbox() {
    let s = Server::start_with(&["--port-tokens", "--max-proxied-connections", "1"]);
    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/run"),
            json!({"code": HEADERS_AND_STREAM_SERVER, "background": true}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = s.get(&format!("/sandbox/{id}/host?port=8080")).await;
    assert_eq!(status, 200, "{v}");
    let host = v["host"].as_str().unwrap().to_string();
    let token = v["url"]
        .as_str()
        .unwrap()
        .split_once("?cerver_token=")
        .unwrap()
        .1
        .to_string();
    let get = |path: &str, cookie: &[u8]| {
        anonymous()
            .get(s.url(path))
            .header("host", &host)
            .header("x-cerver-token", &token)
            .header(
                "cookie",
                reqwest::header::HeaderValue::from_bytes(cookie).unwrap(),
            )
            .header("forwarded", "for=203.0.113.9")
            .header("x-real-ip", "203.0.113.9")
    };
    let mut body = Vec::new();
    for _ in 0..100 {
        let r = get("/echo", b"x=1;y=\xe9;  z").send().await.unwrap();
        if r.status() == 200 {
            body = r.bytes().await.unwrap().to_vec();
            break;
        }
        assert_eq!(r.status(), 502);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Without the token pair, the cookies go through byte for byte.
    assert_eq!(echoed(&body, "cookie"), [b"x=1;y=\xe9;  z".to_vec()]);
    // The client's own `Forwarded` and `X-Real-IP` do not.
    assert!(echoed(&body, "forwarded").is_empty());
    assert_eq!(echoed(&body, "x-real-ip"), [b"127.0.0.1".to_vec()]);
    // With it, only that pair goes.
    let r = get(
        "/echo",
        format!("a=\u{e9}; cerver_port_token={token}; noeq; b=2").as_bytes(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert_eq!(
        echoed(&body, "cookie"),
        ["a=\u{e9}; noeq; b=2".as_bytes().to_vec()]
    );

    // A stream takes the server's only proxied-connection slot: the next exchange is a 503.
    let mut stream = get("/stream", b"k=v").send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.chunk().await.unwrap().unwrap(), "tick\n");
    let r = get("/echo", b"k=v")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "too_many_connections", "{v}");

    // The endless stream does not hold up the server's shutdown.
    let t = std::time::Instant::now();
    s.stop();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(stream);
}

#[test]
fn bad_port_settings_refuse_to_start() {
    for (flag, value, says) in [
        ("--sandbox-domain", "bad domain", "invalid sandbox domain"),
        ("--sandbox-domain", "", "invalid sandbox domain"),
        ("--sandbox-scheme", "ftp", "invalid public scheme"),
        ("--sandbox-public-port", "0", "public port"),
    ] {
        let dir = std::env::temp_dir().join(format!("cerver-ports-{}", common::rand_suffix()));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cerver"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .args([flag, value])
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value:?} was accepted");
        assert!(stderr.contains(says), "{flag} {value:?}: {stderr}");
    }
}
