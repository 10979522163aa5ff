//! One live sandbox, seen from the host: the helper process that owns it, the control socket
//! to its zygote, and the lifeline whose closing tears it down.

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cerver_jail::cgroup::SandboxCgroup;
use cerver_jail::protocol::{
    CONTROL_FD, JailConfig, LIFELINE_FD, Limits, MAX_CONTROL_MESSAGE, Network, PROGRAM_FD,
    ZygoteEvent, ZygoteRequest,
};
use command_fds::{CommandFdExt, FdMapping};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use tokio_seqpacket::UnixSeqpacket;
use tokio_seqpacket::ancillary::AncillaryMessageWriter;

use crate::RuntimeError;
use crate::config::{Engine, RuntimeConfig};
use crate::disk::Disks;
use crate::template::ForkFailure;
use crate::uids::UidRange;

/// Most helper stderr lines logged per sandbox (the helper and zygote are trusted, but a
/// sandbox must never be able to flood the server's log).
const MAX_LOG_LINES: usize = 200;
const MAX_LOG_LINE: usize = 1000;
/// How long teardown waits for the helper before killing it outright.
const TEARDOWN_GRACE: Duration = Duration::from_secs(5);

pub struct Sandbox {
    label: String,
    engine: Engine,
    cgroup_parent: String,
    control: Arc<UnixSeqpacket>,
    /// Dropping the write end of the lifeline tells the helper to tear the sandbox down.
    lifeline: Mutex<Option<OwnedFd>>,
    /// Becomes true once the helper has exited.
    exited: watch::Receiver<bool>,
    kill_helper: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    next_run: AtomicU64,
    destroyed: AtomicBool,
    /// Teardown keeps the disk image (the server stops; the sandbox is rebuilt at its next start).
    keep_disk: AtomicBool,
    pub(crate) limits: Limits,
    oom_counter: Option<std::path::PathBuf>,
    /// The sandbox's address on its veth pair (containers engine).
    ip_addr: Option<std::net::Ipv4Addr>,
    /// The sandbox's disk image, deleted on teardown.
    disk: Option<Arc<Disks>>,
    /// The host end of its veth pair and the uid-range slot naming its egress-rate table
    /// (containers engine).
    host_if: Option<(u32, String)>,
    /// The egress bounds last written for it: claiming a pooled sandbox with the same bounds
    /// it was spawned with skips the `nft` call (~20 ms).
    egress_rates: std::sync::Mutex<Option<crate::rates::EgressRates>>,
    _uids: UidRange,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("label", &self.label)
            .field("engine", &self.engine)
            .finish()
    }
}

/// What an engine adds to the base sandbox.
#[derive(Default, Clone)]
pub(crate) struct Setup {
    pub egress: Option<crate::network::EgressPlan>,
    pub packages: Option<cerver_jail::protocol::Packages>,
    /// Where the sandbox's disk image is made (`None`: tmpfs workspace, for tests only).
    pub disks: Option<Arc<Disks>>,
    /// The zygote's program (`cerver_jail::zygote::program_memfd`), given to the helper on
    /// `PROGRAM_FD`; a sandbox cannot start without it.
    pub zygote_program: Option<Arc<OwnedFd>>,
    /// The template interpreter that forks helpers, when the server has one.
    pub template: Option<Arc<crate::template::Template>>,
}

/// A helper process: exec'd by us (our child), or forked by the template (a pidfd of it).
enum Helper {
    Exec(tokio::process::Child),
    Forked(tokio::io::unix::AsyncFd<OwnedFd>),
}

impl Helper {
    /// Waits for the helper to exit; kills it first when `kill` fires.
    async fn wait(self, kill: tokio::sync::oneshot::Receiver<()>) {
        match self {
            Helper::Exec(mut child) => {
                let status = tokio::select! {
                    s = child.wait() => s,
                    _ = kill => { let _ = child.start_kill(); child.wait().await }
                };
                tracing::debug!(?status, "sandbox helper exited");
            }
            // A pidfd polls readable once the process has exited (the template reaps it).
            Helper::Forked(pidfd) => {
                tokio::select! {
                    _ = pidfd.readable() => {}
                    _ = kill => {
                        if let Err(e) = cerver_jail::template::kill(pidfd.get_ref().as_fd()) {
                            tracing::warn!("kill helper: {e}");
                        }
                        let _ = pidfd.readable().await;
                    }
                }
                tracing::debug!("sandbox helper exited");
            }
        }
    }
}

