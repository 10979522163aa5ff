//! The server-wide `--max-sandboxes` bound against the real binary: exact under concurrent
//! creates, and an upgrade (which builds a second sandbox while the first still exists) needs a
//! slot of its own.

mod common;

use common::Server;
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn max_sandboxes_holds_under_concurrent_creates_and_upgrades() {
    let s = Server::start_with(&["--max-sandboxes", "3"]);
    // Many creates at once: exactly three get a sandbox (before the fix, every request passed
    // the check before any was registered).
    let answers: Vec<(u16, serde_json::Value)> = futures::stream::iter(0..12)
        .map(|_| s.post("/sandbox", json!({})))
        .buffer_unordered(12)
        .collect()
        .await;
    let created: Vec<String> = answers
        .iter()
        .filter(|(status, _)| *status == 200 || *status == 201)
        .map(|(_, v)| v["sandbox_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(created.len(), 3, "{answers:?}");
    for (status, v) in &answers {
        assert!(
            [200, 201, 429].contains(status),
            "unexpected answer {status}: {v}"
        );
        if *status == 429 {
            assert_eq!(v["code"], "limit_exceeded", "{v}");
        }
    }
    // The server is full: upgrading one of them to containers would be a fourth sandbox.
    let (status, v) = s
        .post(
            &format!("/sandbox/{}/install", created[0]),
            json!({"package": "six"}),
        )
        .await;
    assert_eq!(status, 429, "an upgrade at the limit: {v}");
    assert_eq!(v["code"], "limit_exceeded", "{v}");
    // The refused upgrade left the sandbox as it was, and deleting gives slots back.
    let (status, v) = s.get(&format!("/sandbox/{}", created[0])).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["engine"], "workers", "{v}");
    for id in &created {
        let (status, _) = s.delete(&format!("/sandbox/{id}")).await;
        assert_eq!(status, 200);
    }
    let answers: Vec<u16> = futures::stream::iter(0..5)
        .map(|_| async { s.post("/sandbox", json!({})).await.0 })
        .buffer_unordered(5)
        .collect()
        .await;
    assert_eq!(
        answers.iter().filter(|s| **s == 200 || **s == 201).count(),
        3,
        "{answers:?}"
    );
}
