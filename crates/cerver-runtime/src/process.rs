//! Background processes: runs that outlive the request that started them.
//!
//! A background run is an ordinary run (same leader/main pair, same kill) with three
//! differences: the leader reports main's pid first (the pid user code sees), no timeout
//! applies (the sandbox's lifetime does), and its output is pumped without back-pressure into
//! two bounded ring buffers, so a chatty process never blocks on a full pipe and never grows
//! the server's memory. Live subscribers (SSE clients) get the same chunks through a broadcast
//! channel; one that falls behind misses chunks rather than slowing the process down.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use cerver_jail::protocol::{RunSpec, RunStatus, ZygoteRequest};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{broadcast, watch};

use crate::RuntimeError;
use crate::run::{Launched, RunEvent, RunExit, exit_from_status, parse_status};
use crate::sandbox::Sandbox;

/// Output kept per stream of a background process by default (the most recent bytes; see
/// `RuntimeConfig::output_ring_bytes`).
pub const OUTPUT_RING_BYTES: usize = 1 << 20;
/// Chunks a live subscriber may fall behind before it misses some.
const LIVE_EVENTS: usize = 16;
const READ_CHUNK: usize = 64 * 1024;
/// Most bytes taken per stream when main ends, before its exit event: the largest pipe an
/// unprivileged writer can ask for (`/proc/sys/fs/pipe-max-size`), and all a ring keeps anyway.
const DRAIN_MAX_BYTES: usize = OUTPUT_RING_BYTES;
/// Longest wait for the leader to report the pid of a new background process.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait, after a kill, for the process's pipes to close.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Largest status line accepted from a leader.
const MAX_STATUS: usize = 4096;

/// Where a background process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessStatus {
    Running,
    /// Main exited on its own (any exit code).
    Exited,
    /// Main was ended by a signal: a kill through the API, or any other SIGKILL/signal.
    Killed,
}

impl ProcessStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessStatus::Running => "running",
            ProcessStatus::Exited => "exited",
            ProcessStatus::Killed => "killed",
        }
    }
}

/// The last `cap` bytes written to a stream.
#[derive(Debug)]
pub struct OutputRing {
    buf: VecDeque<u8>,
    cap: usize,
    dropped: bool,
}

impl OutputRing {
    pub fn new(cap: usize) -> Self {
        OutputRing {
            buf: VecDeque::new(),
            cap,
            dropped: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        let chunk = if chunk.len() > self.cap {
            self.dropped = true;
            &chunk[chunk.len() - self.cap..]
        } else {
            chunk
        };
        let over = (self.buf.len() + chunk.len()).saturating_sub(self.cap);
        if over > 0 {
            self.dropped = true;
            self.buf.drain(..over);
        }
        self.buf.extend(chunk);
    }

    /// Whether older output was dropped.
    pub fn truncated(&self) -> bool {
        self.dropped
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The kept bytes; after a drop, without the continuation bytes of a character whose
    /// start was dropped.
    pub fn contents(&self) -> Vec<u8> {
        let skip = if self.dropped {
            self.buf
                .iter()
                .take(3)
                .take_while(|b| (**b & 0xC0) == 0x80)
                .count()
        } else {
            0
        };
        self.buf.iter().skip(skip).copied().collect()
    }
}

/// A background process's recent output.
#[derive(Debug, Clone, Default)]
pub struct ProcessOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Older output of either stream was dropped.
    pub truncated: bool,
}

/// What a background process looks like now.
#[derive(Debug, Clone)]
pub struct ProcessSnapshot {
    pub pid: i32,
    pub status: ProcessStatus,
    pub started_at: SystemTime,
    pub ended_at: Option<SystemTime>,
    /// How main ended, once it has.
    pub exit: Option<RunExit>,
}

/// The buffered output and, when the process still runs, the live events that follow it
/// (taken atomically: nothing is missed or repeated between the two).
pub struct Follow {
    pub output: ProcessOutput,
    pub exit: Option<RunExit>,
    pub live: Option<broadcast::Receiver<RunEvent>>,
}

struct State {
    stdout: OutputRing,
    stderr: OutputRing,
    status: ProcessStatus,
    exit: Option<RunExit>,
    ended_at: Option<SystemTime>,
    kill_requested: bool,
}

/// One background process (shared by the registry and its pump).
pub struct Process {
    run_id: u64,
    pid: i32,
    started_at: SystemTime,
    state: Mutex<State>,
    live: broadcast::Sender<RunEvent>,
    /// True once every pipe of the process has closed (nothing of it writes any more).
    drained: watch::Receiver<bool>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process").field("pid", &self.pid).finish()
    }
}

