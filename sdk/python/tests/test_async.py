"""AsyncSandbox against the real server."""

from __future__ import annotations

import asyncio

import pytest

import cerver
from cerver import AsyncSandbox, AuthenticationError, NotFoundError, SandboxError, TimeoutError
from conftest import Server


async def test_async_context_manager_run_and_delete(server: Server) -> None:
    async with AsyncSandbox(envs={"A": "1"}, metadata={"k": "v"}) as sandbox:
        sandbox_id = sandbox.sandbox_id
        result = await sandbox.run("import os\nprint(os.environ['A'])")
        assert (result.output, result.exit_code) == ("1", 0)
        assert (await sandbox.run_code("print(2)", envs={"A": "2"})).text == "2"
        info = await sandbox.info()
        assert info.sandbox_id == sandbox_id and info.metadata == {"k": "v"}
        assert sandbox_id in [s.sandbox_id for s in await AsyncSandbox.list()]
    assert sandbox.sandbox_id is None
    assert sandbox_id not in [s.sandbox_id for s in await AsyncSandbox.list()]
    with pytest.raises(NotFoundError):
        await AsyncSandbox.connect(sandbox_id)


async def test_async_stream_and_callbacks() -> None:
    async with AsyncSandbox() as sandbox:
        events = [e async for e in sandbox.run_stream(
            "import sys\nprint('a')\nprint('b', file=sys.stderr)"
        )]
        assert events[-1].type == "exit" and events[-1].code == 0
        assert "".join(e.data for e in events if e.type == "stdout") == "a\n"

        got: list = []

        async def on_stderr(chunk: str) -> None:  # coroutine callbacks are awaited
            await asyncio.sleep(0)
            got.append(("err", chunk))

        result = await sandbox.run(
            "import sys\nprint('x')\nprint('y', file=sys.stderr)",
            on_stdout=lambda c: got.append(("out", c)),
            on_stderr=on_stderr,
        )
        assert "".join(c for kind, c in got if kind == "out") == "x\n"
        assert "".join(c for kind, c in got if kind == "err") == "y\n"
        assert (result.output, result.error) == ("x", "y")


async def test_async_files_and_timeout() -> None:
    async with AsyncSandbox() as sandbox:
        await sandbox.files.write("t.txt", "text")
        await sandbox.files.write("b.bin", b"\x00\xff\x10")
        assert await sandbox.files.read("t.txt") == "text"
        assert await sandbox.files.read("b.bin") == b"\x00\xff\x10"
        assert {f.path for f in await sandbox.files.list()} == {"t.txt", "b.bin"}
        timeout = await sandbox.set_timeout(100_000)
        assert timeout.timeout_ms == 100_000
        with pytest.raises(TimeoutError):
            await sandbox.run("while True: pass", timeout=1)
        with pytest.raises(SandboxError) as caught:
            await sandbox.get_host(8080)
        assert caught.value.status_code == 400


async def test_async_connect_kill_and_errors() -> None:
    first = AsyncSandbox()
    await first.create()
    try:
        again = await AsyncSandbox.connect(first.sandbox_id)
        assert (await again.run("print(5)")).output == "5"
        assert await again.kill() is True
        with pytest.raises(NotFoundError):
            await first.run("print(1)")
        with pytest.raises(SandboxError):  # a killed object never makes a new sandbox
            await again.run("print(1)")
    finally:
        await first.close()
    with pytest.raises(AuthenticationError):
        await AsyncSandbox(api_key="sk_live_wrong").create()


async def test_async_sandboxes_run_concurrently() -> None:
    async with AsyncSandbox() as a, AsyncSandbox() as b:
        results = await asyncio.gather(
            a.run("import time\ntime.sleep(1)\nprint('a')"),
            b.run("import time\ntime.sleep(1)\nprint('b')"),
        )
        assert [r.output for r in results] == ["a", "b"]


@pytest.mark.needs_processes
async def test_async_background_process() -> None:
    async with AsyncSandbox() as sandbox:
        process = await sandbox.run("import time\nprint('up', flush=True)\ntime.sleep(60)",
                                    background=True)
        assert isinstance(process, cerver.AsyncProcess) and process.status == "running"
        assert process.pid in [p.pid for p in await sandbox.processes.list()]
        assert await process.kill() is True
        for _ in range(100):
            if not (await process.refresh()).is_running:
                break
            await asyncio.sleep(0.1)
        assert not process.is_running


@pytest.mark.needs_processes
async def test_async_background_process_stream() -> None:
    async with AsyncSandbox() as sandbox:
        process = await sandbox.run("print('once')", background=True)
        events = [e async for e in process.stream()]
        assert events[0].pid == process.pid
        assert "".join(e.data for e in events if e.type == "stdout") == "once\n"
        assert events[-1].type == "exit"
        assert (await process.wait(timeout=10)).exit_code == 0
