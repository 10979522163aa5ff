//! What the host side (`cerver-runtime`) and the sandbox side (helper, init, zygote) say to each
//! other. These are internal messages, not the HTTP wire format (that lives in `cerver-types`).
//!
//! Flow: the runtime spawns `cerver __jail <JailConfig as JSON>` with the control socket on
//! [`CONTROL_FD`], a lifeline pipe on [`LIFELINE_FD`] and the zygote's program on [`PROGRAM_FD`]. The zygote inside the sandbox announces
//! itself with [`ZygoteEvent::Ready`]; the runtime then sends [`ZygoteRequest`]s, each `Run`
//! carrying [`RUN_FDS`] file descriptors (SCM_RIGHTS) in this order: spec (a memfd holding a
//! [`RunSpec`] as JSON), stdin, stdout, stderr, status, results (JSON lines of rich results that
//! the run's main process writes; see `display.py`). The run's leader writes one [`RunStatus`]
//! line into the status pipe when the run's main process ends (preceded by a `pid` line when
//! the request asked for it).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// File descriptor number of the control socket (SOCK_SEQPACKET) in the helper and the zygote.
pub const CONTROL_FD: i32 = 3;
/// File descriptor number of the lifeline pipe's read end in the helper: EOF means the server is
/// gone and the sandbox must be torn down.
pub const LIFELINE_FD: i32 = 4;
/// File descriptor number of the zygote's program in the helper and the init: one sealed memfd
/// the runtime makes at start and hands to every helper ([`crate::zygote::program_memfd`]).
pub const PROGRAM_FD: i32 = 5;
/// Number of file descriptors attached to a `Run` request.
pub const RUN_FDS: usize = 6;
/// Largest control message, in bytes.
pub const MAX_CONTROL_MESSAGE: usize = 4096;

/// The workspace and the venv are part of the sandbox layout (defined in [`crate::layout`]).
pub use crate::layout::{VENV, VENV_PATH, WORKSPACE};
/// The uid and gid that user code runs as inside the sandbox.
pub const SANDBOX_UID: u32 = 1000;
/// Processes of a sandbox's `pids` limit that user code can never take (RLIMIT_NPROC of the
/// sandbox user is `pids - ROOT_PROCESS_RESERVE`), so that the init, the zygote and run leaders
/// can always start the next run, even during a fork bomb.
pub const ROOT_PROCESS_RESERVE: u64 = 16;
/// Number of uids/gids mapped into each sandbox's user namespace (0..MAPPED_IDS).
pub const MAPPED_IDS: u32 = 65536;

/// Everything the helper needs to build one sandbox.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct JailConfig {
    /// Host-side name of the sandbox (cgroup directory name); `[a-z0-9-]{1,64}`.
    pub label: String,
    /// Cgroup directory (relative to each hierarchy's root) under which `label` is created.
    pub cgroup_parent: String,
    /// Host uid/gid that the sandbox's root maps to; the sandbox's ids 0..MAPPED_IDS map to
    /// uid_base..uid_base+MAPPED_IDS. Never 0.
    pub uid_base: u32,
    /// Root filesystem to take `/usr` (and the usr-merged `/bin`, `/lib`, ...) from.
    pub rootfs: PathBuf,
    /// Interpreter inside the sandbox.
    pub python: String,
    pub hostname: String,
    pub limits: Limits,
    /// What the sandbox's network namespace gets.
    pub network: Network,
    /// Package tooling for the containers engine: a writable virtual environment at
    /// [`VENV`], the installer binary and the shared wheel cache, both read-only.
    #[serde(default)]
    pub packages: Option<Packages>,
    /// The sandbox's workspace image (a sparse ext4 file of `limits.workspace_bytes`, see
    /// [`crate::disk`]): `/home/user` (and `/opt/venv`) live on it. `None`: both are tmpfs
    /// mounts charged to the memory cgroup (the jail's own tests).
    #[serde(default)]
    pub disk: Option<PathBuf>,
}

/// Where the installer binary is bound (read-only).
pub const INSTALLER: &str = "/opt/cerver/uv";
/// Where the wheel cache's selections directory is bound (read-only, not listable; only the
/// host writes it; an install from the cache gets `WHEELHOUSE/<its selection>`).
pub const WHEELHOUSE: &str = "/opt/cerver/wheels";

/// Package tooling bound into a containers sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Packages {
    /// Host path of the installer (`uv`) binary, when the host has one.
    pub installer: Option<PathBuf>,
    /// Host directory bound at [`WHEELHOUSE`] (the wheel cache's selections), filled by the
    /// host only.
    pub wheelhouse: PathBuf,
    /// Size of the tmpfs holding the virtual environment.
    pub venv_bytes: u64,
}

/// The network of a sandbox (its own network namespace in every case).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// Only `lo`: code can talk to itself, nothing else (the workers engine).
    Loopback,
    /// `lo` plus `eth0`, one end of a veth pair whose other end (`host_if`) stays in the host;
    /// the host routes and NATs its traffic through a firewall that allows the internet and
    /// the listed resolvers only (the containers engine).
    Egress(Egress),
}

