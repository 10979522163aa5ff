//! Our latencies, each a series of timed API calls against a server this program started:
//! runs and creates on the warm-pool server, cold creates on the `--pool-size 0` one.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use cerver_bench::server::Server;

use crate::report::Series;

/// A realistic 50-line script: parses JSON records, matches them with regular expressions,
/// does date arithmetic and prints a JSON summary (`json`, `re` and `datetime` are what most
/// agent-written code imports).
pub const REALISTIC_SCRIPT: &str = r#"import json
import re
from datetime import datetime, timedelta

RAW = """
[
  {"id": 1, "user": "ada@example.com", "ts": "2026-11-01T10:00:00", "msg": "login ok from 10.0.0.1"},
  {"id": 2, "user": "bob@example.org", "ts": "2026-11-01T10:05:30", "msg": "ERROR disk 93% full"},
  {"id": 3, "user": "ada@example.com", "ts": "2026-11-02T08:15:00", "msg": "upload 12 files, 4.5 MB"},
  {"id": 4, "user": "eve@example.net", "ts": "2026-11-03T23:59:59", "msg": "ERROR timeout after 30s"},
  {"id": 5, "user": "bob@example.org", "ts": "2026-11-04T12:00:00", "msg": "logout"}
]
"""

EMAIL = re.compile(r"^(?P<name>[\w.]+)@(?P<domain>[\w.-]+)$")
NUMBER = re.compile(r"(\d+(?:\.\d+)?)")
ERROR = re.compile(r"^ERROR\b")


def parse(records):
    for rec in records:
        m = EMAIL.match(rec["user"])
        yield {
            "id": rec["id"],
            "domain": m.group("domain") if m else None,
            "when": datetime.fromisoformat(rec["ts"]),
            "numbers": [float(n) for n in NUMBER.findall(rec["msg"])],
            "error": bool(ERROR.match(rec["msg"])),
        }


def summarize(rows):
    start = min(r["when"] for r in rows)
    end = max(r["when"] for r in rows)
    by_day = {}
    for r in rows:
        day = r["when"].date().isoformat()
        by_day[day] = by_day.get(day, 0) + 1
    return {
        "records": len(rows),
        "errors": sum(r["error"] for r in rows),
        "domains": sorted({r["domain"] for r in rows if r["domain"]}),
        "span_hours": round((end - start) / timedelta(hours=1), 2),
        "by_day": by_day,
        "numbers": sum(sum(r["numbers"]) for r in rows),
    }


rows = list(parse(json.loads(RAW)))
summary = summarize(rows)
print(json.dumps(summary, sort_keys=True))
"#;

/// What [`REALISTIC_SCRIPT`] prints.
pub const REALISTIC_OUTPUT: &str = r#"{"by_day": {"2026-11-01": 2, "2026-11-02": 1, "2026-11-03": 1, "2026-11-04": 1}, "domains": ["example.com", "example.net", "example.org"], "errors": 2, "numbers": 149.6, "records": 5, "span_hours": 74.0}"#;

/// 10 MiB of stdout in 1 KiB lines.
const TEN_MIB_OUTPUT: &str =
    "import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(10240):\n    sys.stdout.write(line)";
const TEN_MIB: usize = 10 << 20;
/// The stream's first event comes before the run ends (it sleeps 50 ms after it).
const FIRST_THEN_SLEEP: &str = "import time\nprint('first', flush=True)\ntime.sleep(0.05)";

/// How many iterations each kind of series takes.
pub struct Counts {
    pub warmup: usize,
    pub iterations: usize,
    /// For the slower series (10 MiB output, script, stream, files, installs).
    pub heavy: usize,
    pub gap: Duration,
}

fn since(start: Instant, samples: &mut Vec<Duration>) {
    samples.push(start.elapsed());
}

