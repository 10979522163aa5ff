//! Hostile code against what sandboxes share with each other and with the host: per-user
//! kernel budgets (inotify, pending signals, POSIX message queue bytes, AIO), socket protocols
//! and options that reach rarely used kernel code, and the filesystem view of `/usr` and
//! `/proc`. Every test runs attack code in real sandboxes of the real binary.
//!
//! Attack scripts print one JSON line as their last line of output; the Rust side asserts on it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Value, json};

// x86_64 errno values.
const EPERM: i64 = 1;
const EAGAIN: i64 = 11;
const EACCES: i64 = 13;
const EMFILE: i64 = 24;
const ENOSYS: i64 = 38;

/// Helpers every attack script starts with.
const PRELUDE: &str = r#"
import ctypes, errno, json, os, signal, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)

def attempt(fn):
    try:
        value = fn()
        if not isinstance(value, (int, str, bool, list, type(None))):
            value = repr(value)
        return {"ok": True, "value": value}
    except OSError as e:
        return {"ok": False, "errno": e.errno}

def check(ret):
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret

def emit(obj):
    sys.stdout.write("\n" + json.dumps(obj) + "\n")
    sys.stdout.flush()

class MqAttr(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long),
                ("msgsize", ctypes.c_long), ("curmsgs", ctypes.c_long), ("pad", ctypes.c_long * 4)]

def mq_open(name):
    libc.mq_open.restype = ctypes.c_int
    attr = MqAttr(0, 10, 8192, 0)
    return check(libc.mq_open(name.encode(), os.O_CREAT | os.O_RDWR, 0o600, ctypes.byref(attr)))

def inotify():
    return check(libc.inotify_init1(os.O_CLOEXEC))

def sigqueue():
    # union sigval is passed in a register on x86_64 / aarch64: an 8-byte integer does.
    return check(libc.sigqueue(os.getpid(), signal.SIGRTMIN, ctypes.c_void_p(0)))

signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
"#;

/// Exhausts inotify instances, pending signals and message queue bytes as far as the sandbox
/// lets it, reports how far it got and why it stopped, then holds all of it.
const EXHAUST: &str = r#"
def exhaust(make, cap):
    n = 0
    while n < cap:
        try:
            make(n)
        except OSError as e:
            return {"count": n, "errno": e.errno}
        n += 1
    return {"count": n, "errno": None}

held = []
report = {
    "inotify": exhaust(lambda n: held.append(inotify()), 100000),
    "signals": exhaust(lambda n: sigqueue(), 1000000),
    "mqueues": exhaust(lambda n: held.append(mq_open(f"/q{n}")), 100000),
}
emit(report)
time.sleep(600)
"#;

/// What a fresh sandbox can still do: a few of each.
const STILL_WORKS: &str = r#"
emit({
    "inotify": [attempt(inotify) for _ in range(8)][-1],
    "signals": [attempt(sigqueue) for _ in range(64)][-1],
    "mqueue": attempt(lambda: mq_open("/fresh")),
})
"#;

fn script(body: &str) -> String {
    format!("{PRELUDE}\n{body}")
}

fn last_json(output: &str) -> Value {
    let last = output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {output}"))
}

/// Runs an attack script (60 s timeout), asserts it exited 0 and returns its JSON line.
async fn probe(s: &Server, id: &str, body: &str) -> Value {
    let v = s
        .run_with(id, json!({"code": script(body), "timeout": 60}))
        .await;
    assert_eq!(v["exit_code"], 0, "attack script failed: {v:#}");
    last_json(v["output"].as_str().unwrap_or_default())
}

#[track_caller]
fn assert_refused(results: &Value, key: &str, allowed: &[i64]) {
    let r = &results[key];
    assert!(
        r["ok"] == false && allowed.contains(&r["errno"].as_i64().unwrap_or(-1)),
        "{key}: expected errno in {allowed:?}, got {r} (all: {results})"
    );
}

