//! Compiles `policy/seccomp.json` into seccomp-bpf programs with `seccompiler`.
//!
//! Outputs, in `$OUT_DIR` (each instruction is a `struct sock_filter` in the target's byte order:
//! u16 code, u8 jt, u8 jf, u32 k = 8 bytes):
//! - `seccomp_zygote.bpf`: every allow-list entry (including `zygote_only` ones);
//! - `seccomp_run.bpf`: the entries without `zygote_only`;
//!   (both also answer the `enosys` syscalls with ENOSYS, see `with_enosys_prologue`);
//! - `seccomp_clone3.bpf`: the `enosys` list → `Errno(ENOSYS)`, everything else allowed;
//! - `seccomp_syscalls.rs`: the target's syscall name → number table, as a Rust slice expression.
//!
//! The build fails when the JSON is malformed, a name is unknown, or a `refused` syscall appears in
//! the allow-list other than through its documented `except_zygote_only` conditions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Deserialize;

/// `EPERM` and `ENOSYS` are the asm-generic values, identical on x86_64 and aarch64.
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    /// Free-form documentation, ignored.
    #[serde(default)]
    #[allow(dead_code)]
    comment: serde_json::Value,
    syscalls: Vec<Allowed>,
    #[serde(default)]
    enosys: Vec<Enosys>,
    refused: Vec<Refused>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Allowed {
    syscall: String,
    reason: String,
    #[serde(default)]
    args: Vec<Cond>,
    #[serde(default)]
    zygote_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Enosys {
    syscall: String,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Refused {
    syscall: String,
    reason: String,
    /// The only way this syscall may appear in the allow-list: `zygote_only` with exactly these
    /// conditions.
    #[serde(default)]
    except_zygote_only: Option<Vec<Cond>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum ArgLen {
    Dword,
    Qword,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    MaskedEq,
}

/// A JSON integer, or a string holding a `0x` hex or decimal integer.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
enum Num {
    Int(u64),
    Str(String),
}

impl Num {
    fn value(&self) -> Result<u64, String> {
        match self {
            Num::Int(v) => Ok(*v),
            Num::Str(s) => {
                let t = s.trim().replace('_', "");
                let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => t.parse::<u64>(),
                };
                parsed.map_err(|e| format!("invalid number {s:?}: {e}"))
            }
        }
    }
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
struct Cond {
    index: u8,
    #[serde(rename = "type")]
    len: ArgLen,
    op: Op,
    val: Num,
    #[serde(default)]
    mask: Option<Num>,
    #[serde(default)]
    #[allow(dead_code)]
    comment: Option<String>,
}

/// A validated condition, comparable (comments ignored).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct CheckedCond {
    index: u8,
    len: ArgLen,
    op: Op,
    val: u64,
    mask: Option<u64>,
}

impl Cond {
    fn check(&self) -> Result<CheckedCond, String> {
        if self.index > 5 {
            return Err(format!("argument index {} > 5", self.index));
        }
        let val = self.val.value()?;
        let mask = self.mask.as_ref().map(Num::value).transpose()?;
        match (self.op, mask) {
            (Op::MaskedEq, None) => return Err("masked_eq needs a `mask`".into()),
            (Op::MaskedEq, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err("`mask` is only meaningful with op masked_eq".into()),
        }
        if self.len == ArgLen::Dword {
            // A dword comparison only sees the low 32 bits: a wider constant is a policy bug.
            if val > u64::from(u32::MAX) || mask.is_some_and(|m| m > u64::from(u32::MAX)) {
                return Err(format!(
                    "dword comparison with a value wider than 32 bits ({val:#x})"
                ));
            }
        }
        Ok(CheckedCond {
            index: self.index,
            len: self.len,
            op: self.op,
            val,
            mask,
        })
    }
}

impl std::fmt::Display for CheckedCond {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = match self.len {
            ArgLen::Dword => "dword",
            ArgLen::Qword => "qword",
        };
        write!(f, "arg{} ({len}) {:?} {:#x}", self.index, self.op, self.val)?;
        if let Some(mask) = self.mask {
            write!(f, " mask {mask:#x}")?;
        }
        Ok(())
    }
}

fn show(conds: &[CheckedCond]) -> String {
    if conds.is_empty() {
        return "none".into();
    }
    conds
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" && ")
}

impl CheckedCond {
    fn to_seccompiler(self) -> Result<SeccompCondition, String> {
        let len = match self.len {
            ArgLen::Dword => SeccompCmpArgLen::Dword,
            ArgLen::Qword => SeccompCmpArgLen::Qword,
        };
        let op = match self.op {
            Op::Eq => SeccompCmpOp::Eq,
            Op::Ne => SeccompCmpOp::Ne,
            Op::Lt => SeccompCmpOp::Lt,
            Op::Le => SeccompCmpOp::Le,
            Op::Gt => SeccompCmpOp::Gt,
            Op::Ge => SeccompCmpOp::Ge,
            Op::MaskedEq => SeccompCmpOp::MaskedEq(self.mask.unwrap_or(u64::MAX)),
        };
        SeccompCondition::new(self.index, len, op, self.val).map_err(|e| e.to_string())
    }
}

fn parse_table(table: &str) -> HashMap<&str, u32> {
    let words: Vec<&str> = table.split_whitespace().collect();
    let pairs = words.chunks_exact(2);
    assert!(pairs.remainder().is_empty(), "malformed syscall table");
    pairs
        .map(|pair| {
            (
                pair[0],
                pair[1].parse().expect("malformed syscall table number"),
            )
        })
        .collect()
}

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let policy_path = manifest_dir.join("policy").join("seccomp.json");
    println!("cargo:rerun-if-changed=policy/seccomp.json");
    println!("cargo:rerun-if-changed=build.rs");

    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let (arch, table) = match target_arch.as_str() {
        "x86_64" => (TargetArch::x86_64, X86_64_TABLE),
        "aarch64" => (TargetArch::aarch64, AARCH64_TABLE),
        other => panic!(
            "cerver-jail: the seccomp policy can only be compiled for x86_64 or aarch64, not {other:?}"
        ),
    };
    let endian = std::env::var("CARGO_CFG_TARGET_ENDIAN").unwrap_or_default();
    assert!(
        endian == "little",
        "cerver-jail: seccomp policy: unexpected target endianness {endian:?}"
    );

    let target_table = {
        let mut t = parse_table(table);
        t.extend(parse_table(COMMON_NEW_TABLE));
        t
    };
    // Every name must exist on at least one supported architecture (typo detection); names missing
    // only on the target (e.g. `open` on aarch64) are skipped.
    let mut known: BTreeSet<&str> = BTreeSet::new();
    for t in [X86_64_TABLE, AARCH64_TABLE, COMMON_NEW_TABLE] {
        known.extend(parse_table(t).into_keys());
    }

    let text = std::fs::read_to_string(&policy_path)
        .unwrap_or_else(|e| panic!("cerver-jail: cannot read {}: {e}", policy_path.display()));
    let policy: Policy = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "cerver-jail: invalid seccomp policy {}: {e}",
            policy_path.display()
        )
    });

    let compiled = match compile(&policy, arch, &target_table, &known) {
        Ok(c) => c,
        Err(errors) => panic!(
            "cerver-jail: invalid seccomp policy {}:\n  - {}",
            policy_path.display(),
            errors.join("\n  - ")
        ),
    };

    write_program(&out_dir.join("seccomp_zygote.bpf"), &compiled.zygote);
    write_program(&out_dir.join("seccomp_run.bpf"), &compiled.run);
    write_program(&out_dir.join("seccomp_clone3.bpf"), &compiled.clone3);

    let mut entries: Vec<(&str, u32)> = target_table.iter().map(|(k, v)| (*k, *v)).collect();
    entries.sort_by_key(|&(name, nr)| (nr, name));
    let mut rs = String::from("&[\n");
    for (name, nr) in entries {
        writeln!(rs, "    ({name:?}, {nr}),").unwrap();
    }
    rs.push_str("]\n");
    write_file(&out_dir.join("seccomp_syscalls.rs"), rs.as_bytes());
}

