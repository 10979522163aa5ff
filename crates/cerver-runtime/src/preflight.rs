//! Start-up checks: refuse to run rather than run without isolation.

use std::path::Path;

use crate::{RuntimeConfig, RuntimeError};

/// Everything sandboxes rely on, checked before the server accepts a request. Each missing
/// piece is named; there is no insecure fallback.
pub fn check(cfg: &RuntimeConfig) -> Result<(), RuntimeError> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push(
            "root privileges (the sandbox helper sets up namespaces and cgroups)".to_string(),
        );
    }
    let max_userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if max_userns == 0 || !Path::new("/proc/self/ns/user").exists() {
        missing.push("user namespaces (/proc/sys/user/max_user_namespaces is 0 or absent)".into());
    }
    for ns in ["pid", "mnt", "net", "ipc", "uts", "cgroup"] {
        if !Path::new("/proc/self/ns").join(ns).exists() {
            missing.push(format!("{ns} namespaces"));
        }
    }
    let seccomp =
        std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    if !seccomp.split_whitespace().any(|a| a == "errno") {
        missing.push("seccomp filters (/proc/sys/kernel/seccomp/actions_avail)".into());
    }
    if let Err(e) = cerver_jail::cgroup::available() {
        missing.push(e);
    }
    let python = cfg.rootfs.join(cfg.python.trim_start_matches('/'));
    if !python.exists() {
        missing.push(format!("a Python interpreter at {}", python.display()));
    }
    if !Path::new("/dev/loop-control").exists() {
        missing.push("loop devices (/dev/loop-control: sandbox disks are images on them)".into());
    }
    if !["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        missing.push("mkfs.ext4 (e2fsprogs: it formats the sandbox disk templates)".into());
    }
    if !cfg.helper.exists() {
        missing.push(format!("the helper binary at {}", cfg.helper.display()));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(RuntimeError::Unsupported(missing.join("; ")))
    }
}

/// A stable id for this data directory, so that a restarted server finds (and reaps) exactly
/// the cgroups its predecessor left, and never another server's.
pub fn instance_id(data_dir: &Path) -> Result<String, RuntimeError> {
    let file = data_dir.join("instance-id");
    if let Ok(id) = std::fs::read_to_string(&file) {
        let id = id.trim();
        if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(id.to_string());
        }
    }
    let id = format!("{:016x}", rand::random::<u64>());
    std::fs::create_dir_all(data_dir)
        .and_then(|_| std::fs::write(&file, &id))
        .map_err(|e| RuntimeError::Internal(format!("write {}: {e}", file.display())))?;
    Ok(id)
}
