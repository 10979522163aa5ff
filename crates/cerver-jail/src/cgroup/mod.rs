//! One cgroup per sandbox, written against cgroupfs directly (plain file writes; see
//! [`layout`] for the v1, hybrid and v2 layouts). Every sandbox process lives in it: memory,
//! pids and CPU limits apply to the sandbox as a whole, and teardown can find every process.
//! Hand-rolled rather than `cgroups-rs` because that crate brings `zbus` and a second async
//! runtime into this synchronous crate, for about a dozen file operations.

pub mod layout;
#[cfg(test)]
mod tests;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use layout::{Controller, Layout};

use crate::protocol::Limits;

/// CFS period used with `Limits::cpu_cores`: short, so that a throttled burst stalls briefly.
const CFS_PERIOD_US: u64 = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// cgroup operation failed
    #[error("cgroup {op} failed for {path}: {source}")]
    Op {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// the host's cgroup layout could not be determined
    #[error("cgroup layout: {0}")]
    Layout(String),
    /// processes survived teardown
    #[error("cgroup {0} still has processes after teardown")]
    NotEmpty(String),
}

fn op_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.display().to_string();
    move |source| CgroupError::Op { op, path, source }
}

/// One value a cgroup file gets. `optional`: skipped when the kernel does not offer the file
/// (swap accounting may be compiled out or disabled).
#[derive(Debug, PartialEq)]
pub struct Setting {
    pub controller: Controller,
    pub file: &'static str,
    pub value: String,
    pub optional: bool,
}

fn set(controller: Controller, file: &'static str, value: impl ToString) -> Setting {
    let value = value.to_string();
    Setting {
        controller,
        file,
        value,
        optional: false,
    }
}

fn set_optional(controller: Controller, file: &'static str, value: impl ToString) -> Setting {
    Setting {
        optional: true,
        ..set(controller, file, value)
    }
}

/// `memory.high` on v2: reclaim and throttling start at 15/16 of the hard limit, so a sandbox
/// growing towards it slows down first instead of only ever meeting the OOM killer.
fn memory_high(bytes: u64) -> u64 {
    bytes - bytes / 16
}

/// Memory settings with no swap on top of `bytes`: v2 `memory.swap.max` is swap alone (0);
/// v1 `memory.memsw.limit_in_bytes` is memory plus swap (equal to the limit). v1 refuses a
/// memory limit above the current memsw limit, so memsw is lifted first (a server restarted
/// with a larger cap finds its parent cgroup with the old one).
pub fn memory_settings(v2: bool, bytes: u64, high: bool) -> Vec<Setting> {
    use Controller::Memory;
    if v2 {
        let mut out = vec![
            set(Memory, "memory.max", bytes),
            set_optional(Memory, "memory.swap.max", 0),
        ];
        if high {
            out.push(set(Memory, "memory.high", memory_high(bytes)));
        }
        out
    } else {
        vec![
            set_optional(Memory, "memory.memsw.limit_in_bytes", -1),
            set(Memory, "memory.limit_in_bytes", bytes),
            set_optional(Memory, "memory.memsw.limit_in_bytes", bytes),
        ]
    }
}

/// Everything a sandbox cgroup is given, in the order it must be written.
pub fn sandbox_settings(v2: bool, limits: &Limits) -> Vec<Setting> {
    use Controller::{Cpu, Pids};
    let mut out = memory_settings(v2, limits.memory_bytes, true);
    out.push(set(Pids, "pids.max", limits.pids));
    let quota =
        (limits.cpu_cores > 0.0).then_some((limits.cpu_cores * CFS_PERIOD_US as f64) as u64);
    if v2 {
        // cgroup v2 weight is 1..=10000 with 100 as default; v1 shares default 1024.
        out.push(set(
            Cpu,
            "cpu.weight",
            (limits.cpu_shares * 100 / 1024).clamp(1, 10_000),
        ));
        if let Some(quota) = quota {
            out.push(set(Cpu, "cpu.max", format!("{quota} {CFS_PERIOD_US}")));
        }
    } else {
        out.push(set(Cpu, "cpu.shares", limits.cpu_shares.max(2)));
        if let Some(quota) = quota {
            out.push(set(Cpu, "cpu.cfs_period_us", CFS_PERIOD_US));
            out.push(set(Cpu, "cpu.cfs_quota_us", quota));
        }
    }
    out
}