impl Process {
    /// The main process's pid inside the sandbox.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether main still runs (what the API calls `running`).
    pub fn is_running(&self) -> bool {
        self.state.lock().unwrap().status == ProcessStatus::Running
    }

    /// Whether every pipe of the process has closed: nothing it started can write any more,
    /// so its buffers no longer change. Until then, even after main has ended, it is still
    /// reading output (a child may have inherited main's stdout).
    pub fn is_drained(&self) -> bool {
        *self.drained.borrow()
    }

    pub fn snapshot(&self) -> ProcessSnapshot {
        let st = self.state.lock().unwrap();
        ProcessSnapshot {
            pid: self.pid,
            status: st.status,
            started_at: self.started_at,
            ended_at: st.ended_at,
            exit: st.exit.clone(),
        }
    }

    /// Bytes held in the output buffers.
    pub fn buffered_bytes(&self) -> usize {
        let st = self.state.lock().unwrap();
        st.stdout.len() + st.stderr.len()
    }

    pub fn output(&self) -> ProcessOutput {
        let st = self.state.lock().unwrap();
        output_of(&st)
    }

    /// The buffered output, then (while main runs) the live events after it.
    pub fn follow(&self) -> Follow {
        let st = self.state.lock().unwrap();
        Follow {
            output: output_of(&st),
            exit: st.exit.clone(),
            live: (st.status == ProcessStatus::Running).then(|| self.live.subscribe()),
        }
    }

    /// Kills the process and everything it started (the leader SIGKILLs its descendants),
    /// then waits a little for its pipes to close. Harmless when it has already ended.
    pub async fn kill(&self, sandbox: &Sandbox) {
        self.state.lock().unwrap().kill_requested = true;
        let _ = sandbox
            .send(&ZygoteRequest::Kill { id: self.run_id }, &[])
            .await;
        let mut drained = self.drained.clone();
        let _ = tokio::time::timeout(KILL_WAIT, drained.wait_for(|d| *d)).await;
    }

    /// Records a chunk of output and passes it to live subscribers.
    fn push(&self, event: RunEvent) {
        let mut st = self.state.lock().unwrap();
        match &event {
            RunEvent::Stdout(b) => st.stdout.push(b),
            RunEvent::Stderr(b) => st.stderr.push(b),
            RunEvent::Result(_) | RunEvent::Error(_) | RunEvent::Exit(_) => {}
        }
        // No subscriber is not an error; a lagging one misses chunks.
        let _ = self.live.send(event);
    }

    /// Main has ended: `exited` when its leader reported an exit status (not a signal, not
    /// nothing at all).
    fn end(&self, mut exit: RunExit, exited: bool) {
        let mut st = self.state.lock().unwrap();
        st.status = if exited {
            ProcessStatus::Exited
        } else {
            ProcessStatus::Killed
        };
        if !exited && exit.signal.is_none() && st.kill_requested {
            // Killed through the API: the leader SIGKILLed it and reports nothing.
            exit.signal = Some(9);
            exit.exit_code = 128 + 9;
            exit.error = Some("Execution was killed".into());
        }
        st.exit = Some(exit.clone());
        st.ended_at = Some(SystemTime::now());
        let _ = self.live.send(RunEvent::Exit(exit));
    }
}

fn output_of(st: &State) -> ProcessOutput {
    ProcessOutput {
        stdout: st.stdout.contents(),
        stderr: st.stderr.contents(),
        truncated: st.stdout.truncated() || st.stderr.truncated(),
    }
}

/// Reads the status pipe until `buf` holds a complete line; false at end of file.
async fn read_line(status: &mut pipe::Receiver, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 512];
    while !buf.contains(&b'\n') {
        match status.read(&mut chunk).await {
            Ok(n) if n > 0 && buf.len() < MAX_STATUS => buf.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    }
    true
}

/// Removes the first line (and its newline) from `buf`.
fn take_line(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = buf.iter().position(|b| *b == b'\n')?;
    let mut line: Vec<u8> = buf.drain(..=end).collect();
    line.pop();
    Some(line)
}

/// The pid a background run's leader reported as its first status line, or why the run did
/// not start: a fork that failed with `EAGAIN` means the sandbox is at its process limit.
fn pid_from_start(first: Option<RunStatus>, sandbox_alive: bool) -> Result<i32, RuntimeError> {
    match first {
        Some(RunStatus { pid: Some(pid), .. }) => Ok(pid),
        Some(RunStatus {
            error: Some(e),
            errno: Some(errno),
            ..
        }) if errno == nix::errno::Errno::EAGAIN as i32 => Err(RuntimeError::ProcessLimit(e)),
        Some(RunStatus { error: Some(e), .. }) => Err(RuntimeError::CannotStart(e)),
        _ if !sandbox_alive => Err(RuntimeError::Gone),
        _ => Err(RuntimeError::CannotStart(
            "the process did not start".into(),
        )),
    }
}

