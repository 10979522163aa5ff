//! Package installs for the containers engine.
//!
//! An install runs *inside* the sandbox, as the sandbox user, under its limits: the installer
//! (`uv`, bound read-only at [`INSTALLER`]) installs into the sandbox's own venv ([`VENV`]).
//! Downloads are shared safely through the **wheelhouse**, a directory of wheels that only the
//! host writes and sandboxes see read-only ([`WHEELHOUSE`]): the host fills it with
//! `pip download --only-binary=:all:` (binary wheels only, so no package code runs on the
//! host), placing each wheel atomically. No sandbox can write what another one reads.
//!
//! Order of an install: offline from the wheelhouse (fast path: a repeated install needs no
//! network at all) → host fetch into the wheelhouse, then offline again → online from the
//! index inside the sandbox (source-only packages, anything pip could not fetch as a wheel).

use std::path::Path;

use cerver_jail::protocol::{INSTALLER, RunSpec, WHEELHOUSE};
pub use cerver_jail::protocol::{VENV, VENV_PATH};

use crate::{Runtime, wheelhouse};

/// The run that installs `requirements` into the sandbox's venv: offline from the wheel
/// cache selection named `selection` (see [`crate::selection`]), or online without one.
pub fn install_spec(requirements: &[String], selection: Option<&str>) -> RunSpec {
    RunSpec::Exec {
        argv: install_argv(requirements, selection),
        env: install_env(),
    }
}

