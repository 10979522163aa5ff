//! Pause and resume against the real binary: a paused sandbox has no process, cgroup or disk
//! mount on the host, its lifetime is frozen, its files and settings come back on resume
//! (explicit or automatic), paused sandboxes do not hold plan slots but are capped and
//! retained for a while, and they survive a restart still paused.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, client_with_key, create_key, sandbox_cgroups};
use serde_json::{Value, json};

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

/// The label directories holding a disk image under `<data>/sandboxes`.
fn images(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("sandboxes")).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.path().join("workspace.img").exists())
            .count()
    })
}

/// Host mounts of the server's disk images (a running sandbox's helper mounts its image).
fn loops_of(data_dir: &Path) -> usize {
    let out = std::process::Command::new("losetup")
        .args(["-n", "-O", "BACK-FILE", "-l"])
        .output()
        .expect("losetup");
    let dir = data_dir.to_string_lossy().into_owned();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&dir))
        .count()
}

async fn post_as(client: &reqwest::Client, s: &Server, path: &str) -> (u16, Value) {
    let r = client
        .post(s.url(path))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn status_of(s: &Server, id: &str) -> Value {
    let (code, v) = s.get(&format!("/sandbox/{id}")).await;
    assert_eq!(code, 200, "{v}");
    v
}

#[tokio::test]
async fn pause_releases_everything_and_resume_brings_it_back() {
    let s = Server::start();
    let id = s
        .sandbox_with(json!({
            "envs": {"GREETING": "hello"},
            "metadata": {"task": "pause"},
            "timeout_ms": 600_000,
        }))
        .await;
    s.output(&id, "open('keep.txt','w').write('kept while paused')")
        .await;
    s.run_with(
        &id,
        json!({"code": "import time\ntime.sleep(600)", "background": true}),
    )
    .await;
    let cg = s.cgroup_dir();
    let running = sandbox_cgroups(&cg).len();
    let loops = loops_of(&s.data_dir);
    let imgs = images(&s.data_dir);

    let (code, v) = s.post(&format!("/sandbox/{id}/pause"), json!({})).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "paused", "{v}");
    assert_eq!(v["sandbox_id"], id.as_str());
    // Its cgroup (every process, the background one included) and its loop device are gone;
    // its image stays.
    eventually("the sandbox's cgroup is gone", || {
        sandbox_cgroups(&cg).len() == running - 1
    })
    .await;
    eventually("its loop device is gone", || {
        loops_of(&s.data_dir) == loops - 1
    })
    .await;
    assert_eq!(images(&s.data_dir), imgs, "the paused one's image stays");

    // Frozen lifetime, listed as paused, other requests 409, pause again is a no-op 200.
    let a = status_of(&s, &id).await;
    assert_eq!(a["status"], "paused");
    assert_eq!(a["metadata"]["task"], "pause");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = status_of(&s, &id).await;
    assert_eq!(a["time_remaining_ms"], b["time_remaining_ms"], "{a} {b}");
    let (_, list) = s.get("/sandboxes").await;
    let listed = list["sandboxes"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|x| x["sandbox_id"] == id && x["status"] == "paused"),
        "{list}"
    );
    let (code, v) = s.get(&format!("/sandbox/{id}/processes")).await;
    assert_eq!((code, &v["code"]), (409, &json!("conflict")), "{v}");
    let (code, v) = s.post(&format!("/sandbox/{id}/pause"), json!({})).await;
    assert_eq!((code, &v["status"]), (200, &json!("paused")), "{v}");

    // Resume: same files, env, metadata; no process from before; the lifetime goes on.
    let (code, v) = s.post(&format!("/sandbox/{id}/resume"), json!({})).await;
    assert_eq!((code, &v["status"]), (200, &json!("ready")), "{v}");
    let left = v["time_remaining_ms"].as_u64().unwrap();
    let frozen = b["time_remaining_ms"].as_u64().unwrap();
    assert!(
        left <= frozen && left + 5_000 > frozen,
        "{left} vs {frozen}"
    );
    let out = s
        .output(
            &id,
            "import os\nprint(os.environ['GREETING'], open('keep.txt').read())",
        )
        .await;
    assert_eq!(out, "hello kept while paused");
    let (_, v) = s.get(&format!("/sandbox/{id}/processes")).await;
    assert_eq!(v["processes"].as_array().map_or(0, Vec::len), 0, "{v}");
    let (code, v) = s.post(&format!("/sandbox/{id}/resume"), json!({})).await;
    assert_eq!(
        (code, &v["status"]),
        (200, &json!("ready")),
        "resume is idempotent: {v}"
    );

    // Auto-resume: a file read and a run on a paused sandbox resume it first.
    let (code, _) = s.post(&format!("/sandbox/{id}/pause"), json!({})).await;
    assert_eq!(code, 200);
    let (code, v) = s.get(&format!("/sandbox/{id}/files?path=keep.txt")).await;
    assert_eq!(
        (code, &v["content"]),
        (200, &json!("kept while paused")),
        "{v}"
    );
    assert_eq!(status_of(&s, &id).await["status"], "ready");
    let (code, _) = s.post(&format!("/sandbox/{id}/pause"), json!({})).await;
    assert_eq!(code, 200);
    assert_eq!(
        s.output(&id, "print(open('keep.txt').read())").await,
        "kept while paused"
    );

    // Deleting a paused sandbox deletes its image.
    let (code, _) = s.post(&format!("/sandbox/{id}/pause"), json!({})).await;
    assert_eq!(code, 200);
    let (code, v) = s.delete(&format!("/sandbox/{id}")).await;
    assert_eq!(code, 200, "{v}");
    let (code, _) = s.get(&format!("/sandbox/{id}")).await;
    assert_eq!(code, 404);
    assert_eq!(images(&s.data_dir), imgs - 1, "its image is deleted");
    let (code, _) = s.post("/sandbox/nope/pause", json!({})).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn paused_sandboxes_free_plan_slots_and_are_capped() {
    let s = Server::start();
    let key = create_key(&s.data_dir, "trial-pause@example.com", "trial");
    let trial = client_with_key(&key);
    let create = || async {
        let r = trial
            .post(s.url("/sandbox"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    };
    // Trial: one sandbox at a time; a paused one does not hold it.
    let (code, a) = create().await;
    assert_eq!(code, 200, "{a}");
    let a = a["sandbox_id"].as_str().unwrap().to_string();
    let (code, _) = create().await;
    assert_eq!(code, 429, "the trial plan's limit");
    let (code, v) = post_as(&trial, &s, &format!("/sandbox/{a}/pause")).await;
    assert_eq!(code, 200, "{v}");
    let (code, b) = create().await;
    assert_eq!(code, 200, "a paused sandbox frees its plan slot: {b}");
    let b = b["sandbox_id"].as_str().unwrap().to_string();
    // At the limit: resume and auto-resume answer 429 JSON, and A stays paused.
    let (code, v) = post_as(&trial, &s, &format!("/sandbox/{a}/resume")).await;
    assert_eq!((code, &v["code"]), (429, &json!("limit_exceeded")), "{v}");
    let r = trial
        .post(s.url(&format!("/sandbox/{a}/run")))
        .json(&json!({"code": "print(1)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429, "auto-resume at the limit");
    // Pausing B frees the slot: A resumes.
    let (code, _) = post_as(&trial, &s, &format!("/sandbox/{b}/pause")).await;
    assert_eq!(code, 200);
    let (code, v) = post_as(&trial, &s, &format!("/sandbox/{a}/resume")).await;
    assert_eq!((code, &v["status"]), (200, &json!("ready")), "{v}");
    let (code, _) = post_as(&trial, &s, &format!("/sandbox/{a}/pause")).await;
    assert_eq!(code, 200);
    // 10× the plan's limit paused (A and B are 2); the 11th pause answers 429.
    for _ in 0..8 {
        let (code, v) = create().await;
        assert_eq!(code, 200, "{v}");
        let id = v["sandbox_id"].as_str().unwrap().to_string();
        let (code, v) = post_as(&trial, &s, &format!("/sandbox/{id}/pause")).await;
        assert_eq!(code, 200, "{v}");
    }
    let (code, v) = create().await;
    assert_eq!(code, 200, "{v}");
    let last = v["sandbox_id"].as_str().unwrap().to_string();
    let (code, v) = post_as(&trial, &s, &format!("/sandbox/{last}/pause")).await;
    assert_eq!((code, &v["code"]), (429, &json!("limit_exceeded")), "{v}");
}

#[tokio::test]
async fn a_paused_sandbox_survives_a_restart_and_is_deleted_after_its_retention() {
    let s = Server::start();
    let id = s.sandbox_with(json!({"timeout_ms": 600_000})).await;
    s.output(&id, "open('keep.txt','w').write('kept')").await;
    let (code, v) = s.post(&format!("/sandbox/{id}/pause"), json!({})).await;
    assert_eq!(code, 200, "{v}");
    let frozen = v["time_remaining_ms"].clone();
    let (data_dir, exit) = s.stop_keeping_data(Duration::from_secs(30));
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}");

    // Still paused after the restart, not rebuilt (only the pool's sandbox runs).
    let s = Server::start_in(data_dir, &["--paused-retention-secs", "3"]);
    let v = status_of(&s, &id).await;
    assert_eq!(
        (&v["status"], &v["time_remaining_ms"]),
        (&json!("paused"), &frozen),
        "{v}"
    );
    let cg = s.cgroup_dir();
    // Every image but the paused one's belongs to a running (pool) sandbox.
    eventually("only the pools run", || {
        sandbox_cgroups(&cg).len() + 1 == images(&s.data_dir)
    })
    .await;
    let imgs = images(&s.data_dir);
    let (code, v) = s.post(&format!("/sandbox/{id}/resume"), json!({})).await;
    assert_eq!((code, &v["status"]), (200, &json!("ready")), "{v}");
    assert_eq!(
        s.output(&id, "print(open('keep.txt').read())").await,
        "kept"
    );

    // Paused again with a 3 s retention: the reaper deletes it and its image.
    let (code, _) = s.post(&format!("/sandbox/{id}/pause"), json!({})).await;
    assert_eq!(code, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = s.get(&format!("/sandbox/{id}")).await;
        if code == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "still there after its retention");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eventually("its image is deleted", || images(&s.data_dir) == imgs - 1).await;
}

/// `cargo test -p cerver --test pause -- --ignored --nocapture pause_resume_latency`: p50 of
/// 20 pauses and resumes of a workers sandbox (BENCHMARKS.md).
#[tokio::test]
#[ignore]
async fn pause_resume_latency() {
    let s = Server::start();
    let id = s.sandbox().await;
    s.output(&id, "print(1)").await;
    let (mut pauses, mut resumes) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let t = Instant::now();
        let (code, _) = s.post(&format!("/sandbox/{id}/pause"), json!({})).await;
        assert_eq!(code, 200);
        pauses.push(t.elapsed());
        let t = Instant::now();
        let (code, _) = s.post(&format!("/sandbox/{id}/resume"), json!({})).await;
        assert_eq!(code, 200);
        resumes.push(t.elapsed());
    }
    pauses.sort();
    resumes.sort();
    println!(
        "pause p50 {:?} p90 {:?}; resume p50 {:?} p90 {:?}",
        pauses[10], pauses[18], resumes[10], resumes[18]
    );
}

/// The sandbox's own address as seen from inside (UDP connect to its gateway sends nothing).
const OWN_ADDRESS: &str = r#"
import socket, struct
for line in open("/proc/net/route").read().splitlines()[1:]:
    f = line.split()
    if f[1] == "00000000":
        gw = socket.inet_ntoa(struct.pack("<L", int(f[2], 16)))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((gw, 9))
print(s.getsockname()[0])
"#;

/// The host end of the veth pair of a sandbox at `addr` (a /30 per slot from 10.213.0.0).
fn host_if(addr: &str) -> String {
    let addr: std::net::Ipv4Addr = addr.parse().unwrap();
    let slot = (u32::from(addr) - u32::from(std::net::Ipv4Addr::new(10, 213, 0, 0))) / 4;
    format!("cerv{slot}")
}

#[tokio::test]
async fn a_paused_containers_sandbox_has_no_veth_and_its_port_works_after_resume() {
    let s = Server::start();
    let (status, v) = s.post("/sandbox", json!({"engine": "containers"})).await;
    if status == 503 && v["code"] == "engine_unavailable" {
        eprintln!("containers engine unavailable here: {v}");
        return;
    }
    assert_eq!(status, 200, "{v}");
    let id = v["sandbox_id"].as_str().unwrap().to_string();
    let (status, host) = s.get(&format!("/sandbox/{id}/host?port=8000")).await;
    assert_eq!(status, 200, "{host}");
    let host_header = host["host"].as_str().unwrap().to_string();
    let veth = host_if(&s.output(&id, OWN_ADDRESS).await);
    let link = Path::new("/sys/class/net").join(&veth);
    assert!(link.exists(), "{veth} while the sandbox runs");

    let (code, v) = s.post(&format!("/sandbox/{id}/pause"), json!({})).await;
    assert_eq!((code, &v["status"]), (200, &json!("paused")), "{v}");
    eventually("the veth pair goes with the pause", || !link.exists()).await;

    // The exposure survives the pause: a server started after resume answers on the same host.
    let (code, v) = s.post(&format!("/sandbox/{id}/resume"), json!({})).await;
    assert_eq!((code, &v["status"]), (200, &json!("ready")), "{v}");
    let body = s.serve_and_fetch_page(&id, &host_header, "resumed").await;
    assert!(
        body.contains("resumed"),
        "the exposed port is proxied again: {body:?}"
    );
}
