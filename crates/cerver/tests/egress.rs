//! Where a containers sandbox may send traffic, against the real binary: platform endpoints on
//! public addresses, the operator's lists, networks attached after the server started.
//!
//! Every destination is a decoy on this machine: a network namespace this test creates, behind
//! a veth pair, holding the address on its loopback interface (this kernel may lack `dummy`); the host routes the address there for
//! the test's duration, so no probe can leave the machine. The firewall is host-wide, so these
//! tests run one at a time.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::json;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the server may take to notice a change (it re-reads every 5 s).
const RECHECK: Duration = Duration::from_secs(12);

/// Python that tries a TCP connection and prints `open`, `refused` or `blocked`.
fn probe(addr: &str, port: u16) -> String {
    format!(
        "import socket\ns = socket.socket()\ns.settimeout(2)\ntry:\n    s.connect((\"{addr}\", {port}))\n    \
         print(\"open\")\nexcept ConnectionRefusedError:\n    print(\"refused\")\nexcept OSError as e:\n    \
         print(\"blocked\", type(e).__name__)\n"
    )
}

fn sh(cmd: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .unwrap()
        .success();
    assert!(ok, "{cmd}");
}

fn quiet(cmd: &str) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stderr(std::process::Stdio::null())
        .status();
}

/// A network namespace with a TCP listener on every address, reachable from the host through
/// the veth pair `<host_end>` ⇄ `eth0` on `<net>.1/24` ⇄ `<net>.2/24`; `decoys` are extra
/// addresses on the loopback interface inside, routed by the host via `<net>.2`.
struct Decoy {
    name: String,
    host_end: String,
    decoys: Vec<String>,
    listener: Option<std::process::Child>,
    port: u16,
}

