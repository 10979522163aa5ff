"""The synchronous client: :class:`Sandbox`."""

from __future__ import annotations

import time
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Union,
    overload,
)

import httpx

from . import _core
from .context import Context
from .exceptions import NotFoundError, SandboxError, TimeoutError
from .models import (
    ContextInfo,
    ExecutionResult,
    FileInfo,
    InstallResult,
    SandboxInfo,
    StreamEvent,
    TimeoutInfo,
    WriteResult,
)

OutputCallback = Callable[[str], Any]


class Process:
    """A background process started with ``sandbox.run(code, background=True)``.

    ``status`` is ``"running"`` until it ends; ``output``/``error`` hold the bounded recent
    output as of the last :meth:`refresh`.
    """

    def __init__(self, sandbox: "Sandbox", data: Mapping[str, Any]) -> None:
        self._sandbox = sandbox
        self.pid: int = int(data["pid"])
        self.output: str = ""
        self.error: str = ""
        self.truncated: bool = False
        self._update(data)

    def _update(self, data: Mapping[str, Any]) -> None:
        self.status: str = str(data.get("status", "running"))
        self.code: str = str(data.get("code") or getattr(self, "code", "") or "")
        self.started_at: Optional[int] = data.get("started_at", getattr(self, "started_at", None))
        self.exit_code: Optional[int] = data.get("exit_code")
        self.ended_at: Optional[int] = data.get("ended_at")
        if "truncated" in data:
            self.truncated = bool(data.get("truncated"))
        if "output" in data:
            self.output = str(data.get("output") or "")
        if "error" in data:
            self.error = str(data.get("error") or "")

    @property
    def is_running(self) -> bool:
        return self.status == "running"

    def refresh(self) -> "Process":
        """Fetch the process's current status and recent output."""
        self._update(self._sandbox._request("GET", f"/processes/{self.pid}"))
        return self

    def info(self) -> "Process":
        """Alias of :meth:`refresh`."""
        return self.refresh()

    def wait(self, timeout: Optional[float] = None, interval: float = 0.2) -> "Process":
        """Poll until the process has ended (or ``timeout`` seconds have passed, then raise
        :class:`cerver.TimeoutError`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.refresh().is_running:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"process {self.pid} still running after {timeout} s")
            time.sleep(interval)
        return self

    def stream(self) -> Iterator[StreamEvent]:
        """Follow the process: a ``process`` event, its buffered output, then live
        ``stdout``/``stderr`` events until its ``exit``. Leaving the loop leaves it running."""
        return self._sandbox._sse(
            "GET", f"/processes/{self.pid}/stream", None, httpx.Timeout(None, connect=10.0)
        )

    def kill(self) -> bool:
        """Kill the process and everything it started."""
        return self._sandbox.processes.kill(self.pid)

    def __repr__(self) -> str:
        return f"Process(pid={self.pid}, status={self.status!r}, exit_code={self.exit_code!r})"


class Processes:
    """``sandbox.processes``: the sandbox's background processes."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    def list(self) -> List[Process]:
        data = self._sandbox._request("GET", "/processes")
        return [Process(self._sandbox, p) for p in data.get("processes", [])]

    def get(self, pid: int) -> Process:
        return Process(self._sandbox, self._sandbox._request("GET", f"/processes/{int(pid)}"))

    def kill(self, pid: int) -> bool:
        data = self._sandbox._request("DELETE", f"/processes/{int(pid)}")
        return bool(data.get("success", True))


class Files:
    """``sandbox.files``: the sandbox's workspace (``/home/user``, ``__sandbox_dir__``)."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sandbox = sandbox

    def write(self, path: str, content: Union[str, bytes, bytearray, memoryview]) -> WriteResult:
        """Write a file (parent directories are created). Bytes are sent base64-encoded."""
        body = _core.write_body(path, content)
        return _core.write_result(self._sandbox._request("POST", "/files", json=body))

    def read(self, path: str) -> Union[str, bytes]:
        """A file's content: ``str`` for UTF-8 text, ``bytes`` when the server answers base64."""
        data = self._sandbox._request("GET", "/files", params={"path": path})
        return _core.file_content(data)

    def read_bytes(self, path: str) -> bytes:
        content = self.read(path)
        return content.encode("utf-8") if isinstance(content, str) else content

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        content = self.read(path)
        return content if isinstance(content, str) else content.decode(encoding)

    def list(self) -> List[FileInfo]:
        """Every file of the workspace, recursively."""
        return _core.file_list(self._sandbox._request("GET", "/files"))


