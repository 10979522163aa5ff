//! What one run of the benchmark measured: the table on stdout and the JSON file.

use std::time::Duration;

use serde_json::{Value, json};

use cerver_bench::stats::Summary;

use crate::scale::{Memory, Throughput};

/// One timed series.
pub struct Series {
    /// Its name in the JSON file.
    pub key: String,
    pub label: String,
    pub samples: Vec<Duration>,
}

impl Series {
    pub fn new(key: &str, label: &str, samples: Vec<Duration>) -> Series {
        Series::new_owned(key.into(), label.into(), samples)
    }

    pub fn new_owned(key: String, label: String, samples: Vec<Duration>) -> Series {
        Series {
            key,
            label,
            samples,
        }
    }

    pub fn summary(&self) -> Option<Summary> {
        Summary::of(&self.samples)
    }
}

/// A figure not measured, and why.
pub struct Skipped {
    pub what: String,
    pub why: String,
}

/// Everything one run measured.
pub struct Report {
    pub machine: Value,
    pub command: String,
    /// A (bare spawn) first, then B (bubblewrap) when it ran.
    pub baselines: Vec<Series>,
    pub ours: Vec<Series>,
    pub skipped: Vec<Skipped>,
    pub first_install: Option<Duration>,
    pub throughput: Vec<Throughput>,
    pub throughput_failure: Option<String>,
    pub memory: Memory,
    pub notes: Vec<String>,
    pub elapsed: Duration,
}

