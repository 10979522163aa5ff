# The Cerver zygote: a warm interpreter that forks one child per run.
#
# Started by the sandbox init either forked from the server's template interpreter (template.rs,
# which ran this program with TEMPLATE set: everything is defined, and the fork calls main())
# or as `python3 -I -S -c <BOOTSTRAP> <settings-json>`, which loads this program (precompiled,
# see zygote.rs) from a memfd. Either way it runs as root of the sandbox's user namespace
# with CAP_SETUID, CAP_SETGID, CAP_SETPCAP and CAP_KILL only,
# under Landlock, no_new_privs and the zygote seccomp filter. Protocol: see protocol.rs.
#
# One program in four parts, marked by "# ----" rules (the run's leader, the run's main
# process, file operations, the zygote loop): they share this module's globals, and the
# precompiled bundle (zygote.rs) carries it as one unit beside display.py and context.py.
# Moving the file operations into a fourth program of that bundle is the next split.
#
# Leaders: zygote --fork--> leader (child subreaper: every orphan of a run comes back to it)
# Per run:  leader --fork--> main (drops every privilege, stacks the run seccomp filter, runs code)
# The leader reports the main process's status, then reaps whatever else the run started, and
# lives as long as any of it does (processes a run leaves behind keep running). Killing a run
# (timeout, client gone) = SIGUSR1 to the leader, which SIGKILLs every descendant until none is
# left, then exits. All runs share the sandbox's pid namespace, so /proc, os.getpid() and
# signals between runs (say, stopping a server a previous run started) behave as on any host.
#
# Speed: a leader keeps its next main "armed" ahead of time (forked, filter installed, waiting
# on its own socket as root of the namespace with CAP_SETUID/CAP_SETGID only, so no user code
# can signal it). A request hands the leader its descriptors, which it passes to that main;
# main switches to the sandbox user (which clears its last capabilities) and runs, while the
# leader forks the next main. Leaders are reused: once nothing a run started is left, its
# leader takes the next run, so a run costs one fork of a warm interpreter, not two (a fork
# here costs ~1 ms of page faults: see BENCHMARKS.md). A leader never runs user code, and one
# that was sent a kill is never reused. Only the leader ever holds the status pipe, so user
# code cannot forge its own result.

import ctypes
import gc
import io
import json
import os
import resource
import signal
import array
import select
import _socket  # the C module: `socket` builds large enums (~0.35 MiB per sandbox)
import sys

# Modules that most runs import: loaded once here, shared copy-on-write by every run. The set
# is a trade-off: each module makes runs that import it faster, but grows the zygote's private
# heap (host memory per sandbox) and the cost of every fork. Measured on CPython 3.11: json
# 1 MiB, datetime 0.5 MiB, traceback 0.3 MiB; re, math, random, collections, functools,
# itertools, string, struct, time are nearly free once json is in.
import atexit, builtins, collections, functools, itertools, math, random, re, site  # noqa
import string, struct, time, types  # noqa

# `python -c` has exit(), quit(), help() and copyright; we run with -S, so add them explicitly.
site.setquit()
site.setcopyright()
site.sethelper()

# Set by configure() from the zygote's settings (zygote.rs), when the zygote starts.
WORKSPACE = VENV = UID = USER_NPROC = RUN_PROG = CTRL = None
_RUN_FILTER = b""
CONTROL_FD = 3
RUN_FDS = 6  # spec, stdin, stdout, stderr, status, results
MAX_MESSAGE = 4096

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
CAP_SETGID = 6
CAP_SETUID = 7
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
SECCOMP_MODE_FILTER = 2

libc = ctypes.CDLL(None, use_errno=True)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


# Rich results (display.py), as the module `cerver_display`: defined once here, used per run.
display = types.ModuleType("cerver_display")
exec(CODE[1], display.__dict__)  # CODE: set by the bootstrap (zygote.rs)
sys.modules["cerver_display"] = display
# Persistent interpreters (context.py): a run of kind "context" serves executions until closed.
context = types.ModuleType("cerver_context")
exec(CODE[2], context.__dict__)
import _ast  # the C module: the notebook-cell split of run_code, without importing `ast`

runs = {}  # run id -> pid of its leader
dead = set()  # pids reaped by `reap`, not yet forgotten by the loop


