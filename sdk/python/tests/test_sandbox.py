"""The synchronous Sandbox against the real server: lifecycle, runs, streaming, files, ports,
install and background processes."""

from __future__ import annotations

import time

import pytest

import cerver
from cerver import (
    ExecutionResult,
    FileInfo,
    NotFoundError,
    Sandbox,
    SandboxError,
    StreamEvent,
    TimeoutError,
)
from conftest import Server


def live_ids(server: Server, key: str = "") -> list:
    with server.http(key or None) as http:
        return [s["sandbox_id"] for s in http.get("/sandboxes").json()["sandboxes"]]


# -- lifecycle -------------------------------------------------------------------------------


def test_create_with_options_and_info() -> None:
    with Sandbox(
        envs={"API_KEY": "secret", "DEBUG": "true"},
        engine="workers",
        timeout_ms=600_000,
        metadata={"project": "my-app"},
    ) as sandbox:
        info = sandbox.info()
        assert info.sandbox_id == sandbox.sandbox_id
        assert info.engine == "workers" and info.status == "ready"
        assert info.timeout_ms == 600_000
        assert 0 < info.time_remaining_ms <= 600_000
        assert sorted(info.envs) == ["API_KEY", "DEBUG"]
        assert info.metadata == {"project": "my-app"}
        assert sandbox.run("import os\nprint(os.environ['API_KEY'])").output == "secret"


def test_context_manager_deletes_the_sandbox(server: Server) -> None:
    with Sandbox() as sandbox:
        sandbox_id = sandbox.sandbox_id
        assert sandbox_id in live_ids(server)
    assert sandbox.sandbox_id is None
    assert sandbox_id not in live_ids(server)
    with server.http() as http:
        assert http.get(f"/sandbox/{sandbox_id}").status_code == 404
    with pytest.raises(NotFoundError):
        Sandbox.connect(sandbox_id)


def test_context_manager_deletes_on_exception(server: Server) -> None:
    with pytest.raises(RuntimeError):
        with Sandbox() as sandbox:
            sandbox_id = sandbox.sandbox_id
            raise RuntimeError("the caller's code failed")
    assert sandbox_id not in live_ids(server)


def test_lazy_creation_as_in_0_1_0(server: Server) -> None:
    sandbox = Sandbox()  # no request yet, as 0.1.0
    assert sandbox.sandbox_id is None
    try:
        assert sandbox.run("print(1)").output == "1"
        assert sandbox.sandbox_id in live_ids(server)
    finally:
        sandbox_id = sandbox.sandbox_id
        sandbox.close()
    assert sandbox_id not in live_ids(server)


def test_list_connect_kill(server: Server) -> None:
    a, b = Sandbox(metadata={"n": "a"}), Sandbox(metadata={"n": "b"})
    try:
        a.create()
        b.create()
        listed = {s.sandbox_id: s for s in Sandbox.list()}
        assert listed[a.sandbox_id].metadata == {"n": "a"}
        assert b.sandbox_id in listed

        a.run("open('state.txt', 'w').write('kept')")
        again = Sandbox.connect(a.sandbox_id)
        assert again.sandbox_id == a.sandbox_id
        assert again.run("print(open('state.txt').read())").output == "kept"
        again.files.write("x.txt", "x")
        assert "x.txt" in [f.path for f in a.files.list()]

        assert again.kill() is True
        assert again.sandbox_id is None
        assert again.kill() is False
        assert a.sandbox_id not in {s.sandbox_id for s in Sandbox.list()}
        with pytest.raises(NotFoundError):
            a.run("print(1)")
        # A killed sandbox object never creates a new sandbox behind the caller's back.
        count = len(Sandbox.list())
        with pytest.raises(SandboxError):
            again.run("print(1)")
        with pytest.raises(SandboxError):
            again.files.list()
        assert len(Sandbox.list()) == count
        again.create()  # unless asked to
        assert again.run("print(2)").output == "2"
        again.kill()
    finally:
        a.close()
        b.close()


