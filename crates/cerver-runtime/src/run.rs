//! Executing something in a sandbox: code runs and file operations alike.
//!
//! The server hands the zygote five descriptors per run (spec, stdin, stdout, stderr, status)
//! and reads the pipes itself, so output streams with natural back-pressure: a slow consumer
//! fills a bounded channel, then the pipe, then the writer in the sandbox blocks.

use std::io::{Seek, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cerver_jail::protocol::{RunSpec, RunStatus, ZygoteRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use crate::RuntimeError;
use crate::context::Context;
use crate::results::{Display, ErrorInfo, ResultsReader, RichResult};
use crate::sandbox::{Sandbox, io};

/// Output chunks in flight between the pipe reader and the consumer.
pub(crate) const EVENT_QUEUE: usize = 16;
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    Stdout(Bytes),
    Stderr(Bytes),
    /// A rich result (display output), validated and within the run's bounds.
    Result(Box<RichResult>),
    /// The exception the code raised (at most one per run).
    Error(Box<ErrorInfo>),
    Exit(RunExit),
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunExit {
    /// `python -c` style: the exit status, or 128+signal when killed by a signal, or -1 when
    /// the run could not be started / was cut short by a timeout.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub out_of_memory: bool,
    /// Why the run did not complete normally (timeout, out of memory, sandbox gone, ...).
    pub error: Option<String>,
    pub duration: Duration,
}

/// A started run. Dropping it before the end kills the run (e.g. an SSE client went away).
pub struct RunHandle {
    events: mpsc::Receiver<RunEvent>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The spec of a code run.
pub fn code_spec(code: String, env: std::collections::BTreeMap<String, String>) -> RunSpec {
    RunSpec::Code { code, env }
}

impl RunHandle {
    pub(crate) fn new(events: mpsc::Receiver<RunEvent>) -> Self {
        RunHandle {
            events,
            permit: None,
        }
    }

    /// Holds `permit` (a concurrency slot) for as long as the run is being consumed.
    pub fn with_permit(mut self, permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        self.permit = Some(permit);
        self
    }

    /// The next output chunk or the final exit event; `None` after the exit event.
    pub async fn next(&mut self) -> Option<RunEvent> {
        self.events.recv().await
    }

    /// Collects a whole run, keeping at most `max_bytes` of each stream.
    pub async fn collect(mut self, max_bytes: usize) -> RunOutput {
        let mut out = RunOutput::default();
        while let Some(ev) = self.next().await {
            match ev {
                RunEvent::Stdout(b) => {
                    append(&mut out.stdout, &mut out.stdout_truncated, &b, max_bytes)
                }
                RunEvent::Stderr(b) => {
                    append(&mut out.stderr, &mut out.stderr_truncated, &b, max_bytes)
                }
                RunEvent::Result(r) => out.results.push(*r),
                RunEvent::Error(e) => out.error_info = Some(*e),
                RunEvent::Exit(exit) => out.exit = exit,
            }
        }
        out
    }
}

fn append(buf: &mut Vec<u8>, truncated: &mut bool, chunk: &[u8], max: usize) {
    let room = max.saturating_sub(buf.len());
    if chunk.len() > room {
        *truncated = true;
    }
    buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
}

#[derive(Debug, Default, Clone)]
pub struct RunOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub results: Vec<RichResult>,
    pub error_info: Option<ErrorInfo>,
    pub exit: RunExit,
}

pub(crate) fn pipe_pair() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io("pipe")(e.into()))
}

pub(crate) fn spec_memfd(spec: &RunSpec) -> Result<OwnedFd, RuntimeError> {
    let fd = nix::sys::memfd::memfd_create("cerver-run", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| io("memfd")(e.into()))?;
    let mut file = std::fs::File::from(fd);
    serde_json::to_writer(&mut file, spec).map_err(|e| io("write spec")(e.into()))?;
    file.flush().map_err(io("write spec"))?;
    // The leader reads through the same open file description, so rewind it.
    file.rewind().map_err(io("rewind spec"))?;
    Ok(OwnedFd::from(file))
}

/// A run just handed to the zygote: our ends of its pipes.
pub(crate) struct Launched {
    pub id: u64,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
    pub status: pipe::Receiver,
    /// Rich results (runs of code); dropping it makes the sandbox side stop writing them.
    pub results: pipe::Receiver,
    pub started: Instant,
    pub oom_before: u64,
}

