//! The host side of the template interpreter (`cerver __template`, see
//! `cerver_jail::template`): started once per server, it forks every workers sandbox's helper,
//! so that their zygotes are copy-on-write forks of one warm interpreter.
//!
//! Used when the sandboxes' interpreter is the host's own (`rootfs` is `/`) and is also
//! installed as a shared library (Debian: `libpython3.X`); otherwise, or when the template has
//! died, helpers are exec'd as before (`Sandbox::build`), and their zygotes exec `python3`.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cerver_jail::protocol::{CONTROL_FD, JailConfig, PROGRAM_FD};
use cerver_jail::template::{Reply, TemplateConfig};
use command_fds::{CommandFdExt, FdMapping};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_seqpacket::UnixSeqpacket;
use tokio_seqpacket::ancillary::{AncillaryMessageWriter, OwnedAncillaryMessage};

use crate::config::RuntimeConfig;

/// A healthy template loads and warms in ~50 ms; a stuck one must not hold up the start.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A fork takes about a millisecond; past this the template is considered stuck.
const FORK_TIMEOUT: Duration = Duration::from_secs(10);
/// Most template stderr lines logged (it is trusted, but the log must stay bounded).
const MAX_LOG_LINES: usize = 200;

pub struct Template {
    /// One request and its reply at a time.
    socket: tokio::sync::Mutex<UnixSeqpacket>,
    alive: AtomicBool,
    _child: tokio::process::Child,
}

impl Template {
    /// Starts the template, or says (logged) why not; `None` means exec'd helpers.
    pub async fn start(cfg: &RuntimeConfig, program: &OwnedFd) -> Option<Template> {
        if !cfg.template_interpreter {
            tracing::info!("template interpreter off (settings)");
            return None;
        }
        match Self::try_start(cfg, program).await {
            Ok(template) => {
                tracing::info!("template interpreter ready");
                Some(template)
            }
            Err(why) => {
                tracing::warn!("template interpreter not used ({why}); zygotes exec python3");
                None
            }
        }
    }

    async fn try_start(cfg: &RuntimeConfig, program: &OwnedFd) -> Result<Template, String> {
        // Its modules are imported on the host, before any sandbox exists: they must be the
        // very files the sandboxes see.
        let root = std::fs::canonicalize(&cfg.rootfs).map_err(|e| format!("rootfs: {e}"))?;
        if root != std::path::Path::new("/") {
            return Err(format!("the rootfs {} is not the host's", root.display()));
        }
        let libpython = libpython(&cfg.python).await?;
        let (ours, theirs) = UnixSeqpacket::pair().map_err(|e| format!("socket: {e}"))?;
        let program = program.try_clone().map_err(|e| format!("program: {e}"))?;
        // Every workers sandbox's init is a (cloned) fork of this process: /proc/1/cmdline
        // there is its command line.
        let mut cmd = crate::sandbox::internal_command(&cfg.helper, "__template");
        cmd.kill_on_drop(true);
        cmd.fd_mappings(vec![
            FdMapping {
                parent_fd: OwnedFd::from(theirs),
                child_fd: CONTROL_FD,
            },
            FdMapping {
                parent_fd: program,
                child_fd: PROGRAM_FD,
            },
        ])
        .map_err(|_| "fd mapping collision".to_string())?;
        let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        drop(cmd);
        if let Some(mut stdin) = child.stdin.take() {
            let config = TemplateConfig {
                python: cfg.python.clone(),
                libpython,
            };
            let config = serde_json::to_vec(&config).expect("the configuration serializes");
            tokio::io::AsyncWriteExt::write_all(&mut stdin, &config)
                .await
                .map_err(|e| format!("write configuration: {e}"))?;
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                let mut logged = 0;
                while let Ok(Some(mut line)) = lines.next_line().await {
                    if logged < MAX_LOG_LINES {
                        line.truncate(1000);
                        tracing::warn!("template: {line}");
                        logged += 1;
                    }
                }
            });
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(START_TIMEOUT, ours.recv(&mut buf)).await {
            Ok(Ok(n)) if &buf[..n] == b"ready" => {}
            Ok(Ok(_)) => return Err("it exited while loading (logged above)".into()),
            Ok(Err(e)) => return Err(format!("socket: {e}")),
            Err(_) => return Err(format!("not ready in {START_TIMEOUT:?}")),
        }
        Ok(Template {
            socket: tokio::sync::Mutex::new(ours),
            alive: AtomicBool::new(true),
            _child: child,
        })
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Forks a helper for `jail` with its control socket, lifeline and log pipe on the
    /// descriptors `cerver __jail` would have; returns a pidfd of it. An error that is not the
    /// request's own marks the template dead (later sandboxes exec their helpers).
    pub async fn fork_helper(
        &self,
        jail: &JailConfig,
        fds: [OwnedFd; 3],
    ) -> Result<OwnedFd, ForkFailure> {
        let socket = self.socket.lock().await;
        if !self.is_alive() {
            return Err(ForkFailure::NotForked(
                "the template interpreter is gone".into(),
            ));
        }
        let result = tokio::time::timeout(FORK_TIMEOUT, exchange(&socket, jail, &fds)).await;
        drop(fds);
        let broken = match result {
            Ok(Ok(Ok(pidfd))) => return Ok(pidfd),
            Ok(Ok(Err(refused))) => return Err(ForkFailure::NotForked(refused)),
            Ok(Err(broken)) => broken,
            Err(_) => ForkFailure::MaybeForked("the template interpreter did not answer".into()),
        };
        self.alive.store(false, Ordering::SeqCst);
        let (ForkFailure::NotForked(why) | ForkFailure::MaybeForked(why)) = &broken;
        tracing::error!("template interpreter: {why}; helpers are exec'd until it is restarted");
        Err(broken)
    }
}

