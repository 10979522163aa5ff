//! `cerver serve`: builds the runtime, the store, the accounts and the control plane from the
//! [`Settings`], serves the API, and shuts down in order on SIGTERM or Ctrl-C:
//!
//! 1. the listener closes, idle connections close at once, and followers of background
//!    processes and proxied streams end (they follow things that never end by themselves);
//! 2. in-flight requests, runs and run streams get `shutdown_grace_secs` to finish;
//! 3. then every sandbox is destroyed (a run still in flight answers with an error saying its
//!    sandbox ended), and connections still open a few seconds later are closed;
//! 4. usage counters are flushed and the database is closed, so the next start finds
//!    everything consistent.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::http;
use crate::settings::Settings;

/// After the grace period, how long the ended runs and streams get to send their error.
const AFTER_GRACE: Duration = Duration::from_secs(5);

pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    http::raise_fd_limit();
    let _lock = crate::lock_data_dir(&settings.data_dir)?;
    let data_dir = std::fs::canonicalize(&settings.data_dir)?;
    let helper = std::env::current_exe().context("locate the cerver binary")?;
    let mut rt_cfg = cerver_runtime::RuntimeConfig::new(data_dir.clone(), helper);
    rt_cfg.rootfs = settings.rootfs.clone();
    rt_cfg.pool_size = settings.pool_size;
    rt_cfg.template_interpreter = settings.template_interpreter;
    rt_cfg.wheel_fetch_timeout = Duration::from_secs(settings.wheel_fetch_timeout_secs.max(1));
    rt_cfg.max_wheelhouse_bytes = settings.wheel_cache_mb.saturating_mul(1 << 20);
    rt_cfg.max_wheel_fetch_bytes = settings.wheel_fetch_mb.saturating_mul(1 << 20);
    rt_cfg.max_wheel_bytes = settings.wheel_file_mb.saturating_mul(1 << 20);
    rt_cfg.wheel_index_url = settings.wheel_index_url.clone();
    rt_cfg.output_ring_bytes = settings.process_output_ring_bytes.max(4096);
    rt_cfg.sandboxes_memory_bytes = settings.sandboxes_memory_mb.map(|mb| mb << 20);
    if let Some(bytes) = settings.disk_cap_bytes()? {
        rt_cfg.disk_budget = cerver_runtime::disk::DiskBudget::Bytes(bytes);
    }
    rt_cfg.egress.blocklist = settings.egress_blocklist.clone();
    rt_cfg.egress.allowlist = settings.egress_allowlist.clone();
    let egress_rates = cerver_runtime::rates::EgressRates::new(
        settings.egress_mbit,
        settings.egress_connections_per_second,
    );
    let trial_egress_rates = cerver_runtime::rates::EgressRates::new(
        settings.trial_egress_mbit,
        settings.trial_egress_connections_per_second,
    );
    rt_cfg.egress_rates = egress_rates;
    settings.workers.apply(&mut rt_cfg.workers);
    settings.containers.apply(&mut rt_cfg.containers);
    let mut ports = port_config(&settings, &data_dir)?;
    let runtime = match cerver_runtime::Runtime::start(rt_cfg).await {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cerver: refusing to start: {e}");
            std::process::exit(2);
        }
    };
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    // The public port defaults to the listen port, known once bound.
    ports.public_port.get_or_insert(addr.port());
    let node_name = settings.cluster.node_name()?;
    let store = cerver_store::open_store(
        settings.cluster.database_url.as_deref(),
        &data_dir,
        Some(&node_name),
    )
    .await
    .context("open the database")?;
    let mailer = cerver_mail::Mailer::new(&settings.mail.to_config()?, &data_dir)
        .context("mail configuration")?;
    let public_url = settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let mut accounts = cerver_control::Accounts::new(store.clone(), mailer, public_url, &data_dir)
        .with_client_limits(cerver_control::client_limits::ClientLimitConfig {
            mails_per_hour: settings.auth.mails_per_hour,
            lookups_per_minute: settings.auth.lookups_per_minute,
        });
    if settings.cluster.database_url.is_some() {
        // Other nodes share the database: count requests there, exactly across all of them.
        accounts = accounts.shared();
    }
    let accounts = Arc::new(accounts);
    accounts.start_usage_flusher();
    let control_cfg = cerver_control::ControlConfig {
        max_timeout_ms: settings.max_timeout_ms,
        max_sandboxes: settings.max_sandboxes,
        max_concurrent_runs: settings.max_concurrent_runs,
        max_transfers: settings.max_file_transfers,
        max_transfers_per_sandbox: settings.max_file_transfers_per_sandbox,
        max_proxy_connections: settings.max_proxied_connections_per_sandbox,
        max_proxy_connections_total: settings.max_proxied_connections,
        proxy_idle_timeout: Duration::from_secs(settings.proxy_idle_timeout_secs.max(1)),
        upgrade_step_timeout: Duration::from_secs(settings.upgrade_step_timeout_secs.max(1)),
        processes: settings.processes.limits(),
        ports,
        egress_rates,
        trial_egress_rates,
        paused_retention: Duration::from_secs(settings.paused_retention_secs),
    };
    let control = cerver_control::Control::new(runtime, store.clone(), control_cfg)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Other nodes reach this one at the advertised URL; by default the address it listens on
    // (not usable for a wildcard address: then other nodes cannot forward here).
    let advertise_url = settings
        .cluster
        .advertise_url
        .clone()
        .or_else(|| (!addr.ip().is_unspecified()).then(|| format!("http://{addr}")));
    let node = cerver_store::NodeInfo {
        name: node_name.clone(),
        advertise_url: advertise_url.clone(),
        capacity: Some(settings.max_sandboxes as u64),
    };
    // Weak: the heartbeat must not keep the control plane alive past shutdown.
    let load = {
        let control = Arc::downgrade(&control);
        move || {
            control
                .upgrade()
                .map_or(0, |c| c.live_sandbox_count() as u64)
        }
    };
    let lease =
        crate::cluster::NodeLease::start(store.clone(), node, settings.cluster.lease(), load)
            .await?;
    let cluster = crate::cluster::routing(&settings.cluster, &store, node_name, advertise_url);
    let app = cerver_api::router(cerver_api::AppState {
        control: control.clone(),
        accounts: accounts.clone(),
        metrics_token: settings.metrics_token.clone().filter(|t| !t.is_empty()),
        cluster,
    });
    tracing::info!(%addr, "cerver listening");
    let limits = http::Limits {
        header_read_timeout: Duration::from_secs(settings.http.header_read_timeout_secs.max(1)),
        idle_timeout: Duration::from_secs(settings.http.idle_timeout_secs.max(1)),
        max_connections: settings.http.max_connections,
    };
    let closing = control.clone();
    let signals = ShutdownSignals::install()?;
    // Tests and scripts read the bound address (useful with port 0) from this line.
    println!("listening on http://{addr}");
    let signal = async move {
        signals.recv().await;
        // Followers of background processes and proxied streams or WebSockets end at once:
        // they follow something that does not end by itself, so a grace period would only
        // delay every shutdown by its full length.
        closing.begin_shutdown();
    };
    let drain = http::serve(listener, app, limits, signal).await;
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: letting in-flight work finish"
    );
    if !drain.wait(grace).await {
        tracing::warn!("grace period over: ending the runs and streams still in flight");
    }
    // Runs still in flight end with their sandboxes, with an error saying so.
    tracing::info!("shutting down: destroying sandboxes");
    control.shutdown().await;
    if !drain.wait(AFTER_GRACE).await {
        drain.force_close();
    }
    accounts.flush_usage().await;
    drop(accounts);
    drop(control);
    // The lease is left to run out: a node restarting within it keeps its sandboxes.
    drop(lease);
    store.close().await;
    tracing::info!("shut down");
    Ok(())
}

fn port_config(
    settings: &Settings,
    data_dir: &std::path::Path,
) -> anyhow::Result<cerver_control::ports::PortConfig> {
    let p = &settings.ports;
    let tokens = if p.tokens {
        Some(
            cerver_control::ports::PortTokens::load_or_create(data_dir)
                .context("port token secret")?,
        )
    } else {
        None
    };
    cerver_control::ports::PortConfig {
        domain: p.domain.clone(),
        scheme: p.scheme.clone(),
        public_port: p.public_port,
        tokens,
    }
    .validated()
    .map_err(|e| anyhow::anyhow!("port exposure configuration: {e}"))
}

/// SIGTERM and SIGINT, caught from the moment this is made: it is made before the
/// `listening on` line, so a supervisor that signals as soon as it reads that line gets a
/// graceful shutdown rather than the default action (death without cleanup).
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<ShutdownSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
        })
    }

    async fn recv(mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        tracing::info!("shutdown signal received");
    }
}
