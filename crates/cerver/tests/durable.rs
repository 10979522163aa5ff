//! Durable sandboxes against the real binary: the workspace is a disk image with its own quota
//! (not memory), the server's disk budget, and nothing left on the host after a delete.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Server;
use serde_json::json;

const MIB: u64 = 1 << 20;

/// The sandbox directories (`<data>/sandboxes/<label>`) holding a workspace image.
fn sandbox_dirs(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("sandboxes")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("workspace.img").exists())
        .collect()
}

/// Bytes the image occupies on the host.
fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir.join("workspace.img")).map_or(0, |m| m.blocks() * 512)
}

/// Loop devices whose backing file is under `dir`, per `losetup`.
fn loops_under(dir: &Path) -> Vec<String> {
    let out = std::process::Command::new("losetup")
        .args(["-n", "-O", "NAME,BACK-FILE", "-l"])
        .output()
        .expect("losetup");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .map(str::to_string)
        .collect()
}

/// Host mounts whose source or target is under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .map(str::to_string)
        .collect()
}

/// `memory.stat`'s `shmem` (tmpfs) bytes of the sandbox cgroup named `label` (cgroup v2 or
/// v1's memory hierarchy).
fn shmem_bytes(label: &str) -> Option<u64> {
    let parents = ["/sys/fs/cgroup/cerver", "/sys/fs/cgroup/memory/cerver"]
        .into_iter()
        .filter_map(|root| std::fs::read_dir(root).ok())
        .flatten();
    for parent in parents.flatten() {
        let Ok(stat) = std::fs::read_to_string(parent.path().join(label).join("memory.stat"))
        else {
            continue;
        };
        return stat
            .lines()
            .find_map(|l| l.strip_prefix("shmem "))
            .and_then(|v| v.trim().parse().ok());
    }
    None
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

/// Writes 1 MiB chunks to `name` until `total` MiB or ENOSPC; prints how far it got and the
/// errno.
fn fill(name: &str, total_mib: u64) -> String {
    format!(
        "import os\n\
         n, err = 0, None\n\
         with open({name:?}, 'wb') as f:\n\
         \x20   try:\n\
         \x20       for _ in range({total_mib}):\n\
         \x20           f.write(os.urandom(1 << 20)); f.flush(); n += 1\n\
         \x20       os.fsync(f.fileno())\n\
         \x20   except OSError as e:\n\
         \x20       err = e.errno\n\
         print(n, err)\n"
    )
}

#[tokio::test]
async fn the_workspace_is_a_disk_with_its_own_quota() {
    // Memory 128 MiB, workspace 256 MiB: a file bigger than the memory limit must fit.
    let s = Server::start_with(&[
        "--workers-memory-mb",
        "128",
        "--workers-workspace-mb",
        "256",
    ]);
    let id = s.sandbox().await;
    // The warm pool (one sandbox) has another image: every image is sparse and on a loop device.
    let dirs = sandbox_dirs(&s.data_dir);
    assert!(!dirs.is_empty());
    for dir in &dirs {
        assert!(
            allocated(dir) < 32 * MIB,
            "a new image is sparse: {}",
            allocated(dir)
        );
        assert_eq!(loops_under(dir).len(), 1, "one loop device backs {dir:?}");
    }
    assert!(
        mounts_under(&s.data_dir).is_empty(),
        "the image is mounted only where the sandbox sees it: {:?}",
        mounts_under(&s.data_dir)
    );
    let fs = s
        .output(
            &id,
            "print([l.split()[2] for l in open('/proc/mounts') if l.split()[1] == '/home/user'][0])",
        )
        .await;
    assert_eq!(fs.trim(), "ext4");

    // 192 MiB, more than the memory limit: it fits, the run is not OOM-killed, and none of it
    // is tmpfs memory.
    let v = s.run(&id, &fill("big.bin", 192)).await;
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["output"].as_str().unwrap().trim(), "192 None", "{v}");
    let dir = sandbox_dirs(&s.data_dir)
        .into_iter()
        .find(|d| allocated(d) >= 192 * MIB)
        .expect("the file is on the host's disk, in the sandbox's image");
    let label = dir.file_name().unwrap().to_string_lossy().into_owned();
    let shmem = shmem_bytes(&label).expect("sandbox cgroup");
    assert!(shmem < 16 * MIB, "workspace files are not memory: {shmem}");

    // Filling the rest fails with ENOSPC in the writing code; the sandbox stays usable.
    let v = s.run(&id, &fill("more.bin", 200)).await;
    assert_eq!(v["status"], "ok", "{v}");
    let out = v["output"].as_str().unwrap().trim().to_string();
    assert!(out.ends_with(" 28"), "ENOSPC expected: {out}");
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/files"),
            json!({"path": "note.txt", "content": "x".repeat(1 << 20)}),
        )
        .await;
    assert!(status == 413 || status == 507, "{status} {v}");
    assert_eq!(v["code"], "no_space", "{v}");
    // Deleting frees the space.
    let out = s
        .output(
            &id,
            "import os\nos.remove('big.bin'); os.remove('more.bin')\nprint(os.statvfs('.').f_bfree * os.statvfs('.').f_frsize >> 20)",
        )
        .await;
    let free_mib: u64 = out.trim().parse().unwrap();
    assert!(free_mib > 200, "space back after deleting: {free_mib} MiB");
    let v = s.run(&id, &fill("again.bin", 100)).await;
    assert_eq!(v["output"].as_str().unwrap().trim(), "100 None", "{v}");

    // Delete: no image, loop device or mount is left on the host.
    let (status, _) = s.delete(&format!("/sandbox/{id}")).await;
    assert_eq!(status, 200);
    assert!(!dir.exists(), "the sandbox's disk is deleted");
    eventually("the loop device is detached", || {
        loops_under(&dir).is_empty()
    })
    .await;
    assert!(mounts_under(&s.data_dir).is_empty());
    s.stop();
}

