"""Result objects returned by :class:`cerver.Sandbox` and :class:`cerver.AsyncSandbox`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional


@dataclass
class ExecutionResult:
    """Result of code execution."""

    output: str
    error: str
    exit_code: int
    duration: int  # milliseconds
    #: How the run ended, decided by the server: ``"ok"``, ``"error"`` (non-zero exit),
    #: ``"timeout"``, ``"killed"`` or ``"oom"`` (``None`` from a server that does not say).
    status: Optional[str] = None

    @property
    def text(self) -> str:
        """Alias for output (E2B compatibility)."""
        return self.output

    @property
    def success(self) -> bool:
        """Whether the code exited with status 0."""
        return self.exit_code == 0

    def __str__(self) -> str:
        return self.output


@dataclass
class StreamEvent:
    """One event of a streamed run: ``stdout``/``stderr`` chunks in order, then one ``exit``
    (a background process's stream starts with a ``process`` event carrying ``pid``).

    For output events ``data`` is the text written. The ``exit`` event carries ``code`` (the
    exit code), ``duration`` (ms), ``status`` (how it ended: ``"ok"``, ``"error"``,
    ``"timeout"``, ``"killed"`` or ``"oom"``) and ``error`` when the run was stopped.
    """

    type: str
    data: str = ""
    code: Optional[int] = None
    duration: Optional[int] = None
    error: Optional[str] = None
    #: The first event of a background process's stream (``type == "process"``) names it.
    pid: Optional[int] = None
    #: How the run ended (``exit`` events; ``None`` from a server that does not say).
    status: Optional[str] = None

    @property
    def exit_code(self) -> Optional[int]:
        """Alias of ``code``."""
        return self.code

    @property
    def timed_out(self) -> bool:
        if self.type != "exit":
            return False
        if self.status is not None:
            return self.status == "timeout"
        return "timed out" in (self.error or "").lower()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "StreamEvent":
        return cls(
            type=str(data.get("type", "")),
            data=str(data.get("data") or ""),
            code=data.get("code"),
            duration=data.get("duration"),
            error=data.get("error"),
            pid=data.get("pid"),
            status=data.get("status"),
        )


@dataclass
class InstallResult:
    """Result of :meth:`Sandbox.install`. Truthy when the installation succeeded (0.1.0's
    ``install`` returned a bool)."""

    success: bool
    upgraded: bool = False
    output: Optional[str] = None
    error: Optional[str] = None

    def __bool__(self) -> bool:
        return self.success


@dataclass
class SandboxInfo:
    """A sandbox as the server shows it (``GET /sandbox/{id}``). ``envs`` holds names only."""

    sandbox_id: str
    engine: str = "workers"
    status: str = "ready"
    timeout_ms: int = 0
    expires_at: int = 0
    time_remaining_ms: int = 0
    created_at: int = 0
    envs: List[str] = field(default_factory=list)
    metadata: Dict[str, str] = field(default_factory=dict)
    notice: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SandboxInfo":
        return cls(
            sandbox_id=str(data["sandbox_id"]),
            engine=str(data.get("engine", "workers")),
            status=str(data.get("status", "ready")),
            timeout_ms=int(data.get("timeout_ms") or 0),
            expires_at=int(data.get("expires_at") or 0),
            time_remaining_ms=int(data.get("time_remaining_ms") or 0),
            created_at=int(data.get("created_at") or 0),
            envs=list(data.get("envs") or []),
            metadata=dict(data.get("metadata") or {}),
            notice=data.get("notice"),
            raw=dict(data),
        )


@dataclass
class TimeoutInfo:
    """Answer of :meth:`Sandbox.set_timeout`."""

    sandbox_id: str
    timeout_ms: int
    expires_at: int
    time_remaining_ms: int
    notice: Optional[str] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TimeoutInfo":
        return cls(
            sandbox_id=str(data.get("sandbox_id", "")),
            timeout_ms=int(data.get("timeout_ms") or 0),
            expires_at=int(data.get("expires_at") or 0),
            time_remaining_ms=int(data.get("time_remaining_ms") or 0),
            notice=data.get("notice"),
        )


@dataclass
class FileInfo:
    """One entry of :meth:`Files.list`."""

    path: str
    size: int


@dataclass
class WriteResult:
    """Answer of :meth:`Files.write`."""

    success: bool
    path: str
    size: int

    def __bool__(self) -> bool:
        return self.success