pub struct SandboxCgroup {
    layout: Layout,
    rel: PathBuf,
}

impl SandboxCgroup {
    /// Creates `<parent>/<label>` in every hierarchy of this host and applies `limits`.
    pub fn create(parent: &str, label: &str, limits: &Limits) -> Result<Self, CgroupError> {
        let layout = Layout::host().map_err(CgroupError::Layout)?;
        Self::create_in(layout, parent, label, limits)
    }

    /// [`SandboxCgroup::create`] in a given layout.
    pub fn create_in(
        layout: &Layout,
        parent: &str,
        label: &str,
        limits: &Limits,
    ) -> Result<Self, CgroupError> {
        let this = Self::load_in(layout, parent, label);
        make_dirs(layout, &this.rel)?;
        if let Err(e) = this.apply(&sandbox_settings(layout.is_v2(), limits)) {
            let _ = this.remove();
            return Err(e);
        }
        Ok(this)
    }

    /// Handle to an existing cgroup (for teardown and counters). Without a usable layout the
    /// handle has no directories and every operation on it is a no-op.
    pub fn load(parent: &str, label: &str) -> Self {
        let none = Layout::V1 {
            mounts: Vec::new(),
            unified: None,
        };
        Self::load_in(Layout::host().unwrap_or(&none), parent, label)
    }

    pub fn load_in(layout: &Layout, parent: &str, label: &str) -> Self {
        let rel = Path::new(parent).join(label);
        SandboxCgroup {
            layout: layout.clone(),
            rel,
        }
    }

    /// The directories of this cgroup, one per hierarchy.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.layout.dirs(&self.rel)
    }

    fn apply(&self, settings: &[Setting]) -> Result<(), CgroupError> {
        write_settings(&self.layout, &self.rel, settings)
    }

    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            let file = dir.join("cgroup.procs");
            std::fs::write(&file, pid.to_string()).map_err(op_err("add process", &file))?;
        }
        Ok(())
    }

    /// Every process in the cgroup (in any of its hierarchies).
    pub fn processes(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for dir in self.dirs() {
            let text = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in text.lines().filter_map(|l| l.trim().parse().ok()) {
                if !out.contains(&pid) {
                    out.push(pid);
                }
            }
        }
        out
    }

    /// The file holding this cgroup's OOM-kill counter, to read with [`read_oom_kills`].
    pub fn oom_counter(&self) -> Option<PathBuf> {
        let dir = self.layout.dir(Controller::Memory, &self.rel)?;
        let file = if self.layout.is_v2() {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        Some(dir.join(file))
    }

    /// Kills every process left in the cgroup and removes it. Normally the sandbox's pid
    /// namespace is already gone (its init died, so the kernel killed the rest); this is the
    /// safety net for anything that is not.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let procs = self.processes();
            if !procs.is_empty() && self.layout.is_v2() {
                // v2 (Linux 5.14+) kills the whole cgroup at once, forks included.
                let _ = std::fs::write(self.rel_dir().join("cgroup.kill"), "1");
            }
            for pid in &procs {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if procs.is_empty() && self.remove().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CgroupError::NotEmpty(self.rel.display().to_string()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn rel_dir(&self) -> PathBuf {
        self.dirs().into_iter().next().unwrap_or_default()
    }

    /// Removes the cgroup's directories (and any child cgroups) in every hierarchy.
    fn remove(&self) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            remove_tree(&dir)?;
        }
        Ok(())
    }
}

