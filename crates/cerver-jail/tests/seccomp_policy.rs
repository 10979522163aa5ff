//! Tests of the seccomp policy (`policy/seccomp.json` → `cerver_jail::seccomp`).
//!
//! Two kinds of tests:
//! - static: the compiled programs are run through a small classic-BPF interpreter (the
//!   instructions seccompiler emits) against the JSON policy, for every refused syscall and a set
//!   of argument vectors;
//! - live: a forked child sets no_new_privs, installs the real filters and makes raw syscalls
//!   (the tests run as root on Linux 6.x, so a call the filter failed to refuse would usually
//!   succeed or fail with another errno than the filter's EPERM).

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;

use cerver_jail::seccomp::{
    self, CLONE3_FILTER, RUN_FILTER, SYSCALLS, ZYGOTE_FILTER, install_run_filter,
    install_zygote_filters, program,
};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, pipe};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, sock_filter};
use serde_json::Value;

// ------------------------------------------------------------------------------------------------
// Constants

const EPERM: i32 = libc::EPERM;
const ENOSYS: i32 = libc::ENOSYS;

const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const RET_EPERM: u32 = SECCOMP_RET_ERRNO | EPERM as u32;
const RET_ENOSYS: u32 = SECCOMP_RET_ERRNO | ENOSYS as u32;

const AUDIT_ARCH_I386: u32 = 0x4000_0003;
#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xc000_00b7;

const CLONE_NEWTIME: u64 = 0x80;
const CLONE_NEWNS: u64 = 0x0002_0000;
const CLONE_NEWCGROUP: u64 = 0x0200_0000;
const CLONE_NEWUTS: u64 = 0x0400_0000;
const CLONE_NEWIPC: u64 = 0x0800_0000;
const CLONE_NEWUSER: u64 = 0x1000_0000;
const CLONE_NEWPID: u64 = 0x2000_0000;
const CLONE_NEWNET: u64 = 0x4000_0000;
const NAMESPACE_FLAGS: [u64; 8] = [
    CLONE_NEWTIME,
    CLONE_NEWNS,
    CLONE_NEWCGROUP,
    CLONE_NEWUTS,
    CLONE_NEWIPC,
    CLONE_NEWUSER,
    CLONE_NEWPID,
    CLONE_NEWNET,
];
const SIGCHLD: u64 = libc::SIGCHLD as u64;
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541c;
const TIOCSETD: u64 = 0x5423;
const SECCOMP_SET_MODE_STRICT: u64 = 0;
const SECCOMP_SET_MODE_FILTER: u64 = 1;
const SECCOMP_GET_ACTION_AVAIL: u64 = 2;
const SECCOMP_GET_NOTIF_SIZES: u64 = 3;
const SECCOMP_FILTER_FLAG_TSYNC: u64 = 1;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: u64 = 1 << 3;
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

fn nr(name: &str) -> u32 {
    seccomp::syscall_number(name).unwrap_or_else(|| panic!("{name} is not in the syscall table"))
}

fn policy() -> Value {
    let text = include_str!("../policy/seccomp.json");
    serde_json::from_str(text).expect("policy/seccomp.json is valid JSON")
}

fn num(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().expect("unsigned integer"),
        Value::String(s) => match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).expect("hex number"),
            None => s.parse().expect("decimal number"),
        },
        other => panic!("not a number: {other}"),
    }
}

/// Does `args` satisfy one JSON argument condition?
fn cond_holds(cond: &Value, args: &[u64; 6]) -> bool {
    let index = cond["index"].as_u64().unwrap() as usize;
    let dword = cond["type"] == "dword";
    let width = |x: u64| if dword { x & 0xffff_ffff } else { x };
    let arg = width(args[index]);
    let val = width(num(&cond["val"]));
    match cond["op"].as_str().unwrap() {
        "eq" => arg == val,
        "ne" => arg != val,
        "lt" => arg < val,
        "le" => arg <= val,
        "gt" => arg > val,
        "ge" => arg >= val,
        "masked_eq" => {
            let mask = width(num(&cond["mask"]));
            arg & mask == val & mask
        }
        op => panic!("unknown op {op}"),
    }
}

// ------------------------------------------------------------------------------------------------
// A classic-BPF interpreter for seccomp programs (the subset seccompiler and build.rs emit).

fn eval(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    // struct seccomp_data { int nr; u32 arch; u64 instruction_pointer; u64 args[6]; }
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    loop {
        let insn = prog
            .get(pc)
            .unwrap_or_else(|| panic!("fell off the program at {pc}"));
        pc += 1;
        let k = insn.k;
        let jump = |cond: bool| usize::from(if cond { insn.jt } else { insn.jf });
        match insn.code {
            // BPF_LD | BPF_W | BPF_ABS
            0x20 => {
                let off = k as usize;
                assert!(
                    off & 3 == 0 && off + 4 <= data.len(),
                    "bad load offset {off}"
                );
                acc = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap());
            }
            // BPF_ALU | BPF_AND | BPF_K
            0x54 => acc &= k,
            // BPF_JMP | BPF_JA
            0x05 => pc += k as usize,
            // BPF_JMP | BPF_JEQ / BPF_JGT / BPF_JGE / BPF_JSET | BPF_K
            0x15 => pc += jump(acc == k),
            0x25 => pc += jump(acc > k),
            0x35 => pc += jump(acc >= k),
            0x45 => pc += jump(acc & k != 0),
            // BPF_RET | BPF_K
            0x06 => return k,
            code => panic!("unsupported BPF opcode {code:#x} at {}", pc - 1),
        }
    }
}

fn zygote() -> BpfProgram {
    program(ZYGOTE_FILTER)
}
fn run() -> BpfProgram {
    program(RUN_FILTER)
}
fn clone3_filter() -> BpfProgram {
    program(CLONE3_FILTER)
}

fn check(prog: &[sock_filter], name: &str, args: [u64; 6]) -> u32 {
    eval(prog, NATIVE_ARCH, nr(name), args)
}

fn a1(x: u64) -> [u64; 6] {
    [x, 0, 0, 0, 0, 0]
}

