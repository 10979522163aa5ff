//! Background processes (`"background": true`, `/sandbox/{id}/processes...`), end to end
//! against the real binary.
//!
//! One file past 600 lines on purpose: each test walks one process lifecycle (start, output,
//! signals, kill, listing, limits) through the same few helpers; split by lifecycle step, every
//! part would repeat them. Run leaders' tests, which only use processes, are in run_leaders.rs.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use futures::StreamExt;
use serde_json::{Value, json};

/// Starts `code` in the background; returns the process object (asserting HTTP 200).
async fn start(s: &Server, id: &str, code: &str) -> Value {
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/run"),
            json!({"code": code, "background": true}),
        )
        .await;
    assert_eq!(status, 200, "background start failed: {v}");
    v
}

fn pid_of(v: &Value) -> u64 {
    v["pid"].as_u64().unwrap_or_else(|| panic!("no pid in {v}"))
}

/// Polls `GET /processes/{pid}` until `done` holds (or panics after `secs`).
async fn wait_process(
    s: &Server,
    id: &str,
    pid: u64,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (status, v) = s.get(&format!("/sandbox/{id}/processes/{pid}")).await;
        assert_eq!(status, 200, "{v}");
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Python that prints how many processes of the sandbox have `marker` in their command line.
fn count_marked(marker: &str) -> String {
    format!(
        "import os\nn = 0\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n        try:\n            \
         n += '{marker}' in open(f'/proc/{{p}}/cmdline', 'rb').read().decode(errors='replace')\n        \
         except OSError:\n            pass\nprint(n)"
    )
}

/// Reads Server-Sent Events from `resp` until `enough` says so; returns them.
async fn read_events(
    resp: reqwest::Response,
    enough: impl Fn(&[Value]) -> bool,
) -> (Vec<Value>, bool) {
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(pos) = buf.find("\n\n") {
            let frame = buf[..pos].to_string();
            buf.drain(..pos + 2);
            for line in frame.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    events.push(serde_json::from_str(data).unwrap());
                }
            }
        }
        if enough(&events) {
            return (events, false);
        }
    }
    (events, true)
}

/// Complete lines of `text`.
fn lines(text: &str) -> usize {
    text.matches('\n').count()
}

