//! Start-up, shutdown and crash recovery of the real binary.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, sandbox_cgroups};

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn refuses_to_start_without_the_means_to_isolate() {
    let dir = std::env::temp_dir().join(format!("cerver-nonroot-{}", common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    Command::new("chmod").arg("777").arg(&dir).status().unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_cerver"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refusing to start") && stderr.contains("root privileges"),
        "{stderr}"
    );
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let s = Server::start();
    let out = Command::new(env!("CARGO_BIN_EXE_cerver"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&s.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already using the data dir"));
}

/// The data dir holds the store (hashed keys, sandboxes' env values for rebuilds) and the
/// workspace images: the server makes it private to root even when it was created open.
#[test]
fn the_data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("cerver-private-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = Server::start_in(dir.clone(), &[]);
    let mode = std::fs::metadata(&s.data_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

/// A server with one sandbox in which a run left a detached process running.
async fn server_with_a_background_process() -> Server {
    let s = Server::start();
    let id = s.sandbox().await;
    s.run(
        &id,
        "import subprocess\nsubprocess.Popen(['sleep', '1000'], start_new_session=True)",
    )
    .await;
    s
}

#[tokio::test]
async fn shutdown_and_crashes_leave_nothing_behind() {
    // Graceful shutdown destroys every sandbox.
    let s = server_with_a_background_process().await;
    let cg = s.cgroup_dir();
    assert!(!sandbox_cgroups(&cg).is_empty());
    s.stop();
    wait_until("cgroups removed after shutdown", || {
        sandbox_cgroups(&cg).is_empty()
    });

    // A crashed server's helpers notice (lifeline) and tear their sandboxes down.
    let s = server_with_a_background_process().await;
    let cg = s.cgroup_dir();
    let dir = s.crash();
    wait_until("cgroups removed after a crash", || {
        sandbox_cgroups(&cg).is_empty()
    });

    // If the helpers die too, the next server on the same data dir reaps the leftovers.
    let s = Server::start_in(dir.clone(), &[]);
    let id = s.sandbox().await;
    s.run(&id, "print(1)").await;
    let server_pid = s.pid();
    let helpers: Vec<String> =
        std::fs::read_to_string(format!("/proc/{server_pid}/task/{server_pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect();
    let all_children: Vec<String> = std::fs::read_dir(format!("/proc/{server_pid}/task"))
        .unwrap()
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .chain(helpers)
        .collect();
    assert!(!all_children.is_empty());
    let left = s.crash();
    for pid in &all_children {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
    let s = Server::start_in(left, &[]);
    // Only the new server's own sandboxes may exist now: its pool and the unexpired sandboxes
    // it rebuilt from their disks (tests/durable.rs).
    let (_, list) = s.get("/sandboxes").await;
    let rebuilt = list["sandboxes"].as_array().map_or(0, Vec::len);
    let before_pool: Vec<String> = sandbox_cgroups(&cg);
    assert!(
        before_pool.len() <= 2 + rebuilt,
        "stale sandboxes were not reaped: {before_pool:?} ({rebuilt} rebuilt)"
    );
    assert_eq!(s.output(&s.sandbox().await, "print('ok')").await, "ok");
}

#[tokio::test]
async fn a_configured_rootfs_is_used() {
    let root = std::env::temp_dir().join(format!("cerver-rootfs-{}", common::rand_suffix()));
    std::fs::create_dir_all(root.join("usr")).unwrap();
    std::fs::create_dir_all(root.join("etc/ssl/certs")).unwrap();
    std::fs::write(
        root.join("etc/ssl/certs/ca-certificates.crt"),
        "ROOTFS-MARKER\n",
    )
    .unwrap();
    for dir in ["bin", "lib", "lib64", "sbin"] {
        if let Ok(target) = std::fs::read_link(format!("/{dir}")) {
            std::os::unix::fs::symlink(target, root.join(dir)).unwrap();
        }
    }
    assert!(
        Command::new("mount")
            .args(["--bind", "/usr"])
            .arg(root.join("usr"))
            .status()
            .unwrap()
            .success()
    );
    let result = std::panic::AssertUnwindSafe(async {
        let s = Server::start_with(&["--rootfs", root.to_str().unwrap()]);
        let id = s.sandbox().await;
        let out = s
            .output(
                &id,
                "print(open('/etc/ssl/certs/ca-certificates.crt').read().strip())",
            )
            .await;
        assert_eq!(out, "ROOTFS-MARKER");
    });
    let outcome = futures::FutureExt::catch_unwind(result).await;
    let _ = Command::new("umount")
        .arg("-l")
        .arg(root.join("usr"))
        .status();
    let _ = std::fs::remove_dir_all(&root);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}

#[tokio::test]
async fn limits_come_from_the_configuration_file() {
    let cfg = std::env::temp_dir().join(format!("cerver-config-{}.toml", common::rand_suffix()));
    std::fs::write(&cfg, "[workers]\nworkspace_mb = 8\nopen_files = 64\n").unwrap();
    let s = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let id = s.sandbox().await;
    let code = "import errno\ntry:\n    open('big', 'wb').write(b'x' * (16 << 20))\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\nimport resource\nprint(resource.getrlimit(resource.RLIMIT_NOFILE)[0])";
    assert_eq!(s.output(&id, code).await, "ENOSPC\n64");
    drop(s);
    std::fs::write(&cfg, "[workers]\nmemroy_mb = 8\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cerver"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(std::env::temp_dir().join(format!("cerver-badcfg-{}", common::rand_suffix())))
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&cfg);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("memroy_mb"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