struct Compiled {
    zygote: BpfProgram,
    run: BpfProgram,
    clone3: BpfProgram,
}

fn compile(
    policy: &Policy,
    arch: TargetArch,
    target_table: &HashMap<&str, u32>,
    known: &BTreeSet<&str>,
) -> Result<Compiled, Vec<String>> {
    let mut errors = Vec::new();

    // --- refused list.
    let mut refused: BTreeMap<&str, Option<Vec<CheckedCond>>> = BTreeMap::new();
    for r in &policy.refused {
        let name = r.syscall.as_str();
        if !known.contains(name) {
            errors.push(format!("refused: unknown syscall {name:?}"));
        }
        if r.reason.trim().is_empty() {
            errors.push(format!("refused: {name}: empty reason"));
        }
        let exception = match &r.except_zygote_only {
            None => None,
            Some(conds) if conds.is_empty() => {
                errors.push(format!(
                    "refused: {name}: except_zygote_only must list conditions"
                ));
                None
            }
            Some(conds) => match conds.iter().map(Cond::check).collect::<Result<Vec<_>, _>>() {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(format!("refused: {name}: except_zygote_only: {e}"));
                    None
                }
            },
        };
        if refused.insert(name, exception).is_some() {
            errors.push(format!("refused: {name} is listed twice"));
        }
    }

    // --- allow-list: name → (zygote rules, run rules); `None` in the rules list means "unconditional".
    struct Rules {
        unconditional_zygote: bool,
        unconditional_run: bool,
        zygote: Vec<Vec<CheckedCond>>,
        run: Vec<Vec<CheckedCond>>,
    }
    let mut allowed: BTreeMap<&str, Rules> = BTreeMap::new();
    for a in &policy.syscalls {
        let name = a.syscall.as_str();
        if !known.contains(name) {
            errors.push(format!("syscalls: unknown syscall {name:?}"));
            continue;
        }
        if a.reason.trim().is_empty() {
            errors.push(format!("syscalls: {name}: empty reason"));
        }
        let conds = match a
            .args
            .iter()
            .map(Cond::check)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("syscalls: {name}: {e}"));
                continue;
            }
        };
        if let Some(exception) = refused.get(name) {
            match exception {
                None => errors.push(format!(
                    "syscalls: {name} is in the `refused` list and must not be allowed"
                )),
                Some(exc) if !a.zygote_only || conds != *exc => errors.push(format!(
                    "syscalls: {name} is refused except `zygote_only` with exactly the conditions \
                     [{}]; this entry has zygote_only={} and conditions [{}]",
                    show(exc),
                    a.zygote_only,
                    show(&conds)
                )),
                Some(_) => {}
            }
        }
        let rules = allowed.entry(name).or_insert(Rules {
            unconditional_zygote: false,
            unconditional_run: false,
            zygote: Vec::new(),
            run: Vec::new(),
        });
        if conds.is_empty() {
            if rules.unconditional_zygote {
                errors.push(format!("syscalls: {name} is allowed unconditionally twice"));
            }
            rules.unconditional_zygote = true;
            rules.unconditional_run |= !a.zygote_only;
        } else {
            if !a.zygote_only {
                rules.run.push(conds.clone());
            }
            rules.zygote.push(conds);
        }
    }
    for (name, rules) in &allowed {
        // Mixing an unconditional entry with conditional ones would silently void the conditions.
        if rules.unconditional_zygote && !rules.zygote.is_empty() {
            errors.push(format!(
                "syscalls: {name} has both an unconditional entry and entries with conditions"
            ));
        }
    }

    // --- enosys list.
    let mut enosys_names = BTreeSet::new();
    for e in &policy.enosys {
        let name = e.syscall.as_str();
        if !known.contains(name) {
            errors.push(format!("enosys: unknown syscall {name:?}"));
        }
        if e.reason.trim().is_empty() {
            errors.push(format!("enosys: {name}: empty reason"));
        }
        if allowed.contains_key(name) {
            // The main filters must refuse it on their own, so that forgetting the clone3 filter fails
            // closed (EPERM) instead of open.
            errors.push(format!("enosys: {name} must not also be in the allow-list"));
        }
        if refused.contains_key(name) {
            errors.push(format!("enosys: {name} is also in `refused`; list it once"));
        }
        if !enosys_names.insert(name) {
            errors.push(format!("enosys: {name} is listed twice"));
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }

    // --- build the seccompiler filters (names absent on the target architecture are skipped).
    let to_rules = |conds_list: &[Vec<CheckedCond>]| -> Result<Vec<SeccompRule>, String> {
        conds_list
            .iter()
            .map(|conds| {
                let c = conds
                    .iter()
                    .map(|c| c.to_seccompiler())
                    .collect::<Result<Vec<_>, _>>()?;
                SeccompRule::new(c).map_err(|e| e.to_string())
            })
            .collect()
    };
    let mut zygote_map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut run_map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (name, rules) in &allowed {
        let Some(&nr) = target_table.get(name) else {
            continue;
        };
        let nr = i64::from(nr);
        let built = to_rules(&rules.zygote).and_then(|z| Ok((z, to_rules(&rules.run)?)));
        let (zygote_rules, run_rules) = match built {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("syscalls: {name}: {e}"));
                continue;
            }
        };
        if rules.unconditional_zygote || !zygote_rules.is_empty() {
            // An empty rule vector means "match on the syscall number alone" in seccompiler.
            zygote_map.insert(
                nr,
                if rules.unconditional_zygote {
                    Vec::new()
                } else {
                    zygote_rules
                },
            );
        }
        if rules.unconditional_run || !run_rules.is_empty() {
            run_map.insert(
                nr,
                if rules.unconditional_run {
                    Vec::new()
                } else {
                    run_rules
                },
            );
        }
    }
    let clone3_map: BTreeMap<i64, Vec<SeccompRule>> = enosys_names
        .iter()
        .filter_map(|name| {
            target_table
                .get(name)
                .map(|&nr| (i64::from(nr), Vec::new()))
        })
        .collect();

    let mut build = |what: &str, map, mismatch, matched| -> BpfProgram {
        let program =
            SeccompFilter::new(map, mismatch, matched, arch).and_then(BpfProgram::try_from);
        match program {
            Ok(p) => p,
            Err(e) => {
                errors.push(format!("{what} filter: {e}"));
                Vec::new()
            }
        }
    };
    let zygote = build(
        "zygote",
        zygote_map,
        SeccompAction::Errno(EPERM),
        SeccompAction::Allow,
    );
    let run = build(
        "run",
        run_map,
        SeccompAction::Errno(EPERM),
        SeccompAction::Allow,
    );
    let clone3 = build(
        "clone3",
        clone3_map,
        SeccompAction::Allow,
        SeccompAction::Errno(ENOSYS),
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    let enosys_nrs: Vec<u32> = enosys_names
        .iter()
        .filter_map(|name| target_table.get(name).copied())
        .collect();
    let zygote = with_enosys_prologue("zygote", zygote, arch, &enosys_nrs)?;
    let run = with_enosys_prologue("run", run, arch, &enosys_nrs)?;
    Ok(Compiled {
        zygote,
        run,
        clone3,
    })
}

