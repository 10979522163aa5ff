//! Hostile code: every test runs attack code inside real sandboxes of the real binary and
//! asserts the specific way the attack fails (errno, exception type or outcome).
//!
//! The attack code is Python that prints one JSON line as its last line of output; the Rust
//! side decodes it and asserts. Tests that find something not blocked stay asserting the secure
//! behaviour and are marked `#[ignore = "BUG: ..."]`.

mod common;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Value, json};

// x86_64 errno values.
const EPERM: i64 = 1;
const ENOENT: i64 = 2;
const ESRCH: i64 = 3;
const EAGAIN: i64 = 11;
const EACCES: i64 = 13;
const EMFILE: i64 = 24;
const ENOSPC: i64 = 28;
const EROFS: i64 = 30;
const ENOSYS: i64 = 38;
const ENETUNREACH: i64 = 101;
const ECONNREFUSED: i64 = 111;

/// First host uid of the sandbox uid ranges (RuntimeConfig::uid_base).
const UID_BASE: u64 = 1 << 20;
/// Ids mapped per sandbox.
const MAPPED_IDS: u64 = 65536;
/// The unprivileged user code runs as, inside the sandbox.
const SANDBOX_UID: u64 = 1000;

/// Helpers every attack script starts with.
const PRELUDE: &str = r#"
import ctypes, errno, json, os, signal, socket, subprocess, sys, time

def attempt(fn):
    try:
        value = fn()
        if not isinstance(value, (int, str, bool, list, type(None))):
            value = repr(value)
        return {"ok": True, "value": value}
    except OSError as e:
        return {"ok": False, "errno": e.errno, "type": type(e).__name__}

def read(path):
    with open(path, "rb") as f:
        return f.read(65536).decode("latin-1")

def write(path, data="x"):
    with open(path, "w") as f:
        f.write(data)
    return "written"

def emit(obj):
    sys.stdout.write("\n" + json.dumps(obj) + "\n")
    sys.stdout.flush()
"#;

// ------------------------------------------------------------------------------------ helpers

/// A random hex token (from the kernel's CSPRNG).
fn token() -> String {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn script(body: &str) -> String {
    format!("{PRELUDE}\n{body}")
}

/// Runs an attack script (60 s timeout) and returns the JSON of its last output line,
/// asserting that it exited with 0.
async fn probe(s: &Server, id: &str, body: &str) -> Value {
    let v = s
        .run_with(id, json!({"code": script(body), "timeout": 60}))
        .await;
    assert_eq!(v["exit_code"], 0, "attack script failed: {v:#}");
    last_json(&v)
}

fn last_json(v: &Value) -> Value {
    let out = v["output"].as_str().unwrap_or_default();
    let last = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last output line is not JSON ({e}): {v:#}"))
}

/// The errno of an `attempt()` result, or None when the attempt succeeded.
fn errno_of(v: &Value) -> Option<i64> {
    if v["ok"] == true {
        None
    } else {
        v["errno"].as_i64()
    }
}

#[track_caller]
fn assert_errno(results: &Value, key: &str, allowed: &[i64]) {
    let r = &results[key];
    assert!(r.is_object(), "no result for {key}: {results:#}");
    match errno_of(r) {
        Some(e) if allowed.contains(&e) => {}
        _ => panic!("{key}: expected errno in {allowed:?}, got {r}"),
    }
}

/// `GET /health` answers quickly and another sandbox still runs code.
async fn assert_responsive(s: &Server, other: &str, during: &str) {
    let t = Instant::now();
    let (status, _) = tokio::time::timeout(Duration::from_secs(3), s.get("/health"))
        .await
        .unwrap_or_else(|_| panic!("/health did not answer within 3 s during {during}"));
    assert_eq!(status, 200, "/health during {during}");
    let health = t.elapsed();
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(8), s.run(other, "print(6 * 7)"))
        .await
        .unwrap_or_else(|_| {
            panic!("a run in another sandbox did not answer within 8 s during {during}")
        });
    assert_eq!(
        r["output"], "42",
        "run in another sandbox during {during}: {r}"
    );
    eprintln!(
        "during {during}: /health {health:?}, run in another sandbox {:?}",
        t.elapsed()
    );
}

/// The next run in the sandbox works normally.
async fn assert_sandbox_works(s: &Server, id: &str, after: &str) {
    let r = s.run(id, "import os\nprint('alive', os.getuid())").await;
    assert_eq!(r["exit_code"], 0, "the run after {after} failed: {r}");
    assert_eq!(r["output"], "alive 1000", "the run after {after}: {r}");
}

/// Percent-encodes a query parameter value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Host processes whose real, effective, saved or fs uid lies in `[lo, hi)`: (pid, name, uids).
fn host_processes_with_uid(lo: u64, hi: u64) -> Vec<(u32, String, String)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let uids = field("Uid:");
        if field("State:").starts_with('Z') {
            continue; // already dead, only waiting to be reaped
        }
        if uids
            .split_whitespace()
            .filter_map(|u| u.parse::<u64>().ok())
            .any(|u| u >= lo && u < hi)
        {
            found.push((pid, field("Name:"), uids));
        }
    }
    found
}

/// This host's own non-loopback addresses (IPv4 from fib_trie, global IPv6 from if_inet6).
/// Host processes whose uid is in `lo..hi` and that `keep` selects, polled until there are
/// none or `within` has passed.
async fn host_processes_left(
    lo: u64,
    hi: u64,
    within: Duration,
    keep: impl Fn(&(u32, String, String)) -> bool,
) -> Vec<(u32, String, String)> {
    let deadline = Instant::now() + within;
    loop {
        let mut left = host_processes_with_uid(lo, hi);
        left.retain(|p| keep(p));
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn host_addresses() -> Vec<IpAddr> {
    let mut out = BTreeSet::new();
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let mut last: Option<Ipv4Addr> = None;
        for line in trie.lines() {
            let t = line.trim();
            if let Some(a) = t.strip_prefix("|-- ") {
                last = a.parse().ok();
            } else if t == "/32 host LOCAL" {
                out.extend(last.filter(|a| !a.is_loopback()).map(IpAddr::V4));
            }
        }
    }
    if let Ok(v6) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in v6.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Global scope only: link-local addresses would need an interface.
            let global = f.len() == 6 && f[3] == "00" && f[5] != "lo";
            let addr = global
                .then(|| u128::from_str_radix(f[0], 16).ok())
                .flatten();
            out.extend(addr.map(|n| IpAddr::V6(Ipv6Addr::from(n))));
        }
    }
    out.into_iter().collect()
}

