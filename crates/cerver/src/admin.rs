//! `cerver admin …`: users, keys and nodes, on the data dir's SQLite database or, with
//! `--database-url`, on the cluster's Postgres (then no data dir is needed).

use std::path::PathBuf;

use anyhow::Context;
use cerver_store::{KeyRef, Node, Plan, Store, now_ms};
use clap::Subcommand;

#[derive(clap::Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
    /// The server's data directory (default `./data`); not needed with `--database-url`.
    #[arg(long, env = "CERVER_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// The cluster's database (`postgres://…`), instead of the data dir's SQLite file.
    #[arg(long, env = "CERVER_DATABASE_URL", global = true)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create the user if needed and a new API key; prints the key alone on the last line.
    CreateKey {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "trial")]
        plan: String,
    },
    /// Move a user to another plan (trial, free, pro); takes effect at once.
    SetPlan {
        #[arg(long)]
        email: String,
        #[arg(long)]
        plan: String,
    },
    /// Revoke a key, given whole (`--key`) or by its displayed prefix (`--prefix`).
    RevokeKey {
        #[arg(long, conflicts_with = "prefix", required_unless_present = "prefix")]
        key: Option<String>,
        #[arg(long)]
        prefix: Option<String>,
    },
    /// List users with their plans and key counts.
    ListUsers,
    /// List the nodes sharing the database: URL, alive or dead (lease), draining, load.
    Nodes,
    /// Stop new sandboxes being placed on a node (`--undo`: place them there again).
    Drain {
        #[arg(long)]
        node: String,
        #[arg(long)]
        undo: bool,
    },
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let AdminArgs {
        command,
        data_dir,
        database_url,
    } = args;
    if let Some(url) = &database_url {
        crate::cluster::validate_database_url(url)?;
    }
    // With a database URL the data dir only matters if given (to tell its server at once).
    let data_dir = match (&database_url, data_dir) {
        (_, Some(dir)) => Some(dir),
        (None, None) => Some(PathBuf::from("./data")),
        (Some(_), None) => None,
    };
    let sqlite_dir = data_dir.clone().unwrap_or_default();
    let store = cerver_store::open_store(database_url.as_deref(), &sqlite_dir, None)
        .await
        .context("open the database")?;
    let changed_accounts = !matches!(command, AdminCommand::Nodes | AdminCommand::Drain { .. });
    let result = command_on(&*store, command).await;
    store.close().await;
    result?;
    if let (true, Some(dir)) = (changed_accounts, data_dir) {
        // Tell a running server on that data dir that accounts changed (it drops its cached
        // keys at once).
        cerver_control::accounts::bump_generation(&dir).context("mark accounts as changed")?;
    }
    Ok(())
}

async fn command_on(store: &dyn Store, command: AdminCommand) -> anyhow::Result<()> {
    let plan_of = |p: &str| -> anyhow::Result<Plan> {
        p.parse()
            .map_err(|_| anyhow::anyhow!("unknown plan {p:?}: use trial, free or pro"))
    };
    match command {
        AdminCommand::CreateKey { email, plan } => {
            let (key, user) = cerver_control::accounts::create_key(store, &email, plan_of(&plan)?)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("user {} ({}), plan {}", user.email, user.id, user.plan);
            println!("{key}");
        }
        AdminCommand::SetPlan { email, plan } => {
            let user = store
                .set_plan(&email.to_lowercase(), plan_of(&plan)?)
                .await?;
            println!("{} is now on the {} plan", user.email, user.plan);
        }
        AdminCommand::RevokeKey { key, prefix } => {
            let hash;
            let which = match (&key, &prefix) {
                (Some(k), _) => {
                    hash = cerver_store::keys::hash_key(k);
                    KeyRef::Hash(&hash)
                }
                (None, Some(p)) => KeyRef::Prefix(p),
                (None, None) => anyhow::bail!("give --key or --prefix"),
            };
            let revoked = store.revoke_key(which).await?;
            println!("revoked {}", revoked.prefix);
        }
        AdminCommand::ListUsers => {
            for u in store.list_users().await? {
                println!(
                    "{}\t{}\t{}\tkeys: {} active / {} total",
                    u.user.email, u.user.plan, u.user.id, u.active_keys, u.total_keys
                );
            }
        }
        AdminCommand::Nodes => print!("{}", nodes_table(&store.list_nodes().await?, now_ms())),
        AdminCommand::Drain { node, undo } => {
            let node = store.set_node_draining(&node, !undo).await?;
            let state = if node.draining {
                "draining: no new sandboxes"
            } else {
                "open to new sandboxes"
            };
            println!("node {} is {state}", node.name);
        }
    }
    Ok(())
}

/// The nodes as an aligned table, one line each (a line saying so when there are none).
fn nodes_table(nodes: &[Node], now: i64) -> String {
    if nodes.is_empty() {
        return "no nodes registered\n".into();
    }
    let mut rows = vec![
        [
            "NAME",
            "URL",
            "STATE",
            "DRAINING",
            "SANDBOXES",
            "CAPACITY",
            "LAST HEARTBEAT",
        ]
        .map(String::from),
    ];
    for n in nodes {
        rows.push([
            n.name.clone(),
            n.advertise_url.clone().unwrap_or_else(|| "-".into()),
            if n.is_alive(now) { "alive" } else { "dead" }.into(),
            if n.draining { "yes" } else { "no" }.into(),
            n.live_sandboxes.to_string(),
            n.capacity.map_or_else(|| "-".into(), |c| c.to_string()),
            format!("{}s ago", (now - n.heartbeat_at).max(0) / 1000),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_table_shows_liveness_drain_and_load() {
        let node = |name: &str, lease_expires_at, draining| Node {
            name: name.into(),
            advertise_url: Some(format!("http://{name}:8080")),
            started_at: 0,
            heartbeat_at: 1_000,
            lease_expires_at,
            draining,
            live_sandboxes: 3,
            capacity: Some(100),
        };
        let table = nodes_table(&[node("a", 20_000, false), node("bb", 5_000, true)], 10_000);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME  URL "), "{table}");
        let a: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            a,
            ["a", "http://a:8080", "alive", "no", "3", "100", "9s", "ago"]
        );
        let b: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(&b[..4], ["bb", "http://bb:8080", "dead", "yes"]);
        assert_eq!(nodes_table(&[], 0), "no nodes registered\n");
    }
}
