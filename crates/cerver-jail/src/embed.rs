//! The sandboxes' Python interpreter, loaded as a library (`libpython3.X.so`) into the template
//! process ([`crate::template`]), so that every sandbox's zygote can be a fork of one warm
//! interpreter instead of an `exec` of `python3`.
//!
//! Loaded with `dlopen` at run time (crate `libloading`), not linked: the server binary stays
//! one file that runs on hosts without the library (it then starts zygotes with `exec`). Only
//! the C API's stable entry points are used: the legacy configuration flags (what `-I -S` sets),
//! `Py_SetProgramName` (so that `sys.executable` and the module paths are the interpreter's),
//! `Py_InitializeEx`, `PyRun_SimpleString` and the three `PyOS_*Fork*` hooks that CPython's own
//! `os.fork()` calls around a fork.
//!
//! Once loaded, the interpreter belongs to this process for good: [`get`] hands it to the forked
//! zygote ([`crate::zygote::spawn`]), which calls [`Python::after_fork_child`] and runs its
//! program; nothing else in the process may call into it.

use std::ffi::{CString, c_char, c_int};
use std::path::Path;
use std::sync::OnceLock;

use crate::JailError;

type VoidFn = unsafe extern "C" fn();

/// The loaded interpreter's entry points (the library stays loaded for the process's life).
pub struct Python {
    _lib: libloading::Library,
    before_fork: VoidFn,
    after_fork_parent: VoidFn,
    after_fork_child: VoidFn,
    run_simple_string: unsafe extern "C" fn(*const c_char) -> c_int,
}

static PYTHON: OnceLock<Python> = OnceLock::new();

/// The interpreter loaded by [`load`] in this process (or in the process it was forked from).
pub fn get() -> Option<&'static Python> {
    PYTHON.get()
}

fn err(what: impl std::fmt::Display) -> JailError {
    JailError::Setup(format!("embedded interpreter: {what}"))
}

/// Loads `libpython` and initializes it as `python3 -I -S` named `program` (its `sys.executable`):
/// isolated from the environment and the user's site directory, no `site` import, the usual
/// signal dispositions (SIGPIPE and SIGXFSZ ignored, SIGINT raising `KeyboardInterrupt`).
/// Once per process, single-threaded, before any fork that is to use it.
pub fn load(libpython: &Path, program: &str) -> Result<&'static Python, JailError> {
    if PYTHON.get().is_some() {
        return Err(err("already loaded"));
    }
    let program = CString::new(program).map_err(|_| err("NUL in the program name"))?;
    // SAFETY: loading the interpreter's shared library runs its (CPython's) initializers, which
    // have no preconditions. RTLD_GLOBAL: the interpreter's extension modules (lib-dynload)
    // resolve the C API from the global scope, as they do in `python3` itself.
    let lib = unsafe {
        libloading::os::unix::Library::open(
            Some(libpython),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
        )
    }
    .map_err(|e| err(format!("load {}: {e}", libpython.display())))?;
    let lib = libloading::Library::from(lib);
    // SAFETY (every `get` below): the symbols have these C types in every CPython 3 since 3.7
    // (the configuration flags are `int`s; the program name is a `wchar_t *` that must outlive
    // the interpreter, which the leaked decoded string does).
    unsafe {
        for flag in [
            "Py_IsolatedFlag",
            "Py_NoSiteFlag",
            "Py_IgnoreEnvironmentFlag",
            "Py_NoUserSiteDirectory",
        ] {
            let f: libloading::Symbol<*mut c_int> = lib
                .get(flag.as_bytes())
                .map_err(|e| err(format!("{flag}: {e}")))?;
            **f = 1;
        }
        let decode: libloading::Symbol<
            unsafe extern "C" fn(*const c_char, *mut usize) -> *mut libc::wchar_t,
        > = lib.get(b"Py_DecodeLocale").map_err(err)?;
        let name = decode(program.as_ptr(), std::ptr::null_mut());
        if name.is_null() {
            return Err(err("decode the program name"));
        }
        let set_name: libloading::Symbol<unsafe extern "C" fn(*const libc::wchar_t)> =
            lib.get(b"Py_SetProgramName").map_err(err)?;
        set_name(name);
        let fns = (
            *lib.get::<VoidFn>(b"PyOS_BeforeFork").map_err(err)?,
            *lib.get::<VoidFn>(b"PyOS_AfterFork_Parent").map_err(err)?,
            *lib.get::<VoidFn>(b"PyOS_AfterFork_Child").map_err(err)?,
            *lib.get::<unsafe extern "C" fn(*const c_char) -> c_int>(b"PyRun_SimpleString")
                .map_err(err)?,
        );
        let init: libloading::Symbol<unsafe extern "C" fn(c_int)> =
            lib.get(b"Py_InitializeEx").map_err(err)?;
        init(1);
        let python = Python {
            _lib: lib,
            before_fork: fns.0,
            after_fork_parent: fns.1,
            after_fork_child: fns.2,
            run_simple_string: fns.3,
        };
        Ok(PYTHON.get_or_init(|| python))
    }
}

impl Python {
    /// Runs `code` in `__main__`. An uncaught exception is printed to stderr and reported as an
    /// error; `SystemExit` ends the process with its code, as in `python3 -c`.
    pub fn run(&self, code: &str) -> Result<(), JailError> {
        let code = CString::new(code).map_err(|_| err("NUL in code"))?;
        // SAFETY: the interpreter is initialized (`load`) and this thread holds its lock (the
        // process's only thread, which initialized it or was forked from it and ran
        // `after_fork_child`).
        match unsafe { (self.run_simple_string)(code.as_ptr()) } {
            0 => Ok(()),
            _ => Err(err("the code raised an exception (printed above)")),
        }
    }

    /// Forks this process as CPython's `os.fork()` would: its locks are taken around the fork.
    /// The child gets them held and must call [`after_fork_child`](Self::after_fork_child)
    /// before it uses the interpreter (the template's helpers never do; their zygotes do).
    pub fn fork(&self) -> nix::Result<nix::unistd::ForkResult> {
        // SAFETY: single-threaded caller holding the interpreter's lock (see `run`); the hooks
        // have no other precondition. The child of a single-threaded process may do anything.
        unsafe {
            (self.before_fork)();
            let forked = nix::unistd::fork();
            if let Ok(nix::unistd::ForkResult::Parent { .. }) | Err(_) = forked {
                (self.after_fork_parent)();
            }
            forked
        }
    }

    /// In a process forked by [`fork`](Self::fork) (directly or through further plain forks
    /// that never touched the interpreter): makes the interpreter usable here (re-creates its
    /// locks, makes this thread its main thread, runs `os.register_at_fork` hooks such as
    /// `random`'s reseed).
    pub fn after_fork_child(&self) {
        // SAFETY: called once, in a single-threaded forked child, before any other use.
        unsafe { (self.after_fork_child)() }
    }
}