/// Creates cgroup `rel` in every hierarchy. On v2, each ancestor first delegates the sandbox
/// controllers it has to its children (`cgroup.subtree_control`), as v2 requires.
fn make_dirs(layout: &Layout, rel: &Path) -> Result<(), CgroupError> {
    match layout {
        Layout::V1 { .. } => {
            for dir in layout.dirs(rel) {
                std::fs::create_dir_all(&dir).map_err(op_err("create", &dir))?;
            }
        }
        Layout::V2 { root } => {
            let mut dir = root.clone();
            for part in rel.components() {
                enable_controllers(&dir)?;
                dir.push(part);
                match std::fs::create_dir(&dir) {
                    Err(e) if e.kind() != ErrorKind::AlreadyExists => {
                        return Err(op_err("create", &dir)(e));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Delegates the sandbox controllers `dir` has (and does not delegate yet) to its children.
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let (have, on) = (read("cgroup.controllers"), read("cgroup.subtree_control"));
    let words = |s: &str, w: &str| s.split_whitespace().any(|x| x == w);
    let add: Vec<String> = Controller::ALL
        .iter()
        .map(|c| c.name())
        .filter(|n| words(&have, n) && !words(&on, n))
        .map(|n| format!("+{n}"))
        .collect();
    if add.is_empty() {
        return Ok(());
    }
    let file = dir.join("cgroup.subtree_control");
    std::fs::write(&file, add.join(" ")).map_err(op_err("enable controllers", &file))
}

fn write_settings(layout: &Layout, rel: &Path, settings: &[Setting]) -> Result<(), CgroupError> {
    for s in settings {
        let Some(dir) = layout.dir(s.controller, rel) else {
            continue; // a controller this host lacks; start-up refuses such hosts (`available`)
        };
        let file = dir.join(s.file);
        if s.optional && !file.exists() {
            continue;
        }
        std::fs::write(&file, &s.value).map_err(op_err(s.file, &file))?;
    }
    Ok(())
}

/// Depth-first `rmdir` (cgroupfs directories are removed with their control files in them).
fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(op_err("remove", dir)(e)),
        Ok(entries) => {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&e.path())?;
                }
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(op_err("remove", dir)(e)),
        _ => Ok(()),
    }
}

/// How many processes the kernel's OOM killer has killed in a cgroup so far, from the file
/// [`SandboxCgroup::oom_counter`] names: v1's `memory.oom_control` and v2's `memory.events`
/// are both `key value` lines with an `oom_kill` key.
pub fn read_oom_kills(counter: &Path) -> u64 {
    let text = std::fs::read_to_string(counter).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == "oom_kill")
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Removes the sandbox cgroups under `parent` that a previous server left behind (after a
/// crash), killing whatever still runs in them. Returns how many were reaped.
pub fn reap_stale(parent: &str) -> usize {
    Layout::host().map_or(0, |layout| reap_stale_in(layout, parent))
}

pub fn reap_stale_in(layout: &Layout, parent: &str) -> usize {
    let mut labels = std::collections::BTreeSet::new();
    for dir in layout.dirs(Path::new(parent)) {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                labels.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let destroyed = |label: &String| SandboxCgroup::load_in(layout, parent, label).destroy();
    labels.iter().filter(|l| destroyed(l).is_ok()).count()
}

/// Creates `parent` (the cgroup all of one server's sandboxes live under) and caps the memory
/// of everything in it together at `memory_bytes`, swap excluded, so that the sandboxes as a
/// whole cannot take the host's last memory however many there are.
pub fn cap_parent(parent: &str, memory_bytes: u64) -> Result<(), CgroupError> {
    let layout = Layout::host().map_err(CgroupError::Layout)?;
    cap_parent_in(layout, parent, memory_bytes)
}

pub fn cap_parent_in(layout: &Layout, parent: &str, memory_bytes: u64) -> Result<(), CgroupError> {
    let rel = Path::new(parent);
    make_dirs(layout, rel)?;
    write_settings(
        layout,
        rel,
        &memory_settings(layout.is_v2(), memory_bytes, false),
    )
}

/// The default cap of [`cap_parent`]: the host's memory minus a reserve for the host and the
/// server itself (an eighth of it, at least 512 MiB and at most 4 GiB), or half the memory on
/// hosts too small for that reserve.
pub fn default_parent_memory(mem_total: u64) -> u64 {
    let reserve = (mem_total / 8).clamp(512 << 20, 4 << 30);
    mem_total
        .checked_sub(reserve)
        .filter(|&m| m >= mem_total / 2)
        .unwrap_or(mem_total / 2)
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whether the memory, pids and cpu controllers are available (a start-up check).
pub fn available() -> Result<(), String> {
    let layout = Layout::host()?;
    let missing = layout.missing();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "cgroup controllers missing ({}): {}",
            layout.name(),
            missing.join(", ")
        ))
    }
}
