# A context: a persistent interpreter in the sandbox (module `cerver_context` of the zygote).
#
# It is the main process of a background run (kind "context"): the same fork of the zygote, the
# same user, filters and limits as any run. Its stdin is one end of a SOCK_SEQPACKET socket whose
# other end the server keeps. Each execution is one message `{"op": "exec"}` with 5 descriptors:
# the code (a memfd), stdout, stderr, results, status. The code runs in the context's one
# namespace (variables, imports and open files persist), then the context writes
# `{"exit_code": N}` to the status pipe and closes its copies of the execution's descriptors.
# A timeout is a SIGINT (KeyboardInterrupt in the code) sent by a run of the same user; if that
# does not end the execution, the server kills the context's run (it can then be restarted).
# An empty message (or the socket closing) ends the context.

import array
import json
import os
import signal
import sys

EXEC_FDS = 5


def _recv(sock):
    import _socket
    fds = array.array("i")
    msg, ancdata, _flags, _addr = sock.recvmsg(4096, _socket.CMSG_LEN(EXEC_FDS * fds.itemsize))
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    for fd in fds:
        os.set_inheritable(fd, False)
    return msg, list(fds)


def _quiet_stdio():
    """Between executions, stray writes (threads) go nowhere, never into a finished run."""
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (1, 2):
        os.dup2(null, fd)
    os.close(null)


def serve(spec, z):
    """Runs the context until the server closes its socket. `z`: the zygote's namespace."""
    import _socket
    import types
    _quiet_stdio()
    sock = _socket.socket(fileno=os.dup(0))
    sock.setblocking(True)  # the server's end is non-blocking; the flag may be shared
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)  # user code reads an empty stdin, never the control socket
    os.close(null)
    os.environ.clear()
    os.environ.update(spec["env"])
    sys.argv = [""]
    z["use_venv"]()
    sys.path.insert(0, "")
    os.chdir(z["WORKSPACE"])
    if spec.get("cwd"):
        try:
            os.makedirs(spec["cwd"], exist_ok=True)
            os.chdir(spec["cwd"])
        except OSError:
            pass  # the workspace, then: os.getcwd() tells

    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = z["builtins"]
    main.__dict__["__sandbox_dir__"] = z["WORKSPACE"]
    sys.modules["__main__"] = main
    display = z["display"]
    display.install()
    while True:
        try:
            msg, fds = _recv(sock)
        except KeyboardInterrupt:
            continue  # an interrupt that came late: nothing is running
        except OSError:
            return 0
        if not msg:
            return 0
        if len(fds) != EXEC_FDS:
            for fd in fds:
                os.close(fd)
            continue
        try:
            _execute(z, display, main.__dict__, fds)
        except KeyboardInterrupt:
            pass  # arrived after the code ended: the status may be unwritten (see below)
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            _quiet_stdio()


def _execute(z, display, ns, fds):
    code_fd, out_fd, err_fd, results_fd, status_fd = fds
    with os.fdopen(os.dup(code_fd), "rb") as f:
        code = f.read().decode("utf-8", "surrogateescape")
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    display._open(results_fd)
    status = z["run_cell"](code, ns)
    try:
        display.figures()
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    display._open(None)
    os.write(status_fd, (json.dumps({"exit_code": status}) + "\n").encode())
