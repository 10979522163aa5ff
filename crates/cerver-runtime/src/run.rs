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
use crate::results::{Display, ErrorInfo, ResultsReader, RichResult};
use crate::sandbox::{Sandbox, io};

/// Output chunks in flight between the pipe reader and the consumer.
const EVENT_QUEUE: usize = 16;
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

fn spec_memfd(spec: &RunSpec) -> Result<OwnedFd, RuntimeError> {
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
        let id = self.next_run_id();
        let spec_fd = spec_memfd(spec)?;
        let (stdin_r, stdin_w) = pipe_pair()?;
        let (stdout_r, stdout_w) = pipe_pair()?;
        let (stderr_r, stderr_w) = pipe_pair()?;
        let (status_r, status_w) = pipe_pair()?;
        let (results_r, results_w) = pipe_pair()?;
        let oom_before = self.oom_kills();
        let started = Instant::now();
        self.send(
            &ZygoteRequest::Run { id, report_pid },
            &[&spec_fd, &stdin_r, &stdout_w, &stderr_w, &status_w, &results_w],
        )
        .await?;
        drop((spec_fd, stdin_r, stdout_w, stderr_w, status_w, results_w));

        let stdin_w = pipe::Sender::from_owned_fd(stdin_w).map_err(io("stdin pipe"))?;
        let stdout = pipe::Receiver::from_owned_fd(stdout_r).map_err(io("stdout pipe"))?;
        let stderr = pipe::Receiver::from_owned_fd(stderr_r).map_err(io("stderr pipe"))?;
        let status = pipe::Receiver::from_owned_fd(status_r).map_err(io("status pipe"))?;
        let results = pipe::Receiver::from_owned_fd(results_r).map_err(io("results pipe"))?;

        if let Some(data) = stdin {
            tokio::spawn(async move {
                let mut w = stdin_w;
                let _ = w.write_all(&data).await;
            });
        } else {
            drop(stdin_w);
        }
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
        };
        tokio::spawn(pump.run(run.stdout, run.stderr, run.status, run.results));
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

struct Pump {
    kind: &'static str,
    sandbox: Arc<Sandbox>,
    id: u64,
    tx: mpsc::Sender<RunEvent>,
    deadline: tokio::time::Instant,
    started: Instant,
    oom_before: u64,
}

enum Stop {
    Finished,
    TimedOut,
    ConsumerGone,
}

impl Pump {
    async fn run(
        self,
        mut stdout: pipe::Receiver,
        mut stderr: pipe::Receiver,
        mut status: pipe::Receiver,
        mut results: pipe::Receiver,
    ) {
        let mut status_buf = Vec::new();
        let (mut out_open, mut err_open, mut res_open) = (true, true, true);
        let mut buf_out = vec![0u8; READ_CHUNK];
        let mut buf_err = vec![0u8; READ_CHUNK];
        let mut buf_res = vec![0u8; READ_CHUNK];
        let mut reader = ResultsReader::default();
        let mut status_chunk = [0u8; 512];
        let stop = loop {
            tokio::select! {
                r = stdout.read(&mut buf_out), if out_open => match r {
                    Ok(n) if n > 0 => if let Err(s) = self.emit(RunEvent::Stdout(Bytes::copy_from_slice(&buf_out[..n]))).await { break s },
                    _ => out_open = false,
                },
                r = stderr.read(&mut buf_err), if err_open => match r {
                    Ok(n) if n > 0 => if let Err(s) = self.emit(RunEvent::Stderr(Bytes::copy_from_slice(&buf_err[..n]))).await { break s },
                    _ => err_open = false,
                },
                r = results.read(&mut buf_res), if res_open => match r {
                    Ok(n) if n > 0 => if let Err(s) = self.emit_results(reader.push(&buf_res[..n])).await { break s },
                    _ => res_open = false,
                },
                // The first complete line is the status (main writes it just before exiting;
                // the leader writes one too, for deaths main cannot report).
                r = status.read(&mut status_chunk) => match r {
                    Ok(n) if n > 0 && status_buf.len() < 4096 => {
                        status_buf.extend_from_slice(&status_chunk[..n]);
                        if status_buf.contains(&b'\n') {
                            break Stop::Finished;
                        }
                    }
                    _ => break Stop::Finished,
                },
                _ = tokio::time::sleep_until(self.deadline) => break Stop::TimedOut,
                _ = self.tx.closed() => break Stop::ConsumerGone,
            }
        };
        if !matches!(stop, Stop::Finished) {
            self.kill().await;
        }
        if let Stop::ConsumerGone = stop {
            let took = self.started.elapsed();
            crate::metrics::run_ended(self.sandbox.engine(), self.kind, None, took);
            return;
        }
        if let Stop::Finished = stop {
            // The main process has ended, so its output is already in the pipes; take what is
            // there without waiting for stray descendants that may keep them open.
            if out_open {
                self.drain(&mut stdout, RunEvent::Stdout).await;
            }
            if err_open {
                self.drain(&mut stderr, RunEvent::Stderr).await;
            }
            while res_open {
                match results.try_read(&mut buf_res) {
                    Ok(n) if n > 0 => {
                        if self.emit_results(reader.push(&buf_res[..n])).await.is_err() {
                            break;
                        }
                    }
                    _ => res_open = false,
                }
            }
        }
        let _ = self.emit_results(reader.finish().into_iter().collect()).await;
        let exit = self.exit(&stop, &status_buf);
        crate::metrics::run_ended(self.sandbox.engine(), self.kind, Some(&exit), exit.duration);
        let _ = self.tx.send(RunEvent::Exit(exit)).await;
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
        let _ = self
            .sandbox
            .send(&ZygoteRequest::Kill { id: self.id }, &[])
            .await;
    }

    fn exit(&self, stop: &Stop, status_buf: &[u8]) -> RunExit {
        if let Stop::TimedOut = stop {
            let duration = self.started.elapsed();
            return RunExit {
                exit_code: -1,
                timed_out: true,
                error: Some(format!(
                    "Execution timed out after {:.1} seconds",
                    duration.as_secs_f64()
                )),
                duration,
                ..Default::default()
            };
        }
        exit_from_status(
            Some(&self.sandbox),
            self.started,
            self.oom_before,
            parse_status(status_buf),
        )
    }
}
