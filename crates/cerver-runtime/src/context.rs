//! Contexts: persistent Python interpreters in a sandbox (`cerver-jail/src/context.py`).
//!
//! A context is a background run of kind `context` (same fork of the zygote, same user, filters
//! and limits as any run) whose stdin is a SOCK_SEQPACKET socket. Each execution sends it the
//! code (a memfd) and fresh stdout, stderr, results and status pipes; the pipes are then read by
//! the same pump as a run's, so output, results, bounds and back-pressure are a run's.
//! Executions are serialized (one lock per context). A timeout first sends the interpreter
//! SIGINT (from a run of the same user: the server cannot signal into the sandbox's user
//! namespace), then, after [`INTERRUPT_GRACE`], kills the context's run; a killed or dead context
//! says so in the execution's `error` and can be restarted (by starting a new one).

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use cerver_jail::protocol::{RunSpec, RunStatus, ZygoteRequest};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{Mutex, mpsc};
use tokio_seqpacket::UnixSeqpacket;
use tokio_seqpacket::ancillary::AncillaryMessageWriter;

use crate::RuntimeError;
use crate::run::{
    EVENT_QUEUE, Pipes, Pump, RunExit, RunHandle, exit_from_status, parse_status, pipe_pair,
};
use crate::sandbox::{Sandbox, io};

/// How long an interrupted execution has to stop before its context is killed.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(2);
/// How long a context has to say it started.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The end of the message telling what to do with a context that is no more.
pub const RESTART_HINT: &str = "restart the context to use it again";

/// A persistent interpreter in a sandbox.
pub struct Context {
    sandbox: Weak<Sandbox>,
    run_id: u64,
    /// Its pid inside the sandbox.
    pid: i32,
    sock: UnixSeqpacket,
    /// The context run's status pipe: its leader's line when the interpreter ends.
    status: Mutex<(pipe::Receiver, Vec<u8>)>,
    busy: Arc<Mutex<()>>,
    dead: AtomicBool,
    started: Instant,
    oom_before: u64,
}

impl Sandbox {
    /// Starts a context with `env` in `cwd` (relative to the workspace; empty: the workspace).
    pub async fn start_context(
        self: &Arc<Self>,
        env: BTreeMap<String, String>,
        cwd: String,
    ) -> Result<Arc<Context>, RuntimeError> {
        let (ours, theirs) = UnixSeqpacket::pair().map_err(io("context socket"))?;
        let spec = RunSpec::Context { env, cwd };
        let run = self.launch_with(&spec, OwnedFd::from(theirs), true).await?;
        let mut status = run.status;
        let mut buf = Vec::new();
        let first = tokio::time::timeout(START_TIMEOUT, read_status_line(&mut status, &mut buf))
            .await
            .ok()
            .flatten();
        let pid = match first {
            Some(RunStatus { pid: Some(pid), .. }) => pid,
            other => {
                let _ = self.send(&ZygoteRequest::Kill { id: run.id }, &[]).await;
                return Err(match other {
                    Some(RunStatus { error: Some(e), .. }) => RuntimeError::CannotStart(e),
                    _ if !self.is_alive() => RuntimeError::Gone,
                    _ => RuntimeError::CannotStart("the context did not start".into()),
                });
            }
        };
        Ok(Arc::new(Context {
            sandbox: Arc::downgrade(self),
            run_id: run.id,
            pid,
            sock: ours,
            status: Mutex::new((status, buf)),
            busy: Arc::new(Mutex::new(())),
            dead: AtomicBool::new(false),
            started: run.started,
            oom_before: run.oom_before,
        }))
    }
}

