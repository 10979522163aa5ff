//! `cerver __template`: one warm interpreter per server that every workers sandbox's zygote is
//! a fork of (containers sandboxes exec theirs: see ARCHITECTURE.md on the hash secret).
//!
//! The runtime starts this process once (when the sandboxes' interpreter can be loaded as a
//! library, see [`crate::embed`]). It loads `libpython`, runs the zygote program with `TEMPLATE`
//! set (which imports the warm module set and defines everything without serving) and freezes
//! the heap. Then, for each sandbox, it forks a helper instead of the runtime exec'ing one:
//!
//! ```text
//! server --request--> template --fork--> helper (crate::helper, unchanged)
//!                                          └─clone(new namespaces)─> init ─fork─> zygote
//! ```
//!
//! The helper, its init and the zygote are plain forks, so the interpreter's heap (and the
//! server binary's relocated pages) stay shared copy-on-write across every sandbox of the
//! server; the zygote hardens itself exactly as an exec'd one would (rlimits, capabilities,
//! `no_new_privs`, Landlock, seccomp, in [`crate::zygote`]) and then runs `main(settings)` in
//! the inherited interpreter instead of `execve(python3)`. A cold create skips the interpreter
//! start, and an idle sandbox costs only the pages it has written since.
//!
//! What is shared, and why it is safe, is in ARCHITECTURE.md ("The template interpreter"). In
//! short: the template never runs user code and never reads anything but the runtime's requests
//! on its private socket; every page is copy-on-write (no shared mapping exists); descriptors
//! are closed before any sandbox code runs; and a request's bytes are wiped from the template
//! once its helper is forked, so a sandbox's memory holds only its own configuration.
//!
//! # Protocol (on [`CONTROL_FD`], a `SOCK_SEQPACKET` socket to the runtime)
//! - once loaded: `ready`;
//! - request: the helper's [`JailConfig`] as JSON, with three descriptors: the sandbox's control
//!   socket, its lifeline's read end and the write end of its log pipe;
//! - reply: `{"pid": N}` with a pidfd of the helper (the runtime waits on it and kills through
//!   it), or `{"error": "..."}`.
//!
//! The template exits when the runtime closes the socket, and dies with the server
//! (`PR_SET_PDEATHSIG`). It reaps its helpers; each helper still watches its own lifeline.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::JailError;
use crate::protocol::{CONTROL_FD, JailConfig, LIFELINE_FD, PROGRAM_FD};

/// Largest request (a [`JailConfig`] is well under 4 KiB).
pub const MAX_REQUEST: usize = 64 * 1024;
/// Descriptors attached to a request: control socket, lifeline, log pipe.
pub const REQUEST_FDS: usize = 3;

/// The template's configuration (JSON on its stdin).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct TemplateConfig {
    /// The sandboxes' interpreter as they see it (`sys.executable`), e.g. `/usr/bin/python3`.
    pub python: String,
    /// Host path of the same interpreter as a shared library.
    pub libpython: PathBuf,
}

/// The template's reply to a request.
#[derive(Serialize, Deserialize, Debug)]
#[serde(untagged)]
pub enum Reply {
    Forked { pid: i32 },
    Failed { error: String },
}

/// Entry point of `cerver __template`. Returns the process exit code.
pub fn main(cfg: TemplateConfig) -> i32 {
    match run(&cfg) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("template: {e}");
            1
        }
    }
}

fn setup(what: &'static str) -> impl FnOnce(nix::Error) -> JailError {
    move |e| JailError::Setup(format!("template: {what}: {e}"))
}

fn run(cfg: &TemplateConfig) -> Result<(), JailError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(setup("pdeathsig"))?;
    zygote_environment();
    // BOOTSTRAP reads the program from ZYGOTE_PROGRAM_FD and closes it; PROGRAM_FD stays for
    // the helpers (an init that cannot use the embedded interpreter execs a zygote from it).
    // SAFETY: PROGRAM_FD was placed by the runtime; borrowed only to duplicate it.
    let program = unsafe { BorrowedFd::borrow_raw(PROGRAM_FD) };
    dup_onto(program, crate::zygote::ZYGOTE_PROGRAM_FD)?;
    let python = crate::embed::load(&cfg.libpython, &cfg.python)?;
    python.run(&format!(
        "TEMPLATE = True\n{}\nimport gc\ngc.collect()\ngc.freeze()\n",
        crate::zygote::BOOTSTRAP
    ))?;

    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    chld.thread_block().map_err(setup("block SIGCHLD"))?;
    let sigfd = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(setup("signalfd"))?;
    // SAFETY: CONTROL_FD was placed by the runtime and is ours for the process's life.
    let ctrl = unsafe { BorrowedFd::borrow_raw(CONTROL_FD) };
    sendmsg::<()>(
        CONTROL_FD,
        &[std::io::IoSlice::new(b"ready")],
        &[],
        MsgFlags::empty(),
        None,
    )
    .map_err(setup("say ready"))?;

    // One buffer for every request, wiped after each fork (see the module docs).
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        let mut fds = [
            PollFd::new(ctrl, PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(setup("poll")(e)),
        }
        while let Ok(Some(_)) = sigfd.read_signal() {}
        reap();
        if fds[0].revents().is_none_or(|r| r.is_empty()) {
            continue;
        }
        let (len, received) = match receive(&mut buf)? {
            Received::Request(len, fds) => (len, fds),
            Received::Nothing => continue,
            Received::End => return Ok(()), // the runtime closed the socket: the server stops
        };
        let reply = if received.len() != REQUEST_FDS || len == buf.len() {
            Reply::Failed {
                error: "malformed request".into(),
            }
        } else {
            match python.fork() {
                Ok(ForkResult::Child) => helper_child(&buf[..len], received, &chld),
                Ok(ForkResult::Parent { child }) => Reply::Forked {
                    pid: child.as_raw(),
                },
                Err(e) => Reply::Failed {
                    error: format!("fork: {e}"),
                },
            }
        };
        buf[..len].fill(0);
        let pidfd = match &reply {
            Reply::Forked { pid } => match pidfd_open(*pid) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    // Unreachable in practice (our own unreaped child); it ends with its
                    // lifeline, which the runtime closes on the failed reply.
                    let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
                    send_reply(
                        &Reply::Failed {
                            error: format!("pidfd: {e}"),
                        },
                        None,
                    )?;
                    continue;
                }
            },
            Reply::Failed { .. } => None,
        };
        send_reply(&reply, pidfd.as_ref())?;
    }
}

