//! Run leaders (the parent of each run's main process, `os.getppid()` in user code; see
//! `zygote.py`): reused from one run to the next only once nothing of a run is left, never
//! after a kill, and given back by a sandbox idle for 30 s after its last run.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::json;

/// A run's leader (the parent of its main process, `os.getppid()` in user code) is reused by
/// the next run once nothing of its run is left; one whose run was killed, or that still
/// leads a background process, never takes another run; and none of this shows in results.
#[tokio::test]
async fn run_leaders_are_reused_only_when_their_run_is_over() {
    let s = Server::start();
    let id = s.sandbox().await;
    let ppid = "import os\nprint(os.getppid())";
    let first = s.output(&id, ppid).await;
    assert_eq!(
        s.output(&id, ppid).await,
        first,
        "a finished run's leader is reused"
    );
    assert_eq!(s.output(&id, ppid).await, first);

    // A run killed at its timeout: its leader exits, the next run gets another one.
    let killed = s
        .run_with(
            &id,
            json!({"code": "import os, time\nprint(os.getppid(), flush=True)\ntime.sleep(60)",
                   "timeout": 1}),
        )
        .await;
    assert_eq!(killed["status"], "timeout", "{killed}");
    let killed_leader = killed["output"].as_str().unwrap().trim().to_string();
    assert_eq!(killed_leader, first);
    let second = s.output(&id, ppid).await;
    assert_ne!(
        second, killed_leader,
        "a leader that was sent a kill is never reused"
    );
    let alive = format!("import os\nprint(os.path.exists('/proc/{killed_leader}'))");
    assert_eq!(s.output(&id, &alive).await, "False");
    assert_eq!(s.output(&id, ppid).await, second);

    // A background process keeps its leader busy: foreground runs get another leader, then
    // reuse that one; killing the process ends its leader too.
    let (status, bg) = s
        .post(
            &format!("/sandbox/{id}/run"),
            json!({"code": "import time\ntime.sleep(600)", "background": true}),
        )
        .await;
    assert_eq!(status, 200, "{bg}");
    let pid = bg["pid"].as_u64().unwrap();
    let parent = format!("print(open('/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])");
    let bg_leader = s.output(&id, &parent).await;
    let third = s.output(&id, ppid).await;
    assert_ne!(third, bg_leader);
    assert_eq!(s.output(&id, ppid).await, third);
    let (status, v) = s.delete(&format!("/sandbox/{id}/processes/{pid}")).await;
    assert_eq!(status, 200, "{v}");
    let alive = format!("import os\nprint(os.path.exists('/proc/{bg_leader}'))");
    assert_eq!(s.output(&id, &alive).await, "False");

    // A run whose orphan outlives it: the leader stays with the orphan until it ends.
    let orphaning = "import os, subprocess, sys\n\
                     subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(2)'], \
                     start_new_session=True)\nprint(os.getppid())";
    let orphans_leader = s.output(&id, orphaning).await;
    let next = s.output(&id, ppid).await;
    assert_ne!(next, orphans_leader, "busy with the orphan");
    // Every status still comes from how each run ended.
    let r = s.run(&id, "raise SystemExit(4)").await;
    assert_eq!(
        (r["status"].as_str(), r["exit_code"].as_i64()),
        (Some("error"), Some(4)),
        "{r}"
    );
    assert_eq!(s.run(&id, "print('fine')").await["status"], "ok");
}

/// The number of processes in each sandbox cgroup under `dir` (init, zygote, and leaders and
/// their mains), the warm pool's sandboxes included.
fn sandbox_processes(dir: &std::path::Path) -> Vec<usize> {
    common::sandbox_cgroups(dir)
        .iter()
        .map(|cg| {
            std::fs::read_to_string(dir.join(cg).join("cgroup.procs"))
                .map(|procs| procs.lines().count())
                .unwrap_or(0)
        })
        .collect()
}

/// A sandbox without a run for 30 s after running code gives its armed run pair back (host
/// memory), and its next run works as ever, on a fresh pair; the warm pool's sandboxes, which
/// never ran, keep theirs (so that a first run stays fast).
#[tokio::test]
async fn an_idle_sandbox_gives_its_armed_pair_back() {
    let s = Server::start();
    let id = s.sandbox().await;
    let ppid = "import os\nprint(os.getppid())";
    let before = s.output(&id, ppid).await;
    let dir = s.cgroup_dir();
    // init, zygote, a leader and its armed main, in every sandbox (ours and the pool's, once
    // the pool has refilled).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sandbox_processes(&dir).iter().all(|&n| n == 4) {
        assert!(Instant::now() < deadline, "{:?}", sandbox_processes(&dir));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut counts;
    loop {
        counts = sandbox_processes(&dir);
        if counts.contains(&2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the armed pair stayed: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    counts.sort();
    assert_eq!(counts[0], 2, "{counts:?}");
    assert!(
        counts.len() == 1 || counts[1..].iter().all(|&n| n == 4),
        "only ours: {counts:?}"
    );
    let after = s.output(&id, ppid).await;
    assert_ne!(after, before, "a fresh leader");
    assert_eq!(s.output(&id, ppid).await, after);
    assert!(
        sandbox_processes(&dir).iter().all(|&n| n == 4),
        "{:?}",
        sandbox_processes(&dir)
    );
}
