//! One cgroup per sandbox, through `cgroups-rs` (which handles v1, the hybrid layout of this
//! machine, and pure v2). Every sandbox process lives in it: memory, pids and CPU limits apply
//! to the sandbox as a whole, and teardown can find every process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::CgroupPid;
use cgroups_rs::fs::cgroup::Cgroup;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Controller, MaxValue};

use crate::protocol::Limits;

/// The controllers a sandbox cgroup uses; others (cpuset, devices, ...) are left alone.
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
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
        source: cgroups_rs::fs::error::Error,
    },
    /// processes survived teardown
    #[error("cgroup {0} still has processes after teardown")]
    NotEmpty(String),
}

pub struct SandboxCgroup {
    cg: Cgroup,
    path: String,
}

fn op_err(
    op: &'static str,
    path: &str,
) -> impl FnOnce(cgroups_rs::fs::error::Error) -> CgroupError {
    let path = path.to_string();
    move |source| CgroupError::Op { op, path, source }
}

fn controllers() -> Option<Vec<String>> {
    Some(CONTROLLERS.iter().map(|s| s.to_string()).collect())
}

impl SandboxCgroup {
    /// Creates `<parent>/<label>` in every hierarchy and applies `limits`.
    pub fn create(parent: &str, label: &str, limits: &Limits) -> Result<Self, CgroupError> {
        let path = format!("{parent}/{label}");
        let cg = Cgroup::new_with_specified_controllers(hierarchies::auto(), &path, controllers())
            .map_err(op_err("create", &path))?;
        let this = SandboxCgroup { cg, path };
        if let Err(e) = this.apply(limits) {
            let _ = this.cg.delete();
            return Err(e);
        }
        Ok(this)
    }

    /// Handle to an existing cgroup (for teardown and counters).
    pub fn load(parent: &str, label: &str) -> Self {
        let path = format!("{parent}/{label}");
        let cg = Cgroup::load_with_specified_controllers(
            hierarchies::auto(),
            &path,
            CONTROLLERS.iter().map(|s| s.to_string()).collect(),
        );
        SandboxCgroup { cg, path }
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        let p = &self.path;
        if let Some(mem) = self.cg.controller_of::<MemController>() {
            mem.set_limit(limits.memory_bytes as i64)
                .map_err(op_err("memory limit", p))?;
            if !self.cg.v2() {
                // No swap on top of the limit where the kernel accounts it (v1 memsw); best
                // effort because swap accounting may be compiled out.
                let _ = mem.set_memswap_limit(limits.memory_bytes as i64);
            }
        }
        if let Some(pids) = self.cg.controller_of::<PidController>() {
            pids.set_pid_max(MaxValue::Value(limits.pids as i64))
                .map_err(op_err("pids limit", p))?;
        }
        if let Some(cpu) = self.cg.controller_of::<CpuController>() {
            let shares = if self.cg.v2() {
                // cgroup v2 weight is 1..=10000 with 100 as default; v1 shares default 1024.
                (limits.cpu_shares * 100 / 1024).clamp(1, 10_000)
            } else {
                limits.cpu_shares.max(2)
            };
            cpu.set_shares(shares).map_err(op_err("cpu weight", p))?;
            if limits.cpu_cores > 0.0 {
                let quota = (limits.cpu_cores * CFS_PERIOD_US as f64) as i64;
                cpu.set_cfs_quota_and_period(Some(quota), Some(CFS_PERIOD_US))
                    .map_err(op_err("cpu quota", p))?;
            }
        }
        Ok(())
    }

    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        self.cg
            .add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(op_err("add process", &self.path))
    }

    pub fn processes(&self) -> Vec<i32> {
        self.cg.procs().into_iter().map(|p| p.pid as i32).collect()
    }

    /// The file holding this cgroup's OOM-kill counter, to read with [`read_oom_kills`]
    /// (resolved once: finding the hierarchy parses /proc/self/mountinfo).
    pub fn oom_counter(&self) -> Option<PathBuf> {
        let mem = self.cg.controller_of::<MemController>()?;
        let file = if self.cg.v2() {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        Some(mem.path().join(file))
    }

    /// Kills every process left in the cgroup and removes it. Normally the sandbox's pid
    /// namespace is already gone (its init died, so the kernel killed the rest); this is the
    /// safety net for anything that is not.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let procs = self.processes();
            for pid in &procs {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if procs.is_empty() && self.cg.delete().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CgroupError::NotEmpty(self.path.clone()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// How many processes the kernel's OOM killer has killed in a cgroup so far, from the file
/// [`SandboxCgroup::oom_counter`] names. cgroups-rs parses v1's `memory.oom_control` but not
/// v2's `memory.events`; both are `key value` lines with an `oom_kill` key.
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
    let hier = hierarchies::auto();
    let mut labels = std::collections::BTreeSet::new();
    for sub in Cgroup::load_with_specified_controllers(
        hierarchies::auto(),
        parent,
        CONTROLLERS.iter().map(|s| s.to_string()).collect(),
    )
    .subsystems()
    {
        let dir = sub.to_controller().path().to_path_buf();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    labels.insert(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
    }
    drop(hier);
    let mut reaped = 0;
    for label in labels {
        if SandboxCgroup::load(parent, &label).destroy().is_ok() {
            reaped += 1;
        }
    }
    reaped
}

/// Whether the memory, pids and cpu controllers are available (a start-up check).
pub fn available() -> Result<(), String> {
    let hier = hierarchies::auto();
    let v2 = hier.v2();
    let root = Cgroup::load_with_specified_controllers(
        hier,
        "",
        CONTROLLERS.iter().map(|s| s.to_string()).collect(),
    );
    let found: Vec<String> = root
        .subsystems()
        .iter()
        .map(|s| s.controller_name())
        .collect();
    let missing: Vec<&str> = CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !found.iter().any(|f| f == c))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "cgroup controllers missing ({}): {}",
            if v2 { "v2" } else { "v1" },
            missing.join(", ")
        ))
    }
}
