"""Cerver: run untrusted Python in secure sandboxes, for AI agents.

    from cerver import Sandbox

    with Sandbox() as sandbox:
        print(sandbox.run("print(2 ** 100)").output)

The API key comes from ``api_key=`` or ``CERVER_API_KEY``; the server from ``api_url=`` or
``CERVER_API_URL`` (default ``https://api.cerver.ai``). Agent tool definitions and a
dispatcher live in :mod:`cerver.tools`.
"""

from .async_sandbox import AsyncFiles, AsyncProcess, AsyncProcesses, AsyncSandbox
from .exceptions import (
    AuthenticationError,
    CerverError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    SandboxError,
    TimeoutError,
)
from .context import AsyncContext, Context
from .models import (
    ContextInfo,
    ExecutionError,
    ExecutionResult,
    Result,
    FileInfo,
    InstallResult,
    SandboxInfo,
    StreamEvent,
    TimeoutInfo,
    WriteResult,
)
from .sandbox import Files, Process, Processes, Sandbox
from ._version import __version__

__all__ = [
    "__version__",
    "Sandbox",
    "AsyncSandbox",
    "ExecutionResult",
    "ExecutionError",
    "Result",
    "Context",
    "AsyncContext",
    "ContextInfo",
    "StreamEvent",
    "InstallResult",
    "SandboxInfo",
    "TimeoutInfo",
    "FileInfo",
    "WriteResult",
    "Files",
    "AsyncFiles",
    "Process",
    "AsyncProcess",
    "Processes",
    "AsyncProcesses",
    "CerverError",
    "TimeoutError",
    "SandboxError",
    "AuthenticationError",
    "NotFoundError",
    "RateLimitError",
    "NetworkError",
]
