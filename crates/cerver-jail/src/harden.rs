//! The last steps before the zygote's `execve`: resource limits, capabilities, Landlock,
//! `no_new_privs` and seccomp. Order matters: each step needs privileges the next one removes.

use caps::{CapSet, Capability, CapsHashSet};
use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    Scope, path_beneath_rules,
};
use nix::sys::resource::{Resource, setrlimit};

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