impl Sandbox {
    /// Starts `spec` as a background process: it runs until it ends, is killed, or the
    /// sandbox ends. Returns it with a subscription to its live events from the very start.
    /// Each stream keeps its last `ring_bytes` bytes.
    pub async fn start_background(
        self: &Arc<Self>,
        spec: &RunSpec,
        ring_bytes: usize,
    ) -> Result<(Arc<Process>, broadcast::Receiver<RunEvent>), RuntimeError> {
        let mut run = self.launch(spec, None, true).await?;
        let mut status_buf = Vec::new();
        let started =
            tokio::time::timeout(START_TIMEOUT, read_line(&mut run.status, &mut status_buf)).await;
        let first = match started {
            Ok(true) => Ok(take_line(&mut status_buf).and_then(|l| parse_status(&l))),
            Ok(false) => Ok(None),
            Err(_) => Err(RuntimeError::CannotStart(
                "the process did not start in time".into(),
            )),
        };
        let pid = match first.and_then(|status| pid_from_start(status, self.is_alive())) {
            Ok(pid) => pid,
            Err(e) => {
                // Whatever state the run is in (never forked, forked but silent, or a leader
                // that wrote garbage), nothing of it may outlive this failed start.
                let _ = self.send(&ZygoteRequest::Kill { id: run.id }, &[]).await;
                return Err(e);
            }
        };
        let (live, receiver) = broadcast::channel(LIVE_EVENTS);
        let (drained_tx, drained) = watch::channel(false);
        let process = Arc::new(Process {
            run_id: run.id,
            pid,
            started_at: SystemTime::now() - run.started.elapsed(),
            state: Mutex::new(State {
                stdout: OutputRing::new(ring_bytes),
                stderr: OutputRing::new(ring_bytes),
                status: ProcessStatus::Running,
                exit: None,
                ended_at: None,
                kill_requested: false,
            }),
            live,
            drained,
        });
        let pump = BackgroundPump {
            process: process.clone(),
            sandbox: Arc::downgrade(self),
            started: run.started,
            oom_before: run.oom_before,
        };
        tokio::spawn(async move {
            pump.run(&mut run, status_buf).await;
            let _ = drained_tx.send(true);
        });
        Ok((process, receiver))
    }
}

struct BackgroundPump {
    process: Arc<Process>,
    /// Weak: a process must not keep its sandbox's host side alive.
    sandbox: Weak<Sandbox>,
    started: Instant,
    oom_before: u64,
}

impl BackgroundPump {
    /// Reads every pipe until all are closed: after main ends, whatever it left running may
    /// still write, and must never block on a full pipe either.
    async fn run(self, run: &mut Launched, mut status_buf: Vec<u8>) {
        let (mut out_open, mut err_open, mut status_open) = (true, true, true);
        let mut ended = false;
        let mut buf_out = vec![0u8; READ_CHUNK];
        let mut buf_err = vec![0u8; READ_CHUNK];
        let mut status_chunk = [0u8; 512];
        loop {
            if !ended {
                let line = if status_open {
                    take_line(&mut status_buf)
                } else {
                    Some(Vec::new())
                };
                if let Some(line) = line {
                    ended = true;
                    self.drain(run, out_open, err_open);
                    // The drain did not await: let other tasks run before going on.
                    tokio::task::yield_now().await;
                    let sandbox = self.sandbox.upgrade();
                    let status = parse_status(&line);
                    let exited = matches!(
                        status,
                        Some(RunStatus {
                            exit_code: Some(_),
                            ..
                        })
                    );
                    let exit =
                        exit_from_status(sandbox.as_deref(), self.started, self.oom_before, status);
                    self.process.end(exit, exited);
                }
            }
            if !(out_open || err_open || status_open) {
                break;
            }
            tokio::select! {
                r = run.stdout.read(&mut buf_out), if out_open => match r {
                    Ok(n) if n > 0 => self.process.push(RunEvent::Stdout(Bytes::copy_from_slice(&buf_out[..n]))),
                    _ => out_open = false,
                },
                r = run.stderr.read(&mut buf_err), if err_open => match r {
                    Ok(n) if n > 0 => self.process.push(RunEvent::Stderr(Bytes::copy_from_slice(&buf_err[..n]))),
                    _ => err_open = false,
                },
                r = run.status.read(&mut status_chunk), if status_open => match r {
                    Ok(n) if n > 0 && status_buf.len() < MAX_STATUS => {
                        status_buf.extend_from_slice(&status_chunk[..n]);
                    }
                    _ => status_open = false,
                },
            }
        }
    }