/// Argument vectors for probing refused syscalls: simple ones, each interesting constant in each
/// position, and pseudo-random ones.
fn probe_args(extra: &[u64]) -> Vec<[u64; 6]> {
    let mut out = vec![[0; 6], [u64::MAX; 6], [0xffff_ffff; 6], [1, 1, 1, 1, 1, 1]];
    let mut constants: Vec<u64> = NAMESPACE_FLAGS.to_vec();
    constants.extend_from_slice(extra);
    constants.extend([
        CLONE_NEWPID | CLONE_NEWNS,
        CLONE_NEWPID | (1 << 32),
        1 << 32,
    ]);
    for &c in &constants {
        for i in 0..6 {
            let mut a = [0; 6];
            a[i] = c;
            out.push(a);
        }
        out.push([c; 6]);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..64 {
        let mut a = [0; 6];
        for v in &mut a {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = x;
        }
        out.push(a);
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Static tests

#[test]
fn programs_are_well_formed() {
    for (name, bytes) in [
        ("zygote", ZYGOTE_FILTER),
        ("run", RUN_FILTER),
        ("clone3", CLONE3_FILTER),
    ] {
        assert_eq!(bytes.len() & 7, 0, "{name}");
        let len = bytes.len() / 8;
        assert!(len > 3 && len <= 4096, "{name}: {len} instructions");
    }
    // The run filter is the zygote filter minus the `zygote_only` entries: a strict subset when
    // there are some, the very same program when there are none (the current policy).
    let zygote_only = policy()["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["zygote_only"] == Value::Bool(true))
        .count();
    if zygote_only == 0 {
        assert_eq!(
            RUN_FILTER, ZYGOTE_FILTER,
            "without zygote_only entries the zygote and run filters must be byte-equal"
        );
    } else {
        assert!(RUN_FILTER.len() < ZYGOTE_FILTER.len());
    }
}

/// The zygote no longer creates or joins pid namespaces (runs share the sandbox's pid namespace)
/// and has no CAP_SYS_ADMIN: `unshare` and `setns` are plainly refused, with no zygote exception.
#[test]
fn unshare_and_setns_have_no_zygote_exception() {
    let policy = policy();
    for name in ["unshare", "setns"] {
        let refused: Vec<&Value> = policy["refused"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["syscall"] == name)
            .collect();
        assert_eq!(refused.len(), 1, "{name} must be refused exactly once");
        assert!(
            refused[0].get("except_zygote_only").is_none(),
            "{name}: no except_zygote_only"
        );
        assert!(
            !policy["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["syscall"] == name),
            "{name} must not be in the allow-list"
        );
    }
}

#[test]
fn refused_syscalls_are_never_allowed() {
    let policy = policy();
    let refused = policy["refused"].as_array().unwrap();
    assert!(refused.len() >= 50);
    let (zygote, run) = (zygote(), run());
    let mut probed = 0;
    for entry in refused {
        let name = entry["syscall"].as_str().unwrap();
        assert!(
            !entry["reason"].as_str().unwrap().trim().is_empty(),
            "{name}: reason"
        );
        let Some(n) = seccomp::syscall_number(name) else {
            continue; // does not exist on this architecture
        };
        let exception = entry.get("except_zygote_only").and_then(Value::as_array);
        let extra: Vec<u64> = exception
            .into_iter()
            .flatten()
            .map(|c| num(&c["val"]))
            .collect();
        assert!(
            exception.is_none() || !["unshare", "setns"].contains(&name),
            "{name}: no zygote exception any more"
        );
        for args in probe_args(&extra) {
            let r = eval(&run, NATIVE_ARCH, n, args);
            assert_eq!(
                r, RET_EPERM,
                "run filter: {name}{args:x?} must fail with EPERM"
            );
            let z = eval(&zygote, NATIVE_ARCH, n, args);
            let allowed = exception.is_some_and(|conds| conds.iter().all(|c| cond_holds(c, &args)));
            let expected = if allowed {
                SECCOMP_RET_ALLOW
            } else {
                RET_EPERM
            };
            assert_eq!(z, expected, "zygote filter: {name}{args:x?}");
            probed += 1;
        }
        // The exception itself (the value in its argument, zeros elsewhere) is allowed.
        if let Some(conds) = exception {
            let mut args = [0u64; 6];
            for c in conds {
                args[c["index"].as_u64().unwrap() as usize] = num(&c["val"]);
            }
            assert_eq!(
                eval(&zygote, NATIVE_ARCH, n, args),
                SECCOMP_RET_ALLOW,
                "{name}{args:x?}"
            );
            assert_eq!(
                eval(&run, NATIVE_ARCH, n, args),
                RET_EPERM,
                "{name}{args:x?}"
            );
        }
    }
    assert!(probed > 1000);

    // In the JSON itself: a refused name only appears in the allow-list as zygote_only, with
    // conditions (build.rs checks they are exactly `except_zygote_only`), and only when its
    // `refused` entry has such an exception.
    let exceptions: BTreeSet<&str> = refused
        .iter()
        .filter(|e| e.get("except_zygote_only").is_some())
        .map(|e| e["syscall"].as_str().unwrap())
        .collect();
    let refused_names: BTreeSet<&str> = refused
        .iter()
        .map(|e| e["syscall"].as_str().unwrap())
        .collect();
    for entry in policy["syscalls"].as_array().unwrap() {
        let name = entry["syscall"].as_str().unwrap();
        if refused_names.contains(name) {
            assert_eq!(entry["zygote_only"], Value::Bool(true), "{name}");
            assert!(!entry["args"].as_array().unwrap().is_empty(), "{name}");
            assert!(exceptions.contains(name), "{name}");
        }
    }
}

#[test]
fn required_refusals_are_listed() {
    let policy = policy();
    let refused: BTreeSet<&str> = policy["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["syscall"].as_str().unwrap())
        .collect();
    let required = [
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "unshare",
        "setns",
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "request_key",
        "userfaultfd",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "create_module",
        "reboot",
        "swapon",
        "swapoff",
        "acct",
        "quotactl",
        "quotactl_fd",
        "open_by_handle_at",
        "name_to_handle_at",
        "syslog",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "iopl",
        "ioperm",
        "modify_ldt",
        "lookup_dcookie",
        "fanotify_init",
        "vhangup",
        "mount_setattr",
        "move_mount",
        "open_tree",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "pidfd_getfd",
        "uselib",
        "nfsservctl",
    ];
    for name in required {
        assert!(refused.contains(name), "{name} must be in the refused list");
    }
}

#[test]
fn allow_list_entries_are_allowed() {
    let policy = policy();
    let (zygote, run) = (zygote(), run());
    let mut unconditional = 0;
    for entry in policy["syscalls"].as_array().unwrap() {
        let name = entry["syscall"].as_str().unwrap();
        assert!(
            !entry["reason"].as_str().unwrap().trim().is_empty(),
            "{name}: reason"
        );
        let Some(n) = seccomp::syscall_number(name) else {
            continue;
        };
        let zygote_only = entry["zygote_only"] == Value::Bool(true);
        let conds = entry.get("args").and_then(Value::as_array);
        if conds.is_none_or(|c| c.is_empty()) {
            unconditional += 1;
            for args in [[0; 6], [u64::MAX; 6], [7, 8, 9, 10, 11, 12]] {
                assert_eq!(
                    eval(&zygote, NATIVE_ARCH, n, args),
                    SECCOMP_RET_ALLOW,
                    "{name}"
                );
                let expected = if zygote_only {
                    RET_EPERM
                } else {
                    SECCOMP_RET_ALLOW
                };
                assert_eq!(eval(&run, NATIVE_ARCH, n, args), expected, "{name}");
            }
        }
    }
    assert!(unconditional > 250, "{unconditional}");
}

#[test]
fn argument_conditions() {
    let (zygote, run) = (zygote(), run());
    for prog in [&zygote, &run] {
        let allow = |name: &str, args: [u64; 6]| check(prog, name, args) == SECCOMP_RET_ALLOW;
        // clone: any flags except namespace creation.
        let thread_flags = 0x003d_0f00; // glibc's pthread_create flags
        assert!(allow("clone", a1(SIGCHLD)));
        assert!(allow("clone", a1(thread_flags)));
        assert!(allow("clone", a1(0x4111))); // CLONE_VM | CLONE_VFORK | SIGCHLD
        for flag in NAMESPACE_FLAGS {
            assert!(!allow("clone", a1(flag | SIGCHLD)), "clone {flag:#x}");
            assert!(!allow("clone", a1(flag | thread_flags)), "clone {flag:#x}");
        }
        // socket: AF_UNIX any type; AF_INET/AF_INET6 stream and datagram only.
        let sock = |d: u64, t: u64| allow("socket", [d, t, 0, 0, 0, 0]);
        for t in [1, 2, 5, 1 | 0x80000 | 0x800] {
            assert!(sock(1, t), "AF_UNIX {t:#x}");
        }
        for d in [2, 10] {
            assert!(sock(d, 1) && sock(d, 2) && sock(d, 1 | 0x80000) && sock(d, 2 | 0x800));
            assert!(!sock(d, 3), "SOCK_RAW"); // raw
            assert!(!sock(d, 3 | 0x80000), "SOCK_RAW|SOCK_CLOEXEC");
            assert!(!sock(d, 10), "SOCK_PACKET");
            assert!(
                sock(d | (1 << 32), 1),
                "the kernel truncates the int domain"
            );
        }
        for d in [0, 3, 4, 5, 16, 17, 29, 38, 40, 44] {
            assert!(!sock(d, 1) && !sock(d, 2) && !sock(d, 3), "domain {d}");
        }
        assert!(allow("socketpair", [1, 1, 0, 0, 0, 0]));
        assert!(!allow("socketpair", [2, 1, 0, 0, 0, 0]));
        // ioctl: everything but TIOCSTI/TIOCLINUX/TIOCSETD, compared on the low 32 bits.
        assert!(allow("ioctl", [0, 0x5401, 0, 0, 0, 0])); // TCGETS
        assert!(allow("ioctl", [0, 0x541b, 0, 0, 0, 0])); // FIONREAD
        for cmd in [TIOCSTI, TIOCLINUX, TIOCSETD] {
            for high in [0, 1 << 32, 0xffff_ffff << 32] {
                assert!(
                    !allow("ioctl", [0, cmd | high, 0, 0, 0, 0]),
                    "{:#x}",
                    cmd | high
                );
            }
        }
        // personality: query and PER_LINUX only.
        assert!(allow("personality", a1(0xffff_ffff)));
        assert!(allow("personality", a1(0)));
        for p in [0x0040000, 0x0400000, 0x0008, 0x20000] {
            assert!(!allow("personality", a1(p)), "personality {p:#x}");
        }
        // seccomp: filters without a listener, and action queries.
        assert!(allow("seccomp", [SECCOMP_SET_MODE_FILTER, 0, 0, 0, 0, 0]));
        assert!(allow(
            "seccomp",
            [
                SECCOMP_SET_MODE_FILTER,
                SECCOMP_FILTER_FLAG_TSYNC,
                0,
                0,
                0,
                0
            ]
        ));
        assert!(allow("seccomp", [SECCOMP_GET_ACTION_AVAIL, 0, 0, 0, 0, 0]));
        for flags in [
            SECCOMP_FILTER_FLAG_NEW_LISTENER,
            SECCOMP_FILTER_FLAG_NEW_LISTENER | 1,
        ] {
            assert!(!allow(
                "seccomp",
                [SECCOMP_SET_MODE_FILTER, flags, 0, 0, 0, 0]
            ));
        }
        assert!(!allow("seccomp", [SECCOMP_SET_MODE_STRICT, 0, 0, 0, 0, 0]));
        assert!(!allow("seccomp", [SECCOMP_GET_NOTIF_SIZES, 0, 0, 0, 0, 0]));
    }
    // unshare / setns: refused under both filters, whatever the flags (CLONE_NEWPID included,
    // and 0, which the kernel would accept as a no-op).
    let mut values = vec![
        0,
        CLONE_NEWPID | CLONE_NEWNS,
        CLONE_NEWPID | CLONE_NEWNET,
        CLONE_NEWPID | (1 << 32),
        1 << 32,
        0xffff_ffff,
        u64::MAX,
    ];
    values.extend(NAMESPACE_FLAGS);
    values.push(NAMESPACE_FLAGS.iter().fold(0, |a, f| a | f));
    for (what, prog) in [("zygote", &zygote), ("run", &run)] {
        for &v in &values {
            assert_eq!(
                check(prog, "unshare", a1(v)),
                RET_EPERM,
                "{what}: unshare {v:#x}"
            );
            for fd in [0, 3, u64::MAX] {
                assert_eq!(
                    check(prog, "setns", [fd, v, 0, 0, 0, 0]),
                    RET_EPERM,
                    "{what}: setns({fd:#x}, {v:#x})"
                );
            }
        }
    }
}

/// socket: the IP families only with TCP, UDP and ICMP datagram protocols; setsockopt: no BPF
/// attachment, no TCP ULP. Levels, names and protocols are ints (compared on 32 bits).
#[test]
fn socket_protocols_and_options() {
    for prog in [&zygote(), &run()] {
        let allow = |name: &str, args: [u64; 6]| check(prog, name, args) == SECCOMP_RET_ALLOW;
        let sock = |d: u64, t: u64, p: u64| allow("socket", [d, t, p, 0, 0, 0]);
        for d in [2, 10] {
            assert!(sock(d, 1, 0) && sock(d, 1, 6) && sock(d, 2, 0) && sock(d, 2, 17));
            assert!(
                sock(d, 1 | 0x80000, 6 | (1 << 32)),
                "the kernel truncates the int"
            );
            // SCTP, MPTCP, SMC, UDP over a stream, UDP-Lite, L2TP/IP, TCP over a datagram,
            // SCTP over seqpacket, and a protocol whose low 16 bits are TCP's.
            for (t, p) in [
                (1, 132),
                (1, 262),
                (1, 256),
                (1, 17),
                (2, 136),
                (2, 115),
                (2, 6),
                (2, 132),
                (5, 132),
                (1, 6 | (1 << 16)),
                (2, 255),
            ] {
                assert!(!sock(d, t, p), "family {d} type {t} protocol {p}");
            }
        }
        assert!(sock(2, 2, 1) && sock(10, 2, 58), "ICMP echo sockets");
        assert!(!sock(2, 2, 58) && !sock(10, 2, 1) && !sock(2, 1, 1));
        let opt = |level: u64, name: u64| allow("setsockopt", [3, level, name, 0, 4, 0]);
        for (level, name) in [
            (1, 2),
            (1, 9),
            (1, 8),
            (6, 1),
            (6, 4),
            (0, 1),
            (41, 26),
            (17, 1),
        ] {
            assert!(opt(level, name), "setsockopt level {level} name {name}");
        }
        for (level, name) in [
            (1, 26),
            (1, 50),
            (1, 51),
            (1, 52),
            (6, 31),
            (1 | (1 << 32), 26),
            (1, 26 | (1 << 32)),
            (6 | (1 << 32), 31),
        ] {
            assert!(
                !opt(level, name),
                "setsockopt level {level:#x} name {name:#x}"
            );
        }
        assert!(!allow("io_setup", [128, 0, 0, 0, 0, 0]));
    }
}

#[test]
fn clone3_foreign_abis_and_unknown_numbers() {
    let (zygote, run, clone3) = (zygote(), run(), clone3_filter());
    for prog in [&zygote, &run, &clone3] {
        assert_eq!(check(prog, "clone3", [0; 6]), RET_ENOSYS);
        // Another ABI fails seccompiler's architecture check: the process is killed.
        assert_eq!(
            eval(prog, AUDIT_ARCH_I386, 20, [0; 6]),
            SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(
            eval(prog, AUDIT_ARCH_I386, 0, [0; 6]),
            SECCOMP_RET_KILL_PROCESS
        );
    }
    assert_eq!(check(&clone3, "getpid", [0; 6]), SECCOMP_RET_ALLOW);
    assert_eq!(check(&clone3, "mount", [0; 6]), SECCOMP_RET_ALLOW);
    for prog in [&zygote, &run] {
        assert_eq!(check(prog, "getpid", [0; 6]), SECCOMP_RET_ALLOW);
        // x32 numbers (and any number outside the table) match nothing: EPERM.
        let getpid = nr("getpid");
        assert_eq!(
            eval(prog, NATIVE_ARCH, getpid | 0x4000_0000, [0; 6]),
            RET_EPERM
        );
        for n in [500, 1000, 0xffff_ffff, 0x8000_0000] {
            assert_eq!(eval(prog, NATIVE_ARCH, n, [0; 6]), RET_EPERM, "{n:#x}");
        }
    }
}

#[test]
fn syscall_table_matches_libc() {
    macro_rules! pairs {
        ($(($name:literal, $sys:expr)),* $(,)?) => {$(
            assert_eq!(seccomp::syscall_number($name).map(i64::from), Some($sys as i64), $name);
        )*};
    }
    pairs!(
        ("read", libc::SYS_read),
        ("clone", libc::SYS_clone),
        ("clone3", libc::SYS_clone3),
        ("unshare", libc::SYS_unshare),
        ("setns", libc::SYS_setns),
        ("mount", libc::SYS_mount),
        ("socket", libc::SYS_socket),
        ("ioctl", libc::SYS_ioctl),
        ("personality", libc::SYS_personality),
        ("seccomp", libc::SYS_seccomp),
        ("ptrace", libc::SYS_ptrace),
        ("bpf", libc::SYS_bpf),
        ("keyctl", libc::SYS_keyctl),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("pidfd_getfd", libc::SYS_pidfd_getfd),
        ("landlock_restrict_self", libc::SYS_landlock_restrict_self),
        ("futex_waitv", libc::SYS_futex_waitv),
        ("mseal", libc::SYS_mseal),
        ("execve", libc::SYS_execve),
        ("exit_group", libc::SYS_exit_group),
    );
    #[cfg(target_arch = "x86_64")]
    pairs!(
        ("open", libc::SYS_open),
        ("fork", libc::SYS_fork),
        ("arch_prctl", libc::SYS_arch_prctl),
        ("modify_ldt", libc::SYS_modify_ldt),
        ("iopl", libc::SYS_iopl),
    );
    // Names are unique, numbers are unique.
    let names: BTreeSet<&str> = SYSCALLS.iter().map(|(n, _)| *n).collect();
    let numbers: BTreeSet<u32> = SYSCALLS.iter().map(|(_, n)| *n).collect();
    assert_eq!(names.len(), SYSCALLS.len());
    assert_eq!(numbers.len(), SYSCALLS.len());
    assert_eq!(seccomp::syscall_name(nr("getpid")), Some("getpid"));
}

/// Every entry of the installed kernel headers' table that the policy's table also knows agrees.
#[test]
#[cfg(target_arch = "x86_64")]
fn syscall_table_matches_kernel_headers() {
    let Ok(header) = std::fs::read_to_string("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
    else {
        eprintln!("no kernel headers, skipped");
        return;
    };
    let mut compared = 0;
    for line in header.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#define"), Some(name), Some(number)) =
            (words.next(), words.next(), words.next())
            && let Some(name) = name.strip_prefix("__NR_")
            && let Ok(number) = number.parse::<u32>()
            && let Some(ours) = seccomp::syscall_number(name)
        {
            assert_eq!(ours, number, "{name}");
            compared += 1;
        }
    }
    assert!(compared > 300, "{compared}");
}

// ------------------------------------------------------------------------------------------------
// Live tests: a forked child installs the filters and makes raw syscalls.

/// A raw syscall: `Ok(return value)` or `Err(errno)`.
#[allow(unsafe_code)]
fn sys(nr: i64, args: [u64; 6]) -> Result<i64, i32> {
    // SAFETY: the callers pass either no pointers, null/invalid pointers (which the kernel checks),
    // or pointers to live local buffers of the size the syscall expects.
    let r = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
    if r == -1 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

fn sysn(name: &str, args: [u64; 6]) -> Result<i64, i32> {
    sys(i64::from(nr(name)), args)
}

#[allow(unsafe_code)]
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the (forked) process without running the parent's destructors or atexit.
    unsafe { libc::_exit(code) }
}

/// Collects failed expectations inside the child.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn expect(&mut self, what: &str, got: Result<i64, i32>, want: Result<(), i32>) {
        let ok = match (got, want) {
            (Ok(_), Ok(())) => true,
            (Err(e), Err(w)) => e == w,
            _ => false,
        };
        if !ok {
            let want = match want {
                Ok(()) => "success".to_string(),
                Err(e) => format!("errno {e} ({})", std::io::Error::from_raw_os_error(e)),
            };
            let got = match got {
                Ok(v) => format!("returned {v}"),
                Err(e) => format!("errno {e} ({})", std::io::Error::from_raw_os_error(e)),
            };
            self.0.push(format!("{what}: expected {want}, {got}"));
        }
    }
    fn eperm(&mut self, what: &str, got: Result<i64, i32>) {
        self.expect(what, got, Err(EPERM));
    }
    fn ok(&mut self, what: &str, got: Result<i64, i32>) {
        self.expect(what, got, Ok(()));
    }
    fn that(&mut self, what: &str, cond: bool) {
        if !cond {
            self.0.push(format!("{what}: failed"));
        }
    }
}

/// Forks; the child runs `body` (which installs filters and records checks) and reports through a
/// pipe. Returns the child's wait status and report.
#[allow(unsafe_code)]
fn in_child(body: impl FnOnce(&mut Checks)) -> (WaitStatus, String) {
    let (read_end, write_end): (OwnedFd, OwnedFd) = pipe().expect("pipe");
    // SAFETY: the child only makes syscalls, allocates (glibc's malloc is fork-safe), reports
    // through the pipe and leaves with _exit; it never returns into the test harness.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(read_end);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut checks = Checks::default();
                body(&mut checks);
                checks.0
            }));
            let (code, report) = match outcome {
                Ok(failures) if failures.is_empty() => (0, String::new()),
                Ok(failures) => (1, failures.join("\n")),
                Err(_) => (2, "the child panicked".to_string()),
            };
            let _ = nix::unistd::write(&write_end, report.as_bytes());
            exit_now(code)
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut report = String::new();
            std::fs::File::from(read_end)
                .read_to_string(&mut report)
                .expect("read report");
            (waitpid(child, None).expect("waitpid"), report)
        }
    }
}