impl Sandbox {
    /// Hands `spec` to the zygote with fresh pipes; `report_pid` asks the leader to write the
    /// main process's pid into the status pipe first.
    pub(crate) async fn launch(
        &self,
        spec: &RunSpec,
        stdin: Option<Bytes>,
        report_pid: bool,
    ) -> Result<Launched, RuntimeError> {
        let (stdin_r, stdin_w) = pipe_pair()?;
        let run = self.launch_with(spec, stdin_r, report_pid).await?;
        let stdin_w = pipe::Sender::from_owned_fd(stdin_w).map_err(io("stdin pipe"))?;
        if let Some(data) = stdin {
            tokio::spawn(async move {
                let mut w = stdin_w;
                let _ = w.write_all(&data).await;
            });
        } else {
            drop(stdin_w);
        }
        Ok(run)
    }

    /// [`Sandbox::launch`] with `stdin_r` as the run's standard input (a context's socket).
    pub(crate) async fn launch_with(
        &self,
        spec: &RunSpec,
        stdin_r: OwnedFd,
        report_pid: bool,
    ) -> Result<Launched, RuntimeError> {
        let id = self.next_run_id();
        let spec_fd = spec_memfd(spec)?;
        let (stdout_r, stdout_w) = pipe_pair()?;
        let (stderr_r, stderr_w) = pipe_pair()?;
        let (status_r, status_w) = pipe_pair()?;
        let (results_r, results_w) = pipe_pair()?;
        let oom_before = self.oom_kills();
        let started = Instant::now();
        self.send(
            &ZygoteRequest::Run { id, report_pid },
            &[
                &spec_fd, &stdin_r, &stdout_w, &stderr_w, &status_w, &results_w,
            ],
        )
        .await?;
        drop((spec_fd, stdin_r, stdout_w, stderr_w, status_w, results_w));

        let stdout = pipe::Receiver::from_owned_fd(stdout_r).map_err(io("stdout pipe"))?;
        let stderr = pipe::Receiver::from_owned_fd(stderr_r).map_err(io("stderr pipe"))?;
        let status = pipe::Receiver::from_owned_fd(status_r).map_err(io("status pipe"))?;
        let results = pipe::Receiver::from_owned_fd(results_r).map_err(io("results pipe"))?;
        Ok(Launched {
            id,
            stdout,
            stderr,
            status,
            results,
            started,
            oom_before,
        })
    }

    /// Starts `spec` with `stdin` as its standard input, ending it after `timeout`.
    pub async fn start(
        self: &Arc<Self>,
        spec: &RunSpec,
        stdin: Option<Bytes>,
        timeout: Duration,
    ) -> Result<RunHandle, RuntimeError> {
        let run = self.launch(spec, stdin, false).await?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let pump = Pump {
            kind: kind_of(spec),
            sandbox: self.clone(),
            id: run.id,
            tx,
            deadline: tokio::time::Instant::now() + timeout,
            started: run.started,
            oom_before: run.oom_before,
            context: None,
        };
        let pipes = Pipes {
            stdout: run.stdout,
            stderr: run.stderr,
            status: run.status,
            results: run.results,
        };
        tokio::spawn(pump.run(pipes));
        Ok(RunHandle {
            events: rx,
            permit: None,
        })
    }
}

/// The first complete line of a status pipe, parsed.
pub(crate) fn parse_status(buf: &[u8]) -> Option<RunStatus> {
    std::str::from_utf8(buf)
        .ok()
        .and_then(|s| s.lines().next())
        .and_then(|l| serde_json::from_str(l).ok())
}

/// How a run ended, from the leader's status line (`None`: it wrote none).
pub(crate) fn exit_from_status(
    sandbox: Option<&Sandbox>,
    started: Instant,
    oom_before: u64,
    status: Option<RunStatus>,
) -> RunExit {
    let mut exit = RunExit {
        exit_code: -1,
        duration: started.elapsed(),
        ..Default::default()
    };
    match status {
        Some(RunStatus {
            exit_code: Some(code),
            ..
        }) => exit.exit_code = code,
        Some(RunStatus {
            signal: Some(sig), ..
        }) => {
            exit.signal = Some(sig);
            exit.exit_code = 128 + sig;
            match sandbox {
                Some(sb) if sig == 9 && sb.oom_kills() > oom_before => {
                    exit.out_of_memory = true;
                    exit.error = Some(format!(
                        "Execution was killed: out of memory (the sandbox limit is {} MiB)",
                        sb.limits().memory_bytes >> 20
                    ));
                }
                _ => exit.error = Some(format!("Execution was killed by signal {sig}")),
            }
        }
        Some(RunStatus { error: Some(e), .. }) => {
            exit.error = Some(format!("Execution could not start: {e}"))
        }
        _ => {
            exit.error = Some(if sandbox.is_some_and(|sb| sb.is_alive()) {
                "Execution ended without a status (killed)".into()
            } else {
                "The sandbox was terminated".into()
            })
        }
    }
    exit
}

