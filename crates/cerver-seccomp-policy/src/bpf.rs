//! From a checked policy to seccomp-bpf programs, through seccompiler.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch, sock_filter};

use crate::policy::CheckedCond;
use crate::validate::{Checked, Rule};

/// `EPERM` and `ENOSYS` are the asm-generic values, identical on x86_64 and aarch64.
pub const EPERM: u32 = 1;
pub const ENOSYS: u32 = 38;

// Classic BPF opcodes (linux/bpf_common.h) and seccomp constants (linux/seccomp.h, linux/audit.h).
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JMP_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
const BPF_MAXINSNS: usize = 4096;

type RuleMap = BTreeMap<i64, Vec<SeccompRule>>;

fn to_rules(conds_list: &[Vec<CheckedCond>]) -> Result<Vec<SeccompRule>, String> {
    let rule = |conds: &Vec<CheckedCond>| {
        let c = conds
            .iter()
            .map(|c| c.to_seccompiler())
            .collect::<Result<Vec<_>, _>>()?;
        SeccompRule::new(c).map_err(|e| e.to_string())
    };
    conds_list.iter().map(rule).collect()
}

/// The allow-list as seccompiler rules; names absent on the target architecture are skipped.
/// An empty rule vector means "match on the syscall number alone" in seccompiler.
pub fn allow_rules(checked: &Checked, table: &HashMap<&str, u32>) -> Result<RuleMap, Vec<String>> {
    let mut map = RuleMap::new();
    let mut errors = Vec::new();
    for (name, rule) in &checked.allowed {
        let Some(&nr) = table.get(name) else {
            continue;
        };
        let rules = match rule {
            Rule::Unconditional => Ok(Vec::new()),
            Rule::Conditions(list) => to_rules(list),
        };
        match rules {
            Ok(r) => drop(map.insert(i64::from(nr), r)),
            Err(e) => errors.push(format!("syscalls: {name}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(map)
    } else {
        Err(errors)
    }
}

/// The numbers of `names` on the target (names absent there skipped).
pub fn numbers(names: &BTreeSet<&str>, table: &HashMap<&str, u32>) -> Vec<u32> {
    names.iter().filter_map(|n| table.get(n).copied()).collect()
}

/// seccompiler's filter for `map` (`matched` for the listed syscalls, `mismatch` otherwise).
pub fn build(
    what: &str,
    map: RuleMap,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, String> {
    SeccompFilter::new(map, mismatch, matched, arch)
        .and_then(BpfProgram::try_from)
        .map_err(|e| format!("{what} filter: {e}"))
}

fn audit_arch(arch: TargetArch) -> u32 {
    const AUDIT_ARCH_64BIT_LE: u32 = 0x8000_0000 | 0x4000_0000;
    match arch {
        TargetArch::x86_64 => 62 | AUDIT_ARCH_64BIT_LE,
        TargetArch::aarch64 => 183 | AUDIT_ARCH_64BIT_LE,
        TargetArch::riscv64 => 243 | AUDIT_ARCH_64BIT_LE,
    }
}

fn insn(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// A seccompiler filter has one match action (here Allow), so it cannot answer ENOSYS to some
/// syscalls and EPERM to the rest. This inserts, right after seccompiler's architecture check,
/// `if nr == X { return ERRNO(ENOSYS) }` for each `enosys` syscall, so that each main filter is
/// correct on its own whatever is stacked above or below it (see cerver-jail's src/seccomp.rs).
///
/// seccompiler's program starts with `ld [arch]; jeq AUDIT_ARCH, +1, +0; ret KILL_PROCESS`, and
/// no other instruction jumps backwards or across index 3, so inserting at index 3 keeps every
/// jump offset valid. The shape is checked: a different seccompiler layout is an error.
pub fn with_enosys_prologue(
    what: &str,
    program: BpfProgram,
    arch: TargetArch,
    nrs: &[u32],
) -> Result<BpfProgram, String> {
    let expected_head = [
        insn(BPF_LD_W_ABS, SECCOMP_DATA_ARCH, 0, 0),
        insn(BPF_JMP_JEQ_K, audit_arch(arch), 1, 0),
        insn(BPF_RET_K, SECCOMP_RET_KILL_PROCESS, 0, 0),
    ];
    if program.len() < 3 || program[..3] != expected_head {
        return Err(format!(
            "{what} filter: unexpected seccompiler output (architecture check not found); \
             the clone3 ENOSYS prologue cannot be inserted"
        ));
    }
    if nrs.is_empty() {
        return Ok(program);
    }
    let mut prologue = vec![insn(BPF_LD_W_ABS, SECCOMP_DATA_NR, 0, 0)];
    for &nr in nrs {
        prologue.push(insn(BPF_JMP_JEQ_K, nr, 0, 1));
        prologue.push(insn(BPF_RET_K, SECCOMP_RET_ERRNO | ENOSYS, 0, 0));
    }
    let mut patched = Vec::with_capacity(program.len() + prologue.len());
    patched.extend_from_slice(&program[..3]);
    patched.extend(prologue);
    patched.extend_from_slice(&program[3..]);
    if patched.len() > BPF_MAXINSNS {
        return Err(format!(
            "{what} filter: {} instructions, more than {BPF_MAXINSNS}",
            patched.len()
        ));
    }
    Ok(patched)
}

/// The kernel's encoding of a program: each `struct sock_filter` as u16 code, u8 jt, u8 jf,
/// u32 k, little-endian (the only byte order the supported targets use).
pub fn encode(program: &[sock_filter]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for insn in program {
        bytes.extend_from_slice(&insn.code.to_le_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow_read() -> BpfProgram {
        let map = RuleMap::from([(0, Vec::new())]);
        let eperm = SeccompAction::Errno(EPERM);
        build("t", map, eperm, SeccompAction::Allow, TargetArch::x86_64).unwrap()
    }

    #[test]
    fn prologue_goes_after_the_architecture_check() {
        let program = allow_read();
        let patched =
            with_enosys_prologue("t", program.clone(), TargetArch::x86_64, &[435]).unwrap();
        assert_eq!(patched.len(), program.len() + 3);
        assert_eq!(patched[..3], program[..3]);
        assert_eq!(patched[3], insn(BPF_LD_W_ABS, SECCOMP_DATA_NR, 0, 0));
        assert_eq!(patched[4], insn(BPF_JMP_JEQ_K, 435, 0, 1));
        assert_eq!(
            patched[5],
            insn(BPF_RET_K, SECCOMP_RET_ERRNO | ENOSYS, 0, 0)
        );
        assert_eq!(patched[6..], program[3..]);
        let same = with_enosys_prologue("t", program.clone(), TargetArch::x86_64, &[]).unwrap();
        assert_eq!(same, program);
    }

    #[test]
    fn an_unexpected_program_shape_is_refused() {
        let program = allow_read();
        let err = with_enosys_prologue("t", program, TargetArch::aarch64, &[435]).unwrap_err();
        assert!(err.contains("architecture check not found"), "{err}");
        let err = with_enosys_prologue("t", Vec::new(), TargetArch::x86_64, &[435]).unwrap_err();
        assert!(err.contains("architecture check not found"), "{err}");
    }

    #[test]
    fn encoding_is_little_endian_8_bytes_per_instruction() {
        let bytes = encode(&[insn(0x0015, 0x0102_0304, 7, 9)]);
        assert_eq!(bytes, [0x15, 0x00, 7, 9, 0x04, 0x03, 0x02, 0x01]);
    }
}
