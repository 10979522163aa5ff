"""Result objects returned by :class:`cerver.Sandbox` and :class:`cerver.AsyncSandbox`."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional


#: Representations a :class:`Result` may carry, in the order they are listed.
RESULT_FORMATS = ("text", "html", "markdown", "svg", "png", "jpeg", "latex", "json")


@dataclass
class Result:
    """One rich result of a run (a display output): the value of the code's last expression
    (``is_main_result``), an object passed to ``display()``, or a matplotlib figure. Each
    representation is ``None`` when the object did not offer it; ``png`` and ``jpeg`` are
    base64 strings (:meth:`png_bytes` decodes)."""

    text: Optional[str] = None
    html: Optional[str] = None
    markdown: Optional[str] = None
    svg: Optional[str] = None
    png: Optional[str] = None
    jpeg: Optional[str] = None
    latex: Optional[str] = None
    json: Any = None
    is_main_result: bool = False
    #: Set on the marker that ends a truncated list of results.
    truncated: bool = False

    def formats(self) -> List[str]:
        """The representations present."""
        return [f for f in RESULT_FORMATS if getattr(self, f) is not None]

    def png_bytes(self) -> Optional[bytes]:
        return base64.b64decode(self.png) if self.png is not None else None

    def jpeg_bytes(self) -> Optional[bytes]:
        return base64.b64decode(self.jpeg) if self.jpeg is not None else None

    def __str__(self) -> str:
        return self.text or ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Result":
        def text(key: str) -> Optional[str]:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(
            text=text("text"),
            html=text("html"),
            markdown=text("markdown"),
            svg=text("svg"),
            png=text("png"),
            jpeg=text("jpeg"),
            latex=text("latex"),
            json=data.get("json"),
            is_main_result=bool(data.get("is_main_result", False)),
            truncated=bool(data.get("truncated", False)),
        )


@dataclass
class ExecutionError:
    """The exception a run's code raised."""

    name: str
    value: str
    traceback: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ExecutionError":
        return cls(
            name=str(data.get("name", "")),
            value=str(data.get("value", "")),
            traceback=str(data.get("traceback", "")),
        )


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
    #: Rich results (display outputs), in the order produced.
    results: List[Result] = field(default_factory=list)
    #: The exception the code raised, if it raised one.
    error_info: Optional[ExecutionError] = None

    @property
    def main_result(self) -> Optional[Result]:
        """The value of the code's last expression, if it had one."""
        return next((r for r in self.results if r.is_main_result), None)

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
    #: A ``result`` event's rich result.
    result: Optional[Result] = None
    #: The exception the code raised (``exit`` events).
    error_info: Optional[ExecutionError] = None

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
            result=Result.from_json(data) if data.get("type") == "result" else None,
            error_info=_error_info(data.get("error_info")),
        )


def _error_info(data: Any) -> Optional[ExecutionError]:
    return ExecutionError.from_json(data) if isinstance(data, Mapping) else None


@dataclass
class ContextInfo:
    """A context as the server shows it."""

    context_id: str
    status: str = "running"
    cwd: str = ""
    pid: int = 0
    created_at: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ContextInfo":
        return cls(
            context_id=str(data["context_id"]),
            status=str(data.get("status", "running")),
            cwd=str(data.get("cwd") or ""),
            pid=int(data.get("pid") or 0),
            created_at=int(data.get("created_at") or 0),
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
