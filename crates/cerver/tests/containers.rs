//! The containers engine against the real binary: package installs (from the real index),
//! in-place upgrades, and the network: egress works, while the host, its neighbours, private
//! ranges and other sandboxes are unreachable. Traffic only goes to this machine's own
//! addresses, to a network namespace this test creates, and to PyPI.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::json;

/// The sandbox's own address and its gateway, as seen from inside.
const ADDRESSES: &str = r#"
import socket, struct
gw = None
for line in open("/proc/net/route").read().splitlines()[1:]:
    f = line.split()
    if f[1] == "00000000":
        gw = socket.inet_ntoa(struct.pack("<L", int(f[2], 16)))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((gw, 9))  # UDP connect sends nothing; it picks the source address
print(s.getsockname()[0], gw)
"#;

/// Python that tries a TCP connection and prints `open`, `refused` or `blocked`.
fn probe(addr: &str, port: u16) -> String {
    format!(
        r#"
import socket
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("{addr}", {port}))
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("blocked", type(e).__name__)
"#
    )
}

async fn addresses(s: &Server, id: &str) -> (Ipv4Addr, Ipv4Addr) {
    let out = s.output(id, ADDRESSES).await;
    let mut parts = out.split_whitespace();
    (
        parts.next().unwrap().parse().unwrap(),
        parts.next().unwrap().parse().unwrap(),
    )
}

