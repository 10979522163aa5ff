//! Connection exhaustion (issue 16) and graceful shutdown (issue 15) against the real binary,
//! on loopback only. Every test is bounded and stops by itself.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::json;

/// The test process opens thousands of sockets too.
fn raise_own_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

fn addr(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_string()
}

/// Whether the server has closed `conn` (a read sees EOF or a reset within `within`).
fn closed_by_server(conn: &mut TcpStream, within: Duration) -> bool {
    conn.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 408 or similar before the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_works_while_thousands_of_idle_and_slow_connections_are_open() {
    raise_own_fd_limit();
    let s = Server::start_with(&[
        "--header-read-timeout-secs",
        "300",
        "--idle-timeout-secs",
        "300",
    ]);
    let a = addr(&s);
    let t = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(&a).unwrap());
    }
    let mut slow = Vec::new();
    for _ in 0..1000 {
        let mut c = TcpStream::connect(&a).unwrap();
        write!(
            c,
            "POST /sandbox HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{",
            s.key
        )
        .unwrap();
        slow.push(c);
    }
    eprintln!("3,000 connections opened in {:?}", t.elapsed());
    let t = Instant::now();
    let (status, _) = s.get("/health").await;
    assert_eq!(status, 200);
    let id = s.sandbox().await;
    assert_eq!(s.output(&id, "print(6 * 7)").await, "42");
    eprintln!("health, create and run with them open: {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    // They were all still open: the server did not get there by dropping them.
    let mut open = 0;
    for c in idle
        .iter_mut()
        .step_by(100)
        .chain(slow.iter_mut().step_by(100))
    {
        if !closed_by_server(c, Duration::from_millis(20)) {
            open += 1;
        }
    }
    assert_eq!(open, 30);
    drop(idle);
    drop(slow);
}

#[tokio::test]
async fn idle_and_headerless_connections_are_closed_and_the_cap_holds() {
    let s = Server::start_with(&[
        "--header-read-timeout-secs",
        "1",
        "--idle-timeout-secs",
        "2",
        "--max-connections",
        "20",
    ]);
    let a = addr(&s);
    // A connection that never sends a request head is closed.
    let mut silent = TcpStream::connect(&a).unwrap();
    let t = Instant::now();
    assert!(closed_by_server(&mut silent, Duration::from_secs(10)));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Half a head, then nothing: closed too.
    let mut partial = TcpStream::connect(&a).unwrap();
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(closed_by_server(&mut partial, Duration::from_secs(10)));
    // A keep-alive connection idle after its response is closed.
    let mut kept = TcpStream::connect(&a).unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let t = Instant::now();
    assert!(closed_by_server(&mut kept, Duration::from_secs(10)));
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    // The cap: past 20 open connections, a new one is closed at once.
    let mut held: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(&a).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(&a).unwrap();
    assert!(closed_by_server(&mut extra, Duration::from_millis(500)));
    // Once the held ones time out, the server answers again.
    for c in &mut held {
        assert!(closed_by_server(c, Duration::from_secs(10)));
    }
    let (status, _) = s.get("/health").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn shutdown_lets_runs_finish_within_the_grace_period() {
    let s = Server::start_with(&["--shutdown-grace-secs", "5"]);
    let (short_id, long_id) = (s.sandbox().await, s.sandbox().await);
    let run = |id: String, code: &'static str| {
        let client = s.client.clone();
        let url = s.url(&format!("/sandbox/{id}/run"));
        tokio::spawn(async move {
            let r = client.post(url).json(&json!({ "code": code })).send().await;
            match r {
                Ok(r) => {
                    let status = r.status().as_u16();
                    (status, r.json::<serde_json::Value>().await.ok())
                }
                Err(e) => panic!("the run got no answer: {e}"),
            }
        })
    };
    let short = run(short_id, "import time\ntime.sleep(2)\nprint('done')");
    let long = run(long_id, "import time\ntime.sleep(60)\nprint('never')");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let t = Instant::now();
    let stopping =
        tokio::task::spawn_blocking(move || s.stop_keeping_data(Duration::from_secs(30)));
    let (status, body) = short.await.unwrap();
    assert_eq!(status, 200, "{body:?}");
    let body = body.unwrap();
    assert_eq!(body["output"], "done", "{body}");
    let (status, body) = long.await.unwrap();
    let waited = t.elapsed();
    eprintln!("long run ended after {waited:?}: {status} {body:?}");
    assert!(waited >= Duration::from_secs(4), "{waited:?}");
    let body = body.expect("a JSON answer");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(!error.is_empty(), "{status} {body}");
    assert_ne!(body["output"], "never");
    let (data_dir, exit) = stopping.await.unwrap();
    assert!(exit.is_some_and(|e| e.success()), "{exit:?}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    // The next start on the same data dir finds everything consistent.
    let s = Server::start_in(data_dir, &[]);
    let id = s.sandbox().await;
    assert_eq!(s.output(&id, "print('again')").await, "again");
}