/// The `kind` label of a run's metrics.
fn kind_of(spec: &RunSpec) -> &'static str {
    match spec {
        RunSpec::Code { .. } => "code",
        RunSpec::Exec { .. } => "exec",
        _ => "file",
    }
}

pub(crate) struct Pump {
    pub(crate) kind: &'static str,
    pub(crate) sandbox: Arc<Sandbox>,
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<RunEvent>,
    pub(crate) deadline: tokio::time::Instant,
    pub(crate) started: Instant,
    pub(crate) oom_before: u64,
    /// An execution in a context: a timeout interrupts first, and the end comes from the
    /// context's status line (or its death).
    pub(crate) context: Option<Arc<Context>>,
}

/// Our ends of a run's pipes.
pub(crate) struct Pipes {
    pub(crate) stdout: pipe::Receiver,
    pub(crate) stderr: pipe::Receiver,
    pub(crate) status: pipe::Receiver,
    pub(crate) results: pipe::Receiver,
}

/// What the pump has read so far.
struct Reading {
    open: [bool; 3],
    status: Vec<u8>,
    results: ResultsReader,
    buf: [Vec<u8>; 3],
}

enum Stop {
    Finished,
    TimedOut,
    ConsumerGone,
}

impl Pump {
    pub(crate) async fn run(mut self, mut p: Pipes) {
        let mut r = Reading {
            open: [true; 3],
            status: Vec::new(),
            results: ResultsReader::default(),
            buf: [
                vec![0u8; READ_CHUNK],
                vec![0u8; READ_CHUNK],
                vec![0u8; READ_CHUNK],
            ],
        };
        let mut stop = self.read(&mut p, &mut r).await;
        let mut interrupted = false;
        if let (Stop::TimedOut, Some(ctx)) = (&stop, &self.context) {
            // KeyboardInterrupt first: the context keeps its state if the code stops.
            ctx.interrupt().await;
            interrupted = true;
            self.deadline = tokio::time::Instant::now() + crate::context::INTERRUPT_GRACE;
            stop = self.read(&mut p, &mut r).await;
        }
        match (&stop, &self.context) {
            (Stop::Finished, _) => {}
            // A context outlives a client that went away: its code is only interrupted.
            (Stop::ConsumerGone, Some(ctx)) => ctx.interrupt().await,
            _ => self.kill().await,
        }
        if let Stop::ConsumerGone = stop {
            let took = self.started.elapsed();
            crate::metrics::run_ended(self.sandbox.engine(), self.kind, None, took);
            return;
        }
        if let Stop::Finished = stop {
            // The main process has ended, so its output is already in the pipes; take what is
            // there without waiting for stray descendants that may keep them open.
            if r.open[0] {
                self.drain(&mut p.stdout, RunEvent::Stdout).await;
            }
            if r.open[1] {
                self.drain(&mut p.stderr, RunEvent::Stderr).await;
            }
            while r.open[2] {
                match p.results.try_read(&mut r.buf[2]) {
                    Ok(n) if n > 0 => {
                        let items = r.results.push(&r.buf[2][..n]);
                        if self.emit_results(items).await.is_err() {
                            break;
                        }
                    }
                    _ => r.open[2] = false,
                }
            }
        }
        let _ = self
            .emit_results(r.results.finish().into_iter().collect())
            .await;
        let exit = self.exit(&stop, &r.status, interrupted).await;
        crate::metrics::run_ended(self.sandbox.engine(), self.kind, Some(&exit), exit.duration);
        let _ = self.tx.send(RunEvent::Exit(exit)).await;
    }