#[track_caller]
fn assert_ok(results: &Value, key: &str) {
    assert_eq!(results[key]["ok"], true, "{key} failed: {results}");
}

// ------------------------------------------------------------------------ per-user budgets

/// One sandbox takes all the inotify instances, pending signals and message queue bytes it can
/// and holds them; another sandbox of the same server still gets its own.
#[tokio::test]
async fn one_sandbox_exhausting_kernel_budgets_leaves_another_working() {
    let s = Server::start();
    let hog = s.sandbox().await;
    let other = s.sandbox().await;

    let (status, v) = s
        .post(
            &format!("/sandbox/{hog}/run"),
            json!({"code": script(EXHAUST), "background": true}),
        )
        .await;
    assert_eq!(status, 200, "background start failed: {v}");
    let pid = v["pid"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let (status, p) = s.get(&format!("/sandbox/{hog}/processes/{pid}")).await;
        assert_eq!(status, 200, "{p}");
        let out = p["output"].as_str().unwrap_or_default();
        if out.trim_end().ends_with('}') {
            break last_json(out);
        }
        assert_eq!(p["status"], "running", "the hog ended early: {p}");
        assert!(Instant::now() < deadline, "the hog never reported: {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("the hog got: {report}");

    let still = probe(&s, &other, STILL_WORKS).await;
    // Kill the hog before asserting, so a failure does not hold the host's budgets.
    let _ = s.delete(&format!("/sandbox/{hog}/processes/{pid}")).await;
    let _ = s.delete(&format!("/sandbox/{hog}")).await;
    assert_ok(&still, "inotify");
    assert_ok(&still, "signals");
    // POSIX message queues: the root of a sandbox's mqueue filesystem belongs to host root,
    // unmapped in the sandbox, so creating a queue fails with EACCES in every sandbox (and
    // the hog's budget is not taken either). Whatever it is, the hog must not change it.
    let hog_mq = &report["mqueues"];
    if hog_mq["errno"] == EACCES && hog_mq["count"] == 0 {
        assert_eq!(still["mqueue"]["errno"], EACCES, "{still}");
    } else {
        assert_ok(&still, "mqueue");
        assert!(hog_mq["count"].as_u64().unwrap() <= 4, "{report}");
    }

    // The hog stopped at its own, small budget.
    let inotify = &report["inotify"];
    assert_eq!(inotify["errno"], EMFILE, "{report}");
    assert!(inotify["count"].as_u64().unwrap() <= 64, "{report}");
    let signals = &report["signals"];
    assert_eq!(signals["errno"], EAGAIN, "{report}");
    assert!(signals["count"].as_u64().unwrap() <= 1024, "{report}");
}

/// Every rlimit of user code is set explicitly (soft = hard, so code cannot raise it), the
/// user-namespace limits inside the sandbox are small or zero, and `io_setup` (host-wide
/// `aio-nr`) is refused.
#[tokio::test]
async fn sandbox_limits_are_explicit_and_small() {
    let s = Server::start();
    let id = s.sandbox().await;
    let v = probe(
        &s,
        &id,
        r#"
import resource
limits = {}
for name in ["RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_MEMLOCK", "RLIMIT_RTPRIO",
             "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CORE", "RLIMIT_FSIZE"]:
    limits[name] = list(resource.getrlimit(getattr(resource, name)))
user = {}
for f in sorted(os.listdir("/proc/sys/user")):
    user[f] = int(open(f"/proc/sys/user/{f}").read())
ctx = ctypes.c_ulong(0)
emit({
    "limits": limits,
    "user": user,
    "raise": attempt(lambda: check(libc.setrlimit(11, ctypes.byref((ctypes.c_ulong * 2)(1 << 20, 1 << 20))))),
    "write_user": attempt(lambda: open("/proc/sys/user/max_inotify_instances", "w").write("9999")),
    "io_setup": attempt(lambda: check(libc.syscall(ctypes.c_long(206), ctypes.c_long(128), ctypes.byref(ctx)))),
})
"#,
    )
    .await;
    let limits = &v["limits"];
    for (name, max) in [
        ("RLIMIT_SIGPENDING", 1024),
        ("RLIMIT_MSGQUEUE", 256 << 10),
        ("RLIMIT_MEMLOCK", 8 << 20),
        ("RLIMIT_RTPRIO", 0),
        ("RLIMIT_NICE", 0),
        ("RLIMIT_CORE", 0),
    ] {
        let l = &limits[name];
        assert_eq!(l[0], l[1], "{name} soft != hard: {v}");
        assert!(l[0].as_i64().unwrap() >= 0, "{name} is unlimited: {v}");
        assert!(l[0].as_i64().unwrap() <= max, "{name} above {max}: {v}");
    }
    let user = &v["user"];
    for ns in ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"] {
        assert_eq!(user[format!("max_{ns}_namespaces")], 0, "{ns}: {v}");
    }
    assert!(user["max_inotify_instances"].as_i64().unwrap() <= 64, "{v}");
    assert!(
        user["max_inotify_watches"].as_i64().unwrap() <= 16384,
        "{v}"
    );
    assert!(user["max_fanotify_groups"].as_i64().unwrap() == 0, "{v}");
    assert_refused(&v, "raise", &[EPERM]);
    assert_refused(&v, "write_user", &[EACCES, EPERM]);
    assert_refused(&v, "io_setup", &[ENOSYS, EPERM]);
}

// ---------------------------------------------------------------- socket families/options

/// Only TCP, UDP (and ICMP datagram) sockets of the IP families can be created; exotic
/// protocols fail in seccomp before any kernel code (or module autoload) is reached.
#[tokio::test]
async fn only_tcp_and_udp_sockets_can_be_created() {
    let s = Server::start();
    let id = s.sandbox().await;
    let v = probe(
        &s,
        &id,
        r#"
AF_SMC = 43
def sock(family, kind, proto):
    return lambda: socket.socket(family, kind, proto).close()
refused = {
    "sctp4_stream": sock(socket.AF_INET, socket.SOCK_STREAM, 132),
    "sctp4_seqpacket": sock(socket.AF_INET, socket.SOCK_SEQPACKET, 132),
    "sctp6_stream": sock(socket.AF_INET6, socket.SOCK_STREAM, 132),
    "mptcp4": sock(socket.AF_INET, socket.SOCK_STREAM, 262),
    "mptcp6": sock(socket.AF_INET6, socket.SOCK_STREAM, 262),
    "smc_family": sock(AF_SMC, socket.SOCK_STREAM, 0),
    "smc_inet": sock(socket.AF_INET, socket.SOCK_STREAM, 256),
    "l2tp_ip": sock(socket.AF_INET, socket.SOCK_DGRAM, 115),
    "l2tp_ip6": sock(socket.AF_INET6, socket.SOCK_DGRAM, 115),
    "udplite4": sock(socket.AF_INET, socket.SOCK_DGRAM, 136),
    "udplite6": sock(socket.AF_INET6, socket.SOCK_DGRAM, 136),
    "tcp_proto_high_bits": sock(socket.AF_INET, socket.SOCK_STREAM, 6 | (1 << 16)),
}
out = {k: attempt(f) for k, f in refused.items()}
# What still works: plain TCP and UDP, by protocol 0 and by number.
for name, family, kind, proto in [("tcp4", 2, 1, 0), ("tcp4n", 2, 1, 6), ("tcp6", 10, 1, 0),
                                  ("tcp6n", 10, 1, 6), ("udp4", 2, 2, 0), ("udp4n", 2, 2, 17),
                                  ("udp6", 10, 2, 0), ("udp6n", 10, 2, 17), ("unix", 1, 1, 0)]:
    out[name] = attempt(sock(family, kind | socket.SOCK_CLOEXEC, proto))
def tcp_roundtrip():
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
    c = socket.create_connection(srv.getsockname()); a, _ = srv.accept()
    c.sendall(b"ping"); return a.recv(4).decode()
def udp_roundtrip():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP); a.bind(("127.0.0.1", 0))
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.sendto(b"pong", a.getsockname())
    return a.recv(4).decode()
out["tcp_roundtrip"] = attempt(tcp_roundtrip)
out["udp_roundtrip"] = attempt(udp_roundtrip)
emit(out)
"#,
    )
    .await;
    for key in [
        "sctp4_stream",
        "sctp4_seqpacket",
        "sctp6_stream",
        "mptcp4",
        "mptcp6",
        "smc_family",
        "smc_inet",
        "l2tp_ip",
        "l2tp_ip6",
        "udplite4",
        "udplite6",
        "tcp_proto_high_bits",
    ] {
        assert_refused(&v, key, &[EPERM, EACCES]);
    }
    for key in [
        "tcp4", "tcp4n", "tcp6", "tcp6n", "udp4", "udp4n", "udp6", "udp6n", "unix",
    ] {
        assert_ok(&v, key);
    }
    assert_eq!(v["tcp_roundtrip"]["value"], "ping", "{v}");
    assert_eq!(v["udp_roundtrip"]["value"], "pong", "{v}");
}

