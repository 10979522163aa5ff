//! Scaling: warm-run throughput with concurrent clients on separate sandboxes, and memory and
//! latency with many idle sandboxes alive at once.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::json;

use cerver_bench::api::Api;
use cerver_bench::procs;
use cerver_bench::server::Server;
use cerver_bench::stats::Summary;

const MIB: f64 = 1024.0 * 1024.0;
/// A pro user may keep this many sandboxes alive (the plan's limit).
pub const PER_USER: usize = 100;
/// Sandboxes created (or deleted) at once while filling (or emptying) a level.
const FILL_CONCURRENCY: usize = 4;
/// How long the idle sandboxes of the memory levels may live.
const IDLE_LIFETIME_MS: u64 = 3_600_000;
/// How long the server may take to settle at a level (its helper trees stop changing).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Warm runs at one level of concurrency.
pub struct Throughput {
    pub clients: usize,
    pub runs: usize,
    pub secs: f64,
    pub latency: Summary,
}

/// `clients` clients, each with its own connection and its own sandbox, loop `print(1)` for
/// `secs` (after 2 untimed runs each).
pub async fn throughput(server: &Server, clients: usize, secs: f64) -> anyhow::Result<Throughput> {
    let key = server.api_key();
    let apis: Vec<Api> = (0..clients)
        .map(|_| server.api_with_key(key))
        .collect::<anyhow::Result<_>>()?;
    let mut ids = Vec::with_capacity(clients);
    for api in &apis {
        let (id, _) = api.create(json!({})).await?;
        for _ in 0..2 {
            api.run(&id, "print(1)", "1").await?;
        }
        ids.push(id);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let tasks = apis.iter().zip(&ids).map(|(api, id)| async move {
        let mut samples = Vec::new();
        while Instant::now() < deadline {
            let t = Instant::now();
            api.run(id, "print(1)", "1").await?;
            samples.push(t.elapsed());
        }
        anyhow::Ok(samples)
    });
    let per_client = futures::future::try_join_all(tasks).await;
    let secs = start.elapsed().as_secs_f64();
    for (api, id) in apis.iter().zip(&ids) {
        api.delete(id).await?;
    }
    let samples: Vec<Duration> = per_client?.into_iter().flatten().collect();
    Ok(Throughput {
        clients,
        runs: samples.len(),
        secs,
        latency: Summary::of(&samples).context("no run finished in time")?,
    })
}

/// The memory and latencies at one number of idle sandboxes.
pub struct Level {
    pub sandboxes: usize,
    /// Per sandbox, MiB: PSS of the helper trees (anon part), cgroup usage, MemAvailable drop.
    pub pss: f64,
    pub pss_anon: f64,
    pub cgroup: Option<f64>,
    pub mem_available: f64,
    pub processes: usize,
    /// The server's own RSS and PSS, MiB.
    pub server_rss: f64,
    pub server_pss: f64,
    /// The template interpreter's RSS, MiB (once per server; none without one).
    pub template_rss: Option<f64>,
    /// Cold create (+ delete untimed) and warm run with this many sandboxes alive.
    pub create: Summary,
    pub run: Summary,
}

/// The memory levels' outcome: the levels reached, and why the next one failed if it did.
pub struct Memory {
    pub levels: Vec<Level>,
    pub failure: Option<String>,
}

struct Snapshot {
    mem_available: u64,
    cgroup: Option<procs::CgroupSum>,
    pss: procs::PssSum,
}

fn snapshot(server: &Server, cgroup_dir: &Path) -> anyhow::Result<Snapshot> {
    let trees = procs::jail_trees(server.pid());
    Ok(Snapshot {
        mem_available: procs::mem_available()?,
        cgroup: procs::cgroup_usage_sum(cgroup_dir),
        pss: procs::pss_sum(&trees.pids),
    })
}

/// Fills the `--pool-size 0` server with idle workers sandboxes (each ran `print(1)`) up to
/// each of `levels` in turn, spread over `users` (a pro user's plan allows [`PER_USER`]; the
/// last user only times creates), and measures each level. A level that fails ends the
/// series with its error recorded; the sandboxes are deleted at the end either way.
pub async fn memory(
    server: &Server,
    users: &[Api],
    levels: &[usize],
    probes: usize,
    settle: Duration,
) -> anyhow::Result<Memory> {
    let cgroup_dir = procs::cgroup_dir(&server.data_dir)?;
    server.wait_for_helpers(0, false, SETTLE_TIMEOUT).await?;
    tokio::time::sleep(settle).await;
    let before = snapshot(server, &cgroup_dir)?;
    let (prober, owners) = users.split_last().context("no users")?;
    let mut live: Vec<(usize, String)> = Vec::new();
    let mut out = Memory {
        levels: Vec::new(),
        failure: None,
    };
    for &level in levels {
        crate::progress(&format!("memory: filling to {level} idle sandboxes"));
        let result = async {
            fill(owners, &mut live, level).await?;
            server
                .wait_for_helpers(level, false, SETTLE_TIMEOUT)
                .await?;
            tokio::time::sleep(settle).await;
            measure(server, &cgroup_dir, &before, prober, level, probes).await
        }
        .await;
        match result {
            Ok(l) => out.levels.push(l),
            Err(e) => {
                out.failure = Some(format!(
                    "at {level} sandboxes ({} alive): {e:#}",
                    live.len()
                ));
                break;
            }
        }
    }
    crate::progress(&format!("memory: deleting {} sandboxes", live.len()));
    let deleted: Vec<anyhow::Result<()>> = futures::stream::iter(live.iter())
        .map(|(user, id)| owners[*user].delete(id))
        .buffer_unordered(FILL_CONCURRENCY * 2)
        .collect()
        .await;
    // The figures stand even if some deletes fail (the server's stop destroys the rest).
    if let Some(e) = deleted.into_iter().find_map(Result::err) {
        let failure = out.failure.take().map_or(String::new(), |f| f + "; ");
        out.failure = Some(format!("{failure}deleting the idle sandboxes: {e:#}"));
    }
    Ok(out)
}

/// Creates sandboxes until `live` holds `level`.
async fn fill(owners: &[Api], live: &mut Vec<(usize, String)>, level: usize) -> anyhow::Result<()> {
    let body = json!({ "timeout_ms": IDLE_LIFETIME_MS });
    // After a failure, the rest of the level is not attempted (a full host fails them all).
    let failed = std::sync::atomic::AtomicBool::new(false);
    let failed = &failed;
    let created: Vec<anyhow::Result<(usize, String)>> = futures::stream::iter(live.len()..level)
        .map(|i| {
            let (user, body) = (i / PER_USER, body.clone());
            async move {
                if failed.load(std::sync::atomic::Ordering::Relaxed) {
                    anyhow::bail!("not attempted after a failure");
                }
                let api = owners
                    .get(user)
                    .context("more sandboxes than users allow")?;
                let created = api.create(body).await;
                let result = match created {
                    Ok((id, _)) => match api.run(&id, "print(1)", "1").await {
                        Ok(_) => Ok((user, id)),
                        Err(e) => {
                            let _ = api.delete(&id).await;
                            Err(e)
                        }
                    },
                    Err(e) => Err(e),
                };
                if result.is_err() {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                result
            }
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .collect()
        .await;
    let mut first_error = None;
    for c in created {
        match c {
            Ok(sandbox) => live.push(sandbox),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn measure(
    server: &Server,
    cgroup_dir: &Path,
    before: &Snapshot,
    prober: &Api,
    level: usize,
    probes: usize,
) -> anyhow::Result<Level> {
    let after = snapshot(server, cgroup_dir)?;
    let own = procs::pss_sum(&[server.pid()]);
    let template = procs::jail_trees(server.pid()).template;
    let per = |b: u64, a: u64| (a as f64 - b as f64) / level as f64 / MIB;
    let (mut create, mut run) = (Vec::new(), Vec::new());
    for _ in 0..probes {
        let start = Instant::now();
        let (id, _) = prober.create(json!({})).await?;
        create.push(start.elapsed());
        prober.run(&id, "print(1)", "1").await?;
        for _ in 0..2 {
            let start = Instant::now();
            prober.run(&id, "print(1)", "1").await?;
            run.push(start.elapsed());
        }
        prober.delete(&id).await?;
    }
    Ok(Level {
        sandboxes: level,
        pss: per(before.pss.pss, after.pss.pss),
        pss_anon: per(before.pss.anon, after.pss.anon),
        cgroup: match (&before.cgroup, &after.cgroup) {
            (Some(b), Some(a)) if a.read > 0 => Some(per(b.usage, a.usage)),
            _ => None,
        },
        mem_available: per(after.mem_available, before.mem_available),
        processes: after.pss.read,
        server_rss: procs::rss_bytes(server.pid()) as f64 / MIB,
        server_pss: own.pss as f64 / MIB,
        template_rss: template.map(|t| procs::rss_bytes(t) as f64 / MIB),
        create: Summary::of(&create).context("no probes")?,
        run: Summary::of(&run).context("no probes")?,
    })
}