// Classic BPF opcodes (linux/bpf_common.h) and seccomp constants (linux/seccomp.h, linux/audit.h).
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JMP_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
const BPF_MAXINSNS: usize = 4096;

fn audit_arch(arch: TargetArch) -> u32 {
    const AUDIT_ARCH_64BIT_LE: u32 = 0x8000_0000 | 0x4000_0000;
    match arch {
        TargetArch::x86_64 => 62 | AUDIT_ARCH_64BIT_LE,
        TargetArch::aarch64 => 183 | AUDIT_ARCH_64BIT_LE,
        TargetArch::riscv64 => 243 | AUDIT_ARCH_64BIT_LE,
    }
}

fn insn(code: u16, k: u32, jt: u8, jf: u8) -> seccompiler::sock_filter {
    seccompiler::sock_filter { code, jt, jf, k }
}

/// A seccompiler filter has one match action (here Allow), so it cannot answer ENOSYS to some
/// syscalls and EPERM to the rest. This inserts, right after seccompiler's architecture check,
/// `if nr == X { return ERRNO(ENOSYS) }` for each `enosys` syscall, so that each main filter is
/// correct on its own whatever is stacked above or below it (see src/seccomp.rs).
///
/// seccompiler's program starts with `ld [arch]; jeq AUDIT_ARCH, +1, +0; ret KILL_PROCESS`, and
/// no other instruction jumps backwards or across index 3, so inserting at index 3 keeps every
/// jump offset valid. The shape is checked: a different seccompiler layout fails the build.
fn with_enosys_prologue(
    what: &str,
    program: BpfProgram,
    arch: TargetArch,
    nrs: &[u32],
) -> Result<BpfProgram, Vec<String>> {
    let expected_head = [
        insn(BPF_LD_W_ABS, SECCOMP_DATA_ARCH, 0, 0),
        insn(BPF_JMP_JEQ_K, audit_arch(arch), 1, 0),
        insn(BPF_RET_K, SECCOMP_RET_KILL_PROCESS, 0, 0),
    ];
    if program.len() < 3 || program[..3] != expected_head {
        return Err(vec![format!(
            "{what} filter: unexpected seccompiler output (architecture check not found); \
             the clone3 ENOSYS prologue cannot be inserted"
        )]);
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
        return Err(vec![format!(
            "{what} filter: {} instructions, more than {BPF_MAXINSNS}",
            patched.len()
        )]);
    }
    Ok(patched)
}

