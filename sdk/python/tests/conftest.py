"""Test harness: one real `cerver serve` for the session, on a free loopback port with a
temporary data dir, and API keys minted with the admin CLI. No mocks.

Markers ``needs_containers``, ``needs_ports`` and ``needs_processes`` label the tests that use
the containers engine (pip, network), port exposure and background processes (select them with
``-m``); they always run.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
SERVER_BIN = Path(os.environ.get("CERVER_BIN") or REPO / "target" / "debug" / "cerver")
_emails = itertools.count()


@dataclass
class Server:
    url: str
    data_dir: Path
    pro_key: str
    trial_key: str
    log: Path

    def mint(self, plan: str) -> str:
        """A new key of ``plan`` for a new user (the key is the last line of stdout)."""
        email = f"sdk-{plan}-{next(_emails)}-{os.getpid()}@example.com"
        out = subprocess.run(
            [str(SERVER_BIN), "admin", "create-key", "--data-dir", str(self.data_dir),
             "--email", email, "--plan", plan],
            check=True, capture_output=True, text=True, timeout=60,
        )
        return out.stdout.strip().splitlines()[-1].strip()

    def http(self, key: Optional[str] = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key or self.pro_key}"},
            timeout=60,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    if not SERVER_BIN.exists():
        pytest.exit(f"server binary {SERVER_BIN} missing: run `cargo build -p cerver` "
                    "or set CERVER_BIN", returncode=2)
    # Not pytest's tmp_path: that is private to root (0700), and sandboxes of the containers
    # engine open the data dir's wheel cache as their own user, so every parent must be
    # traversable (as the Rust harness does it: a directory right under /tmp).
    base = Path(tempfile.mkdtemp(prefix="cerver-sdk-test-"))
    base.chmod(0o755)
    data_dir = base / "data"
    log_path = base / "server.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(SERVER_BIN), "serve", "--listen", f"127.0.0.1:{port}",
             "--data-dir", str(data_dir), "--pool-size", "1"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "CERVER_LOG": "warn"},
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.exit(f"server exited at start-up:\n{log_path.read_text()[-3000:]}",
                            returncode=2)
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.exit(f"server did not start:\n{log_path.read_text()[-3000:]}",
                            returncode=2)
            time.sleep(0.1)
        srv = Server(url=url, data_dir=data_dir, pro_key="", trial_key="", log=log_path)
        srv.pro_key = srv.mint("pro")
        srv.trial_key = srv.mint("trial")
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if os.environ.get("CERVER_SDK_KEEP_DATA") != "1":
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"\nserver data and log kept in {base}")


@pytest.fixture(scope="session", autouse=True)
def api_env(server: Server) -> Iterator[None]:
    """What the SDK reads: every test talks to the session's server with the pro key."""
    saved = {k: os.environ.get(k) for k in ("CERVER_API_URL", "CERVER_API_KEY")}
    os.environ["CERVER_API_URL"] = server.url
    os.environ["CERVER_API_KEY"] = server.pro_key
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def mint(server: Server) -> Callable[[str], str]:
    return server.mint
