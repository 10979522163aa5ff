//! Where the cgroup controllers a sandbox uses are mounted: read from `/proc/self/mountinfo`.
//! Three layouts exist in the wild and all are handled:
//! - **v1**: one `cgroup` mount per controller (or group of controllers);
//! - **hybrid** (this project's CI machine): v1 mounts hold the controllers and an empty
//!   `cgroup2` mount sits beside them (`/sys/fs/cgroup/unified`); it is treated as v1;
//! - **v2 unified**: one `cgroup2` mount holds every controller.

use std::path::{Path, PathBuf};

/// A controller a sandbox cgroup uses; others (cpuset, devices, ...) are left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    pub const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

/// The host's cgroup layout, as far as the sandbox controllers are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// v1 hierarchies: the mount point of each controller found (missing ones are absent).
    /// `unified` is the `cgroup2` mount of a hybrid layout, if any (it is not used).
    V1 {
        mounts: Vec<(Controller, PathBuf)>,
        unified: Option<PathBuf>,
    },
    /// One cgroup2 hierarchy, mounted at `root`.
    V2 { root: PathBuf },
}

impl Layout {
    /// The layout of this host (read once per process: mounts do not move under a server).
    pub fn host() -> Result<&'static Layout, String> {
        static HOST: std::sync::OnceLock<Result<Layout, String>> = std::sync::OnceLock::new();
        HOST.get_or_init(|| {
            let text = std::fs::read_to_string("/proc/self/mountinfo")
                .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
            Layout::from_mountinfo(&text).ok_or_else(|| "no cgroup filesystem is mounted".into())
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// Classifies the mounts of a `/proc/<pid>/mountinfo` text. v1 wins when any v1 mount holds
    /// one of the sandbox controllers (a hybrid host's `cgroup2` mount then has none of them).
    pub fn from_mountinfo(text: &str) -> Option<Layout> {
        let mut mounts = Vec::new();
        let mut unified = None;
        for line in text.lines() {
            let Some((fstype, point, options)) = parse_line(line) else {
                continue;
            };
            match fstype {
                "cgroup2" if unified.is_none() => unified = Some(point),
                "cgroup" => {
                    for c in Controller::ALL {
                        let held = options.split(',').any(|o| o == c.name());
                        if held && !mounts.iter().any(|(m, _)| *m == c) {
                            mounts.push((c, point.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        match (mounts.is_empty(), unified) {
            (false, unified) => Some(Layout::V1 { mounts, unified }),
            (true, Some(root)) => Some(Layout::V2 { root }),
            (true, None) => None,
        }
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, Layout::V2 { .. })
    }

    /// A short name for messages: "v1", "hybrid" or "v2".
    pub fn name(&self) -> &'static str {
        match self {
            Layout::V1 { unified: None, .. } => "v1",
            Layout::V1 { .. } => "hybrid",
            Layout::V2 { .. } => "v2",
        }
    }

    /// The directory of cgroup `rel` in the hierarchy holding `c` (None: `c` is not mounted).
    pub fn dir(&self, c: Controller, rel: &Path) -> Option<PathBuf> {
        match self {
            Layout::V1 { mounts, .. } => mounts
                .iter()
                .find(|(m, _)| *m == c)
                .map(|(_, p)| p.join(rel)),
            Layout::V2 { root } => Some(root.join(rel)),
        }
    }

    /// Every distinct directory of cgroup `rel` (one per v1 hierarchy; one on v2).
    pub fn dirs(&self, rel: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for c in Controller::ALL {
            if let Some(d) = self.dir(c, rel)
                && !out.contains(&d)
            {
                out.push(d);
            }
        }
        out
    }

    /// The sandbox controllers this layout cannot provide.
    pub fn missing(&self) -> Vec<&'static str> {
        let have: Vec<String> = match self {
            Layout::V1 { mounts, .. } => mounts.iter().map(|(c, _)| c.name().to_string()).collect(),
            Layout::V2 { root } => std::fs::read_to_string(root.join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        };
        Controller::ALL
            .iter()
            .map(|c| c.name())
            .filter(|n| !have.iter().any(|h| h == n))
            .collect()
    }
}

/// `(fstype, mount point, super options)` of one mountinfo line
/// (`id parent maj:min root point options [optional...] - fstype source super-options`).
fn parse_line(line: &str) -> Option<(&str, PathBuf, &str)> {
    let (left, right) = line.split_once(" - ")?;
    let point = left.split(' ').nth(4)?;
    let mut right = right.split(' ');
    let fstype = right.next()?;
    let options = right.nth(1).unwrap_or("");
    Some((fstype, PathBuf::from(unescape(point)), options))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs rw,mode=755
26 25 0:24 / /sys/fs/cgroup/cpu rw,relatime shared:5 - cgroup cgroup rw,cpu
27 25 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
28 25 0:26 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
29 25 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
30 25 0:28 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd";

    #[test]
    fn hybrid_is_v1_with_a_unified_mount() {
        let l = Layout::from_mountinfo(HYBRID).unwrap();
        assert_eq!(l.name(), "hybrid");
        assert!(!l.is_v2());
        let rel = Path::new("cerver/x");
        assert_eq!(
            l.dir(Controller::Memory, rel).unwrap(),
            Path::new("/sys/fs/cgroup/memory/cerver/x")
        );
        assert_eq!(l.dirs(rel).len(), 3);
        assert!(l.missing().is_empty());
    }

    #[test]
    fn pure_v1_with_comounted_controllers() {
        let text = "\
1 0 0:1 / /cg/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
2 0 0:2 / /cg/memory rw - cgroup cgroup rw,memory";
        let l = Layout::from_mountinfo(text).unwrap();
        assert_eq!(l.name(), "v1");
        assert_eq!(
            l.dir(Controller::Cpu, Path::new("a")).unwrap(),
            Path::new("/cg/cpu,cpuacct/a")
        );
        assert_eq!(l.dir(Controller::Pids, Path::new("a")), None);
        assert_eq!(l.missing(), vec!["pids"]);
    }

    #[test]
    fn unified_is_v2() {
        let text = "\
1 0 0:1 / /proc rw - proc proc rw
2 0 0:2 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate";
        let l = Layout::from_mountinfo(text).unwrap();
        assert_eq!(
            l,
            Layout::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
        assert_eq!(
            l.dirs(Path::new("a/b")),
            vec![PathBuf::from("/sys/fs/cgroup/a/b")]
        );
    }

    #[test]
    fn no_cgroup_mount_and_escapes() {
        assert_eq!(
            Layout::from_mountinfo("1 0 0:1 / /proc rw - proc proc rw"),
            None
        );
        assert_eq!(unescape(r"/a\040b\\"), r"/a b\\");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
    }

    #[test]
    fn this_host_has_a_layout_with_the_sandbox_controllers() {
        let l = Layout::host().unwrap();
        assert!(
            l.missing().is_empty(),
            "{} layout lacks {:?}",
            l.name(),
            l.missing()
        );
    }
}