fn write_program(path: &Path, program: &BpfProgram) {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for insn in program {
        // Target byte order (checked to be little-endian above).
        bytes.extend_from_slice(&insn.code.to_le_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_le_bytes());
    }
    write_file(path, &bytes);
}

fn write_file(path: &Path, bytes: &[u8]) {
    // Only rewrite on change, to keep rebuilds of dependents minimal.
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    std::fs::write(path, bytes)
        .unwrap_or_else(|e| panic!("cerver-jail: cannot write {}: {e}", path.display()));
}

// Syscall tables ("name number" pairs). seccompiler keeps its own tables private (behind its `json`
// feature), so they are reproduced here; generated from seccompiler 0.5's tables (Linux 6.12
// `tools/generate_syscall_tables`), themselves produced from the kernel's syscall definitions.
// The integration tests cross-check them against libc and the installed kernel headers.

/// x86_64 (64-bit ABI; no x32, no i386).
const X86_64_TABLE: &str = "\
    read 0 write 1 open 2 close 3 stat 4 fstat 5 lstat 6 poll 7 lseek 8 mmap 9 mprotect 10 \
    munmap 11 brk 12 rt_sigaction 13 rt_sigprocmask 14 rt_sigreturn 15 ioctl 16 pread64 17 \
    pwrite64 18 readv 19 writev 20 access 21 pipe 22 select 23 sched_yield 24 mremap 25 msync \
    26 mincore 27 madvise 28 shmget 29 shmat 30 shmctl 31 dup 32 dup2 33 pause 34 nanosleep \
    35 getitimer 36 alarm 37 setitimer 38 getpid 39 sendfile 40 socket 41 connect 42 accept \
    43 sendto 44 recvfrom 45 sendmsg 46 recvmsg 47 shutdown 48 bind 49 listen 50 getsockname \
    51 getpeername 52 socketpair 53 setsockopt 54 getsockopt 55 clone 56 fork 57 vfork 58 \
    execve 59 exit 60 wait4 61 kill 62 uname 63 semget 64 semop 65 semctl 66 shmdt 67 msgget \
    68 msgsnd 69 msgrcv 70 msgctl 71 fcntl 72 flock 73 fsync 74 fdatasync 75 truncate 76 \
    ftruncate 77 getdents 78 getcwd 79 chdir 80 fchdir 81 rename 82 mkdir 83 rmdir 84 creat \
    85 link 86 unlink 87 symlink 88 readlink 89 chmod 90 fchmod 91 chown 92 fchown 93 lchown \
    94 umask 95 gettimeofday 96 getrlimit 97 getrusage 98 sysinfo 99 times 100 ptrace 101 \
    getuid 102 syslog 103 getgid 104 setuid 105 setgid 106 geteuid 107 getegid 108 setpgid \
    109 getppid 110 getpgrp 111 setsid 112 setreuid 113 setregid 114 getgroups 115 setgroups \
    116 setresuid 117 getresuid 118 setresgid 119 getresgid 120 getpgid 121 setfsuid 122 \
    setfsgid 123 getsid 124 capget 125 capset 126 rt_sigpending 127 rt_sigtimedwait 128 \
    rt_sigqueueinfo 129 rt_sigsuspend 130 sigaltstack 131 utime 132 mknod 133 uselib 134 \
    personality 135 ustat 136 statfs 137 fstatfs 138 sysfs 139 getpriority 140 setpriority \
    141 sched_setparam 142 sched_getparam 143 sched_setscheduler 144 sched_getscheduler 145 \
    sched_get_priority_max 146 sched_get_priority_min 147 sched_rr_get_interval 148 mlock 149 \
    munlock 150 mlockall 151 munlockall 152 vhangup 153 modify_ldt 154 pivot_root 155 _sysctl \
    156 prctl 157 arch_prctl 158 adjtimex 159 setrlimit 160 chroot 161 sync 162 acct 163 \
    settimeofday 164 mount 165 umount2 166 swapon 167 swapoff 168 reboot 169 sethostname 170 \
    setdomainname 171 iopl 172 ioperm 173 create_module 174 init_module 175 delete_module 176 \
    get_kernel_syms 177 query_module 178 quotactl 179 nfsservctl 180 getpmsg 181 putpmsg 182 \
    afs_syscall 183 tuxcall 184 security 185 gettid 186 readahead 187 setxattr 188 lsetxattr \
    189 fsetxattr 190 getxattr 191 lgetxattr 192 fgetxattr 193 listxattr 194 llistxattr 195 \
    flistxattr 196 removexattr 197 lremovexattr 198 fremovexattr 199 tkill 200 time 201 futex \
    202 sched_setaffinity 203 sched_getaffinity 204 set_thread_area 205 io_setup 206 \
    io_destroy 207 io_getevents 208 io_submit 209 io_cancel 210 get_thread_area 211 \
    lookup_dcookie 212 epoll_create 213 epoll_ctl_old 214 epoll_wait_old 215 remap_file_pages \
    216 getdents64 217 set_tid_address 218 restart_syscall 219 semtimedop 220 fadvise64 221 \
    timer_create 222 timer_settime 223 timer_gettime 224 timer_getoverrun 225 timer_delete \
    226 clock_settime 227 clock_gettime 228 clock_getres 229 clock_nanosleep 230 exit_group \
    231 epoll_wait 232 epoll_ctl 233 tgkill 234 utimes 235 vserver 236 mbind 237 \
    set_mempolicy 238 get_mempolicy 239 mq_open 240 mq_unlink 241 mq_timedsend 242 \
    mq_timedreceive 243 mq_notify 244 mq_getsetattr 245 kexec_load 246 waitid 247 add_key 248 \
    request_key 249 keyctl 250 ioprio_set 251 ioprio_get 252 inotify_init 253 \
    inotify_add_watch 254 inotify_rm_watch 255 migrate_pages 256 openat 257 mkdirat 258 \
    mknodat 259 fchownat 260 futimesat 261 newfstatat 262 unlinkat 263 renameat 264 linkat \
    265 symlinkat 266 readlinkat 267 fchmodat 268 faccessat 269 pselect6 270 ppoll 271 \
    unshare 272 set_robust_list 273 get_robust_list 274 splice 275 tee 276 sync_file_range \
    277 vmsplice 278 move_pages 279 utimensat 280 epoll_pwait 281 signalfd 282 timerfd_create \
    283 eventfd 284 fallocate 285 timerfd_settime 286 timerfd_gettime 287 accept4 288 \
    signalfd4 289 eventfd2 290 epoll_create1 291 dup3 292 pipe2 293 inotify_init1 294 preadv \
    295 pwritev 296 rt_tgsigqueueinfo 297 perf_event_open 298 recvmmsg 299 fanotify_init 300 \
    fanotify_mark 301 prlimit64 302 name_to_handle_at 303 open_by_handle_at 304 clock_adjtime \
    305 syncfs 306 sendmmsg 307 setns 308 getcpu 309 process_vm_readv 310 process_vm_writev \
    311 kcmp 312 finit_module 313 sched_setattr 314 sched_getattr 315 renameat2 316 seccomp \
    317 getrandom 318 memfd_create 319 kexec_file_load 320 bpf 321 execveat 322 userfaultfd \
    323 membarrier 324 mlock2 325 copy_file_range 326 preadv2 327 pwritev2 328 pkey_mprotect \
    329 pkey_alloc 330 pkey_free 331 statx 332 io_pgetevents 333 rseq 334 uretprobe 335 \
    pidfd_send_signal 424 io_uring_setup 425 io_uring_enter 426 io_uring_register 427 \
    open_tree 428 move_mount 429 fsopen 430 fsconfig 431 fsmount 432 fspick 433 pidfd_open \
    434 clone3 435 close_range 436 openat2 437 pidfd_getfd 438 faccessat2 439 process_madvise \
    440 epoll_pwait2 441 mount_setattr 442 quotactl_fd 443 landlock_create_ruleset 444 \
    landlock_add_rule 445 landlock_restrict_self 446 memfd_secret 447 process_mrelease 448 \
    futex_waitv 449 set_mempolicy_home_node 450 cachestat 451 fchmodat2 452 map_shadow_stack \
    453 futex_wake 454 futex_wait 455 futex_requeue 456 statmount 457 listmount 458 \
    lsm_get_self_attr 459 lsm_set_self_attr 460 lsm_list_modules 461 mseal 462";