fn stdout_of(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "stdout")
        .map(|e| e["data"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn background_run_answers_at_once_and_can_be_killed() {
    let s = Server::start();
    let id = s.sandbox().await;
    let code = "import os, time\nprint('started', os.getpid(), flush=True)\ntime.sleep(600)";
    let t = Instant::now();
    let v = start(&s, &id, code).await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(v["status"], "running", "{v}");
    assert_eq!(v["code"], code);
    assert!(v["exit_code"].is_null(), "{v}");
    assert!(v["started_at"].as_u64().unwrap() > 1_700_000_000, "{v}");
    let pid = pid_of(&v);

    // The pid is the one the code sees, and a later run sees the process.
    let p = wait_process(&s, &id, pid, 10, |p| {
        p["output"].as_str().unwrap().ends_with('\n')
    })
    .await;
    assert_eq!(p["output"], format!("started {pid}\n"));
    assert_eq!(p["error"], "");
    assert_eq!(p["truncated"], false);
    let alive = s
        .output(
            &id,
            &format!("import os\nprint(os.path.exists('/proc/{pid}'))"),
        )
        .await;
    assert_eq!(alive, "True");

    let (status, list) = s.get(&format!("/sandbox/{id}/processes")).await;
    assert_eq!(status, 200, "{list}");
    let listed = list["processes"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{list}");
    assert_eq!(listed[0]["pid"], pid);
    assert_eq!(listed[0]["status"], "running");

    let (status, v) = s.delete(&format!("/sandbox/{id}/processes/{pid}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"success": true, "pid": pid}));
    let p = wait_process(&s, &id, pid, 10, |p| p["status"] != "running").await;
    assert_eq!(p["status"], "killed", "{p}");
    assert_eq!(p["exit_code"], 137, "{p}");
    assert!(p["ended_at"].as_u64().is_some(), "{p}");
    let alive = s
        .output(
            &id,
            &format!("import os\nprint(os.path.exists('/proc/{pid}'))"),
        )
        .await;
    assert_eq!(alive, "False");
    // Idempotent.
    let (status, v) = s.delete(&format!("/sandbox/{id}/processes/{pid}")).await;
    assert_eq!(status, 200, "{v}");

    // One that ends by itself.
    let v = start(&s, &id, "import sys\nprint('bye')\nsys.exit(3)").await;
    let pid = pid_of(&v);
    let p = wait_process(&s, &id, pid, 10, |p| p["status"] != "running").await;
    assert_eq!(p["status"], "exited", "{p}");
    assert_eq!(p["exit_code"], 3, "{p}");
    assert_eq!(p["output"], "bye\n");

    // The process object shows the first 200 characters of the code.
    let long = format!("# {}\nprint('long')", "é".repeat(300));
    let v = start(&s, &id, &long).await;
    assert_eq!(
        v["code"].as_str().unwrap(),
        long.chars().take(200).collect::<String>()
    );
}

#[tokio::test]
async fn background_server_is_reachable_from_later_runs() {
    let s = Server::start();
    let id = s.sandbox().await;
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/files"),
            json!({"path": "hello.txt", "content": "hello from the workspace"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let v = start(
        &s,
        &id,
        "import http.server\nhttp.server.HTTPServer(('127.0.0.1', 8765), \
         http.server.SimpleHTTPRequestHandler).serve_forever()",
    )
    .await;
    let pid = pid_of(&v);
    let fetch = "import time, urllib.request\nfor _ in range(100):\n    try:\n        \
                 print(urllib.request.urlopen('http://127.0.0.1:8765/hello.txt').read().decode())\n        \
                 break\n    except OSError:\n        time.sleep(0.1)";
    assert_eq!(s.output(&id, fetch).await, "hello from the workspace");
    // Its request log goes to stderr, kept in the process's buffer.
    let p = wait_process(&s, &id, pid, 10, |p| {
        p["error"].as_str().unwrap().contains("GET /hello.txt")
    })
    .await;
    assert_eq!(p["status"], "running");
}

#[tokio::test]
async fn kill_ends_the_whole_tree() {
    let s = Server::start();
    let id = s.sandbox().await;
    // Children, a grandchild in its own session (detached), all marked in their command line.
    let code = "import subprocess, sys, time\n\
                sleeper = [sys.executable, '-c', 'import time; time.sleep(600)', 'bgtree-marker']\n\
                for _ in range(3):\n    subprocess.Popen(sleeper)\n\
                subprocess.Popen([sys.executable, '-c', 'import subprocess, sys; \
                subprocess.Popen(sys.argv[1:], start_new_session=True)'] + sleeper)\n\
                print('spawned', flush=True)\ntime.sleep(600)";
    let pid = pid_of(&start(&s, &id, code).await);
    wait_process(&s, &id, pid, 20, |p| p["output"] == "spawned\n").await;
    let counter = count_marked("bgtree-marker");
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.output(&id, &counter).await != "4" {
        assert!(Instant::now() < deadline, "the children did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, v) = s.delete(&format!("/sandbox/{id}/processes/{pid}")).await;
    assert_eq!(status, 200, "{v}");
    // DELETE answers once they are gone.
    assert_eq!(s.output(&id, &counter).await, "0");
    let alive = s
        .output(
            &id,
            &format!("import os\nprint(os.path.exists('/proc/{pid}'))"),
        )
        .await;
    assert_eq!(alive, "False");
}

#[tokio::test]
async fn chatty_process_stays_bounded_and_the_server_responsive() {
    let s = Server::start();
    let id = s.sandbox().await;
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let before = rss();
    let pid = pid_of(
        &start(
            &s,
            &id,
            "import sys\nchunk = 'x' * 65535 + '\\n'\nwhile True:\n    sys.stdout.write(chunk)\n    \
             sys.stderr.write(chunk)",
        )
        .await,
    );
    // A follower that never reads does not slow the process down nor grow the server.
    let stalled = s
        .client
        .get(s.url(&format!("/sandbox/{id}/processes/{pid}/stream")))
        .send()
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Another sandbox and this one still answer promptly.
    let t = Instant::now();
    assert_eq!(s.output(&id, "print(1)").await, "1");
    let other = s.sandbox().await;
    assert_eq!(s.output(&other, "print(2)").await, "2");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    let p = wait_process(&s, &id, pid, 10, |p| p["truncated"] == true).await;
    assert_eq!(p["status"], "running");
    let out = p["output"].as_str().unwrap().len();
    let err = p["error"].as_str().unwrap().len();
    assert!(out <= 1 << 20 && out > 1 << 19, "output {out} bytes");
    assert!(err <= 1 << 20 && err > 1 << 19, "error {err} bytes");
    // Still writing (it never blocks on a full pipe), yet the server's memory stays put.
    let p2 = wait_process(&s, &id, pid, 10, |_| true).await;
    assert_eq!(p2["status"], "running");
    let grown = rss().saturating_sub(before);
    assert!(grown < 64 << 20, "the server grew by {grown} bytes");

    let (status, v) = s.delete(&format!("/sandbox/{id}/processes/{pid}")).await;
    assert_eq!(status, 200, "{v}");
    drop(stalled);
    // Let the client close that connection before the server is stopped.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn at_most_16_running_and_32_ended() {
    let s = Server::start();
    let id = s.sandbox().await;
    let mut pids = Vec::new();
    for _ in 0..16 {
        pids.push(pid_of(
            &start(&s, &id, "import time\ntime.sleep(600)").await,
        ));
    }
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/run"),
            json!({"code": "print(1)", "background": true}),
        )
        .await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["code"], "limit_exceeded");
    assert!(v["error"].as_str().unwrap().contains("16"), "{v}");
    // Background processes take no run slot: normal runs (even 8 at once) still work.
    let runs = (0..8).map(|i| s.run(&id, if i % 2 == 0 { "print(1)" } else { "print(2)" }));
    for r in futures::future::join_all(runs).await {
        assert_eq!(r["exit_code"], 0, "{r}");
    }
    // Stopping one frees a place.
    let (status, _) = s
        .delete(&format!("/sandbox/{id}/processes/{}", pids[0]))
        .await;
    assert_eq!(status, 200);
    start(&s, &id, "print('fits')").await;
    for pid in &pids[1..] {
        let (status, _) = s.delete(&format!("/sandbox/{id}/processes/{pid}")).await;
        assert_eq!(status, 200);
    }

    // Ended processes: only the 32 most recent are kept.
    let mut last = Vec::new();
    for i in 0..40 {
        let pid = pid_of(&start(&s, &id, &format!("print({i})")).await);
        wait_process(&s, &id, pid, 10, |p| p["status"] != "running").await;
        last.push(pid);
    }
    let (_, list) = s.get(&format!("/sandbox/{id}/processes")).await;
    let listed: Vec<u64> = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(pid_of)
        .collect();
    assert_eq!(listed.len(), 32, "{list}");
    assert_eq!(listed[..], last[8..], "{list}");
}

#[tokio::test]
async fn a_process_counts_until_what_it_started_stops_writing() {
    let s = Server::start();
    let id = s.sandbox().await;
    // Main exits at once; the child it leaves behind keeps writing to the inherited stdout.
    let code = "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', \
                'import time\\nwhile True:\\n    print(\"left\", flush=True)\\n    \
                time.sleep(0.1)'])\nprint('main', flush=True)";
    let mut pids = Vec::new();
    for _ in 0..16 {
        pids.push(pid_of(&start(&s, &id, code).await));
    }
    for pid in &pids {
        let p = wait_process(&s, &id, *pid, 20, |p| {
            p["status"] != "running" && p["output"].as_str().unwrap().contains("left")
        })
        .await;
        assert_eq!(p["status"], "exited", "{p}");
    }
    // Their mains have exited, yet their output is still being read into their buffers.
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/run"),
            json!({"code": "print(1)", "background": true}),
        )
        .await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["code"], "limit_exceeded");
    // None of them is forgotten while it still buffers.
    let (_, list) = s.get(&format!("/sandbox/{id}/processes")).await;
    assert_eq!(list["processes"].as_array().unwrap().len(), 16, "{list}");
    // Killing one ends its leftover child, which frees its place.
    let (status, _) = s
        .delete(&format!("/sandbox/{id}/processes/{}", pids[0]))
        .await;
    assert_eq!(status, 200);
    start(&s, &id, "print('fits')").await;
}

#[tokio::test]
async fn followers_are_capped_per_sandbox() {
    let s = Server::start();
    let id = s.sandbox().await;
    let pid = pid_of(
        &start(
            &s,
            &id,
            "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.1)",
        )
        .await,
    );
    let follow = || {
        s.client
            .get(s.url(&format!("/sandbox/{id}/processes/{pid}/stream")))
            .send()
    };
    let mut followers = Vec::new();
    for _ in 0..16 {
        let resp = follow().await.unwrap();
        assert_eq!(resp.status(), 200);
        followers.push(resp);
    }
    let resp = follow().await.unwrap();
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "limit_exceeded", "{v}");
    assert!(v["error"].as_str().unwrap().contains("16"), "{v}");
    // A follower that goes away gives its place back.
    drop(followers.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = follow().await.unwrap();
        if resp.status() == 200 {
            followers.push(resp);
            break;
        }
        assert_eq!(resp.status(), 429);
        assert!(
            Instant::now() < deadline,
            "the follower's place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = s.delete(&format!("/sandbox/{id}/processes/{pid}")).await;
    assert_eq!(status, 200);
    drop(followers);
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_character_split_between_replay_and_live_output_arrives_whole() {
    let s = Server::start();
    let id = s.sandbox().await;
    // The first two bytes of "€" now; the third (and a newline) once the file `go` exists.
    let code = "import os, sys, time\neuro = '\u{20ac}'.encode()\n\
                sys.stdout.buffer.write(euro[:2]); sys.stdout.buffer.flush()\n\
                while not os.path.exists('/home/user/go'):\n    time.sleep(0.05)\n\
                sys.stdout.buffer.write(euro[2:] + b'\\n'); sys.stdout.buffer.flush()\n\
                time.sleep(600)";
    let pid = pid_of(&start(&s, &id, code).await);
    wait_process(&s, &id, pid, 10, |p| p["output"] != "").await;
    let resp = s
        .client
        .get(s.url(&format!("/sandbox/{id}/processes/{pid}/stream")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/files"),
            json!({"path": "go", "content": ""}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (events, _) = read_events(resp, |ev| stdout_of(ev).contains('\n')).await;
    assert_eq!(stdout_of(&events), "\u{20ac}\n", "{events:?}");
    let (status, _) = s.delete(&format!("/sandbox/{id}/processes/{pid}")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unknown_pids_and_other_users_processes_are_not_found() {
    let s = Server::start();
    let id = s.sandbox().await;
    let pid = pid_of(&start(&s, &id, "import time\ntime.sleep(600)").await);
    let base = format!("/sandbox/{id}/processes");

    let (status, v) = s.get(&format!("{base}/999999")).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["code"], "not_found");
    let (status, v) = s.delete(&format!("{base}/999999")).await;
    assert_eq!(status, 404, "{v}");
    for bad in [
        "abc",
        "0",
        "-1",
        "1.5",
        "99999999999999999999999",
        "%00",
        "4294967297",
    ] {
        for path in [format!("{base}/{bad}"), format!("{base}/{bad}/stream")] {
            let (status, v) = s.get(&path).await;
            assert_eq!(status, 400, "{path}: {v}");
            assert_eq!(v["code"], "invalid_pid", "{path}: {v}");
        }
        let (status, v) = s.delete(&format!("{base}/{bad}")).await;
        assert_eq!(status, 400, "{bad}: {v}");
    }
    let (status, v) = s.get("/sandbox/no-such-sandbox/processes").await;
    assert_eq!(status, 404, "{v}");

    // Another user sees nothing and can kill nothing.
    let other = common::client_with_key(&common::create_key(
        &s.data_dir,
        "mallory@example.com",
        "pro",
    ));
    for (method, path) in [
        ("GET", base.clone()),
        ("GET", format!("{base}/{pid}")),
        ("GET", format!("{base}/{pid}/stream")),
        ("DELETE", format!("{base}/{pid}")),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = other.request(m, s.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{method} {path}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], "not_found", "{method} {path}: {v}");
    }
    let (status, v) = other
        .post(s.url(&format!("/sandbox/{id}/run")))
        .json(&json!({"code": "print(1)", "background": true}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 404, "{:?}", v.text().await);
    let p = wait_process(&s, &id, pid, 5, |_| true).await;
    assert_eq!(p["status"], "running");
}

#[tokio::test]
async fn background_stream_survives_the_client_going_away() {
    let s = Server::start();
    let id = s.sandbox().await;
    let resp = s
        .client
        .post(s.url(&format!("/sandbox/{id}/run/stream")))
        .json(&json!({
            "code": "import time\nfor i in range(100000):\n    print(i, flush=True)\n    time.sleep(0.05)",
            "background": true
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (events, _) = read_events(resp, |ev| lines(&stdout_of(ev)) >= 3).await;
    assert_eq!(events[0]["type"], "process", "{events:?}");
    let pid = pid_of(&events[0]);
    assert!(stdout_of(&events).starts_with("0\n1\n2\n"), "{events:?}");
    // The client has gone; the process goes on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = wait_process(&s, &id, pid, 10, |p| {
        lines(p["output"].as_str().unwrap()) > 10
    })
    .await;
    assert_eq!(p["status"], "running");

    // Following it: the process event, the buffered output, then live lines.
    let resp = s
        .client
        .get(s.url(&format!("/sandbox/{id}/processes/{pid}/stream")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = lines(p["output"].as_str().unwrap());
    let (events, ended) = read_events(resp, |ev| lines(&stdout_of(ev)) >= seen + 5).await;
    assert!(!ended);
    assert_eq!(events[0], json!({"type": "process", "pid": pid}));
    assert!(stdout_of(&events).starts_with("0\n1\n2\n"), "{events:?}");

    let (status, _) = s.delete(&format!("/sandbox/{id}/processes/{pid}")).await;
    assert_eq!(status, 200);
    // An ended process streams its buffer and its exit at once.
    let resp = s
        .client
        .get(s.url(&format!("/sandbox/{id}/processes/{pid}/stream")))
        .send()
        .await
        .unwrap();
    let (events, ended) = read_events(resp, |_| false).await;
    assert!(ended);
    let exit = events.last().unwrap();
    assert_eq!(exit["type"], "exit", "{events:?}");
    assert_eq!(exit["code"], 137, "{exit}");

    // A background stream of a short process ends with its exit.
    let resp = s
        .client
        .post(s.url(&format!("/sandbox/{id}/run/stream")))
        .json(&json!({"code": "print('a')\nimport sys\nsys.exit(4)", "background": true}))
        .send()
        .await
        .unwrap();
    let (events, ended) = read_events(resp, |_| false).await;
    assert!(ended);
    assert_eq!(events[0]["type"], "process");
    assert_eq!(stdout_of(&events), "a\n");
    assert_eq!(events.last().unwrap()["type"], "exit");
    assert_eq!(events.last().unwrap()["code"], 4);
}

#[tokio::test]
async fn deleting_the_sandbox_ends_its_processes() {
    let s = Server::start();
    let id = s.sandbox().await;
    let marker = format!("bg-sandbox-end-{}", common::rand_suffix());
    let code = format!(
        "import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', \
         'import time; time.sleep(600)', '{marker}'])\nprint('ok', flush=True)\ntime.sleep(600)"
    );
    let pid = pid_of(&start(&s, &id, &code).await);
    wait_process(&s, &id, pid, 20, |p| p["output"] == "ok\n").await;
    let on_host = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&marker))
                    .unwrap_or(false)
            })
            .count()
    };
    assert_eq!(on_host(), 1);
    let (status, _) = s.delete(&format!("/sandbox/{id}")).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while on_host() > 0 {
        assert!(Instant::now() < deadline, "a background process survived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = s.get(&format!("/sandbox/{id}/processes")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn followers_of_endless_processes_do_not_hold_up_shutdown() {
    let s = Server::start();
    let id = s.sandbox().await;
    let resp = s
        .client
        .post(s.url(&format!("/sandbox/{id}/run/stream")))
        .json(&json!({
            "code": "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.2)",
            "background": true
        }))
        .send()
        .await
        .unwrap();
    let (events, _) = read_events(resp, |ev| lines(&stdout_of(ev)) >= 2).await;
    let pid = pid_of(&events[0]);
    let follower = s
        .client
        .get(s.url(&format!("/sandbox/{id}/processes/{pid}/stream")))
        .send()
        .await
        .unwrap();
    assert_eq!(follower.status(), 200);
    let t = Instant::now();
    s.stop();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(follower);
}
