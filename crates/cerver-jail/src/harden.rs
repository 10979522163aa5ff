//! The last steps before the zygote's `execve`: resource limits, capabilities, Landlock,
//! `no_new_privs` and seccomp. Order matters: each step needs privileges the next one removes.
//! Also the per-user kernel budgets: lifted for host root in the helper
//! ([`lift_host_budgets`]), set low inside each sandbox ([`KERNEL_BUDGETS`], [`USERNS_LIMITS`]).

use caps::{CapSet, Capability, CapsHashSet};
use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    Scope, path_beneath_rules,
};
use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};

use crate::JailError;
use crate::protocol::{Limits, VENV, WORKSPACE};

/// Capabilities the zygote keeps (inside the sandbox's user namespace only):
/// - SETUID/SETGID: switch each run to the unprivileged sandbox user, which clears all caps;
/// - SETPCAP: empty the run's bounding set before that switch;
/// - KILL: a run's leader (root of the namespace) kills the run's processes (the sandbox
///   user's) on timeout.
///
/// The seccomp policy refuses what else these could be used for. User code never holds any
/// capability (CapEff = CapBnd = 0).
pub const ZYGOTE_CAPS: [Capability; 4] = [
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_SETPCAP,
    Capability::CAP_KILL,
];

/// Filesystem access of everything in the sandbox (Landlock, defence in depth on top of the
/// mount layout): read anything the mount layout shows, execute only system files and the
/// scratch areas, write only the scratch areas. `/proc` is writable because a process's own
/// files there (e.g. `oom_score_adj`) live under per-pid inodes that no static rule can name.
const READ_ONLY: [&str; 1] = ["/"];
const READ_EXEC: [&str; 2] = ["/usr", "/opt/cerver"];
const READ_WRITE: [&str; 5] = [WORKSPACE, "/tmp", "/dev", "/proc", VENV];

fn e(what: &'static str) -> impl FnOnce(String) -> JailError {
    move |m| JailError::Setup(format!("{what}: {m}"))
}

pub fn rlimits(limits: &Limits) -> Result<(), JailError> {
    let set = |r, v: u64| setrlimit(r, v, v).map_err(|err| e("setrlimit")(err.to_string()));
    set(Resource::RLIMIT_NOFILE, limits.open_files)?;
    set(Resource::RLIMIT_CORE, 0)?;
    set(Resource::RLIMIT_FSIZE, limits.file_bytes)?;
    // Per-user process count in this user namespace: a second fence behind the pids cgroup.
    set(Resource::RLIMIT_NPROC, limits.pids)?;
    for (resource, value) in KERNEL_BUDGETS {
        set(resource, value)?;
    }
    Ok(())
}

/// Per-user kernel budgets, set explicitly and low for everything in the sandbox (soft = hard,
/// and nothing in it holds CAP_SYS_RESOURCE to raise them). The kernel counts these per user
/// of the sandbox's user namespace *and* charges them up the namespace chain to host root, the
/// namespace's creator (see [`lift_host_budgets`]): without a low limit here, one sandbox could
/// hold host root's whole budget and fail every other sandbox.
///
/// | limit | value | why this much |
/// |---|---|---|
/// | `RLIMIT_SIGPENDING` | 1024 | queued signals; code rarely has more than a handful pending |
/// | `RLIMIT_MSGQUEUE` | 256 KiB | POSIX message queue bytes: three queues of the default 10 × 8 KiB |
/// | `RLIMIT_MEMLOCK` | 8 MiB | locked memory (the usual distribution default); memory of the cgroup anyway |
/// | `RLIMIT_RTPRIO` | 0 | no real-time scheduling |
/// | `RLIMIT_NICE` | 0 | no raising of priorities (lowering is always allowed) |
pub const KERNEL_BUDGETS: [(Resource, u64); 5] = [
    (Resource::RLIMIT_SIGPENDING, 1024),
    (Resource::RLIMIT_MSGQUEUE, 256 << 10),
    (Resource::RLIMIT_MEMLOCK, 8 << 20),
    (Resource::RLIMIT_RTPRIO, 0),
    (Resource::RLIMIT_NICE, 0),
];

