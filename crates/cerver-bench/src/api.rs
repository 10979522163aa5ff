//! The API calls the benchmark times, with one key and one HTTP client (its own connection
//! pool, so that concurrent clients do not queue behind each other's connections).

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    client: reqwest::Client,
}

/// A timed `/run/stream`: time to the first event byte, to the end, and stdout received.
pub struct Streamed {
    pub first_byte: Duration,
    pub total: Duration,
    pub stdout_bytes: usize,
    pub last: Value,
}

impl Api {
    pub fn new(base: &str, key: &str, timeout: Duration) -> anyhow::Result<Api> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().context("API key header")?,
        );
        Ok(Api {
            base: base.to_string(),
            client: reqwest::Client::builder()
                .default_headers(headers)
                .timeout(timeout)
                .pool_max_idle_per_host(4)
                .build()?,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call(&self, req: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("{what}: request failed"))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .with_context(|| format!("{what}: read body"))?;
        if !status.is_success() {
            bail!("{what}: HTTP {status}: {body}");
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&body).with_context(|| format!("{what}: bad JSON: {body}"))
    }

    /// `POST /sandbox` with `body` (no body when `Null`) -> (sandbox id, engine).
    pub async fn create(&self, body: Value) -> anyhow::Result<(String, String)> {
        let mut req = self.client.post(self.url("/sandbox"));
        if !body.is_null() {
            req = req.json(&body);
        }
        let v = self.call(req, "create sandbox").await?;
        let id = v["sandbox_id"]
            .as_str()
            .ok_or_else(|| anyhow!("create sandbox: no sandbox_id in {v}"))?;
        let engine = v["engine"].as_str().unwrap_or("?");
        Ok((id.to_string(), engine.to_string()))
    }

    /// `DELETE /sandbox/{id}`.
    pub async fn delete(&self, id: &str) -> anyhow::Result<()> {
        let req = self.client.delete(self.url(&format!("/sandbox/{id}")));
        self.call(req, "delete sandbox").await.map(|_| ())
    }

    /// `POST /sandbox/{id}/run`; fails unless the run exits 0 with `expect` as its output
    /// (trailing whitespace aside). Returns the run's `duration` as the server reports it.
    pub async fn run(&self, id: &str, code: &str, expect: &str) -> anyhow::Result<Duration> {
        let req = self
            .client
            .post(self.url(&format!("/sandbox/{id}/run")))
            .json(&json!({ "code": code }));
        let v = self.call(req, "run").await?;
        let output = v["output"].as_str().unwrap_or_default();
        if v["exit_code"] != 0 || output.trim_end() != expect {
            let shown: String = v.to_string().chars().take(600).collect();
            bail!("run {code:?}: expected output {expect:?} and exit code 0, got {shown}");
        }
        Ok(Duration::from_millis(v["duration"].as_u64().unwrap_or(0)))
    }

    /// `POST /sandbox/{id}/run/stream`, read to its end.
    pub async fn stream(&self, id: &str, code: &str) -> anyhow::Result<Streamed> {
        let start = Instant::now();
        let resp = self
            .client
            .post(self.url(&format!("/sandbox/{id}/run/stream")))
            .json(&json!({ "code": code }))
            .send()
            .await
            .context("stream: request failed")?;
        if !resp.status().is_success() {
            bail!("stream: HTTP {}", resp.status());
        }
        let mut first_byte = None;
        let mut body = Vec::new();
        let mut chunks = resp.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.context("stream: body")?;
            if first_byte.is_none() && !chunk.is_empty() {
                first_byte = Some(start.elapsed());
            }
            body.extend_from_slice(&chunk);
        }
        let total = start.elapsed();
        let text = String::from_utf8(body).context("stream: not UTF-8")?;
        let mut stdout_bytes = 0;
        let mut last = Value::Null;
        for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let event: Value = serde_json::from_str(data).context("stream: event is not JSON")?;
            if event["type"] == "stdout" {
                stdout_bytes += event["data"].as_str().map_or(0, str::len);
            }
            last = event;
        }
        if last["type"] != "exit" {
            bail!("stream: the last event is not `exit`: {last}");
        }
        Ok(Streamed {
            first_byte: first_byte.unwrap_or(total),
            total,
            stdout_bytes,
            last,
        })
    }

    /// `POST /sandbox/{id}/files` with `content`, then `GET` it back; fails unless equal.
    pub async fn write_read(&self, id: &str, path: &str, content: &str) -> anyhow::Result<()> {
        let url = self.url(&format!("/sandbox/{id}/files"));
        let req = self
            .client
            .post(&url)
            .json(&json!({ "path": path, "content": content }));
        self.call(req, "write file").await?;
        let req = self.client.get(&url).query(&[("path", path)]);
        let v = self.call(req, "read file").await?;
        if v["content"].as_str() != Some(content) {
            bail!("read file {path}: content differs from what was written");
        }
        Ok(())
    }

    /// `POST /sandbox/{id}/install` of `packages`; fails unless it succeeded.
    pub async fn install(&self, id: &str, packages: &str) -> anyhow::Result<()> {
        let req = self
            .client
            .post(self.url(&format!("/sandbox/{id}/install")))
            .json(&json!({ "packages": packages }));
        let v = self.call(req, "install").await?;
        if v["success"] != true {
            bail!("install {packages:?}: {v}");
        }
        Ok(())
    }
}
