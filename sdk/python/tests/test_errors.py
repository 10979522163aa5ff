"""Error answers of the real server mapped to the SDK's exceptions."""
from __future__ import annotations

import builtins
import dataclasses

import pytest

import cerver
from cerver import (
    AuthenticationError,
    CerverError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    Sandbox,
    SandboxError,
    TimeoutError,
)
from conftest import Server


def test_exports_superset_of_0_1_0() -> None:
    assert cerver.__version__ == "0.2.0"
    assert {"Sandbox", "CerverError", "TimeoutError", "SandboxError", "AuthenticationError"} \
        <= set(cerver.__all__)
    from cerver.sandbox import ExecutionResult, Sandbox  # 0.1.0's module paths

    assert Sandbox.DEFAULT_API_URL == "https://api.cerver.ai"
    # 0.1.0's four fields first and in order (positional construction keeps working); what
    # later versions add (the server's `status` verdict) has a default.
    fields = list(ExecutionResult.__dataclass_fields__.values())
    assert [f.name for f in fields[:4]] == ["output", "error", "exit_code", "duration"]
    assert all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in fields[4:]
    )
    assert ExecutionResult("a", "", 0, 1).output == "a"


def test_hierarchy_keeps_0_1_0_names() -> None:
    for name in ("CerverError", "TimeoutError", "SandboxError", "AuthenticationError"):
        assert name in cerver.__all__
    assert issubclass(TimeoutError, CerverError) and issubclass(TimeoutError, builtins.TimeoutError)
    assert issubclass(AuthenticationError, CerverError)
    assert issubclass(NotFoundError, SandboxError) and issubclass(RateLimitError, SandboxError)
    assert issubclass(SandboxError, CerverError) and issubclass(NetworkError, CerverError)


def test_bad_key_is_authentication_error() -> None:
    with pytest.raises(AuthenticationError) as caught:
        Sandbox(api_key="sk_live_not_a_key").create()
    assert caught.value.status_code == 401
    assert caught.value.code == "unauthorized"
    assert str(caught.value) == "invalid API key"
    with pytest.raises(AuthenticationError):
        Sandbox.list(api_key="sk_trial_nope")


def test_missing_key_is_authentication_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERVER_API_KEY")
    with pytest.raises(AuthenticationError):
        with Sandbox():
            pass


def test_unknown_sandbox_is_not_found() -> None:
    with pytest.raises(NotFoundError) as caught:
        Sandbox.connect("00000000-0000-0000-0000-000000000000")
    assert isinstance(caught.value, SandboxError)
    assert caught.value.status_code == 404 and caught.value.code == "not_found"
    assert "not found" in str(caught.value)


def test_another_users_sandbox_is_not_found(mint) -> None:
    with Sandbox() as mine:
        other = mint("free")
        with pytest.raises(NotFoundError):
            Sandbox.connect(mine.sandbox_id, api_key=other)


def test_timeout_is_catchable_both_ways() -> None:
    with Sandbox() as sandbox:
        with pytest.raises(TimeoutError):
            sandbox.run("while True: pass", timeout=0.5)
        try:
            sandbox.run("while True: pass", timeout=0.5)
        except builtins.TimeoutError as e:
            assert isinstance(e, CerverError)
            assert e.status_code == 200  # the server answers 200 with "timed out"
        else:
            pytest.fail("no TimeoutError")


def test_validation_errors_carry_status_and_message() -> None:
    with Sandbox() as sandbox:
        with pytest.raises(SandboxError) as caught:
            sandbox.set_timeout(0)
        assert caught.value.status_code in (400, 422)
        assert caught.value.message


def test_unreachable_server_is_network_error() -> None:
    with pytest.raises(NetworkError) as caught:
        Sandbox(api_url="http://127.0.0.1:9").create()
    assert isinstance(caught.value, CerverError)
    assert caught.value.status_code is None


def test_daily_request_limit_is_rate_limit_error(server: Server, mint) -> None:
    key = mint("trial")  # 100 requests a day
    with server.http(key) as http:
        statuses = [http.get("/sandboxes").status_code for _ in range(100)]
    assert statuses == [200] * 100
    with pytest.raises(RateLimitError) as caught:
        Sandbox.list(api_key=key)
    error = caught.value
    assert error.status_code == 429
    assert isinstance(error.retry_after, int) and 0 < error.retry_after <= 86_400
    assert isinstance(error, SandboxError) and isinstance(error, CerverError)
    with pytest.raises(RateLimitError):
        Sandbox(api_key=key).create()


def test_sandbox_count_limit_is_rate_limit_error(mint) -> None:
    key = mint("trial")  # one sandbox at a time
    with Sandbox(api_key=key):
        with pytest.raises(RateLimitError) as caught:
            Sandbox(api_key=key).create()
        assert caught.value.status_code == 429
    # The slot is free again once the first one is deleted.
    with Sandbox(api_key=key) as again:
        assert again.run("print(1)").output == "1"
