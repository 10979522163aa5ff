//! Starting the zygote: a warm Python interpreter (`zygote.py`) that forks one child per run,
//! so a run costs a fork rather than an interpreter start.
//!
//! The zygote is exec'd as root of the sandbox's user namespace with only
//! [`crate::harden::ZYGOTE_CAPS`], under Landlock, `no_new_privs` and the zygote seccomp filter.
//! Each run child inherits that filter, stacks the run filter ([`crate::seccomp::RUN_FILTER`],
//! handed over on the command line) when the policy makes it stricter, and drops to the sandbox
//! user before executing any user code.
//!
//! # The program, precompiled
//! Starting the zygote as `python3 -c <its ~700 lines>` with two more sources in its settings
//! cost ~6 ms of compiling per sandbox start and left each zygote with 2.6 MiB more anonymous
//! memory (7.5 against 4.8 MiB; pymalloc keeps the arenas the compiler and the 40 KB command
//! line's copies dirtied). The runtime therefore compiles the three sources once per server
//! with the sandboxes' own interpreter ([`precompile`]) into one sealed memfd
//! ([`program_memfd`]) that every helper gets on [`crate::protocol::PROGRAM_FD`]; each zygote
//! finds it on [`ZYGOTE_PROGRAM_FD`] and its `-c` command is only [`BOOTSTRAP`]. No copy of it
//! is made per sandbox (a hex copy in the helper's configuration cost 0.36 MiB of helper and
//! init heap per sandbox). The sources travel in the same memfd: an interpreter whose version
//! differs from the one that compiled (or a runtime whose precompile failed) compiles them
//! itself (5.6 MiB).

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::sys::signal::SigSet;
use nix::unistd::{ForkResult, Pid, fork};

use crate::JailError;
use crate::protocol::{
    CONTROL_FD, JailConfig, PROGRAM_FD, ROOT_PROCESS_RESERVE, SANDBOX_UID, WORKSPACE,
};

/// The zygote program (run as `__main__`, under the file name `<string>` as `python -c` would).
pub const ZYGOTE_SOURCE: &str = include_str!("zygote.py");
/// Rich results of runs (`cerver_display` in the sandbox).
pub const DISPLAY_SOURCE: &str = include_str!("display.py");
/// Persistent interpreters (contexts, `cerver_context`).
pub const CONTEXT_SOURCE: &str = include_str!("context.py");
/// The three programs in the order of [`BOOTSTRAP`]'s `CODE` tuple (file names `<string>`,
/// `cerver_display`, `cerver_context`).
const SOURCES: [&str; 3] = [ZYGOTE_SOURCE, DISPLAY_SOURCE, CONTEXT_SOURCE];

/// Where the zygote finds its program (the memfd of [`program_memfd`]; closed before the
/// program runs).
pub const ZYGOTE_PROGRAM_FD: i32 = CONTROL_FD + 1;

/// The zygote's `python3 -I -S -c` command: loads `CODE` (the three code objects) from the
/// memfd on [`ZYGOTE_PROGRAM_FD`] (read with `pread`: the memfd's offset is shared) and runs
/// the first. Layout of the memfd: `sys.hexversion` of the
/// compiling interpreter (u32 LE), the length N of the marshal data (u32 LE, 0 when none),
/// the marshal data, then the three sources joined by NUL bytes.
pub const BOOTSTRAP: &str = r#"import marshal, os, sys
_h = os.pread(4, 8, 0)
_n = int.from_bytes(_h[4:], "little")
if _n and int.from_bytes(_h[:4], "little") == sys.hexversion:
    CODE = marshal.loads(os.pread(4, _n, 8))
else:
    _s = os.pread(4, os.fstat(4).st_size, 8 + _n).decode().split("\0")
    CODE = tuple(compile(s, f, "exec") for s, f in zip(_s, ("<string>", "cerver_display", "cerver_context")))
    del _s
os.close(4)
del _h, _n
exec(CODE[0])
"#;

/// Compiles the zygote's three programs with `python` (a host path of the sandboxes'
/// interpreter), for [`program_memfd`]: `sys.hexversion` (u32 LE) followed by the marshal data
/// of the tuple of code objects.
pub fn precompile(python: &Path) -> Result<Vec<u8>, JailError> {
    compile_with(python, &SOURCES)
}