/// Reads `status` until `buf` holds a line; returns that line parsed (and removes it).
async fn read_status_line(status: &mut pipe::Receiver, buf: &mut Vec<u8>) -> Option<RunStatus> {
    let mut chunk = [0u8; 512];
    while !buf.contains(&b'\n') {
        match status.read(&mut chunk).await {
            Ok(n) if n > 0 && buf.len() < 4096 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
    let end = buf.iter().position(|b| *b == b'\n')?;
    let line: Vec<u8> = buf.drain(..=end).collect();
    parse_status(&line)
}

fn code_memfd(code: &str) -> Result<OwnedFd, RuntimeError> {
    use std::io::{Seek, Write};
    let fd = nix::sys::memfd::memfd_create("cerver-code", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| io("memfd")(e.into()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(code.as_bytes()).map_err(io("write code"))?;
    file.rewind().map_err(io("rewind code"))?;
    Ok(OwnedFd::from(file))
}

impl Context {
    /// Its pid inside the sandbox.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub(crate) fn run_id(&self) -> u64 {
        self.run_id
    }

    /// False once it was killed or found dead (it stays so: restart = a new context).
    pub fn is_alive(&self) -> bool {
        !self.dead.load(Ordering::SeqCst) && self.sandbox.upgrade().is_some_and(|s| s.is_alive())
    }

    /// Runs `code` in the context after the executions before it, ending it after `timeout`
    /// (which starts counting once the execution's turn has come).
    pub async fn run(
        self: &Arc<Self>,
        code: &str,
        timeout: Duration,
    ) -> Result<RunHandle, RuntimeError> {
        let turn = self.busy.clone().lock_owned().await;
        let sandbox = self.sandbox.upgrade().ok_or(RuntimeError::Gone)?;
        if !self.is_alive() {
            return Err(RuntimeError::ContextDead);
        }
        let code_fd = code_memfd(code)?;
        let (stdout_r, stdout_w) = pipe_pair()?;
        let (stderr_r, stderr_w) = pipe_pair()?;
        let (results_r, results_w) = pipe_pair()?;
        let (status_r, status_w) = pipe_pair()?;
        let oom_before = sandbox.oom_kills();
        let started = Instant::now();
        let fds = [&code_fd, &stdout_w, &stderr_w, &results_w, &status_w];
        if self.send_exec(&fds).await.is_err() {
            self.dead.store(true, Ordering::SeqCst);
            return Err(RuntimeError::ContextDead);
        }
        drop((code_fd, stdout_w, stderr_w, results_w, status_w));
        let receiver =
            |fd: OwnedFd, what: &'static str| pipe::Receiver::from_owned_fd(fd).map_err(io(what));
        let pipes = Pipes {
            stdout: receiver(stdout_r, "stdout pipe")?,
            stderr: receiver(stderr_r, "stderr pipe")?,
            status: receiver(status_r, "status pipe")?,
            results: receiver(results_r, "results pipe")?,
        };
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let pump = Pump {
            kind: "context",
            sandbox,
            id: self.run_id,
            tx,
            deadline: tokio::time::Instant::now() + timeout,
            started,
            oom_before,
            context: Some(self.clone()),
        };
        tokio::spawn(async move {
            pump.run(pipes).await;
            drop(turn);
        });
        Ok(RunHandle::new(rx))
    }

    async fn send_exec(&self, fds: &[&OwnedFd]) -> std::io::Result<()> {
        let mut space = [0u8; 128];
        let mut anc = AncillaryMessageWriter::new(&mut space);
        anc.add_fds(fds)
            .map_err(|_| std::io::Error::other("ancillary buffer too small"))?;
        let msg = br#"{"op":"exec"}"#;
        self.sock
            .send_vectored_with_ancillary(&[IoSlice::new(msg)], &mut anc)
            .await?;
        Ok(())
    }

    /// KeyboardInterrupt in the running code: SIGINT from a short run of the sandbox user.
    pub(crate) async fn interrupt(&self) {
        let Some(sandbox) = self.sandbox.upgrade() else {
            return;
        };
        let code = format!("import os, signal\nos.kill({}, signal.SIGINT)", self.pid);
        let spec = RunSpec::Code {
            code,
            env: BTreeMap::new(),
        };
        if let Ok(mut run) = sandbox.launch(&spec, None, false).await {
            let mut buf = Vec::new();
            let wait = read_status_line(&mut run.status, &mut buf);
            let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
        }
    }

    /// Ends the interpreter (and everything it started).
    pub async fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        if let Some(sandbox) = self.sandbox.upgrade() {
            let _ = sandbox
                .send(&ZygoteRequest::Kill { id: self.run_id }, &[])
                .await;
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }

    /// How an execution ended: from its status line, or else from how the interpreter died.
    pub(crate) async fn exit_of(
        &self,
        pump: &Pump,
        timed_out: bool,
        interrupted: bool,
        status_buf: &[u8],
    ) -> RunExit {
        if timed_out {
            self.dead.store(true, Ordering::SeqCst);
            return pump.timed_out(Some(&format!(
                "; the code did not stop on KeyboardInterrupt, so the context's interpreter was killed: {RESTART_HINT}"
            )));
        }
        if let Some(RunStatus {
            exit_code: Some(code),
            ..
        }) = parse_status(status_buf)
        {
            let mut exit = RunExit {
                exit_code: code,
                duration: pump.started.elapsed(),
                ..Default::default()
            };
            if interrupted {
                exit = pump.timed_out(Some(
                    " (interrupted with KeyboardInterrupt; the context keeps its state)",
                ));
                exit.exit_code = code;
            }
            return exit;
        }
        // No status line: the interpreter died during the execution (its leader then says how),
        // or an interrupt came just after the code ended (it lives on).
        let line = {
            let mut status = self.status.lock().await;
            let (pipe, buf) = &mut *status;
            tokio::time::timeout(Duration::from_secs(2), read_status_line(pipe, buf)).await
        };
        let Ok(line) = line else {
            let mut exit = pump.timed_out(Some(" (interrupted; the context keeps its state)"));
            exit.exit_code = 130;
            return exit;
        };
        self.dead.store(true, Ordering::SeqCst);
        let sandbox = self.sandbox.upgrade();
        let mut exit = exit_from_status(sandbox.as_deref(), self.started, self.oom_before, line);
        let why = match (&exit.error, exit.signal) {
            (Some(e), _) => e.clone(),
            (None, _) => format!("it exited with code {}", exit.exit_code),
        };
        exit.error = Some(format!(
            "The context's interpreter died ({why}): {RESTART_HINT}"
        ));
        exit.duration = pump.started.elapsed();
        if exit.exit_code == 0 {
            exit.exit_code = -1;
        }
        exit
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // The interpreter ends when its socket closes (or with its sandbox).
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}
