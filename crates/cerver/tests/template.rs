//! The template interpreter (`cerver __template`, see `cerver_jail::template`): every
//! sandbox's helper, init and zygote are forks of one warm interpreter per server; without it
//! (turned off, or dead) sandboxes start their own `python3` as before, and nothing a run sees
//! differs.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Server;

/// Parent pid of `pid` (from /proc/PID/stat, after the command name).
fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn exe(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

/// The server's template process, if it has one: a child named `cerver-sandbox __template`.
fn template_of(server: u32) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{server}/task")).ok()?;
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"cerver-sandbox\0__template\0"))
        })
}

/// The processes of each sandbox cgroup under `dir`, and whether it is a containers sandbox
/// (one with an `eth0`).
fn sandboxes(dir: &Path) -> Vec<(bool, Vec<u32>)> {
    common::sandbox_cgroups(dir)
        .iter()
        .filter_map(|cg| std::fs::read_to_string(dir.join(cg).join("cgroup.procs")).ok())
        .map(|procs| {
            let pids: Vec<u32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
            let networked = pids.iter().any(|p| {
                std::fs::read_to_string(format!("/proc/{p}/net/dev"))
                    .is_ok_and(|d| d.contains("eth0:"))
            });
            (networked, pids)
        })
        .collect()
}

/// Every process of every workers sandbox under `dir`.
fn sandbox_pids(dir: &Path) -> Vec<u32> {
    sandboxes(dir)
        .into_iter()
        .filter(|(networked, _)| !networked)
        .flat_map(|(_, pids)| pids)
        .collect()
}

fn is_python(pid: u32) -> bool {
    exe(pid).to_string_lossy().contains("python3")
}

/// What a run sees of its interpreter and its privileges, the same with and without the
/// template: the sandbox's `python3`, isolated (`-I -S`), only the sandbox's environment, no
/// capability, `no_new_privs`, both seccomp filters, and no access to the file behind
/// `/proc/self/exe`.
const SELF_VIEW: &str = r#"import os, sys
status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())
try:
    open('/proc/self/exe', 'rb').read(4)
    exe = 'readable'
except OSError:
    exe = 'denied'
print(sys.executable, sys.flags.isolated, sys.flags.no_site, sorted(os.environ) == sorted(
    ['CERVER_ENGINE', 'CERVER_SANDBOX_ID', 'HOME', 'LANG', 'MPLCONFIGDIR', 'PATH',
     'PYTHONUNBUFFERED', 'TMPDIR', 'USER', 'XDG_CACHE_HOME']),
    status['CapEff'].strip(), status['CapBnd'].strip(), status['NoNewPrivs'].strip(),
    status['Seccomp_filters'].strip(), exe)"#;
const SELF_VIEW_EXPECTED: &str = "/usr/bin/python3 1 1 True 0000000000000000 0000000000000000 1 2";

async fn check_self_view(s: &Server, id: &str) {
    let out = s.output(id, SELF_VIEW).await;
    // An exec'd interpreter's own file (/usr/bin/python3.X) is readable; the template's (the
    // server binary, outside the sandbox's tree) is not.
    assert!(out.starts_with(SELF_VIEW_EXPECTED), "{out}");
}

/// With the template (the default, on a host with libpython), each workers sandbox's helper
/// is a fork of it, and the init and zygote (and so every run) run the server binary's image
/// with the interpreter it loaded, never an exec'd python3; runs see what they always saw, and
/// each sandbox's `random` is reseeded after the fork. A containers sandbox execs its own
/// interpreter (its own hash secret: it serves the network).
#[tokio::test]
async fn workers_sandboxes_are_forks_of_one_template_interpreter() {
    let s = Server::start();
    let template = template_of(s.pid()).expect("the server runs a template interpreter");
    let server_exe = exe(s.pid());
    let a = s.sandbox().await;
    let b = s.sandbox().await;
    let c = s
        .sandbox_with(serde_json::json!({"engine": "containers"}))
        .await;
    let hash = "print(hash('cerver'))";
    assert_eq!(s.output(&a, hash).await, s.output(&b, hash).await);
    assert_ne!(s.output(&a, hash).await, s.output(&c, hash).await);
    let containers: Vec<_> = sandboxes(&s.cgroup_dir())
        .into_iter()
        .filter(|(networked, _)| *networked)
        .collect();
    assert!(!containers.is_empty());
    for (_, pids) in containers {
        assert!(pids.iter().any(|&p| is_python(p)), "{pids:?}");
    }
    check_self_view(&s, &a).await;
    let draw = "import random\nprint(random.getrandbits(64))";
    assert_ne!(
        s.output(&a, draw).await,
        s.output(&b, draw).await,
        "each sandbox reseeds"
    );
    let pids = sandbox_pids(&s.cgroup_dir());
    assert!(pids.len() >= 4, "{pids:?}");
    for pid in &pids {
        assert_eq!(
            exe(*pid),
            server_exe,
            "process {pid} is not a template fork"
        );
    }
    // The inits' parents are the helpers, and their parent the template.
    let helpers: Vec<u32> = pids
        .iter()
        .filter_map(|&p| ppid(p))
        .filter(|p| !pids.contains(p))
        .collect();
    assert!(!helpers.is_empty());
    for helper in helpers {
        assert_eq!(ppid(helper), Some(template), "helper {helper}");
    }
}

