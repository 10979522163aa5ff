//! Pid 1 of a sandbox. Finishes the set-up that needs to happen inside the new namespaces
//! (ids, cgroup namespace, filesystem, user-namespace limits, hostname, loopback), then starts the zygote and stays
//! as the reaper: it collects orphans and restarts the zygote if it ever dies, so that no run
//! can leave the sandbox without its interpreter.

use std::collections::VecDeque;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Gid, Pid, Uid};

use crate::JailError;
use crate::disk::MountedDisk;
use crate::protocol::{JailConfig, LIFELINE_FD, Network};

/// At most this many zygote restarts within RESTART_WINDOW, then the sandbox gives up (and the
/// runtime reports it as failed) rather than loop.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// Runs in the cloned child; the return value is the process's exit code.
pub fn main(cfg: &JailConfig, go: BorrowedFd<'_>, disk: Option<&MountedDisk>) -> isize {
    match run(cfg, go, disk) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn setup_err(what: &'static str) -> impl FnOnce(nix::Error) -> JailError {
    move |e| JailError::Setup(format!("{what}: {e}"))
}

fn run(
    cfg: &JailConfig,
    go: BorrowedFd<'_>,
    disk: Option<&MountedDisk>,
) -> Result<isize, JailError> {
    // Die with the helper, whatever happens to it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(setup_err("pdeathsig"))?;
    let mut byte = [0u8; 1];
    if nix::unistd::read(go, &mut byte).map_err(setup_err("wait for helper"))? != 1 {
        return Err(JailError::Setup(
            "helper went away before the sandbox started".into(),
        ));
    }
    // SAFETY: closing descriptors this process inherited and never uses again (the go pipe and
    // the helper's lifeline); nothing else refers to them here.
    unsafe {
        libc::close(go_raw(go));
        libc::close(LIFELINE_FD);
    }

    // Become root of the new user namespace (host uid_base), dropping the host's root ids.
    nix::unistd::setgroups(&[]).map_err(setup_err("setgroups"))?;
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(setup_err("setresgid"))?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(setup_err("setresuid"))?;
    // The helper has moved us into the sandbox cgroup: make it our cgroup root.
    unshare(CloneFlags::CLONE_NEWCGROUP).map_err(setup_err("unshare cgroup namespace"))?;
    crate::rootfs::enter(cfg, disk)?;
    // Still root of the namespace with every capability there: the last moment to set its limits.
    crate::harden::userns_limits()?;
    nix::unistd::sethostname(&cfg.hostname).map_err(setup_err("sethostname"))?;
    match &cfg.network {
        Network::Loopback => crate::net::loopback_up()?,
        Network::Egress(net) => {
            crate::net::loopback_up()?;
            crate::net::configure_sandbox_side(net)?;
        }
    }

    // SIGCHLD stays blocked (inherited from the helper) and is consumed with sigwait below.
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    chld.thread_block().map_err(setup_err("block SIGCHLD"))?;

    let mut zygote = crate::zygote::spawn(cfg)?;
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    loop {
        let _ = chld.wait();
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) if status.pid() == Some(zygote) => {
                    // A clean exit means the control socket closed: the sandbox is being torn down.
                    if let WaitStatus::Exited(_, 0) = status {
                        return Ok(0);
                    }
                    eprintln!("zygote ended ({status:?}); restarting it");
                    let now = Instant::now();
                    restarts.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
                    if restarts.len() >= MAX_RESTARTS {
                        return Err(JailError::Setup("zygote keeps dying; giving up".into()));
                    }
                    restarts.push_back(now);
                    zygote = crate::zygote::spawn(cfg)?;
                }
                Ok(_) => {} // an orphan, reaped
            }
        }
    }
}

fn go_raw(fd: BorrowedFd<'_>) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}
