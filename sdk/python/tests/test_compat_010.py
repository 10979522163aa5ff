"""The published 0.1.0 client (from PyPI, unchanged) against our server, in a subprocess with
its own install directory so that it cannot see the SDK under test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, Server

CLIENT_010 = '''
import sys
sys.path.insert(0, sys.argv[1])
import cerver
assert cerver.__version__ == "0.1.0", cerver.__version__
assert cerver.__file__.startswith(sys.argv[1]), cerver.__file__
from cerver import Sandbox, TimeoutError, SandboxError, AuthenticationError, CerverError

with Sandbox() as sandbox:
    result = sandbox.run("print(2 ** 100)")
    assert (result.output, result.error, result.exit_code) == ("1267650600228229401496703205376", "", 0), result
    assert result.text == result.output and isinstance(result.duration, int)
    assert sandbox.run_code("import sys; sys.exit(3)").exit_code == 3
    assert "ZeroDivisionError" in sandbox.run("1/0").error

    try:
        sandbox.run("import time; time.sleep(10)", timeout=1)
        raise AssertionError("no TimeoutError")
    except TimeoutError:
        pass

    # install(): True where the server can install, else its error surfaces as SandboxError.
    try:
        assert sandbox.install("six") is True
        print("install: ok")
    except SandboxError as e:
        print("install: SandboxError", e)
    try:
        sandbox.install("six; rm -rf /")
        raise AssertionError("a rejected requirement did not raise")
    except SandboxError:
        pass

try:
    Sandbox(api_key="sk_live_invalid").create()
    raise AssertionError("no AuthenticationError")
except AuthenticationError:
    pass
print("0.1.0 OK")
'''


@pytest.fixture(scope="session")
def client_010_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cerver==0.1.0 and its dependencies, installed from PyPI once (kept under target/)."""
    cache = REPO / "target" / "sdk-compat" / "cerver-0.1.0"
    if (cache / "cerver" / "sandbox.py").exists():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_factory.mktemp("cerver010")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--target", str(tmp), "cerver==0.1.0"],
        check=True, timeout=300,
    )
    if not cache.exists():
        os.replace(tmp, cache)
    return cache


def test_published_0_1_0_client_works_unchanged(server: Server, client_010_dir: Path) -> None:
    env = {**os.environ, "CERVER_API_URL": server.url, "CERVER_API_KEY": server.pro_key}
    done = subprocess.run(
        [sys.executable, "-I", "-c", textwrap.dedent(CLIENT_010), str(client_010_dir)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("0.1.0 OK")
