//! The load: users cycling through the API's everyday calls, and a few abusive sandboxes.
//! Every request is timed and its status recorded; a failed expectation is an error (the soak
//! fails), a 5xx is counted on its own.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use serde_json::{Value, json};

/// What every request of the soak left behind.
#[derive(Default)]
pub struct Record {
    /// Latency of every API request that got an answer.
    pub latencies: Vec<Duration>,
    pub requests: u64,
    pub server_errors: Vec<String>,
    /// Failed expectations (wrong output, unexpected status, transport errors).
    pub errors: Vec<String>,
    /// Completed cycles per kind (`user`, `stream`, `files`, `fork bomb`, ...).
    pub cycles: std::collections::BTreeMap<&'static str, u64>,
}

/// One user's view of the server: a client with its key, and the shared record.
#[derive(Clone)]
pub struct User {
    pub base: String,
    pub client: reqwest::Client,
    pub record: Arc<Mutex<Record>>,
}

impl User {
    fn note(&self, started: Instant, status: u16, what: &str) {
        let mut r = self.record.lock().unwrap();
        r.requests += 1;
        r.latencies.push(started.elapsed());
        if status >= 500 {
            r.server_errors.push(format!("{what}: HTTP {status}"));
        }
    }

    pub fn error(&self, e: anyhow::Error) {
        let mut r = self.record.lock().unwrap();
        if r.errors.len() < 50 {
            r.errors.push(format!("{e:#}"));
        }
    }

    fn cycle(&self, kind: &'static str) {
        *self.record.lock().unwrap().cycles.entry(kind).or_default() += 1;
    }

    /// One request; returns (status, JSON body or Null). Transport errors are errors.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let started = Instant::now();
        let resp = req
            .send()
            .await
            .with_context(|| format!("{path}: request"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.with_context(|| format!("{path}: body"))?;
        self.note(started, status, path);
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, v) = self.call(method, path, body).await?;
        if status != 200 {
            bail!("{path}: HTTP {status}: {v}");
        }
        Ok(v)
    }

