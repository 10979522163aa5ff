//! The privileged, synchronous side of a Cerver sandbox. All `unsafe` code of the project lives
//! in this crate; it depends on neither tokio nor any HTTP or database crate.
//!
//! # Layout
//! - [`protocol`]: configuration and messages shared with the host-side runtime.
//! - [`helper`]: the `cerver __jail` process (host namespaces, root): cgroup, namespaces, uid
//!   maps, then supervises the sandbox and tears it down.
//! - [`init`]: pid 1 inside the sandbox: builds the filesystem ([`rootfs`]), starts and restarts
//!   the zygote, reaps orphans.
//! - [`zygote`]: the warm Python interpreter (`zygote.py`) that forks one child per run.
//! - [`template`]: the `cerver __template` process: one warm interpreter ([`embed`]) per server
//!   that forks every helper, so each zygote is a copy-on-write fork of it.
//! - [`disk`]: the workspace image on a loop device, mounted where only the sandbox sees it.
//! - [`harden`], [`seccomp`], [`net`], [`cgroup`]: the policy pieces.
//!
//! # Unsafe code
//! The workspace denies `unsafe_code`; the modules below that need it say so on their `mod`
//! line, with the reason, and every `unsafe` block carries a SAFETY note.

pub mod cgroup;
#[allow(unsafe_code)] // the loop-device ioctls (LOOP_CTL_GET_FREE, LOOP_CONFIGURE)
pub mod disk;
#[allow(unsafe_code)] // dlopen of libpython and calls into its C API
pub mod embed;
pub mod harden;
#[allow(unsafe_code)] // clone(2) of the init with a callback; borrowing the inherited lifeline fd
pub mod helper;
#[allow(unsafe_code)] // closing inherited descriptors by number
pub mod init;
pub mod layout;
#[allow(unsafe_code)] // the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls that bring loopback up
pub mod net;
pub mod protocol;
#[allow(unsafe_code)]
// mount_setattr(2) (recursive read-only binds), which neither nix nor libc wraps
pub mod rootfs;
pub mod seccomp;
#[allow(unsafe_code)] // fork(2) of helpers, descriptors by number, pidfd_open/pidfd_send_signal
pub mod template;
#[allow(unsafe_code)] // fork(2) of the zygote, `_exit` in the child, close_range(2)
pub mod zygote;

/// Errors of sandbox construction. Each becomes a line on the helper's stderr, which the
/// runtime reports when creation fails.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// a set-up step failed
    #[error("sandbox set-up failed: {0}")]
    Setup(String),
    /// the cgroup could not be created or removed
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
}
