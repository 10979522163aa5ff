//! Metrics: the names and event calls live in `cerver_runtime::metrics` (re-exported here for
//! the API, which does not depend on the runtime); this module adds the gauges the control
//! plane reads at scrape time.

pub use cerver_runtime::metrics::*;

use cerver_runtime::Engine;

use crate::Control;

impl Control {
    /// How many sandboxes this server holds in its registry: the load a node reports in its
    /// heartbeat.
    pub fn live_sandbox_count(&self) -> usize {
        self.sandboxes.lock().unwrap().len()
    }

    /// Sets the scrape-time gauges: live sandboxes by engine and status (running: a run or
    /// install holds one of its slots), memory charged to them, warm pool sizes.
    pub fn update_gauges(&self) {
        let entries: Vec<_> = self.sandboxes.lock().unwrap().values().cloned().collect();
        for engine in [Engine::Workers, Engine::Containers] {
            let live: Vec<_> = entries
                .iter()
                .filter(|e| e.engine == engine && e.sandbox.is_alive())
                .collect();
            let running = live
                .iter()
                .filter(|e| e.runs.available_permits() < self.cfg.max_concurrent_runs)
                .count();
            set_sandboxes(engine, "running", running);
            set_sandboxes(engine, "idle", live.len() - running);
            let memory = live.iter().map(|e| e.sandbox.memory_bytes()).sum();
            set_memory(engine, memory, live.len());
        }
        for (engine, ready) in self.runtime.pool_ready() {
            set_pool_ready(engine, ready);
        }
    }
}
