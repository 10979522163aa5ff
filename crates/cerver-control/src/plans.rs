//! What each plan allows, exactly as documented (policy as data).

use cerver_store::Plan;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Authenticated API requests per UTC day.
    pub requests_per_day: u64,
    /// Sandboxes alive at once.
    pub max_sandboxes: u64,
    /// Longest sandbox lifetime (ms); longer requests are capped.
    pub max_timeout_ms: u64,
    /// Whether `GET /sandbox/:id/host` may expose ports.
    pub port_exposure: bool,
    /// Whether a containers sandbox gets the lower egress bounds
    /// (`ControlConfig::trial_egress_rates`): free accounts must not become a cheap source of
    /// traffic from the operator's address.
    pub reduced_egress: bool,
}

const MINUTE_MS: u64 = 60_000;

pub fn limits(plan: Plan) -> PlanLimits {
    match plan {
        Plan::Trial => PlanLimits {
            requests_per_day: 100,
            max_sandboxes: 1,
            max_timeout_ms: 5 * MINUTE_MS,
            port_exposure: false,
            reduced_egress: true,
        },
        Plan::Free => PlanLimits {
            requests_per_day: 1_000,
            max_sandboxes: 5,
            max_timeout_ms: 60 * MINUTE_MS,
            port_exposure: true,
            reduced_egress: false,
        },
        Plan::Pro => PlanLimits {
            requests_per_day: 100_000,
            max_sandboxes: 100,
            max_timeout_ms: 24 * 60 * MINUTE_MS,
            port_exposure: true,
            reduced_egress: false,
        },
    }
}