/// aarch64 (arm64).
const AARCH64_TABLE: &str = "\
    io_setup 0 io_destroy 1 io_submit 2 io_cancel 3 io_getevents 4 setxattr 5 lsetxattr 6 \
    fsetxattr 7 getxattr 8 lgetxattr 9 fgetxattr 10 listxattr 11 llistxattr 12 flistxattr 13 \
    removexattr 14 lremovexattr 15 fremovexattr 16 getcwd 17 lookup_dcookie 18 eventfd2 19 \
    epoll_create1 20 epoll_ctl 21 epoll_pwait 22 dup 23 dup3 24 fcntl 25 inotify_init1 26 \
    inotify_add_watch 27 inotify_rm_watch 28 ioctl 29 ioprio_set 30 ioprio_get 31 flock 32 \
    mknodat 33 mkdirat 34 unlinkat 35 symlinkat 36 linkat 37 renameat 38 umount2 39 mount 40 \
    pivot_root 41 nfsservctl 42 statfs 43 fstatfs 44 truncate 45 ftruncate 46 fallocate 47 \
    faccessat 48 chdir 49 fchdir 50 chroot 51 fchmod 52 fchmodat 53 fchownat 54 fchown 55 \
    openat 56 close 57 vhangup 58 pipe2 59 quotactl 60 getdents64 61 lseek 62 read 63 write \
    64 readv 65 writev 66 pread64 67 pwrite64 68 preadv 69 pwritev 70 sendfile 71 pselect6 72 \
    ppoll 73 signalfd4 74 vmsplice 75 splice 76 tee 77 readlinkat 78 newfstatat 79 fstat 80 \
    sync 81 fsync 82 fdatasync 83 sync_file_range 84 timerfd_create 85 timerfd_settime 86 \
    timerfd_gettime 87 utimensat 88 acct 89 capget 90 capset 91 personality 92 exit 93 \
    exit_group 94 waitid 95 set_tid_address 96 unshare 97 futex 98 set_robust_list 99 \
    get_robust_list 100 nanosleep 101 getitimer 102 setitimer 103 kexec_load 104 init_module \
    105 delete_module 106 timer_create 107 timer_gettime 108 timer_getoverrun 109 \
    timer_settime 110 timer_delete 111 clock_settime 112 clock_gettime 113 clock_getres 114 \
    clock_nanosleep 115 syslog 116 ptrace 117 sched_setparam 118 sched_setscheduler 119 \
    sched_getscheduler 120 sched_getparam 121 sched_setaffinity 122 sched_getaffinity 123 \
    sched_yield 124 sched_get_priority_max 125 sched_get_priority_min 126 \
    sched_rr_get_interval 127 restart_syscall 128 kill 129 tkill 130 tgkill 131 sigaltstack \
    132 rt_sigsuspend 133 rt_sigaction 134 rt_sigprocmask 135 rt_sigpending 136 \
    rt_sigtimedwait 137 rt_sigqueueinfo 138 rt_sigreturn 139 setpriority 140 getpriority 141 \
    reboot 142 setregid 143 setgid 144 setreuid 145 setuid 146 setresuid 147 getresuid 148 \
    setresgid 149 getresgid 150 setfsuid 151 setfsgid 152 times 153 setpgid 154 getpgid 155 \
    getsid 156 setsid 157 getgroups 158 setgroups 159 uname 160 sethostname 161 setdomainname \
    162 getrlimit 163 setrlimit 164 getrusage 165 umask 166 prctl 167 getcpu 168 gettimeofday \
    169 settimeofday 170 adjtimex 171 getpid 172 getppid 173 getuid 174 geteuid 175 getgid \
    176 getegid 177 gettid 178 sysinfo 179 mq_open 180 mq_unlink 181 mq_timedsend 182 \
    mq_timedreceive 183 mq_notify 184 mq_getsetattr 185 msgget 186 msgctl 187 msgrcv 188 \
    msgsnd 189 semget 190 semctl 191 semtimedop 192 semop 193 shmget 194 shmctl 195 shmat 196 \
    shmdt 197 socket 198 socketpair 199 bind 200 listen 201 accept 202 connect 203 \
    getsockname 204 getpeername 205 sendto 206 recvfrom 207 setsockopt 208 getsockopt 209 \
    shutdown 210 sendmsg 211 recvmsg 212 readahead 213 brk 214 munmap 215 mremap 216 add_key \
    217 request_key 218 keyctl 219 clone 220 execve 221 mmap 222 fadvise64 223 swapon 224 \
    swapoff 225 mprotect 226 msync 227 mlock 228 munlock 229 mlockall 230 munlockall 231 \
    mincore 232 madvise 233 remap_file_pages 234 mbind 235 get_mempolicy 236 set_mempolicy \
    237 migrate_pages 238 move_pages 239 rt_tgsigqueueinfo 240 perf_event_open 241 accept4 \
    242 recvmmsg 243 wait4 260 prlimit64 261 fanotify_init 262 fanotify_mark 263 \
    name_to_handle_at 264 open_by_handle_at 265 clock_adjtime 266 syncfs 267 setns 268 \
    sendmmsg 269 process_vm_readv 270 process_vm_writev 271 kcmp 272 finit_module 273 \
    sched_setattr 274 sched_getattr 275 renameat2 276 seccomp 277 getrandom 278 memfd_create \
    279 bpf 280 execveat 281 userfaultfd 282 membarrier 283 mlock2 284 copy_file_range 285 \
    preadv2 286 pwritev2 287 pkey_mprotect 288 pkey_alloc 289 pkey_free 290 statx 291 \
    io_pgetevents 292 rseq 293 kexec_file_load 294 pidfd_send_signal 424 io_uring_setup 425 \
    io_uring_enter 426 io_uring_register 427 open_tree 428 move_mount 429 fsopen 430 fsconfig \
    431 fsmount 432 fspick 433 pidfd_open 434 clone3 435 close_range 436 openat2 437 \
    pidfd_getfd 438 faccessat2 439 process_madvise 440 epoll_pwait2 441 mount_setattr 442 \
    quotactl_fd 443 landlock_create_ruleset 444 landlock_add_rule 445 landlock_restrict_self \
    446 memfd_secret 447 process_mrelease 448 futex_waitv 449 set_mempolicy_home_node 450 \
    cachestat 451 fchmodat2 452 map_shadow_stack 453 futex_wake 454 futex_wait 455 \
    futex_requeue 456 statmount 457 listmount 458 lsm_get_self_attr 459 lsm_set_self_attr 460 \
    lsm_list_modules 461 mseal 462";

/// Syscalls added after Linux 6.12: since Linux 5.1 new syscalls get the same number on every
/// architecture (except alpha).
const COMMON_NEW_TABLE: &str = "\
    setxattrat 463 getxattrat 464 listxattrat 465 removexattrat 466 open_tree_attr 467 \
    file_getattr 468 file_setattr 469";
