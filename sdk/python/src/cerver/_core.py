"""What the synchronous and asynchronous clients share: configuration, request bodies, the
mapping of error answers to exceptions, the SSE parser and the parsing of results. No I/O."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Protocol, Union

import httpx

from ._version import __version__
from .exceptions import (
    AuthenticationError,
    CerverError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    SandboxError,
    TimeoutError,
)
from .models import (
    ExecutionError,
    ExecutionResult,
    FileInfo,
    InstallResult,
    Result,
    StreamEvent,
    WriteResult,
)

DEFAULT_API_URL = "https://api.cerver.ai"
#: Default run timeout in seconds (0.1.0's default).
DEFAULT_RUN_TIMEOUT: float = 60
#: HTTP read timeout for requests that do not run code.
DEFAULT_REQUEST_TIMEOUT: float = 60
#: How long the HTTP read may exceed the run's own timeout (queueing, transfer).
RUN_TIMEOUT_MARGIN: float = 30
#: Installing packages can take minutes.
INSTALL_TIMEOUT: float = 600

USER_AGENT = f"cerver-python/{__version__}"


class HasContextId(Protocol):
    @property
    def context_id(self) -> str: ...


#: A context to run in: a :class:`cerver.Context`, or its id.
ContextRef = Optional[Union[str, HasContextId]]


def context_id(ref: ContextRef) -> Optional[str]:
    if ref is None or isinstance(ref, str):
        return ref
    return ref.context_id


def context_body(cwd: Optional[str], envs: Optional[Mapping[str, str]]) -> Dict[str, Any]:
    body: Dict[str, Any] = {}
    if cwd is not None:
        body["cwd"] = cwd
    if envs:
        body["envs"] = dict(envs)
    return body


def resolve_api_key(api_key: Optional[str]) -> Optional[str]:
    return api_key or os.environ.get("CERVER_API_KEY")


def resolve_api_url(api_url: Optional[str]) -> str:
    url = api_url or os.environ.get("CERVER_API_URL") or DEFAULT_API_URL
    return url.rstrip("/")


def client_options(api_key: Optional[str], api_url: str, request_timeout: float) -> Dict[str, Any]:
    """Keyword arguments for ``httpx.Client``/``httpx.AsyncClient``."""
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return {
        "base_url": api_url,
        "headers": headers,
        "timeout": httpx.Timeout(request_timeout, connect=10.0),
        "follow_redirects": False,
    }


def run_http_timeout(run_timeout: Optional[float]) -> httpx.Timeout:
    """The HTTP timeout of a run: the read must outlast the run itself."""
    seconds = DEFAULT_RUN_TIMEOUT if run_timeout is None else float(run_timeout)
    return httpx.Timeout(seconds + RUN_TIMEOUT_MARGIN, connect=10.0)


def create_body(
    envs: Optional[Mapping[str, str]],
    engine: Optional[str],
    timeout_ms: Optional[int],
    metadata: Optional[Mapping[str, str]],
) -> Dict[str, Any]:
    body: Dict[str, Any] = {}
    if engine is not None:
        body["engine"] = engine
    if envs:
        body["envs"] = dict(envs)
    if timeout_ms is not None:
        body["timeout_ms"] = int(timeout_ms)
    if metadata:
        body["metadata"] = dict(metadata)
    return body


def run_body(
    code: str,
    envs: Optional[Mapping[str, str]],
    timeout: Optional[float],
    background: bool = False,
    context_id: Optional[str] = None,
) -> Dict[str, Any]:
    body: Dict[str, Any] = {"code": code}
    if context_id is not None:
        body["context_id"] = context_id
    if envs:
        body["envs"] = dict(envs)
    if timeout is not None:
        body["timeout"] = timeout
    if background:
        body["background"] = True
    return body


def install_body(packages: Iterable[str]) -> Dict[str, Any]:
    names: List[str] = []
    for item in packages:
        if not isinstance(item, str):
            raise TypeError(f"package names are strings, not {type(item).__name__}")
        names.extend(item.split())
    if not names:
        raise ValueError("install() needs at least one package")
    return {"packages": " ".join(names)}


def write_body(path: str, content: Union[str, bytes, bytearray, memoryview]) -> Dict[str, Any]:
    if isinstance(content, str):
        return {"path": path, "content": content}
    if isinstance(content, (bytes, bytearray, memoryview)):
        return {
            "path": path,
            "content": base64.b64encode(bytes(content)).decode("ascii"),
            "encoding": "base64",
        }
    raise TypeError(f"file content is str or bytes, not {type(content).__name__}")


def _error_message(response: httpx.Response) -> "tuple[str, Optional[str]]":
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        code = body.get("code")
        return body["error"], code if isinstance(code, str) else None
    text = response.text.strip()
    return (text[:500] or response.reason_phrase or f"HTTP {response.status_code}"), None


def _retry_after(response: httpx.Response) -> Optional[int]:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0, int(float(value)))
    except ValueError:
        return None


def error_for(response: httpx.Response) -> CerverError:
    """The exception for an error answer (status >= 400)."""
    status = response.status_code
    message, code = _error_message(response)
    if status == 401:
        return AuthenticationError(message, status_code=status, code=code)
    if status == 404:
        return NotFoundError(message, status_code=status, code=code)
    if status == 429:
        return RateLimitError(
            message, status_code=status, code=code, retry_after=_retry_after(response)
        )
    return SandboxError(message, status_code=status, code=code)


def check(response: httpx.Response) -> Any:
    """The JSON of a successful answer, or the mapped exception."""
    if response.status_code >= 400:
        raise error_for(response)
    try:
        return response.json()
    except ValueError as e:
        raise SandboxError(
            f"the server's answer is not JSON (HTTP {response.status_code})",
            status_code=response.status_code,
        ) from e


def network_error(e: httpx.HTTPError) -> CerverError:
    """The exception for a failure below HTTP (connection refused, broken, timed out)."""
    if isinstance(e, httpx.TimeoutException):
        return TimeoutError(f"request timed out: {e}")
    return NetworkError(f"cannot reach the Cerver API: {e}")


def is_timeout(error: str, exit_code: int, status: Optional[str] = None) -> bool:
    """Whether a run result means "timed out": the server's ``status`` when it sends one (so
    code that prints "timed out" is never a timeout); from an older server, 0.1.0's rule
    ("timed out" in ``error``), but never for a run that exited 0."""
    if status is not None:
        return status == "timeout"
    return exit_code != 0 and "timed out" in error.lower()


def execution_result(data: Mapping[str, Any]) -> ExecutionResult:
    result = ExecutionResult(
        output=str(data.get("output") or ""),
        error=str(data.get("error") or ""),
        exit_code=int(data.get("exit_code") or 0),
        duration=int(data.get("duration") or 0),
        status=data.get("status"),
        results=[Result.from_json(r) for r in data.get("results") or [] if isinstance(r, Mapping)],
        error_info=ExecutionError.from_json(data["error_info"])
        if isinstance(data.get("error_info"), Mapping)
        else None,
    )
    if is_timeout(result.error, result.exit_code, result.status):
        raise TimeoutError(result.error, status_code=200)
    return result


def install_result(data: Mapping[str, Any]) -> InstallResult:
    result = InstallResult(
        success=bool(data.get("success", False)),
        upgraded=bool(data.get("upgraded", False)),
        output=data.get("output"),
        error=data.get("error"),
    )
    if not result.success:
        raise SandboxError(f"installation failed: {result.error or result.output or 'no detail'}")
    return result


def write_result(data: Mapping[str, Any]) -> WriteResult:
    return WriteResult(
        success=bool(data.get("success", True)),
        path=str(data.get("path", "")),
        size=int(data.get("size") or 0),
    )


def file_content(data: Mapping[str, Any]) -> Union[str, bytes]:
    if "content" not in data:
        raise SandboxError("the server's answer has no file content")
    content = str(data["content"])
    if data.get("encoding") == "base64":
        return base64.b64decode(content)
    return content


def file_list(data: Mapping[str, Any]) -> List[FileInfo]:
    return [FileInfo(path=str(f["path"]), size=int(f.get("size") or 0)) for f in data["files"]]


class StreamCollector:
    """Turns stream events into an :class:`ExecutionResult` the way ``/run`` builds one: one
    trailing newline dropped from each stream, the stop reason appended to ``error``."""

    def __init__(self) -> None:
        self.stdout: List[str] = []
        self.stderr: List[str] = []
        self.results: List[Dict[str, Any]] = []
        self.exit: Optional[StreamEvent] = None

    def add(self, event: StreamEvent) -> None:
        if event.type == "stdout":
            self.stdout.append(event.data)
        elif event.type == "stderr":
            self.stderr.append(event.data)
        elif event.type == "result" and event.result is not None:
            self.results.append(asdict(event.result))
        elif event.type == "exit":
            self.exit = event

    def result(self) -> ExecutionResult:
        if self.exit is None:
            raise NetworkError("the stream ended before the run's exit event")

        def strip_one(text: str) -> str:
            return text[:-1] if text.endswith("\n") else text

        output = strip_one("".join(self.stdout))
        error = strip_one("".join(self.stderr))
        if self.exit.error:
            error = f"{error}\n{self.exit.error}" if error else self.exit.error
        return execution_result(
            {
                "output": output,
                "error": error,
                "exit_code": self.exit.code if self.exit.code is not None else 0,
                "duration": self.exit.duration or 0,
                "status": self.exit.status,
                "results": self.results,
                "error_info": asdict(self.exit.error_info) if self.exit.error_info else None,
            }
        )


class SSEParser:
    """Incremental Server-Sent Events parser: feed it lines, get the events' JSON data."""

    def __init__(self) -> None:
        self._data: List[str] = []

    def feed(self, line: str) -> Iterator[StreamEvent]:
        line = line.rstrip("\r\n")
        if line == "":
            if self._data:
                payload = "\n".join(self._data)
                self._data = []
                yield self._event(payload)
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)

    def flush(self) -> Iterator[StreamEvent]:
        if self._data:
            payload = "\n".join(self._data)
            self._data = []
            yield self._event(payload)

    @staticmethod
    def _event(payload: str) -> StreamEvent:
        try:
            data = json.loads(payload)
        except ValueError as e:
            raise SandboxError(f"malformed stream event: {payload[:200]!r}") from e
        if not isinstance(data, dict):
            raise SandboxError(f"malformed stream event: {payload[:200]!r}")
        return StreamEvent.from_json(data)
