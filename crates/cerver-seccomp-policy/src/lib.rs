//! Compiles Cerver's seccomp policy (`crates/cerver-jail/policy/seccomp.json`, whose `comment`
//! documents the format) into seccomp-bpf programs with `seccompiler`. cerver-jail's build
//! script is the caller; this crate has no unsafe code and no I/O.
//!
//! - [`policy`]: the file's format and the checks of one argument condition;
//! - [`validate`]: the rules between entries (known names, reasons, refused, enosys);
//! - [`bpf`]: seccompiler filters, the ENOSYS prologue, the kernel encoding;
//! - [`tables`]: the syscall name → number tables of the supported architectures.

pub mod bpf;
pub mod policy;
pub mod tables;
pub mod validate;

pub use bpf::encode;
use seccompiler::{BpfProgram, SeccompAction, TargetArch};
pub use tables::Tables;

/// The architectures the policy can be compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// From Cargo's `CARGO_CFG_TARGET_ARCH`.
    pub fn from_target(arch: &str) -> Result<Arch, String> {
        match arch {
            "x86_64" => Ok(Arch::X86_64),
            "aarch64" => Ok(Arch::Aarch64),
            other => Err(format!(
                "the seccomp policy can only be compiled for x86_64 or aarch64, not {other:?}"
            )),
        }
    }

    fn seccompiler(self) -> TargetArch {
        match self {
            Arch::X86_64 => TargetArch::x86_64,
            Arch::Aarch64 => TargetArch::aarch64,
        }
    }
}

/// The programs of a policy.
#[derive(Debug)]
pub struct Compiled {
    /// The allow-list: allowed syscalls pass, the `enosys` ones get ENOSYS (a prologue), every
    /// other syscall EPERM, a foreign architecture kills the process.
    pub main: BpfProgram,
    /// The `enosys` syscalls get ENOSYS, everything else is allowed.
    pub clone3: BpfProgram,
}

/// Parses, checks and compiles a policy. Errors: every problem found, one line each.
pub fn compile(json: &str, arch: Arch) -> Result<Compiled, Vec<String>> {
    let policy: policy::Policy =
        serde_json::from_str(json).map_err(|e| vec![format!("invalid policy JSON: {e}")])?;
    let tables = Tables::for_arch(arch);
    let checked = validate::check(&policy, &tables.known)?;
    let target = arch.seccompiler();
    let allow = bpf::allow_rules(&checked, &tables.target)?;
    let eperm = SeccompAction::Errno(bpf::EPERM);
    let enosys = SeccompAction::Errno(bpf::ENOSYS);
    let main =
        bpf::build("main", allow, eperm, SeccompAction::Allow, target).map_err(|e| vec![e])?;
    let nrs = bpf::numbers(&checked.enosys, &tables.target);
    let map = nrs.iter().map(|&nr| (i64::from(nr), Vec::new())).collect();
    let clone3 =
        bpf::build("clone3", map, SeccompAction::Allow, enosys, target).map_err(|e| vec![e])?;
    let main = bpf::with_enosys_prologue("main", main, target, &nrs).map_err(|e| vec![e])?;
    Ok(Compiled { main, clone3 })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = include_str!("../../cerver-jail/policy/seccomp.json");

    #[test]
    fn the_project_policy_compiles_for_both_architectures() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let c = compile(POLICY, arch).unwrap_or_else(|e| panic!("{arch:?}: {e:?}"));
            assert!(c.main.len() > 100 && c.main.len() <= 4096);
            assert!(!c.clone3.is_empty());
        }
    }

    #[test]
    fn errors_are_listed() {
        let err = compile("{", Arch::X86_64).unwrap_err();
        assert!(err[0].starts_with("invalid policy JSON"), "{err:?}");
        let bad = r#"{"syscalls":[{"syscall":"nope","reason":"x"}],"refused":[]}"#;
        assert_eq!(
            compile(bad, Arch::X86_64).unwrap_err(),
            ["syscalls: unknown syscall \"nope\""]
        );
        assert!(Arch::from_target("riscv64").is_err());
        assert_eq!(Arch::from_target("aarch64"), Ok(Arch::Aarch64));
    }

    #[test]
    fn enosys_syscalls_get_enosys_in_both_programs() {
        let json = r#"{"syscalls":[{"syscall":"read","reason":"r"}],
                       "enosys":[{"syscall":"clone3","reason":"c"}],"refused":[]}"#;
        let c = compile(json, Arch::X86_64).unwrap();
        let enosys_ret = seccompiler::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x0005_0000 | 38,
        };
        assert_eq!(c.main[5], enosys_ret);
        assert!(c.main.iter().any(|i| i.code == 0x15 && i.k == 435));
        assert!(c.clone3.iter().any(|i| i.code == 0x15 && i.k == 435));
    }
}
