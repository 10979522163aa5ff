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

/// Whether `pid`'s argv[1] is `arg` (`__jail`: an exec'd helper; `__template`: the template
/// interpreter, and the helpers it forked, which keep its command line).
fn has_arg(pid: u32, arg: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).nth(1) == Some(arg.as_bytes()))
        .unwrap_or(false)
}

/// The processes of a server's sandboxes: its `__jail` helper children, the helpers its
/// template interpreter forked, all their descendants, and the template itself (whose pages
/// the sandboxes share: a per-level difference of PSS sums then counts what each added
/// sandbox costs, its share of the template included).
#[derive(Debug, Default)]
pub struct JailTrees {
    /// Number of helpers (one per sandbox, pooled or live).
    pub helpers: usize,
    /// Every pid in the helper trees, helpers and the template included.
    pub pids: Vec<u32>,
    /// The template interpreter, when the server has one.
    pub template: Option<u32>,
}

pub fn jail_trees(server_pid: u32) -> JailTrees {
    let parents = parents();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &ppid) in &parents {
        children.entry(ppid).or_default().push(pid);
    }
    let direct = children.get(&server_pid).cloned().unwrap_or_default();
    let template = direct.iter().copied().find(|&p| has_arg(p, "__template"));
    let mut helpers: Vec<u32> = direct
        .iter()
        .copied()
        .filter(|&p| has_arg(p, "__jail"))
        .collect();
    helpers.extend(
        template
            .and_then(|t| children.get(&t))
            .into_iter()
            .flatten(),
    );
    let mut pids: Vec<u32> = template.into_iter().collect();
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
        template,
    }
}

/// Every process below `pid` (children, their children, ...), `pid` not included.
pub fn descendants(pid: u32) -> Vec<u32> {
    let parents = parents();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&p, &pp) in &parents {
        children.entry(pp).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut stack = children.get(&pid).cloned().unwrap_or_default();
    while let Some(p) = stack.pop() {
        out.push(p);
        stack.extend(children.get(&p).into_iter().flatten());
    }
    out
}

/// Open file descriptors of `pid` (entries of `/proc/<pid>/fd`).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident set size of `pid` (`VmRSS`), in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    kib_field(&status, "VmRSS:").unwrap_or(0) * 1024
}

/// The cgroup hierarchies (v1 controllers and the v2 tree) in which a server keeps its
/// sandbox cgroups, `<mount>/cerver/<instance-id>`, with how many sandbox cgroups each holds.
pub fn sandbox_cgroups(data_dir: &Path) -> anyhow::Result<Vec<(PathBuf, usize)>> {
    let file = data_dir.join("instance-id");
    let id = std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/fs/cgroup")?.flatten() {
        let dir = entry.path().join("cerver").join(id.trim());
        let Ok(children) = std::fs::read_dir(&dir) else {
            continue;
        };
        let n = children
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .count();
        out.push((dir, n));
    }
    Ok(out)
}

/// Host network interfaces named `cerv<n>` (the host ends of containers sandboxes' veth
/// pairs, of every server on this host).
pub fn host_veths() -> usize {
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("cerv"))
                .count()
        })
        .unwrap_or(0)
}

/// Sums over a set of processes from `/proc/<pid>/smaps_rollup`, in bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct PssSum {
    pub pss: u64,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    /// Processes read (those that exited meanwhile are skipped).
    pub read: usize,
}

/// Sums `Pss:` (and its `Pss_Anon`/`Pss_File`/`Pss_Shmem` split) over `pids`.
pub fn pss_sum(pids: &[u32]) -> PssSum {
    let mut sum = PssSum::default();
    for pid in pids {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let Some(pss) = kib_field(&text, "Pss:") else {
            continue;
        };
        sum.pss += pss * 1024;
        sum.anon += kib_field(&text, "Pss_Anon:").unwrap_or(0) * 1024;
        sum.file += kib_field(&text, "Pss_File:").unwrap_or(0) * 1024;
        sum.shmem += kib_field(&text, "Pss_Shmem:").unwrap_or(0) * 1024;
        sum.read += 1;
    }
    sum
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

/// Sums over the sandbox cgroups of one server, in bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct CgroupSum {
    /// `memory.usage_in_bytes` (v1: user pages plus kernel memory charged to the cgroup).
    pub usage: u64,
    /// `total_rss` and `total_cache` of `memory.stat`.
    pub rss: u64,
    pub cache: u64,
    /// Cgroups read.
    pub read: usize,
}

/// Sums the memory counters of the sandbox cgroups directly under `dir` (none there counts as
/// zero); `None` when the v1 memory controller is not mounted.
pub fn cgroup_usage_sum(dir: &Path) -> Option<CgroupSum> {
    if !Path::new(MEMORY_CGROUP_ROOT)
        .join("memory.usage_in_bytes")
        .is_file()
    {
        return None;
    }
    let mut sum = CgroupSum::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Some(sum);
    };
    for entry in entries.flatten() {
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let usage = std::fs::read_to_string(entry.path().join("memory.usage_in_bytes"));
        let Some(usage) = usage.ok().and_then(|s| s.trim().parse::<u64>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("memory.stat")).unwrap_or_default();
        sum.usage += usage;
        sum.rss += stat_field(&stat, "total_rss").unwrap_or(0);
        sum.cache += stat_field(&stat, "total_cache").unwrap_or(0);
        sum.read += 1;
    }
    Some(sum)
}

/// The value of a `name 123` line of a cgroup v1 `memory.stat`.
fn stat_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        if key == name {
            value.trim().parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kib_lines() {
        let text = "Rss:                1234 kB\nPss:                 567 kB\n";
        assert_eq!(kib_field(text, "Pss:"), Some(567));
        assert_eq!(kib_field(text, "Swap:"), None);
        let stat = "cache 4096\nrss 8192\ntotal_cache 40960\ntotal_rss 81920\n";
        assert_eq!(stat_field(stat, "rss"), Some(8192));
        assert_eq!(stat_field(stat, "total_rss"), Some(81920));
        assert_eq!(stat_field(stat, "swap"), None);
    }

    #[test]
    fn sees_own_process() {
        let me = std::process::id();
        assert!(parents().contains_key(&me));
        let sum = pss_sum(&[me]);
        assert_eq!(sum.read, 1);
        assert!(sum.pss > 0 && sum.anon > 0);
        assert!(mem_available().unwrap() > 0);
    }
}