/// The installer's command line for `requirements` (already validated PEP 508 strings, passed
/// after `--` so none can be taken for an option).
fn install_argv(requirements: &[String], selection: Option<&str>) -> Vec<String> {
    let mut argv: Vec<String> = [
        INSTALLER,
        "pip",
        "install",
        "--python",
        &format!("{VENV}/bin/python"),
        "--link-mode",
        "copy",
        "--no-progress",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if let Some(name) = selection {
        argv.extend([
            "--find-links".to_string(),
            format!("{WHEELHOUSE}/{name}"),
            "--offline".into(),
            "--no-index".into(),
        ]);
    }
    argv.push("--".into());
    argv.extend(requirements.iter().cloned());
    argv
}

/// The installer's environment: no user configuration (the workspace is the user's), a
/// throw-away cache in the sandbox's `/tmp`, never a Python download.
fn install_env() -> std::collections::BTreeMap<String, String> {
    [
        ("HOME", cerver_jail::layout::HOME),
        ("PATH", VENV_PATH),
        ("VIRTUAL_ENV", VENV),
        ("TMPDIR", "/tmp"),
        ("UV_NO_CACHE", "1"),
        ("UV_NO_CONFIG", "1"),
        ("UV_PYTHON_DOWNLOADS", "never"),
        ("UV_NO_PROGRESS", "1"),
        // The host's CA bundle (bound read-only), so a TLS-inspecting proxy the host trusts
        // works the same inside.
        ("UV_SYSTEM_CERTS", "1"),
        ("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"),
        ("LANG", "C.UTF-8"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Runtime {
    /// Fetches binary wheels for `requirements` (and their dependencies) into the wheelhouse,
    /// on the host (see [`crate::wheelhouse`]: bounded while downloading, least recently used
    /// wheels evicted to make room). One fetch at a time: while one runs, others are skipped
    /// (their installs go to the index from inside their sandboxes) so that no user's large
    /// fetch holds up another's install.
    pub async fn fetch_wheels(&self, requirements: &[String]) -> Result<(), String> {
        let Ok(_one_at_a_time) = self.fetch_lock.try_lock() else {
            return Err("another wheel fetch is running".into());
        };
        let cfg = &self.cfg;
        let wheelhouse = cfg.wheelhouse.clone();
        // Next to the wheelhouse (same filesystem, so publishing is a rename), not inside it.
        let scratch_root = wheelhouse.parent().unwrap_or(&wheelhouse).join("fetch");
        std::fs::create_dir_all(&scratch_root).map_err(|e| format!("scratch dir: {e}"))?;
        let scratch = tempfile::Builder::new()
            .prefix("fetch-")
            .tempdir_in(&scratch_root)
            .map_err(|e| format!("scratch dir: {e}"))?;
        let budget = cfg.max_wheel_fetch_bytes.min(cfg.max_wheelhouse_bytes);
        let download = wheelhouse::download(cfg, requirements, scratch.path(), budget);
        let dest = tokio::time::timeout(cfg.wheel_fetch_timeout, download)
            .await
            .map_err(|_| "fetching wheels took too long".to_string())??;
        // Room for what arrived: the least recently used wheels go first.
        let (cap, w, d) = (cfg.max_wheelhouse_bytes, wheelhouse.clone(), dest.clone());
        let room = tokio::task::spawn_blocking(move || {
            let fetched = wheelhouse::tree_size(&d).0;
            if let Some(freed) = wheelhouse::evict(&w, cap.saturating_sub(fetched))
                && freed > 0
            {
                tracing::info!(freed, "wheel cache: least recently used wheels evicted");
            }
            wheelhouse::tree_size(&w).0.saturating_add(fetched) <= cap
        })
        .await
        .unwrap_or(false);
        if !room {
            return Err("the wheel cache is full (installs are reading it)".into());
        }
        // Publish each wheel with a rename, so a sandbox never sees a partial file; its mtime
        // (its last use) is now.
        let mut entries = tokio::fs::read_dir(&dest)
            .await
            .map_err(|e| format!("read scratch dir: {e}"))?;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name();
            if Path::new(&name).extension().is_some_and(|e| e == "whl") {
                let _ = std::fs::File::options()
                    .write(true)
                    .open(entry.path())
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                let _ = tokio::fs::rename(entry.path(), wheelhouse.join(&name)).await;
            }
        }
        Ok(())
    }

    /// The cache's wheels that satisfy `requirements`, as a selection a sandbox can install
    /// from (`None`: the cache cannot satisfy them).
    pub async fn select_wheels(
        &self,
        requirements: &[String],
    ) -> Option<crate::selection::Selection> {
        let installer = self.installer.as_deref()?;
        crate::selection::select(&self.cfg, installer, requirements).await
    }

    /// Held by an install while it reads the wheel cache (no eviction meanwhile).
    pub async fn reading_wheels(&self) -> Option<wheelhouse::Reading> {
        wheelhouse::reading(&self.cfg.wheelhouse).await
    }

    /// Records that an install used wheels from the cache (`log`: the installer's output).
    pub async fn wheels_used(&self, log: String) {
        let cache = self.cfg.wheelhouse.clone();
        let _ =
            tokio::task::spawn_blocking(move || wheelhouse::touch_installed(&cache, &log)).await;
    }
}

/// Whether `path` is an absolute path to a file every user may read and execute, through
/// directories every user may enter.
pub fn reachable_by_anyone(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    if !path.is_absolute() {
        return false;
    }
    let Ok(file) = std::fs::metadata(path) else {
        return false;
    };
    if !file.is_file() || file.permissions().mode() & 0o005 != 0o005 {
        return false;
    }
    path.ancestors()
        .skip(1)
        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_venv_path_starts_with_the_venv() {
        assert!(VENV_PATH.starts_with(&format!("{VENV}/bin:")));
    }

    #[test]
    fn the_installer_must_be_reachable_by_every_user() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("uv");
        std::fs::write(&bin, "").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(reachable_by_anyone(&bin));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!reachable_by_anyone(&bin), "a private directory above it");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(!reachable_by_anyone(&bin), "not executable by others");
        assert!(!reachable_by_anyone(Path::new("uv")), "relative");
    }

    #[test]
    fn requirements_come_after_the_option_terminator() {
        let argv = install_argv(&["six==1.16.0".into(), "-r".into()], Some("ab12"));
        let end = argv.iter().position(|a| a == "--").unwrap();
        assert_eq!(&argv[end + 1..], ["six==1.16.0", "-r"]);
        assert!(argv[..end].contains(&"--offline".to_string()));
        assert!(argv[..end].contains(&format!("{WHEELHOUSE}/ab12")));
        let online = install_argv(&["six".into()], None);
        assert!(
            !online
                .iter()
                .any(|a| a == "--find-links" || a == "--offline")
        );
        assert_eq!(argv[0], INSTALLER);
    }
}