def check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def reap(*_):
    """SIGCHLD: reaps leaders (and a main whose leader failed before forking); the loop
    forgets the dead ones (`forget_dead`), never this handler, which may run at any point."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        dead.add(pid)


def recv_fds(sock, size, maxfds):
    """One message and the descriptors attached to it (socket.recv_fds, on _socket)."""
    fds = array.array("i")
    msg, ancdata, _flags, _addr = sock.recvmsg(size, _socket.CMSG_LEN(maxfds * fds.itemsize))
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds)


def send_fds(sock, msg, fds):
    sock.sendmsg([msg], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))])


def send(obj):
    CTRL.send(json.dumps(obj).encode())


# ---------------------------------------------------------------- the run's leader

def recv_run(sock):
    """main: the run's descriptors, as handed over by its leader. Exits if the leader went
    away."""
    msg, fds = recv_fds(sock, 16, RUN_FDS)
    if not msg or len(fds) != RUN_FDS:
        os._exit(0)
    for fd in fds:
        os.set_inheritable(fd, False)
    return fds


def descendants(root):
    """Pids of every living descendant of `root`, from /proc (the sandbox's pid namespace)."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def kill_run(*_):
    """SIGUSR1 handler of the leader: SIGKILL the whole run, however it forked or detached
    (orphans are reparented to the leader, a subreaper), until nothing is left, then exit. (The
    zygote never hands another run to a leader it has signalled, so a kill that crosses the end
    of its run, or lands on the next armed main, never reaches another run.)"""
    me = os.getpid()
    for _round in range(1000):
        pids = descendants(me)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        time.sleep(0.001)
    os._exit(0)


def leader(sock):
    """A run's leader, reused run after run: a run costs one fork (its main), not two. The
    zygote sends it each run's descriptors; it hands them to its armed main over that main's
    own socket, and while the run goes on forks the next run's main (a background run: only
    once it is over). Once nothing the run started is left, it says "ready" (before writing
    the status, so that the zygote never forks another leader for the next request); if the
    next main is not forked yet it first says "done", so the zygote waits for it. It never
    runs user code itself."""
    try:
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, kill_run)
        # Keep only stdio and our socket: nothing of the zygote or of other runs.
        keep = sock.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, 1 << 20)
        # Die with the zygote: a restarted zygote would not know this run.
        check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
        check(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "subreaper")
        # What no run may ever gain back, dropped once here rather than in every main (the
        # bounding set is inherited; the leader keeps its effective capabilities).
        cap = 0
        while True:
            if cap not in (CAP_SETUID, CAP_SETGID) and libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                break
            cap += 1
        spare = fork_main()
        said_ready = True  # the first arming needs no word: the zygote forked us armed
        while True:
            if spare is None:
                spare = fork_main()
            if not said_ready:
                sock.send(b"ready")
            msg, fds = recv_fds(sock, 16, RUN_FDS)
            if not msg or len(fds) != RUN_FDS:
                os._exit(0)  # the zygote retired us, or went away
            (main, to_main), spare = spare, None
            send_fds(to_main, msg, fds)
            to_main.close()
            status_fd = fds[4]
            for fd in fds[:4] + fds[5:]:
                os.close(fd)
            if msg == b"run+pid":
                # A background run: the server learns the pid user code sees (os.getpid()).
                _write_status(status_fd, {"pid": main})
            else:
                spare = fork_main()
            spare, said_ready = lead_run(sock, main, status_fd, spare)
    except BaseException:
        pass
    os._exit(1)


def fork_main():
    """Forks a main, armed: (pid, the leader's end of its socket)."""
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            # Nothing of the leader's (the zygote's socket, a running run's status pipe).
            keep = theirs.fileno()
            os.closerange(3, keep)
            os.closerange(keep + 1, 1 << 20)
        except BaseException:
            os._exit(1)
        run_main(theirs)
    theirs.close()
    return pid, ours


def lead_run(sock, main, status_fd, spare):
    """Reports how main ended and returns once nothing the run started is left: (the spare
    main if it is still alive, whether "ready" was said)."""
    said_ready = False
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if spare is not None and pid == spare[0]:
            spare[1].close()  # killed while armed (memory pressure): forked again later
            spare = None
        if pid == main:
            over = _only_child(spare)
            if over:
                sock.send(b"ready" if spare is not None else b"done")
                said_ready = spare is not None
            if os.WIFSIGNALED(status):
                _write_status(status_fd, {"signal": os.WTERMSIG(status)})
            else:
                _write_status(status_fd, {"exit_code": os.waitstatus_to_exitcode(status)})
            os.close(status_fd)
            main = None
            if over:
                return spare, said_ready
        elif main is None and _only_child(spare):
            break  # what the run left behind has ended too
    sock.send(b"done")
    return spare, False


