//! Cluster settings (issue 11) and the node's lease: `--database-url` (Postgres shared by
//! every node; without it, SQLite in the data dir as before), `--node-name`,
//! `--advertise-url`, `--cluster-secret` and `--node-lease-secs`.
//!
//! At start the server registers its node in the store (SQLite mode too: one row, so
//! `cerver admin nodes` works the same everywhere) and renews the lease every third of its
//! length in a background task, reporting its load. A node whose lease has run out is dead
//! to the others. Forwarding between nodes (which the advertise URL and the secret are for)
//! is not built yet; the settings are validated now so that a cluster's configuration can be
//! written once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cerver_store::{NodeInfo, Store, now_ms};
use serde::{Deserialize, Serialize};

use crate::settings::{Key, Kind, key};

/// `[cluster]` in the configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// `postgres://…`: the database every node shares; none: SQLite in the data dir.
    pub database_url: Option<String>,
    /// This node's name, unique in the cluster; none: the host name.
    pub node_name: Option<String>,
    /// Where the other nodes reach this one (`http://10.0.0.5:8080`).
    pub advertise_url: Option<String>,
    /// What nodes authenticate node-to-node requests with (at least 16 characters).
    pub secret: Option<String>,
    /// How long a node's lease lasts without a heartbeat (also the grace before it counts as
    /// dead), in seconds; renewed every third of it.
    pub node_lease_secs: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            database_url: None,
            node_name: None,
            advertise_url: None,
            secret: None,
            node_lease_secs: 15,
        }
    }
}

#[rustfmt::skip]
pub const KEYS: [Key; 5] = [
    key("cluster.database_url", "CERVER_DATABASE_URL", "database-url", Kind::Str),
    key("cluster.node_name", "CERVER_NODE_NAME", "node-name", Kind::Str),
    key("cluster.advertise_url", "CERVER_ADVERTISE_URL", "advertise-url", Kind::Str),
    key("cluster.secret", "CERVER_CLUSTER_SECRET", "cluster-secret", Kind::Str),
    key("cluster.node_lease_secs", "CERVER_NODE_LEASE_SECS", "node-lease-secs", Kind::Int),
];

/// Shortest accepted cluster secret.
const MIN_SECRET_LEN: usize = 16;

impl ClusterSettings {
    /// Checks every cluster setting, saying which one is wrong.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.database_url {
            validate_database_url(url)?;
        }
        if let Some(name) = &self.node_name {
            validate_node_name(name)?;
        }
        if let Some(url) = &self.advertise_url {
            let ok = ["http://", "https://"]
                .iter()
                .any(|s| url.strip_prefix(s).is_some_and(|rest| !rest.is_empty()))
                && url.parse::<axum::http::Uri>().is_ok();
            anyhow::ensure!(
                ok,
                "advertise_url must be an http:// or https:// URL, like http://10.0.0.5:8080"
            );
        }
        if let Some(secret) = &self.secret {
            anyhow::ensure!(
                secret.chars().count() >= MIN_SECRET_LEN,
                "cluster secret must be at least {MIN_SECRET_LEN} characters"
            );
        }
        anyhow::ensure!(
            (3..=3600).contains(&self.node_lease_secs),
            "node_lease_secs must be between 3 and 3600"
        );
        Ok(())
    }

    /// This node's name: the setting, else the host name.
    pub fn node_name(&self) -> anyhow::Result<String> {
        if let Some(name) = &self.node_name {
            return Ok(name.clone());
        }
        let host = nix::unistd::gethostname().context("read the host name")?;
        let host = host.to_string_lossy().into_owned();
        validate_node_name(&host)
            .context("the host name cannot be the node name; set --node-name")?;
        Ok(host)
    }

    /// The lease length.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.node_lease_secs)
    }

    /// The database URL with its password hidden (for `--print-config` and logs).
    pub fn redacted(&mut self) {
        if let Some(url) = &mut self.database_url {
            *url = redact_password(url);
        }
        if self.secret.is_some() {
            self.secret = Some("[redacted]".into());
        }
    }
}

/// A `postgres://` or `postgresql://` URL the store's driver accepts.
pub fn validate_database_url(url: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        url.starts_with("postgres://") || url.starts_with("postgresql://"),
        "database URL must start with postgres:// (or postgresql://)"
    );
    cerver_store::PgStore::check_url(url)
        .map_err(|e| anyhow::anyhow!("invalid database URL: {e}"))?;
    Ok(())
}

/// 1 to 63 letters, digits, `.`, `_` or `-` (a host name fits).
fn validate_node_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    anyhow::ensure!(
        ok,
        "node name {name:?} must be 1 to 63 letters, digits, '.', '_' or '-'"
    );
    Ok(())
}

