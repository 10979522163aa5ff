//! The sandbox's seccomp-bpf policy.
//!
//! The policy is data: `policy/seccomp.json` lists every allowed syscall with the reason it is
//! allowed (and argument conditions where needed), plus the syscalls that must never be allowed.
//! `build.rs` compiles it (crate `cerver-seccomp-policy`, with `seccompiler`) for the target
//! architecture into these programs:
//!
//! - [`ZYGOTE_FILTER`]: the allow-list, installed by the zygote;
//! - [`RUN_FILTER`]: the same program, installed again for every run. User code runs under it,
//!   stacked on top of the zygote's filters (a syscall must be allowed by every filter of the
//!   stack), so a filter the zygote could loosen is never the last word;
//! - [`CLONE3_FILTER`]: `clone3` → `ENOSYS`, everything else allowed.
//!
//! Everything else fails with `EPERM`. A syscall made through another ABI (i386 `int 0x80`)
//! fails seccompiler's architecture check and kills the process with `SIGSYS`; x32 syscall
//! numbers (`nr | 0x40000000`) match no allow-list entry and fail with `EPERM`.
//!
//! # `clone3`
//!
//! `clone3` takes its flags in a struct in user memory that seccomp cannot read, so namespace
//! creation could not be filtered: it must fail, and with `ENOSYS` rather than `EPERM`, since
//! glibc only falls back to `clone(2)` (whose flags the filters do check) on `ENOSYS`.
//! A seccompiler filter has a single match action, so:
//!
//! - `CLONE3_FILTER` is a separate filter, installed after `ZYGOTE_FILTER`. When several filters
//!   return actions of the same precedence (here `ERRNO`), the kernel keeps the result of the most
//!   recently installed filter (`seccomp_run_filters` walks from the newest filter and only
//!   replaces the result with a *strictly* more restrictive one), so its `ENOSYS` wins over the
//!   zygote filter's `EPERM`.
//! - By the same rule, a filter stacked later that answers `EPERM` would hide that `ENOSYS` again,
//!   and the run filter is stacked later (by the zygote, alone, through `prctl`). So build.rs also
//!   gives each main filter its own 3-instruction prologue answering `ENOSYS` to `clone3` (right
//!   after seccompiler's architecture check). Each of `ZYGOTE_FILTER` and `RUN_FILTER` is
//!   therefore correct on its own, in any stacking order; `CLONE3_FILTER` is kept as the
//!   standalone form of the same rule.

use seccompiler::{BpfProgram, sock_filter};

/// Raw BPF program bytes (8 bytes per instruction), compiled at build time from policy/seccomp.json.
pub const ZYGOTE_FILTER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_zygote.bpf"));
/// "run" filter: what user code gets (stacked on top of zygote's). Same encoding as [`ZYGOTE_FILTER`].
pub const RUN_FILTER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_run.bpf"));
/// `clone3` → `ENOSYS`, everything else allowed. Same encoding as [`ZYGOTE_FILTER`].
pub const CLONE3_FILTER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_clone3.bpf"));

/// The target's syscall table (name, number) the policy was compiled with, sorted by number.
pub const SYSCALLS: &[(&str, u32)] = include!(concat!(env!("OUT_DIR"), "/seccomp_syscalls.rs"));

/// Size of one encoded `struct sock_filter`.
const INSN_LEN: usize = 8;

/// Errors installing the filters.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("installing the {filter} seccomp filter: {source}")]
    Install {
        filter: &'static str,
        #[source]
        source: seccompiler::Error,
    },
}

/// Decode raw bytes into a seccompiler BpfProgram.
///
/// # Panics
/// If `bytes` is not a whole number of 8-byte instructions (never the case for the constants of
/// this module).
pub fn program(bytes: &[u8]) -> BpfProgram {
    let insns = bytes.chunks_exact(INSN_LEN);
    assert!(
        insns.remainder().is_empty(),
        "a BPF program is a sequence of 8-byte instructions, got {} bytes",
        bytes.len()
    );
    insns
        .map(|insn| sock_filter {
            code: u16::from_ne_bytes([insn[0], insn[1]]),
            jt: insn[2],
            jf: insn[3],
            k: u32::from_ne_bytes([insn[4], insn[5], insn[6], insn[7]]),
        })
        .collect()
}

fn install(filter: &'static str, bytes: &[u8]) -> Result<(), SeccompError> {
    seccompiler::apply_filter(&program(bytes))
        .map_err(|source| SeccompError::Install { filter, source })
}

/// Install ZYGOTE_FILTER then CLONE3_FILTER on the current thread (no_new_privs must already be
/// set; seccompiler sets it again, which is harmless). Filters are inherited across fork and
/// execve and can never be removed.
pub fn install_zygote_filters() -> Result<(), SeccompError> {
    install("zygote", ZYGOTE_FILTER)?;
    install("clone3", CLONE3_FILTER)
}

/// Install RUN_FILTER on the current thread, on top of the zygote's filters: what the zygote
/// does with `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, RUN_FILTER)` before running user code.
pub fn install_run_filter() -> Result<(), SeccompError> {
    install("run", RUN_FILTER)
}

/// The number of a syscall on the target architecture, if the policy's syscall table knows it.
pub fn syscall_number(name: &str) -> Option<u32> {
    SYSCALLS.iter().find(|(n, _)| *n == name).map(|&(_, nr)| nr)
}

/// The name of a syscall number of the target architecture (e.g. for reporting a `SIGSYS`).
pub fn syscall_name(nr: u32) -> Option<&'static str> {
    SYSCALLS
        .iter()
        .find(|&&(_, n)| n == nr)
        .map(|&(name, _)| name)
}
