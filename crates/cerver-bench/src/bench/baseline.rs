//! What a user would otherwise do, measured in the same run: A, a bare
//! `python3 -I -S -c 'print(1)'` spawn; B, the same under bubblewrap with isolation comparable
//! to a sandbox's.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// bubblewrap's arguments for baseline B: every namespace bwrap knows (user, ipc, pid, net,
/// uts, cgroup; so no network), a new session, death with the parent, `/usr` read-only
/// (with the merged-usr symlinks python needs to find its loader and libraries), a fresh
/// `/proc` and `/dev`, a tmpfs `/tmp` as the working directory and an empty environment.
/// No seccomp filter, cgroup or disk image: B is the floor of "spawn an isolated
/// interpreter", not a sandbox with our limits.
pub const BWRAP_ARGS: &[&str] = &[
    "--unshare-all",
    "--die-with-parent",
    "--new-session",
    "--ro-bind",
    "/usr",
    "/usr",
    "--symlink",
    "usr/lib",
    "/lib",
    "--symlink",
    "usr/lib64",
    "/lib64",
    "--symlink",
    "usr/bin",
    "/bin",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--tmpfs",
    "/tmp",
    "--chdir",
    "/tmp",
    "--clearenv",
];

/// Where bubblewrap is looked for.
pub const BWRAP: &str = "/usr/bin/bwrap";

/// Baseline A: spawns `python -I -S -c 'print(1)'` and waits for it (output captured),
/// `iterations` times after `warmup` untimed ones.
pub fn bare(python: &Path, warmup: usize, iterations: usize) -> anyhow::Result<Vec<Duration>> {
    let mut cmd = Command::new(python);
    cmd.args(["-I", "-S", "-c", "print(1)"]);
    series(cmd, warmup, iterations)
}

/// Baseline B: the same spawn inside `bwrap` ([`BWRAP_ARGS`]); `Ok(None)` when bubblewrap is
/// not installed.
pub fn bwrap(
    python: &Path,
    warmup: usize,
    iterations: usize,
) -> anyhow::Result<Option<Vec<Duration>>> {
    if !Path::new(BWRAP).is_file() {
        return Ok(None);
    }
    let mut cmd = Command::new(BWRAP);
    cmd.args(BWRAP_ARGS)
        .arg(python)
        .args(["-I", "-S", "-c", "print(1)"]);
    series(cmd, warmup, iterations).map(Some)
}

fn series(mut cmd: Command, warmup: usize, iterations: usize) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let start = Instant::now();
        let out = cmd.output().with_context(|| format!("spawn {cmd:?}"))?;
        let elapsed = start.elapsed();
        if !out.status.success() || out.stdout != b"1\n" {
            bail!(
                "{cmd:?}: {} stdout {:?} stderr {:?}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if i >= warmup {
            samples.push(elapsed);
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Baseline B has the isolation BENCHMARKS.md claims for it: no network but loopback (a
    /// network namespace), a pid namespace, a read-only `/usr`, a tmpfs `/tmp`, an empty
    /// environment.
    #[test]
    fn bwrap_baseline_is_isolated() {
        if !Path::new(BWRAP).is_file() {
            eprintln!("skipped: {BWRAP} not installed (scripts/setup installs bubblewrap)");
            return;
        }
        let check = r#"import os
nets = [l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]]
assert nets == ['lo'], nets
assert os.getpid() < 10, os.getpid()
try:
    open('/usr/bench-probe', 'w')
    raise SystemExit('/usr is writable')
except OSError as e:
    assert e.errno == 30, e
mounts = [l.split() for l in open('/proc/self/mounts')]
assert any(m[1] == '/tmp' and m[2] == 'tmpfs' for m in mounts), mounts
assert set(os.environ) <= {'PWD', 'LC_CTYPE'}, dict(os.environ)
print(1)"#;
        let out = Command::new(BWRAP)
            .args(BWRAP_ARGS)
            .args(["/usr/bin/python3", "-I", "-S", "-c", check])
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stdout == b"1\n",
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