fn assert_child_ok(status: WaitStatus, report: &str) {
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "child: {status:?}\n{report}"
    );
}

/// What each child does first: its own session (so that a wrongly allowed `vhangup` could not
/// touch the test's terminal) and no core dumps.
fn child_prelude() {
    let _ = nix::unistd::setsid();
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    let _ = sysn("prctl", [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0]);
}

fn install_all(checks: &mut Checks) {
    if let Err(e) = install_zygote_filters() {
        checks.0.push(format!("install_zygote_filters: {e}"));
        return;
    }
    if let Err(e) = install_run_filter() {
        checks.0.push(format!("install_run_filter: {e}"));
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// Calls every refused syscall with all-ones arguments (invalid for each of them, so a wrongly
/// allowed call would fail with EINVAL/EFAULT/EBADF... or be a no-op, never harm the host):
/// the filter must answer EPERM.
fn all_refused_fail(checks: &mut Checks) {
    for entry in policy()["refused"].as_array().unwrap() {
        let name = entry["syscall"].as_str().unwrap();
        if let Some(n) = seccomp::syscall_number(name) {
            checks.eperm(
                &format!("{name}(-1, ...)"),
                sys(i64::from(n), [u64::MAX; 6]),
            );
        }
    }
}

#[test]
fn run_filter_behaviour() {
    let pidns = std::fs::File::open("/proc/self/ns/pid").expect("open pid ns");
    let pidns_fd = pidns.as_raw_fd() as u64;
    let (status, report) = in_child(|c| {
        child_prelude();
        install_all(c);

        c.ok("getpid", sysn("getpid", [0; 6]));
        all_refused_fail(c);

        let (none, target, tmpfs) = (
            cstr("none"),
            cstr("/nonexistent-cerver-test"),
            cstr("tmpfs"),
        );
        let mount_args = [
            none.as_ptr() as u64,
            target.as_ptr() as u64,
            tmpfs.as_ptr() as u64,
            0,
            0,
            0,
        ];
        c.eperm("mount(tmpfs)", sysn("mount", mount_args));
        let root = cstr("/");
        c.eperm("chroot(/)", sysn("chroot", a1(root.as_ptr() as u64)));
        c.eperm("unshare(CLONE_NEWUSER)", sysn("unshare", a1(CLONE_NEWUSER)));
        c.eperm("unshare(CLONE_NEWPID)", sysn("unshare", a1(CLONE_NEWPID)));
        c.eperm("unshare(CLONE_NEWNET)", sysn("unshare", a1(CLONE_NEWNET)));
        c.eperm("unshare(CLONE_NEWNS)", sysn("unshare", a1(CLONE_NEWNS)));
        c.eperm("unshare(0)", sysn("unshare", a1(0)));
        c.eperm(
            "setns(pidns, CLONE_NEWPID)",
            sysn("setns", [pidns_fd, CLONE_NEWPID, 0, 0, 0, 0]),
        );
        c.eperm("setns(pidns, 0)", sysn("setns", [pidns_fd, 0, 0, 0, 0, 0]));

        // clone3 → ENOSYS (a permitted clone3 would answer EINVAL to a NULL/0 struct).
        c.expect("clone3(NULL, 0)", sysn("clone3", [0; 6]), Err(ENOSYS));
        let args = [0u64; 11];
        let clone3_args = [
            args.as_ptr() as u64,
            std::mem::size_of_val(&args) as u64,
            0,
            0,
            0,
            0,
        ];
        let r = sysn("clone3", clone3_args);
        if r == Ok(0) {
            exit_now(0); // a wrongly created child: leave at once
        }
        c.expect("clone3(&args)", r, Err(ENOSYS));

        for (flag, name) in [
            (CLONE_NEWNET, "NEWNET"),
            (CLONE_NEWUSER, "NEWUSER"),
            (CLONE_NEWNS, "NEWNS"),
        ] {
            let r = sysn("clone", [flag | SIGCHLD, 0, 0, 0, 0, 0]);
            if r == Ok(0) {
                exit_now(0); // a wrongly created child: leave at once
            }
            c.eperm(&format!("clone(CLONE_{name}|SIGCHLD)"), r);
        }
        // Plain process creation works: raw clone, libc's fork (clone), a thread (clone3 → ENOSYS
        // → glibc falls back to clone).
        match sysn("clone", [SIGCHLD, 0, 0, 0, 0, 0]) {
            Ok(0) => exit_now(0),
            Ok(pid) => {
                let status = waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
                c.that(
                    "raw clone(SIGCHLD) child exits 0",
                    matches!(status, Ok(WaitStatus::Exited(_, 0))),
                );
            }
            Err(e) => c.0.push(format!("raw clone(SIGCHLD): errno {e}")),
        }
        #[allow(unsafe_code)]
        // SAFETY: the grandchild only calls _exit.
        match unsafe { libc::fork() } {
            0 => exit_now(7),
            -1 => {
                c.0.push(format!("libc::fork: {}", std::io::Error::last_os_error()))
            }
            pid => {
                let status = waitpid(nix::unistd::Pid::from_raw(pid), None);
                c.that(
                    "libc::fork child exits 7",
                    matches!(status, Ok(WaitStatus::Exited(_, 7))),
                );
            }
        }
        let thread = std::thread::Builder::new().spawn(|| 6 * 7);
        c.that(
            "std::thread::spawn",
            thread.is_ok_and(|t| t.join().ok() == Some(42)),
        );

        // Sockets.
        let socket =
            |d: i32, t: i32, p: i32| sysn("socket", [d as u64, t as u64, p as u64, 0, 0, 0]);
        let close = |r: Result<i64, i32>| {
            if let Ok(fd) = r {
                let _ = sysn("close", a1(fd as u64));
            }
            r
        };
        c.eperm(
            "socket(AF_NETLINK)",
            close(socket(libc::AF_NETLINK, libc::SOCK_RAW, 0)),
        );
        c.eperm(
            "socket(AF_PACKET)",
            close(socket(libc::AF_PACKET, libc::SOCK_RAW, 0)),
        );
        c.eperm(
            "socket(AF_INET, SOCK_RAW)",
            close(socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)),
        );
        c.eperm(
            "socket(AF_INET6, SOCK_RAW)",
            close(socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)),
        );
        c.eperm(
            "socket(AF_VSOCK)",
            close(socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0)),
        );
        c.eperm(
            "socket(AF_ALG)",
            close(socket(libc::AF_ALG, libc::SOCK_SEQPACKET, 0)),
        );
        c.ok(
            "socket(AF_INET, SOCK_STREAM)",
            close(socket(libc::AF_INET, libc::SOCK_STREAM, 0)),
        );
        c.ok(
            "socket(AF_INET6, SOCK_DGRAM|SOCK_CLOEXEC)",
            close(socket(
                libc::AF_INET6,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                0,
            )),
        );
        c.ok(
            "socket(AF_UNIX, SOCK_SEQPACKET)",
            close(socket(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0)),
        );
        let mut pair = [0i32; 2];
        let pair_ptr = pair.as_mut_ptr() as u64;
        c.ok(
            "socketpair(AF_UNIX)",
            sysn("socketpair", [1, 1, 0, pair_ptr, 0, 0]),
        );
        c.eperm(
            "socketpair(AF_INET)",
            sysn("socketpair", [2, 1, 0, pair_ptr, 0, 0]),
        );

        // ioctl: TIOCSTI refused, also with garbage in the high half of cmd.
        let mut byte = b'x';
        let byte_ptr = &mut byte as *mut u8 as u64;
        c.eperm(
            "ioctl(0, TIOCSTI)",
            sysn("ioctl", [0, TIOCSTI, byte_ptr, 0, 0, 0]),
        );
        c.eperm(
            "ioctl(0, 0x100005412)",
            sysn("ioctl", [0, 0x1_0000_5412, byte_ptr, 0, 0, 0]),
        );
        c.eperm(
            "ioctl(0, TIOCLINUX)",
            sysn("ioctl", [0, TIOCLINUX, byte_ptr, 0, 0, 0]),
        );
        c.eperm(
            "ioctl(0, TIOCSETD)",
            sysn("ioctl", [0, TIOCSETD, byte_ptr, 0, 0, 0]),
        );
        let mut avail = 0i32;
        let fionread = [
            pair[0] as u64,
            libc::FIONREAD,
            &mut avail as *mut i32 as u64,
            0,
            0,
            0,
        ];
        c.ok("ioctl(socket, FIONREAD)", sysn("ioctl", fionread));

        // personality.
        c.eperm(
            "personality(ADDR_NO_RANDOMIZE)",
            sysn("personality", a1(0x0040000)),
        );
        c.eperm(
            "personality(READ_IMPLIES_EXEC)",
            sysn("personality", a1(0x0400000)),
        );
        c.ok(
            "personality(0xffffffff)",
            sysn("personality", a1(0xffff_ffff)),
        );
        c.ok("personality(PER_LINUX)", sysn("personality", a1(0)));

        // seccomp.
        let listener = [
            SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_NEW_LISTENER,
            0,
            0,
            0,
            0,
        ];
        c.eperm(
            "seccomp(SET_MODE_FILTER, NEW_LISTENER)",
            sysn("seccomp", listener),
        );
        // In a grandchild: if strict mode were wrongly allowed, the next syscall (exit_group)
        // would be answered with SIGKILL.
        #[allow(unsafe_code)]
        // SAFETY: the grandchild only makes raw syscalls and exits.
        match unsafe { libc::fork() } {
            0 => {
                let r = sysn("seccomp", [SECCOMP_SET_MODE_STRICT, 0, 0, 0, 0, 0]);
                exit_now(if r == Err(EPERM) { 0 } else { 1 })
            }
            -1 => {
                c.0.push(format!("fork: {}", std::io::Error::last_os_error()))
            }
            pid => {
                let status = waitpid(nix::unistd::Pid::from_raw(pid), None);
                c.that(
                    "seccomp(SET_MODE_STRICT) fails with EPERM",
                    matches!(status, Ok(WaitStatus::Exited(_, 0))),
                );
            }
        }
        let action = SECCOMP_RET_ALLOW;
        let avail_args = [
            SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32 as u64,
            0,
            0,
            0,
        ];
        c.ok("seccomp(GET_ACTION_AVAIL)", sysn("seccomp", avail_args));
        // Stacking one more filter is allowed.
        c.that(
            "apply_filter(CLONE3_FILTER)",
            seccompiler::apply_filter(&clone3_filter()).is_ok(),
        );

        // Other refused syscalls, with arguments that would otherwise succeed or fail differently.
        let pid = sysn("getpid", [0; 6]).unwrap_or(0) as u64;
        c.eperm(
            "ptrace(PTRACE_CONT, self)",
            sysn("ptrace", [libc::PTRACE_CONT as u64, pid, 0, 0, 0, 0]),
        );
        c.eperm("bpf(BPF_PROG_LOAD, NULL)", sysn("bpf", [5, 0, 0, 0, 0, 0]));
        c.eperm(
            "io_uring_setup(1, NULL)",
            sysn("io_uring_setup", [1, 0, 0, 0, 0, 0]),
        );
        let session_keyring = (-3i64) as u64;
        c.eperm(
            "keyctl(GET_KEYRING_ID)",
            sysn("keyctl", [0, session_keyring, 0, 0, 0, 0]),
        );
        c.eperm("userfaultfd(0)", sysn("userfaultfd", [0; 6]));
        c.eperm("pidfd_getfd", sysn("pidfd_getfd", [0; 6]));

        // x32 ABI: same AUDIT_ARCH as x86_64, but the number matches no allow-list entry.
        let x32_getpid = X32_SYSCALL_BIT | i64::from(nr("getpid"));
        c.eperm("x32 getpid", sys(x32_getpid, [0; 6]));
        c.eperm("syscall 1000", sys(1000, [0; 6]));
    });
    assert_child_ok(status, &report);
}