/// `--template-interpreter false`: no template; each zygote execs the sandboxes' `python3`,
/// and runs see the same as with it.
#[tokio::test]
async fn without_the_template_each_zygote_execs_python() {
    let s = Server::start_with(&["--template-interpreter", "false"]);
    let id = s.sandbox().await;
    check_self_view(&s, &id).await;
    assert!(template_of(s.pid()).is_none());
    let pids = sandbox_pids(&s.cgroup_dir());
    assert!(pids.iter().any(|&p| is_python(p)), "an exec'd zygote");
}

/// A template that dies takes no sandbox with it: the live ones go on running, the sandbox
/// being built when its death shows starts its own interpreter, and the next create starts
/// a new template.
#[tokio::test]
async fn sandboxes_outlive_the_template_which_is_started_again() {
    let s = Server::start();
    let before = s.sandbox().await;
    let template = template_of(s.pid()).expect("a template");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(template as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while template_of(s.pid()).is_some() {
        assert!(Instant::now() < deadline, "the template did not go");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.output(&before, "print(6 * 7)").await, "42");
    // More than the pool holds: at least one is built after the template died.
    for _ in 0..3 {
        let id = s.sandbox().await;
        check_self_view(&s, &id).await;
        assert_eq!(s.output(&id, "print(6 * 7)").await, "42");
    }
    let execd = sandbox_pids(&s.cgroup_dir())
        .iter()
        .filter(|&&p| is_python(p))
        .count();
    assert!(
        execd > 0,
        "a sandbox built as the death showed execs its interpreter"
    );
    assert_eq!(s.output(&before, "print('still here')").await, "still here");
    let again = template_of(s.pid()).expect("a new template");
    assert_ne!(again, template);
    let id = s.sandbox().await;
    check_self_view(&s, &id).await;
    let forked = sandbox_pids(&s.cgroup_dir())
        .iter()
        .filter(|&&p| ppid(p).and_then(ppid) == Some(again))
        .count();
    assert!(forked > 0, "sandboxes forked by the new template");
}

/// A forked zygote that dies is restarted by its init as before, and the new one is again a
/// fork of the template's interpreter (the init holds it untouched): runs go on.
#[tokio::test]
async fn a_forked_zygote_is_restarted_from_the_inherited_interpreter() {
    let s = Server::start();
    let id = s.sandbox().await;
    let getpid = "import os\nprint(os.getppid())";
    s.output(&id, getpid).await;
    let dir = s.cgroup_dir();
    let zygotes = || -> Vec<u32> {
        sandboxes(&dir)
            .into_iter()
            .filter(|(networked, _)| !networked)
            .flat_map(|(_, pids)| {
                let init = pids
                    .iter()
                    .copied()
                    .find(|&p| ppid(p).is_some_and(|pp| !pids.contains(&pp)));
                pids.iter()
                    .copied()
                    .filter(|&p| init.is_some() && ppid(p) == init)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let before = zygotes();
    assert!(!before.is_empty());
    for z in &before {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*z as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.run(&id, "print(6 * 7)").await;
        if r["output"] == "42" {
            break;
        }
        assert!(Instant::now() < deadline, "no run after the restart: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = zygotes();
    assert!(!after.is_empty() && after.iter().all(|z| !before.contains(z)));
    for z in after {
        assert_eq!(exe(z), exe(s.pid()), "zygote {z}");
    }
}
