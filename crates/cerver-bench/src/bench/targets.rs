//! Issue 14's targets, judged on a report (ratios are to baseline A of the same run).

use crate::report::Report;

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

/// Prints one line per target that the report has the figure for.
pub fn print(r: &Report) {
    let bare = r.bare();
    println!("\ntargets (issue 14)                                  value    target");
    let line = |name: &str, value: f64, target: f64, unit: &str, at_least: bool| {
        let pass = if at_least {
            value >= target
        } else {
            value <= target
        };
        let op = if at_least { ">=" } else { "<=" };
        println!(
            "  {name:<46} {value:>9.3}    {op} {target}{unit}  {}",
            verdict(pass)
        );
    };
    let p50 = |key: &str| r.series(key).and_then(|s| s.summary()).map(|s| s.p50);
    let p99 = |key: &str| r.series(key).and_then(|s| s.summary()).map(|s| s.p99);
    if let Some(v) = p50("create_cold") {
        line("cold create p50 (ms)", v, 10.0, " ms", false);
    }
    if let Some(v) = p50("create") {
        line(
            "create (warm pool) p50 / A p50",
            v / bare.p50,
            0.2,
            "x",
            false,
        );
    }
    if let Some(v) = p50("create_first_run") {
        line(
            "create + first run p50 / A p50",
            v / bare.p50,
            1.0,
            "x",
            false,
        );
    }
    if let Some(v) = p50("run") {
        line("warm run p50 / A p50", v / bare.p50, 0.4, "x", false);
    }
    if let Some(v) = p99("run") {
        line("warm run p99 / A p99", v / bare.p99, 1.0, "x", false);
    }
    if let Some(t) = r.throughput.iter().find(|t| t.clients == 16) {
        let rate = t.runs as f64 / t.secs;
        line("runs/s with 16 clients", rate, 500.0, "", true);
    }
    if let Some(v) = p50("containers_create") {
        line(
            "containers create p50 / A p50",
            v / bare.p50,
            0.5,
            "x",
            false,
        );
    }
    if let Some(v) = p50("containers_first_run") {
        line(
            "containers first run p50 / A p50",
            v / bare.p50,
            1.0,
            "x",
            false,
        );
    }
    if let (Some(here), Some(there)) = (p50("cluster_run_holder"), p50("cluster_run_forwarded")) {
        line(
            "forwarding between nodes adds, p50 (ms) (issue 11)",
            there - here,
            1.0,
            " ms",
            false,
        );
    }
    let levels = &r.memory.levels;
    if let Some(l) = levels.iter().max_by_key(|l| l.sandboxes) {
        let name = format!("PSS per idle sandbox at {} (MiB)", l.sandboxes);
        line(&name, l.pss, 3.0, " MiB", false);
        line(
            "idle sandboxes alive at once",
            l.sandboxes as f64,
            1000.0,
            "",
            true,
        );
    }
    if let (Some(a), Some(b)) = (levels.first(), levels.last())
        && b.sandboxes > a.sandboxes
    {
        let name = format!("create p50 at {} / at {}", b.sandboxes, a.sandboxes);
        line(&name, b.create.p50 / a.create.p50, 1.5, "x", false);
        let name = format!("run p50 at {} / at {}", b.sandboxes, a.sandboxes);
        line(&name, b.run.p50 / a.run.p50, 1.5, "x", false);
    }
}