    pub async fn create(&self, body: Value) -> anyhow::Result<String> {
        let v = self
            .expect(reqwest::Method::POST, "/sandbox", Some(body))
            .await?;
        v["sandbox_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("create: no sandbox_id in {v}"))
    }

    pub async fn delete(&self, id: &str) -> anyhow::Result<()> {
        self.expect(reqwest::Method::DELETE, &format!("/sandbox/{id}"), None)
            .await
            .map(|_| ())
    }

    async fn run(&self, id: &str, code: &str, timeout_s: u64) -> anyhow::Result<Value> {
        let body = json!({"code": code, "timeout": timeout_s});
        self.expect(
            reqwest::Method::POST,
            &format!("/sandbox/{id}/run"),
            Some(body),
        )
        .await
    }

    /// `/run/stream`: the `data:` events until `exit`, parsed.
    async fn run_stream(&self, id: &str, code: &str) -> anyhow::Result<Vec<Value>> {
        let url = format!("{}/sandbox/{id}/run/stream", self.base);
        let started = Instant::now();
        let resp = self
            .client
            .post(url)
            .json(&json!({"code": code}))
            .send()
            .await
            .context("stream: request")?;
        let status = resp.status().as_u16();
        self.note(started, status, "/run/stream");
        if status != 200 {
            bail!("stream: HTTP {status}");
        }
        let mut body = Vec::new();
        let mut chunks = resp.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            body.extend_from_slice(&chunk.context("stream: body")?);
        }
        let text = String::from_utf8(body).context("stream: not UTF-8")?;
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).context("stream: event is not JSON"))
            .collect()
    }

    /// One everyday cycle: create, run, stream, write + read + list files, delete.
    pub async fn everyday(&self, n: u64) -> anyhow::Result<()> {
        let id = self
            .create(json!({"envs": {"SOAK": n.to_string()}}))
            .await?;
        let result = self.everyday_in(&id, n).await;
        let deleted = self.delete(&id).await;
        result?;
        deleted?;
        self.cycle("everyday");
        Ok(())
    }

    async fn everyday_in(&self, id: &str, n: u64) -> anyhow::Result<()> {
        let v = self
            .run(id, "import os\nprint(int(os.environ['SOAK']) * 2)", 30)
            .await?;
        if v["output"].as_str() != Some(&(n * 2).to_string()) || v["status"] != "ok" {
            bail!("run: unexpected result {v}");
        }
        let events = self
            .run_stream(id, "import sys\nfor i in range(3):\n    print(i, flush=True)\nprint('e', file=sys.stderr)")
            .await?;
        let stdout: String = events
            .iter()
            .filter(|e| e["type"] == "stdout")
            .filter_map(|e| e["data"].as_str())
            .collect();
        let last = events.last().cloned().unwrap_or_default();
        if stdout != "0\n1\n2\n" || last["type"] != "exit" || last["status"] != "ok" {
            bail!("stream: unexpected events {events:?}");
        }
        let content = format!("soak {n}\n");
        let path = format!("/sandbox/{id}/files");
        let body = json!({"path": "dir/soak.txt", "content": content});
        self.expect(reqwest::Method::POST, &path, Some(body))
            .await?;
        let read = self
            .expect(
                reqwest::Method::GET,
                &format!("{path}?path=dir/soak.txt"),
                None,
            )
            .await?;
        if read["content"].as_str() != Some(content.as_str()) {
            bail!("read file: unexpected {read}");
        }
        let list = self.expect(reqwest::Method::GET, &path, None).await?;
        if !list.to_string().contains("soak.txt") {
            bail!("list files: soak.txt missing from {list}");
        }
        Ok(())
    }

    /// Abusive code in one sandbox, until `deadline`: each run must answer 200 with a verdict
    /// of the server's, and the sandbox must still run `print` afterwards.
    pub async fn abuse(&self, kind: &'static str, deadline: Instant) -> anyhow::Result<()> {
        let id = self.create(json!({})).await?;
        let result = self.abuse_in(&id, kind, deadline).await;
        let deleted = self.delete(&id).await;
        result.and(deleted)
    }

    async fn abuse_in(
        &self,
        id: &str,
        kind: &'static str,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let (code, verdicts): (&str, &[&str]) = match kind {
            "fork bomb" => (FORK_BOMB, &["timeout", "killed", "error"]),
            // Reclaim at `memory.high` can slow the bomb enough that the timeout ends it first.
            "memory bomb" => (MEMORY_BOMB, &["oom", "timeout"]),
            _ => (OUTPUT_BOMB, &["timeout"]),
        };
        while Instant::now() < deadline {
            let v = self.run(id, code, 10).await?;
            let status = v["status"].as_str().unwrap_or_default();
            if !verdicts.contains(&status) {
                bail!("{kind}: status {status:?}, expected one of {verdicts:?}");
            }
            if kind == "output bomb" && v["output"].as_str().map_or(0, str::len) > (1 << 20) + 4096
            {
                bail!("output bomb: more than 1 MiB of output in the result");
            }
            let after = self.run(id, "print('alive')", 30).await?;
            if after["output"] != "alive" {
                bail!("{kind}: the sandbox does not run code afterwards: {after}");
            }
            self.cycle(kind);
        }
        Ok(())
    }

    /// Whether this server creates containers sandboxes (creates and deletes one).
    pub async fn containers_available(&self) -> anyhow::Result<bool> {
        let body = json!({"engine": "containers"});
        match self
            .call(reqwest::Method::POST, "/sandbox", Some(body))
            .await?
        {
            (200, v) => {
                self.delete(v["sandbox_id"].as_str().unwrap_or_default())
                    .await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Deletes every sandbox this user still has (after the load).
    pub async fn delete_all(&self) -> anyhow::Result<usize> {
        let list = self
            .expect(reqwest::Method::GET, "/sandboxes", None)
            .await?;
        let ids: Vec<String> = list["sandboxes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["sandbox_id"].as_str().map(str::to_string))
            .collect();
        for id in &ids {
            self.delete(id).await?;
        }
        Ok(ids.len())
    }

    /// A containers sandbox installs `requirement` from the host's wheel cache and imports it.
    pub async fn install_from_cache(&self, requirement: &str, module: &str) -> anyhow::Result<()> {
        let id = self.create(json!({"engine": "containers"})).await?;
        let result = async {
            let path = format!("/sandbox/{id}/install");
            let body = json!({"packages": requirement});
            let v = self
                .expect(reqwest::Method::POST, &path, Some(body))
                .await?;
            if v["success"] != true {
                bail!("install {requirement}: {v}");
            }
            let v = self
                .run(&id, &format!("import {module}\nprint('ok')"), 30)
                .await?;
            if v["output"] != "ok" {
                bail!("import {module} after install: {v}");
            }
            Ok(())
        }
        .await;
        let deleted = self.delete(&id).await;
        result?;
        deleted?;
        self.cycle("install");
        Ok(())
    }
}

const FORK_BOMB: &str =
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass";
/// Each chunk is written (`bytes * n`), so that it is resident at once.
const MEMORY_BOMB: &str = "chunks = []\nwhile True:\n    chunks.append(b'x' * (16 << 20))";
const OUTPUT_BOMB: &str =
    "import sys\nline = 'x' * 65535 + '\\n'\nwhile True:\n    sys.stdout.write(line)";