/// Socket options that attach BPF programs or kernel TLS/ULP code are refused; ordinary
/// options still work.
#[tokio::test]
async fn bpf_and_ulp_socket_options_are_refused() {
    let s = Server::start();
    let id = s.sandbox().await;
    let v = probe(
        &s,
        &id,
        r#"
class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]
class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]
accept_all = (SockFilter * 1)(SockFilter(0x06, 0, 0, 0xffff))  # BPF_RET|BPF_K 0xffff
prog = SockFprog(1, accept_all)
def raw_setsockopt(s, level, opt, buf, size):
    # The raw syscall (54 on x86_64), so that the level's high half reaches the kernel.
    args = [ctypes.c_long(v) for v in (54, s.fileno(), level, opt)]
    return lambda: check(libc.syscall(*args, buf, ctypes.c_long(size)))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t = socket.socket()
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
t.connect(srv.getsockname())
fd = ctypes.c_int(-1)
out = {
    "attach_filter": attempt(raw_setsockopt(u, 1, 26, ctypes.byref(prog), ctypes.sizeof(prog))),
    "attach_filter_high_bits": attempt(raw_setsockopt(u, 1 | (1 << 32), 26, ctypes.byref(prog), ctypes.sizeof(prog))),
    "attach_bpf": attempt(raw_setsockopt(u, 1, 50, ctypes.byref(fd), 4)),
    "attach_reuseport_cbpf": attempt(raw_setsockopt(u, 1, 51, ctypes.byref(prog), ctypes.sizeof(prog))),
    "attach_reuseport_ebpf": attempt(raw_setsockopt(u, 1, 52, ctypes.byref(fd), 4)),
    "tcp_ulp": attempt(lambda: t.setsockopt(socket.IPPROTO_TCP, 31, b"tls")),
    "reuseaddr": attempt(lambda: u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)),
    "keepalive": attempt(lambda: t.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)),
    "nodelay": attempt(lambda: t.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)),
    "v6only": attempt(lambda: socket.socket(socket.AF_INET6).setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)),
    "ip_tos": attempt(lambda: u.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x10)),
    "rcvbuf": attempt(lambda: u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)),
}
emit(out)
"#,
    )
    .await;
    for key in [
        "attach_filter",
        "attach_filter_high_bits",
        "attach_bpf",
        "attach_reuseport_cbpf",
        "attach_reuseport_ebpf",
        "tcp_ulp",
    ] {
        assert_refused(&v, key, &[EPERM]);
    }
    for key in [
        "reuseaddr",
        "keepalive",
        "nodelay",
        "v6only",
        "ip_tos",
        "rcvbuf",
    ] {
        assert_ok(&v, key);
    }
}