class Sandbox:
    """
    A sandboxed Python execution environment.

    The sandbox is created on ``with`` entry (or by :meth:`create`, or lazily by the first
    call that needs it) and deleted on exit (or by :meth:`kill`/:meth:`close`).

    Usage:
        with Sandbox() as sandbox:
            result = sandbox.run("print('Hello!')")
            print(result.output)
    """

    DEFAULT_API_URL = _core.DEFAULT_API_URL

    def __init__(
        self,
        api_key: Optional[str] = None,
        api_url: Optional[str] = None,
        timeout: float = _core.DEFAULT_RUN_TIMEOUT,
        *,
        envs: Optional[Mapping[str, str]] = None,
        engine: Optional[str] = None,
        timeout_ms: Optional[int] = None,
        metadata: Optional[Mapping[str, str]] = None,
        request_timeout: float = _core.DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        """
        Args:
            api_key: Your Cerver API key. If not provided, uses CERVER_API_KEY env var.
            api_url: API URL override. Defaults to CERVER_API_URL, else https://api.cerver.ai
            timeout: Default execution timeout of a run, in seconds.
            envs: Environment variables available to all code in the sandbox.
            engine: ``"workers"`` (default, fast) or ``"containers"`` (full pip).
            timeout_ms: Sandbox lifetime in milliseconds (server default 300000).
            metadata: Free-form string pairs for your bookkeeping.
            request_timeout: HTTP timeout in seconds of requests that do not run code.
        """
        self.api_key = _core.resolve_api_key(api_key)
        self.api_url = _core.resolve_api_url(api_url)
        self.default_timeout = timeout
        self.envs = dict(envs) if envs else None
        self.engine = engine
        self.timeout_ms = timeout_ms
        self.metadata = dict(metadata) if metadata else None
        self.request_timeout = request_timeout
        self.sandbox_id: Optional[str] = None
        self._info: Optional[SandboxInfo] = None
        self._http: Optional[httpx.Client] = None
        self.files = Files(self)
        self.processes = Processes(self)

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> "Sandbox":
        """Context manager entry - creates the sandbox (unless connected to one)."""
        if not self.sandbox_id:
            self.create()
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        """Context manager exit - deletes the sandbox and closes the connection."""
        self.close()

    def __del__(self) -> None:  # close the connection pool, never delete remotely here
        http = getattr(self, "_http", None)
        if http is not None:
            try:
                http.close()
            except Exception:
                pass

    def create(self) -> str:
        """Create a new sandbox with this object's options; returns its id."""
        body = _core.create_body(self.envs, self.engine, self.timeout_ms, self.metadata)
        data = self._call("POST", "/sandbox", json=body)
        self._info = SandboxInfo.from_json(data)
        self.sandbox_id = self._info.sandbox_id
        self._killed = False
        return self.sandbox_id

    @classmethod
    def connect(
        cls,
        sandbox_id: str,
        api_key: Optional[str] = None,
        api_url: Optional[str] = None,
        timeout: float = _core.DEFAULT_RUN_TIMEOUT,
    ) -> "Sandbox":
        """Attach to an existing sandbox (raises :class:`NotFoundError` if there is none)."""
        sandbox = cls(api_key=api_key, api_url=api_url, timeout=timeout)
        sandbox.sandbox_id = sandbox_id
        try:
            sandbox.info()
        except BaseException:
            sandbox.sandbox_id = None
            sandbox._close_http()
            raise
        return sandbox

    @classmethod
    def list(  # noqa: A003 - the documented name
        cls, api_key: Optional[str] = None, api_url: Optional[str] = None
    ) -> "List[SandboxInfo]":
        """The caller's active sandboxes, oldest first."""
        helper = cls(api_key=api_key, api_url=api_url)
        try:
            data = helper._call("GET", "/sandboxes")
        finally:
            helper._close_http()
        return [SandboxInfo.from_json(s) for s in data.get("sandboxes", [])]

    def kill(self) -> bool:
        """Delete the sandbox: every process and file of it is gone. Returns False when there
        was none (never created, or already gone)."""
        if not self.sandbox_id:
            return False
        sandbox_id, self.sandbox_id = self.sandbox_id, None
        self._killed = True
        try:
            self._call("DELETE", f"/sandbox/{sandbox_id}")
        except NotFoundError:
            return False
        return True

    def close(self) -> None:
        """Delete the sandbox (if any) and close the HTTP connection."""
        try:
            self.kill()
        finally:
            self._close_http()

    # -- information -------------------------------------------------------------------------

    def info(self) -> SandboxInfo:
        """The sandbox as the server shows it, with the current ``time_remaining_ms``."""
        self._info = SandboxInfo.from_json(self._request("GET", ""))
        return self._info

    def pause(self) -> SandboxInfo:
        """Pause the sandbox: its processes end and its memory and network are released; its
        files and settings stay and its lifetime stops counting (``status`` ``"paused"``).
        Pausing a paused sandbox is a no-op."""
        self._info = SandboxInfo.from_json(self._request("POST", "/pause"))
        return self._info

    def resume(self) -> SandboxInfo:
        """Resume a paused sandbox (same id and files, no process from before). Runs, file and
        install calls resume a paused sandbox by themselves. Raises :class:`RateLimitError`
        (429) when the plan's sandbox limit is reached."""
        self._info = SandboxInfo.from_json(self._request("POST", "/resume"))
        return self._info

    def set_timeout(self, timeout_ms: int) -> TimeoutInfo:
        """Make the sandbox's remaining lifetime ``timeout_ms`` from now."""
        data = self._request("POST", "/timeout", json={"timeout_ms": int(timeout_ms)})
        return TimeoutInfo.from_json(data)

    def get_host(self, port: int) -> str:
        """The external host name of ``port`` (containers engine, not on the trial plan)."""
        return str(self._host(port)["host"])

    def get_url(self, port: int) -> str:
        """The external URL of ``port``."""
        return str(self._host(port)["url"])

    def _host(self, port: int) -> Dict[str, Any]:
        data: Dict[str, Any] = self._request("GET", "/host", params={"port": int(port)})
        return data

    # -- running code ------------------------------------------------------------------------

    @overload
    def run(
        self,
        code: str,
        timeout: Optional[float] = None,
        *,
        envs: Optional[Mapping[str, str]] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        background: Literal[False] = False,
        context: _core.ContextRef = None,
    ) -> ExecutionResult: ...

    @overload
    def run(
        self,
        code: str,
        timeout: Optional[float] = None,
        *,
        envs: Optional[Mapping[str, str]] = None,
        on_stdout: None = None,
        on_stderr: None = None,
        background: Literal[True],
        context: None = None,
    ) -> Process: ...

    def run(
        self,
        code: str,
        timeout: Optional[float] = None,
        *,
        envs: Optional[Mapping[str, str]] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        background: bool = False,
        context: _core.ContextRef = None,
    ) -> Union[ExecutionResult, Process]:
        """
        Execute Python code in the sandbox.

        Args:
            code: Python code to execute.
            timeout: Execution timeout in seconds. Defaults to the sandbox default.
            envs: Per-run overrides of the sandbox's environment variables.
            on_stdout, on_stderr: Called with each chunk of output as it is written (the run
                is streamed).
            background: Start the code as a background process and return its
                :class:`Process` at once.
            context: Run in this context (:meth:`create_context`, or its id): a persistent
                interpreter whose variables and imports carry over between runs.

        Returns:
            ExecutionResult with output, error, exit_code, and duration (a :class:`Process`
            with ``background=True``).

        Raises:
            TimeoutError: the run timed out.
        """
        context_id = _core.context_id(context)
        if background:
            if context_id is not None:
                raise ValueError("a run in a context cannot be a background run")
            if on_stdout or on_stderr:
                raise ValueError("background runs take no output callbacks")
            body = _core.run_body(code, envs, timeout, background=True)
            data = self._request("POST", "/run", json=body)
            if "pid" not in data:
                raise SandboxError("this server does not support background processes")
            return Process(self, data)
        timeout = self.default_timeout if timeout is None else timeout
        if on_stdout is not None or on_stderr is not None:
            collector = _core.StreamCollector()
            for event in self.run_stream(code, envs=envs, timeout=timeout, context=context):
                collector.add(event)
                if event.type == "stdout" and on_stdout is not None:
                    on_stdout(event.data)
                elif event.type == "stderr" and on_stderr is not None:
                    on_stderr(event.data)
            return collector.result()
        data = self._request(
            "POST",
            "/run",
            json=_core.run_body(code, envs, timeout, context_id=context_id),
            timeout=_core.run_http_timeout(timeout),
        )
        return _core.execution_result(data)

    def run_code(self, code: str, timeout: Optional[float] = None, **kwargs: Any) -> Any:
        """Alias for run() (E2B compatibility)."""
        return self.run(code, timeout, **kwargs)

    def run_stream(
        self,
        code: str,
        *,
        envs: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        context: _core.ContextRef = None,
    ) -> Iterator[StreamEvent]:
        """Run code and yield its :class:`StreamEvent` s as they happen: ``stdout``/``stderr``
        chunks, then one ``exit`` event. Leaving the loop early kills the run."""
        timeout = self.default_timeout if timeout is None else timeout
        body = _core.run_body(code, envs, timeout, context_id=_core.context_id(context))
        return self._sse("POST", "/run/stream", body, _core.run_http_timeout(timeout))

    def _sse(
        self, method: str, path: str, body: Optional[Dict[str, Any]], timeout: httpx.Timeout
    ) -> Iterator[StreamEvent]:
        """The events of an SSE answer of ``/sandbox/{id}{path}``."""
        sandbox_id = self._ensure()
        parser = _core.SSEParser()
        try:
            with self._client().stream(
                method,
                f"/sandbox/{sandbox_id}{path}",
                json=body,
                headers={"Accept": "text/event-stream"},
                timeout=timeout,
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _core.error_for(response)
                for line in response.iter_lines():
                    yield from parser.feed(line)
                yield from parser.flush()
        except httpx.HTTPError as e:
            raise _core.network_error(e) from e

    # -- contexts ----------------------------------------------------------------------------

    def create_context(
        self, *, cwd: Optional[str] = None, envs: Optional[Mapping[str, str]] = None
    ) -> Context:
        """Starts a persistent interpreter (at most 8 per sandbox); run in it with
        ``run(code, context=ctx)`` or ``ctx.run(code)``."""
        data = self._request("POST", "/contexts", json=_core.context_body(cwd, envs))
        return Context(self, ContextInfo.from_json(data))

    def list_contexts(self) -> List[ContextInfo]:
        data = self._request("GET", "/contexts")
        return [ContextInfo.from_json(c) for c in data.get("contexts") or []]

    def install(self, *packages: str, package: Optional[str] = None) -> InstallResult:
        """Install pip packages (``install("pandas", "numpy==1.26.4")`` or
        ``install("pandas numpy")``). A ``workers`` sandbox is upgraded to ``containers``.

        The result is truthy on success (0.1.0 returned a bool); a failure raises
        :class:`SandboxError`.
        """
        body = _core.install_body(packages + ((package,) if package else ()))
        data = self._request(
            "POST", "/install", json=body, timeout=httpx.Timeout(_core.INSTALL_TIMEOUT, connect=10.0)
        )
        result = _core.install_result(data)
        if result.upgraded:
            self.engine = "containers"
        return result

    # -- plumbing ----------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"Sandbox(sandbox_id={self.sandbox_id!r}, api_url={self.api_url!r})"

    def _client(self) -> httpx.Client:
        if self._http is None or self._http.is_closed:
            self._http = httpx.Client(
                **_core.client_options(self.api_key, self.api_url, self.request_timeout)
            )
        return self._http

    def _close_http(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _ensure(self) -> str:
        if not self.sandbox_id:
            if getattr(self, "_killed", False):
                # Never a new sandbox behind the caller's back (it would take a plan slot).
                raise SandboxError("this sandbox was killed; create a new one")
            self.create()
        assert self.sandbox_id is not None
        return self.sandbox_id

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """A request to ``/sandbox/{id}{path}``, creating the sandbox first if needed."""
        return self._call(method, f"/sandbox/{self._ensure()}{path}", **kwargs)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client().request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise _core.network_error(e) from e
        return _core.check(response)


__all__ = ["Sandbox", "Files", "Processes", "Process"]
