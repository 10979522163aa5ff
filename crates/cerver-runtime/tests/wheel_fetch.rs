//! The host's wheel fetch against a package index on loopback: the size caps stop pip while it
//! downloads, and a requirement naming a file finds none of the host's.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cerver_runtime::RuntimeConfig;
use cerver_runtime::wheelhouse::download;

/// A package index with one project, `big`, whose only wheel is 200 MiB served at about
/// 20 MiB/s (a full download takes ~10 s).
const INDEX_PY: &str = r#"
import http.server, time
WHEEL = "big-1.0-py3-none-any.whl"
SIZE = 200 << 20
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        if self.path.rstrip("/") == "/simple/big":
            body = f'<a href="/files/{WHEEL}">{WHEEL}</a>'.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == f"/files/{WHEEL}":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(SIZE))
            self.end_headers()
            chunk = b"\0" * (1 << 20)
            try:
                for _ in range(SIZE >> 20):
                    self.wfile.write(chunk)
                    time.sleep(0.05)
            except OSError:
                pass
        else:
            self.send_error(404)
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// Writes a minimal valid wheel (pip accepts it for `download`).
const MAKE_WHEEL: &str = r#"
import zipfile
def make(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("local/__init__.py", "")
        z.writestr("local-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: local\nVersion: 1.0\n")
        z.writestr("local-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("local-1.0.dist-info/RECORD", "")
"#;

struct Index(Child, u16);

impl Index {
    fn start() -> Index {
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", INDEX_PY])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap();
        Index(child, port)
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(index: &Index) -> RuntimeConfig {
    let mut cfg = RuntimeConfig::new(PathBuf::from("/nonexistent"), PathBuf::from("/bin/false"));
    cfg.max_wheel_bytes = 8 << 20;
    cfg.wheel_index_url = Some(format!("http://127.0.0.1:{}/simple", index.1));
    cfg
}

fn tree_bytes(dir: &std::path::Path) -> u64 {
    let out = Command::new("du").args(["-sb"]).arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn caps_stop_pip_while_it_downloads_and_no_local_file_resolves() {
    let index = Index::start();
    let cfg = config(&index);

    // The per-file cap: pip is killed a moment after the wheel passes 8 MiB, long before the
    // 200 MiB (10 s) would have arrived.
    let scratch = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let e = download(&cfg, &["big".into()], scratch.path(), 1 << 30)
        .await
        .unwrap_err();
    let took = started.elapsed();
    let held = tree_bytes(scratch.path());
    eprintln!("per-file cap: {e}; after {took:?}, {held} bytes in the scratch directory");
    assert!(e.contains("larger than 8388608"), "{e}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(held < 24 << 20, "{held} bytes on disk");

    // The per-fetch budget, the same way.
    let mut roomy = cfg.clone();
    roomy.max_wheel_bytes = 1 << 30;
    let scratch = tempfile::tempdir().unwrap();
    let e = download(&roomy, &["big".into()], scratch.path(), 4 << 20)
        .await
        .unwrap_err();
    assert!(e.contains("the download is larger than 4194304"), "{e}");

    // A requirement naming a wheel file: pip looks in its own empty directory, never in the
    // server's working directory.
    let here = tempfile::tempdir().unwrap();
    let wheel = "local-1.0-py3-none-any.whl";
    let made = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(format!("{MAKE_WHEEL}\nmake({:?})", here.path().join(wheel)))
        .status()
        .unwrap();
    assert!(made.success());
    std::env::set_current_dir(here.path()).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let got = download(&cfg, &[format!("./{wheel}")], scratch.path(), 1 << 30).await;
    assert!(got.is_err(), "a local file was resolved: {got:?}");
    assert!(
        !scratch.path().join("wheels").join(wheel).exists(),
        "the server's file was copied into the cache"
    );
}
