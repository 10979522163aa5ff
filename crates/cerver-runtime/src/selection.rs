//! What a sandbox sees of the shared wheel cache: not the cache itself (its listing would show
//! which packages other tenants installed), but a directory of **selections** bound at
//! `WHEELHOUSE`, mode 0711: a sandbox can open a name in it but not list it. For each install
//! from the cache, the host resolves the requirements against the cache
//! (`uv pip compile`, no index), hard-links exactly the wheels it needs into a
//! fresh selection named by 128 random bits, and the installer gets
//! `--find-links <WHEELHOUSE>/<name>`. The selection is removed after the install; a hard link
//! keeps its wheels readable even if eviction removes them from the cache meanwhile.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::RuntimeConfig;

/// How long resolving against the cache may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long asking the index for the newest versions may take.
const INDEX_TIMEOUT: Duration = Duration::from_secs(8);
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

/// The wheels of the cache that satisfy `requirements` (with their dependencies), as a fresh
/// selection; `None` when the cache cannot satisfy them.
///
/// Resolved by `uv pip compile` (the installer binary, `installer`) for the sandboxes'
/// interpreter: ~0.15 s against the cache alone, where `pip install --dry-run --report` took
/// ~0.9 s of every cached install. Its answer is a list of pins; each pin's wheels are found
/// in the cache by their file names. When a requirement is not pinned (`pandas`), the index is
/// asked too, as pip would (within [`INDEX_TIMEOUT`]; unreachable: the cache's newest): if it
/// offers a newer version than the cache holds, the answer is `None`, and the install fetches
/// it into the cache first.
pub async fn select(
    cfg: &RuntimeConfig,
    installer: &Path,
    requirements: &[String],
) -> Option<Selection> {
    // The requirements reach uv as lines of a requirements file: each must be one plain
    // requirement (cerver-control validated them; this keeps the file format out of reach).
    let plain = |r: &String| {
        !r.is_empty()
            && !r.starts_with('-')
            && !r.contains(|c: char| c.is_whitespace() || c == '#' || c == '\\')
    };
    if !requirements.iter().all(plain) {
        return None;
    }
    let online = match requirements.iter().all(|r| pinned(r)) {
        true => None,
        false => compile(cfg, installer, requirements, true).await,
    };
    let pins = match online {
        Some(pins) => pins,
        None => compile(cfg, installer, requirements, false).await?,
    };
    let cache = cfg.wheelhouse.clone();
    tokio::task::spawn_blocking(move || {
        let wheels = wheels_of(&cache, &pins)?;
        link(&cache, &wheels)
    })
    .await
    .ok()?
}

/// Whether a requirement names exactly one version (`six==1.16.0`).
fn pinned(requirement: &str) -> bool {
    requirement.contains("==") && !requirement.contains(['*', ',', '<', '>', '!', '~'])
}

/// The pins `uv pip compile` resolves `requirements` to, from the cache's wheels (and the
/// index's, when `online`); binary wheels only, so nothing is built on the host.
async fn compile(
    cfg: &RuntimeConfig,
    installer: &Path,
    requirements: &[String],
    online: bool,
) -> Option<Vec<String>> {
    let scratch = tempfile::tempdir().ok()?;
    let python = cfg.rootfs.join(cfg.python.trim_start_matches('/'));
    let input = scratch.path().join("requirements.in");
    std::fs::write(&input, requirements.join("\n") + "\n").ok()?;
    let mut cmd = tokio::process::Command::new(installer);
    cmd.args(["pip", "compile", "--only-binary", ":all:"])
        .args(["--no-header", "--no-annotate", "--quiet"]);
    match (online, &cfg.wheel_index_url) {
        (false, _) => cmd.arg("--no-index"),
        (true, Some(index)) => cmd.args(["--index-url", index]),
        (true, None) => &mut cmd,
    };
    let out = cmd
        .arg("--python")
        .arg(&python)
        .arg("--find-links")
        .arg(&cfg.wheelhouse)
        .arg(&input)
        .current_dir(scratch.path())
        .env_clear()
        .env("HOME", scratch.path())
        .env("TMPDIR", scratch.path())
        .env("PATH", "/usr/bin:/bin")
        .env("UV_NO_CACHE", "1")
        .env("UV_NO_CONFIG", "1")
        .env("UV_PYTHON_DOWNLOADS", "never")
        // An index that fails answers at once (the cache answers instead), without retries.
        .env("UV_HTTP_RETRIES", "0")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let limit = if online {
        INDEX_TIMEOUT
    } else {
        RESOLVE_TIMEOUT
    };
    let out = tokio::time::timeout(limit, out).await.ok()?.ok()?;
    if !out.status.success() {
        return None;
    }
    pins(&String::from_utf8_lossy(&out.stdout))
}

/// `name==version` lines of a compiled requirements file, as wheel file name prefixes
/// (`name_version-`, normalized); `None` when a line is anything else.
fn pins(compiled: &str) -> Option<Vec<String>> {
    compiled
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (name, version) = line.split_once("==")?;
            let name = name.split('[').next()?.trim();
            let version = version.trim();
            (!name.is_empty() && !version.is_empty() && !version.contains(['/', ' ', ';'])).then(
                || {
                    format!(
                        "{}-{}-",
                        crate::wheelhouse::wheel_name(name),
                        version.to_ascii_lowercase()
                    )
                },
            )
        })
        .collect()
}

/// The cache's wheels for `pins` (every wheel of each pinned version); `None` when a pin has
/// none.
fn wheels_of(cache: &Path, pins: &[String]) -> Option<Vec<PathBuf>> {
    let names: Vec<String> = std::fs::read_dir(cache)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".whl"))
        .collect();
    let mut wheels = Vec::new();
    for pin in pins {
        let before = wheels.len();
        wheels.extend(
            names
                .iter()
                .filter(|n| n.to_ascii_lowercase().starts_with(pin.as_str()))
                .map(|n| cache.join(n)),
        );
        if wheels.len() == before {
            return None;
        }
    }
    Some(wheels)
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
    }

    #[test]
    fn pins_become_the_caches_wheels() {
        let compiled = "# comment\nPython-Dateutil==2.9.0.post0\nsix==1.16.0\n\n";
        let pinned = pins(compiled).unwrap();
        assert_eq!(pinned, ["python_dateutil-2.9.0.post0-", "six-1.16.0-"]);
        assert!(pins("-e ./x\n").is_none(), "only pins");
        assert!(pins("x==1.0 ; python_version<'3'\n").is_none());
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "python_dateutil-2.9.0.post0-py2.py3-none-any.whl",
            "six-1.16.0-py2.py3-none-any.whl",
            "six-1.17.0-py2.py3-none-any.whl",
            "six_extra-1.16.0-py3-none-any.whl",
        ] {
            std::fs::write(dir.path().join(name), b"w").unwrap();
        }
        let mut wheels = wheels_of(dir.path(), &pinned).unwrap();
        wheels.sort();
        let names: Vec<_> = wheels
            .iter()
            .map(|w| w.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "python_dateutil-2.9.0.post0-py2.py3-none-any.whl",
                "six-1.16.0-py2.py3-none-any.whl"
            ]
        );
        assert!(wheels_of(dir.path(), &["numpy-2.0.0-".into()]).is_none());
    }
}
