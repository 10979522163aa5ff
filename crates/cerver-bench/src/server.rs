//! A `cerver serve` child process on 127.0.0.1 with its own temporary data dir, and the few
//! API calls the benchmark makes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::api::Api;
use crate::procs;

/// How long the server may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long SIGTERM may take (the server destroys its sandboxes first) before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest any one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Server {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub data_dir: PathBuf,
    /// Holds the data dir and the server's stderr log.
    work_dir: PathBuf,
    pid: u32,
    child: Mutex<Option<Child>>,
    /// The pro key minted at start, and the API with it.
    key: String,
    api: Api,
}

impl Server {
    /// Starts `server serve --listen 127.0.0.1:0 --data-dir <tmp> --pool-size <pool_size>` and
    /// waits for its `listening on` line.
    pub fn start(binary: &Path, pool_size: usize, tag: &str) -> anyhow::Result<Server> {
        Server::start_with(binary, pool_size, tag, &[])
    }

    /// [`Server::start`] with more `serve` arguments.
    pub fn start_with(
        binary: &Path,
        pool_size: usize,
        tag: &str,
        extra: &[&str],
    ) -> anyhow::Result<Server> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let work_dir =
            std::env::temp_dir().join(format!("cerver-bench-{}-{tag}-{nanos}", std::process::id()));
        let data_dir = work_dir.join("data");
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("create {}", data_dir.display()))?;
        // A pro-plan key, so that plan quotas never limit the benchmark.
        let key = create_key(binary, &data_dir, "bench@example.com")?;
        let log = std::fs::File::create(work_dir.join("server.log"))?;
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(["--pool-size", &pool_size.to_string()])
            .args(extra)
            .env("CERVER_LOG", "warn")
            .env_remove("CERVER_SMTP_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;

        // Read stdout on a thread (keeps draining it afterwards so the server never blocks).
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                    sent = true;
                }
            }
        });

        let mut server = Server {
            base: String::new(),
            data_dir,
            work_dir,
            pid: child.id(),
            child: Mutex::new(Some(child)),
            api: Api::new("http://127.0.0.1:0", &key, REQUEST_TIMEOUT)?,
            key,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(base) if base.starts_with("http://127.0.0.1:") => {
                server.api = Api::new(&base, &server.key, REQUEST_TIMEOUT)?;
                server.base = base;
            }
            Ok(base) => bail!("server listens on {base}, not on 127.0.0.1"),
            Err(_) => {
                server.check_alive()?;
                bail!(
                    "server did not print `listening on` within {START_TIMEOUT:?}: {}",
                    server.log_tail()
                )
            }
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A pro-plan key of a new user `email`, minted with the admin CLI (beside the running
    /// server, as an operator would).
    pub fn mint_key(&self, binary: &Path, email: &str) -> anyhow::Result<String> {
        create_key(binary, &self.data_dir, email)
    }

    /// Fails if the server has exited (it should only exit when [`Server::stop`] asks it to).
    pub fn check_alive(&self) -> anyhow::Result<()> {
        let status = match self.child.lock().unwrap().as_mut().map(|c| c.try_wait()) {
            None => bail!("server already stopped"),
            Some(Ok(None)) => return Ok(()),
            Some(Ok(Some(status))) => status,
            Some(Err(e)) => bail!("wait for server: {e}"),
        };
        bail!(
            "the server (pid {}) exited unexpectedly: {status} (signalled from outside the \
             benchmark?); {}",
            self.pid,
            self.log_tail()
        )
    }

    /// The last lines of the server's stderr, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.work_dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n");
        if tail.is_empty() {
            "(server log is empty)".into()
        } else {
            format!("server log:\n{tail}")
        }
    }

    /// The API with the server's own key (a pro user's).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The server's own key.
    pub fn api_key(&self) -> &str {
        &self.key
    }

    /// The API with another key (its own HTTP client).
    pub fn api_with_key(&self, key: &str) -> anyhow::Result<Api> {
        Api::new(&self.base, key, REQUEST_TIMEOUT)
    }

    /// `r`, with the server's exit (and log tail) in place of the error when it has died.
    fn alive<T>(&self, r: anyhow::Result<T>) -> anyhow::Result<T> {
        if r.is_err() {
            self.check_alive()?;
        }
        r
    }

    /// `POST /sandbox` (empty body) -> (sandbox id, engine).
    pub async fn create(&self) -> anyhow::Result<(String, String)> {
        self.create_with(None).await
    }

    /// `POST /sandbox`, with `{"engine": engine}` when given (no body otherwise).
    pub async fn create_with(&self, engine: Option<&str>) -> anyhow::Result<(String, String)> {
        let body = engine.map_or(Value::Null, |e| json!({ "engine": e }));
        self.alive(self.api.create(body).await)
    }

    /// `POST /sandbox/{id}/install` of `packages`; fails unless it succeeded.
    pub async fn install(&self, id: &str, packages: &str) -> anyhow::Result<()> {
        self.alive(self.api.install(id, packages).await)
    }

    /// `POST /sandbox/{id}/run`; fails unless the run exits 0 with `expect` as its output.
    /// Returns the run's `duration` as the server reports it (whole ms).
    pub async fn run(&self, id: &str, code: &str, expect: &str) -> anyhow::Result<Duration> {
        self.alive(self.api.run(id, code, expect).await)
    }

    /// `DELETE /sandbox/{id}`.
    pub async fn delete(&self, id: &str) -> anyhow::Result<()> {
        self.alive(self.api.delete(id).await)
    }

    /// Waits until the server has `helpers` sandbox helpers (exactly, or at least when
    /// `at_least`) and their process trees have not changed for a second: a heuristic for "the
    /// warm pool is full and idle", as the API does not expose the pool (and the server keeps a
    /// pool per engine). Returns how long that took.
    pub async fn wait_for_helpers(
        &self,
        helpers: usize,
        at_least: bool,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let mut last = None;
        let mut stable_since = Instant::now();
        loop {
            let trees = procs::jail_trees(self.pid());
            let now = (trees.helpers, trees.pids.len());
            if last != Some(now) {
                last = Some(now);
                stable_since = Instant::now();
            } else if (trees.helpers == helpers || (at_least && trees.helpers > helpers))
                && stable_since.elapsed() >= Duration::from_secs(1)
            {
                return Ok(start.elapsed());
            }
            self.check_alive()?;
            if start.elapsed() > timeout {
                bail!(
                    "waited {timeout:?} for {helpers} sandbox helpers; have {} ({})",
                    trees.helpers,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then wait (SIGKILL after [`STOP_TIMEOUT`]); removes the temporary directory.
    /// Returns whether the server exited on SIGTERM.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return true;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let clean = match nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
            Ok(()) => {
                let deadline = Instant::now() + STOP_TIMEOUT;
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) => break true,
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        _ => break false,
                    }
                }
            }
            _ => false,
        };
        if !clean {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.work_dir);
        clean
    }
}

/// `cerver admin create-key --plan pro` for `email` on `data_dir`; returns the key.
fn create_key(binary: &Path, data_dir: &Path, email: &str) -> anyhow::Result<String> {
    let admin = Command::new(binary)
        .args([
            "admin",
            "create-key",
            "--email",
            email,
            "--plan",
            "pro",
            "--data-dir",
        ])
        .arg(data_dir)
        .output()
        .with_context(|| format!("run {} admin create-key", binary.display()))?;
    if !admin.status.success() {
        bail!(
            "admin create-key failed: {}",
            String::from_utf8_lossy(&admin.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&admin.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// An HTTP client that sends `key` as its bearer token.
pub fn client_with_key(key: &str, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().context("API key header")?,
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .timeout(timeout)
        .build()?)
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