/// TCP and UDP listeners on the host that record every connection or datagram they get.
struct Decoy {
    tcp: Vec<SocketAddr>,
    udp: Vec<SocketAddr>,
    /// Unix socket listeners: a path, or `@name` in the abstract namespace.
    unix: Vec<String>,
    hits: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Decoy {
    fn start(ips: &[IpAddr]) -> Decoy {
        let mut d = Decoy {
            tcp: Vec::new(),
            udp: Vec::new(),
            unix: Vec::new(),
            hits: Arc::default(),
            stop: Arc::default(),
            threads: Vec::new(),
        };
        for &ip in ips {
            let Ok(l) = TcpListener::bind((ip, 0)) else {
                continue;
            };
            l.set_nonblocking(true).unwrap();
            let addr = l.local_addr().unwrap();
            d.tcp.push(addr);
            let (hits, stop) = (d.hits.clone(), d.stop.clone());
            d.threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match l.accept() {
                        Ok((_, peer)) => hits.lock().unwrap().push(format!("tcp {addr} <- {peer}")),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10))
                        }
                        Err(e) => hits
                            .lock()
                            .unwrap()
                            .push(format!("tcp {addr} accept error {e}")),
                    }
                }
            }));
            let Ok(u) = UdpSocket::bind((ip, 0)) else {
                continue;
            };
            u.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let addr = u.local_addr().unwrap();
            d.udp.push(addr);
            let (hits, stop) = (d.hits.clone(), d.stop.clone());
            d.threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((n, peer)) = u.recv_from(&mut buf) {
                        hits.lock()
                            .unwrap()
                            .push(format!("udp {addr} <- {peer} ({n} bytes)"));
                    }
                }
            }));
        }
        let name = format!("cerver-decoy-{}", token());
        let abstract_addr = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
        let path = format!("/tmp/{name}.sock");
        for (label, listener) in [
            (format!("@{name}"), UnixListener::bind_addr(&abstract_addr)),
            (path.clone(), UnixListener::bind(&path)),
        ] {
            let l = listener.unwrap();
            l.set_nonblocking(true).unwrap();
            d.unix.push(label.clone());
            let (hits, stop) = (d.hits.clone(), d.stop.clone());
            d.threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match l.accept() {
                        Ok(_) => hits.lock().unwrap().push(format!("unix {label}")),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
                if !label.starts_with('@') {
                    let _ = std::fs::remove_file(&label);
                }
            }));
        }
        d
    }

    /// Stops the listeners and returns what they recorded.
    fn finish(mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(200)); // let any late connection land
        self.stop.store(true, Ordering::SeqCst);
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for Decoy {
    fn drop(&mut self) {
        // Also on a failed assertion: the threads stop and remove the unix socket file.
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A host file planted for a test, removed when the test ends (even by a panic).
struct Planted(std::path::PathBuf);

impl Planted {
    fn new(path: std::path::PathBuf, content: &str) -> Planted {
        std::fs::write(&path, content).unwrap();
        Planted(path)
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn py_str_list<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> String {
    Value::Array(
        items
            .into_iter()
            .map(|s| Value::String(s.as_ref().to_string()))
            .collect(),
    )
    .to_string()
}

// -------------------------------------------------------------------- 1. host secrets, decoys

#[tokio::test]
async fn host_files_and_host_listeners_are_out_of_reach() {
    let s = Server::start();
    let secret = format!("CERVER-SECRET-{}", token());
    let planted = Planted::new(format!("/tmp/cerver-flag-{}", token()).into(), &secret);
    let flag_tmp = planted.0.clone();
    let flag_data = s.data_dir.join(format!("flag-{}", token()));
    std::fs::write(&flag_data, &secret).unwrap();
    let data_dir = s.data_dir.to_string_lossy().into_owned();
    let data_dir_name = s
        .data_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    let mut ips: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    let host_ips = host_addresses();
    ips.extend(host_ips.iter().copied());
    let decoy = Decoy::start(&ips);
    assert!(!decoy.tcp.is_empty(), "no decoy listener could bind");
    let mut targets: Vec<Value> = decoy
        .tcp
        .iter()
        .map(|a| json!([a.ip().to_string(), a.port()]))
        .collect();
    // The API server itself listens on the host's loopback.
    let server_addr: SocketAddr = s.base.trim_start_matches("http://").parse().unwrap();
    targets.push(json!([server_addr.ip().to_string(), server_addr.port()]));
    let udp_targets: Vec<Value> = decoy
        .udp
        .iter()
        .filter(|a| !a.ip().is_loopback())
        .map(|a| json!([a.ip().to_string(), a.port()]))
        .collect();

    let id = s.sandbox().await;
    let body = r#"
FLAGS = __FLAGS__
DATA_DIR = __DATA_DIR__
TARGETS = __TARGETS__
UDP_TARGETS = __UDP__
UNIX = __UNIX__
res = {"read": {}, "connect": {}, "udp": {}, "list": {}, "unix": {}, "env": dict(os.environ)}
for name in UNIX:
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    addr = "\0" + name[1:] if name.startswith("@") else name
    res["unix"][name] = attempt(lambda: u.connect(addr) or "connected")
    u.close()
for p in FLAGS + ["/etc/shadow", "/etc/gshadow", "/proc/1/environ", "/root/.bashrc", "/work/main/Cargo.toml",
                  DATA_DIR + "/server.lock", "/run/cerver/uid-ranges/0", "/var/log/syslog"]:
    res["read"][p] = attempt(lambda: read(p))
for p in ["/", "/home", "/tmp", "/root", "/work", DATA_DIR, "/run", "/var", "/sys", "/mnt", "/opt", "/opt/venv",
          "/opt/cerver", "/srv", "/boot"]:
    res["list"][p] = attempt(lambda: sorted(os.listdir(p)))
for host, port in TARGETS:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(5)
    res["connect"][f"{host}:{port}"] = attempt(lambda: s.connect((host, port)) or "connected")
    s.close()
for host, port in UDP_TARGETS:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM)
    res["udp"][f"{host}:{port}"] = attempt(lambda: u.sendto(b"knock", (host, port)))
    u.close()
emit(res)
"#
    .replace("__FLAGS__", &py_str_list([flag_tmp.to_string_lossy(), flag_data.to_string_lossy()]))
    .replace("__DATA_DIR__", &Value::String(data_dir.clone()).to_string())
    .replace("__TARGETS__", &Value::Array(targets).to_string())
    .replace("__UDP__", &Value::Array(udp_targets).to_string())
    .replace("__UNIX__", &py_str_list(&decoy.unix));
    let raw = s
        .run_with(&id, json!({"code": script(&body), "timeout": 60}))
        .await;
    assert!(
        !raw.to_string().contains(&secret),
        "the flag leaked into a run: {raw:#}"
    );
    assert_eq!(raw["exit_code"], 0, "{raw:#}");
    let res = last_json(&raw);

    // The flags and host-only paths do not exist in the sandbox at all.
    for p in [
        flag_tmp.to_string_lossy().into_owned(),
        flag_data.to_string_lossy().into_owned(),
    ] {
        assert_errno(&res["read"], &p, &[ENOENT]);
    }
    for p in [
        "/etc/shadow",
        "/etc/gshadow",
        "/root/.bashrc",
        "/work/main/Cargo.toml",
        "/run/cerver/uid-ranges/0",
        "/var/log/syslog",
    ] {
        assert_errno(&res["read"], p, &[ENOENT]);
    }
    assert_errno(&res["read"], &format!("{data_dir}/server.lock"), &[ENOENT]);
    // /proc/1 is the sandbox's own init (not the host's), and its environment is not readable.
    assert_errno(&res["read"], "/proc/1/environ", &[EACCES]);
    for p in [
        "/root",
        "/work",
        data_dir.as_str(),
        "/run",
        "/var",
        "/sys",
        "/mnt",
        "/srv",
        "/boot",
    ] {
        assert_errno(&res["list"], p, &[ENOENT]);
    }
    // A workers sandbox's /opt holds only the empty mount points of the containers engine.
    assert_eq!(res["list"]["/opt"]["value"], json!(["cerver", "venv"]));
    assert_eq!(res["list"]["/opt/venv"]["value"], json!([]));
    assert_eq!(res["list"]["/opt/cerver"]["value"], json!([]));
    let root: Vec<String> = serde_json::from_value(res["list"]["/"]["value"].clone()).unwrap();
    for name in ["work", "root", "run", "var", "sys", data_dir_name.as_str()] {
        assert!(
            !root.contains(&name.to_string()),
            "/ of the sandbox shows {name}: {root:?}"
        );
    }
    assert_eq!(res["list"]["/home"]["value"], json!(["user"]));
    let tmp = res["list"]["/tmp"]["value"].to_string();
    assert!(
        !tmp.contains("cerver-flag") && !tmp.contains("cerver-test"),
        "the sandbox's /tmp shows host files: {tmp}"
    );

    // Host listeners: refused on the sandbox's own loopback, unreachable elsewhere.
    for a in &decoy.tcp {
        let key = format!("{}:{}", a.ip(), a.port());
        let expected = if a.ip().is_loopback() {
            ECONNREFUSED
        } else {
            ENETUNREACH
        };
        assert_errno(&res["connect"], &key, &[expected]);
    }
    let key = format!("{}:{}", server_addr.ip(), server_addr.port());
    assert_errno(&res["connect"], &key, &[ECONNREFUSED]);
    for (k, v) in res["udp"].as_object().unwrap() {
        assert_eq!(errno_of(v), Some(ENETUNREACH), "udp to {k}: {v}");
    }
    // Host unix sockets: abstract ones live in the host's network namespace, paths in its mounts.
    for name in &decoy.unix {
        let expected = if name.starts_with('@') {
            ECONNREFUSED
        } else {
            ENOENT
        };
        assert_errno(&res["unix"], name, &[expected]);
    }
    // The run's environment is the documented one, nothing of the server's.
    let env = res["env"].as_object().unwrap();
    let keys: BTreeSet<&str> = env.keys().map(|k| k.as_str()).collect();
    let allowed: BTreeSet<&str> = [
        "CERVER_ENGINE",
        "CERVER_SANDBOX_ID",
        "HOME",
        "LANG",
        "MPLCONFIGDIR",
        "PATH",
        "PYTHONUNBUFFERED",
        "TMPDIR",
        "USER",
        "XDG_CACHE_HOME",
    ]
    .into();
    assert!(
        keys.is_subset(&allowed),
        "unexpected variables in a run: {env:?}"
    );
    let env_text = res["env"].to_string();
    for host_value in ["/work", "/root", data_dir.as_str(), "cargo"] {
        assert!(
            !env_text.contains(host_value),
            "the run's environment shows {host_value}: {env:?}"
        );
    }
    let hits = decoy.finish();
    assert!(
        hits.is_empty(),
        "a host decoy was reached from a sandbox: {hits:?}"
    );
    eprintln!("decoys on {ips:?} (host addresses {host_ips:?}) were not reached");
}

/// /proc/1 of a sandbox is its init, a clone of the host-side helper: its command line carries
/// the host path of the cerver binary and the jail configuration (host uid base, cgroup path).
#[tokio::test]

async fn sandbox_init_does_not_reveal_host_details() {
    let s = Server::start();
    let id = s.sandbox().await;
    let res = probe(
        &s,
        &id,
        r#"
res = {}
for pid in sorted((d for d in os.listdir("/proc") if d.isdigit()), key=int):
    res[pid] = attempt(lambda: read(f"/proc/{pid}/cmdline"))
emit(res)
"#,
    )
    .await;
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_cerver")).unwrap();
    let text = res.to_string();
    assert!(
        !text.contains(&*exe.to_string_lossy())
            && !text.contains("uid_base")
            && !text.contains("cgroup_parent"),
        "sandbox processes reveal host details: {res:#}"
    );
}

// -------------------------------------------------------------------------------- 2. /proc

#[tokio::test]
async fn proc_shows_only_the_sandbox_and_no_privileges() {
    let s = Server::start();
    let id = s.sandbox().await;
    let res = probe(
        &s,
        &id,
        r#"
procs = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            name = read(f"/proc/{d}/status").split("\n")[0].split("\t")[1]
        except OSError as e:
            name = f"errno {e.errno}"
        try:
            argv = [a.decode("latin-1")[:300] for a in open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")[:6]]
        except OSError:
            argv = []
        procs[d] = {"name": name, "argv": argv}
status = {}
for line in read("/proc/self/status").splitlines():
    k, _, v = line.partition(":")
    status[k] = v.strip()
writes = {}
for p in ["/proc/sys/kernel/hostname", "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe",
          "/proc/sys/vm/drop_caches", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/ns_last_pid",
          "/proc/sysrq-trigger", "/proc/self/uid_map", "/proc/self/setgroups", "/proc/1/oom_score_adj"]:
    writes[p] = attempt(lambda: write(p, "1\n"))
kallsyms = read("/proc/kallsyms").splitlines()[:50]
# The sandbox's init (1) and zygote (2) are root in the sandbox: nothing of theirs is reachable.
others = {}
me = os.readlink("/proc/self")
for pid in [d for d in os.listdir("/proc") if d.isdigit() and d != me]:
    for f in ("mem", "environ", "maps", "auxv", "stack", "syscall"):
        others[f"/proc/{pid}/{f}"] = attempt(lambda: read(f"/proc/{pid}/{f}"))
    for f in ("fd", "root", "cwd", "map_files"):
        others[f"/proc/{pid}/{f}"] = attempt(lambda: sorted(os.listdir(f"/proc/{pid}/{f}")))
    others[f"/proc/{pid}/mem (write)"] = attempt(lambda: write(f"/proc/{pid}/mem"))
emit({
    "others": others,
    "procs": procs,
    "status": status,
    "uid_map": read("/proc/self/uid_map").split(),
    "gid_map": read("/proc/self/gid_map").split(),
    "writes": writes,
    "kmsg": attempt(lambda: read("/proc/kmsg")),
    "kallsyms_nonzero": [l for l in kallsyms if not l.startswith("0000000000000000 ")],
    "hostname": socket.gethostname(),
})
"#,
    )
    .await;

    // Only the sandbox's few processes, with small pids; nothing of the host.
    let procs = res["procs"].as_object().unwrap();
    assert!(procs.len() <= 8, "too many processes visible: {procs:#?}");
    let server_pid = s.pid().to_string();
    for (pid, p) in procs {
        let n: u32 = pid.parse().unwrap();
        assert!(n < 1000, "large pid {pid} visible in the sandbox: {p}");
        assert_ne!(pid, &server_pid, "the server's pid is visible: {p}");
        let argv = p["argv"].to_string();
        assert!(
            !argv.contains("\"serve\"") && !argv.contains(&*s.data_dir.to_string_lossy()),
            "host process visible: {p}"
        );
        let name = p["name"].as_str().unwrap();
        assert!(
            ["cerver", "python3"].contains(&name),
            "unexpected process {pid}: {p}"
        );
    }
    let st = &res["status"];
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(st[cap], "0000000000000000", "{cap}: {st:#}");
    }
    assert_eq!(st["NoNewPrivs"], "1", "{st:#}");
    assert_eq!(st["Seccomp"], "2", "{st:#}");
    let uids: Vec<&str> = st["Uid"].as_str().unwrap().split_whitespace().collect();
    assert_eq!(uids, ["1000"; 4], "{st:#}");
    let gids: Vec<&str> = st["Gid"].as_str().unwrap().split_whitespace().collect();
    assert_eq!(gids, ["1000"; 4], "{st:#}");
    for map in ["uid_map", "gid_map"] {
        let m: Vec<u64> = res[map]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(m.len(), 3, "{map}: {m:?}");
        assert_eq!(m[0], 0, "{map}: {m:?}");
        assert!(
            m[1] >= UID_BASE && m[1] & (MAPPED_IDS - 1) == 0,
            "{map} maps to a privileged host range: {m:?}"
        );
        assert_eq!(m[2], MAPPED_IDS, "{map}: {m:?}");
    }
    for p in [
        "/proc/sys/kernel/hostname",
        "/proc/sys/kernel/core_pattern",
        "/proc/sys/vm/drop_caches",
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/self/uid_map",
        "/proc/self/setgroups",
        "/proc/1/oom_score_adj",
    ] {
        assert_errno(&res["writes"], p, &[EACCES]);
    }
    // Absent when the kernel has no magic SysRq / no module support; never writable.
    assert_errno(
        &res["writes"],
        "/proc/sysrq-trigger",
        &[ENOENT, EACCES, EROFS],
    );
    assert_errno(
        &res["writes"],
        "/proc/sys/kernel/modprobe",
        &[ENOENT, EACCES],
    );
    assert_eq!(errno_of(&res["kmsg"]), Some(EACCES), "{}", res["kmsg"]);
    assert_eq!(
        res["kallsyms_nonzero"],
        json!([]),
        "kernel addresses leak through /proc/kallsyms"
    );
    assert_eq!(res["hostname"], "sandbox");
    // Writing ns_last_pid needs CAP_SYS_ADMIN over the pid namespace's owner.
    assert_errno(
        &res["writes"],
        "/proc/sys/kernel/ns_last_pid",
        &[EPERM, EACCES],
    );
    for (k, v) in res["others"].as_object().unwrap() {
        assert_eq!(errno_of(v), Some(EACCES), "{k}: {v}");
    }
}

// ------------------------------------------------------------------------ 3. signalling

#[tokio::test]
async fn signals_cannot_reach_host_processes_and_kill_all_is_contained() {
    let s = Server::start();
    let id = s.sandbox().await;
    let server_pid = s.pid();
    let body = r#"
SERVER = __SERVER__
TEST = __TEST__
res = {}
res["server_sig0"] = attempt(lambda: os.kill(SERVER, 0))
res["server_kill"] = attempt(lambda: os.kill(SERVER, signal.SIGKILL))
res["server_killpg"] = attempt(lambda: os.killpg(SERVER, signal.SIGKILL))
res["test_kill"] = attempt(lambda: os.kill(TEST, signal.SIGKILL))
res["pidfd_open_server"] = attempt(lambda: os.pidfd_open(SERVER))
# Every pid this process could signal (besides itself).
me = os.getpid()
visible = {}
for p in range(1, 1 << 16):
    if p == me:
        continue
    try:
        os.kill(p, 0)
        visible[p] = "signalable"
    except ProcessLookupError:
        pass
    except PermissionError:
        visible[p] = "EPERM"
res["visible"] = visible
res["me"] = me
# The sandbox's pid 1 (its init, outside user code's reach) cannot be killed.
res["kill_leader"] = attempt(lambda: os.kill(1, signal.SIGKILL))
# kill(-1) reaches exactly this run's own other processes.
kids = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        time.sleep(100)
        os._exit(0)
    kids.append(pid)
res["kill_all"] = attempt(lambda: os.kill(-1, signal.SIGKILL))
res["kids"] = [os.waitstatus_to_exitcode(os.waitpid(k, 0)[1]) for k in kids]
res["kill_all_again"] = attempt(lambda: os.kill(-1, signal.SIGKILL))
emit(res)
"#
    .replace("__SERVER__", &server_pid.to_string())
    .replace("__TEST__", &std::process::id().to_string());
    let res = probe(&s, &id, &body).await;
    for key in [
        "server_sig0",
        "server_kill",
        "server_killpg",
        "test_kill",
        "pidfd_open_server",
    ] {
        assert_errno(&res, key, &[ESRCH]);
    }
    // Only the sandbox's own processes are visible, and none of them (init, zygote, run
    // leaders: root of the sandbox's namespace) can be signalled by user code.
    let visible = res["visible"].as_object().unwrap();
    assert!(visible.contains_key("1") && visible.len() < 20, "{res:#}");
    assert!(
        visible.values().all(|v| v == "EPERM"),
        "signalable processes: {res:#}"
    );
    assert_errno(&res, "kill_leader", &[EPERM]);
    assert_eq!(res["kill_all"]["ok"], true, "{res:#}");
    assert_eq!(
        res["kids"],
        json!([-9, -9, -9]),
        "kill(-1) did not kill the run's children: {res:#}"
    );
    // A second kill(-1) may still find processes of the same sandbox (other runs share its pid
    // namespace and user); what matters is that nothing outside is reachable (checked above)
    // and that the sandbox keeps working (checked below).
    assert!(
        res["kill_all_again"]["ok"] == true || errno_of(&res["kill_all_again"]) == Some(ESRCH),
        "{res:#}"
    );

    // kill(-1, SIGKILL) from a child kills the run's main process: the run dies.
    let r = s
        .run_with(
            &id,
            json!({"code": script(r#"
subprocess.run([sys.executable, "-c", "import os, signal; os.kill(-1, signal.SIGKILL)"])
print("survived")
"#), "timeout": 30}),
        )
        .await;
    assert_eq!(r["exit_code"], 128 + 9, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("killed by signal 9"),
        "{r}"
    );
    assert!(!r["output"].as_str().unwrap().contains("survived"), "{r}");

    // The server is alive and responsive, and the sandbox runs code again.
    assert!(
        std::path::Path::new(&format!("/proc/{server_pid}")).exists(),
        "the server died"
    );
    let other = s.sandbox().await;
    assert_responsive(&s, &other, "after kill(-1)").await;
    assert_sandbox_works(&s, &id, "kill(-1, SIGKILL)").await;
}

// ------------------------------------------------------------------------ 4. syscalls

#[tokio::test]
async fn dangerous_syscalls_are_refused() {
    let s = Server::start();
    let id = s.sandbox().await;
    let res = probe(
        &s,
        &id,
        r#"
import mmap
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
buf = ctypes.create_string_buffer(4096)
B = ctypes.addressof(buf)
res = {}

def sc(name, nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(L(nr), *[L(a) for a in args])
    if r == 0 and os.getpid() != ME:
        os._exit(0)  # a clone that should have failed made a child: make it vanish
    res[name] = {"ret": r, "errno": ctypes.get_errno() if r == -1 else 0}

ME = os.getpid()
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWTIME = 0x2000000, 0x4000000, 0x8000000, 0x80
netns = os.open("/proc/self/ns/net", os.O_RDONLY)
pidns = os.open("/proc/self/ns/pid", os.O_RDONLY)
root = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
sc("mount", 165, B, B, B, 0, 0)
sc("umount2", 166, B, 0)
sc("pivot_root", 155, B, B)
sc("chroot", 161, B)
sc("unshare(CLONE_NEWUSER)", 272, CLONE_NEWUSER)
sc("unshare(CLONE_NEWNS)", 272, CLONE_NEWNS)
sc("unshare(CLONE_NEWPID)", 272, CLONE_NEWPID)
sc("unshare(CLONE_NEWNET)", 272, CLONE_NEWNET)
sc("unshare(CLONE_NEWCGROUP)", 272, CLONE_NEWCGROUP)
sc("unshare(CLONE_NEWUTS)", 272, CLONE_NEWUTS)
sc("unshare(CLONE_NEWIPC)", 272, CLONE_NEWIPC)
sc("unshare(CLONE_NEWTIME)", 272, CLONE_NEWTIME)
sc("setns(net)", 308, netns, 0)
sc("setns(pid, CLONE_NEWPID)", 308, pidns, CLONE_NEWPID)
sc("clone(CLONE_NEWNET)", 56, CLONE_NEWNET | signal.SIGCHLD, 0, 0, 0, 0)
sc("clone(CLONE_NEWUSER)", 56, CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0)
sc("clone(CLONE_NEWPID)", 56, CLONE_NEWPID | signal.SIGCHLD, 0, 0, 0, 0)
sc("clone3", 435, B, 88)
sc("ptrace(PTRACE_TRACEME)", 101, 0, 0, 0, 0)
sc("ptrace(PTRACE_ATTACH, 1)", 101, 16, 1, 0, 0)
ctypes.set_errno(0)
res["libc.ptrace(PTRACE_TRACEME)"] = {"ret": libc.ptrace(0, 0, 0, 0), "errno": ctypes.get_errno()}
sc("process_vm_readv", 310, 1, B, 1, B, 1, 0)
sc("process_vm_writev", 311, 1, B, 1, B, 1, 0)
sc("pidfd_getfd", 438, 0, 0, 0)
sc("kcmp", 312, 1, ME, 0, 0, 0)
sc("bpf", 321, 0, 0, 0)
sc("perf_event_open", 298, 0, 0, -1, -1, 0)
sc("keyctl", 250, 0, -3, 0, 0, 0)
sc("add_key", 248, 0, 0, 0, 0, 0)
sc("request_key", 249, 0, 0, 0, 0)
sc("userfaultfd", 323, 0)
sc("io_uring_setup", 425, 8, 0)
sc("kexec_load", 246, 0, 0, 0, 0)
sc("kexec_file_load", 320, -1, -1, 0, 0, 0)
sc("init_module", 175, 0, 0, 0)
sc("finit_module", 313, -1, 0, 0)
sc("delete_module", 176, 0, 0)
sc("reboot", 169, 0xfee1dead, 672274793, 0, 0)  # LINUX_REBOOT_CMD_CAD_OFF: harmless if it ran
sc("swapon", 167, 0, 0)
sc("swapoff", 168, 0)
sc("acct", 163, 0)
sc("quotactl", 179, 0, 0, 0, 0)
sc("open_by_handle_at", 304, root, 0, 0)
sc("name_to_handle_at", 303, root, 0, 0, 0, 0)
sc("syslog", 103, 10, 0, 0)
sc("settimeofday", 164, 0, 0)
sc("clock_settime", 227, 0, 0)
sc("clock_adjtime", 305, 0, 0)
sc("adjtimex", 159, 0)
sc("iopl", 172, 3)
sc("ioperm", 173, 0, 8, 1)
sc("modify_ldt", 154, 0, 0, 0)
sc("sethostname", 170, B, 4)
sc("fsopen", 430, B, 0)
sc("open_tree", 428, root, B, 1)
sc("move_mount", 429, root, B, root, B, 0)
sc("fanotify_init", 300, 0, 0)
sc("personality(ADDR_NO_RANDOMIZE)", 135, 0x0040000)
sc("personality(READ_IMPLIES_EXEC)", 135, 0x0400000)
sc("personality(0xffffffff)", 135, 0xffffffff)
sc("seccomp(NEW_LISTENER)", 317, 1, 8, B)
# x32 ABI numbers (nr | 0x40000000) must not slip past the filter.
sc("x32 unshare(CLONE_NEWUSER)", 0x40000000 | 272, CLONE_NEWUSER)
sc("x32 mount", 0x40000000 | 165, B, B, B, 0, 0)
ptm = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
ch = ctypes.c_char(b"x")
sc("ioctl(TIOCSTI)", 16, ptm, 0x5412, ctypes.addressof(ch))
sc("ioctl(TIOCSTI | 1<<32)", 16, ptm, 0x5412 | (1 << 32), ctypes.addressof(ch))
sc("ioctl(TIOCLINUX)", 16, ptm, 0x541C, ctypes.addressof(ch))
sc("ioctl(TIOCSETD)", 16, ptm, 0x5423, ctypes.addressof(ch))
for name, fam, typ in [("AF_NETLINK", 16, 3), ("AF_PACKET", 17, 3), ("AF_VSOCK", 40, 1), ("AF_ALG", 38, 5),
                       ("AF_INET SOCK_RAW", 2, 3), ("AF_INET6 SOCK_RAW", 10, 3), ("AF_INET SOCK_PACKET", 2, 10),
                       ("AF_BLUETOOTH", 31, 3), ("AF_KEY", 15, 3), ("AF_XDP", 44, 3)]:
    sc(f"socket({name})", 41, fam, typ, 0)
# The i386 ABI (int 0x80) fails the architecture check: the process is killed with SIGSYS.
pid = os.fork()
if pid == 0:
    m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    # mov eax, 310 (i386 unshare); mov ebx, CLONE_NEWUSER; int 0x80; ret
    m.write(b"\xb8" + (310).to_bytes(4, "little") + b"\xbb" + CLONE_NEWUSER.to_bytes(4, "little") + b"\xcd\x80\xc3")
    fn = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(m)))
    os._exit(100 + (fn() & 0x7f))
_, st = os.waitpid(pid, 0)
res["int 0x80"] = {"signal": os.WTERMSIG(st) if os.WIFSIGNALED(st) else None,
                   "exit": os.WEXITSTATUS(st) if os.WIFEXITED(st) else None}
emit(res)
"#,
    )
    .await;
    let map = res.as_object().unwrap();
    let mut wrong = Vec::new();
    for (name, r) in map {
        let expected = match name.as_str() {
            "clone3" => json!({"ret": -1, "errno": ENOSYS}),
            "personality(0xffffffff)" => continue, // a query: allowed
            "int 0x80" => json!({"signal": 31, "exit": null}),
            _ => json!({"ret": -1, "errno": EPERM}),
        };
        if *r != expected {
            wrong.push(format!("{name}: expected {expected}, got {r}"));
        }
    }
    let q = &res["personality(0xffffffff)"];
    if q["ret"].as_i64().is_none_or(|r| r < 0) {
        wrong.push(format!(
            "personality(0xffffffff) (a query) must succeed, got {q}"
        ));
    }
    assert!(
        wrong.is_empty(),
        "syscalls not refused as expected:\n{}",
        wrong.join("\n")
    );
    assert!(map.len() > 70, "some probes did not run: {res:#}");
}

// ------------------------------------------------------------------------ 5. privileges

#[tokio::test]
async fn no_way_back_to_root() {
    let s = Server::start();
    let id = s.sandbox().await;
    let res = probe(
        &s,
        &id,
        r#"
import fcntl
res = {"set": {}, "write": {}, "setuid_bins": {}}
for name, fn in [("setuid(0)", lambda: os.setuid(0)), ("setgid(0)", lambda: os.setgid(0)),
                 ("seteuid(0)", lambda: os.seteuid(0)), ("setresuid(0,0,0)", lambda: os.setresuid(0, 0, 0)),
                 ("setgroups([0])", lambda: os.setgroups([0])), ("setreuid(0,0)", lambda: os.setreuid(0, 0))]:
    try:
        fn()
        res["set"][name] = "succeeded"
    except PermissionError as e:
        res["set"][name] = ["PermissionError", e.errno]
    except OSError as e:
        res["set"][name] = [type(e).__name__, e.errno]
for p in ["/etc/passwd", "/etc/shadow", "/usr/bin/x", "/usr/bin/python3", "/bin/sh", "/x", "/etc/ld.so.preload",
          "/usr/lib/x86_64-linux-gnu/x.so"]:
    res["write"][p] = attempt(lambda: write(p))
res["chmod /etc/passwd"] = attempt(lambda: os.chmod("/etc/passwd", 0o777))
res["dev"] = sorted(os.listdir("/dev"))
res["dev/pts"] = sorted(os.listdir("/dev/pts"))
for dev in ["/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg", "/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/fuse", "/dev/net/tun",
            "/dev/kvm", "/dev/console"]:
    res["write"][dev] = attempt(lambda: write(dev))
res["mknod char 1:1 (mem)"] = attempt(lambda: os.mknod("/home/user/mem", 0o20666, os.makedev(1, 1)))
res["mknod block 253:0"] = attempt(lambda: os.mknod("/tmp/disk", 0o60666, os.makedev(253, 0)))
res["chown workspace file"] = attempt(lambda: (write("/home/user/mine"), os.chown("/home/user/mine", 0, 0)))
p = subprocess.run(["mount", "-t", "tmpfs", "none", "/home/user"], capture_output=True, text=True)
res["mount binary"] = [p.returncode, p.stderr]
p = subprocess.run(["umount", "-l", "/home/user"], capture_output=True, text=True)
res["umount binary"] = [p.returncode, p.stderr]
p = subprocess.run(["unshare", "-r", "id"], capture_output=True, text=True)
res["unshare binary"] = [p.returncode, p.stderr]

# Run each setuid-root binary while it is blocked writing to a full pipe, and read its ids.
def find(pid):
    # Runs share the sandbox's pid namespace: /proc/<pid> is the child itself.
    try:
        return read(f"/proc/{pid}/status")
    except OSError:
        return None
r, w = os.pipe()
fcntl.fcntl(w, fcntl.F_SETFL, os.O_NONBLOCK)
try:
    while True:
        os.write(w, b"x" * 4096)
except BlockingIOError:
    pass
fcntl.fcntl(w, fcntl.F_SETFL, 0)
for b in ["/usr/bin/su", "/usr/bin/mount", "/usr/bin/passwd", "/usr/bin/newgrp", "/usr/bin/chsh", "/usr/bin/sudo"]:
    try:
        mode = os.stat(b).st_mode
    except FileNotFoundError:
        continue
    p = subprocess.Popen([b, "--help"], stdout=w, stderr=w, stdin=subprocess.DEVNULL)
    st = None
    for _ in range(50):
        time.sleep(0.02)
        st = find(p.pid)
        if st and "\nName:\t" + os.path.basename(b) in "\n" + st:
            break
    fields = {}
    for line in (st or "").split("\n"):
        k, _, v = line.partition(":")
        if k in ("Name", "Uid", "Gid", "CapEff", "CapPrm", "NoNewPrivs"):
            fields[k] = v.split()
    res["setuid_bins"][b] = {"setuid_bit": bool(mode & 0o4000), "status": fields}
    p.kill()
    p.wait()
emit(res)
"#,
    )
    .await;
    for (k, v) in res["set"].as_object().unwrap() {
        assert_eq!(*v, json!(["PermissionError", EPERM]), "{k}");
    }
    for p in [
        "/etc/passwd",
        "/etc/shadow",
        "/usr/bin/x",
        "/usr/bin/python3",
        "/bin/sh",
        "/x",
        "/etc/ld.so.preload",
    ] {
        assert_errno(&res["write"], p, &[EROFS, EACCES]);
    }
    assert_errno(
        &res["write"],
        "/usr/lib/x86_64-linux-gnu/x.so",
        &[EROFS, EACCES, ENOENT],
    );
    assert_errno(&res, "chmod /etc/passwd", &[EPERM, EROFS]);
    assert_eq!(
        res["dev"],
        json!([
            "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
            "tty", "urandom", "zero"
        ]),
        "unexpected device nodes"
    );
    assert_eq!(
        res["dev/pts"],
        json!(["ptmx"]),
        "the host's terminals are visible"
    );
    for dev in [
        "/dev/mem",
        "/dev/kmem",
        "/dev/port",
        "/dev/kmsg",
        "/dev/vda",
        "/dev/sda",
        "/dev/nvme0n1",
        "/dev/fuse",
        "/dev/net/tun",
        "/dev/kvm",
        "/dev/console",
    ] {
        // Not there, and /dev is not writable for creating it.
        assert_errno(&res["write"], dev, &[EACCES, ENOENT]);
    }
    assert_errno(&res, "mknod char 1:1 (mem)", &[EPERM]);
    assert_errno(&res, "mknod block 253:0", &[EPERM]);
    assert_errno(&res, "chown workspace file", &[EPERM]);
    for k in ["mount binary", "umount binary", "unshare binary"] {
        assert_ne!(res[k][0], 0, "{k} succeeded: {res:#}");
    }
    assert!(
        res["mount binary"][1]
            .as_str()
            .unwrap()
            .contains("must be superuser"),
        "{res:#}"
    );
    let bins = res["setuid_bins"].as_object().unwrap();
    assert!(
        bins.values().any(|b| b["setuid_bit"] == true),
        "no setuid-root binary found to test with: {bins:#?}"
    );
    for (b, v) in bins {
        let st = &v["status"];
        assert!(st["Uid"].is_array(), "could not observe {b} running: {v}");
        assert_eq!(
            st["Uid"],
            json!(["1000", "1000", "1000", "1000"]),
            "{b} gained ids: {v}"
        );
        assert_eq!(
            st["Gid"],
            json!(["1000", "1000", "1000", "1000"]),
            "{b} gained ids: {v}"
        );
        assert_eq!(
            st["CapEff"],
            json!(["0000000000000000"]),
            "{b} gained capabilities: {v}"
        );
        assert_eq!(
            st["CapPrm"],
            json!(["0000000000000000"]),
            "{b} gained capabilities: {v}"
        );
        assert_eq!(st["NoNewPrivs"], json!(["1"]), "{v}");
    }
}

/// Finds every descriptor (other than stdio) user code holds and writes a forged status line
/// `{"exit_code": 0}` to each of them, and to whatever /proc/{1,2,self}/fd/* it can open.
const FORGE_STATUS: &str = r#"
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
inherited = [fd for fd in range(3, 1024) if is_open(fd)]
fake = json.dumps({"exit_code": 0}) + "\n"
forged = []
for fd in inherited:
    try:
        os.write(fd, fake.encode())
        forged.append(fd)
    except OSError:
        pass
for pid in ("1", "2"):
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                with open(f"/proc/{pid}/fd/{fd}", "w") as f:
                    f.write(fake)
                forged.append(f"{pid}/{fd}")
            except OSError:
                pass
    except OSError:
        pass
print(json.dumps({"inherited": inherited, "forged": forged}), flush=True)
"#;

/// User code cannot reach the descriptors that report a run's result, so it can neither forge
/// its exit status nor make the server stop watching it (and so outlive its timeout).
#[tokio::test]

async fn run_result_cannot_be_forged() {
    let s = Server::start();
    let id = s.sandbox().await;
    let r = s
        .run_with(
            &id,
            json!({"code": script(&format!("{FORGE_STATUS}\ntime.sleep(1)\nprint('after')\nsys.exit(7)")), "timeout": 30}),
        )
        .await;
    let forge = r["output"]
        .as_str()
        .unwrap()
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    assert_eq!(r["exit_code"], 7, "the run's result was forged: {r}");
    assert!(
        r["output"].as_str().unwrap().ends_with("after"),
        "output was cut: {r}"
    );
    let forge: Value = serde_json::from_str(&forge).unwrap();
    // Besides stdio, user code holds one descriptor: its own run's results pipe (rich
    // results, written by the display machinery in its process). Writing to it can only add
    // results to this run, and a forged status line is not one.
    let inherited = forge["inherited"].as_array().unwrap();
    assert_eq!(
        inherited.len(),
        1,
        "user code holds descriptors besides stdio and its results pipe: {r}"
    );
    assert_eq!(
        forge["forged"], forge["inherited"],
        "user code wrote to foreign descriptors: {r}"
    );
    assert_eq!(
        r["results"],
        json!([]),
        "a status line became a result: {r}"
    );

    // A forged status must not free a run from its timeout either.
    let t = Instant::now();
    let r = s
        .run_with(
            &id,
            json!({"code": script(&format!("{FORGE_STATUS}\nwhile True:\n    open('/tmp/heartbeat', 'w').write(str(time.time()))\n    time.sleep(0.05)")), "timeout": 2}),
        )
        .await;
    assert!(
        r["error"].as_str().unwrap().contains("timed out"),
        "the run escaped its timeout: {r} after {:?}",
        t.elapsed()
    );
    let res = probe(
        &s,
        &id,
        r#"
time.sleep(0.5)
a = os.stat("/tmp/heartbeat").st_mtime
time.sleep(0.5)
emit({"still_running": os.stat("/tmp/heartbeat").st_mtime != a})
"#,
    )
    .await;
    assert_eq!(
        res["still_running"], false,
        "the run keeps running after the server reported it"
    );
}

// ------------------------------------------------------------------------ 6. network

#[tokio::test]
async fn network_is_loopback_only() {
    let s = Server::start();
    let id = s.sandbox().await;
    let res = probe(
        &s,
        &id,
        r#"
import threading
res = {}
try:
    res["if_nameindex"] = [name for _, name in socket.if_nameindex()]
except OSError as e:
    res["if_nameindex"] = {"errno": e.errno, "type": type(e).__name__}
res["net_dev"] = sorted(l.split(":")[0].strip() for l in read("/proc/net/dev").splitlines()[2:] if ":" in l)
res["route"] = read("/proc/net/route").splitlines()[1:]
res["route6"] = [l for l in read("/proc/net/ipv6_route").splitlines() if not l.rstrip().endswith(" lo")]
res["if_inet6"] = sorted(set(l.split()[-1] for l in read("/proc/net/if_inet6").splitlines()))
res["resolv"] = attempt(lambda: socket.getaddrinfo("example.com", 80))

def echo_server(fam, host):
    srv = socket.socket(fam, socket.SOCK_STREAM)
    srv.bind((host, 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    def serve():
        c, _ = srv.accept()
        c.sendall(c.recv(100).upper())
        c.close()
    t = threading.Thread(target=serve)
    t.start()
    c = socket.create_connection((host, port), timeout=5)
    c.sendall(b"ping")
    got = c.recv(100).decode()
    c.close()
    t.join()
    return got
res["loopback4"] = attempt(lambda: echo_server(socket.AF_INET, "127.0.0.1"))
res["loopback6"] = attempt(lambda: echo_server(socket.AF_INET6, "::1"))
emit(res)
"#,
    )
    .await;
    // glibc's if_nameindex() needs a netlink socket, which the sandbox refuses.
    let ifs = &res["if_nameindex"];
    assert!(
        *ifs == json!(["lo"]) || *ifs == json!({"errno": EPERM, "type": "PermissionError"}),
        "if_nameindex: {ifs}"
    );
    assert_eq!(res["net_dev"], json!(["lo"]), "{res:#}");
    assert_eq!(
        res["route"],
        json!([]),
        "the sandbox has IPv4 routes: {res:#}"
    );
    assert_eq!(
        res["route6"],
        json!([]),
        "the sandbox has non-loopback IPv6 routes: {res:#}"
    );
    assert_eq!(res["if_inet6"], json!(["lo"]), "{res:#}");
    // No DNS: /etc/hosts knows nothing of example.com and no resolver is reachable.
    assert_eq!(res["resolv"]["ok"], false, "{res:#}");
    assert_eq!(
        res["loopback4"],
        json!({"ok": true, "value": "PING"}),
        "{res:#}"
    );
    assert_eq!(
        res["loopback6"],
        json!({"ok": true, "value": "PING"}),
        "{res:#}"
    );
}

// ------------------------------------------------------------------------ 7. files API

#[tokio::test]
async fn files_api_cannot_escape_the_workspace() {
    let s = Server::start();
    let id = s.sandbox().await;
    let secret = format!("CERVER-SECRET-{}", token());
    let planted = Planted::new(format!("/tmp/cerver-flag-{}", token()).into(), &secret);
    let flag = planted.0.clone();
    let data_flag = s.data_dir.join(format!("flag-{}", token()));
    std::fs::write(&data_flag, &secret).unwrap();
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    // A line only the host's passwd has (the sandbox's has root, user and nobody only).
    let host_only = host_passwd
        .lines()
        .find(|l| !l.is_empty() && !l.starts_with("user:") && !l.starts_with("nobody:"))
        .unwrap()
        .to_string();

    // Paths that leave the workspace are refused before anything runs.
    for path in [
        "../../etc/passwd",
        "/etc/passwd",
        "/home/user/../../tmp/x",
        "..",
        "a/../../b",
        "/home/username/x",
        "/tmp/x",
        "a\u{0}b",
    ] {
        let (st, v) = s
            .post(
                &format!("/sandbox/{id}/files"),
                json!({"path": path, "content": "pwned"}),
            )
            .await;
        assert_eq!(
            (st, v["code"].as_str()),
            (400, Some("invalid_path")),
            "write {path:?}: {v}"
        );
        let (st, v) = s
            .get(&format!("/sandbox/{id}/files?path={}", enc(path)))
            .await;
        assert_eq!(
            (st, v["code"].as_str()),
            (400, Some("invalid_path")),
            "read {path:?}: {v}"
        );
    }

    // Symlinks planted by code resolve inside the sandbox, never on the host.
    let body = r#"
for target, name in [("/etc/passwd", "pw"), ("/proc/1/root/etc/passwd", "pw_init"),
                     ("/proc/self/root/etc/passwd", "pw_self"), ("/", "rootlink"),
                     (__FLAG__, "flag"), (__DATA_FLAG__, "data_flag"), ("/proc/1/environ", "init_env"),
                     ("/etc/shadow", "shadow")]:
    os.symlink(target, name)
os.makedirs("d", exist_ok=True)
os.symlink("../../../../etc", "d/etc")
emit("planted")
"#
    .replace("__FLAG__", &Value::String(flag.to_string_lossy().into_owned()).to_string())
    .replace("__DATA_FLAG__", &Value::String(data_flag.to_string_lossy().into_owned()).to_string());
    probe(&s, &id, &body).await;

    let read = |path: &'static str| {
        let s = &s;
        let id = id.clone();
        async move {
            s.get(&format!("/sandbox/{id}/files?path={}", enc(path)))
                .await
        }
    };
    let mut all = String::new();
    for path in ["pw", "pw_self", "rootlink/etc/passwd", "d/etc/passwd"] {
        let (st, v) = read(path).await;
        all.push_str(&v.to_string());
        assert_eq!(st, 200, "{path}: {v}");
        let content = v["content"].as_str().unwrap();
        assert!(
            content.contains("user:x:1000:1000"),
            "{path} is not the sandbox's passwd: {content}"
        );
        assert!(
            !content.contains(&host_only),
            "{path} shows the host's passwd: {content}"
        );
        assert!(
            !content.contains("daemon:"),
            "{path} shows the host's passwd: {content}"
        );
    }
    for (path, status, code) in [
        ("pw_init", 403, "permission_denied"),
        ("init_env", 403, "permission_denied"),
        ("rootlink/proc/1/environ", 403, "permission_denied"),
        ("flag", 404, "file_not_found"),
        ("data_flag", 404, "file_not_found"),
        ("shadow", 404, "file_not_found"),
        ("rootlink/etc/shadow", 404, "file_not_found"),
        ("rootlink/root/.bashrc", 404, "file_not_found"),
    ] {
        let (st, v) = read(path).await;
        all.push_str(&v.to_string());
        assert_eq!(
            (st, v["code"].as_str()),
            (status, Some(code)),
            "read {path}: {v}"
        );
    }
    // Writing through symlinks hits the read-only system files of the sandbox.
    for path in [
        "pw",
        "rootlink/etc/passwd",
        "d/etc/passwd",
        "rootlink/usr/bin/python3",
    ] {
        let (st, v) = s
            .post(
                &format!("/sandbox/{id}/files"),
                json!({"path": path, "content": "pwned"}),
            )
            .await;
        assert_eq!(
            (st, v["code"].as_str()),
            (403, Some("permission_denied")),
            "write {path}: {v}"
        );
    }
    // Writing through a symlink to the (host) flag path creates a file in the sandbox's /tmp only.
    let (st, v) = s
        .post(
            &format!("/sandbox/{id}/files"),
            json!({"path": "flag", "content": "pwned"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        std::fs::read_to_string(&flag).unwrap(),
        secret,
        "the host flag was overwritten"
    );
    assert_eq!(
        std::fs::read_to_string(&data_flag).unwrap(),
        secret,
        "the data-dir flag was overwritten"
    );
    let (st, v) = s.get(&format!("/sandbox/{id}/files")).await;
    assert_eq!(st, 200);
    all.push_str(&v.to_string());
    assert!(
        !all.contains(&secret),
        "the flag leaked through the files API: {all}"
    );
}

/// A FIFO planted by code makes the files API block until the file operation's time limit.
#[tokio::test]

async fn files_api_does_not_hang_on_a_fifo() {
    let s = Server::start();
    let id = s.sandbox().await;
    probe(
        &s,
        &id,
        "os.mkfifo('/home/user/fifo_r')\nos.mkfifo('/home/user/fifo_w')\nemit('ok')",
    )
    .await;
    let (read_path, write_path) = (
        format!("/sandbox/{id}/files?path=fifo_r"),
        format!("/sandbox/{id}/files"),
    );
    let t = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(10), s.get(&read_path));
    let write = tokio::time::timeout(
        Duration::from_secs(10),
        s.post(&write_path, json!({"path": "fifo_w", "content": "x"})),
    );
    let (r, w) = tokio::join!(read, write);
    let elapsed = t.elapsed();
    for (what, res) in [("read", r), ("write", w)] {
        let (st, v) = res.unwrap_or_else(|_| panic!("files API {what} of a FIFO hangs (> 10 s)"));
        assert!(
            (400..500).contains(&st),
            "files API {what} of a FIFO: {st} {v} after {elapsed:?}"
        );
    }
}

// ------------------------------------------------------------------------ 8. bombs

/// Forks until the pids limit (reporting how far it got), then keeps forking until killed.
const FORK_BOMB: &str = r#"
kids, err = 0, None
while True:
    try:
        pid = os.fork()
    except OSError as e:
        err = e
        break
    if pid == 0:
        time.sleep(100)
        os._exit(0)
    kids += 1
emit({"type": type(err).__name__, "errno": err.errno, "kids": kids})
while True:
    try:
        if os.fork() == 0:
            os._exit(0)
    except OSError:
        pass
"#;

/// Forks until the pids limit, then keeps forking until the run's 5 s timeout; meanwhile the
/// server and another sandbox stay responsive.
async fn fork_bomb(s: &Server, id: &str, other: &str) {
    let bomb = script(FORK_BOMB);
    let run = s.run_with(id, json!({"code": bomb, "timeout": 5}));
    let check = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_responsive(s, other, "a fork bomb").await;
    };
    let (r, ()) = tokio::join!(run, check);
    let res = last_json(&r);
    assert_eq!(res["type"], "BlockingIOError", "{r}");
    assert_eq!(res["errno"], EAGAIN, "{r}");
    let kids = res["kids"].as_i64().unwrap();
    assert!(
        (64..128).contains(&kids),
        "forked {kids} processes with a limit of 128: {r}"
    );
    assert!(r["error"].as_str().unwrap().contains("timed out"), "{r}");
    assert_eq!(r["exit_code"], -1, "{r}");
}

#[tokio::test]
async fn fork_bomb_hits_the_pids_limit() {
    let s = Server::start();
    let id = s.sandbox().await;
    let other = s.sandbox().await;
    fork_bomb(&s, &id, &other).await;
    // The sandbox recovers (see the_run_right_after_a_fork_bomb_starts for the first run).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut failed = Vec::new();
    loop {
        let r = s.run(&id, "import os\nprint('alive', os.getuid())").await;
        if r["exit_code"] == 0 && r["output"] == "alive 1000" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sandbox does not recover from a fork bomb: {r} (before: {failed:?})"
        );
        failed.push(r);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !failed.is_empty() {
        eprintln!("runs that failed right after the fork bomb: {failed:?}");
    }
}

/// The timed-out response comes back while the bomb's processes still hold the pids limit.
#[tokio::test]
async fn the_run_right_after_a_fork_bomb_starts() {
    let s = Server::start();
    let id = s.sandbox().await;
    let other = s.sandbox().await;
    fork_bomb(&s, &id, &other).await;
    assert_sandbox_works(&s, &id, "a fork bomb").await;
}

/// A run started while another run of the same sandbox holds every pid fails cleanly (or runs)
/// and leaves the sandbox's zygote, and every other run in flight, alone.
#[tokio::test]

async fn fork_bomb_does_not_crash_the_zygote_for_concurrent_runs() {
    let s = Server::start();
    let id = s.sandbox().await;
    let bomb = s.run_with(&id, json!({"code": script(FORK_BOMB), "timeout": 5}));
    let during = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        s.run(&id, "print('during')").await
    };
    let (a, b) = tokio::join!(bomb, during);
    assert!(
        b["output"] == "during" || b["error"].as_str().unwrap().contains("could not start"),
        "the run started during the bomb: {b}"
    );
    assert!(
        a["error"].as_str().unwrap().contains("timed out"),
        "the fork bomb run did not run to its timeout: {a} (run during it: {b})"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_sandbox_works(&s, &id, "a fork bomb with a concurrent run").await;
}

#[tokio::test]
async fn memory_bomb_is_killed_out_of_memory() {
    let s = Server::start();
    let id = s.sandbox().await;
    let other = s.sandbox().await;
    let run = s.run_with(
        &id,
        json!({"code": "x = []\nfor i in range(32):\n    x.append(bytearray(b'\\x01') * (64 << 20))\nprint('allocated 2 GiB')", "timeout": 60}),
    );
    let check = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_responsive(&s, &other, "a memory bomb").await;
    };
    let (r, ()) = tokio::join!(run, check);
    assert_eq!(r["exit_code"], 128 + 9, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("out of memory"),
        "{r}"
    );
    assert!(!r["output"].as_str().unwrap().contains("allocated"), "{r}");
    // 2 GiB at once (one allocation) fails the same way.
    let r = s
        .run_with(
            &id,
            json!({"code": "x = b'\\x01' * (2 << 30)\nprint('allocated')", "timeout": 60}),
        )
        .await;
    assert!(
        r["error"].as_str().unwrap().contains("out of memory")
            || r["error"].as_str().unwrap().contains("MemoryError"),
        "{r}"
    );
    assert!(!r["output"].as_str().unwrap().contains("allocated"), "{r}");
    assert_sandbox_works(&s, &id, "a memory bomb").await;
}

#[tokio::test]
async fn disk_bomb_fills_only_the_sandbox() {
    // The workspace is the sandbox's disk image (its size is the quota), the rest tmpfs.
    let s = Server::start_with(&["--workers-workspace-mb", "256"]);
    let id = s.sandbox().await;
    let other = s.sandbox().await;
    let host_free = |p: &std::path::Path| {
        let st = nix::sys::statvfs::statvfs(p).unwrap();
        st.blocks_available() * st.fragment_size()
    };
    let data_free = host_free(&s.data_dir);
    let tmp_free = host_free(std::path::Path::new("/tmp"));
    let bomb = script(
        r#"
def fill(prefix, files, mib):
    chunk = b"\0" * (1 << 20)
    written = 0
    try:
        for i in range(files):
            with open(f"{prefix}{i}", "wb") as f:
                for _ in range(mib):
                    f.write(chunk)
                    written += len(chunk)
                f.flush()
        return {"ok": True, "written": written}
    except OSError as e:
        return {"ok": False, "errno": e.errno, "type": type(e).__name__, "written": written}

res = {"workspace": fill("/home/user/bomb", 4, 100), "tmp": fill("/tmp/bomb", 2, 50),
       "shm": fill("/dev/shm/bomb", 1, 40)}
res["mounts"] = [l for l in read("/proc/self/mounts").splitlines() if l.split()[1] in ("/home/user", "/tmp", "/dev/shm")]
emit(res)
"#,
    );
    let run = s.run_with(&id, json!({"code": bomb, "timeout": 60}));
    let check = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_responsive(&s, &other, "a disk bomb").await;
    };
    let (r, ()) = tokio::join!(run, check);
    assert_eq!(r["exit_code"], 0, "{r}");
    let res = last_json(&r);
    for (area, limit_mib) in [("workspace", 256), ("tmp", 64), ("shm", 16)] {
        let v = &res[area];
        assert_eq!(
            (v["type"].as_str(), v["errno"].as_i64()),
            (Some("OSError"), Some(ENOSPC)),
            "{area}: {res:#}"
        );
        let written = v["written"].as_u64().unwrap();
        assert!(
            written <= limit_mib << 20,
            "{area}: wrote {written} bytes past the {limit_mib} MiB limit"
        );
        // ext4's journal and metadata take a few percent of the workspace image.
        let usable = if area == "workspace" {
            limit_mib * 9 / 10
        } else {
            limit_mib - 8
        };
        assert!(
            written >= usable << 20,
            "{area}: wrote only {written} bytes"
        );
    }
    for m in res["mounts"].as_array().unwrap() {
        let m = m.as_str().unwrap();
        let fs = m.split_whitespace().nth(2).unwrap();
        let expected = if m.split_whitespace().nth(1) == Some("/home/user") {
            "ext4"
        } else {
            "tmpfs"
        };
        assert_eq!(fs, expected, "{m}");
        assert!(m.contains("nosuid") && m.contains("nodev"), "{m}");
    }
    // Only the workspace's quota landed on the host's disk (generous slack for whatever else
    // runs on this machine).
    let data_used = data_free.saturating_sub(host_free(&s.data_dir));
    let tmp_used = tmp_free.saturating_sub(host_free(std::path::Path::new("/tmp")));
    assert!(
        data_used < (256 + 200) << 20 && tmp_used < (256 + 200) << 20,
        "host disk shrank by {data_used} / {tmp_used} bytes"
    );
    let size: u64 = std::fs::read_dir(&s.data_dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert!(size < 1 << 20, "the data dir holds {size} bytes");
    // The sandbox frees the space and works normally again.
    let r = s
        .run(&id, "import glob, os\nfor f in glob.glob('/home/user/bomb*') + glob.glob('/tmp/bomb*') + glob.glob('/dev/shm/bomb*'):\n    os.unlink(f)\nopen('ok.txt', 'w').write('fine')\nprint(open('ok.txt').read())")
        .await;
    assert_eq!(r["output"], "fine", "{r}");
    assert_sandbox_works(&s, &id, "a disk bomb").await;
}

#[tokio::test]
async fn fd_bomb_hits_the_open_files_limit() {
    let s = Server::start();
    let id = s.sandbox().await;
    let res = probe(
        &s,
        &id,
        r#"
import resource
fds, err = [], None
try:
    while True:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    err = e
res = {"type": type(err).__name__, "errno": err.errno, "opened": len(fds), "limit": resource.getrlimit(resource.RLIMIT_NOFILE)}
for fd in fds:
    os.close(fd)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, 1 << 20))
    res["raise"] = "raised"
except (OSError, ValueError) as e:
    res["raise"] = [type(e).__name__, str(e)]
socks = []
try:
    while True:
        socks.append(socket.socket())
except OSError as e:
    res["sockets"] = {"type": type(e).__name__, "errno": e.errno, "opened": len(socks)}
emit(res)
"#,
    )
    .await;
    assert_eq!(
        (res["type"].as_str(), res["errno"].as_i64()),
        (Some("OSError"), Some(EMFILE)),
        "{res:#}"
    );
    let opened = res["opened"].as_i64().unwrap();
    assert!((1000..1024).contains(&opened), "{res:#}");
    assert_eq!(res["limit"], json!([1024, 1024]));
    // Python reports setrlimit's EPERM as ValueError.
    assert_eq!(
        res["raise"],
        json!(["ValueError", "not allowed to raise maximum limit"]),
        "{res:#}"
    );
    assert_eq!(res["sockets"]["errno"], EMFILE, "{res:#}");
    assert_sandbox_works(&s, &id, "an fd bomb").await;
}

#[tokio::test]
async fn output_bomb_is_truncated() {
    let s = Server::start();
    let id = s.sandbox().await;
    let other = s.sandbox().await;
    let bomb = "import sys\nline = 'A' * (1 << 20)\nfor _ in range(50):\n    sys.stdout.write(line)\nfor _ in range(20):\n    sys.stderr.write('E' * (1 << 20))\nprint('done')";
    let run = s.run_with(&id, json!({"code": bomb, "timeout": 60}));
    let check = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_responsive(&s, &other, "an output bomb").await;
    };
    let (r, ()) = tokio::join!(run, check);
    assert_eq!(
        r["exit_code"],
        0,
        "{}",
        r["error"]
            .as_str()
            .unwrap()
            .chars()
            .take(300)
            .collect::<String>()
    );
    let marker = "[output truncated: the run wrote more than the limit of 1048576 bytes]";
    for stream in ["output", "error"] {
        let text = r[stream].as_str().unwrap();
        assert!(text.len() <= 1_100_000, "{stream} is {} bytes", text.len());
        assert!(
            text.ends_with(marker),
            "{stream} has no truncation marker: ...{}",
            &text[text.len().saturating_sub(200)..]
        );
    }
    assert!(r["output"].as_str().unwrap().starts_with("AAAA"));
    assert_sandbox_works(&s, &id, "an output bomb").await;
    let (st, _) = s.get("/health").await;
    assert_eq!(st, 200);
}

// ------------------------------------------------------------------------ 9. orphans

#[tokio::test]
async fn nothing_survives_deleting_the_sandbox() {
    let s = Server::start();
    let id = s.sandbox().await;
    let t = Instant::now();
    let r = s
        .run_with(
            &id,
            json!({"code": script(r#"
DEVNULL = subprocess.DEVNULL
subprocess.Popen(["sleep", "1000"], start_new_session=True, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
subprocess.Popen(["sleep", "1001"])  # keeps the run's stdout open
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        os.closerange(0, 1024)
        os.execvp("sleep", ["sleep", "1002"])
    os._exit(0)
os.waitpid(pid, 0)
subprocess.Popen([sys.executable, "-c", "import signal, time\nfor s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):\n    signal.signal(s, signal.SIG_IGN)\ntime.sleep(1000)"],
                 start_new_session=True, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
time.sleep(0.5)
emit({"uid_map": read("/proc/self/uid_map").split()})
"#), "timeout": 30}),
        )
        .await;
    assert_eq!(r["exit_code"], 0, "{r}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the run waited for its background processes: {r}"
    );
    let res = last_json(&r);
    let base: u64 = res["uid_map"][1].as_str().unwrap().parse().unwrap();
    assert!(base >= UID_BASE, "{res}");
    let before = host_processes_with_uid(base, base + MAPPED_IDS);
    let user_uid = (base + SANDBOX_UID).to_string();
    let sleeps = before
        .iter()
        .filter(|(_, name, uids)| name == "sleep" && uids.starts_with(&user_uid))
        .count();
    assert_eq!(
        sleeps, 3,
        "expected the 3 background sleeps on the host as uid {user_uid}: {before:?}"
    );

    let (st, v) = s.delete(&format!("/sandbox/{id}")).await;
    assert_eq!(st, 200, "{v}");
    let left = host_processes_left(base, base + MAPPED_IDS, Duration::from_secs(5), |_| true).await;
    assert!(
        left.is_empty(),
        "processes of the deleted sandbox survive on the host: {left:?} (before: {before:?})"
    );
}

// ------------------------------------------------------------------------ 10. SIGSTOP

#[tokio::test]
async fn stopping_itself_ends_in_a_timeout() {
    let s = Server::start();
    let id = s.sandbox().await;
    let r = s
        .run_with(
            &id,
            json!({"code": "import os, signal\nprint('stopping', flush=True)\nos.kill(os.getpid(), signal.SIGSTOP)\nprint('resumed')", "timeout": 3}),
        )
        .await;
    assert!(r["error"].as_str().unwrap().contains("timed out"), "{r}");
    assert_eq!(r["exit_code"], -1, "{r}");
    assert_eq!(r["output"], "stopping", "{r}");
    let ms = r["duration"].as_u64().unwrap();
    assert!((2900..6000).contains(&ms), "{r}");
    // Stopping the whole process group (and children) is no different.
    let r = s
        .run_with(
            &id,
            json!({"code": "import os, signal, subprocess\nsubprocess.Popen(['sleep', '100'])\nos.killpg(0, signal.SIGSTOP)", "timeout": 2}),
        )
        .await;
    assert!(r["error"].as_str().unwrap().contains("timed out"), "{r}");
    assert_sandbox_works(&s, &id, "SIGSTOP").await;
}

// ------------------------------------------------------------------------ 11. residue

#[tokio::test]
async fn sandboxes_share_nothing() {
    let s = Server::start();
    let a = s.sandbox().await;
    let res = probe(
        &s,
        &a,
        r#"
write("/home/user/residue.txt", "from A")
write("/tmp/residue.txt", "from A")
write("/dev/shm/residue", "from A")
libc = ctypes.CDLL(None, use_errno=True)
IPC_CREAT = 0o1000
shm = libc.shmget(0x1234, 4096, IPC_CREAT | 0o666)
msq = libc.msgget(0x1234, IPC_CREAT | 0o666)
sem = libc.semget(0x1234, 1, IPC_CREAT | 0o666)
holder = """
import socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\\0cerver-test")
s.listen(8)
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("127.0.0.1", 45678))
t.listen(8)
open("/tmp/holder-ready", "w").close()
while True:
    c, _ = s.accept()
    c.close()
"""
subprocess.Popen([sys.executable, "-c", holder], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(100):
    if os.path.exists("/tmp/holder-ready"):
        break
    time.sleep(0.05)
emit({"shm": shm, "msq": msq, "sem": sem, "ready": os.path.exists("/tmp/holder-ready")})
"#,
    )
    .await;
    assert!(
        res["shm"].as_i64().unwrap() >= 0
            && res["msq"].as_i64().unwrap() >= 0
            && res["sem"].as_i64().unwrap() >= 0,
        "{res}"
    );
    assert_eq!(res["ready"], true, "{res}");

    let check = r#"
libc = ctypes.CDLL(None, use_errno=True)
def ipc(fn):
    ctypes.set_errno(0)
    r = fn()
    return {"ok": r >= 0, "errno": ctypes.get_errno() if r < 0 else 0}
def connect(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(addr)
        return {"ok": True}
    except OSError as e:
        return {"ok": False, "errno": e.errno}
    finally:
        s.close()
procs = []
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            procs.append(read(f"/proc/{d}/cmdline").replace("\0", " "))
        except OSError:
            pass
emit({
    "files": {p: attempt(lambda: read(p)) for p in ["/home/user/residue.txt", "/tmp/residue.txt", "/dev/shm/residue"]},
    "shm": ipc(lambda: libc.shmget(0x1234, 0, 0)),
    "msq": ipc(lambda: libc.msgget(0x1234, 0)),
    "sem": ipc(lambda: libc.semget(0x1234, 0, 0)),
    "abstract": connect(socket.AF_UNIX, "\0cerver-test"),
    "tcp": connect(socket.AF_INET, ("127.0.0.1", 45678)),
    "holder_visible": any("cerver-test" in p for p in procs),
})
"#;
    // Sanity check: sandbox A itself still sees all of it (so the check below means something).
    let in_a = probe(&s, &a, check).await;
    for p in [
        "/home/user/residue.txt",
        "/tmp/residue.txt",
        "/dev/shm/residue",
    ] {
        assert_eq!(
            in_a["files"][p],
            json!({"ok": true, "value": "from A"}),
            "{in_a:#}"
        );
    }
    for k in ["shm", "msq", "sem", "abstract", "tcp"] {
        assert_eq!(in_a[k]["ok"], true, "{k} in A: {in_a:#}");
    }
    assert_eq!(in_a["holder_visible"], true, "{in_a:#}");

    let b = s.sandbox().await;
    let in_b = probe(&s, &b, check).await;
    for p in [
        "/home/user/residue.txt",
        "/tmp/residue.txt",
        "/dev/shm/residue",
    ] {
        assert_errno(&in_b["files"], p, &[ENOENT]);
    }
    for k in ["shm", "msq", "sem"] {
        assert_eq!(
            in_b[k],
            json!({"ok": false, "errno": ENOENT}),
            "{k} in B: {in_b:#}"
        );
    }
    assert_eq!(
        in_b["abstract"],
        json!({"ok": false, "errno": ECONNREFUSED}),
        "{in_b:#}"
    );
    assert_eq!(
        in_b["tcp"],
        json!({"ok": false, "errno": ECONNREFUSED}),
        "{in_b:#}"
    );
    assert_eq!(
        in_b["holder_visible"], false,
        "B sees A's processes: {in_b:#}"
    );
}

// ------------------------------------------------------------------------ 12. timeouts

#[tokio::test]
async fn timeout_kills_everything_the_run_started() {
    let s = Server::start();
    let id = s.sandbox().await;
    let r = s
        .run_with(
            &id,
            json!({"code": script(r#"
DEVNULL = subprocess.DEVNULL
subprocess.Popen(["sleep", "1000"])
subprocess.Popen(["sleep", "1001"], start_new_session=True, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        os.closerange(0, 1024)
        os.execvp("sleep", ["sleep", "1002"])
    os._exit(0)
os.waitpid(pid, 0)
time.sleep(0.3)
sleeps = 0
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            sleeps += read(f"/proc/{d}/cmdline").startswith("sleep\0")
        except OSError:
            pass
emit({"sleeps": sleeps, "uid_map": read("/proc/self/uid_map").split()})
while True:
    pass
"#), "timeout": 2}),
        )
        .await;
    assert!(r["error"].as_str().unwrap().contains("timed out"), "{r}");
    assert_eq!(r["exit_code"], -1, "{r}");
    let started = last_json(&r);
    assert_eq!(started["sleeps"], 3, "{r}");
    let base: u64 = started["uid_map"][1].as_str().unwrap().parse().unwrap();

    let res = probe(
        &s,
        &id,
        r#"
deadline = time.time() + 3
while True:
    left = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = read(f"/proc/{d}/cmdline")
            except OSError:
                continue
            if cmd.startswith("sleep\0"):
                left.append(cmd.replace("\0", " "))
    if not left or time.time() > deadline:
        break
    time.sleep(0.1)
emit({"left": left, "waited": round(3 - (deadline - time.time()), 2)})
"#,
    )
    .await;
    assert_eq!(
        res["left"],
        json!([]),
        "processes outlived the run's timeout: {res}"
    );
    // On the host: none of the run's processes is left (the sandbox user may have an idle,
    // pre-forked interpreter waiting for the next run).
    let uid = base + SANDBOX_UID;
    let left = host_processes_left(uid, uid + 1, Duration::from_secs(3), |(_, name, _)| {
        name != "python3"
    })
    .await;
    assert!(
        left.is_empty(),
        "host processes of the sandbox user remain: {left:?}"
    );
}

/// No descriptor of the server, the helper, the zygote or another run reaches user code: only
/// its own stdin, stdout and stderr, in the process and in what it spawns.
#[tokio::test]
async fn no_descriptor_leaks_into_user_code() {
    let s = Server::start();
    let id = s.sandbox().await;
    // Another run in flight, so that its descriptors exist while this one starts.
    let busy = s.sandbox().await;
    let s2 = &s;
    let background = async {
        s2.run_with(
            &busy,
            json!({"code": "import time\ntime.sleep(3)", "timeout": 10}),
        )
        .await
    };
    let probe = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let code = r#"
import json, os, subprocess
def fds():
    d = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    out = {}
    for name in os.listdir(d):
        if int(name) != d:
            try:
                out[name] = os.readlink(f"/proc/self/fd/{name}")
            except FileNotFoundError:
                pass  # listdir's own duplicate of `d`, already closed
            except OSError as e:
                out[name] = str(e)
    os.close(d)
    return out
child = subprocess.run(["ls", "/proc/self/fd"], capture_output=True, text=True).stdout.split()
print(json.dumps({"own": fds(), "child": sorted(child, key=int)}))
"#;
        s2.output(&id, code).await
    };
    let (_, out) = tokio::join!(background, probe);
    let v: Value = serde_json::from_str(&out).unwrap();
    let own = v["own"].as_object().unwrap();
    // Stdio and one more pipe: the run's own results pipe (rich results are written from its
    // process; it is close-on-exec, so what the run spawns does not get it).
    let extra: Vec<&String> = own
        .keys()
        .filter(|k| !["0", "1", "2"].contains(&k.as_str()))
        .collect();
    assert_eq!(extra.len(), 1, "{v}");
    for fd in ["0", "1", "2", extra[0].as_str()] {
        assert!(own[fd].as_str().unwrap().starts_with("pipe:"), "{v}");
    }
    // `ls` sees its stdio, its own directory fd (3) and nothing else.
    assert_eq!(v["child"], json!(["0", "1", "2", "3"]), "{v}");
}