/// What starting a helper gives: our end of its control socket, the write end of its
/// lifeline, the process and its stderr.
struct Started {
    control: UnixSeqpacket,
    lifeline: OwnedFd,
    helper: Helper,
    log: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
}

impl Sandbox {
    /// Makes the sandbox's disk image, spawns the helper and waits until the sandbox's zygote
    /// says it is ready. On failure nothing is left (the image is deleted).
    pub(crate) async fn spawn(
        cfg: &RuntimeConfig,
        cgroup_parent: &str,
        engine: Engine,
        setup: Setup,
        revive: Option<&str>,
    ) -> Result<Sandbox, RuntimeError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let label = match revive {
                Some(label) => label.to_string(),
                None => format!("sb-{:016x}", rand::random::<u64>()),
            };
            let image = match (&setup.disks, revive) {
                (Some(disks), Some(_)) => Some(disks.adopt(&label)?),
                (Some(disks), None) => Some(
                    disks
                        .create(&label, cfg.limits(engine).workspace_bytes)
                        .await?,
                ),
                (None, _) => None,
            };
            let disks = setup.disks.clone();
            let mut retry = false;
            let built = Self::build(
                cfg,
                cgroup_parent,
                engine,
                setup.clone(),
                label.clone(),
                image,
                &mut retry,
            )
            .await;
            if built.is_err()
                && let Some(disks) = disks
            {
                // A fresh image goes; a revived one holds the user's files: the caller decides.
                match revive {
                    None => disks.remove(&label).await,
                    Some(_) => disks.release(&label),
                }
            }
            // The template broke mid-request: its helper may hold that label, so once more
            // under another (a revived sandbox's label is fixed: the caller retries later).
            if retry && revive.is_none() && attempts < 2 {
                continue;
            }
            return built;
        }
    }

    async fn build(
        cfg: &RuntimeConfig,
        cgroup_parent: &str,
        engine: Engine,
        setup: Setup,
        label: String,
        image: Option<std::path::PathBuf>,
        retry: &mut bool,
    ) -> Result<Sandbox, RuntimeError> {
        let uids = crate::uids::claim(&cfg.uid_lock_dir, cfg.uid_base)
            .map_err(|e| RuntimeError::Create(format!("uid range: {e}")))?;
        let network = match &setup.egress {
            Some(plan) => Network::Egress(plan.for_slot(uids.slot)),
            None => Network::Loopback,
        };
        let (ip_addr, host_if) = match &network {
            Network::Egress(net) => (Some(net.address), Some((uids.slot, net.host_if.clone()))),
            Network::Loopback => (None, None),
        };
        let limits = cfg.limits(engine).clone();
        let jail = JailConfig {
            label: label.clone(),
            cgroup_parent: cgroup_parent.to_string(),
            uid_base: uids.base,
            rootfs: cfg.rootfs.clone(),
            python: cfg.python.clone(),
            hostname: "sandbox".into(),
            limits: limits.clone(),
            network,
            packages: setup.packages,
            disk: image,
        };
        let program = setup
            .zygote_program
            .as_ref()
            .ok_or_else(|| RuntimeError::Internal("no zygote program".into()))?;
        let mut started = None;
        if let Some(template) = setup.template.as_ref().filter(|t| t.is_alive()) {
            match fork_helper(template, &jail).await {
                Ok(s) => started = Some(s),
                Err(ForkFailure::NotForked(e)) => {
                    tracing::warn!(sandbox.label = %label, "template: {e}; exec'ing the helper")
                }
                // Not under this label: the template's helper may be building it (`spawn`
                // tries once more under a new label).
                Err(ForkFailure::MaybeForked(e)) => {
                    *retry = true;
                    return Err(RuntimeError::Create(format!("template interpreter: {e}")));
                }
            }
        }
        let started = match started {
            Some(s) => s,
            None => exec_helper(cfg, &jail, program).await?,
        };
        let Started {
            control,
            lifeline: life_write,
            helper,
            log: stderr,
        } = started;
        let log_label = label.clone();
        let last_error = Arc::new(Mutex::new(String::new()));
        let last_error_w = last_error.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut logged = 0;
            while let Ok(Some(mut line)) = lines.next_line().await {
                line.truncate(MAX_LOG_LINE);
                if logged < MAX_LOG_LINES {
                    tracing::warn!(sandbox.label = %log_label, "sandbox: {line}");
                    logged += 1;
                }
                *last_error_w.lock().unwrap() = line;
            }
        });

        let (exited_tx, exited) = watch::channel(false);
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            helper.wait(kill_rx).await;
            let _ = exited_tx.send(true);
        });

        let oom_counter = SandboxCgroup::load(cgroup_parent, &label).oom_counter();
        let sandbox = Sandbox {
            label,
            engine,
            cgroup_parent: cgroup_parent.to_string(),
            control: Arc::new(control),
            lifeline: Mutex::new(Some(life_write)),
            exited,
            kill_helper: Mutex::new(Some(kill_tx)),
            next_run: AtomicU64::new(1),
            destroyed: AtomicBool::new(false),
            keep_disk: AtomicBool::new(false),
            oom_counter,
            limits,
            ip_addr,
            disk: None, // set once ready: until then, a failure is cleaned up by `spawn`
            host_if,
            egress_rates: std::sync::Mutex::new(None),
            _uids: uids,
        };
        match tokio::time::timeout(cfg.create_timeout, sandbox.wait_ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                sandbox.destroy().await;
                let detail = last_error.lock().unwrap().clone();
                return Err(RuntimeError::Create(format!("{e}; {detail}")));
            }
            Err(_) => {
                sandbox.destroy().await;
                return Err(RuntimeError::Create(
                    "sandbox did not become ready in time".into(),
                ));
            }
        }
        // Bounded before any code runs in it (a plan may lower the bounds when it is claimed).
        if let Err(e) = sandbox.limit_egress(cfg.egress_rates).await {
            sandbox.destroy().await;
            return Err(e);
        }
        let mut sandbox = sandbox;
        sandbox.disk = setup.disks;
        // Keep draining zygote events (it says `ready` again after a restart).
        let control = sandbox.control.clone();
        let label = sandbox.label.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_CONTROL_MESSAGE];
            while let Ok(n) = control.recv(&mut buf).await {
                if n == 0 {
                    break;
                }
                tracing::info!(sandbox.label = %label, "zygote restarted");
            }
        });
        Ok(sandbox)
    }

    async fn wait_ready(&self) -> Result<(), RuntimeError> {
        let mut buf = vec![0u8; MAX_CONTROL_MESSAGE];
        let n = self
            .control
            .recv(&mut buf)
            .await
            .map_err(io("control socket"))?;
        if n == 0 {
            return Err(RuntimeError::Create("sandbox exited during set-up".into()));
        }
        match serde_json::from_slice::<ZygoteEvent>(&buf[..n]) {
            Ok(ZygoteEvent::Ready { .. }) => Ok(()),
            Err(e) => Err(RuntimeError::Create(format!(
                "unexpected zygote message: {e}"
            ))),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The sandbox's IPv4 address, reachable from the host (containers engine only).
    pub fn ip_addr(&self) -> Option<std::net::Ipv4Addr> {
        self.ip_addr
    }

    /// Bounds the sandbox's egress bandwidth and new-connection rate (replacing earlier
    /// bounds); nothing for a sandbox without a network.
    pub async fn limit_egress(&self, rates: crate::rates::EgressRates) -> Result<(), RuntimeError> {
        let Some((slot, host_if)) = &self.host_if else {
            return Ok(());
        };
        if *self.egress_rates.lock().unwrap() == Some(rates) {
            return Ok(());
        }
        crate::rates::apply(*slot, host_if, rates)
            .await
            .map_err(|e| RuntimeError::Create(format!("egress bounds: {e}")))?;
        *self.egress_rates.lock().unwrap() = Some(rates);
        Ok(())
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether the sandbox can still run code.
    pub fn is_alive(&self) -> bool {
        !*self.exited.borrow() && !self.destroyed.load(Ordering::SeqCst)
    }

    pub(crate) fn next_run_id(&self) -> u64 {
        self.next_run.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn oom_kills(&self) -> u64 {
        self.oom_counter
            .as_deref()
            .map_or(0, cerver_jail::cgroup::read_oom_kills)
    }

    /// Memory charged to the sandbox's cgroup now (0 when unreadable): `memory.current` (v2)
    /// or `memory.usage_in_bytes` (v1), next to the OOM counter.
    pub fn memory_bytes(&self) -> u64 {
        let Some(dir) = self.oom_counter.as_deref().and_then(|c| c.parent()) else {
            return 0;
        };
        ["memory.current", "memory.usage_in_bytes"]
            .iter()
            .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    pub(crate) async fn send(
        &self,
        req: &ZygoteRequest,
        fds: &[&OwnedFd],
    ) -> Result<(), RuntimeError> {
        if !self.is_alive() {
            return Err(RuntimeError::Gone);
        }
        let msg = serde_json::to_vec(req).expect("requests serialize");
        let mut space = [0u8; 256];
        let mut anc = AncillaryMessageWriter::new(&mut space);
        if !fds.is_empty() {
            anc.add_fds(fds)
                .map_err(|_| RuntimeError::Internal("ancillary buffer too small".into()))?;
        }
        self.control
            .send_vectored_with_ancillary(&[IoSlice::new(&msg)], &mut anc)
            .await
            .map_err(|_| RuntimeError::Gone)?;
        Ok(())
    }

    /// Tears the sandbox down: every process in it is killed, its mounts vanish with its mount
    /// namespace, its cgroup is removed. Idempotent.
    pub async fn destroy(&self) {
        if self.destroyed.swap(true, Ordering::SeqCst) {
            return;
        }
        let lifeline = self.lifeline.lock().unwrap().take();
        drop(lifeline);
        let _ = self.control.shutdown(std::net::Shutdown::Both);
        let mut exited = self.exited.clone();
        let graceful = tokio::time::timeout(TEARDOWN_GRACE, exited.wait_for(|e| *e))
            .await
            .is_ok();
        if !graceful {
            tracing::warn!(sandbox.label = %self.label, "helper did not exit; killing it");
            if let Some(kill) = self.kill_helper.lock().unwrap().take() {
                let _ = kill.send(());
            }
            let _ = exited.wait_for(|e| *e).await;
            let (parent, label) = (self.cgroup_parent.clone(), self.label.clone());
            let _ =
                tokio::task::spawn_blocking(move || SandboxCgroup::load(&parent, &label).destroy())
                    .await;
        }
        // While the uid-range slot is still held: no other sandbox can own this table yet.
        if let Some((slot, _)) = &self.host_if
            && let Err(e) = crate::rates::remove(*slot).await
        {
            tracing::warn!(sandbox.label = %self.label, "egress bounds not removed: {e}");
        }
        // The helper's mount namespace is gone with it (so are the mount and the loop device):
        // only the image file is left.
        if let Some(disks) = &self.disk {
            if self.keep_disk.load(Ordering::SeqCst) {
                disks.release(&self.label);
            } else {
                disks.remove(&self.label).await;
            }
        }
    }

    /// Tears the sandbox down like [`destroy`](Self::destroy) but keeps its disk image, for a
    /// rebuild by the next server on this data dir ([`crate::Runtime::revive`]).
    pub async fn stop(&self) {
        self.keep_disk.store(true, Ordering::SeqCst);
        self.destroy().await;
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Without an explicit destroy, closing the lifeline still makes the helper tear down.
        self.lifeline.lock().unwrap().take();
    }
}

/// `cerver <subcommand>` (`__jail`, `__template`) as the runtime starts it: a sandbox's init is a
/// clone of the helper (exec'd, or forked from the template), and its command line is readable
/// inside the sandbox, so it names no host path and the configuration goes through stdin; no
/// environment; stderr piped to the server's log.
pub(crate) fn internal_command(helper: &std::path::Path, sub: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(helper);
    cmd.arg0("cerver-sandbox")
        .arg(sub)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Starts the sandbox's helper as `cerver __jail`, configuration on its stdin.
async fn exec_helper(
    cfg: &RuntimeConfig,
    jail: &JailConfig,
    program: &OwnedFd,
) -> Result<Started, RuntimeError> {
    let (control, theirs) = UnixSeqpacket::pair().map_err(io("control socket"))?;
    let (life_read, life_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io("lifeline")(e.into()))?;
    let mut cmd = internal_command(&cfg.helper, "__jail");
    let program = program.try_clone().map_err(io("zygote program"))?;
    cmd.fd_mappings(vec![
        FdMapping {
            parent_fd: OwnedFd::from(theirs),
            child_fd: CONTROL_FD,
        },
        FdMapping {
            parent_fd: life_read,
            child_fd: LIFELINE_FD,
        },
        FdMapping {
            parent_fd: program,
            child_fd: PROGRAM_FD,
        },
    ])
    .map_err(|_| RuntimeError::Create("fd mapping collision".into()))?;
    let mut child = cmd.spawn().map_err(io("spawn helper"))?;
    drop(cmd); // closes our copies of the helper's ends
    if let Some(mut stdin) = child.stdin.take() {
        let config = serde_json::to_vec(jail).expect("JailConfig serializes");
        tokio::io::AsyncWriteExt::write_all(&mut stdin, &config)
            .await
            .map_err(io("write helper configuration"))?;
    }
    let log: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match child.stderr.take() {
        Some(stderr) => Box::new(stderr),
        None => Box::new(tokio::io::empty()),
    };
    Ok(Started {
        control,
        lifeline: life_write,
        helper: Helper::Exec(child),
        log,
    })
}

/// Has the template fork the sandbox's helper (see `crate::template`).
async fn fork_helper(
    template: &crate::template::Template,
    jail: &JailConfig,
) -> Result<Started, ForkFailure> {
    let not =
        |what: &'static str| move |e: nix::Error| ForkFailure::NotForked(format!("{what}: {e}"));
    let (control, theirs) = UnixSeqpacket::pair()
        .map_err(|e| ForkFailure::NotForked(format!("control socket: {e}")))?;
    let (life_read, life_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(not("lifeline"))?;
    let (log_read, log_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(not("log pipe"))?;
    let pidfd = template
        .fork_helper(jail, [OwnedFd::from(theirs), life_read, log_write])
        .await?;
    // From here the helper exists: a failure ends it (its lifeline closes as we return).
    let maybe = |what: &str, e: std::io::Error| ForkFailure::MaybeForked(format!("{what}: {e}"));
    let log = tokio::net::unix::pipe::Receiver::from_owned_fd(log_read)
        .map_err(|e| maybe("log pipe", e))?;
    // Deprecated because a registered `T` could hand out and close its descriptor; an OwnedFd
    // owned by the AsyncFd is neither replaced nor closed while registered (the safe case the
    // replacement, an `unsafe fn`, would need us to promise in a crate without `unsafe`).
    #[allow(deprecated)]
    let pidfd = tokio::io::unix::AsyncFd::with_interest(pidfd, tokio::io::Interest::READABLE)
        .map_err(|e| maybe("pidfd", e))?;
    Ok(Started {
        control,
        lifeline: life_write,
        helper: Helper::Forked(pidfd),
        log: Box::new(log),
    })
}

pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    move |e| RuntimeError::Internal(format!("{what}: {e}"))
}
