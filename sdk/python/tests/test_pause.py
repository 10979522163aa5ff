"""Pause and resume through the SDK against the real server."""

from __future__ import annotations

import time

import pytest

from cerver import AsyncSandbox, RateLimitError, Sandbox
from conftest import Server


def test_pause_resume_and_connect_to_a_paused_sandbox() -> None:
    with Sandbox(envs={"A": "1"}, timeout_ms=600_000) as sandbox:
        sandbox.files.write("keep.txt", "kept")
        info = sandbox.pause()
        assert info.status == "paused"
        assert sandbox.pause().status == "paused"  # idempotent
        remaining = sandbox.info().time_remaining_ms
        time.sleep(1.2)
        assert sandbox.info().time_remaining_ms == remaining  # frozen
        # connect() works on a paused sandbox and does not resume it.
        other = Sandbox.connect(sandbox.sandbox_id or "")
        assert other.info().status == "paused"
        assert sandbox.resume().status == "ready"
        assert sandbox.resume().status == "ready"  # idempotent
        assert sandbox.run("import os\nprint(os.environ['A'], open('keep.txt').read())").output == "1 kept"
        # A run on a paused sandbox resumes it first.
        sandbox.pause()
        assert other.run("print(open('keep.txt').read())").output == "kept"
        assert sandbox.info().status == "ready"


def test_resume_at_the_plan_limit_raises(server: Server) -> None:
    key = server.mint("trial")
    a = Sandbox(api_key=key)
    try:
        a.pause()
        with Sandbox(api_key=key):
            with pytest.raises(RateLimitError):
                a.resume()
        assert a.resume().status == "ready"
    finally:
        a.kill()


async def test_async_pause_and_resume() -> None:
    async with AsyncSandbox() as sandbox:
        await sandbox.files.write("f.txt", "x")
        assert (await sandbox.pause()).status == "paused"
        assert (await sandbox.info()).status == "paused"
        assert (await sandbox.resume()).status == "ready"
        assert (await sandbox.run("print(open('f.txt').read())")).output == "x"
