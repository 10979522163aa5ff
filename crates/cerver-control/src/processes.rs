//! Background processes of a sandbox: the per-sandbox table and its bounds.
//!
//! A process is known by its pid inside the sandbox (what `os.getpid()` prints there), which
//! is unique among the sandbox's live processes. The table keeps every running process and the
//! most recently ended ones; when the kernel reuses the pid of an ended entry, that entry goes.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use cerver_runtime::{Process, RunEvent};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};

use crate::config::ProcessLimits;
use crate::env::{run_env, validate_code};
use crate::runs::RunParams;
use crate::{Control, ControlError, Entry};

/// How much of the code a process object shows.
pub const CODE_PREVIEW_CHARS: usize = 200;

/// A background process and what it was started with.
#[derive(Clone, Debug)]
pub struct BackgroundProcess {
    pub process: Arc<Process>,
    /// The first [`CODE_PREVIEW_CHARS`] characters of its code.
    pub code: String,
}

/// The background processes of one sandbox, oldest first, within its [`ProcessLimits`].
pub struct ProcessTable {
    inner: Mutex<Table>,
    limits: ProcessLimits,
    /// One permit per follower (an SSE stream of a process), held for the stream's life.
    followers: Arc<Semaphore>,
}

#[derive(Default)]
struct Table {
    list: Vec<BackgroundProcess>,
    /// Entries replaced by a newer process with the same pid (the kernel reused it) while
    /// something they started still writes: no longer visible, still counted and buffering,
    /// until drained.
    shadowed: Vec<Arc<Process>>,
    /// Starts in progress: they count against the running limit.
    starting: usize,
}

impl Table {
    /// Processes that count against [`ProcessLimits::max_running`]: those not yet drained.
    fn running(&self) -> usize {
        self.list
            .iter()
            .map(|p| &p.process)
            .chain(&self.shadowed)
            .filter(|p| !p.is_drained())
            .count()
    }

    /// Forgets the oldest ended entries beyond the count and byte bounds. Only drained entries
    /// are forgotten (an undrained one still counts as running, and its buffers still change):
    /// nothing the table lets go of keeps buffering.
    fn prune(&mut self, limits: &ProcessLimits) {
        self.shadowed.retain(|p| !p.is_drained());
        loop {
            let mut ended = 0;
            let mut bytes = 0;
            let mut oldest: Option<(SystemTime, usize)> = None;
            for (i, p) in self.list.iter().enumerate() {
                let Some(ended_at) = p.process.snapshot().ended_at else {
                    continue;
                };
                ended += 1;
                if !p.process.is_drained() {
                    continue;
                }
                bytes += p.process.buffered_bytes();
                if oldest.is_none_or(|(t, _)| ended_at < t) {
                    oldest = Some((ended_at, i));
                }
            }
            if ended <= limits.max_ended && bytes <= limits.max_ended_output_bytes {
                return;
            }
            let Some((_, i)) = oldest else { return };
            self.list.remove(i);
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
    pub(crate) fn new(limits: ProcessLimits) -> Self {
        ProcessTable {
            inner: Default::default(),
            limits,
            followers: Arc::new(Semaphore::new(limits.max_followers)),
        }
    }

    fn reserve(entry: &Arc<Entry>) -> Result<Reservation, ControlError> {
        let max = entry.processes.limits.max_running;
        let mut t = entry.processes.inner.lock().unwrap();
        if t.running() + t.starting >= max {
            return Err(ControlError::Limit(format!(
                "this sandbox already runs {max} background processes, the \
                 maximum (one counts until everything it started has closed its output); stop \
                 one first (DELETE /sandbox/{{id}}/processes/{{pid}})"
            )));
        }
        t.starting += 1;
        Ok(Reservation(entry.clone()))
    }

    fn insert(&self, p: BackgroundProcess) {
        let mut t = self.inner.lock().unwrap();
        let pid = p.process.pid();
        let (reused, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut t.list)
            .into_iter()
            .partition(|old| old.process.pid() == pid);
        t.list = kept;
        t.shadowed.extend(reused.into_iter().map(|old| old.process));
        t.list.push(p);
        t.prune(&self.limits);
    }

    /// Every remembered process, oldest first.
    pub fn list(&self) -> Vec<BackgroundProcess> {
        let mut t = self.inner.lock().unwrap();
        t.prune(&self.limits);
        t.list.clone()
    }

    pub fn get(&self, pid: i32) -> Option<BackgroundProcess> {
        let t = self.inner.lock().unwrap();
        t.list.iter().find(|p| p.process.pid() == pid).cloned()
    }

    /// A follower's slot, held for as long as it follows.
    fn follower(&self) -> Result<OwnedSemaphorePermit, ControlError> {
        let max = self.limits.max_followers;
        self.followers.clone().try_acquire_owned().map_err(|_| {
            ControlError::Limit(format!(
                "this sandbox's processes already have {max} followers, the maximum; \
                 close one first"
            ))
        })
    }
}

impl Control {
    /// Starts `params.code` as a background process (its `timeout` does not apply: the
    /// process lives until it ends, is killed, or the sandbox ends). Returns it with its live
    /// events from the start. It takes no run-concurrency slot; at most
    /// [`ProcessLimits::max_running`] run at once.
    pub(crate) async fn start_process(
        &self,
        entry: &Arc<Entry>,
        params: RunParams,
    ) -> Result<(BackgroundProcess, broadcast::Receiver<RunEvent>), ControlError> {
        validate_code(&params.code, &params.envs)?;
        let reservation = ProcessTable::reserve(entry)?;
        let code = params.code.chars().take(CODE_PREVIEW_CHARS).collect();
        let env = run_env(entry, &params.envs);
        let spec = cerver_runtime::run::code_spec(params.code, env);
        let ring_bytes = self.runtime.config().output_ring_bytes;
        // In a task of its own: a started process is always registered (so that it can be
        // listed and killed), even if the request that started it goes away meanwhile.
        let start = tokio::spawn(async move {
            let entry = &reservation.0;
            let (process, live) = entry.sandbox.start_background(&spec, ring_bytes).await?;
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

    /// One background process of the sandbox, to follow: with a follower slot of the
    /// sandbox (at most [`ProcessLimits::max_followers`] at once), to hold for as long as it is followed.
    pub fn follow_process(
        &self,
        owner: &str,
        id: &str,
        pid: i32,
    ) -> Result<(BackgroundProcess, OwnedSemaphorePermit), ControlError> {
        let entry = self.get(owner, id)?;
        let process = entry
            .processes
            .get(pid)
            .ok_or(ControlError::ProcessNotFound(pid))?;
        Ok((process, entry.processes.follower()?))
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
