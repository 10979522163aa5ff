//! `POST /sandbox/:id/install`: requirements validated once (see [`crate::packages`]), a
//! workers sandbox upgraded to containers first (see [`crate::upgrade`]), then the installer
//! run inside the sandbox: offline from the shared wheel cache (when it holds what the index
//! would give: the newest version of an unpinned requirement), after filling the cache on the
//! host, and online as the last resort.

use std::sync::Arc;
use std::time::Duration;

use cerver_runtime::{Engine, RunOutput};

use crate::{Control, ControlError, Entry, packages};

/// Most bytes of the installer's log kept per stream.
pub(crate) const MAX_INSTALL_LOG: usize = 64 << 10;

/// The result of an install.
#[derive(Debug, Clone)]
pub struct InstallOutcome {
    pub success: bool,
    pub upgraded: bool,
    /// The installer's log (bounded).
    pub log: String,
}

fn install_outcome(out: RunOutput, upgraded: bool) -> InstallOutcome {
    crate::metrics::install(if out.exit.exit_code == 0 {
        "ok"
    } else {
        "failed"
    });
    let mut log = String::from_utf8_lossy(&out.stderr).into_owned();
    log.push_str(&String::from_utf8_lossy(&out.stdout));
    if let Some(e) = &out.exit.error {
        log.push_str(e);
    }
    InstallOutcome {
        success: out.exit.exit_code == 0,
        upgraded,
        log,
    }
}

impl Control {
    /// Validates the requirements, upgrades a workers sandbox to containers in place, then
    /// installs inside the sandbox (see `cerver_runtime::packages` for how downloads are
    /// shared).
    pub async fn install(
        &self,
        owner: &str,
        id: &str,
        packages: Option<&str>,
        package: Option<&str>,
    ) -> Result<InstallOutcome, ControlError> {
        let entry = self.get(owner, id)?;
        let requirements = packages::parse(packages, package)?;
        if self.runtime.installer().is_none() {
            return Err(ControlError::Unavailable(
                "this server has no package installer (uv); ask its operator to install it".into(),
            ));
        }
        // One deadline for the whole install, whatever the steps it takes.
        let deadline = tokio::time::Instant::now() + self.runtime.config().install_timeout;
        let (entry, upgraded) = match entry.engine {
            Engine::Workers => (self.upgrade(&entry).await?, true),
            Engine::Containers => (entry, false),
        };
        let _permit = entry.run_permit()?;
        // Fast path: everything is already in the shared wheel cache.
        if let Some(offline) = self
            .install_from_cache(&entry, &requirements, deadline)
            .await?
            && offline.exit.exit_code == 0
        {
            return Ok(install_outcome(offline, upgraded));
        }
        let fetched =
            tokio::time::timeout_at(deadline, self.runtime.fetch_wheels(&requirements)).await;
        match fetched.unwrap_or_else(|_| Err("the install's time ran out".into())) {
            Ok(()) => {
                if let Some(offline) = self
                    .install_from_cache(&entry, &requirements, deadline)
                    .await?
                    && offline.exit.exit_code == 0
                {
                    return Ok(install_outcome(offline, upgraded));
                }
            }
            Err(e) => tracing::info!(sandbox.id = %entry.id, "wheel fetch: {e}"),
        }
        let online = run_installer(&entry, &requirements, None, deadline).await?;
        Ok(install_outcome(online, upgraded))
    }
}

impl Control {
    /// An offline install from the wheel cache, through a selection of exactly the wheels it
    /// needs (`None`: the cache cannot satisfy the requirements). No eviction while the
    /// selection is made (its hard links keep the wheels afterwards); the wheels it took
    /// count as used now.
    async fn install_from_cache(
        &self,
        entry: &Arc<Entry>,
        requirements: &[String],
        deadline: tokio::time::Instant,
    ) -> Result<Option<RunOutput>, ControlError> {
        let reading = self.runtime.reading_wheels().await;
        let Some(selection) = self.runtime.select_wheels(requirements).await else {
            return Ok(None);
        };
        drop(reading);
        let out = run_installer(entry, requirements, Some(&selection.name), deadline).await?;
        drop(selection);
        if out.exit.exit_code == 0 {
            let log = String::from_utf8_lossy(&out.stderr).into_owned();
            self.runtime.wheels_used(log).await;
        }
        Ok(Some(out))
    }
}

async fn run_installer(
    entry: &Arc<Entry>,
    requirements: &[String],
    selection: Option<&str>,
    deadline: tokio::time::Instant,
) -> Result<RunOutput, ControlError> {
    let spec = cerver_runtime::packages::install_spec(requirements, selection);
    let remaining = Duration::from_millis(entry.lifetime().remaining_ms);
    let timeout = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .min(remaining)
        .max(Duration::from_millis(1));
    let handle = entry.sandbox.start(&spec, None, timeout).await?;
    Ok(handle.collect(MAX_INSTALL_LOG).await)
}