/// Runs in one sandbox of the warm server: print(1), the realistic script, the 10 MiB
/// output, the stream's first byte and a 1 MiB file written and read back.
pub async fn in_one_sandbox(server: &Server, n: &Counts) -> anyhow::Result<Vec<Series>> {
    let api = server.api();
    let (id, _) = server.create().await?;
    let mut run = Vec::new();
    let mut run_server = Vec::new();
    for i in 0..n.warmup + n.iterations {
        let start = Instant::now();
        let reported = server.run(&id, "print(1)", "1").await?;
        if i >= n.warmup {
            since(start, &mut run);
            run_server.push(reported);
        }
    }
    let mut script = Vec::new();
    for i in 0..1 + n.heavy {
        let start = Instant::now();
        server.run(&id, REALISTIC_SCRIPT, REALISTIC_OUTPUT).await?;
        if i > 0 {
            since(start, &mut script);
        }
    }
    let (mut big, mut first_byte) = (Vec::new(), Vec::new());
    for _ in 0..n.heavy {
        let s = api.stream(&id, TEN_MIB_OUTPUT).await?;
        if s.stdout_bytes != TEN_MIB || s.last["status"] != "ok" {
            bail!(
                "10 MiB output: {} bytes of stdout, last event {}",
                s.stdout_bytes,
                s.last
            );
        }
        big.push(s.total);
        let s = api.stream(&id, FIRST_THEN_SLEEP).await?;
        first_byte.push(s.first_byte);
    }
    let content: String = "0123456789abcdef".repeat((1 << 20) / 16);
    let mut files = Vec::new();
    for i in 0..n.heavy {
        let start = Instant::now();
        api.write_read(&id, &format!("bench/{i}.txt"), &content)
            .await?;
        since(start, &mut files);
    }
    server.delete(&id).await?;
    Ok(vec![
        Series::new("run", "warm run print(1)", run),
        Series::new("run_server", "  same, server-reported duration", run_server),
        Series::new("script", "50-line script (json, re, datetime)", script),
        Series::new(
            "output_10mib",
            "10 MiB output (/run/stream, all of it)",
            big,
        ),
        Series::new("sse_first_byte", "SSE first byte (/run/stream)", first_byte),
        Series::new("file_1mib", "1 MiB file write + read back", files),
    ])
}

