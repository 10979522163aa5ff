//! Metrics, request ids and log hygiene, against the real binary: `GET /metrics` after a
//! create, a run and a timeout; who may scrape; `X-Request-Id` round trips; and a log line
//! captured from the server's stderr carries the request id, the user and sandbox ids, and no
//! secret.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// A server listening on every address (so that a non-loopback peer can be tried), at `info`
/// with its output (stderr and stdout) captured line by line.
struct Captured {
    child: Child,
    port: u16,
    key: String,
    data_dir: std::path::PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Captured {
    fn start(extra: &[&str]) -> Captured {
        let data_dir = std::env::temp_dir().join(format!("cerver-test-{}", common::rand_suffix()));
        std::fs::create_dir_all(&data_dir).unwrap();
        let key = common::create_key(&data_dir, "ops@example.com", "pro");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cerver"))
            .args([
                "serve",
                "--listen",
                "0.0.0.0:0",
                "--pool-size",
                "1",
                "--data-dir",
            ])
            .arg(&data_dir)
            .args(extra)
            .env("CERVER_LOG", "info,rmcp=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cerver");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (sink, stderr) = (log.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            if let Some(addr) = line.strip_prefix("listening on http://") {
                break addr.trim().rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        // Log lines go to stdout or stderr depending on the subscriber: keep both.
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Captured {
            child,
            port,
            key,
            data_dir,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn client(&self) -> reqwest::Client {
        common::client_with_key(&self.key)
    }

    fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The value of the sample `name{labels...}` in a Prometheus text page (every listed label
/// must match), or 0 when absent.
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            series.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

async fn scrape(c: &reqwest::Client, url: &str) -> String {
    let resp = c.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    resp.text().await.unwrap()
}

/// A global IPv4 address of this host (not loopback), if it has one.
fn host_address() -> Option<String> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let cidr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)?;
    Some(cidr.split('/').next()?.to_string())
}

#[tokio::test]
async fn metrics_count_creates_runs_and_timeouts() {
    let s = Captured::start(&["--metrics-token", "op-metrics-token"]);
    let c = s.client();
    let before = scrape(&reqwest::Client::new(), &s.url("/metrics")).await;

    let created: Value = c
        .post(s.url("/sandbox"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["sandbox_id"]
        .as_str()
        .expect("sandbox id")
        .to_string();
    let run = |body: Value| {
        let (c, url) = (c.clone(), s.url(&format!("/sandbox/{id}/run")));
        async move {
            c.post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(run(json!({"code": "print(1)"})).await["exit_code"], 0);
    let slow = run(json!({"code": "while True: pass", "timeout": 1})).await;
    assert!(
        slow["error"].as_str().unwrap().contains("timed out"),
        "{slow}"
    );

    let after = scrape(&reqwest::Client::new(), &s.url("/metrics")).await;
    let w = ("engine", "workers");
    let grew = |name: &str, labels: &[(&str, &str)]| {
        let (a, b) = (sample(&before, name, labels), sample(&after, name, labels));
        assert!(b > a, "{name}{labels:?}: {a} -> {b}\n{after}");
    };
    grew("cerver_sandboxes_created_total", &[w]);
    grew(
        "cerver_runs_total",
        &[w, ("kind", "code"), ("outcome", "ok")],
    );
    grew(
        "cerver_runs_total",
        &[w, ("kind", "code"), ("outcome", "timeout")],
    );
    grew("cerver_run_timeouts_total", &[w]);
    grew("cerver_run_duration_seconds_count", &[w, ("kind", "code")]);
    // Requests by route template, never the raw path.
    let route = [
        ("route", "/sandbox/{id}/run"),
        ("method", "POST"),
        ("status", "200"),
    ];
    assert_eq!(
        sample(&after, "cerver_http_requests_total", &route),
        2.0,
        "{after}"
    );
    assert!(!after.contains(&id), "a raw path leaked into a label");
    grew(
        "cerver_http_request_duration_seconds_count",
        &[("route", "/sandbox")],
    );
    assert_eq!(sample(&after, "cerver_sandboxes", &[w]), 1.0, "{after}");
    assert!(
        after.contains("cerver_pool_ready{engine=\"workers\"}"),
        "{after}"
    );
    assert!(
        sample(&after, "cerver_sandbox_memory_bytes", &[w]) > 0.0,
        "{after}"
    );
    assert!(after.contains("# HELP cerver_runs_total"), "{after}");

    // A second scrape sees the counters grow again.
    run(json!({"code": "print(2)"})).await;
    let third = scrape(&reqwest::Client::new(), &s.url("/metrics")).await;
    let ok = [w, ("kind", "code"), ("outcome", "ok")];
    assert!(sample(&third, "cerver_runs_total", &ok) > sample(&after, "cerver_runs_total", &ok));

    // From a non-loopback peer: 401 without a token, 403 with a wrong one, 200 with it.
    let Some(addr) = host_address() else {
        eprintln!("no global address on this host: the non-loopback checks are skipped");
        return;
    };
    let far = format!("http://{addr}:{}/metrics", s.port);
    let plain = reqwest::Client::new();
    let r = plain.get(&far).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = plain.get(&far).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 403);
    // An API key is not a metrics token.
    assert_eq!(c.get(&far).send().await.unwrap().status(), 403);
    let r = plain
        .get(&far)
        .bearer_auth("op-metrics-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("cerver_runs_total"));
}

#[tokio::test]
async fn request_ids_round_trip_and_log_lines_carry_them_without_secrets() {
    let s = Captured::start(&[]);
    let c = s.client();

    // A well-formed id comes back as sent; a malformed one is replaced by a fresh id.
    let r = c
        .get(s.url("/sandboxes"))
        .header("x-request-id", "ops-test.42_a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "ops-test.42_a");
    for bad in ["has space", "semi;colon", &"x".repeat(65)] {
        let r = c
            .get(s.url("/health"))
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_ne!(id, bad);
        assert!(uuid_like(&id), "{id}");
    }
    // Without one, every response still has one, and different requests get different ids.
    let a = c.get(s.url("/nope")).send().await.unwrap();
    let b = c.get(s.url("/nope")).send().await.unwrap();
    assert_eq!(a.status(), 404);
    assert_ne!(a.headers()["x-request-id"], b.headers()["x-request-id"]);

    // A create whose env holds a secret: its log line names the request, user and sandbox.
    let secret = "sk-live-do-not-log-8c1f";
    let r = c
        .post(s.url("/sandbox"))
        .header("x-request-id", "create-req-7")
        .json(&json!({"envs": {"TOKEN": secret}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "create-req-7");
    let created: Value = r.json().await.unwrap();
    let id = created["sandbox_id"].as_str().unwrap().to_string();
    let r = c
        .delete(s.url(&format!("/sandbox/{id}")))
        .header("x-request-id", "delete-req-8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A failed key check: the key sent must not be logged either.
    let wrong_key = "cerver_not-a-real-key-3f9a";
    let r = common::client_with_key(wrong_key)
        .get(s.url("/sandboxes"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = s.log_lines();
    let created_line = lines
        .iter()
        .find(|l| l.contains("sandbox created") && l.contains("create-req-7"))
        .unwrap_or_else(|| panic!("no create line with the request id:\n{}", lines.join("\n")));
    assert!(created_line.contains(&id), "{created_line}");
    assert!(created_line.contains("user.id="), "{created_line}");
    let destroyed = lines
        .iter()
        .find(|l| l.contains("sandbox destroyed") && l.contains("delete-req-8"))
        .unwrap_or_else(|| panic!("no delete line with the request id:\n{}", lines.join("\n")));
    assert!(
        destroyed.contains(&format!("sandbox.id={id}")),
        "{destroyed}"
    );
    for l in &lines {
        for s in [s.key.as_str(), secret, wrong_key] {
            assert!(!l.contains(s), "a secret reached the log: {l}");
        }
    }
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}