/// `postgres://user:secret@host/db` → `postgres://user:[redacted]@host/db`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:[redacted]@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Routing between nodes (`cerver_control::cluster`), on in cluster mode: a shared database
/// and a cluster secret. Also starts ending the sandboxes of nodes whose lease has run out
/// (every third of the lease; the task ends with the returned value's last reference).
pub fn routing(
    settings: &ClusterSettings,
    store: &Arc<dyn Store>,
    node: String,
    advertise_url: Option<String>,
) -> Option<Arc<cerver_control::cluster::Cluster>> {
    settings.database_url.as_ref()?;
    let Some(secret) = settings.secret.clone() else {
        tracing::warn!(
            "--database-url without --cluster-secret: this node serves only the sandboxes it holds"
        );
        return None;
    };
    if advertise_url.is_none() {
        tracing::warn!("no --advertise-url: other nodes cannot forward requests to this node");
    }
    let lease = settings.lease();
    let cfg = cerver_control::cluster::ClusterConfig {
        node,
        advertise_url: advertise_url.unwrap_or_default(),
        secret,
        grace: Duration::ZERO,
    };
    let cluster = cerver_control::cluster::Cluster::new(cfg, store.clone());
    let weak = Arc::downgrade(&cluster);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(cluster) = weak.upgrade() else {
                return;
            };
            match cluster.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(sandboxes = n, "ended the sandboxes of dead nodes"),
                Err(e) => tracing::warn!("could not end the sandboxes of dead nodes: {e}"),
            }
        }
    });
    Some(cluster)
}

/// This node in the store: registered at start, its lease renewed until dropped.
pub struct NodeLease {
    task: tokio::task::JoinHandle<()>,
}

impl NodeLease {
    /// Registers the node and starts renewing its lease every third of its length, reporting
    /// `load()` as its live sandboxes. A failed renewal is logged and retried at the next beat
    /// (the lease covers two missed beats).
    pub async fn start(
        store: Arc<dyn Store>,
        info: NodeInfo,
        lease: Duration,
        load: impl Fn() -> u64 + Send + 'static,
    ) -> anyhow::Result<NodeLease> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        store
            .register_node(&info, now_ms(), lease_ms)
            .await
            .with_context(|| format!("register node {}", info.name))?;
        tracing::info!(node = %info.name, lease_secs = lease.as_secs(), "node registered");
        let name = info.name;
        let task = tokio::spawn(async move {
            let mut beat = tokio::time::interval(lease / 3);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            beat.tick().await;
            loop {
                beat.tick().await;
                if let Err(e) = store
                    .heartbeat_node(&name, now_ms(), lease_ms, load())
                    .await
                {
                    tracing::warn!(node = %name, error = %e, "node heartbeat failed");
                }
            }
        });
        Ok(NodeLease { task })
    }
}

impl Drop for NodeLease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_wrong_setting() {
        let ok = ClusterSettings {
            database_url: Some("postgres://u:p@db.internal:5432/cerver".into()),
            node_name: Some("node-1.eu".into()),
            advertise_url: Some("http://10.0.0.5:8080".into()),
            secret: Some("0123456789abcdef".into()),
            node_lease_secs: 15,
        };
        ok.validate().unwrap();
        let bad = |f: fn(&mut ClusterSettings), needle: &str| {
            let mut s = ok.clone();
            f(&mut s);
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        };
        bad(
            |s| s.database_url = Some("mysql://x/y".into()),
            "postgres://",
        );
        bad(|s| s.node_name = Some("a b".into()), "node name");
        bad(|s| s.node_name = Some(String::new()), "node name");
        bad(|s| s.node_name = Some("x".repeat(64)), "node name");
        bad(
            |s| s.advertise_url = Some("10.0.0.5:8080".into()),
            "advertise_url",
        );
        bad(
            |s| s.advertise_url = Some("http://".into()),
            "advertise_url",
        );
        bad(|s| s.secret = Some("short".into()), "at least 16");
        bad(|s| s.node_lease_secs = 1, "node_lease_secs");
    }

    #[test]
    fn passwords_never_print() {
        let mut s = ClusterSettings {
            database_url: Some("postgres://cerver:hunter2@db:5432/cerver?sslmode=require".into()),
            secret: Some("0123456789abcdef".into()),
            ..ClusterSettings::default()
        };
        s.redacted();
        assert_eq!(
            s.database_url.as_deref(),
            Some("postgres://cerver:[redacted]@db:5432/cerver?sslmode=require")
        );
        assert_eq!(s.secret.as_deref(), Some("[redacted]"));
        assert_eq!(redact_password("postgres://u@h/db"), "postgres://u@h/db");
    }
}
