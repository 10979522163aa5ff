"""Contexts: persistent Python interpreters in a sandbox (variables, imports and open files
carry over between runs, as in a notebook)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Optional

from .models import ContextInfo, ExecutionResult, StreamEvent

if TYPE_CHECKING:
    from .async_sandbox import AsyncSandbox
    from .sandbox import Sandbox


class Context:
    """A persistent interpreter of a :class:`cerver.Sandbox` (``sandbox.create_context()``).
    Runs in it execute one after the other; a run's timeout interrupts it
    (``KeyboardInterrupt``) and, if that does not stop it, kills the interpreter:
    :meth:`restart` then gives a fresh one."""

    def __init__(self, sandbox: "Sandbox", info: ContextInfo) -> None:
        self.sandbox = sandbox
        self.info = info

    @property
    def context_id(self) -> str:
        return self.info.context_id

    def run(self, code: str, timeout: Optional[float] = None, **kwargs: Any) -> ExecutionResult:
        """``sandbox.run(code, timeout, context=self, ...)``."""
        return self.sandbox.run(code, timeout, context=self, **kwargs)

    def run_stream(self, code: str, *, timeout: Optional[float] = None) -> Iterator[StreamEvent]:
        return self.sandbox.run_stream(code, timeout=timeout, context=self)

    def restart(self) -> ContextInfo:
        """A fresh interpreter under the same id, cwd and envs (the state is lost)."""
        data = self.sandbox._request("POST", f"/contexts/{self.context_id}/restart", json={})
        self.info = ContextInfo.from_json(data)
        return self.info

    def delete(self) -> bool:
        """Ends the interpreter and everything it started."""
        self.sandbox._request("DELETE", f"/contexts/{self.context_id}")
        return True

    def __repr__(self) -> str:
        return f"Context(context_id={self.context_id!r})"


class AsyncContext:
    """:class:`Context` of an :class:`cerver.AsyncSandbox`."""

    def __init__(self, sandbox: "AsyncSandbox", info: ContextInfo) -> None:
        self.sandbox = sandbox
        self.info = info

    @property
    def context_id(self) -> str:
        return self.info.context_id

    async def run(self, code: str, timeout: Optional[float] = None, **kwargs: Any) -> ExecutionResult:
        return await self.sandbox.run(code, timeout, context=self, **kwargs)

    async def restart(self) -> ContextInfo:
        data = await self.sandbox._request("POST", f"/contexts/{self.context_id}/restart", json={})
        self.info = ContextInfo.from_json(data)
        return self.info

    async def delete(self) -> bool:
        await self.sandbox._request("DELETE", f"/contexts/{self.context_id}")
        return True

    def __repr__(self) -> str:
        return f"AsyncContext(context_id={self.context_id!r})"
