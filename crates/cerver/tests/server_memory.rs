//! The server's memory stays bounded under many concurrent large file transfers: each takes
//! one of the sandbox's and one of the server's transfer slots or is answered 429 `busy`.

mod common;

use std::time::Duration;

use common::Server;
use serde_json::json;

/// kB of a `/proc/<pid>/status` field (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 100,000 files under paths of ~200 bytes: every listing is as large as the server allows.
const MANY_FILES: &str = r#"
import os
d = "d" * 60
for i in range(100):
    sub = os.path.join(f"{d}{i:03}", "e" * 60)
    os.makedirs(sub)
    for j in range(1000):
        open(os.path.join(sub, f"{'f' * 60}{j:04}"), "w").close()
print(sum(len(f) for _, _, f in os.walk(".")))
"#;

#[tokio::test]
async fn sixty_concurrent_large_listings_keep_the_server_memory_bounded() {
    let s = Server::start_with(&["--max-file-transfers-per-sandbox", "4"]);
    let id = s.sandbox().await;
    let v = s
        .run_with(&id, json!({"code": MANY_FILES, "timeout": 120}))
        .await;
    assert_eq!(v["output"].as_str().unwrap().trim(), "100000", "{v}");
    // One listing first: its size, and the server's memory once warm.
    let (status, one) = s.get(&format!("/sandbox/{id}/files")).await;
    assert_eq!(status, 200);
    let listed = serde_json::to_vec(&one).unwrap().len();
    assert!(listed > 1 << 20, "a large listing: {listed} bytes");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = s.pid();
    let rss_before = status_kb(pid, "VmRSS:");
    let hwm_before = status_kb(pid, "VmHWM:");

    let requests = (0..60).map(|_| {
        let url = s.url(&format!("/sandbox/{id}/files"));
        let client = s.client.clone();
        async move {
            let r = client.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let retry = r.headers().get("retry-after").cloned();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, retry, body)
        }
    });
    let answers = futures::future::join_all(requests).await;
    let hwm_after = status_kb(pid, "VmHWM:");
    let mut ok = 0;
    for (status, retry, body) in &answers {
        match status {
            200 => {
                ok += 1;
                assert_eq!(
                    body["files"].as_array().unwrap().len(),
                    one["files"].as_array().unwrap().len()
                );
            }
            429 => {
                assert_eq!(body["code"], "busy", "{body}");
                assert_eq!(retry.as_ref().unwrap(), "1");
            }
            other => panic!("{other}: {body}"),
        }
    }
    let growth_mb = hwm_after.saturating_sub(rss_before.max(hwm_before)) / 1024;
    eprintln!(
        "listing {listed} bytes; {ok}/60 answered 200, the rest 429; RSS before {} MiB, \
         high-water mark before {} MiB, after {} MiB (+{growth_mb} MiB)",
        rss_before / 1024,
        hwm_before / 1024,
        hwm_after / 1024
    );
    assert!(ok >= 4, "the sandbox's slots were used: {ok}");
    // At most 4 listings are held at once: a few times one listing each (its output, the
    // parsed entries, the response), far below 60 of them.
    let bound_mb = ((4 * 4 * listed as u64) >> 20) + 32;
    assert!(
        growth_mb <= bound_mb,
        "the server grew by {growth_mb} MiB (bound {bound_mb} MiB)"
    );
    // Once the burst is over, listings work again.
    let (status, _) = s.get(&format!("/sandbox/{id}/files")).await;
    assert_eq!(status, 200);
}