fn compile_with(python: &Path, sources: &[&str; 3]) -> Result<Vec<u8>, JailError> {
    const COMPILER: &str = "import marshal, sys\n\
        names = ('<string>', 'cerver_display', 'cerver_context')\n\
        srcs = sys.stdin.buffer.read().decode().split('\\0')\n\
        code = tuple(compile(s, n, 'exec') for s, n in zip(srcs, names))\n\
        sys.stdout.buffer.write(sys.hexversion.to_bytes(4, 'little') + marshal.dumps(code))\n";
    let fail = |what: String| JailError::Setup(format!("precompile the zygote: {what}"));
    let mut child = std::process::Command::new(python)
        .args(["-I", "-S", "-c", COMPILER])
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("run {}: {e}", python.display())))?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(sources.join("\0").as_bytes()));
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if let Some(Err(e)) = written {
        return Err(fail(format!("write sources: {e}")));
    }
    if !out.status.success() || out.stdout.len() <= 4 {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail(format!("{}: {}", out.status, err.trim())));
    }
    Ok(out.stdout)
}

/// The memfd's content (see [`BOOTSTRAP`]) from [`precompile`]'s bytes, if any.
fn program(compiled: Option<&[u8]>, sources: &[&str; 3]) -> Vec<u8> {
    let (version, marshal) = match compiled {
        Some(bytes) if bytes.len() > 4 => (&bytes[..4], &bytes[4..]),
        _ => (&[0u8; 4][..], &[][..]),
    };
    let len = u32::try_from(marshal.len()).unwrap_or(0);
    let marshal = if len == 0 { &[][..] } else { marshal };
    let mut out = Vec::with_capacity(8 + marshal.len() + 32 * 1024);
    out.extend_from_slice(version);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(marshal);
    out.extend_from_slice(sources.join("\0").as_bytes());
    out
}

/// Environment of the zygote itself; each run gets its own environment from the runtime.
pub fn zygote_env() -> [String; 3] {
    use crate::layout::{HOME, LANG, PATH};
    [
        format!("PATH={PATH}"),
        format!("LANG={LANG}"),
        format!("HOME={HOME}"),
    ]
}

fn cstring(s: &str) -> Result<CString, JailError> {
    CString::new(s).map_err(|_| JailError::Setup("NUL byte in zygote argument".into()))
}

/// The zygote's settings (`configure()` in zygote.py), as JSON.
fn settings(cfg: &JailConfig) -> String {
    serde_json::json!({
        // Stacking an identical filter would only slow every syscall down.
        "run_filter": (crate::seccomp::RUN_FILTER != crate::seccomp::ZYGOTE_FILTER)
            .then(|| hex(crate::seccomp::RUN_FILTER)),
        "workspace": WORKSPACE,
        "venv": crate::protocol::VENV,
        "uid": SANDBOX_UID,
        "user_nproc": cfg.limits.pids.saturating_sub(ROOT_PROCESS_RESERVE).max(1),
    })
    .to_string()
}

/// Starts the zygote; returns its pid. In a process forked from the template interpreter
/// ([`crate::template`]) the zygote is a fork that runs the inherited, warm interpreter;
/// otherwise it is a fork that execs `python3` with [`BOOTSTRAP`]. Both harden the same way.
pub fn spawn(cfg: &JailConfig) -> Result<Pid, JailError> {
    if let Some(python) = crate::embed::get() {
        return spawn_forked(cfg, python);
    }
    let settings = settings(cfg);
    let argv = [
        cfg.python.as_str(),
        "-I",
        "-S",
        "-c",
        BOOTSTRAP,
        settings.as_str(),
    ]
    .iter()
    .map(|s| cstring(s))
    .collect::<Result<Vec<_>, _>>()?;
    let env = zygote_env()
        .iter()
        .map(|s| cstring(s))
        .collect::<Result<Vec<_>, _>>()?;
    let python = cstring(&cfg.python)?;
    // SAFETY: PROGRAM_FD was placed by the runtime when it spawned the helper and stays open
    // in the init for the sandbox's life; borrowed only to check it and to dup it in the child.
    let code = unsafe { BorrowedFd::borrow_raw(PROGRAM_FD) };
    nix::fcntl::fcntl(code, nix::fcntl::FcntlArg::F_GETFD)
        .map_err(|e| JailError::Setup(format!("the zygote's program (fd {PROGRAM_FD}): {e}")))?;

    // SAFETY: the init is single-threaded; the child only makes syscalls and execs (or exits).
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => Ok(child),
        Ok(ForkResult::Child) => {
            let err = exec(cfg, code, &python, &argv, &env);
            eprintln!("zygote: {err}");
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(127) }
        }
        Err(e) => Err(JailError::Setup(format!("fork zygote: {e}"))),
    }
}