    /// Main has ended, so its output is already in the pipes: take what is there now, so that
    /// it comes before the exit event. Bounded: a descendant that keeps writing must not keep
    /// this task from yielding (see [`drain_pipe`]).
    fn drain(&self, run: &mut Launched, out_open: bool, err_open: bool) {
        if out_open {
            drain_pipe(&mut run.stdout, DRAIN_MAX_BYTES, |b| {
                self.process
                    .push(RunEvent::Stdout(Bytes::copy_from_slice(b)))
            });
        }
        if err_open {
            drain_pipe(&mut run.stderr, DRAIN_MAX_BYTES, |b| {
                self.process
                    .push(RunEvent::Stderr(Bytes::copy_from_slice(b)))
            });
        }
    }
}

/// Reads what `pipe` holds now, without waiting, passing each chunk to `chunk`; stops at an
/// empty pipe, end of file, or after `max` bytes, whichever comes first (a writer on the
/// other end could otherwise keep it busy forever). Returns the bytes read.
fn drain_pipe(pipe: &mut pipe::Receiver, max: usize, mut chunk: impl FnMut(&[u8])) -> usize {
    let mut buf = vec![0u8; READ_CHUNK.min(max.max(1))];
    let mut total = 0;
    while total < max {
        let want = buf.len().min(max - total);
        match pipe.try_read(&mut buf[..want]) {
            Ok(n @ 1..) => {
                chunk(&buf[..n]);
                total += n;
            }
            _ => break,
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::{OutputRing, RunStatus, RuntimeError, drain_pipe, pid_from_start};
    use std::io::Write;

    #[tokio::test]
    async fn a_drain_stops_even_if_the_writer_never_does() {
        let (r, w) = crate::run::pipe_pair().unwrap();
        let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(r).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut w = std::fs::File::from(w);
                let chunk = [b'x'; 65536];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if w.write_all(&chunk).is_err() {
                        break;
                    }
                }
            })
        };
        // Let the writer fill the pipe, then drain while it keeps writing (once the reactor
        // knows the pipe is readable, as the pump's reads have told it by then).
        std::thread::sleep(std::time::Duration::from_millis(50));
        rx.readable().await.unwrap();
        let max = 256 * 1024;
        let mut seen = 0;
        // A slow consumer: the writer refills the pipe between reads. An unbounded drain would
        // go on until the writer gives up (here after 4 × max, to end the test).
        let total = drain_pipe(&mut rx, max, |b| {
            seen += b.len();
            std::thread::sleep(std::time::Duration::from_millis(2));
            if seen > 4 * max {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
        assert_eq!(total, seen);
        assert!(total > 0 && total <= max, "read {total} bytes");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        drop(rx);
        writer.join().unwrap();
    }

    #[test]
    fn only_eagain_is_the_process_limit() {
        let status = |error: Option<&str>, errno| {
            Some(RunStatus {
                error: error.map(Into::into),
                errno,
                ..Default::default()
            })
        };
        let pid = Some(RunStatus {
            pid: Some(42),
            ..Default::default()
        });
        assert_eq!(pid_from_start(pid, true).unwrap(), 42);
        let eagain = nix::errno::Errno::EAGAIN as i32;
        assert!(matches!(
            pid_from_start(status(Some("[Errno 11] no"), Some(eagain)), true),
            Err(RuntimeError::ProcessLimit(_))
        ));
        assert!(matches!(
            pid_from_start(status(Some("[Errno 12] no memory"), Some(12)), true),
            Err(RuntimeError::CannotStart(_))
        ));
        assert!(matches!(
            pid_from_start(status(Some("could not start a run process"), None), true),
            Err(RuntimeError::CannotStart(_))
        ));
        // Nothing (or garbage) from the leader.
        assert!(matches!(
            pid_from_start(None, true),
            Err(RuntimeError::CannotStart(_))
        ));
        assert!(matches!(
            pid_from_start(None, false),
            Err(RuntimeError::Gone)
        ));
    }

    #[test]
    fn ring_keeps_the_most_recent_bytes() {
        let mut r = OutputRing::new(8);
        r.push(b"abc");
        r.push(b"def");
        assert_eq!(r.contents(), b"abcdef");
        assert!(!r.truncated());
        r.push(b"ghij");
        assert_eq!(r.contents(), b"cdefghij");
        assert!(r.truncated());
        r.push(b"0123456789xyz");
        assert_eq!(r.contents(), b"56789xyz");
        assert_eq!(r.len(), 8);
    }

    #[test]
    fn ring_drops_a_split_character() {
        let mut r = OutputRing::new(4);
        r.push("€a".as_bytes()); // 3 + 1 bytes
        r.push(b"b");
        // "€" lost its first byte: its remaining continuation bytes go too.
        assert_eq!(r.contents(), b"ab");
    }
}
