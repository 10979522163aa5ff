//! A containers sandbox's egress volume is bounded on the host: bandwidth and new connections
//! per second, lower for the trial plan, measured from inside sandboxes against a peer on this
//! machine; nothing of the bounds is left after delete.
//!
//! The peer is a network namespace this test creates, behind a veth pair, holding a
//! documentation address (`203.0.113.177`, on no block list) on its loopback interface; the
//! host routes that one address there for the test's duration, so no packet leaves the
//! machine. The host-wide firewall lists are left as they are.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::json;

const PEER: &str = "203.0.113.177";
const SINK_PORT: u16 = 9901;
const ACCEPT_PORT: u16 = 9902;

/// The peer: port 9901 counts what a connection sends and answers the count after its EOF;
/// port 9902 accepts and closes.
const PEER_PY: &str = r#"
import socket, threading
def sink(c):
    n = 0
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        n += len(b)
    c.sendall(str(n).encode())
    c.close()
def serve(port, handle):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(1024)
    while True:
        c = s.accept()[0]
        handle(c)
threading.Thread(target=serve, args=(9902, lambda c: c.close()), daemon=True).start()
serve(9901, lambda c: threading.Thread(target=sink, args=(c,), daemon=True).start())
"#;

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

struct Peer {
    name: String,
    host_end: String,
    process: std::process::Child,
}

impl Peer {
    fn start() -> Peer {
        let n = std::process::id() % 200 + 20;
        let (name, host_end) = (format!("cverate{n}"), format!("cverateh{n}"));
        let net = "172.31.253";
        quiet(&format!("ip route del {PEER}/32"));
        quiet(&format!("ip netns del {name}"));
        quiet(&format!("ip link del {host_end}"));
        sh(&format!(
            "ip netns add {name} && \
             ip link add {host_end} type veth peer name eth0 netns {name} && \
             ip addr add {net}.1/24 dev {host_end} && ip link set {host_end} up && \
             ip -n {name} addr add {net}.2/24 dev eth0 && ip -n {name} link set eth0 up && \
             ip -n {name} link set lo up && ip -n {name} route add default via {net}.1 && \
             ip -n {name} addr add {PEER}/32 dev lo && ip route add {PEER}/32 via {net}.2"
        ));
        let process = Command::new("ip")
            .args(["netns", "exec", &name, "python3", "-c", PEER_PY])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = format!("{PEER}:{ACCEPT_PORT}").parse().unwrap();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "the peer did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        Peer {
            name,
            host_end,
            process,
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        quiet(&format!("ip route del {PEER}/32"));
        quiet(&format!("ip netns del {}", self.name));
        quiet(&format!("ip link del {}", self.host_end));
    }
}

/// Sends as fast as it can for 1.5 s (emptying the policer's bucket, which holds a second's
/// worth), then for 3 s on a second connection; prints Mbit/s the peer received on the second
/// (over the time until the peer's count came back) and the sandbox's uid-range slot (from its
/// address).
fn throughput_code() -> String {
    format!(
        r#"
import socket, time
buf = b"x" * 65536
def send(seconds):
    s = socket.create_connection(("{PEER}", {SINK_PORT}), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 << 10)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        s.sendall(buf)
    s.shutdown(socket.SHUT_WR)
    got = int(s.recv(64).decode())
    return s, got, time.monotonic() - t0
send(1.5)
s, got, dt = send(3)
addr = s.getsockname()[0]
a = [int(x) for x in addr.split(".")]
slot = ((a[2] << 8) + a[3] - 2) // 4
print(got * 8 / dt / 1e6, dt, slot)
"#
    )
}

/// Starts 250 connection attempts a second for 2 s (non-blocking), waits 0.5 s, and prints
/// how many were started, how many got through, and the seconds it all took.
fn connections_code() -> String {
    format!(
        r#"
import socket, time
socks = []
t0 = time.monotonic()
while time.monotonic() - t0 < 2.0:
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("{PEER}", {ACCEPT_PORT}))
    except BlockingIOError:
        pass
    socks.append(s)
    time.sleep(0.004)
time.sleep(0.5)
ok = 0
for s in socks:
    try:
        s.getpeername()
        ok += 1
    except OSError:
        pass
    s.close()
print(len(socks), ok, time.monotonic() - t0)
"#
    )
}

fn table_exists(slot: u32) -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", &format!("cerver_rate_{slot}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

struct Measured {
    mbit: f64,
    seconds: f64,
    slot: u32,
    attempts: u64,
    connected: u64,
    conn_seconds: f64,
}

