//! Starting the zygote: a warm Python interpreter (`zygote.py`) that forks one child per run,
//! so a run costs a fork rather than an interpreter start.
//!
//! The zygote is exec'd as root of the sandbox's user namespace with only
//! [`crate::harden::ZYGOTE_CAPS`], under Landlock, `no_new_privs` and the zygote seccomp filter.
//! Each run child inherits that filter, stacks the run filter ([`crate::seccomp::RUN_FILTER`],
//! handed over on the command line) when the policy makes it stricter, and drops to the sandbox
//! user before executing any user code.

use std::ffi::CString;

use nix::sys::signal::SigSet;
use nix::unistd::{ForkResult, Pid, fork};

use crate::JailError;
use crate::protocol::{CONTROL_FD, JailConfig, ROOT_PROCESS_RESERVE, SANDBOX_UID, WORKSPACE};

/// The zygote program, run with `python3 -I -S -c`.
pub const ZYGOTE_SOURCE: &str = include_str!("zygote.py");
/// Rich results of runs (`cerver_display` in the sandbox), handed to the zygote in its settings.
pub const DISPLAY_SOURCE: &str = include_str!("display.py");
/// Persistent interpreters (contexts), handed to the zygote in its settings.
pub const CONTEXT_SOURCE: &str = include_str!("context.py");

/// Environment of the zygote itself; each run gets its own environment from the runtime.
fn zygote_env() -> [String; 3] {
    use crate::layout::{HOME, LANG, PATH};
    [
        format!("PATH={PATH}"),
        format!("LANG={LANG}"),
        format!("HOME={HOME}"),
    ]
}

fn cstring(s: &str) -> Result<CString, JailError> {
    CString::new(s).map_err(|_| JailError::Setup("NUL byte in zygote argument".into()))
}

/// Forks and execs the zygote; returns its pid.
pub fn spawn(cfg: &JailConfig) -> Result<Pid, JailError> {
    let settings = serde_json::json!({
        // Stacking an identical filter would only slow every syscall down.
        "run_filter": (crate::seccomp::RUN_FILTER != crate::seccomp::ZYGOTE_FILTER)
            .then(|| hex(crate::seccomp::RUN_FILTER)),
        "display_source": DISPLAY_SOURCE,
        "context_source": CONTEXT_SOURCE,
        "workspace": WORKSPACE,
        "venv": crate::protocol::VENV,
        "uid": SANDBOX_UID,
        "user_nproc": cfg.limits.pids.saturating_sub(ROOT_PROCESS_RESERVE).max(1),
    })
    .to_string();
    let argv = [
        cfg.python.as_str(),
        "-I",
        "-S",
        "-c",
        ZYGOTE_SOURCE,
        settings.as_str(),
    ]
    .iter()
    .map(|s| cstring(s))
    .collect::<Result<Vec<_>, _>>()?;
    let env = zygote_env()
        .iter()
        .map(|s| cstring(s))
        .collect::<Result<Vec<_>, _>>()?;
    let python = cstring(&cfg.python)?;

    // SAFETY: the init is single-threaded; the child only makes syscalls and execs (or exits).
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => Ok(child),
        Ok(ForkResult::Child) => {
            let err = exec(cfg, &python, &argv, &env);
            eprintln!("zygote: {err}");
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(127) }
        }
        Err(e) => Err(JailError::Setup(format!("fork zygote: {e}"))),
    }
}

fn exec(cfg: &JailConfig, python: &CString, argv: &[CString], env: &[CString]) -> JailError {
    let step = || -> Result<(), JailError> {
        SigSet::empty()
            .thread_set_mask()
            .map_err(|e| JailError::Setup(format!("signal mask: {e}")))?;
        nix::unistd::setsid().map_err(|e| JailError::Setup(format!("setsid: {e}")))?;
        crate::harden::rlimits(&cfg.limits)?;
        crate::harden::capabilities()?;
        crate::harden::no_new_privs()?;
        crate::harden::landlock()?;
        // Only stdio and the control socket cross into the interpreter.
        // SAFETY: close_range on descriptors above CONTROL_FD, none of which we use again.
        if unsafe { libc::close_range(CONTROL_FD as u32 + 1, u32::MAX, 0) } != 0 {
            return Err(JailError::Setup("close_range failed".into()));
        }
        crate::seccomp::install_zygote_filters()
            .map_err(|e| JailError::Setup(format!("seccomp: {e}")))?;
        Ok(())
    };
    if let Err(e) = step() {
        return e;
    }
    match nix::unistd::execve(python, argv, env) {
        Err(e) => JailError::Setup(format!("exec {}: {e}", cfg.python)),
        Ok(never) => match never {},
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