/// The host-side interface of a sandbox with address `addr` (a /30 per slot from 10.213.0.0).
fn host_if(addr: Ipv4Addr) -> String {
    let slot = (u32::from(addr) - u32::from(Ipv4Addr::new(10, 213, 0, 0))) / 4;
    format!("cerv{slot}")
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// This host's global IPv4 addresses.
fn host_addresses() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next())
        .filter(|a| !a.starts_with("10.213."))
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn installs_a_real_package_into_the_sandbox_venv() {
    let s = Server::start();
    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/install"),
            json!({"package": "six==1.16.0"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["upgraded"], false);
    assert!(v["output"].as_str().unwrap().contains("six==1.16.0"), "{v}");
    let out = s
        .output(
            &id,
            "import six, sys, subprocess\nprint(six.__version__, six.__file__)\n\
             print(subprocess.run(['python', '-c', 'import six; print(six.__version__)'], \
             capture_output=True, text=True).stdout.strip())",
        )
        .await;
    assert!(
        out.starts_with("1.16.0 /opt/venv/lib/python3"),
        "imported from the venv: {out}"
    );
    assert!(
        out.trim_end().ends_with("1.16.0"),
        "`python` is the venv's: {out}"
    );
    // The host fetched the wheel into the shared cache, which the sandbox cannot write.
    let wheels: Vec<_> = std::fs::read_dir("/var/cache/cerver/wheels")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        wheels.iter().any(|w| w.starts_with("six-1.16.0-")),
        "{wheels:?}"
    );
    let out = s
        .output(
            &id,
            "import os\ntry:\n    open('/opt/cerver/wheels/x.whl', 'w')\nexcept OSError as e:\n    print(type(e).__name__)",
        )
        .await;
    assert!(out.contains("OSError") || out.contains("Error"), "{out}");

    // A second sandbox installs the same package from the shared cache.
    let other = s.sandbox_with(json!({"engine": "containers"})).await;
    let started = Instant::now();
    let (status, v) = s
        .post(
            &format!("/sandbox/{other}/install"),
            json!({"packages": "six==1.16.0"}),
        )
        .await;
    assert_eq!((status, v["success"].as_bool()), (200, Some(true)), "{v}");
    eprintln!("second install took {:?}: {v}", started.elapsed());
    // It came from the cache, whose listing no sandbox sees: its selections are bound at
    // /opt/cerver/wheels (0711) and each install gets only its own.
    let out = s
        .output(
            &other,
            "import os\ntry:\n    print(os.listdir('/opt/cerver/wheels'))\nexcept PermissionError:\n    print('hidden')",
        )
        .await;
    assert_eq!(out.trim(), "hidden");
    assert_eq!(
        s.output(&other, "import six; print(six.__version__)")
            .await
            .trim(),
        "1.16.0"
    );

    // An unknown package is a failed install (200, success false, the installer's message).
    let (status, v) = s
        .post(
            &format!("/sandbox/{other}/install"),
            json!({"packages": "cerver-no-such-package-zz9"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["success"], false, "{v}");
    assert!(!v["error"].as_str().unwrap_or("").is_empty(), "{v}");
}

#[tokio::test]
async fn a_workers_sandbox_is_upgraded_in_place() {
    let s = Server::start();
    let id = s.sandbox_with(json!({"envs": {"KEEP": "yes"}})).await;
    let (status, _) = s
        .post(
            &format!("/sandbox/{id}/files"),
            json!({"path": "sub/data.txt", "content": "kept"}),
        )
        .await;
    assert_eq!(status, 200);
    // Workers sandboxes have no way out (not even to this host).
    let decoy = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = decoy.local_addr().unwrap().port();
    for host in host_addresses() {
        let out = s.output(&id, &probe(&host, port)).await;
        assert!(out.starts_with("blocked"), "{out}");
    }

    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/install"),
            json!({"package": "six==1.16.0"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["success"].as_bool(), v["upgraded"].as_bool()),
        (Some(true), Some(true)),
        "{v}"
    );
    let (status, info) = s.get(&format!("/sandbox/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(info["engine"], "containers");
    let out = s
        .output(
            &id,
            "import os, six\nprint(open('sub/data.txt').read(), os.environ['KEEP'], six.__version__)",
        )
        .await;
    assert_eq!(out.trim(), "kept yes 1.16.0");
    // Installing again does not upgrade again.
    let (_, v) = s
        .post(
            &format!("/sandbox/{id}/install"),
            json!({"package": "six==1.16.0"}),
        )
        .await;
    assert_eq!(v["upgraded"], false, "{v}");
}

#[tokio::test]
async fn egress_reaches_the_index_but_nothing_on_this_machine() {
    let s = Server::start();
    let a = s.sandbox_with(json!({"engine": "containers"})).await;
    let b = s.sandbox_with(json!({"engine": "containers"})).await;
    let (addr_a, gateway) = addresses(&s, &a).await;
    let (addr_b, _) = addresses(&s, &b).await;
    assert_ne!(addr_a, addr_b);

    // The normal route out works: DNS through the host's resolver, TCP to the index.
    let out = s
        .output(
            &a,
            "import socket\ns = socket.create_connection(('pypi.org', 443), timeout=10)\nprint('ok')",
        )
        .await;
    assert_eq!(out.trim(), "ok");

    // Decoy listeners on the host, on every address.
    let decoy = TcpListener::bind("0.0.0.0:0").unwrap();
    let decoy_port = decoy.local_addr().unwrap().port();
    let server_port: u16 = s.base.rsplit(':').next().unwrap().parse().unwrap();
    let mut targets: Vec<(String, u16)> = vec![
        (gateway.to_string(), decoy_port),
        (gateway.to_string(), server_port),
    ];
    for host in host_addresses() {
        targets.push((host.clone(), decoy_port));
        targets.push((host, server_port));
    }
    for (addr, port) in &targets {
        let out = s.output(&a, &probe(addr, *port)).await;
        assert!(
            out.starts_with("blocked"),
            "{addr}:{port} from a sandbox: {out}"
        );
    }

    // Another sandbox: listening in b, unreachable from a (b itself reaches it).
    let listen = "import socket, time\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                  s.bind(('0.0.0.0', 8099))\ns.listen()\ns.settimeout(6)\ntry:\n    s.accept()\n    print('accepted')\n\
                  except OSError:\n    print('nobody')";
    let probe_b = probe(&addr_b.to_string(), 8099);
    let (from_a, listener) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            s.output(&a, &probe_b).await
        },
        s.output(&b, listen)
    );
    assert!(
        from_a.starts_with("blocked"),
        "sandbox to sandbox: {from_a}"
    );
    assert_eq!(listener.trim(), "nobody");

    // A private-range neighbour on this machine: a network namespace behind a veth pair.
    let ns = Netns::new();
    let out = s.output(&a, &probe(ns.peer, ns.port)).await;
    assert!(out.starts_with("blocked"), "private neighbour: {out}");
    // ... which the host itself does reach (so the probe above could have succeeded).
    assert!(
        std::net::TcpStream::connect_timeout(
            &format!("{}:{}", ns.peer, ns.port).parse().unwrap(),
            Duration::from_secs(2)
        )
        .is_ok()
    );
    drop(decoy);
}

#[tokio::test]
async fn delete_and_crash_leave_no_interfaces() {
    let s = Server::start();
    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    let (addr, _) = addresses(&s, &id).await;
    let name = host_if(addr);
    assert!(link_exists(&name), "{name} while the sandbox lives");
    let (status, _) = s.delete(&format!("/sandbox/{id}")).await;
    assert_eq!(status, 200);
    wait_until("the veth pair to go with the sandbox", || {
        !link_exists(&name)
    });

    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    let (addr, _) = addresses(&s, &id).await;
    let name = host_if(addr);
    assert!(link_exists(&name));
    s.crash();
    wait_until("the veth pair to go after a server crash", || {
        !link_exists(&name)
    });
}

/// A network namespace with a TCP listener on 172.30.<n>.2, reachable from the host through a
/// veth pair: a stand-in for a private neighbour, entirely on this machine.
struct Netns {
    name: String,
    peer: &'static str,
    port: u16,
    listener: std::process::Child,
}

impl Netns {
    fn new() -> Netns {
        let n = std::process::id() % 200 + 20;
        let name = format!("cvtest{n}");
        let host_end = format!("cvth{n}");
        let peer: &'static str = Box::leak(format!("172.30.{n}.2").into_boxed_str());
        let sh = |args: &str| {
            let ok = Command::new("sh")
                .arg("-c")
                .arg(args)
                .status()
                .unwrap()
                .success();
            assert!(ok, "{args}");
        };
        // Leftovers of an earlier, interrupted run (usually absent).
        for args in [["netns", "del", &name], ["link", "del", &host_end]] {
            let _ = Command::new("ip")
                .args(args)
                .stderr(std::process::Stdio::null())
                .status();
        }
        sh(&format!("ip netns add {name}"));
        sh(&format!(
            "ip link add {host_end} type veth peer name eth0 netns {name} && \
             ip addr add 172.30.{n}.1/24 dev {host_end} && ip link set {host_end} up && \
             ip -n {name} addr add {peer}/24 dev eth0 && ip -n {name} link set eth0 up && \
             ip -n {name} link set lo up && ip -n {name} route add default via 172.30.{n}.1"
        ));
        let port = 8765;
        let listener = Command::new("ip")
            .args(["netns", "exec", &name, "python3", "-c"])
            .arg(format!(
                "import socket\ns = socket.socket()\ns.bind(('{peer}', {port}))\ns.listen(16)\n\
                 while True:\n    s.accept()[0].close()"
            ))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect_timeout(
            &format!("{peer}:{port}").parse().unwrap(),
            Duration::from_millis(200),
        )
        .is_err()
        {
            assert!(Instant::now() < deadline, "netns listener did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        Netns {
            name,
            peer,
            port,
            listener,
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.listener.kill();
        let _ = self.listener.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[tokio::test]
async fn containers_work_under_a_private_data_dir() {
    // A data dir below a directory only host root may enter (like a 0700 temp dir).
    let parent = std::env::temp_dir().join(format!("cerver-private-{}", common::rand_suffix()));
    std::fs::create_dir_all(&parent).unwrap();
    std::fs::set_permissions(&parent, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let s = Server::start_in(parent.join("data"), &[]);
    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    let out = s
        .output(
            &id,
            "import os\nprint(os.access('/opt/cerver/uv', os.X_OK), os.path.isdir('/opt/cerver/wheels'))",
        )
        .await;
    // Bound (entered, never listed: see `installs_a_real_package_into_the_sandbox_venv`).
    assert_eq!(out.trim(), "True True");
    drop(s);
    let _ = std::fs::remove_dir_all(&parent);
}

#[tokio::test]
async fn an_upgrade_is_safe_from_the_workspace_it_carries() {
    let s = Server::start();
    // A module shadowing the one the upgrade uses to pack the workspace: it must not run.
    let id = s.sandbox().await;
    let (status, _) = s
        .post(
            &format!("/sandbox/{id}/files"),
            json!({"path": "tarfile.py", "content": "raise SystemExit('hijacked')"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/install"),
            json!({"package": "six==1.16.0"}),
        )
        .await;
    assert_eq!((status, v["upgraded"].as_bool()), (200, Some(true)), "{v}");
    let out = s.output(&id, "print(open('tarfile.py').read())").await;
    assert_eq!(out.trim(), "raise SystemExit('hijacked')");

    // A workspace that cannot be packed (a file its user cannot read): a 409 that says so,
    // and the sandbox stays as it was.
    let id = s.sandbox().await;
    s.output(
        &id,
        "import os\nopen('secret', 'w').write('x')\nos.chmod('secret', 0)",
    )
    .await;
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/install"),
            json!({"package": "six==1.16.0"}),
        )
        .await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("workspace"), "{v}");
    let (_, info) = s.get(&format!("/sandbox/{id}")).await;
    assert_eq!(info["engine"], "workers");
    assert_eq!(s.output(&id, "print(6 * 7)").await.trim(), "42");
}

#[tokio::test]
async fn deleting_during_an_upgrade_leaves_nothing_behind() {
    let s = Server::start();
    let id = s.sandbox().await;
    // Enough workspace for the upgrade to take a moment.
    s.output(&id, "open('big', 'wb').write(b'x' * (64 << 20))")
        .await;
    let before = common::sandbox_cgroups(&s.cgroup_dir()).len();
    let install = {
        let client = s.client.clone();
        let url = s.url(&format!("/sandbox/{id}/install"));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"package": "six==1.16.0"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, _) = s.delete(&format!("/sandbox/{id}")).await;
    assert_eq!(status, 200);
    let install_status = install.await.unwrap();
    assert!(
        [200, 404].contains(&install_status),
        "install answered {install_status}"
    );
    let (status, _) = s.get(&format!("/sandbox/{id}")).await;
    assert_eq!(status, 404, "a deleted sandbox must stay deleted");
    let (_, list) = s.get("/sandboxes").await;
    assert_eq!(
        list["sandboxes"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );
    // Neither the old nor the new sandbox is left running (the pool may refill meanwhile).
    wait_until("the sandboxes of the upgrade to be gone", || {
        common::sandbox_cgroups(&s.cgroup_dir()).len() < before
    });
}
