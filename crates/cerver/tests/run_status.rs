//! The run verdict (`status`): decided by the server from how the process ended, never from
//! what it wrote (issue 16, "Result spoofing"), in `/run` results and in the stream's `exit`.

mod common;

use common::Server;
use serde_json::{Value, json};

/// The events of `/run/stream` for `body`, parsed.
async fn stream(s: &Server, id: &str, body: Value) -> Vec<Value> {
    let text = s
        .client
        .post(s.url(&format!("/sandbox/{id}/run/stream")))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn every_status_is_produced_by_how_the_run_ended() {
    let s = Server::start();
    let id = s.sandbox().await;
    let cases = [
        ("print('fine')", 30, "ok", 0),
        ("raise SystemExit(3)", 30, "error", 3),
        ("1/0", 30, "error", 1),
        // Pretending to have been killed or timed out changes nothing.
        ("import os\nos._exit(137)", 30, "error", 137),
        (
            "import sys\nprint('Execution timed out', file=sys.stderr)",
            30,
            "ok",
            0,
        ),
        (
            "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
            30,
            "killed",
            137,
        ),
        ("while True: pass", 1, "timeout", -1),
    ];
    for (code, timeout, status, exit_code) in cases {
        let r = s
            .run_with(&id, json!({"code": code, "timeout": timeout}))
            .await;
        assert_eq!(r["status"], status, "{code}: {r}");
        assert_eq!(r["exit_code"], exit_code, "{code}: {r}");
    }
    let r = s
        .run_with(
            &id,
            json!({"code": "x = b'\\x01' * (2 << 30)\nprint('allocated')", "timeout": 60}),
        )
        .await;
    assert_eq!(r["status"], "oom", "{r}");
}

#[tokio::test]
async fn the_streams_exit_event_carries_the_status() {
    let s = Server::start();
    let id = s.sandbox().await;
    for (code, timeout, status) in [
        ("print('x')", 30, "ok"),
        (
            "import sys\nprint('timed out', file=sys.stderr)\nsys.exit(2)",
            30,
            "error",
        ),
        ("while True: pass", 1, "timeout"),
    ] {
        let events = stream(&s, &id, json!({"code": code, "timeout": timeout})).await;
        let exit = events.last().expect("events");
        assert_eq!(exit["type"], "exit", "{events:?}");
        assert_eq!(exit["status"], status, "{code}: {events:?}");
    }
    // A background process killed through the API ends `killed` for its followers.
    let r = s
        .run_with(
            &id,
            json!({"code": "import time\ntime.sleep(60)", "background": true}),
        )
        .await;
    let pid = r["pid"].as_u64().unwrap();
    let (status, _) = s.delete(&format!("/sandbox/{id}/processes/{pid}")).await;
    assert_eq!(status, 200);
    let text = s
        .client
        .get(s.url(&format!("/sandbox/{id}/processes/{pid}/stream")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exit: Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .find(|e| e["type"] == "exit")
        .expect("an exit event");
    assert_eq!(exit["status"], "killed", "{exit}");
}