/// The zygote as a fork of the template's interpreter: hardened like [`exec`]'s, then it makes
/// the interpreter its own and calls the program's `main` with its settings (hex-encoded into
/// the one line of code it runs, so nothing in them can be read as code).
fn spawn_forked(cfg: &JailConfig, python: &'static crate::embed::Python) -> Result<Pid, JailError> {
    let code = format!(
        "import sys\nsys.argv = ['-c']\nmain(bytes.fromhex('{}').decode())\n",
        hex(settings(cfg).as_bytes())
    );
    // SAFETY: the init is single-threaded; the child only makes syscalls, then runs Python
    // in the interpreter it inherited (see `embed::Python::after_fork_child`), then exits.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => Ok(child),
        Ok(ForkResult::Child) => {
            let mut status = 127;
            match harden(cfg, None) {
                Ok(()) => {
                    python.after_fork_child();
                    // main() ends the process (sys.exit); an exception was printed.
                    if let Err(e) = python.run(&code) {
                        eprintln!("zygote: {e}");
                        status = 1;
                    }
                }
                Err(e) => eprintln!("zygote: {e}"),
            }
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(status) }
        }
        Err(e) => Err(JailError::Setup(format!("fork zygote: {e}"))),
    }
}

/// One sealed memfd holding the zygote's program ([`BOOTSTRAP`]'s layout) from
/// [`precompile`]'s bytes, if any: made once by the runtime, handed to every helper. Sealed, so
/// nothing can change it; zygotes only `pread` it.
pub fn program_memfd(compiled: Option<&[u8]>) -> Result<OwnedFd, JailError> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let err = |what: &'static str| move |e: nix::Error| JailError::Setup(format!("{what}: {e}"));
    let fd = memfd_create(
        "cerver-zygote",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(err("memfd"))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&program(compiled, &SOURCES))
        .map_err(|e| JailError::Setup(format!("write zygote program: {e}")))?;
    let fd = OwnedFd::from(file);
    fcntl(
        &fd,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_SEAL,
        ),
    )
    .map_err(err("seal zygote program"))?;
    Ok(fd)
}