    /// Passes output and results on until the status line, the deadline or the consumer's end.
    async fn read(&self, p: &mut Pipes, r: &mut Reading) -> Stop {
        let mut status_chunk = [0u8; 512];
        let [buf_out, buf_err, buf_res] = &mut r.buf;
        loop {
            tokio::select! {
                n = p.stdout.read(buf_out), if r.open[0] => match n {
                    Ok(n) if n > 0 => if let Err(s) = self.emit(RunEvent::Stdout(Bytes::copy_from_slice(&buf_out[..n]))).await { return s },
                    _ => r.open[0] = false,
                },
                n = p.stderr.read(buf_err), if r.open[1] => match n {
                    Ok(n) if n > 0 => if let Err(s) = self.emit(RunEvent::Stderr(Bytes::copy_from_slice(&buf_err[..n]))).await { return s },
                    _ => r.open[1] = false,
                },
                n = p.results.read(buf_res), if r.open[2] => match n {
                    Ok(n) if n > 0 => {
                        // The code wrote its output before this result (Python writes unbuffered),
                        // so what it printed is already in the output pipes: pass that on first,
                        // or a stream could show `result` before the lines printed ahead of it.
                        if r.open[0] { self.drain(&mut p.stdout, RunEvent::Stdout).await; }
                        if r.open[1] { self.drain(&mut p.stderr, RunEvent::Stderr).await; }
                        if let Err(s) = self.emit_results(r.results.push(&buf_res[..n])).await { return s }
                    }
                    _ => r.open[2] = false,
                },
                // The first complete line is the status (main writes it just before exiting;
                // the leader writes one too, for deaths main cannot report).
                n = p.status.read(&mut status_chunk) => match n {
                    Ok(n) if n > 0 && r.status.len() < 4096 => {
                        r.status.extend_from_slice(&status_chunk[..n]);
                        if r.status.contains(&b'\n') {
                            return Stop::Finished;
                        }
                    }
                    _ => return Stop::Finished,
                },
                _ = tokio::time::sleep_until(self.deadline) => return Stop::TimedOut,
                _ = self.tx.closed() => return Stop::ConsumerGone,
            }
        }
    }

    /// Passes on what is left in an output pipe, as `event`s.
    async fn drain(&self, pipe: &mut pipe::Receiver, event: fn(Bytes) -> RunEvent) {
        let mut buf = vec![0u8; READ_CHUNK];
        while let Ok(n) = pipe.try_read(&mut buf) {
            if n == 0
                || self
                    .emit(event(Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
            {
                break;
            }
        }
    }

    async fn emit_results(&self, items: Vec<Display>) -> Result<(), Stop> {
        for item in items {
            self.emit(match item {
                Display::Result(r) => RunEvent::Result(Box::new(r)),
                Display::Error(e) => RunEvent::Error(Box::new(e)),
            })
            .await?;
        }
        Ok(())
    }

    async fn emit(&self, ev: RunEvent) -> Result<(), Stop> {
        tokio::select! {
            r = self.tx.send(ev) => r.map_err(|_| Stop::ConsumerGone),
            _ = tokio::time::sleep_until(self.deadline) => Err(Stop::TimedOut),
        }
    }

    async fn kill(&self) {
        let id = self.context.as_ref().map_or(self.id, |ctx| ctx.run_id());
        let _ = self.sandbox.send(&ZygoteRequest::Kill { id }, &[]).await;
    }

    async fn exit(&self, stop: &Stop, status_buf: &[u8], interrupted: bool) -> RunExit {
        if let Some(ctx) = &self.context {
            return ctx
                .exit_of(
                    self,
                    matches!(stop, Stop::TimedOut),
                    interrupted,
                    status_buf,
                )
                .await;
        }
        if let Stop::TimedOut = stop {
            return self.timed_out(None);
        }
        exit_from_status(
            Some(&self.sandbox),
            self.started,
            self.oom_before,
            parse_status(status_buf),
        )
    }

    /// The exit of a run stopped at its timeout; `how` says what became of it.
    pub(crate) fn timed_out(&self, how: Option<&str>) -> RunExit {
        let duration = self.started.elapsed();
        let mut error = format!(
            "Execution timed out after {:.1} seconds",
            duration.as_secs_f64()
        );
        if let Some(how) = how {
            error.push_str(how);
        }
        RunExit {
            exit_code: -1,
            timed_out: true,
            error: Some(error),
            duration,
            ..Default::default()
        }
    }
}