/// Creates from the warm pool (the `DELETE` and the gap untimed), then create + first run.
pub async fn creates(server: &Server, n: &Counts, engine: &str) -> anyhow::Result<Vec<Series>> {
    let body = Some(engine);
    let (mut create, mut first_run, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n.iterations {
        let start = Instant::now();
        let (id, _) = server.create_with(body).await?;
        since(start, &mut create);
        server.delete(&id).await?;
        tokio::time::sleep(n.gap).await;
    }
    for _ in 0..n.iterations {
        let start = Instant::now();
        let (id, _) = server.create_with(body).await?;
        let run_start = Instant::now();
        server.run(&id, "print(1)", "1").await?;
        since(run_start, &mut first_run);
        since(start, &mut both);
        server.delete(&id).await?;
        tokio::time::sleep(n.gap).await;
    }
    let (key, label) = if engine == "workers" {
        ("", "")
    } else {
        ("containers_", "containers: ")
    };
    Ok(vec![
        Series::new_owned(
            format!("{key}create"),
            format!("{label}create, warm pool"),
            create,
        ),
        Series::new_owned(
            format!("{key}create_first_run"),
            format!("{label}create + first print(1)"),
            both,
        ),
        Series::new_owned(
            format!("{key}first_run"),
            format!("{label}  of which the first run"),
            first_run,
        ),
    ])
}

/// Cold creates (`--pool-size 0`): one untimed, then `iterations`.
pub async fn cold_creates(
    server: &Server,
    iterations: usize,
    gap: Duration,
    engine: &str,
) -> anyhow::Result<Series> {
    let mut samples = Vec::new();
    for i in 0..1 + iterations {
        let start = Instant::now();
        let (id, _) = server.create_with(Some(engine)).await?;
        if i > 0 {
            since(start, &mut samples);
        }
        server.delete(&id).await?;
        tokio::time::sleep(gap).await;
    }
    Ok(if engine == "workers" {
        Series::new("create_cold", "create, cold (--pool-size 0)", samples)
    } else {
        Series::new(
            "containers_create_cold",
            "containers: create, cold (--pool-size 0)",
            samples,
        )
    })
}

/// Cold workers creates on `template` (the default server) and `exec` (one started with
/// `--template-interpreter false`), alternating, each create deleted untimed.
pub async fn cold_creates_interleaved(
    template: &Server,
    exec: &Server,
    iterations: usize,
    gap: Duration,
) -> anyhow::Result<(Series, Series)> {
    let mut samples = [Vec::new(), Vec::new()];
    for i in 0..1 + iterations {
        for (server, samples) in [template, exec].into_iter().zip(samples.iter_mut()) {
            let start = Instant::now();
            let (id, _) = server.create_with(Some("workers")).await?;
            if i > 0 {
                since(start, samples);
            }
            server.delete(&id).await?;
            tokio::time::sleep(gap).await;
        }
    }
    let [with, without] = samples;
    Ok((
        Series::new("create_cold", "create, cold (--pool-size 0)", with),
        Series::new(
            "create_cold_exec",
            "  same, without the template interpreter",
            without,
        ),
    ))
}

/// A CPU-bound run: ~20 ms of pure-Python arithmetic on this machine kind, where the
/// interpreter's own speed shows (the template interpreter is the shared-library build of
/// CPython, Debian's `python3` binary a static one with more optimization).
pub const CPU_BOUND: &str = "print(sum(i * i for i in range(200000)))";
const CPU_BOUND_OUTPUT: &str = "2666646666700000";

/// [`REALISTIC_SCRIPT`] and [`CPU_BOUND`] in one sandbox of `template` and one of `exec`,
/// alternating: four series (with the template, then without).
pub async fn template_or_exec_runs(
    template: &Server,
    exec: &Server,
    iterations: usize,
) -> anyhow::Result<Vec<Series>> {
    let (a, _) = template.create_with(Some("workers")).await?;
    let (b, _) = exec.create_with(Some("workers")).await?;
    let mut samples: [Vec<Duration>; 4] = Default::default();
    for i in 0..2 + iterations {
        for (k, (code, expect)) in [
            (REALISTIC_SCRIPT, REALISTIC_OUTPUT),
            (CPU_BOUND, CPU_BOUND_OUTPUT),
        ]
        .into_iter()
        .enumerate()
        {
            let with = template.run(&a, code, expect).await?;
            let without = exec.run(&b, code, expect).await?;
            if i >= 2 {
                samples[k].push(with);
                samples[2 + k].push(without);
            }
        }
    }
    template.delete(&a).await?;
    exec.delete(&b).await?;
    let [script, cpu, script_exec, cpu_exec] = samples;
    Ok(vec![
        Series::new("template_script", "50-line script, template (A/B)", script),
        Series::new("exec_script", "  same, exec'd python3", script_exec),
        Series::new("template_cpu", "CPU-bound loop, template (A/B)", cpu),
        Series::new("exec_cpu", "  same, exec'd python3", cpu_exec),
    ])
}

/// Whether the server creates containers sandboxes; the reason when it does not.
pub async fn containers_unavailable(server: &Server) -> Option<String> {
    match server.create_with(Some("containers")).await {
        Ok((id, _)) => server.delete(&id).await.err().map(|e| format!("{e:#}")),
        Err(e) => Some(format!("{e:#}")),
    }
}

/// Installs of `requirement` into new containers sandboxes: one untimed (it fills the host's
/// wheel cache when the wheel is not there yet), then `n` timed from the cache.
pub async fn cached_installs(
    server: &Server,
    requirement: &str,
    n: usize,
) -> anyhow::Result<(Duration, Series)> {
    let mut first = Duration::ZERO;
    let mut samples = Vec::new();
    for i in 0..1 + n {
        let (id, _) = server
            .api()
            .create(json!({ "engine": "containers" }))
            .await?;
        let start = Instant::now();
        server.install(&id, requirement).await?;
        if i == 0 {
            first = start.elapsed();
        } else {
            since(start, &mut samples);
        }
        server.delete(&id).await?;
    }
    let label = format!("containers: cached install {requirement}");
    Ok((
        first,
        Series::new_owned("install_cached".into(), label, samples),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script prints what the benchmark expects of it (so a run in a sandbox that prints
    /// something else is the sandbox's fault), and it is the 50-line script it claims to be.
    #[test]
    fn realistic_script_output() {
        let out = std::process::Command::new("/usr/bin/python3")
            .args(["-I", "-S", "-c", REALISTIC_SCRIPT])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim_end(),
            REALISTIC_OUTPUT
        );
        assert!((45..=55).contains(&REALISTIC_SCRIPT.lines().count()));
    }
}
