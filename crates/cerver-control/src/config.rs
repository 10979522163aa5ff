//! Settings of the control plane: server-wide bounds and the policy a review called policy
//! (background-process and proxy bounds, the upgrade step timeout), with today's values as
//! defaults.

use std::time::Duration;

use cerver_runtime::rates::EgressRates;

use crate::ports;

/// Settings of the control plane.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// Longest sandbox lifetime a caller may ask for (ms).
    pub max_timeout_ms: u64,
    /// Most sandboxes alive at once on this server.
    pub max_sandboxes: usize,
    /// Most runs in flight per sandbox.
    pub max_concurrent_runs: usize,
    /// Most connections proxied to one sandbox's exposed ports at once.
    pub max_proxy_connections: usize,
    /// Most connections proxied to all sandboxes at once (the whole server).
    pub max_proxy_connections_total: usize,
    /// A proxied exchange is cut after this long without a byte moving.
    pub proxy_idle_timeout: Duration,
    /// How long packing or unpacking a workspace may take during an upgrade.
    pub upgrade_step_timeout: Duration,
    /// Bounds on a sandbox's background processes.
    pub processes: ProcessLimits,
    /// How exposed ports are named and reached.
    pub ports: ports::PortConfig,
    /// Most file transfers (reads, writes, listings, upgrades) under way on the server at once.
    pub max_transfers: usize,
    /// Most file transfers under way in one sandbox at once.
    pub max_transfers_per_sandbox: usize,
    /// Egress bounds of a containers sandbox (bandwidth, new connections per second).
    pub egress_rates: EgressRates,
    /// The same for plans with `reduced_egress` (the trial plan).
    pub trial_egress_rates: EgressRates,
    /// How long a paused sandbox is kept before the reaper deletes it.
    pub paused_retention: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            max_timeout_ms: 24 * 3600 * 1000,
            max_sandboxes: 200,
            max_concurrent_runs: 16,
            max_proxy_connections: 64,
            max_proxy_connections_total: 1024,
            proxy_idle_timeout: Duration::from_secs(60),
            upgrade_step_timeout: Duration::from_secs(120),
            processes: ProcessLimits::default(),
            ports: ports::PortConfig::default(),
            max_transfers: 8,
            max_transfers_per_sandbox: 2,
            egress_rates: EgressRates::default(),
            trial_egress_rates: EgressRates::new(10, 10),
            paused_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Bounds on one sandbox's background processes (the per-stream ring size is the runtime's
/// `RuntimeConfig::output_ring_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessLimits {
    /// Most background processes running at once (more: a `Limit` error). A process counts
    /// until its output is drained: until everything it started has closed the stdout and
    /// stderr it inherited, not just until main exits (each holds its rings for as long as
    /// something may write to them).
    pub max_running: usize,
    /// Most ended (and drained) processes remembered (the oldest ended are forgotten first).
    pub max_ended: usize,
    /// Most output bytes that ended, drained processes may hold together; past it, the oldest
    /// ended are forgotten.
    pub max_ended_output_bytes: usize,
    /// Most clients following the sandbox's processes at once (`/processes/{pid}/stream`).
    pub max_followers: usize,
}

impl Default for ProcessLimits {
    fn default() -> Self {
        ProcessLimits {
            max_running: 16,
            max_ended: 32,
            max_ended_output_bytes: 8 << 20,
            max_followers: 16,
        }
    }
}