#[tokio::test]
async fn the_disk_budget_refuses_new_sandboxes_with_507() {
    // 200 MiB for all images' sizes together: three 64 MiB workspaces fit (the pool's
    // included), a fourth does not. Containers images (10 GiB) never fit. (`--max-disk` takes
    // a size; `--max-disk-mb 200` is its alias.)
    let s = Server::start_with(&["--max-disk", "200M", "--workers-workspace-mb", "64"]);
    let mut created = Vec::new();
    let mut refused = None;
    for _ in 0..5 {
        let (status, v) = s.post("/sandbox", json!({})).await;
        match status {
            200 => created.push(v["sandbox_id"].as_str().unwrap().to_string()),
            _ => {
                refused = Some((status, v));
                break;
            }
        }
    }
    // The warm pool may hold the third image.
    assert!((2..=3).contains(&created.len()), "{created:?} {refused:?}");
    let images = sandbox_dirs(&s.data_dir).len();
    assert!(images <= 3, "{images} images of 64 MiB within 200 MiB");
    let (status, v) = refused.unwrap();
    assert_eq!(status, 507, "{v}");
    assert_eq!(v["code"], "disk_full", "{v}");
    assert!(v["error"].as_str().unwrap().contains("disk budget"), "{v}");
    let (status, v) = s.post("/sandbox", json!({"engine": "containers"})).await;
    assert!(status == 507 || status == 503, "{status} {v}");
    // Deleting one gives its share back.
    let (status, _) = s.delete(&format!("/sandbox/{}", created[0])).await;
    assert_eq!(status, 200);
    let mut again = 0;
    for _ in 0..20 {
        if s.post("/sandbox", json!({})).await.0 == 200 {
            again += 1;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(again, 1, "a create fits again after a delete");
    s.stop();
}

#[tokio::test]
async fn a_containers_venv_is_on_the_disk() {
    let s = Server::start_with(&["--containers-workspace-mb", "512"]);
    let (status, v) = s.post("/sandbox", json!({"engine": "containers"})).await;
    if status == 503 && v["code"] == "engine_unavailable" {
        eprintln!("containers engine unavailable here: {v}");
        return;
    }
    assert_eq!(status, 200, "{v}");
    let id = v["sandbox_id"].as_str().unwrap();
    let out = s
        .output(
            id,
            "import os\nfs = {l.split()[1]: l.split()[2] for l in open('/proc/mounts')}\n\
             print(fs['/home/user'], fs['/opt/venv'])\n\
             print(os.stat('/home/user').st_dev == os.stat('/opt/venv').st_dev)\n\
             print(sorted(os.listdir('/opt/venv')))",
        )
        .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "ext4 ext4", "{out}");
    assert_eq!(lines[1], "True", "one image, one quota: {out}");
    assert!(lines[2].contains("pyvenv.cfg"), "{out}");
    s.stop();
}

/// What a restart must keep of a sandbox, checked on a (re)started server.
async fn check_rebuilt(s: &Server, id: &str, expires_at: u64, what: &str) {
    let (status, v) = s.get(&format!("/sandbox/{id}")).await;
    assert_eq!(status, 200, "{what}: the sandbox is gone: {v}");
    assert_eq!(
        v["expires_at"], expires_at,
        "{what}: expiry counts from the original deadline"
    );
    assert_eq!(v["metadata"]["task"], "durable", "{what}: {v}");
    let (_, list) = s.get("/sandboxes").await;
    assert!(
        list["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["sandbox_id"] == id),
        "{what}: not listed: {list}"
    );
    let (status, v) = s
        .get(&format!("/sandbox/{id}/files?path=data/keep.txt"))
        .await;
    assert_eq!(status, 200, "{what}: {v}");
    assert_eq!(v["content"], "kept across restarts", "{what}: {v}");
    let out = s
        .output(
            id,
            "import os\nprint(os.environ['SECRET_NAME'], open('data/keep.txt').read())",
        )
        .await;
    assert_eq!(out, "from-env kept across restarts", "{what}");
    let (status, v) = s.get(&format!("/sandbox/{id}/processes")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["processes"].as_array().map_or(0, Vec::len),
        0,
        "{what}: processes do not survive: {v}"
    );
}

#[tokio::test]
async fn sandboxes_survive_sigterm_and_kill_9() {
    let s = Server::start();
    let id = s
        .sandbox_with(json!({
            "envs": {"SECRET_NAME": "from-env"},
            "metadata": {"task": "durable"},
            "timeout_ms": 600_000,
        }))
        .await;
    let gone = s.sandbox().await;
    let (status, _) = s.delete(&format!("/sandbox/{gone}")).await;
    assert_eq!(status, 200);
    let expired = s.sandbox_with(json!({"timeout_ms": 3_000})).await;
    s.output(
        &id,
        "import os\nos.makedirs('data')\nopen('data/keep.txt','w').write('kept across restarts')",
    )
    .await;
    s.run_with(
        &id,
        json!({"code": "import time\ntime.sleep(600)", "background": true}),
    )
    .await;
    let (_, v) = s.get(&format!("/sandbox/{id}")).await;
    let expires_at = v["expires_at"].as_u64().unwrap();

    // SIGTERM, then a restart on the same data dir.
    let (data_dir, exit) = s.stop_keeping_data(Duration::from_secs(30));
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}");
    tokio::time::sleep(Duration::from_secs(3)).await; // `expired` runs out meanwhile
    let s = Server::start_in(data_dir, &[]);
    check_rebuilt(&s, &id, expires_at, "after SIGTERM").await;
    for other in [&gone, &expired] {
        let (status, _) = s.get(&format!("/sandbox/{other}")).await;
        assert_eq!(status, 404, "deleted and expired sandboxes stay gone");
    }
    // Only the rebuilt sandbox and the pool have disks; the others' images are deleted.
    let (_, list) = s.get("/sandboxes").await;
    assert_eq!(list["sandboxes"].as_array().unwrap().len(), 1, "{list}");

    // kill -9: the helpers tear down on their own; the next server rebuilds again.
    let data_dir = s.crash();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = Server::start_in(data_dir.clone(), &[]);
    check_rebuilt(&s, &id, expires_at, "after kill -9").await;

    // Deleting it for good leaves nothing on the host.
    let (status, _) = s.delete(&format!("/sandbox/{id}")).await;
    assert_eq!(status, 200);
    let cg = s.cgroup_dir();
    s.stop();
    let s = Server::start_in(data_dir.clone(), &[]);
    let (status, _) = s.get(&format!("/sandbox/{id}")).await;
    assert_eq!(status, 404);
    s.stop();
    assert!(
        sandbox_dirs(&data_dir).is_empty(),
        "{:?}",
        sandbox_dirs(&data_dir)
    );
    eventually("no loop device left", || loops_under(&data_dir).is_empty()).await;
    assert!(mounts_under(&data_dir).is_empty());
    let left: Vec<_> = std::fs::read_dir(&cg)
        .map(|d| d.flatten().filter(|e| e.path().is_dir()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "cgroups left: {left:?}");
}

#[tokio::test]
async fn exposed_ports_resolve_again_after_a_restart() {
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
    // The host name carries no port of the server: it is the same after the restart.
    let host_header = host["host"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await; // the exposure is recorded off-path
    let (data_dir, _) = s.stop_keeping_data(Duration::from_secs(30));
    let s = Server::start_in(data_dir, &[]);
    // Something listens again on the rebuilt sandbox: the same URL reaches it.
    let body = s.serve_and_fetch_page(&id, &host_header, "again").await;
    assert!(
        body.contains("again"),
        "the exposed port is proxied again: {body:?}"
    );
    s.stop();
}