/// Puts the program memfd on [`ZYGOTE_PROGRAM_FD`], inherited across the exec.
fn place_program(code: BorrowedFd<'_>) -> Result<(), JailError> {
    // SAFETY: dup2 onto ZYGOTE_PROGRAM_FD, a number this (forked, single-threaded) child does
    // not use otherwise: the init closed its lifeline, which had that number, at start.
    if unsafe { libc::dup2(code.as_raw_fd(), ZYGOTE_PROGRAM_FD) } != ZYGOTE_PROGRAM_FD {
        return Err(JailError::Setup(format!(
            "program fd: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

fn exec(
    cfg: &JailConfig,
    code: BorrowedFd<'_>,
    python: &CString,
    argv: &[CString],
    env: &[CString],
) -> JailError {
    if let Err(e) = harden(cfg, Some(code)) {
        return e;
    }
    match nix::unistd::execve(python, argv, env) {
        Err(e) => JailError::Setup(format!("exec {}: {e}", cfg.python)),
        Ok(never) => match never {},
    }
}

/// Everything a zygote does before its interpreter runs, in order (each step needs privileges
/// the next one removes). `program`: put the program's memfd where [`BOOTSTRAP`] reads it (an
/// exec'd zygote); a forked one already holds its program and keeps no descriptor but stdio
/// and the control socket.
fn harden(cfg: &JailConfig, program: Option<BorrowedFd<'_>>) -> Result<(), JailError> {
    SigSet::empty()
        .thread_set_mask()
        .map_err(|e| JailError::Setup(format!("signal mask: {e}")))?;
    nix::unistd::setsid().map_err(|e| JailError::Setup(format!("setsid: {e}")))?;
    if let Some(code) = program {
        place_program(code)?;
    }
    crate::harden::rlimits(&cfg.limits)?;
    crate::harden::capabilities()?;
    crate::harden::no_new_privs()?;
    if program.is_none() {
        // What an exec would have done: the init's switch to root of the namespace made it
        // non-dumpable, and a forked process keeps that (an exec'd one is dumpable again).
        // Non-dumpable, its /proc files would belong to the (unmapped) host root of the
        // template's memory, and it could not write its own oom_score_adj.
        nix::sys::prctl::set_dumpable(true)
            .map_err(|e| JailError::Setup(format!("dumpable: {e}")))?;
        // And the process name an exec would give (`ps`, psutil's name()): the interpreter's.
        let name = cfg.python.rsplit('/').next().unwrap_or("python3");
        nix::sys::prctl::set_name(&cstring(name)?)
            .map_err(|e| JailError::Setup(format!("process name: {e}")))?;
    }
    crate::harden::landlock()?;
    // Only stdio, the control socket and (exec'd) the program cross into the interpreter
    // (which closes the program's memfd before it runs it).
    let keep = if program.is_some() {
        ZYGOTE_PROGRAM_FD
    } else {
        CONTROL_FD
    };
    // SAFETY: close_range on descriptors above `keep` (the init's PROGRAM_FD among them), none
    // of which we use again.
    if unsafe { libc::close_range(keep as u32 + 1, u32::MAX, 0) } != 0 {
        return Err(JailError::Setup("close_range failed".into()));
    }
    crate::seccomp::install_zygote_filters()
        .map_err(|e| JailError::Setup(format!("seccomp: {e}")))?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTHON: &str = "/usr/bin/python3";
    /// Stand-ins for the three programs: the first shows what the bootstrap gave it.
    const FAKE: [&str; 3] = [
        "import sys\nprint(CODE[1].co_filename, CODE[2].co_filename, sorted(k for k in globals() if k.startswith('_') and not k.startswith('__')))\nexec(CODE[1])\nprint(x)\ntry:\n    import os; os.fstat(4)\nexcept OSError:\n    print('closed')",
        "x = 41 + 1",
        "y = 2",
    ];

    /// Runs BOOTSTRAP as the zygote would, with `memfd` content on PROGRAM_FD; its stdout.
    fn bootstrap(content: &[u8]) -> String {
        let dir = std::env::temp_dir().join(format!("cerver-bootstrap-{}", rand_suffix()));
        std::fs::write(&dir, content).unwrap();
        let launcher = format!(
            "import os\nfd = os.open({:?}, os.O_RDONLY)\nos.dup2(fd, 4)\nos.execv({PYTHON:?}, [{PYTHON:?}, '-I', '-S', '-c', {BOOTSTRAP:?}])",
            dir.display().to_string()
        );
        let out = std::process::Command::new(PYTHON)
            .args(["-I", "-S", "-c", &launcher])
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn rand_suffix() -> String {
        use std::time::{SystemTime, UNIX_EPOCH};
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{}-{nanos}", std::process::id())
    }

    const EXPECTED: &str = "cerver_display cerver_context []\n42\nclosed\n";

    #[test]
    fn precompiled_programs_run_with_their_names_and_the_memfd_closed() {
        let compiled = compile_with(Path::new(PYTHON), &FAKE).unwrap();
        // The sources in the memfd differ: only the compiled code gives the expected output.
        let other_sources = ["print('compiled from the sources')", "", ""];
        assert_eq!(
            bootstrap(&program(Some(&compiled), &other_sources)),
            EXPECTED
        );
    }

    #[test]
    fn without_code_or_for_another_version_the_sources_are_compiled() {
        assert_eq!(bootstrap(&program(None, &FAKE)), EXPECTED);
        let mut other = compile_with(Path::new(PYTHON), &FAKE).unwrap();
        other[0] ^= 0xff; // another sys.hexversion: its marshal data must not be loaded
        other.truncate(8); // (and would not load)
        assert_eq!(bootstrap(&program(Some(&other), &FAKE)), EXPECTED);
    }

    #[test]
    fn the_real_programs_precompile() {
        let compiled = precompile(Path::new(PYTHON)).unwrap();
        assert!(compiled.len() > 4);
        let fd = program_memfd(Some(&compiled)).unwrap();
        let mut file = std::fs::File::from(fd);
        let expected = program(Some(&compiled), &SOURCES);
        let mut content = vec![0u8; expected.len() + 1];
        let n = std::os::unix::fs::FileExt::read_at(&file, &mut content, 0).unwrap();
        assert!(
            n == expected.len() && content[..n] == expected[..],
            "memfd content differs"
        );
        // Sealed: nobody can change the program every zygote loads.
        assert!(file.write_all(b"x").is_err());
        assert!(file.set_len(1).is_err());
    }
}
