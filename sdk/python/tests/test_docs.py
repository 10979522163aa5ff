"""Every code example of the documentation's "Python SDK" and "Error Handling" sections, as
written there. The API URL comes from CERVER_API_URL (set by conftest); the documentation's
placeholder key `sk_trial_xxx` stands for a real trial key of the test server, which is the
only substitution."""

from __future__ import annotations

import textwrap

import pytest

from conftest import Server

DOC_BASIC_USAGE = '''
from cerver import Sandbox

with Sandbox(api_key="sk_trial_xxx") as sandbox:
    result = sandbox.run("print('Hello!')")
    print(result.output)  # Hello!
'''

DOC_ENVIRONMENT_VARIABLES = '''
with Sandbox(
    api_key="sk_trial_xxx",
    envs={"API_KEY": "secret"}
) as sandbox:
    result = sandbox.run("""
import os
print(os.environ.get('API_KEY'))
""")
    print(result.output)  # secret
'''

DOC_USING_CONTAINERS = '''
with Sandbox(engine="containers") as sandbox:
    sandbox.install("pandas")
    result = sandbox.run("""
import pandas as pd
df = pd.DataFrame({'a': [1, 2, 3]})
print(df.sum())
""")
'''

DOC_ERROR_HANDLING = '''
from cerver import Sandbox, CerverError, TimeoutError

try:
    with Sandbox() as sandbox:
        result = sandbox.run("import nonexistent")
        if result.exit_code != 0:
            print(f"Error: {result.error}")
except TimeoutError:
    print("Execution timed out")
except CerverError as e:
    print(f"Cerver error: {e}")
'''

# "File Operations" (run through the SDK there too).
DOC_SANDBOX_DIR = '''
result = sandbox.run("""
with open(__sandbox_dir__ + '/data.txt') as f:
    print(f.read())
""")
'''

PLACEHOLDER_KEY = "sk_trial_xxx"


def run_example(source: str, server: Server, namespace: dict) -> dict:
    assert PLACEHOLDER_KEY in source or "api_key" not in source
    exec(compile(textwrap.dedent(source).replace(PLACEHOLDER_KEY, server.trial_key),
                 "<doc example>", "exec"), namespace)
    return namespace


def live_sandbox_ids(server: Server, key: str) -> list:
    with server.http(key) as http:
        return [s["sandbox_id"] for s in http.get("/sandboxes").json()["sandboxes"]]


def test_doc_basic_usage(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    ns = run_example(DOC_BASIC_USAGE, server, {})
    assert capsys.readouterr().out == "Hello!\n"
    # The context manager deleted the trial plan's only sandbox.
    assert ns["sandbox"].sandbox_id is None
    assert live_sandbox_ids(server, server.trial_key) == []


def test_doc_environment_variables(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    from cerver import Sandbox

    run_example(DOC_ENVIRONMENT_VARIABLES, server, {"Sandbox": Sandbox})
    assert capsys.readouterr().out == "secret\n"
    assert live_sandbox_ids(server, server.trial_key) == []


@pytest.mark.needs_containers
def test_doc_using_containers(server: Server) -> None:
    from cerver import Sandbox

    ns = run_example(DOC_USING_CONTAINERS, server, {"Sandbox": Sandbox})
    result = ns["result"]
    assert result.exit_code == 0, result.error
    assert result.output.split() == ["a", "6", "dtype:", "int64"]


def test_doc_error_handling(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    run_example(DOC_ERROR_HANDLING, server, {})
    out = capsys.readouterr().out
    assert out.startswith("Error: Traceback (most recent call last):")
    assert "ModuleNotFoundError: No module named 'nonexistent'" in out


def test_doc_error_handling_timeout_branch(capsys: pytest.CaptureFixture[str]) -> None:
    """The same example's `except TimeoutError` branch, reached with a run that times out."""
    source = DOC_ERROR_HANDLING.replace(
        'sandbox.run("import nonexistent")', 'sandbox.run("while True: pass", timeout=1)'
    )
    exec(compile(source, "<doc example>", "exec"), {})
    assert capsys.readouterr().out == "Execution timed out\n"


def test_doc_error_handling_cerver_error_branch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """...and its `except CerverError` branch, with an invalid key."""
    monkeypatch.setenv("CERVER_API_KEY", "sk_live_invalid")
    exec(compile(DOC_ERROR_HANDLING, "<doc example>", "exec"), {})
    assert capsys.readouterr().out == "Cerver error: invalid API key\n"


def test_doc_sandbox_dir(server: Server) -> None:
    from cerver import Sandbox

    with Sandbox() as sandbox:
        sandbox.files.write("data.txt", "hello world")
        ns = run_example(DOC_SANDBOX_DIR, server, {"sandbox": sandbox})
        assert ns["result"].output == "hello world"


@pytest.mark.needs_containers
def test_containers_with_a_small_package() -> None:
    """The containers example with a small real package (in addition to the doc's own)."""
    from cerver import Sandbox

    with Sandbox(engine="containers") as sandbox:
        installed = sandbox.install("six")
        assert installed and installed.success
        result = sandbox.run("import six\nprint(six.__name__)")
        assert result.output == "six"


@pytest.mark.needs_containers
def test_install_upgrades_workers_sandbox() -> None:
    from cerver import Sandbox

    with Sandbox() as sandbox:
        installed = sandbox.install("six")
        assert installed.success and installed.upgraded
        assert sandbox.info().engine == "containers"
        assert sandbox.run("import six").exit_code == 0
