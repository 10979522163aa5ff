//! Real cgroupfs tests (root): the host's layout (hybrid on the project's machine: v1
//! controllers) and a cgroup2 mount each test makes itself. Names carry the test process id,
//! so parallel runs of other checkouts do not collide.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::*;

fn limits() -> Limits {
    Limits {
        memory_bytes: 256 << 20,
        pids: 64,
        cpu_shares: 512,
        cpu_cores: 0.5,
        open_files: 256,
        workspace_bytes: 1 << 20,
        tmp_bytes: 1 << 20,
        shm_bytes: 1 << 20,
        file_bytes: 1 << 20,
    }
}

fn parent(name: &str) -> String {
    format!("cerver-jailtest/{}-{name}", std::process::id())
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .to_string()
}

fn sleeper() -> Child {
    Command::new("sleep").arg("60").spawn().unwrap()
}

/// Removes a test parent (and its `cerver-jailtest` root when nothing else is in it).
fn cleanup(layout: &Layout, parent: &str) {
    for dir in layout.dirs(Path::new(parent)) {
        let _ = remove_tree(&dir);
        let _ = std::fs::remove_dir(dir.parent().unwrap());
    }
}

#[test]
fn settings_per_layout() {
    let v1 = sandbox_settings(false, &limits());
    let files: Vec<_> = v1.iter().map(|s| (s.file, s.value.as_str())).collect();
    assert_eq!(
        files,
        [
            ("memory.memsw.limit_in_bytes", "-1"),
            ("memory.limit_in_bytes", "268435456"),
            ("memory.memsw.limit_in_bytes", "268435456"),
            ("pids.max", "64"),
            ("cpu.shares", "512"),
            ("cpu.cfs_period_us", "20000"),
            ("cpu.cfs_quota_us", "10000"),
        ]
    );
    let v2 = sandbox_settings(true, &limits());
    let files: Vec<_> = v2.iter().map(|s| (s.file, s.value.as_str())).collect();
    assert_eq!(
        files,
        [
            ("memory.max", "268435456"),
            ("memory.swap.max", "0"),
            ("memory.high", "251658240"),
            ("pids.max", "64"),
            ("cpu.weight", "50"),
            ("cpu.max", "10000 20000"),
        ]
    );
    assert!(
        v2.iter()
            .find(|s| s.file == "memory.swap.max")
            .unwrap()
            .optional
    );
    // The parent cap has no memory.high (it would throttle every sandbox at once).
    assert!(
        !memory_settings(true, 1 << 30, false)
            .iter()
            .any(|s| s.file == "memory.high")
    );
}

#[test]
fn default_parent_memory_leaves_a_reserve() {
    assert_eq!(default_parent_memory(32 << 30), 28 << 30);
    assert_eq!(default_parent_memory(4 << 30), (4 << 30) - (512 << 20));
    assert_eq!(default_parent_memory(64 << 30), 60 << 30);
    assert_eq!(default_parent_memory(512 << 20), 256 << 20);
    assert!(host_memory().unwrap() > 0);
}

#[test]
fn host_layout_limits_processes_and_teardown() {
    let layout = Layout::host().unwrap();
    let parent = parent("life");
    let cg = SandboxCgroup::create_in(layout, &parent, "sb", &limits()).unwrap();
    let v2 = layout.is_v2();
    let mem = layout.dir(Controller::Memory, &cg.rel).unwrap();
    let pids = layout.dir(Controller::Pids, &cg.rel).unwrap();
    let cpu = layout.dir(Controller::Cpu, &cg.rel).unwrap();
    if v2 {
        assert_eq!(read(&mem, "memory.max"), "268435456");
        assert_eq!(read(&mem, "memory.high"), "251658240");
        assert_eq!(read(&cpu, "cpu.max"), "10000 20000");
    } else {
        assert_eq!(read(&mem, "memory.limit_in_bytes"), "268435456");
        if mem.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(read(&mem, "memory.memsw.limit_in_bytes"), "268435456");
        }
        assert_eq!(read(&cpu, "cpu.shares"), "512");
        assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "10000");
    }
    assert_eq!(read(&pids, "pids.max"), "64");

    let mut child = sleeper();
    cg.add_process(child.id() as i32).unwrap();
    assert_eq!(cg.processes(), vec![child.id() as i32]);
    cg.destroy().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    assert!(cg.dirs().iter().all(|d| !d.exists()), "{:?}", cg.dirs());
    cleanup(layout, &parent);
}

#[test]
fn host_layout_reaps_stale_cgroups() {
    let layout = Layout::host().unwrap();
    let parent = parent("reap");
    let mut children = Vec::new();
    for label in ["a", "b"] {
        let cg = SandboxCgroup::create_in(layout, &parent, label, &limits()).unwrap();
        let child = sleeper();
        cg.add_process(child.id() as i32).unwrap();
        children.push(child);
    }
    assert_eq!(reap_stale_in(layout, &parent), 2);
    for mut c in children {
        assert_eq!(c.wait().unwrap().signal(), Some(9));
    }
    assert_eq!(reap_stale_in(layout, &parent), 0);
    cleanup(layout, &parent);
}