impl Decoy {
    fn new(tag: &str, net: &str, decoys: &[&str]) -> Decoy {
        let n = std::process::id() % 200 + 20;
        let name = format!("cveg{tag}{n}");
        let host_end = format!("cvegh{tag}{n}");
        for d in decoys {
            quiet(&format!("ip route del {d}/32"));
        }
        quiet(&format!("ip netns del {name}"));
        quiet(&format!("ip link del {host_end}"));
        let mut decoy = Decoy {
            name: name.clone(),
            host_end: host_end.clone(),
            decoys: decoys.iter().map(|d| d.to_string()).collect(),
            listener: None,
            port: 8766,
        };
        sh(&format!("ip netns add {name}"));
        sh(&format!(
            "ip link add {host_end} type veth peer name eth0 netns {name} && \
             ip addr add {net}.1/24 dev {host_end} && ip link set {host_end} up && \
             ip -n {name} addr add {net}.2/24 dev eth0 && ip -n {name} link set eth0 up && \
             ip -n {name} link set lo up && ip -n {name} route add default via {net}.1"
        ));
        for d in decoys {
            sh(&format!(
                "ip -n {name} addr add {d}/32 dev lo && ip route add {d}/32 via {net}.2"
            ));
        }
        let port = decoy.port;
        decoy.listener = Some(
            Command::new("ip")
                .args(["netns", "exec", &name, "python3", "-c"])
                .arg(format!(
                    "import socket\ns = socket.socket()\ns.bind(('0.0.0.0', {port}))\ns.listen(16)\n\
                     while True:\n    s.accept()[0].close()"
                ))
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let first = decoys.first().map_or(format!("{net}.2"), |d| d.to_string());
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect_timeout(
            &format!("{first}:{port}").parse().unwrap(),
            Duration::from_millis(200),
        )
        .is_err()
        {
            assert!(Instant::now() < deadline, "decoy listener did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        decoy
    }
}

impl Drop for Decoy {
    fn drop(&mut self) {
        if let Some(listener) = &mut self.listener {
            let _ = listener.kill();
            let _ = listener.wait();
        }
        for d in &self.decoys {
            quiet(&format!("ip route del {d}/32"));
        }
        quiet(&format!("ip netns del {}", self.name));
        quiet(&format!("ip link del {}", self.host_end));
    }
}

/// Probes `addr` from `sandbox` until it answers `want` (the server re-applies within
/// [`RECHECK`]); the last answer.
async fn probe_until(s: &Server, sandbox: &str, addr: &str, port: u16, want: &str) -> String {
    let deadline = Instant::now() + RECHECK;
    loop {
        let out = s.output(sandbox, &probe(addr, port)).await;
        if out.starts_with(want) || Instant::now() > deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The private ranges only: what an operator's list might look like.
const MINIMAL: &str = "10.0.0.0/8\n172.16.0.0/12\n192.168.0.0/16\n169.254.0.0/16 # metadata\n";

#[tokio::test]
async fn platform_endpoints_are_blocked_and_the_list_is_the_operators() {
    let _serial = SERIAL.lock().await;
    let decoy = Decoy::new("a", "172.31.250", &["168.63.129.16", "192.88.99.7"]);
    let port = decoy.port;

    // The built-in list: Azure's WireServer and the 6to4 relay range are out of reach.
    let s = Server::start();
    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    for addr in ["168.63.129.16", "192.88.99.7"] {
        let out = s.output(&id, &probe(addr, port)).await;
        assert!(
            out.starts_with("blocked"),
            "{addr} with the built-in list: {out}"
        );
    }
    drop(s);

    // An operator's list without them: both reachable (so the probes above could succeed).
    let dir = std::env::temp_dir().join(format!("cerver-egress-{}", common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("blocked.txt");
    std::fs::write(&list, MINIMAL).unwrap();
    let s = Server::start_with(&["--egress-blocklist", list.to_str().unwrap()]);
    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    for addr in ["168.63.129.16", "192.88.99.7"] {
        let out = s.output(&id, &probe(addr, port)).await;
        assert_eq!(out.trim(), "open", "{addr} with a list without it");
    }
    // An entry added to the list while the server runs applies within seconds.
    std::fs::write(&list, format!("{MINIMAL}192.88.99.7/32 # added\n")).unwrap();
    let out = probe_until(&s, &id, "192.88.99.7", port, "blocked").await;
    assert!(out.starts_with("blocked"), "after adding the entry: {out}");
    let out = s.output(&id, &probe("168.63.129.16", port)).await;
    assert_eq!(out.trim(), "open", "the other entry is unaffected");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_allow_list_admits_only_its_destinations() {
    let _serial = SERIAL.lock().await;
    let decoy = Decoy::new("b", "172.31.251", &["203.0.113.8", "203.0.113.9"]);
    let dir = std::env::temp_dir().join(format!("cerver-egress-{}", common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let (block, allow) = (dir.join("blocked.txt"), dir.join("allowed.txt"));
    std::fs::write(&block, MINIMAL).unwrap();
    std::fs::write(&allow, "203.0.113.8\n").unwrap();
    let s = Server::start_with(&[
        "--egress-blocklist",
        block.to_str().unwrap(),
        "--egress-allowlist",
        allow.to_str().unwrap(),
    ]);
    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    let out = s.output(&id, &probe("203.0.113.8", decoy.port)).await;
    assert_eq!(out.trim(), "open", "listed destination");
    let out = s.output(&id, &probe("203.0.113.9", decoy.port)).await;
    assert!(out.starts_with("blocked"), "unlisted destination: {out}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_network_attached_after_start_is_blocked() {
    let _serial = SERIAL.lock().await;
    let dir = std::env::temp_dir().join(format!("cerver-egress-{}", common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("blocked.txt");
    // 198.51.100.0/24 is on no list: only being attached to the host blocks it.
    std::fs::write(&list, MINIMAL).unwrap();
    let s = Server::start_with(&["--egress-blocklist", list.to_str().unwrap()]);
    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    // Attached only now, after the server read the host's networks.
    let decoy = Decoy::new("c", "198.51.100", &[]);
    let peer = "198.51.100.2";
    assert!(
        std::net::TcpStream::connect_timeout(
            &format!("{peer}:{}", decoy.port).parse().unwrap(),
            Duration::from_secs(2)
        )
        .is_ok(),
        "the host reaches its new neighbour"
    );
    tokio::time::sleep(RECHECK).await;
    let out = s.output(&id, &probe(peer, decoy.port)).await;
    assert!(
        out.starts_with("blocked"),
        "a neighbour attached after start: {out}"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