/// The environment every zygote has (`PATH`, `LANG`, `HOME` of the sandbox; no host variable):
/// the interpreter reads it into `os.environ` when it starts, so it is set before that.
fn zygote_environment() {
    // SAFETY: single-threaded (nothing started a thread yet), so nothing reads the environment
    // while it changes.
    unsafe {
        libc::clearenv();
        for var in crate::zygote::zygote_env() {
            if let Some((k, v)) = var.split_once('=') {
                std::env::set_var(k, v);
            }
        }
    }
}

fn reap() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if matches!(status, WaitStatus::StillAlive) {
            break;
        }
    }
}

/// What one read of the socket gave.
enum Received {
    /// A request: its length in the buffer, and its descriptors.
    Request(usize, Vec<OwnedFd>),
    /// Nothing after all (interrupted): no reply is owed.
    Nothing,
    /// The end of the stream.
    End,
}

fn receive(buf: &mut [u8]) -> Result<Received, JailError> {
    let mut space = nix::cmsg_space!([RawFd; REQUEST_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = match recvmsg::<()>(
        CONTROL_FD,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    ) {
        Ok(msg) => msg,
        Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => return Ok(Received::Nothing),
        Err(e) => return Err(setup("receive")(e)),
    };
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(setup("control message"))? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: descriptors the kernel just installed in this process for us.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let len = msg.bytes;
    if len == 0 && fds.is_empty() {
        return Ok(Received::End);
    }
    Ok(Received::Request(len, fds))
}

fn send_reply(reply: &Reply, pidfd: Option<&OwnedFd>) -> Result<(), JailError> {
    let body = serde_json::to_vec(reply).expect("replies serialize");
    let raw = pidfd.map(|fd| [fd.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage> = raw.iter().map(|r| ControlMessage::ScmRights(r)).collect();
    sendmsg::<()>(
        CONTROL_FD,
        &[std::io::IoSlice::new(&body)],
        &cmsgs,
        MsgFlags::empty(),
        None,
    )
    .map_err(setup("reply"))?;
    Ok(())
}

fn pidfd_open(pid: i32) -> Result<OwnedFd, std::io::Error> {
    // SAFETY: pidfd_open(2) has no memory arguments; a non-negative result is a new descriptor
    // we own. (Called through `syscall`: glibc 2.36 has a wrapper, older ones do not.)
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: see above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends SIGKILL to the process behind `pidfd` (a helper, from the runtime): unlike a pid, a
/// pidfd cannot name a recycled process.
pub fn kill(pidfd: BorrowedFd<'_>) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal(2) with no siginfo (NULL) and no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn dup_onto(fd: BorrowedFd<'_>, target: RawFd) -> Result<(), JailError> {
    // SAFETY: dup2 onto a number this single-threaded process does not otherwise use.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } != target {
        return Err(JailError::Setup(format!(
            "template: dup2 onto {target}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The forked helper: its descriptors where `cerver __jail` would have them, then the helper.
fn helper_child(request: &[u8], fds: Vec<OwnedFd>, chld: &SigSet) -> ! {
    let code = match place_helper_fds(fds, chld) {
        Ok(()) => match serde_json::from_slice::<JailConfig>(request) {
            Ok(cfg) => crate::helper::main(cfg),
            Err(e) => {
                eprintln!("invalid jail configuration: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!("{e}");
            1
        }
    };
    // SAFETY: leave without running the template's destructors or atexit handlers.
    unsafe { libc::_exit(code) }
}

fn place_helper_fds(fds: Vec<OwnedFd>, chld: &SigSet) -> Result<(), JailError> {
    chld.thread_unblock().map_err(setup("unblock SIGCHLD"))?;
    // Out of the way first: a received descriptor may have any number, 2..5 included.
    let high: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(64))
                .map_err(setup("dup"))
                // SAFETY: a descriptor fcntl just made for us.
                .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) })
        })
        .collect::<Result<_, _>>()?;
    drop(fds);
    let devnull = std::fs::File::open("/dev/null")
        .map_err(|e| JailError::Setup(format!("template: /dev/null: {e}")))?;
    dup_onto(devnull.as_fd(), 0)?;
    for (fd, target) in high.iter().zip([CONTROL_FD, LIFELINE_FD, 2]) {
        dup_onto(fd.as_fd(), target)?;
    }
    drop(high);
    drop(devnull);
    // SAFETY: closes every descriptor above PROGRAM_FD (the template's signalfd and anything
    // else it held); nothing here uses them.
    if unsafe { libc::close_range(PROGRAM_FD as u32 + 1, u32::MAX, 0) } != 0 {
        return Err(JailError::Setup("template: close_range failed".into()));
    }
    Ok(())
}
