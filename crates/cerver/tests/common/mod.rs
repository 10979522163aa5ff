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