/// Addresses of a sandbox's veth pair: a /30 per sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Egress {
    /// Host-side interface name (`cerv<n>`), matched by the host firewall's rules.
    pub host_if: String,
    /// The host end's address: the sandbox's gateway.
    pub gateway: std::net::Ipv4Addr,
    /// The sandbox's own address on `eth0`.
    pub address: std::net::Ipv4Addr,
    pub prefix_len: u8,
    /// DNS resolvers written to the sandbox's `/etc/resolv.conf`.
    pub nameservers: Vec<std::net::Ipv4Addr>,
}

/// Name of the sandbox end of the veth pair.
pub const SANDBOX_IF: &str = "eth0";

/// Resource limits of one sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Limits {
    /// Memory cgroup limit for everything in the sandbox, including its tmpfs files.
    pub memory_bytes: u64,
    /// Maximum number of tasks (processes and threads) in the sandbox.
    pub pids: u64,
    /// Relative CPU weight (cgroup v1 `cpu.shares`; converted for v2).
    pub cpu_shares: u64,
    /// Hard CPU cap in cores (CFS quota); 0 = none. Off by default: a cap throttles the
    /// bursts of a run plus its zygote (tens of ms stalls); `cpu_shares` already keeps sandboxes
    /// from starving the server and each other.
    pub cpu_cores: f64,
    /// RLIMIT_NOFILE of every process in the sandbox.
    pub open_files: u64,
    /// Size of the workspace filesystem (writes past it fail with ENOSPC).
    pub workspace_bytes: u64,
    /// Size of `/tmp`.
    pub tmp_bytes: u64,
    /// Size of `/dev/shm`.
    pub shm_bytes: u64,
    /// RLIMIT_FSIZE: largest single file a process may write.
    pub file_bytes: u64,
}

/// Runtime -> zygote.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ZygoteRequest {
    /// Start a run; carries RUN_FDS descriptors. With `report_pid`, the leader first writes a
    /// [`RunStatus`] line holding only `pid` (the main process's pid in the sandbox), before the
    /// line that reports the end.
    Run {
        id: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        report_pid: bool,
    },
    /// Kill a run and everything it started (every descendant of its leader).
    Kill { id: u64 },
}

/// Zygote -> runtime.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ZygoteEvent {
    /// The zygote is warm and accepts requests (sent again after a restart).
    Ready { pid: i32 },
}

/// What a run executes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunSpec {
    /// Python source, executed like `python -c`.
    Code {
        code: String,
        env: BTreeMap<String, String>,
    },
    /// Execute a program (`argv[0]` is its absolute path) as the sandbox user, like a shell
    /// would: the install step runs the installer this way.
    Exec {
        argv: Vec<String>,
        env: BTreeMap<String, String>,
    },
    /// Write stdin to `path` (relative to the workspace), creating parent directories.
    /// Prints `{"size": N}` on stdout.
    WriteFile { path: String, max_bytes: u64 },
    /// Copy the file at `path` to stdout; fails if larger than `max_bytes`.
    ReadFile { path: String, max_bytes: u64 },
    /// Print `{"files": [{"path", "size"}...], "truncated": bool}` for the tree under `path`:
    /// at most `max_entries` entries whose paths add up to at most `max_path_bytes` (0: no
    /// such bound).
    ListFiles {
        path: String,
        max_entries: u64,
        #[serde(default)]
        max_path_bytes: u64,
    },
    /// A persistent interpreter (`context.py`): its stdin is a SOCK_SEQPACKET socket on which
    /// it receives executions, each with [`CONTEXT_EXEC_FDS`] descriptors, until it closes.
    Context {
        env: BTreeMap<String, String>,
        /// Working directory (relative to the workspace, or absolute); the workspace if empty.
        cwd: String,
    },
}

/// Descriptors of one execution in a context: code (a memfd), stdout, stderr, results, status.
pub const CONTEXT_EXEC_FDS: usize = 5;

/// The end of a run, written by the run's leader (or, with `report_pid`, first its start).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct RunStatus {
    /// Only in the start line of a run asked to `report_pid`: the main process's pid inside
    /// the sandbox (what `os.getpid()` says there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Exit status of the main process, when it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Signal that ended the main process, when it was killed.
    #[serde(default)]
    pub signal: Option<i32>,
    /// The run could not be started.
    #[serde(default)]
    pub error: Option<String>,
    /// With `error`: the errno of the failed call, when it was a system call (`EAGAIN` from a
    /// fork: the sandbox is at its process limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
}

/// Exit codes of file operations (RunSpec other than Code), with a JSON `{"error": ...}` on
/// stderr.
pub mod file_exit {
    pub const NOT_FOUND: i32 = 10;
    pub const IS_DIRECTORY: i32 = 11;
    pub const TOO_LARGE: i32 = 12;
    pub const NOT_A_DIRECTORY: i32 = 13;
    pub const PERMISSION: i32 = 14;
    pub const NO_SPACE: i32 = 15;
    pub const OTHER: i32 = 16;
}