// ------------------------------------------------------------------------- /usr and /proc

/// A rootfs whose `/usr` carries a writable, suid-and-device-capable submount (a tmpfs on
/// `usr/src`), built in a private bind so nothing propagates to the host; unmounted on drop.
struct RootfsWithSubmount {
    dir: PathBuf,
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd} failed");
}

impl RootfsWithSubmount {
    fn new() -> RootfsWithSubmount {
        let dir = std::env::temp_dir().join(format!("cerver-rootfs-{}", common::rand_suffix()));
        std::fs::create_dir_all(dir.join("usr")).unwrap();
        let d = dir.display().to_string();
        sh(&format!("mount --bind {d} {d} && mount --make-private {d}"));
        let rootfs = RootfsWithSubmount { dir };
        sh(&format!(
            "mount --rbind /usr {d}/usr && mount --make-rprivate {d}/usr && \
             mount -t tmpfs -o size=1m,mode=0755 cerver-test-submount {d}/usr/src"
        ));
        for link in ["bin", "sbin", "lib", "lib64"] {
            if Path::new("/usr").join(link).exists() {
                std::os::unix::fs::symlink(format!("usr/{link}"), rootfs.dir.join(link)).unwrap();
            }
        }
        rootfs
    }
}

impl Drop for RootfsWithSubmount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-R")
            .arg("-l")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every mount under `/usr` in a sandbox is read-only, nosuid and nodev, submounts included.
