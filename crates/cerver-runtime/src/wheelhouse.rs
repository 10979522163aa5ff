//! The shared wheel cache on the host: filling it (`pip download`, binary wheels only) with
//! the download bounded *while* it runs, and evicting the least recently used wheels under its
//! cap.
//!
//! - pip runs with its working directory, `HOME` and `TMPDIR` in a fresh scratch directory, so
//!   a requirement that looks like a file name (`x==1.0+a.tar.gz`, `./foo.whl`) finds nothing
//!   of the host's to resolve to (requirements are also validated in `cerver-control`).
//! - A watcher measures the scratch tree every [`WATCH_EVERY`] and kills pip as soon as it
//!   holds more than the fetch's budget or any file is larger than the per-file cap: a huge
//!   wheel never lands on the host's disk in full.
//! - "Recently used" is a wheel's mtime: set when it is published, and again by
//!   [`touch_installed`] for the wheels an install took from the cache (the host learns them
//!   from the installer's log; reads in a sandbox cannot update atime on a read-only bind).
//! - Eviction deletes the oldest wheels until the cache is under its cap again. It takes an
//!   exclusive `flock` on `<cache>.lock` (without waiting: when it cannot, eviction is skipped
//!   this time); every install from the cache holds a shared one ([`reading`]) for as long as
//!   it reads, across every server on the host. So no wheel is deleted while an install may
//!   be resolving against it (a wheel already opened would stay readable anyway).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use tokio::io::AsyncReadExt;

use crate::RuntimeConfig;

/// How often a running download is measured.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// Most bytes of pip's error output kept for the message.
const MAX_PIP_LOG: usize = 8 << 10;

/// Sizes of a directory tree: all its files together, and the largest one.
pub(crate) fn tree_size(dir: &Path) -> (u64, u64) {
    let (mut total, mut largest) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total = total.saturating_add(meta.len());
                largest = largest.max(meta.len());
            }
        }
    }
    (total, largest)
}

/// The wheels of the cache: path, size and last use, oldest first.
fn wheels(cache: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut list: Vec<_> = std::fs::read_dir(cache)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "whl"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| {
                (
                    e.path(),
                    meta.len(),
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                )
            })
        })
        .collect();
    list.sort_by_key(|(path, _, used)| (*used, path.clone()));
    list
}

fn lock_file(cache: &Path) -> std::io::Result<File> {
    let mut name = cache.as_os_str().to_owned();
    name.push(".lock");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(name))
}

/// Held while an install may read the cache: eviction waits for no reader (it skips).
pub struct Reading(#[allow(dead_code)] Flock<File>);

/// A shared lock on the cache for one install (waits only while an eviction runs).
pub async fn reading(cache: &Path) -> Option<Reading> {
    let cache = cache.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = lock_file(&cache).ok()?;
        Flock::lock(file, FlockArg::LockShared).ok().map(Reading)
    })
    .await
    .ok()
    .flatten()
}

/// Deletes the least recently used wheels until the cache holds at most `target` bytes.
/// Returns the bytes freed, or `None` when installs are reading the cache.
pub fn evict(cache: &Path, target: u64) -> Option<u64> {
    let file = lock_file(cache).ok()?;
    let _exclusive = Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()?;
    let list = wheels(cache);
    let mut used: u64 = list.iter().map(|(_, size, _)| size).sum();
    let mut freed = 0;
    for (path, size, _) in list {
        if used <= target {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            used -= size;
            freed += size;
        }
    }
    Some(freed)
}

/// A distribution name as wheel file names spell it (PEP 427/503): lower case, runs of
/// `-_.` as one `_`.
pub(crate) fn wheel_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('_') {
                out.push('_');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Marks the wheels an install took from the cache as used now. `log` is the installer's
/// output; `uv` lists what it installed as ` + name==version` lines.
pub fn touch_installed(cache: &Path, log: &str) {
    let prefixes: Vec<String> = log
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("+ "))
        .filter_map(|l| l.trim().split_once("=="))
        .map(|(name, version)| format!("{}-{}-", wheel_name(name), version.to_ascii_lowercase()))
        .collect();
    if prefixes.is_empty() {
        return;
    }
    for (path, _, _) in wheels(cache) {
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        let lower = file_name.to_ascii_lowercase();
        if prefixes.iter().any(|p| lower.starts_with(p.as_str())) {
            let _ = File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(SystemTime::now()));
        }
    }
}