def _only_child(spare):
    """Whether the leader has no child left but the spare main (orphans of a run are its
    children too: it is their subreaper; reaping a process has already reparented its
    children, so this is exact right after a reap)."""
    me = os.getpid()
    with open(f"/proc/{me}/task/{me}/children", "rb") as f:
        children = f.read().split()
    return all(spare is not None and int(c) == spare[0] for c in children)


def _write_status(fd, obj):
    try:
        os.write(fd, (json.dumps(obj) + "\n").encode())
    except OSError:
        pass


# ---------------------------------------------------------------- the run's main process

def prepare_main():
    """While armed: everything but the switch to the sandbox user."""
    os.setsid()
    # Under memory pressure the kernel kills user code first, never the zygote or a leader.
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    # (The leader has already dropped every bounding capability but CAP_SETUID/CAP_SETGID.)
    # The sandbox user may use all but a few of the sandbox's processes, so that a fork bomb
    # can never starve the zygote and leaders (root of the namespace, counted separately).
    resource.setrlimit(resource.RLIMIT_NPROC, (USER_NPROC, USER_NPROC))
    if _RUN_FILTER:
        check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(RUN_PROG), 0, 0), "seccomp")


def become_user():
    for cap in (CAP_SETUID, CAP_SETGID):
        check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop bounding capability")
    os.setgroups([])
    os.setresgid(UID, UID, UID)
    os.setresuid(UID, UID, UID)  # from root to non-root: clears every capability


def run_main(sock):
    code = 1
    try:
        prepare_main()
        (spec_fd, stdin_fd, stdout_fd, stderr_fd, status_fd, results_fd) = recv_run(sock)
        become_user()
        # Only the leader reports the status: user code must not be able to forge it.
        os.close(status_fd)
        sock.close()
        with os.fdopen(spec_fd, "rb", closefd=True) as f:
            spec = json.loads(f.read())
        os.dup2(stdin_fd, 0)
        os.dup2(stdout_fd, 1)
        os.dup2(stderr_fd, 2)
        for fd in (stdin_fd, stdout_fd, stderr_fd):
            os.close(fd)
        os.chdir(WORKSPACE)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        set_stdio()
        kind = spec["kind"]
        if kind == "code":
            display._open(results_fd)
            code = run_code(spec)
        elif kind == "context":
            os.close(results_fd)  # each execution brings its own
            code = context.serve(spec, globals())
        elif kind == "exec":
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # ignored signals survive exec
            os.execve(spec["argv"][0], spec["argv"], spec["env"])
        else:
            code = FILE_OPS[kind](spec)
    except BaseException:
        try:
            import traceback
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        os._exit(code)


def set_stdio():
    # Like PYTHONUNBUFFERED=1: every write reaches the pipe at once (for live streaming).
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(
        io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8", errors="strict")
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
        write_through=True)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
        write_through=True)


