//! `cerver __jail`: the small privileged program that builds one sandbox and stays as its
//! host-side supervisor. The tokio server never forks; it spawns this program instead.
//!
//! 1. mount the workspace image in a mount namespace of its own (`disk`); create the sandbox
//!    cgroup;
//! 2. `clone` the sandbox init into new user, pid, mount, ipc, uts and network namespaces;
//! 3. put it in the cgroup and write its uid/gid maps (sandbox 0..65536 -> uid_base..);
//! 4. wait: for the init to exit, for SIGTERM, or for the lifeline pipe to close (the server is
//!    gone). Then kill the init (the kernel kills everything in its pid namespace with it),
//!    remove the cgroup and exit.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::JailError;
use crate::cgroup::SandboxCgroup;
use crate::disk::MountedDisk;
use crate::protocol::{JailConfig, LIFELINE_FD, MAPPED_IDS, Network};

/// Stack for the cloned init until it is a process of its own (it never execs).
const INIT_STACK: usize = 256 * 1024;

/// Entry point of `cerver __jail`. Returns the process exit code.
pub fn main(cfg: JailConfig) -> i32 {
    match run(&cfg) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn validate(cfg: &JailConfig) -> Result<(), JailError> {
    let label_ok = !cfg.label.is_empty()
        && cfg.label.len() <= 64
        && cfg
            .label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !label_ok {
        return Err(JailError::Setup(format!("invalid label {:?}", cfg.label)));
    }
    if cfg.uid_base == 0 || cfg.uid_base.checked_add(MAPPED_IDS).is_none() {
        return Err(JailError::Setup(
            "uid_base must map to unprivileged host ids".into(),
        ));
    }
    Ok(())
}

fn run(cfg: &JailConfig) -> Result<i32, JailError> {
    validate(cfg)?;
    let setup = |what: &str| {
        let what = what.to_string();
        move |e: nix::Error| JailError::Setup(format!("{what}: {e}"))
    };

    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    signals.thread_block().map_err(setup("block signals"))?;
    let sigfd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(setup("signalfd"))?;

    crate::harden::lift_host_budgets()?;
    // Before anything needs undoing: a failure here leaves nothing behind (see `disk`).
    let disk = match &cfg.disk {
        Some(image) => Some(crate::disk::mount_image(image, cfg.uid_base)?),
        None => None,
    };
    let cgroup = SandboxCgroup::create(&cfg.cgroup_parent, &cfg.label, &cfg.limits)?;
    let result = supervise(cfg, disk.as_ref(), &cgroup, &sigfd);
    let cleanup = cgroup.destroy();
    let code = result?;
    cleanup?;
    Ok(code)
}

fn supervise(
    cfg: &JailConfig,
    disk: Option<&MountedDisk>,
    cgroup: &SandboxCgroup,
    sigfd: &SignalFd,
) -> Result<i32, JailError> {
    let setup = |what: &'static str| move |e: nix::Error| JailError::Setup(format!("{what}: {e}"));
    let (go_read, go_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(setup("pipe"))?;

    let mut stack = vec![0u8; INIT_STACK];
    let flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWNET;
    let go_fd = &go_read;
    // SAFETY: this process is single-threaded (the server spawned it with exec), so the child
    // starts with a consistent copy of memory; the callback never returns into our frames (it
    // exits the process with the init's code).
    let init = unsafe {
        nix::sched::clone(
            Box::new(|| crate::init::main(cfg, go_fd.as_fd(), disk)),
            &mut stack,
            flags,
            Some(Signal::SIGCHLD as i32),
        )
    }
    .map_err(setup("clone sandbox namespaces"))?;
    drop(go_read);

    let started = start_init(cfg, cgroup, init, go_write);
    if let Err(e) = started {
        let _ = kill(init, Signal::SIGKILL);
        let _ = waitpid(init, None);
        return Err(e);
    }
    wait_loop(init, sigfd)
}

/// Puts the init in its cgroup and user namespace mapping, then lets it go on.
fn start_init(
    cfg: &JailConfig,
    cgroup: &SandboxCgroup,
    init: Pid,
    go: OwnedFd,
) -> Result<(), JailError> {
    cgroup.add_process(init.as_raw())?;
    let map = format!("0 {} {}\n", cfg.uid_base, MAPPED_IDS);
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{init}/{file}");
        fs::write(&path, &map).map_err(|e| JailError::Setup(format!("write {path}: {e}")))?;
    }
    if let Network::Egress(net) = &cfg.network {
        crate::net::create_veth(net, init.as_raw())?;
    }
    nix::unistd::write(&go, b"g").map_err(|e| JailError::Setup(format!("release init: {e}")))?;
    Ok(())
}

fn wait_loop(init: Pid, sigfd: &SignalFd) -> Result<i32, JailError> {
    // SAFETY: LIFELINE_FD was placed by the runtime when it spawned us and stays open for our
    // whole life; we only poll it.
    let lifeline = unsafe { BorrowedFd::borrow_raw(LIFELINE_FD) };
    loop {
        let mut fds = [
            PollFd::new(lifeline, PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(JailError::Setup(format!("poll: {e}"))),
        }
        let server_gone = fds[0].revents().is_some_and(|r| !r.is_empty());
        let mut terminate = server_gone;
        while let Ok(Some(info)) = sigfd.read_signal() {
            if info.ssi_signo != Signal::SIGCHLD as u32 {
                terminate = true;
            }
        }
        if terminate {
            let _ = kill(init, Signal::SIGKILL);
            let _ = waitpid(init, None);
            return Ok(0);
        }
        match waitpid(init, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            _ => {}
        }
    }
}