#[test]
fn zygote_filters_behaviour() {
    let pidns = std::fs::File::open("/proc/self/ns/pid").expect("open pid ns");
    let pidns_fd = pidns.as_raw_fd() as u64;
    let (status, report) = in_child(|c| {
        child_prelude();
        if let Err(e) = install_zygote_filters() {
            c.0.push(format!("install_zygote_filters: {e}"));
            return;
        }
        all_refused_fail(c);
        // The zygote no longer creates or joins pid namespaces: unshare and setns are refused
        // whatever their arguments. unshare(0) and setns(own pidns, CLONE_NEWPID) would succeed
        // without the filter (even unprivileged, for unshare(0)), so EPERM there is the filter's.
        c.eperm("unshare(0)", sysn("unshare", a1(0)));
        c.eperm("unshare(CLONE_NEWPID)", sysn("unshare", a1(CLONE_NEWPID)));
        c.eperm("unshare(CLONE_NEWUSER)", sysn("unshare", a1(CLONE_NEWUSER)));
        c.eperm("unshare(CLONE_NEWNS)", sysn("unshare", a1(CLONE_NEWNS)));
        c.eperm(
            "unshare(CLONE_NEWPID|CLONE_NEWNS)",
            sysn("unshare", a1(CLONE_NEWPID | CLONE_NEWNS)),
        );
        c.eperm(
            "setns(pidns, CLONE_NEWPID)",
            sysn("setns", [pidns_fd, CLONE_NEWPID, 0, 0, 0, 0]),
        );
        c.eperm(
            "setns(pidns, CLONE_NEWNET)",
            sysn("setns", [pidns_fd, CLONE_NEWNET, 0, 0, 0, 0]),
        );
        c.eperm("setns(pidns, 0)", sysn("setns", [pidns_fd, 0, 0, 0, 0, 0]));
        c.expect("clone3", sysn("clone3", [0; 6]), Err(ENOSYS));
        // Still in the parent's pid namespace (no unshare slipped through).
        #[allow(unsafe_code)]
        // SAFETY: the grandchild only calls getpid and _exit.
        match unsafe { libc::fork() } {
            0 => exit_now(if sysn("getpid", [0; 6]) == Ok(1) {
                1
            } else {
                0
            }),
            -1 => {
                c.0.push(format!("fork: {}", std::io::Error::last_os_error()))
            }
            pid => {
                let status = waitpid(nix::unistd::Pid::from_raw(pid), None);
                c.that(
                    "a child of the zygote is not pid 1 of a new pid namespace",
                    matches!(status, Ok(WaitStatus::Exited(_, 0))),
                );
            }
        }
        // The run filter keeps them refused.
        if let Err(e) = install_run_filter() {
            c.0.push(format!("install_run_filter: {e}"));
            return;
        }
        c.eperm("run: unshare(0)", sysn("unshare", a1(0)));
        c.eperm(
            "run: unshare(CLONE_NEWPID)",
            sysn("unshare", a1(CLONE_NEWPID)),
        );
        c.eperm(
            "run: unshare(CLONE_NEWNS)",
            sysn("unshare", a1(CLONE_NEWNS)),
        );
        c.eperm(
            "run: setns(pidns, CLONE_NEWPID)",
            sysn("setns", [pidns_fd, CLONE_NEWPID, 0, 0, 0, 0]),
        );
        c.expect("run: clone3", sysn("clone3", [0; 6]), Err(ENOSYS));
    });
    assert_child_ok(status, &report);
}