def configure(settings):
    """The zygote's own settings (JSON from zygote.rs), and its control socket."""
    global WORKSPACE, VENV, UID, USER_NPROC, RUN_PROG, CTRL, _RUN_FILTER, _RUN_FILTER_BUF
    settings = json.loads(settings)
    WORKSPACE = settings["workspace"]
    VENV = settings["venv"]
    UID = settings["uid"]
    USER_NPROC = settings["user_nproc"]
    # The stricter filter user code gets on top of the zygote's, when the policy has one (the
    # zygote is already under its own filter, which every descendant inherits).
    _RUN_FILTER = bytes.fromhex(settings["run_filter"] or "")
    _RUN_FILTER_BUF = ctypes.create_string_buffer(_RUN_FILTER, len(_RUN_FILTER))
    RUN_PROG = SockFprog(len(_RUN_FILTER) // 8, ctypes.cast(_RUN_FILTER_BUF, ctypes.c_void_p))
    CTRL = _socket.socket(fileno=CONTROL_FD)
    CTRL.setblocking(True)  # the server created the pair non-blocking; that flag is shared


def enter_venv():
    # Containers engine: the interpreter is the venv's, as `/opt/venv/bin/python` is once
    # `site` has read its pyvenv.cfg (what site.venv() does, without -S's cost): sys.prefix,
    # sys.executable and site's prefixes are the venv, sys.base_prefix stays the system's. Set
    # once in the zygote, before anything imports sysconfig (which reads sys.prefix when
    # imported): a run's sysconfig paths, site.getsitepackages() and tools started with
    # sys.executable all point into the venv.
    if not os.path.isfile(VENV + "/pyvenv.cfg"):
        return
    sys.executable = VENV + "/bin/python"
    sys.prefix = sys.exec_prefix = VENV
    site.PREFIXES = [VENV]
    site.ENABLE_USER_SITE = False


def use_venv():
    # Packages installed into the sandbox's venv (containers engine) are importable (with
    # their .pth files, read per run since installs happen while the zygote lives).
    site_dir = VENV + "/lib/python%d.%d/site-packages" % sys.version_info[:2]
    try:
        if not os.listdir(site_dir):
            return
    except OSError:
        return
    site.addsitedir(site_dir)


def run_code(spec):
    os.environ.clear()
    os.environ.update(spec["env"])
    sys.argv = ["-c"]
    use_venv()
    sys.path.insert(0, "")
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    main.__dict__["__sandbox_dir__"] = WORKSPACE
    sys.modules["__main__"] = main
    # No MPLBACKEND is set (the environment stays the documented one): without a display,
    # matplotlib picks its off-screen Agg backend itself, and display.figures collects them.
    display.install()
    status = run_cell(spec["code"], main.__dict__)
    try:
        display.figures()
    except BaseException:
        pass
    return shutdown(status)


def run_cell(code, ns):
    """Runs `code` as a notebook cell: every statement, and when the last one is an
    expression, its value becomes the run's main result (it is not printed). Returns the exit
    status; an uncaught exception is printed as `python -c` would, and reported as a result."""
    try:
        tree = compile(code, "<string>", "exec", _ast.PyCF_ONLY_AST)
        last = None
        if tree.body and isinstance(tree.body[-1], _ast.Expr):
            last = _ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<string>", "exec"), ns)
        if last is not None:
            display.main_result(eval(compile(last, "<string>", "eval"), ns))
    except SystemExit as e:
        return exit_status(e)
    except BaseException as e:
        tb = e.__traceback__.tb_next if e.__traceback__ else None  # hide this frame
        e = e.with_traceback(tb)
        try:
            sys.excepthook(type(e), e, tb)
        except BaseException:
            pass
        try:
            display.error(e)
        except BaseException:
            pass
        return 130 if isinstance(e, KeyboardInterrupt) else 1
    return 0


def exit_status(e):
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code & 0xFF
    try:
        print(e.code, file=sys.stderr)
    except BaseException:
        pass
    return 1


def shutdown(status):
    # What the interpreter does at exit: join non-daemon threads, run atexit, flush.
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except BaseException:
            pass
    try:
        atexit._run_exitfuncs()
    except SystemExit as e:
        status = exit_status(e)
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    return status


# ---------------------------------------------------------------- file operations
# They run exactly like user code (same user, same filters, inside the sandbox's mount
# namespace), so they can never reach more than the sandbox's own code could.

FILE_EXIT = {"not_found": 10, "is_directory": 11, "too_large": 12, "not_a_directory": 13,
             "permission": 14, "no_space": 15, "other": 16}


def file_error(kind, message):
    sys.stderr.write(json.dumps({"kind": kind, "error": message}))
    sys.stderr.flush()
    return FILE_EXIT[kind]


def os_error(e, path):
    import errno
    kinds = {errno.ENOENT: "not_found", errno.EISDIR: "is_directory",
             errno.ENOTDIR: "not_a_directory", errno.EACCES: "permission",
             errno.EPERM: "permission", errno.ENOSPC: "no_space", errno.EFBIG: "too_large",
             errno.EDQUOT: "no_space", errno.EROFS: "permission"}
    return file_error(kinds.get(e.errno, "other"), f"{path}: {e.strerror}")


class NotRegular(Exception):
    pass


def open_regular(path, flags, mode):
    """Opens `path` only if it is a regular file, without ever blocking (a FIFO or a device
    planted in the workspace must not hang the files API)."""
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    try:
        import errno, stat
        st_mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        if not stat.S_ISREG(st_mode):
            raise NotRegular(path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def write_file(spec):
    path = spec["path"]
    try:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        size = 0
        with open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "wb") as f:
            while True:
                chunk = os.read(0, 1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > spec["max_bytes"]:
                    return file_error("too_large", f"{path}: more than {spec['max_bytes']} bytes")
                f.write(chunk)
    except NotRegular:
        return file_error("other", f"{path}: not a regular file")
    except OSError as e:
        return os_error(e, path)
    sys.stdout.write(json.dumps({"size": size}))
    return 0


def read_file(spec):
    path = spec["path"]
    try:
        with open_regular(path, os.O_RDONLY, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > spec["max_bytes"]:
                return file_error("too_large", f"{path}: {size} bytes is over the limit of {spec['max_bytes']}")
            remaining = spec["max_bytes"] + 1
            while remaining > 0:
                chunk = f.read(min(1 << 16, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                _write_all(chunk)
            if remaining <= 0:
                return file_error("too_large", f"{path}: over the limit of {spec['max_bytes']}")
    except NotRegular:
        return file_error("other", f"{path}: not a regular file")
    except OSError as e:
        return os_error(e, path)
    return 0


def _write_all(data):
    view = memoryview(data)
    while view:
        n = os.write(1, view)
        view = view[n:]


def list_files(spec):
    root = spec["path"] or "."
    files, truncated = [], False
    path_budget = spec.get("max_path_bytes") or float("inf")
    try:
        if not os.path.isdir(root):
            return file_error("not_a_directory" if os.path.exists(root) else "not_found",
                              f"{root}: not a directory")
        for dirpath, dirnames, filenames in os.walk(root, onerror=None, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                try:
                    size = os.lstat(full).st_size
                except OSError:
                    continue
                rel = os.path.normpath(os.path.relpath(full, "."))
                path_budget -= len(rel)
                if path_budget < 0:
                    truncated = True
                    break
                files.append({"path": rel, "size": size})
                if len(files) >= spec["max_entries"]:
                    truncated = True
                    break
            if truncated:
                break
    except OSError as e:
        return os_error(e, root)
    files.sort(key=lambda f: f["path"])
    sys.stdout.write(json.dumps({"files": files, "truncated": truncated}))
    return 0


FILE_OPS = {"write_file": write_file, "read_file": read_file, "list_files": list_files}


# ---------------------------------------------------------------- the zygote loop

# Leaders: pid -> the zygote's end of the socket to it (and its main). A leader is "armed"
# (its main waits for a run), running a run, or "returning" (its run is over: it forks a
# fresh main and comes back armed). A run takes an armed one, else waits for a returning one;
# only when every leader is busy with a run (concurrent runs) is another one forked. At most
# IDLE_LEADERS armed ones are kept, so an idle sandbox holds one leader and one main.
IDLE_LEADERS = 1
# A sandbox that has run code and then had no run for this long gives its armed pair back
# (the leader's and main's dirtied pages, page tables and kernel objects: ~1.9 MiB of host
# memory); its next run forks a fresh pair first (a few ms, still far below an interpreter
# start). One that never ran (the warm pool's) keeps its pair: its first run stays fast.
DISARM_AFTER = 30.0
leaders = {}
armed = []  # pids, oldest first
returning = set()
doomed = set()  # leaders sent a kill: never given another run


def arm():
    """Forks a leader (and through it, its first main) ahead of any request."""
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            leader(theirs)
        finally:
            os._exit(1)
    theirs.close()
    leaders[pid] = ours
    armed.append(pid)


def arm_patiently(deadline=2.0):
    """Arms a pair, retrying while the sandbox is at its process limit (e.g. the processes of
    a fork bomb that was just killed are still being torn down)."""
    delay, waited = 0.005, 0.0
    while True:
        try:
            return arm()
        except BlockingIOError:
            if waited >= deadline:
                raise
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.2)


def retire(pid):
    """Forgets a leader; closing our end makes a live one (and its armed main) exit."""
    sock = leaders.pop(pid, None)
    if sock is not None:
        sock.close()
    if pid in armed:
        armed.remove(pid)
    returning.discard(pid)
    doomed.discard(pid)
    for rid in [r for r, p in runs.items() if p == pid]:
        del runs[rid]


def forget_dead():
    while dead:
        retire(dead.pop())


def from_leader(pid):
    """Handles what a leader says: "done" (its run is over) or "ready" (armed again)."""
    try:
        msg = leaders[pid].recv(16, _socket.MSG_DONTWAIT)
    except BlockingIOError:
        return
    except OSError:
        msg = b""
    if msg in (b"done", b"ready"):
        # Its run is over: a kill for it must not reach the leader's next run.
        for rid in [r for r, p in runs.items() if p == pid]:
            del runs[rid]
    if msg == b"done":
        returning.add(pid)
    elif msg == b"ready" and pid not in doomed and len(armed) < IDLE_LEADERS:
        returning.discard(pid)
        armed.append(pid)
    else:  # gone, doomed, or one idle leader too many
        retire(pid)


def hear_leaders(pids, timeout, ctrl=False):
    """Waits up to `timeout` s (None: forever) for what the leaders `pids` say (handled here)
    or, with `ctrl`, for the control socket; returns whether the control socket is readable."""
    poller = select.poll()
    if ctrl:
        poller.register(CTRL, select.POLLIN)
    for pid in pids:
        poller.register(leaders[pid], select.POLLIN)
    fds = {fd for fd, _ in poller.poll(None if timeout is None else int(timeout * 1000) + 1)}
    for pid in pids:
        if pid in leaders and leaders[pid].fileno() in fds:
            from_leader(pid)
    return ctrl and CTRL.fileno() in fds


def take_armed():
    """An armed leader: one ready, else a returning one (waited for), else a fresh one."""
    forget_dead()
    deadline = time.monotonic() + 0.5
    while not armed and returning and time.monotonic() < deadline:
        hear_leaders(list(returning), deadline - time.monotonic())
        forget_dead()
    if not armed:
        arm_patiently()
    return armed.pop(0)


def start_run(rid, fds, report_pid=False):
    msg = b"run+pid" if report_pid else b"run"
    for _attempt in range(2):
        pid = take_armed()
        try:
            send_fds(leaders[pid], msg, fds)
        except OSError:
            retire(pid)
            continue  # that pair died (e.g. killed under memory pressure): use a fresh one
        runs[rid] = pid
        return
    raise OSError("could not start a run process")


def serve():
    signal.signal(signal.SIGCHLD, reap)
    gc.collect()
    gc.freeze()  # the warm heap is shared copy-on-write; keep the collector off it
    arm()
    send({"op": "ready", "pid": os.getpid()})
    last_run = None
    while True:
        forget_dead()
        idle_until = None if last_run is None else last_run + DISARM_AFTER
        timeout = None
        if armed and idle_until is not None:
            timeout = max(0.0, idle_until - time.monotonic())
        busy = [pid for pid in leaders if pid not in armed]
        if not hear_leaders(busy, timeout, ctrl=True):
            if armed and idle_until is not None and time.monotonic() >= idle_until:
                for pid in list(armed):
                    retire(pid)
            continue
        try:
            msg, fds = recv_fds(CTRL, MAX_MESSAGE, RUN_FDS)
        except ConnectionResetError:
            return
        if not msg:
            return  # the server closed the control socket: the sandbox is going away
        try:
            req = json.loads(msg)
            op = req.get("op")
            if op == "run" and len(fds) == RUN_FDS:
                last_run = time.monotonic()
                try:
                    start_run(int(req["id"]), fds, bool(req.get("report_pid")))
                except OSError as e:
                    _write_status(fds[4], {"error": str(e), "errno": e.errno})
                for fd in fds:
                    os.close(fd)
                fds = []
            elif op == "kill":
                rid = int(req["id"])
                leader_pid = runs.get(rid)
                if leader_pid in leaders:
                    from_leader(leader_pid)  # a "done" already sent: nothing left to kill
                leader_pid = runs.pop(rid, None)
                if leader_pid:
                    doomed.add(leader_pid)
                    try:
                        os.kill(leader_pid, signal.SIGUSR1)
                    except ProcessLookupError:
                        pass
        except (ValueError, KeyError, TypeError) as e:
            print(f"zygote: bad request: {e}", file=sys.stderr)
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass


def main(settings):
    configure(settings)
    enter_venv()
    serve()
    sys.exit(0)


# Exec'd (zygote.rs's BOOTSTRAP), the settings are the command's argument. In the template
# interpreter (template.rs) this program only defines everything: each zygote forked from it
# calls main() with its own settings.
if not globals().get("TEMPLATE"):
    main(sys.argv[1])