#[tokio::test]
async fn every_usr_submount_is_read_only_nosuid_nodev() {
    let rootfs = RootfsWithSubmount::new();
    let s = Server::start_with(&["--rootfs", rootfs.dir.to_str().unwrap()]);
    let id = s.sandbox().await;
    let v = probe(
        &s,
        &id,
        r#"
mounts = []
for line in open("/proc/self/mountinfo"):
    f = line.split()
    if f[4] == "/usr" or f[4].startswith("/usr/"):
        mounts.append({"at": f[4], "opts": f[5].split(",")})
emit({"mounts": mounts, "write": attempt(lambda: open("/usr/src/x", "w").write("x"))})
"#,
    )
    .await;
    let mounts = v["mounts"].as_array().unwrap();
    assert!(
        mounts.iter().any(|m| m["at"] == "/usr/src"),
        "the submount is not visible: {v}"
    );
    for m in mounts {
        let opts: Vec<&str> = m["opts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap())
            .collect();
        for want in ["ro", "nosuid", "nodev"] {
            assert!(opts.contains(&want), "{} lacks {want}: {v}", m["at"]);
        }
    }
    assert_refused(&v, "write", &[30 /* EROFS */, EACCES]);
    drop(s);
    drop(rootfs);
}

/// Host-wide `/proc` files that describe other users' keys or the host's timers read empty,
/// because something is mounted over them (this kernel already filters `key-users` and `keys`
/// by user namespace, and `timer_list` is root-only: the masks are the second fence).
#[tokio::test]
async fn host_revealing_proc_files_are_masked() {
    let s = Server::start();
    let id = s.sandbox().await;
    let v = probe(
        &s,
        &id,
        r#"
out = {}
for f in ["key-users", "keys", "timer_list"]:
    out[f] = attempt(lambda: open(f"/proc/{f}").read())
out["mounts"] = [l.split()[4] for l in open("/proc/self/mountinfo")]
out["cpuinfo"] = attempt(lambda: len(open("/proc/cpuinfo").read()) > 0)
out["self_status"] = attempt(lambda: "Uid:" in open("/proc/self/status").read())
emit(out)
"#,
    )
    .await;
    for f in ["key-users", "keys", "timer_list"] {
        if Path::new("/proc").join(f).exists() {
            let r = &v[f];
            assert!(
                r["ok"] == false || r["value"] == "",
                "/proc/{f} shows host data: {v}"
            );
            // Masked, not merely filtered by this kernel for the sandbox's user namespace.
            let masked = v["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m == &json!(format!("/proc/{f}")));
            assert!(masked, "/proc/{f} is not masked: {v}");
        }
    }
    assert_eq!(v["cpuinfo"]["value"], true, "{v}");
    assert_eq!(v["self_status"]["value"], true, "{v}");
}