/// The rule the clone3 design relies on: for equal-precedence results (ERRNO), the errno of the
/// most recently installed filter wins.
#[test]
fn most_recent_filter_errno_wins() {
    let clone3 = i64::from(nr("clone3"));
    let eperm_clone3: BpfProgram = SeccompFilter::new(
        [(clone3, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(EPERM as u32),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .and_then(BpfProgram::try_from)
    .unwrap();
    let (status, report) = in_child(|c| {
        child_prelude();
        let mut apply = |what: &str, prog: &BpfProgram| {
            c.that(what, seccompiler::apply_filter(prog).is_ok());
        };
        apply("EPERM filter", &eperm_clone3);
        apply("CLONE3_FILTER", &clone3_filter());
        c.expect(
            "EPERM, then ENOSYS filter",
            sys(clone3, [0; 6]),
            Err(ENOSYS),
        );
        c.ok("getpid", sysn("getpid", [0; 6]));
        let mut apply = |what: &str, prog: &BpfProgram| {
            c.that(what, seccompiler::apply_filter(prog).is_ok());
        };
        apply("EPERM filter again", &eperm_clone3);
        c.expect("ENOSYS, then EPERM filter", sys(clone3, [0; 6]), Err(EPERM));
        c.that(
            "CLONE3_FILTER again",
            seccompiler::apply_filter(&clone3_filter()).is_ok(),
        );
        c.expect("..., then ENOSYS filter", sys(clone3, [0; 6]), Err(ENOSYS));
        // The main filters answer ENOSYS themselves, so they keep clone3 at ENOSYS whatever is
        // below them.
        c.that("apply ZYGOTE", seccompiler::apply_filter(&zygote()).is_ok());
        c.that(
            "apply EPERM filter",
            seccompiler::apply_filter(&eperm_clone3).is_ok(),
        );
        c.that("apply RUN", seccompiler::apply_filter(&run()).is_ok());
        c.expect(
            "EPERM filter, then RUN_FILTER",
            sys(clone3, [0; 6]),
            Err(ENOSYS),
        );
    });
    assert_child_ok(status, &report);
}

/// A syscall through the i386 ABI (`int 0x80`) fails the architecture check: SIGSYS.
#[test]
#[cfg(target_arch = "x86_64")]
fn i386_abi_is_killed() {
    #[allow(unsafe_code)]
    fn int80_getpid() -> i64 {
        let ret: i64;
        // SAFETY: i386 getpid (20) takes no arguments and touches no memory; the kernel's int 0x80
        // path may clobber r8-r11, declared as clobbered.
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inlateout("rax") 20i64 => ret,
                lateout("r8") _, lateout("r9") _, lateout("r10") _, lateout("r11") _,
                options(nostack)
            );
        }
        ret
    }
    // Without a filter: works if the kernel has IA32 emulation, -ENOSYS otherwise.
    let (status, report) = in_child(|c| {
        child_prelude();
        let r = int80_getpid();
        if r < 0 {
            exit_now(3); // no IA32 emulation: nothing to test
        }
        c.that("int 0x80 getpid", r == sysn("getpid", [0; 6]).unwrap_or(-1));
    });
    if status == WaitStatus::Exited(status.pid().unwrap(), 3) {
        eprintln!("no IA32 emulation, skipped");
        return;
    }
    assert_child_ok(status, &report);
    let (status, report) = in_child(|c| {
        child_prelude();
        install_all(c);
        if !c.0.is_empty() {
            return;
        }
        int80_getpid();
        c.0.push("int 0x80 returned under the filters".into());
    });
    assert!(
        matches!(
            status,
            WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGSYS, _)
        ),
        "{status:?}\n{report}"
    );
}