/// Runs `pip download` for `requirements` into `scratch`, killing it as soon as the scratch
/// tree exceeds `budget` bytes or any file in it `cfg.max_wheel_bytes`. Returns the directory
/// holding the wheels.
pub async fn download(
    cfg: &RuntimeConfig,
    requirements: &[String],
    scratch: &Path,
    budget: u64,
) -> Result<PathBuf, String> {
    let dest = scratch.join("wheels");
    for dir in ["wheels", "tmp", "home", "cwd"] {
        std::fs::create_dir_all(scratch.join(dir)).map_err(|e| format!("scratch dir: {e}"))?;
    }
    let python = cfg.rootfs.join(cfg.python.trim_start_matches('/'));
    let mut cmd = tokio::process::Command::new(&python);
    cmd.args(["-I", "-m", "pip", "download", "--only-binary=:all:"]);
    if let Some(index) = &cfg.wheel_index_url {
        cmd.args(["--index-url", index]);
    }
    let mut child = cmd
        .args(["--no-input", "--disable-pip-version-check", "--quiet"])
        .args(["--progress-bar", "off"])
        .arg("--dest")
        .arg(&dest)
        .arg("--")
        .args(requirements)
        // An empty directory: nothing a requirement could name as a local file.
        .current_dir(scratch.join("cwd"))
        .env_clear()
        .env("HOME", scratch.join("home"))
        .env("TMPDIR", scratch.join("tmp")) // pip downloads here first: watched too
        .env("PATH", "/usr/bin:/bin")
        .env("PIP_NO_CACHE_DIR", "1") // the wheelhouse is the cache
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("run pip: {e}"))?;
    let mut stderr = child.stderr.take().expect("piped");
    let log = tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > MAX_PIP_LOG {
                kept.drain(..kept.len() - MAX_PIP_LOG);
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    });
    let mut tick = tokio::time::interval(WATCH_EVERY);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|e| format!("pip: {e}"))?,
            _ = tick.tick() => {
                let dir = scratch.to_path_buf();
                let (total, largest) = tokio::task::spawn_blocking(move || tree_size(&dir))
                    .await
                    .unwrap_or((u64::MAX, u64::MAX));
                let too_much = if largest > cfg.max_wheel_bytes {
                    Some(format!("a wheel is larger than {} bytes", cfg.max_wheel_bytes))
                } else if total > budget {
                    Some(format!("the download is larger than {budget} bytes"))
                } else {
                    None
                };
                if let Some(why) = too_much {
                    let _ = child.kill().await;
                    return Err(format!("wheel fetch stopped: {why}"));
                }
            }
        }
    };
    if !status.success() {
        let log = log.await.unwrap_or_default();
        return Err(format!(
            "pip download: {}",
            log.lines().last().unwrap_or("failed")
        ));
    }
    // What arrived between the last measurement and the end is measured too.
    let (total, largest) = tree_size(scratch);
    if largest > cfg.max_wheel_bytes || total > budget {
        return Err("wheel fetch refused: the download is larger than allowed".into());
    }
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wheel(dir: &Path, name: &str, size: usize, age_secs: u64) {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; size]).unwrap();
        let f = File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age_secs))
            .unwrap();
    }

    #[test]
    fn eviction_removes_the_least_recently_used_and_waits_for_no_reader() {
        let root = tempfile::tempdir().unwrap();
        let cache = root.path().join("wheels");
        std::fs::create_dir(&cache).unwrap();
        wheel(&cache, "old-1.0-py3-none-any.whl", 1000, 300);
        wheel(&cache, "Used_Pkg-2.0-py3-none-any.whl", 1000, 200);
        wheel(&cache, "new-1.0-py3-none-any.whl", 1000, 100);
        // An install used `used-pkg` just now: it becomes the most recent.
        touch_installed(&cache, "Resolved 1 package\n + used-pkg==2.0\n");
        // While an install reads the cache, nothing is evicted.
        let file = lock_file(&cache).unwrap();
        let shared = Flock::lock(file, FlockArg::LockShared).unwrap();
        assert_eq!(evict(&cache, 1000), None);
        drop(shared);
        assert_eq!(evict(&cache, 1000), Some(2000));
        let left: Vec<_> = wheels(&cache)
            .into_iter()
            .map(|(p, _, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["Used_Pkg-2.0-py3-none-any.whl"]);
        assert_eq!(evict(&cache, 1000), Some(0));
    }

    #[test]
    fn wheel_names_are_normalized() {
        assert_eq!(wheel_name("Used.Pkg--x"), "used_pkg_x");
    }

    #[test]
    fn tree_sizes_count_nested_files() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("a/b")).unwrap();
        std::fs::write(root.path().join("a/b/f"), [0u8; 300]).unwrap();
        std::fs::write(root.path().join("g"), [0u8; 100]).unwrap();
        assert_eq!(tree_size(root.path()), (400, 300));
    }
}
