//! Test harness: starts the real `cerver` binary on 127.0.0.1:0 with a temporary data dir and
//! talks to it over real HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub struct Server {
    pub base: String,
    pub data_dir: PathBuf,
    child: Child,
    /// A client that sends `key` (a pro-plan user's) with every request.
    pub client: reqwest::Client,
    pub key: String,
}

/// Runs `cerver admin create-key` on `data_dir` and returns the key (the last line of stdout).
pub fn create_key(data_dir: &std::path::Path, email: &str, plan: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cerver"))
        .args([
            "admin",
            "create-key",
            "--email",
            email,
            "--plan",
            plan,
            "--data-dir",
        ])
        .arg(data_dir)
        .output()
        .expect("run cerver admin");
    assert!(
        out.status.success(),
        "create-key failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string()
}

/// An HTTP client that authenticates with `key`.
pub fn client_with_key(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Starts `cerver serve` with extra arguments; panics if it does not come up.
    pub fn start_with(extra: &[&str]) -> Server {
        let data_dir = std::env::temp_dir().join(format!("cerver-test-{}", rand_suffix()));
        Self::start_in(data_dir, extra)
    }

    /// Starts a server on an existing (or new) data directory.
    pub fn start_in(data_dir: PathBuf, extra: &[&str]) -> Server {
        std::fs::create_dir_all(&data_dir).unwrap();
        let key = create_key(&data_dir, "tester@example.com", "pro");
        Self::start_keyed(data_dir, key, extra)
    }

    /// Starts a server whose client sends `key` (made elsewhere, e.g. in a shared database).
    pub fn start_keyed(data_dir: PathBuf, key: String, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cerver"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(["--pool-size", "1"])
            .args(extra)
            .env("CERVER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start cerver");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.trim().to_string();
            }
        };
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server {
            base,
            data_dir,
            child,
            client: client_with_key(&key),
            key,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_raw(&self, path: &str, body: &'static str) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Starts a background web server on port 8000 of sandbox `id` serving a page saying `text`,
    /// then fetches it through the port proxy with `host_header`, retrying for ~5 s while it
    /// starts; returns the body of the first 200 (empty if none came).
    pub async fn serve_and_fetch_page(&self, id: &str, host_header: &str, text: &str) -> String {
        let code = format!(
            "import http.server, os\nos.makedirs('site', exist_ok=True)\n\
             open('site/index.html','w').write('{text}')\nos.chdir('site')\n\
             http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=8000, bind='0.0.0.0')"
        );
        self.run_with(id, json!({"code": code, "background": true}))
            .await;
        for _ in 0..50 {
            let r = reqwest::Client::new()
                .get(self.url("/"))
                .header("host", host_header)
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                return r.text().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        String::new()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self.client.delete(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Creates a sandbox and returns its id.
    pub async fn sandbox(&self) -> String {
        self.sandbox_with(json!({})).await
    }

    pub async fn sandbox_with(&self, body: Value) -> String {
        let (status, v) = self.post("/sandbox", body).await;
        assert_eq!(status, 200, "create failed: {v}");
        v["sandbox_id"].as_str().unwrap().to_string()
    }

    /// Runs code synchronously; returns the response JSON (asserting HTTP 200).
    pub async fn run(&self, id: &str, code: &str) -> Value {
        self.run_with(id, json!({ "code": code })).await
    }

    pub async fn run_with(&self, id: &str, body: Value) -> Value {
        let (status, v) = self.post(&format!("/sandbox/{id}/run"), body).await;
        assert_eq!(status, 200, "run failed: {v}");
        v
    }

    /// Runs code and returns its stdout, asserting exit code 0.
    pub async fn output(&self, id: &str, code: &str) -> String {
        let v = self.run(id, code).await;
        assert_eq!(v["exit_code"], 0, "code failed: {v}");
        v["output"].as_str().unwrap().to_string()
    }

    /// Sends SIGTERM and waits for a clean shutdown.
    pub fn stop(mut self) {
        self.terminate();
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit (then kills it); keeps
    /// the data dir. Returns it and the exit status if the server exited by itself.
    pub fn stop_keeping_data(
        mut self,
        within: Duration,
    ) -> (PathBuf, Option<std::process::ExitStatus>) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + within;
        let mut status = None;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let dir = std::mem::take(&mut self.data_dir);
        std::mem::forget(self);
        (dir, status)
    }

    /// Kills the server with SIGKILL (a crash) and keeps its data dir; returns the data dir.
    pub fn crash(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::take(&mut self.data_dir);
        std::mem::forget(self);
        dir
    }

    /// The cgroup directory (pids hierarchy) under which this server's sandboxes live.
    pub fn cgroup_dir(&self) -> PathBuf {
        cgroup_dir_of(&self.data_dir)
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub fn cgroup_dir_of(data_dir: &std::path::Path) -> PathBuf {
    let id = std::fs::read_to_string(data_dir.join("instance-id")).unwrap();
    PathBuf::from("/sys/fs/cgroup/pids/cerver").join(id.trim())
}

/// Names of the sandbox cgroups currently under `dir`.
pub fn sandbox_cgroups(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Unique per call within this test process (tests start servers in parallel, within the
/// same nanosecond now and then) and across processes.
pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}-{}-{}", std::process::id(), n, nanos)
}

/// A web server in the sandbox: `http.server` for files, plus a WebSocket echo on `/ws`
/// written with the standard library (handshake with hashlib/base64, unmasked replies).
pub const WEB_SERVER: &str = r#"
import base64, hashlib, os, struct
from http.server import ThreadingHTTPServer, SimpleHTTPRequestHandler

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

class Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        return super().do_GET()

    def recv_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.rfile.read(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        try:
            while True:
                b0, b1 = self.recv_exact(2)
                opcode, n = b0 & 0x0F, b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", self.recv_exact(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", self.recv_exact(8))[0]
                mask = self.recv_exact(4) if b1 & 0x80 else b"\0\0\0\0"
                data = bytes(c ^ mask[i % 4] for i, c in enumerate(self.recv_exact(n)))
                if opcode == 8:
                    self.wfile.write(b"\x88\x00")
                    return
                header = bytes([0x80 | opcode])
                if len(data) < 126:
                    header += bytes([len(data)])
                elif len(data) < 65536:
                    header += bytes([126]) + struct.pack(">H", len(data))
                else:
                    header += bytes([127]) + struct.pack(">Q", len(data))
                self.wfile.write(header + data)
                self.wfile.flush()
        except EOFError:
            return
        finally:
            self.close_connection = True

os.chdir(os.path.expanduser("~"))
with open("server.pid", "w") as f:
    f.write(str(os.getpid()))
ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"#;
