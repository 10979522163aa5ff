//! What a sandbox sees of the shared wheel cache: not the cache itself (its listing would show
//! which packages other tenants installed), but a directory of **selections** bound at
//! `WHEELHOUSE`, mode 0711: a sandbox can open a name in it but not list it. For each install
//! from the cache, the host resolves the requirements against the cache
//! (`pip install --dry-run --report`, no index), hard-links exactly the wheels it needs into a
//! fresh selection named by 128 random bits, and the installer gets
//! `--find-links <WHEELHOUSE>/<name>`. The selection is removed after the install; a hard link
//! keeps its wheels readable even if eviction removes them from the cache meanwhile.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::RuntimeConfig;

/// How long resolving against the cache may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Selections older than this are left over from a crashed server.
const STALE: Duration = Duration::from_secs(2 * 3600);

/// The directory of selections: next to the cache (same filesystem, so hard links work).
pub fn root(cache: &Path) -> PathBuf {
    let mut name = cache.as_os_str().to_owned();
    name.push(".selections");
    PathBuf::from(name)
}

/// Creates the selections directory (0711) and removes selections a crashed server left.
pub fn prepare(cache: &Path) -> std::io::Result<PathBuf> {
    let dir = root(cache);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    for entry in std::fs::read_dir(&dir)?.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE);
        if old {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(dir)
}

/// One install's selection; removed when dropped.
pub struct Selection {
    dir: PathBuf,
    /// Its name inside the selections directory.
    pub name: String,
}

impl Drop for Selection {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Deserialize)]
struct Report {
    #[serde(default)]
    install: Vec<ReportItem>,
}

#[derive(Deserialize)]
struct ReportItem {
    download_info: DownloadInfo,
}

#[derive(Deserialize)]
struct DownloadInfo {
    url: String,
}

/// The wheels of the cache that satisfy `requirements` (with their dependencies), as a fresh
/// selection; `None` when the cache cannot satisfy them.
pub async fn select(cfg: &RuntimeConfig, requirements: &[String]) -> Option<Selection> {
    let cache = cfg.wheelhouse.clone();
    let scratch = tempfile::tempdir().ok()?;
    let python = cfg.rootfs.join(cfg.python.trim_start_matches('/'));
    let out = tokio::process::Command::new(&python)
        .args([
            "-I",
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
        ])
        .args([
            "--only-binary=:all:",
            "--no-index",
            "--quiet",
            "--report",
            "-",
        ])
        .args(["--no-input", "--disable-pip-version-check"])
        .arg("--find-links")
        .arg(&cache)
        .arg("--")
        .args(requirements)
        .current_dir(scratch.path())
        .env_clear()
        .env("HOME", scratch.path())
        .env("TMPDIR", scratch.path())
        .env("PATH", "/usr/bin:/bin")
        .env("PIP_NO_CACHE_DIR", "1")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(RESOLVE_TIMEOUT, out)
        .await
        .ok()?
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let report: Report = serde_json::from_slice(&out.stdout).ok()?;
    let wheels: Vec<PathBuf> = report
        .install
        .iter()
        .map(|item| item.download_info.url.strip_prefix("file://"))
        .map(|path| path.map(|p| PathBuf::from(percent_decode(p))))
        .collect::<Option<_>>()?;
    tokio::task::spawn_blocking(move || link(&cache, &wheels))
        .await
        .ok()?
}

/// Hard-links `wheels` (each directly in `cache`) into a new selection.
fn link(cache: &Path, wheels: &[PathBuf]) -> Option<Selection> {
    let name = format!("{:032x}", rand::random::<u128>());
    let dir = root(cache).join(&name);
    std::fs::create_dir(&dir).ok()?;
    let selection = Selection { dir, name };
    std::fs::set_permissions(&selection.dir, std::fs::Permissions::from_mode(0o755)).ok()?;
    for wheel in wheels {
        if wheel.parent() != Some(cache) {
            return None; // only the cache's own files
        }
        let file_name = wheel.file_name()?;
        std::fs::hard_link(wheel, selection.dir.join(file_name)).ok()?;
    }
    Some(selection)
}

/// `%XX` escapes of a `file://` URL's path (pip writes `+` of local versions as `%2B`).
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_only_the_caches_own_wheels_and_cleans_up() {
        let root_dir = tempfile::tempdir().unwrap();
        let cache = root_dir.path().join("wheels");
        std::fs::create_dir(&cache).unwrap();
        prepare(&cache).unwrap();
        let wheel = cache.join("six-1.16.0-py2.py3-none-any.whl");
        std::fs::write(&wheel, b"w").unwrap();
        let mode = std::fs::metadata(root(&cache))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o711);
        let sel = link(&cache, std::slice::from_ref(&wheel)).unwrap();
        let dir = root(&cache).join(&sel.name);
        assert!(dir.join("six-1.16.0-py2.py3-none-any.whl").exists());
        drop(sel);
        assert!(!dir.exists());
        assert!(link(&cache, &[PathBuf::from("/etc/passwd")]).is_none());
        assert_eq!(std::fs::read_dir(root(&cache)).unwrap().count(), 0);
        assert_eq!(percent_decode("/w/x-1.0%2Ba-py3.whl"), "/w/x-1.0+a-py3.whl");
    }
}