fn summary_json(s: &Summary) -> Value {
    json!({"n": s.n, "min": s.min, "p50": s.p50, "p90": s.p90, "p99": s.p99, "max": s.max})
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Report {
    /// Baseline A's summary (the denominator of every ratio).
    pub fn bare(&self) -> Summary {
        self.baselines[0].summary().expect("baseline A has samples")
    }

    pub fn series(&self, key: &str) -> Option<&Series> {
        self.baselines
            .iter()
            .chain(&self.ours)
            .find(|s| s.key == key)
    }

    pub fn to_json(&self) -> Value {
        let bare = self.bare();
        let series = |list: &[Series]| -> Value {
            let mut map = serde_json::Map::new();
            for s in list {
                let Some(sum) = s.summary() else { continue };
                let mut v = summary_json(&sum);
                v["label"] = json!(s.label.trim());
                v["ratio_p50"] = json!(sum.p50 / bare.p50);
                v["ratio_p99"] = json!(sum.p99 / bare.p99);
                v["samples_ms"] = json!(s.samples.iter().map(|d| ms(*d)).collect::<Vec<_>>());
                map.insert(s.key.clone(), v);
            }
            Value::Object(map)
        };
        let throughput: Vec<Value> = self
            .throughput
            .iter()
            .map(|t| {
                json!({"clients": t.clients, "runs": t.runs, "secs": t.secs,
                       "runs_per_sec": t.runs as f64 / t.secs, "latency_ms": summary_json(&t.latency)})
            })
            .collect();
        let levels: Vec<Value> = self
            .memory
            .levels
            .iter()
            .map(|l| {
                json!({"sandboxes": l.sandboxes, "pss_mib_per_sandbox": l.pss,
                   "pss_anon_mib_per_sandbox": l.pss_anon, "cgroup_mib_per_sandbox": l.cgroup,
                   "mem_available_drop_mib_per_sandbox": l.mem_available, "processes": l.processes,
                   "server_rss_mib": l.server_rss, "server_pss_mib": l.server_pss,
                   "template_rss_mib": l.template_rss,
                   "create_ms": summary_json(&l.create), "run_ms": summary_json(&l.run)})
            })
            .collect();
        json!({
            "machine": self.machine,
            "command": self.command,
            "baselines": series(&self.baselines),
            "ours": series(&self.ours),
            "skipped": self.skipped.iter().map(|s| json!({"what": s.what, "why": s.why})).collect::<Vec<_>>(),
            "first_install_ms": self.first_install.map(ms),
            "throughput": throughput,
            "throughput_failure": self.throughput_failure,
            "memory": {"levels": levels, "failure": self.memory.failure},
            "notes": self.notes,
            "elapsed_s": self.elapsed.as_secs_f64(),
        })
    }

    pub fn print(&self) {
        let bare = self.bare();
        let m = &self.machine;
        println!("\ncerver-bench");
        for key in [
            "cpu",
            "nproc",
            "kernel",
            "mem_total",
            "python",
            "loadavg_start",
            "loadavg_end",
        ] {
            println!(
                "  {key:<14} {}",
                m[key].as_str().map_or(m[key].to_string(), String::from)
            );
        }
        println!("  command        {}", self.command);
        println!(
            "\nlatency (ms)                                   n      p50      p90      p99      max   p50/A   p99/A"
        );
        let row = |s: &Series| {
            if let Some(x) = s.summary() {
                println!(
                    "  {:<42} {:>4} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7.3} {:>7.3}",
                    s.label,
                    x.n,
                    x.p50,
                    x.p90,
                    x.p99,
                    x.max,
                    x.p50 / bare.p50,
                    x.p99 / bare.p99
                );
            }
        };
        self.baselines.iter().for_each(row);
        println!("  ours:");
        self.ours.iter().for_each(row);
        if let Some(first) = self.first_install {
            println!(
                "  (the untimed first install took {:.0} ms: it fills the host's wheel cache unless it holds the wheel)",
                ms(first)
            );
        }
        for s in &self.skipped {
            println!("  SKIPPED {}: {}", s.what, s.why);
        }
        self.print_scale();
        for note in &self.notes {
            println!("  note: {note}");
        }
        println!("\ntotal benchmark time {:.1} s", self.elapsed.as_secs_f64());
    }

    fn print_scale(&self) {
        println!("\nthroughput: warm print(1) runs, one sandbox and one connection per client");
        println!("  clients     runs   runs/s   p50 ms   p99 ms");
        for t in &self.throughput {
            println!(
                "  {:>7} {:>8} {:>8.1} {:>8.2} {:>8.2}",
                t.clients,
                t.runs,
                t.runs as f64 / t.secs,
                t.latency.p50,
                t.latency.p99
            );
        }
        if let Some(f) = &self.throughput_failure {
            println!("  FAILED: {f}");
        }
        println!(
            "\nmemory: idle workers sandboxes on --pool-size 0 (each ran print(1)); MiB per sandbox, and\n\
             create (cold) / warm run latency with that many alive (ms)"
        );
        println!(
            "  sandboxes   PSS  (anon)  cgroup  MemAvail  server RSS  server PSS  create p50/p99   run p50/p99"
        );
        for l in &self.memory.levels {
            let cgroup = l.cgroup.map_or("n/a".into(), |c| format!("{c:.2}"));
            println!(
                "  {:>9} {:>5.2} ({:>5.2}) {:>7} {:>9.2} {:>11.1} {:>11.1} {:>7.1}/{:<7.1} {:>6.2}/{:<6.2}",
                l.sandboxes,
                l.pss,
                l.pss_anon,
                cgroup,
                l.mem_available,
                l.server_rss,
                l.server_pss,
                l.create.p50,
                l.create.p99,
                l.run.p50,
                l.run.p99
            );
        }
        if let Some(rss) = self.memory.levels.iter().find_map(|l| l.template_rss) {
            println!(
                "  (PSS counts each sandbox's share of the template interpreter, whose RSS is {rss:.1} MiB once per server)"
            );
        }
        if let (Some(first), Some(last)) = (self.memory.levels.first(), self.memory.levels.last())
            && last.sandboxes > first.sandboxes
        {
            println!(
                "  at {} vs {} sandboxes: create p50 {:.2}x, run p50 {:.2}x (target <= 1.5x)",
                last.sandboxes,
                first.sandboxes,
                last.create.p50 / first.create.p50,
                last.run.p50 / first.run.p50
            );
        }
        if let Some(f) = &self.memory.failure {
            println!("  FAILED {f}");
        }
    }
}