/// The server-wide cap binds a sandbox whose own limit is higher: its memory hog is
/// OOM-killed at the parent's cap, and with no swap allowed on top.
#[test]
fn host_layout_parent_cap_binds_the_sandboxes() {
    let layout = Layout::host().unwrap();
    let parent = parent("cap");
    cap_parent_in(layout, &parent, 48 << 20).unwrap();
    let pdir = layout.dir(Controller::Memory, Path::new(&parent)).unwrap();
    let (limit, swap) = if layout.is_v2() {
        ("memory.max", "memory.swap.max")
    } else {
        ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes")
    };
    assert_eq!(read(&pdir, limit), (48u64 << 20).to_string());
    // A restarted server may raise (or lower) the cap of an existing parent.
    cap_parent_in(layout, &parent, 96 << 20).unwrap();
    assert_eq!(read(&pdir, limit), (96u64 << 20).to_string());
    cap_parent_in(layout, &parent, 48 << 20).unwrap();
    assert_eq!(read(&pdir, limit), (48u64 << 20).to_string());
    if pdir.join(swap).exists() {
        let want = if layout.is_v2() {
            "0".to_string()
        } else {
            (48u64 << 20).to_string()
        };
        assert_eq!(read(&pdir, swap), want);
    }
    let cg = SandboxCgroup::create_in(layout, &parent, "hog", &limits()).unwrap();
    // Waits for a line on stdin (sent once it is in the cgroup), then touches 128 MiB.
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys; sys.stdin.readline(); b = b'x' * (128 << 20); print(len(b))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    cg.add_process(child.id() as i32).unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(
        child.wait().unwrap().signal(),
        Some(9),
        "the hog was not killed"
    );
    // The kernel counts the kill in the victim's cgroup, the counter the runtime reads.
    assert!(
        read_oom_kills(&cg.oom_counter().unwrap()) >= 1,
        "no OOM kill counted"
    );
    cg.destroy().unwrap();
    cleanup(layout, &parent);
}

/// A fresh cgroup2 mount in a temp dir, unmounted on drop.
struct V2Mount(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl V2Mount {
    fn new() -> V2Mount {
        let dir = tempfile::tempdir().unwrap();
        let flags = nix::mount::MsFlags::empty();
        nix::mount::mount(
            Some("cgroup2"),
            dir.path(),
            Some("cgroup2"),
            flags,
            None::<&str>,
        )
        .unwrap();
        V2Mount(dir.path().to_path_buf(), dir)
    }
}

impl Drop for V2Mount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// v2 on a cgroup2 mount the test makes. On a hybrid host the v1 hierarchies hold memory, pids
/// and cpu, so this mount has none of them: creating a sandbox with limits must then fail
/// loudly (never run unlimited), and what v2 offers without controllers (nesting, membership,
/// `cgroup.kill`, removal, reaping) is exercised for real. On a v2 host the limits apply too.
#[test]
fn fresh_cgroup2_mount() {
    let mount = V2Mount::new();
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let point = mount.0.to_str().unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains(point) && l.contains(" - cgroup2 "))
    );
    let layout = Layout::V2 {
        root: mount.0.clone(),
    };
    assert_eq!(layout.name(), "v2");
    let parent = parent("v2");
    let missing = layout.missing();
    if missing.is_empty() {
        let cg = SandboxCgroup::create_in(&layout, &parent, "sb", &limits()).unwrap();
        assert_eq!(read(&cg.dirs()[0], "memory.max"), "268435456");
        assert_eq!(read(&cg.dirs()[0], "memory.high"), "251658240");
        cg.destroy().unwrap();
    } else {
        let err = SandboxCgroup::create_in(&layout, &parent, "sb", &limits())
            .err()
            .unwrap();
        assert!(err.to_string().contains("memory.max"), "{err}");
        assert!(
            !mount.0.join(&parent).join("sb").exists(),
            "a failed create left its cgroup"
        );
    }
    // Membership and teardown, which need no controller.
    make_dirs(&layout, &Path::new(&parent).join("sb")).unwrap();
    let cg = SandboxCgroup::load_in(&layout, &parent, "sb");
    assert_eq!(cg.dirs(), vec![mount.0.join(&parent).join("sb")]);
    let mut child = sleeper();
    cg.add_process(child.id() as i32).unwrap();
    assert_eq!(cg.processes(), vec![child.id() as i32]);
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
    assert!(
        own.lines()
            .any(|l| l.starts_with("0::/") && l.ends_with("/sb")),
        "{own}"
    );
    assert_eq!(cg.oom_counter(), Some(cg.dirs()[0].join("memory.events")));
    assert_eq!(reap_stale_in(&layout, &parent), 1);
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    assert!(!mount.0.join(&parent).join("sb").exists());
    cleanup(&layout, &parent);
}
