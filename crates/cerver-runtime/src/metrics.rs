//! The server's metrics, named in one place. Each event is one call where it happens; the
//! `metrics` facade makes a call a no-op until a recorder is installed (the API crate's
//! `metrics` module installs the Prometheus one, and adds the HTTP metrics), so tests and tools that embed the crates pay nothing.
//!
//! Every label takes values from a closed set (engines, outcomes, route templates): the number
//! of series stays bounded whatever clients send.

use std::time::Duration;

use crate::Engine;
use crate::run::RunExit;

pub const SANDBOXES: &str = "cerver_sandboxes";
pub const SANDBOXES_CREATED: &str = "cerver_sandboxes_created_total";
pub const SANDBOXES_DESTROYED: &str = "cerver_sandboxes_destroyed_total";
pub const RUNS: &str = "cerver_runs_total";
pub const RUN_DURATION: &str = "cerver_run_duration_seconds";
pub const RUN_TIMEOUTS: &str = "cerver_run_timeouts_total";
pub const OOM_KILLS: &str = "cerver_oom_kills_total";
pub const INSTALLS: &str = "cerver_installs_total";
pub const QUOTA_REJECTIONS: &str = "cerver_quota_rejections_total";
pub const PROXY_CONNECTIONS: &str = "cerver_proxy_connections_total";
pub const POOL_READY: &str = "cerver_pool_ready";
pub const SANDBOX_MEMORY: &str = "cerver_sandbox_memory_bytes";
pub const MEMORY_PER_SANDBOX: &str = "cerver_node_memory_per_sandbox_bytes";

/// Histogram buckets (seconds) of run durations (the API uses them for request latency too).
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// One line of help per metric, for the exporter's `# HELP`.
pub const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        SANDBOXES,
        "Live sandboxes by engine and status (idle, running)",
    ),
    (SANDBOXES_CREATED, "Sandboxes created, by engine"),
    (
        SANDBOXES_DESTROYED,
        "Sandboxes destroyed (deleted or expired), by engine",
    ),
    (
        RUNS,
        "Runs ended, by engine, kind (code, exec, file) and outcome",
    ),
    (RUN_DURATION, "Run durations by engine and kind"),
    (RUN_TIMEOUTS, "Runs ended by their timeout, by engine"),
    (
        OOM_KILLS,
        "Runs killed for exceeding their sandbox's memory, by engine",
    ),
    (
        INSTALLS,
        "Package installs by result (ok, failed, rejected)",
    ),
    (
        QUOTA_REJECTIONS,
        "Requests refused by a plan limit, by which (requests, sandboxes)",
    ),
    (
        PROXY_CONNECTIONS,
        "Port-proxy exchanges by result (forwarded, refused, unreachable)",
    ),
    (POOL_READY, "Warm sandboxes ready, by engine"),
    (
        SANDBOX_MEMORY,
        "Memory charged to live sandboxes' cgroups, by engine",
    ),
    (
        MEMORY_PER_SANDBOX,
        "Mean memory charged per live sandbox, by engine",
    ),
];

pub fn sandbox_created(engine: Engine) {
    metrics::counter!(SANDBOXES_CREATED, "engine" => engine.as_str()).increment(1);
}

pub fn sandbox_destroyed(engine: Engine) {
    metrics::counter!(SANDBOXES_DESTROYED, "engine" => engine.as_str()).increment(1);
}

/// A run ended (or its consumer went away: `exit` is `None`).
pub fn run_ended(engine: Engine, kind: &'static str, exit: Option<&RunExit>, took: Duration) {
    let engine = engine.as_str();
    let outcome = match exit {
        None => "abandoned",
        Some(e) if e.timed_out => "timeout",
        Some(e) if e.out_of_memory => "oom",
        Some(e) if e.signal.is_some() => "killed",
        Some(e) if e.exit_code == 0 => "ok",
        Some(_) => "error",
    };
    metrics::counter!(RUNS, "engine" => engine, "kind" => kind, "outcome" => outcome).increment(1);
    metrics::histogram!(RUN_DURATION, "engine" => engine, "kind" => kind)
        .record(took.as_secs_f64());
    match outcome {
        "timeout" => metrics::counter!(RUN_TIMEOUTS, "engine" => engine).increment(1),
        "oom" => metrics::counter!(OOM_KILLS, "engine" => engine).increment(1),
        _ => {}
    }
}

/// `result`: ok, failed (the installer failed) or rejected (refused before running).
pub fn install(result: &'static str) {
    metrics::counter!(INSTALLS, "result" => result).increment(1);
}

/// `which`: requests (the daily budget) or sandboxes (the plan's concurrent sandboxes).
pub fn quota_rejected(which: &'static str) {
    metrics::counter!(QUOTA_REJECTIONS, "which" => which).increment(1);
}

/// `result`: forwarded, refused (no slot, not exposed, bad token) or unreachable.
pub fn proxy_connection(result: &'static str) {
    metrics::counter!(PROXY_CONNECTIONS, "result" => result).increment(1);
}

/// Scrape-time gauges of the runtime: warm pool sizes and sandbox memory.
pub fn set_pool_ready(engine: Engine, ready: usize) {
    metrics::gauge!(POOL_READY, "engine" => engine.as_str()).set(ready as f64);
}

pub fn set_sandboxes(engine: Engine, status: &'static str, n: usize) {
    metrics::gauge!(SANDBOXES, "engine" => engine.as_str(), "status" => status).set(n as f64);
}

pub fn set_memory(engine: Engine, total_bytes: u64, sandboxes: usize) {
    let engine = engine.as_str();
    metrics::gauge!(SANDBOX_MEMORY, "engine" => engine).set(total_bytes as f64);
    let mean = if sandboxes == 0 {
        0.0
    } else {
        total_bytes as f64 / sandboxes as f64
    };
    metrics::gauge!(MEMORY_PER_SANDBOX, "engine" => engine).set(mean);
}