def test_set_timeout() -> None:
    with Sandbox(timeout_ms=60_000) as sandbox:
        answer = sandbox.set_timeout(120_000)
        assert answer.sandbox_id == sandbox.sandbox_id
        assert answer.timeout_ms == 120_000
        assert 60_000 < answer.time_remaining_ms <= 120_000
        assert sandbox.info().time_remaining_ms > 60_000


def test_api_url_and_key_arguments(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERVER_API_URL", "http://127.0.0.1:1")
    monkeypatch.delenv("CERVER_API_KEY")
    with Sandbox(api_key=server.pro_key, api_url=server.url + "/") as sandbox:
        assert sandbox.run("print(3)").output == "3"
    # 0.1.0's positional order: api_key, api_url, timeout (seconds, the runs' default).
    with Sandbox(server.pro_key, server.url, 1) as sandbox:
        assert sandbox.default_timeout == 1
        with pytest.raises(TimeoutError):
            sandbox.run("while True: pass")


def test_default_api_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERVER_API_URL")
    assert Sandbox().api_url == "https://api.cerver.ai" == Sandbox.DEFAULT_API_URL


# -- running code ------------------------------------------------------------------------------


def test_run_result_and_aliases() -> None:
    with Sandbox() as sandbox:
        result = sandbox.run("x = 5\nprint(x * 10)")
        assert isinstance(result, ExecutionResult)
        assert (result.output, result.error, result.exit_code) == ("50", "", 0)
        assert isinstance(result.duration, int) and result.duration >= 0
        assert result.text == "50" and str(result) == "50"

        result = sandbox.run_code("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
        assert (result.output, result.error, result.exit_code) == ("out", "err", 3)

        result = sandbox.run("raise ValueError('boom')")
        assert result.exit_code == 1
        assert "ValueError: boom" in result.error


def test_run_envs_override() -> None:
    with Sandbox(envs={"A": "sandbox", "B": "kept"}) as sandbox:
        code = "import os\nprint(os.environ['A'], os.environ['B'])"
        assert sandbox.run(code, envs={"A": "run"}).output == "run kept"
        assert sandbox.run(code).output == "sandbox kept"


def test_run_timeout_raises() -> None:
    with Sandbox() as sandbox:
        started = time.monotonic()
        with pytest.raises(TimeoutError) as caught:
            sandbox.run("import time\ntime.sleep(30)", timeout=1)
        assert time.monotonic() - started < 15
        assert "timed out" in str(caught.value).lower()
        # The sandbox is still usable.
        assert sandbox.run("print('alive')").output == "alive"


def test_printing_timed_out_is_not_a_timeout() -> None:
    with Sandbox() as sandbox:
        result = sandbox.run("import sys\nprint('request timed out', file=sys.stderr)")
        assert result.exit_code == 0 and result.error == "request timed out"


def test_status_not_stderr_text_decides_a_timeout() -> None:
    """Code that prints "timed out" to stderr and fails is an error, not a timeout."""
    with Sandbox() as sandbox:
        code = "import sys\nprint('Execution timed out', file=sys.stderr)\nsys.exit(1)"
        result = sandbox.run(code)
        assert result.exit_code == 1 and result.status == "error"
        assert "timed out" in result.error
        events = list(sandbox.run_stream(code))
        assert events[-1].status == "error" and not events[-1].timed_out
        with pytest.raises(TimeoutError):
            sandbox.run("while True: pass", timeout=1)


def test_old_servers_without_status_keep_the_text_rule() -> None:
    from cerver import _core
    assert _core.is_timeout("Execution timed out after 1.0 seconds", -1)
    assert not _core.is_timeout("timed out", 0)
    assert not _core.is_timeout("timed out", 1, "error")
    assert _core.is_timeout("", -1, "timeout")


# -- streaming -------------------------------------------------------------------------------


def test_run_stream_events() -> None:
    with Sandbox() as sandbox:
        events = list(sandbox.run_stream(
            "import sys\nprint('a')\nprint('b', file=sys.stderr)\nsys.exit(2)"
        ))
        assert all(isinstance(e, StreamEvent) for e in events)
        assert events[-1].type == "exit" and events[-1].code == 2
        assert [e.type for e in events[:-1]] and all(e.type != "exit" for e in events[:-1])
        assert "".join(e.data for e in events if e.type == "stdout") == "a\n"
        assert "".join(e.data for e in events if e.type == "stderr") == "b\n"


def test_run_stream_is_incremental() -> None:
    with Sandbox() as sandbox:
        seen = []
        for event in sandbox.run_stream(
            "import time\nfor i in range(3):\n    print(i)\n    time.sleep(0.4)"
        ):
            seen.append((time.monotonic(), event))
        stdout = [(t, e) for t, e in seen if e.type == "stdout"]
        assert "".join(e.data for _, e in stdout) == "0\n1\n2\n"
        # The first chunk arrived well before the end of the run.
        assert seen[-1][0] - stdout[0][0] > 0.6


def test_run_with_callbacks_streams() -> None:
    with Sandbox() as sandbox:
        out, err, times = [], [], []
        result = sandbox.run(
            "import sys, time\nprint('one')\ntime.sleep(0.5)\nprint('two', file=sys.stderr)\nprint('three')",
            on_stdout=lambda chunk: (out.append(chunk), times.append(time.monotonic())),
            on_stderr=err.append,
        )
        finished = time.monotonic()
        assert "".join(out) == "one\nthree\n" and "".join(err) == "two\n"
        assert finished - times[0] > 0.4  # the first chunk came before the run ended
        assert (result.output, result.error, result.exit_code) == ("one\nthree", "two", 0)


def test_stream_timeout() -> None:
    with Sandbox() as sandbox:
        with pytest.raises(TimeoutError):
            sandbox.run("print('x')\nwhile True: pass", timeout=1, on_stdout=lambda _: None)
        events = list(sandbox.run_stream("while True: pass", timeout=1))
        assert events[-1].type == "exit" and events[-1].timed_out


def test_leaving_a_stream_early_kills_the_run() -> None:
    with Sandbox() as sandbox:
        code = "import time\nprint('start')\ntime.sleep(2)\nopen('finished', 'w').write('1')"
        for event in sandbox.run_stream(code):
            assert event.type == "stdout"
            break
        time.sleep(3)
        assert "finished" not in [f.path for f in sandbox.files.list()]


# -- files -------------------------------------------------------------------------------------


def test_files_text_binary_and_list() -> None:
    with Sandbox() as sandbox:
        written = sandbox.files.write("data.txt", "hello world")
        assert written.success and written.path == "data.txt" and written.size == 11
        assert sandbox.files.read("data.txt") == "hello world"

        blob = bytes(range(256)) * 4
        assert sandbox.files.write("bin/blob.dat", blob).size == len(blob)
        assert sandbox.files.read("bin/blob.dat") == blob
        assert sandbox.files.read_bytes("data.txt") == b"hello world"
        assert sandbox.files.write("u.txt", "héllo ✓".encode()).size == 10
        assert sandbox.files.read("u.txt") == "héllo ✓"

        listing = {f.path: f for f in sandbox.files.list()}
        assert listing["data.txt"] == FileInfo(path="data.txt", size=11)
        assert listing["bin/blob.dat"].size == 1024

        result = sandbox.run("import os\nprint(os.path.getsize(__sandbox_dir__ + '/bin/blob.dat'))")
        assert result.output == "1024"


def test_files_errors() -> None:
    with Sandbox() as sandbox:
        with pytest.raises(NotFoundError) as missing:
            sandbox.files.read("nope.txt")
        assert missing.value.status_code == 404
        with pytest.raises(SandboxError) as escape:
            sandbox.files.write("../../etc/passwd", "x")
        assert escape.value.status_code == 400
        with pytest.raises(TypeError):
            sandbox.files.write("x", 123)  # type: ignore[arg-type]


# -- install and ports -------------------------------------------------------------------------


def test_install_rejected_requirement_raises() -> None:
    with Sandbox() as sandbox:
        with pytest.raises(SandboxError) as caught:
            sandbox.install("six; rm -rf /")
        assert caught.value.status_code == 400
        with pytest.raises(SandboxError) as caught:
            sandbox.install(package="six && curl x")  # 0.1.0's keyword
        assert caught.value.status_code == 400
        with pytest.raises(ValueError):
            sandbox.install()


@pytest.mark.needs_containers
def test_install_several_packages_at_once() -> None:
    with Sandbox(engine="containers") as sandbox:
        result = sandbox.install("six", "idna")
        assert result.success and isinstance(result.upgraded, bool)
        assert sandbox.run("import six, idna").exit_code == 0


def test_get_host_needs_containers() -> None:
    with Sandbox() as sandbox:
        with pytest.raises(SandboxError) as caught:
            sandbox.get_host(8080)
        assert caught.value.status_code == 400


def test_get_host_refused_on_trial(server: Server, mint) -> None:
    with Sandbox(api_key=mint("trial"), engine="containers") as sandbox:
        with pytest.raises(SandboxError) as caught:
            sandbox.get_url(8080)
        assert caught.value.status_code == 403


@pytest.mark.needs_ports
def test_get_host_and_url() -> None:
    with Sandbox(engine="containers") as sandbox:
        host = sandbox.get_host(8080)
        url = sandbox.get_url(8080)
        assert isinstance(host, str) and host and "/" not in host
        assert url.startswith(("http://", "https://")) and host in url


# -- background processes -----------------------------------------------------------------------


def _eventually(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


@pytest.mark.needs_processes
def test_background_process_lifecycle() -> None:
    with Sandbox() as sandbox:
        code = "import time\nprint('started', flush=True)\ntime.sleep(120)"
        process = sandbox.run(code, background=True)
        assert isinstance(process, cerver.Process)
        assert isinstance(process.pid, int) and process.status == "running"
        assert process.code == code and process.exit_code is None
        assert process.pid in [p.pid for p in sandbox.processes.list()]
        assert _eventually(lambda: "started" in process.refresh().output)
        assert process.info().is_running

        assert process.kill() is True
        assert _eventually(lambda: not process.refresh().is_running)
        # Other runs are unaffected.
        assert sandbox.run("print('ok')").output == "ok"


@pytest.mark.needs_processes
def test_background_process_that_ends() -> None:
    with Sandbox() as sandbox:
        process = sandbox.run("print(6 * 7)", background=True)
        process.wait(timeout=10)
        assert process.status != "running"
        assert process.exit_code == 0
        assert process.output.strip() == "42"


@pytest.mark.needs_processes
def test_background_process_kill_by_pid_and_unknown_pid() -> None:
    with Sandbox() as sandbox:
        process = sandbox.run("import time\ntime.sleep(120)", background=True)
        assert sandbox.processes.kill(process.pid) is True
        assert _eventually(lambda: not sandbox.processes.get(process.pid).is_running)
        with pytest.raises(NotFoundError):
            sandbox.processes.kill(999_999)


@pytest.mark.needs_processes
def test_background_process_stream() -> None:
    with Sandbox() as sandbox:
        process = sandbox.run(
            "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.2)",
            background=True,
        )
        events = list(process.stream())
        assert events[0].type == "process" and events[0].pid == process.pid
        assert "".join(e.data for e in events if e.type == "stdout") == "0\n1\n2\n"
        assert events[-1].type == "exit" and events[-1].code == 0
        process.refresh()
        assert process.status == "exited" and process.exit_code == 0
        assert process.ended_at is not None and process.truncated is False
