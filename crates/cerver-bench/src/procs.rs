//! Host-side views of a server's sandboxes: its `cerver __jail` helper trees (from /proc),
//! their proportional set size, the sandbox cgroups' memory counters and MemAvailable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The cgroup v1 memory hierarchy the sandbox cgroups live under
/// (`<root>/cerver/<instance-id>/<label>/`).
const MEMORY_CGROUP_ROOT: &str = "/sys/fs/cgroup/memory";

/// pid -> parent pid, for every process currently in /proc.
fn parents() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses, so cut after the
        // last ')'.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            map.insert(pid, ppid);
        }
    }
    map
}

/// Whether `pid` is a `cerver __jail` helper (its argv[1] is `__jail`).
fn is_jail_helper(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).nth(1) == Some(b"__jail".as_slice()))
        .unwrap_or(false)
}

/// The processes of a server's sandboxes: its `__jail` helper children and all their
/// descendants.
#[derive(Debug, Default)]
pub struct JailTrees {
    /// Number of `__jail` helpers (one per sandbox, pooled or live).
    pub helpers: usize,
    /// Every pid in the helper trees, helpers included.
    pub pids: Vec<u32>,
}

pub fn jail_trees(server_pid: u32) -> JailTrees {
    let parents = parents();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &ppid) in &parents {
        children.entry(ppid).or_default().push(pid);
    }
    let helpers: Vec<u32> = children
        .get(&server_pid)
        .map(|c| c.iter().copied().filter(|&p| is_jail_helper(p)).collect())
        .unwrap_or_default();
    let mut pids = Vec::new();
    let mut stack = helpers.clone();
    while let Some(pid) = stack.pop() {
        pids.push(pid);
        if let Some(c) = children.get(&pid) {
            stack.extend(c);
        }
    }
    JailTrees {
        helpers: helpers.len(),
        pids,
    }
}

/// Sum of `Pss:` (bytes) over `pids`, and how many pids could be read. Processes that exit
/// meanwhile are skipped.
pub fn pss_sum(pids: &[u32]) -> (u64, usize) {
    let mut total = 0;
    let mut read = 0;
    for pid in pids {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        if let Some(kib) = kib_field(&text, "Pss:") {
            total += kib * 1024;
            read += 1;
        }
    }
    (total, read)
}

/// `MemAvailable` from /proc/meminfo, in bytes.
pub fn mem_available() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
    match kib_field(&text, "MemAvailable:") {
        Some(kib) => Ok(kib * 1024),
        None => bail!("no MemAvailable in /proc/meminfo"),
    }
}

/// The value of a `Name:   123 kB` line.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The memory cgroup directory holding a server's sandbox cgroups.
pub fn cgroup_dir(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let file = data_dir.join("instance-id");
    let id = std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
    Ok(Path::new(MEMORY_CGROUP_ROOT).join("cerver").join(id.trim()))
}

/// Sum of `memory.usage_in_bytes` over the sandbox cgroups directly under `dir`, and how many
/// were read; `None` when none could be read (no v1 memory controller, or no permission).
pub fn cgroup_usage_sum(dir: &Path) -> Option<(u64, usize)> {
    let mut total = 0;
    let mut read = 0;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let usage = std::fs::read_to_string(entry.path().join("memory.usage_in_bytes"));
        if let Some(bytes) = usage.ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            total += bytes;
            read += 1;
        }
    }
    if read == 0 && !dir.is_dir() {
        None
    } else {
        Some((total, read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kib_lines() {
        let text = "Rss:                1234 kB\nPss:                 567 kB\n";
        assert_eq!(kib_field(text, "Pss:"), Some(567));
        assert_eq!(kib_field(text, "Swap:"), None);
    }

    #[test]
    fn sees_own_process() {
        let me = std::process::id();
        assert!(parents().contains_key(&me));
        let (pss, read) = pss_sum(&[me]);
        assert_eq!(read, 1);
        assert!(pss > 0);
        assert!(mem_available().unwrap() > 0);
    }
}