/// CPython and its stdlib (and sh, coreutils, gcc) work under the zygote + run filters.
#[test]
fn python_runs_under_the_filters() {
    const PYTHON: &str = "/usr/bin/python3";
    if !std::path::Path::new(PYTHON).exists() {
        eprintln!("{PYTHON} not found, skipped");
        return;
    }
    const SCRIPT: &str = r#"
import asyncio, ctypes, errno, json, mmap, multiprocessing, os, select, shutil, signal, socket
import sqlite3, subprocess, sys, tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor

assert subprocess.run(["/bin/true"]).returncode == 0
out = subprocess.run(["/bin/sh", "-c", "echo hi | cat; ls / >/dev/null"], capture_output=True)
assert out.stdout == b"hi\n", out

seen = []
t = threading.Thread(target=lambda: seen.append(threading.get_native_id()))
t.start(); t.join()
assert seen and seen[0] != threading.get_native_id()
with ThreadPoolExecutor(4) as pool:
    assert sum(pool.map(lambda x: x * x, range(10))) == 285

a, b = socket.socketpair()
a.sendall(b"x"); assert b.recv(1) == b"x"
srv = socket.create_server(("127.0.0.1", 0))
cli = socket.create_connection(srv.getsockname()); conn, _ = srv.accept()
cli.sendall(b"ping"); assert conn.recv(4) == b"ping"
for s in (a, b, srv, cli, conn): s.close()

async def handle(reader, writer):
    writer.write(await reader.readline()); await writer.drain(); writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello\n"); await writer.drain()
    assert await reader.readline() == b"hello\n"
    writer.close(); server.close(); await server.wait_closed()
    assert await asyncio.get_running_loop().run_in_executor(None, lambda: 42) == 42
    p = await asyncio.create_subprocess_exec("/bin/echo", "x", stdout=asyncio.subprocess.PIPE)
    assert (await p.communicate())[0] == b"x\n"
    await asyncio.sleep(0.001)
asyncio.run(main())

with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "f")
    with open(path, "wb") as f:
        f.write(b"a" * 10000)
    shutil.copy(path, path + "2"); shutil.copytree(d, d + "-copy"); shutil.rmtree(d + "-copy")
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), 0); m[0:1] = b"b"; m.flush(); m.close()
    anon = mmap.mmap(-1, 1 << 20); anon[:3] = b"abc"; anon.close()
    db = sqlite3.connect(os.path.join(d, "db"))
    db.execute("create table t(x)"); db.execute("insert into t values (1)"); db.commit()
    assert db.execute("select sum(x) from t").fetchone() == (1,)
    db.close()
    if shutil.which("gcc"):
        exe = os.path.join(d, "a.out")
        r = subprocess.run(["gcc", "-x", "c", "-o", exe, "-"], input=b"int main(void){return 3;}",
                           capture_output=True)
        assert r.returncode == 0, r.stderr
        assert subprocess.run([exe]).returncode == 3

