//! Background processes of a sandbox: the per-sandbox table and its bounds.
//!
//! A process is known by its pid inside the sandbox (what `os.getpid()` prints there), which
//! is unique among the sandbox's live processes. The table keeps every running process and the
//! most recently ended ones; when the kernel reuses the pid of an ended entry, that entry goes.

use std::sync::{Arc, Mutex};

use cerver_runtime::{Process, RunEvent};
use tokio::sync::broadcast;

use crate::{Control, ControlError, Entry, MAX_CODE_BYTES, RunParams, validate_env};

/// Most background processes running at once in one sandbox (more: a `Limit` error).
pub const MAX_RUNNING_PROCESSES: usize = 16;
/// Most ended processes remembered per sandbox (the oldest ended are forgotten first).
pub const MAX_ENDED_PROCESSES: usize = 32;
/// Most output bytes that ended processes may hold together per sandbox (running ones hold at
/// most 2 × 1 MiB each); past it, the oldest ended are forgotten.
pub const MAX_ENDED_OUTPUT_BYTES: usize = 8 << 20;
/// How much of the code a process object shows.
pub const CODE_PREVIEW_CHARS: usize = 200;

/// A background process and what it was started with.
#[derive(Clone, Debug)]
pub struct BackgroundProcess {
    pub process: Arc<Process>,
    /// The first [`CODE_PREVIEW_CHARS`] characters of its code.
    pub code: String,
}

/// The background processes of one sandbox, oldest first.
#[derive(Default)]
pub struct ProcessTable {
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    list: Vec<BackgroundProcess>,
    /// Starts in progress: they count against the running limit.
    starting: usize,
}

impl Table {
    fn running(&self) -> usize {
        self.list.iter().filter(|p| p.process.is_running()).count()
    }

    /// Forgets the oldest ended entries beyond the count and byte bounds.
    fn prune(&mut self) {
        loop {
            let mut ended: Vec<(std::time::SystemTime, usize, usize)> = self
                .list
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    let snap = p.process.snapshot();
                    snap.ended_at.map(|t| (t, i, p.process.buffered_bytes()))
                })
                .collect();
            let bytes: usize = ended.iter().map(|e| e.2).sum();
            if ended.len() <= MAX_ENDED_PROCESSES && bytes <= MAX_ENDED_OUTPUT_BYTES {
                return;
            }
            ended.sort_by_key(|e| e.0);
            self.list.remove(ended[0].1);
        }
    }
}

/// A start slot of a sandbox's table, given back however the start ends.
struct Reservation(Arc<Entry>);

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.processes.inner.lock().unwrap().starting -= 1;
    }
}

impl ProcessTable {
    fn reserve(entry: &Arc<Entry>) -> Result<Reservation, ControlError> {
        let mut t = entry.processes.inner.lock().unwrap();
        if t.running() + t.starting >= MAX_RUNNING_PROCESSES {
            return Err(ControlError::Limit(format!(
                "this sandbox already runs {MAX_RUNNING_PROCESSES} background processes, the \
                 maximum; stop one first (DELETE /sandbox/{{id}}/processes/{{pid}})"
            )));
        }
        t.starting += 1;
        Ok(Reservation(entry.clone()))
    }

    fn insert(&self, p: BackgroundProcess) {
        let mut t = self.inner.lock().unwrap();
        let pid = p.process.pid();
        t.list.retain(|old| old.process.pid() != pid);
        t.list.push(p);
        t.prune();
    }

    /// Every remembered process, oldest first.
    pub fn list(&self) -> Vec<BackgroundProcess> {
        let mut t = self.inner.lock().unwrap();
        t.prune();
        t.list.clone()
    }

    pub fn get(&self, pid: i32) -> Option<BackgroundProcess> {
        let t = self.inner.lock().unwrap();
        t.list.iter().find(|p| p.process.pid() == pid).cloned()
    }
}

impl Control {
    /// The server is shutting down: streams that follow background processes and proxied
    /// exchanges (both may last forever) end, so that the graceful shutdown does not wait for
    /// them.
    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
    }

    /// Becomes true when the server starts shutting down.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Starts `params.code` as a background process (its `timeout` does not apply: the
    /// process lives until it ends, is killed, or the sandbox ends). Returns it with its live
    /// events from the start. It takes no run-concurrency slot; at most
    /// [`MAX_RUNNING_PROCESSES`] run at once.
    pub async fn start_process(
        &self,
        owner: &str,
        id: &str,
        params: RunParams,
    ) -> Result<(BackgroundProcess, broadcast::Receiver<RunEvent>), ControlError> {
        let entry = self.get(owner, id)?;
        if params.code.len() > MAX_CODE_BYTES {
            return Err(ControlError::BadRequest(format!(
                "code is larger than {MAX_CODE_BYTES} bytes"
            )));
        }
        validate_env(&params.envs)?;
        let reservation = ProcessTable::reserve(&entry)?;
        let code = params.code.chars().take(CODE_PREVIEW_CHARS).collect();
        let env = Self::run_env(&entry, &params.envs);
        let spec = cerver_runtime::run::code_spec(params.code, env);
        // In a task of its own: a started process is always registered (so that it can be
        // listed and killed), even if the request that started it goes away meanwhile.
        let start = tokio::spawn(async move {
            let entry = &reservation.0;
            let (process, live) = entry.sandbox.start_background(&spec).await?;
            let started = BackgroundProcess { process, code };
            entry.processes.insert(started.clone());
            tracing::debug!(sandbox.id = %entry.id, pid = started.process.pid(), "background process started");
            Ok((started, live))
        });
        start
            .await
            .map_err(|e| ControlError::Internal(format!("starting a process: {e}")))?
    }

    /// The sandbox's running and recently ended background processes, oldest first.
    pub fn processes(&self, owner: &str, id: &str) -> Result<Vec<BackgroundProcess>, ControlError> {
        Ok(self.get(owner, id)?.processes.list())
    }

    /// One background process of the sandbox.
    pub fn process(
        &self,
        owner: &str,
        id: &str,
        pid: i32,
    ) -> Result<BackgroundProcess, ControlError> {
        self.get(owner, id)?
            .processes
            .get(pid)
            .ok_or(ControlError::ProcessNotFound(pid))
    }

    /// Kills a background process and everything it started; succeeds for one that has
    /// already ended (it stays listed with its status).
    pub async fn kill_process(&self, owner: &str, id: &str, pid: i32) -> Result<(), ControlError> {
        let entry = self.get(owner, id)?;
        let p = entry
            .processes
            .get(pid)
            .ok_or(ControlError::ProcessNotFound(pid))?;
        p.process.kill(&entry.sandbox).await;
        tracing::debug!(sandbox.id = %entry.id, pid, "background process killed");
        Ok(())
    }
}