async fn measure(s: &Server, client: &reqwest::Client, sandbox: &str) -> Measured {
    let run = |code: String| {
        let url = s.url(&format!("/sandbox/{sandbox}/run"));
        async move {
            let v: serde_json::Value = client
                .post(url)
                .json(&json!({"code": code}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(v["exit_code"], 0, "{v}");
            v["output"].as_str().unwrap().trim().to_string()
        }
    };
    let out = run(throughput_code()).await;
    let f: Vec<&str> = out.split_whitespace().collect();
    let conns = run(connections_code()).await;
    let c: Vec<&str> = conns.split_whitespace().collect();
    Measured {
        mbit: f[0].parse().unwrap(),
        seconds: f[1].parse().unwrap(),
        slot: f[2].parse().unwrap(),
        attempts: c[0].parse().unwrap(),
        connected: c[1].parse().unwrap(),
        conn_seconds: c[2].parse().unwrap(),
    }
}

/// The most the policer of `mbit` lets through, on average, over `seconds`: its bucket holds
/// at most one second of rate (nft's byte limit), which the gap between the two connections
/// may have refilled under a loaded machine, plus 5 % for timing.
fn bandwidth_bound(mbit: f64, seconds: f64) -> f64 {
    mbit * (seconds + 1.0) / seconds * 1.05
}

#[tokio::test]
async fn egress_bandwidth_and_connection_rate_are_bounded_per_plan() {
    let _peer = Peer::start();
    let s = Server::start_with(&[
        "--egress-mbit",
        "40",
        "--egress-connections-per-second",
        "40",
        "--trial-egress-mbit",
        "8",
        "--trial-egress-connections-per-second",
        "10",
    ]);
    let trial = common::client_with_key(&common::create_key(
        &s.data_dir,
        "trial@example.com",
        "trial",
    ));
    let (status, v) = {
        let r = trial
            .post(s.url("/sandbox"))
            .json(&json!({"engine": "containers"}))
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 200, "{v}");
    let trial_id = v["sandbox_id"].as_str().unwrap().to_string();
    let pro_id = s.sandbox_with(json!({"engine": "containers"})).await;

    let t = measure(&s, &trial, &trial_id).await;
    let p = measure(&s, &s.client, &pro_id).await;
    eprintln!(
        "trial: {:.1} Mbit/s over {:.1} s, {}/{} connections in {:.1} s; \
         pro: {:.1} Mbit/s over {:.1} s, {}/{} connections in {:.1} s",
        t.mbit,
        t.seconds,
        t.connected,
        t.attempts,
        t.conn_seconds,
        p.mbit,
        p.seconds,
        p.connected,
        p.attempts,
        p.conn_seconds
    );
    // Bandwidth: under the plan's rate (plus its burst), and not absurdly below it.
    assert!(
        t.mbit <= bandwidth_bound(8.0, t.seconds),
        "trial: {}",
        t.mbit
    );
    assert!(
        t.mbit >= 8.0 * 0.3,
        "trial throughput collapsed: {}",
        t.mbit
    );
    assert!(
        p.mbit <= bandwidth_bound(40.0, p.seconds),
        "pro: {}",
        p.mbit
    );
    assert!(
        p.mbit >= 2.0 * 8.0,
        "the pro plan's bound is higher: {}",
        p.mbit
    );
    // Connections: at most the burst (twice the rate) plus the rate over the time taken.
    assert!(t.attempts >= 300, "attempts: {}", t.attempts);
    let most = |rate: f64, secs: f64| (2.0 * rate + rate * secs).ceil() as u64 + 2;
    assert!(
        t.connected <= most(10.0, t.conn_seconds),
        "trial connections: {}",
        t.connected
    );
    assert!(t.connected >= 10, "trial connections: {}", t.connected);
    assert!(
        p.connected <= most(40.0, p.conn_seconds),
        "pro connections: {}",
        p.connected
    );
    assert!(
        p.connected > most(10.0, t.conn_seconds),
        "pro connections above the trial bound: {}",
        p.connected
    );

    // Nothing of the bounds outlives the sandboxes.
    for (id, slot, client) in [(&trial_id, t.slot, &trial), (&pro_id, p.slot, &s.client)] {
        assert!(
            table_exists(slot),
            "table of slot {slot} while the sandbox lives"
        );
        let r = client
            .delete(s.url(&format!("/sandbox/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(!table_exists(slot), "table of slot {slot} after delete");
    }
}