libc = ctypes.CDLL(None, use_errno=True)
assert libc.getpid() == os.getpid()
cb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
assert cb(41) == 42

ctx = multiprocessing.get_context("fork")
q = ctx.Queue()
p = ctx.Process(target=q.put, args=(7,)); p.start()
assert q.get(timeout=10) == 7
p.join(); assert p.exitcode == 0

ep = select.epoll(); ep.close()
assert os.cpu_count() >= 1
json.dumps({"ok": True})

# What the filters refuse surfaces as EPERM (PermissionError).
assert libc.unshare(0x10000000) == -1 and ctypes.get_errno() == errno.EPERM
assert libc.mount(b"none", b"/mnt", b"tmpfs", 0, None) == -1 and ctypes.get_errno() == errno.EPERM
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    raise AssertionError("netlink socket allowed")
except PermissionError:
    pass
print("python ok")
"#;
    let zygote = zygote();
    let run = run();
    let clone3 = clone3_filter();
    let mut cmd = Command::new(PYTHON);
    cmd.args(["-I", "-c", SCRIPT])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin");
    // SAFETY: the hook runs in the forked child before exec; it only makes the prctl/seccomp
    // syscalls (the programs were decoded beforehand, so nothing is allocated on success).
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            for prog in [&zygote, &clone3, &run] {
                seccompiler::apply_filter(prog).map_err(std::io::Error::other)?;
            }
            Ok(())
        });
    }
    let start = std::time::Instant::now();
    let out = cmd.output().expect("spawn python");
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("python ok"),
        "status {:?} (signal {:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status,
        out.status.signal()
    );
    eprintln!("python under the filters: {elapsed:?}");
}