/// Why the template gave no helper.
#[derive(Debug)]
pub enum ForkFailure {
    /// Nothing was forked for this request: the sandbox may start its helper otherwise.
    NotForked(String),
    /// The template broke after it got the request: a helper may have been forked and be
    /// building this sandbox (its label, image and cgroup), so another helper must not.
    MaybeForked(String),
}

/// One request and its reply: `Ok(Err(..))` is the template refusing this request,
/// `Err(..)` a broken template.
async fn exchange(
    socket: &UnixSeqpacket,
    jail: &JailConfig,
    fds: &[OwnedFd; 3],
) -> Result<Result<OwnedFd, String>, ForkFailure> {
    let msg = serde_json::to_vec(jail).expect("JailConfig serializes");
    let mut space = [0u8; 128];
    let mut anc = AncillaryMessageWriter::new(&mut space);
    let refs: Vec<&OwnedFd> = fds.iter().collect();
    if anc.add_fds(&refs).is_err() {
        return Ok(Err("ancillary buffer too small".into()));
    }
    // Unsent, the request forked nothing; once sent, any failure may follow a fork.
    let maybe = |what: String| ForkFailure::MaybeForked(what);
    socket
        .send_vectored_with_ancillary(&[IoSlice::new(&msg)], &mut anc)
        .await
        .map_err(|e| ForkFailure::NotForked(format!("send: {e}")))?;
    let mut buf = [0u8; 4096];
    let mut space = [0u8; 128];
    let (n, anc) = socket
        .recv_vectored_with_ancillary(&mut [IoSliceMut::new(&mut buf)], &mut space)
        .await
        .map_err(|e| maybe(format!("receive: {e}")))?;
    if n == 0 {
        return Err(maybe("it exited".into()));
    }
    let mut pidfd = None;
    for message in anc.into_messages() {
        if let OwnedAncillaryMessage::FileDescriptors(mut received) = message {
            pidfd = pidfd.or_else(|| received.next());
        }
    }
    match serde_json::from_slice::<Reply>(&buf[..n]) {
        Ok(Reply::Forked { .. }) => pidfd
            .map(Ok)
            .ok_or_else(|| maybe("a reply without its pidfd".into())),
        Ok(Reply::Failed { error }) => Ok(Err(error)),
        Err(e) => Err(maybe(format!("unreadable reply: {e}"))),
    }
}

/// Host path of `python` as a shared library, asked of the interpreter itself.
async fn libpython(python: &str) -> Result<std::path::PathBuf, String> {
    const ASK: &str = "import sysconfig as s\n\
        print(s.get_config_var('LIBDIR'), s.get_config_var('INSTSONAME'), sep='/', end='')";
    let out = tokio::time::timeout(
        START_TIMEOUT,
        tokio::process::Command::new(python)
            .args(["-I", "-S", "-c", ASK])
            .env_clear()
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .map_err(|_| "the interpreter did not answer".to_string())?
    .map_err(|e| format!("run {python}: {e}"))?;
    let path = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).into_owned());
    let shared = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains(".so"));
    if !out.status.success() || !path.is_absolute() || !shared || !path.is_file() {
        return Err(format!(
            "no shared library of {python} (looked for {}; Debian: the libpython3 package)",
            path.display()
        ));
    }
    Ok(path)
}