/// Limits of the sandbox's own user namespace, in `/proc/sys/user/`: each counts per user of
/// the namespace and is checked again, on the way up, against the host's limit for host root
/// (the namespace's creator). Written by the sandbox init, which is root of the namespace with
/// CAP_SYS_RESOURCE there until it starts the zygote; nothing later can change them (writing
/// needs that capability, and reading is all the rest of the sandbox gets).
///
/// - inotify: 16 instances and 8192 watches (host root's total is the host's
///   `fs.inotify.max_user_*`, often 128 instances: the sandbox must not take them all);
/// - fanotify and every kind of namespace: 0 (seccomp refuses them already; this is the second
///   fence, and keeps the sandbox from charging host root's namespace counts).
pub const USERNS_LIMITS: [(&str, u64); 12] = [
    ("max_inotify_instances", 16),
    ("max_inotify_watches", 8192),
    ("max_fanotify_groups", 0),
    ("max_fanotify_marks", 0),
    ("max_user_namespaces", 0),
    ("max_pid_namespaces", 0),
    ("max_net_namespaces", 0),
    ("max_mnt_namespaces", 0),
    ("max_ipc_namespaces", 0),
    ("max_uts_namespaces", 0),
    ("max_cgroup_namespaces", 0),
    ("max_time_namespaces", 0),
];

/// In the helper, before it creates the sandbox's user namespace (as host root, which may raise
/// hard limits): lifts the rlimit-based budgets that the kernel charges to host root for every
/// sandbox. A new user namespace records its creator's `RLIMIT_SIGPENDING`, `RLIMIT_MSGQUEUE`
/// and `RLIMIT_MEMLOCK` as the cap on the creator's *total*, which all sandboxes share; lifted,
/// only each sandbox's own [`KERNEL_BUDGETS`] bound it (and the kernel memory behind them is
/// charged to its cgroup). Best effort: raising a hard limit needs CAP_SYS_RESOURCE.
pub fn lift_host_budgets() -> Result<(), JailError> {
    for r in [
        Resource::RLIMIT_SIGPENDING,
        Resource::RLIMIT_MSGQUEUE,
        Resource::RLIMIT_MEMLOCK,
    ] {
        match setrlimit(r, RLIM_INFINITY, RLIM_INFINITY) {
            // Without CAP_SYS_RESOURCE (some container hosts drop it from root's bounding set)
            // the totals stay at the server's own limits: each sandbox is still bounded by
            // KERNEL_BUDGETS, only many sandboxes together can reach them.
            Ok(()) | Err(nix::errno::Errno::EPERM) => {}
            Err(err) => return Err(e("lift host budget")(format!("{r:?}: {err}"))),
        }
    }
    Ok(())
}

/// In the sandbox init, inside its user namespace and after `/proc` is the sandbox's own:
/// writes [`USERNS_LIMITS`]. A file this kernel does not have (older kernels lack some) is
/// skipped; any other failure fails the sandbox.
pub fn userns_limits() -> Result<(), JailError> {
    for (name, value) in USERNS_LIMITS {
        let path = format!("/proc/sys/user/{name}");
        match std::fs::write(&path, value.to_string()) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            other => other.map_err(|err| e("user namespace limit")(format!("{path}: {err}")))?,
        }
    }
    Ok(())
}

/// Shrinks the bounding set to ZYGOTE_CAPS and clears inheritable and ambient sets, so that
/// the exec'd interpreter (root in the user namespace) gets exactly ZYGOTE_CAPS.
pub fn capabilities() -> Result<(), JailError> {
    let keep: CapsHashSet = ZYGOTE_CAPS.into_iter().collect();
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|err| e("drop bounding cap")(err.to_string()))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|err| e("clear ambient caps")(err.to_string()))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|err| e("clear inheritable caps")(err.to_string()))?;
    Ok(())
}

pub fn landlock() -> Result<(), JailError> {
    let abi = ABI::V6;
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.scope(Scope::AbstractUnixSocket | Scope::Signal))
        .and_then(|r| r.create())
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                READ_ONLY,
                AccessFs::ReadFile | AccessFs::ReadDir,
            ))
        })
        .and_then(|r| r.add_rules(path_beneath_rules(READ_EXEC, AccessFs::from_read(abi))))
        .and_then(|r| r.add_rules(path_beneath_rules(READ_WRITE, AccessFs::from_all(abi))))
        .and_then(|r| r.restrict_self())
        .map_err(|err| e("landlock")(err.to_string()))?;
    let _ = status;
    Ok(())
}

pub fn no_new_privs() -> Result<(), JailError> {
    nix::sys::prctl::set_no_new_privs().map_err(|err| e("no_new_privs")(err.to_string()))
}
