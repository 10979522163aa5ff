"""The asynchronous client: :class:`AsyncSandbox`, the same surface as :class:`Sandbox` on
``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
import time
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    List,
    Literal,
    Mapping,
    Optional,
    Union,
    overload,
)

import httpx

from . import _core
from .context import AsyncContext
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

#: A callback may be a plain function or a coroutine function.
AsyncOutputCallback = Callable[[str], Union[Any, Awaitable[Any]]]


async def _call_back(callback: AsyncOutputCallback, data: str) -> None:
    outcome = callback(data)
    if asyncio.iscoroutine(outcome) or isinstance(outcome, asyncio.Future):
        await outcome


class AsyncProcess:
    """A background process of an :class:`AsyncSandbox` (see :class:`cerver.Process`)."""

    def __init__(self, sandbox: "AsyncSandbox", data: Mapping[str, Any]) -> None:
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

    async def refresh(self) -> "AsyncProcess":
        self._update(await self._sandbox._request("GET", f"/processes/{self.pid}"))
        return self

    async def info(self) -> "AsyncProcess":
        return await self.refresh()

    async def wait(self, timeout: Optional[float] = None, interval: float = 0.2) -> "AsyncProcess":
        deadline = None if timeout is None else time.monotonic() + timeout
        while (await self.refresh()).is_running:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"process {self.pid} still running after {timeout} s")
            await asyncio.sleep(interval)
        return self

    def stream(self) -> AsyncIterator[StreamEvent]:
        """Async iterator following the process (see :meth:`cerver.Process.stream`)."""
        return self._sandbox._sse(
            "GET", f"/processes/{self.pid}/stream", None, httpx.Timeout(None, connect=10.0)
        )

    async def kill(self) -> bool:
        return await self._sandbox.processes.kill(self.pid)

    def __repr__(self) -> str:
        return f"AsyncProcess(pid={self.pid}, status={self.status!r}, exit_code={self.exit_code!r})"


class AsyncProcesses:
    def __init__(self, sandbox: "AsyncSandbox") -> None:
        self._sandbox = sandbox

    async def list(self) -> List[AsyncProcess]:
        data = await self._sandbox._request("GET", "/processes")
        return [AsyncProcess(self._sandbox, p) for p in data.get("processes", [])]

    async def get(self, pid: int) -> AsyncProcess:
        data = await self._sandbox._request("GET", f"/processes/{int(pid)}")
        return AsyncProcess(self._sandbox, data)

    async def kill(self, pid: int) -> bool:
        data = await self._sandbox._request("DELETE", f"/processes/{int(pid)}")
        return bool(data.get("success", True))


class AsyncFiles:
    def __init__(self, sandbox: "AsyncSandbox") -> None:
        self._sandbox = sandbox

    async def write(
        self, path: str, content: Union[str, bytes, bytearray, memoryview]
    ) -> WriteResult:
        body = _core.write_body(path, content)
        return _core.write_result(await self._sandbox._request("POST", "/files", json=body))

    async def read(self, path: str) -> Union[str, bytes]:
        data = await self._sandbox._request("GET", "/files", params={"path": path})
        return _core.file_content(data)

    async def read_bytes(self, path: str) -> bytes:
        content = await self.read(path)
        return content.encode("utf-8") if isinstance(content, str) else content

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        content = await self.read(path)
        return content if isinstance(content, str) else content.decode(encoding)

    async def list(self) -> List[FileInfo]:
        return _core.file_list(await self._sandbox._request("GET", "/files"))


class AsyncSandbox:
    """
    The asynchronous :class:`cerver.Sandbox`.

    Usage:
        async with AsyncSandbox() as sandbox:
            result = await sandbox.run("print('Hello!')")
            async for event in sandbox.run_stream("print(1)"):
                ...
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
        self._http: Optional[httpx.AsyncClient] = None
        self.files = AsyncFiles(self)
        self.processes = AsyncProcesses(self)

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> "AsyncSandbox":
        if not self.sandbox_id:
            await self.create()
        return self

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        await self.close()

    async def create(self) -> str:
        body = _core.create_body(self.envs, self.engine, self.timeout_ms, self.metadata)
        data = await self._call("POST", "/sandbox", json=body)
        self._info = SandboxInfo.from_json(data)
        self.sandbox_id = self._info.sandbox_id
        self._killed = False
        return self.sandbox_id

    @classmethod
    async def connect(
        cls,
        sandbox_id: str,
        api_key: Optional[str] = None,
        api_url: Optional[str] = None,
        timeout: float = _core.DEFAULT_RUN_TIMEOUT,
    ) -> "AsyncSandbox":
        sandbox = cls(api_key=api_key, api_url=api_url, timeout=timeout)
        sandbox.sandbox_id = sandbox_id
        try:
            await sandbox.info()
        except BaseException:
            sandbox.sandbox_id = None
            await sandbox._close_http()
            raise
        return sandbox

    @classmethod
    async def list(  # noqa: A003
        cls, api_key: Optional[str] = None, api_url: Optional[str] = None
    ) -> "List[SandboxInfo]":
        helper = cls(api_key=api_key, api_url=api_url)
        try:
            data = await helper._call("GET", "/sandboxes")
        finally:
            await helper._close_http()
        return [SandboxInfo.from_json(s) for s in data.get("sandboxes", [])]

    async def kill(self) -> bool:
        if not self.sandbox_id:
            return False
        sandbox_id, self.sandbox_id = self.sandbox_id, None
        self._killed = True
        try:
            await self._call("DELETE", f"/sandbox/{sandbox_id}")
        except NotFoundError:
            return False
        return True

    async def close(self) -> None:
        try:
            await self.kill()
        finally:
            await self._close_http()

    # -- information -------------------------------------------------------------------------

    async def info(self) -> SandboxInfo:
        self._info = SandboxInfo.from_json(await self._request("GET", ""))
        return self._info

    async def pause(self) -> SandboxInfo:
        """See :meth:`cerver.Sandbox.pause`."""
        self._info = SandboxInfo.from_json(await self._request("POST", "/pause"))
        return self._info

    async def resume(self) -> SandboxInfo:
        """See :meth:`cerver.Sandbox.resume`."""
        self._info = SandboxInfo.from_json(await self._request("POST", "/resume"))
        return self._info

    async def set_timeout(self, timeout_ms: int) -> TimeoutInfo:
        data = await self._request("POST", "/timeout", json={"timeout_ms": int(timeout_ms)})
        return TimeoutInfo.from_json(data)

    async def get_host(self, port: int) -> str:
        return str((await self._host(port))["host"])

    async def get_url(self, port: int) -> str:
        return str((await self._host(port))["url"])

    async def _host(self, port: int) -> Dict[str, Any]:
        data: Dict[str, Any] = await self._request("GET", "/host", params={"port": int(port)})
        return data

    # -- running code ------------------------------------------------------------------------

    @overload
    async def run(
        self,
        code: str,
        timeout: Optional[float] = None,
        *,
        envs: Optional[Mapping[str, str]] = None,
        on_stdout: Optional[AsyncOutputCallback] = None,
        on_stderr: Optional[AsyncOutputCallback] = None,
        background: Literal[False] = False,
        context: _core.ContextRef = None,
    ) -> ExecutionResult: ...

    @overload
    async def run(
        self,
        code: str,
        timeout: Optional[float] = None,
        *,
        envs: Optional[Mapping[str, str]] = None,
        on_stdout: None = None,
        on_stderr: None = None,
        background: Literal[True],
        context: None = None,
    ) -> AsyncProcess: ...

    async def run(
        self,
        code: str,
        timeout: Optional[float] = None,
        *,
        envs: Optional[Mapping[str, str]] = None,
        on_stdout: Optional[AsyncOutputCallback] = None,
        on_stderr: Optional[AsyncOutputCallback] = None,
        background: bool = False,
        context: _core.ContextRef = None,
    ) -> Union[ExecutionResult, AsyncProcess]:
        """See :meth:`cerver.Sandbox.run`; callbacks may also be coroutine functions."""
        context_id = _core.context_id(context)
        if background:
            if context_id is not None:
                raise ValueError("a run in a context cannot be a background run")
            if on_stdout or on_stderr:
                raise ValueError("background runs take no output callbacks")
            body = _core.run_body(code, envs, timeout, background=True)
            data = await self._request("POST", "/run", json=body)
            if "pid" not in data:
                raise SandboxError("this server does not support background processes")
            return AsyncProcess(self, data)
        timeout = self.default_timeout if timeout is None else timeout
        if on_stdout is not None or on_stderr is not None:
            collector = _core.StreamCollector()
            async for event in self.run_stream(code, envs=envs, timeout=timeout, context=context):
                collector.add(event)
                if event.type == "stdout" and on_stdout is not None:
                    await _call_back(on_stdout, event.data)
                elif event.type == "stderr" and on_stderr is not None:
                    await _call_back(on_stderr, event.data)
            return collector.result()
        data = await self._request(
            "POST",
            "/run",
            json=_core.run_body(code, envs, timeout, context_id=context_id),
            timeout=_core.run_http_timeout(timeout),
        )
        return _core.execution_result(data)

    async def run_code(self, code: str, timeout: Optional[float] = None, **kwargs: Any) -> Any:
        """Alias for run() (E2B compatibility)."""
        return await self.run(code, timeout, **kwargs)

    async def run_stream(
        self,
        code: str,
        *,
        envs: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        context: _core.ContextRef = None,
    ) -> AsyncIterator[StreamEvent]:
        """Async iterator of the run's :class:`StreamEvent` s."""
        timeout = self.default_timeout if timeout is None else timeout
        body = _core.run_body(code, envs, timeout, context_id=_core.context_id(context))
        async for event in self._sse("POST", "/run/stream", body, _core.run_http_timeout(timeout)):
            yield event

    async def _sse(
        self, method: str, path: str, body: Optional[Dict[str, Any]], timeout: httpx.Timeout
    ) -> AsyncIterator[StreamEvent]:
        sandbox_id = await self._ensure()
        parser = _core.SSEParser()
        try:
            async with self._client().stream(
                method,
                f"/sandbox/{sandbox_id}{path}",
                json=body,
                headers={"Accept": "text/event-stream"},
                timeout=timeout,
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _core.error_for(response)
                async for line in response.aiter_lines():
                    for event in parser.feed(line):
                        yield event
                for event in parser.flush():
                    yield event
        except httpx.HTTPError as e:
            raise _core.network_error(e) from e

    # -- contexts ----------------------------------------------------------------------------

    async def create_context(
        self, *, cwd: Optional[str] = None, envs: Optional[Mapping[str, str]] = None
    ) -> AsyncContext:
        """Starts a persistent interpreter (at most 8 per sandbox); run in it with
        ``run(code, context=ctx)`` or ``ctx.run(code)``."""
        data = await self._request("POST", "/contexts", json=_core.context_body(cwd, envs))
        return AsyncContext(self, ContextInfo.from_json(data))

    async def list_contexts(self) -> List[ContextInfo]:
        data = await self._request("GET", "/contexts")
        return [ContextInfo.from_json(c) for c in data.get("contexts") or []]

    async def install(self, *packages: str, package: Optional[str] = None) -> InstallResult:
        body = _core.install_body(packages + ((package,) if package else ()))
        data = await self._request(
            "POST", "/install", json=body, timeout=httpx.Timeout(_core.INSTALL_TIMEOUT, connect=10.0)
        )
        result = _core.install_result(data)
        if result.upgraded:
            self.engine = "containers"
        return result

    # -- plumbing ----------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"AsyncSandbox(sandbox_id={self.sandbox_id!r}, api_url={self.api_url!r})"

    def _client(self) -> httpx.AsyncClient:
        if self._http is None or self._http.is_closed:
            self._http = httpx.AsyncClient(
                **_core.client_options(self.api_key, self.api_url, self.request_timeout)
            )
        return self._http

    async def _close_http(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _ensure(self) -> str:
        if not self.sandbox_id:
            if getattr(self, "_killed", False):
                # Never a new sandbox behind the caller's back (it would take a plan slot).
                raise SandboxError("this sandbox was killed; create a new one")
            await self.create()
        assert self.sandbox_id is not None
        return self.sandbox_id

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        sandbox_id = await self._ensure()
        return await self._call(method, f"/sandbox/{sandbox_id}{path}", **kwargs)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._client().request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise _core.network_error(e) from e
        return _core.check(response)
