//! An unpinned requirement resolves to the newest version the index offers, as pip would, not
//! to the newest the wheel cache happens to hold; pinned ones and an unreachable index resolve
//! against the cache alone. A package index on loopback makes "newest on the index" and "newest
//! in the cache" differ deterministically.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cerver_runtime::RuntimeConfig;
use cerver_runtime::selection::{prepare, root, select};
use cerver_runtime::wheelhouse::download;

/// Writes `fresh-1.0` and `fresh-2.0` wheels into `files/`, a simple index page linking them
/// at `simple/fresh/`, serves the directory on loopback and prints its port.
const INDEX_PY: &str = r#"
import functools, http.server, os, sys, zipfile
root = sys.argv[1]
os.makedirs(f"{root}/files"); os.makedirs(f"{root}/simple/fresh")
links = []
for v in ("1.0", "2.0"):
    name = f"fresh-{v}-py3-none-any.whl"
    with zipfile.ZipFile(f"{root}/files/{name}", "w") as z:
        z.writestr("fresh/__init__.py", f"VERSION = {v!r}\n")
        z.writestr(f"fresh-{v}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: fresh\nVersion: {v}\n")
        z.writestr(f"fresh-{v}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"fresh-{v}.dist-info/RECORD", "")
    links.append(f'<a href="/files/{name}">{name}</a>')
open(f"{root}/simple/fresh/index.html", "w").write("<html><body>" + "".join(links) + "</body></html>")
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(H, directory=root))
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

struct Index(Child, u16, tempfile::TempDir);

impl Index {
    fn start() -> Index {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", INDEX_PY])
            .arg(dir.path().join("index"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap();
        Index(child, port, dir)
    }

    fn files(&self) -> PathBuf {
        self.2.path().join("index/files")
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn installer() -> PathBuf {
    let uv = PathBuf::from("/usr/local/bin/uv");
    assert!(uv.exists(), "uv is missing: run scripts/setup");
    uv
}

fn selected(cache: &Path, name: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root(cache).join(name))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn unpinned_requirements_take_the_newest_version_the_index_offers() {
    let index = Index::start();
    let uv = installer();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("wheels");
    std::fs::create_dir(&cache).unwrap();
    prepare(&cache).unwrap();
    // The cache holds only the older version.
    std::fs::copy(
        index.files().join("fresh-1.0-py3-none-any.whl"),
        cache.join("fresh-1.0-py3-none-any.whl"),
    )
    .unwrap();
    let mut cfg = RuntimeConfig::new(PathBuf::from("/nonexistent"), PathBuf::from("/bin/false"));
    cfg.wheelhouse = cache.clone();
    cfg.wheel_index_url = Some(format!("http://127.0.0.1:{}/simple", index.1));

    // Pinned: the cache alone answers.
    let sel = select(&cfg, &uv, &["fresh==1.0".into()]).await.unwrap();
    assert_eq!(selected(&cache, &sel.name), ["fresh-1.0-py3-none-any.whl"]);
    drop(sel);

    // Unpinned: the index offers 2.0, which the cache lacks, so the cache cannot answer ...
    assert!(select(&cfg, &uv, &["fresh".into()]).await.is_none());
    // ... until the host fetches it (what an install does next).
    let scratch = tempfile::tempdir().unwrap();
    let fetched = download(&cfg, &["fresh".into()], scratch.path(), 1 << 30)
        .await
        .unwrap();
    for wheel in std::fs::read_dir(&fetched).unwrap() {
        let wheel = wheel.unwrap();
        std::fs::rename(wheel.path(), cache.join(wheel.file_name())).unwrap();
    }
    let sel = select(&cfg, &uv, &["fresh".into()]).await.unwrap();
    assert_eq!(selected(&cache, &sel.name), ["fresh-2.0-py3-none-any.whl"]);
    drop(sel);

    // An unreachable index: the newest the cache holds.
    std::fs::remove_file(cache.join("fresh-2.0-py3-none-any.whl")).unwrap();
    let mut offline = cfg.clone();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    offline.wheel_index_url = Some(format!(
        "http://127.0.0.1:{}/simple",
        dead.local_addr().unwrap().port()
    ));
    drop(dead);
    let sel = select(&offline, &uv, &["fresh".into()]).await.unwrap();
    assert_eq!(selected(&cache, &sel.name), ["fresh-1.0-py3-none-any.whl"]);
}
