"""Ready tool definitions for AI agents and a dispatcher that runs the model's tool calls in a
sandbox.

Definitions, in three shapes (each a fresh copy, so callers may edit them):

* :data:`EXECUTE_PYTHON`: the documentation's generic definition (``name``, ``description``,
  ``parameters``); :func:`tool_definitions` gives it with the file and install tools.
* :func:`openai_tools`: OpenAI function calling (``{"type": "function", "function": {...}}``).
* :func:`anthropic_tools`: Anthropic tool use (``{"name", "description", "input_schema"}``).

Dispatch::

    # OpenAI
    message = response.choices[0].message
    messages.append(message)
    messages.extend(openai_tool_messages(sandbox, message))

    # Anthropic
    results = anthropic_tool_results(sandbox, response.content)
    messages.append({"role": "assistant", "content": response.content})
    messages.append({"role": "user", "content": results})

:func:`handle_tool_call` takes a tool name and its arguments (OpenAI's JSON string or
Anthropic's dict) and returns the text for the model. Failures the model can act on (an
exception in its code, a missing file, a rejected package) come back as text; failures it
cannot (a bad API key, rate limits, an unreachable server) raise.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from .async_sandbox import AsyncSandbox
from .exceptions import (
    AuthenticationError,
    CerverError,
    NetworkError,
    RateLimitError,
    TimeoutError,
)
from .content import anthropic_content, openai_content, results_text
from .context import AsyncContext, Context
from .models import ExecutionResult
from .sandbox import Sandbox

_ENVS_SCHEMA = {"type": "object", "description": "Environment variables"}

#: The documentation's generic tool definition.
EXECUTE_PYTHON: Dict[str, Any] = {
    "name": "execute_python",
    "description": "Execute Python code in a secure sandbox",
    "parameters": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "description": "Python code to execute"},
            "envs": _ENVS_SCHEMA,
        },
        "required": ["code"],
    },
}

WRITE_FILE: Dict[str, Any] = {
    "name": "write_file",
    "description": (
        "Write a text file in the sandbox's workspace (the working directory of executed "
        "code); parent directories are created"
    ),
    "parameters": {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path relative to the workspace"},
            "content": {"type": "string", "description": "The file's text"},
        },
        "required": ["path", "content"],
    },
}

READ_FILE: Dict[str, Any] = {
    "name": "read_file",
    "description": "Read a file from the sandbox's workspace",
    "parameters": {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path relative to the workspace"},
        },
        "required": ["path"],
    },
}

INSTALL_PACKAGES: Dict[str, Any] = {
    "name": "install_packages",
    "description": "Install pip packages in the sandbox so that executed code can import them",
    "parameters": {
        "type": "object",
        "properties": {
            "packages": {
                "type": "string",
                "description": "Space-separated pip requirements, e.g. \"pandas numpy==1.26.4\"",
            },
        },
        "required": ["packages"],
    },
}

#: Names the dispatcher accepts for running code (``execute_code`` is the name the
#: documentation's OpenAI and Anthropic examples use).
EXECUTE_NAMES = ("execute_python", "execute_code")

ToolCallArguments = Union[str, Mapping[str, Any], None]


def tool_definitions(*, files: bool = True, install: bool = True) -> List[Dict[str, Any]]:
    """Generic definitions: ``execute_python``, then optionally the file and install tools."""
    tools = [EXECUTE_PYTHON]
    if files:
        tools += [WRITE_FILE, READ_FILE]
    if install:
        tools.append(INSTALL_PACKAGES)
    return copy.deepcopy(tools)


def openai_tools(*, files: bool = True, install: bool = True) -> List[Dict[str, Any]]:
    """The ``tools`` argument of OpenAI's ``chat.completions.create``."""
    return [{"type": "function", "function": t} for t in tool_definitions(files=files, install=install)]


def anthropic_tools(*, files: bool = True, install: bool = True) -> List[Dict[str, Any]]:
    """The ``tools`` argument of Anthropic's ``messages.create``."""
    return [
        {"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
        for t in tool_definitions(files=files, install=install)
    ]


# -- parsing -------------------------------------------------------------------------------


class _ToolInputError(Exception):
    pass


def _parse_arguments(name: str, arguments: ToolCallArguments) -> Dict[str, Any]:
    if arguments is None:
        return {}
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            if name in EXECUTE_NAMES:
                # A model (or the documentation's example) that passes bare code.
                return {"code": arguments}
            raise _ToolInputError("arguments are not valid JSON") from None
        if isinstance(parsed, dict):
            return parsed
        if isinstance(parsed, str) and name in EXECUTE_NAMES:
            return {"code": parsed}
        raise _ToolInputError("arguments must be a JSON object")
    raise _ToolInputError(f"arguments must be a JSON object, not {type(arguments).__name__}")


def _string(args: Mapping[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str):
        raise _ToolInputError(f"missing string argument {key!r}")
    return value


def _envs(args: Mapping[str, Any]) -> Optional[Dict[str, str]]:
    envs = args.get("envs")
    if envs is None:
        return None
    if not isinstance(envs, Mapping):
        raise _ToolInputError("'envs' must be an object of strings")
    return {str(k): str(v) for k, v in envs.items()}


def format_execution(result: ExecutionResult) -> str:
    """The text a model sees for a run: output, its results (``Out: ...``), then stderr and a
    non-zero exit code."""
    parts = []
    if result.output:
        parts.append(result.output)
    if result.results:
        parts.append(results_text(result))
    if result.error:
        parts.append(f"[stderr]\n{result.error}")
    if result.exit_code != 0:
        parts.append(f"[exit code {result.exit_code}]")
    return "\n".join(parts) if parts else "(no output)"


def _format_file(path: str, content: Union[str, bytes]) -> str:
    if isinstance(content, bytes):
        encoded = base64.b64encode(content).decode("ascii")
        return f"(binary file {path}, {len(content)} bytes, base64)\n{encoded}"
    return content


def _reraise_if_fatal(e: CerverError) -> None:
    """Errors the model cannot fix go to the application."""
    if isinstance(e, (AuthenticationError, RateLimitError, NetworkError)):
        raise e


# -- dispatch ------------------------------------------------------------------------------


def run_tool(
    sandbox: Sandbox, name: str, arguments: ToolCallArguments, *, timeout: Optional[float] = None
) -> Tuple[str, bool]:
    """Run one tool call; returns ``(text for the model, is_error)``."""
    try:
        args = _parse_arguments(name, arguments)
        if name in EXECUTE_NAMES:
            result = sandbox.run(_string(args, "code"), timeout, envs=_envs(args))
            return format_execution(result), result.exit_code != 0
        if name == "write_file":
            path = _string(args, "path")
            written = sandbox.files.write(path, _string(args, "content"))
            return f"Wrote {written.size} bytes to {path}", False
        if name == "read_file":
            path = _string(args, "path")
            return _format_file(path, sandbox.files.read(path)), False
        if name == "install_packages":
            installed = sandbox.install(_string(args, "packages"))
            return _format_install(args["packages"], installed.output), False
        return f"Error: unknown tool {name!r}", True
    except _ToolInputError as e:
        return f"Error: {e}", True
    except TimeoutError as e:
        return f"Error: execution timed out ({e})", True
    except CerverError as e:
        _reraise_if_fatal(e)
        return f"Error: {e}", True


async def async_run_tool(
    sandbox: AsyncSandbox,
    name: str,
    arguments: ToolCallArguments,
    *,
    timeout: Optional[float] = None,
) -> Tuple[str, bool]:
    """:func:`run_tool` for an :class:`AsyncSandbox`."""
    try:
        args = _parse_arguments(name, arguments)
        if name in EXECUTE_NAMES:
            result = await sandbox.run(_string(args, "code"), timeout, envs=_envs(args))
            return format_execution(result), result.exit_code != 0
        if name == "write_file":
            path = _string(args, "path")
            written = await sandbox.files.write(path, _string(args, "content"))
            return f"Wrote {written.size} bytes to {path}", False
        if name == "read_file":
            path = _string(args, "path")
            return _format_file(path, await sandbox.files.read(path)), False
        if name == "install_packages":
            installed = await sandbox.install(_string(args, "packages"))
            return _format_install(args["packages"], installed.output), False
        return f"Error: unknown tool {name!r}", True
    except _ToolInputError as e:
        return f"Error: {e}", True
    except TimeoutError as e:
        return f"Error: execution timed out ({e})", True
    except CerverError as e:
        _reraise_if_fatal(e)
        return f"Error: {e}", True


def _format_install(packages: str, output: Optional[str]) -> str:
    text = f"Installed {packages}"
    return f"{text}\n{output}" if output else text


def handle_tool_call(
    sandbox: Sandbox, name: str, arguments: ToolCallArguments, *, timeout: Optional[float] = None
) -> str:
    """Run one tool call (``arguments`` as OpenAI's JSON string or Anthropic's dict) and
    return the text result for the model."""
    return run_tool(sandbox, name, arguments, timeout=timeout)[0]


async def async_handle_tool_call(
    sandbox: AsyncSandbox,
    name: str,
    arguments: ToolCallArguments,
    *,
    timeout: Optional[float] = None,
) -> str:
    return (await async_run_tool(sandbox, name, arguments, timeout=timeout))[0]


# -- provider-shaped helpers ----------------------------------------------------------------


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """Field of an SDK object or of its dict form."""
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _openai_call(tool_call: Any) -> Tuple[str, str, Any]:
    function = _get(tool_call, "function")
    return str(_get(tool_call, "id")), str(_get(function, "name")), _get(function, "arguments")


def _openai_message(call_id: str, text: str) -> Dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _anthropic_block(tool_use_id: str, text: str, is_error: bool) -> Dict[str, Any]:
    block: Dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id, "content": text}
    if is_error:
        block["is_error"] = True
    return block


def _anthropic_blocks(content: Any) -> List[Any]:
    """The ``tool_use`` blocks of a response (or of its ``content`` list)."""
    blocks = _get(content, "content", content) if not isinstance(content, list) else content
    return [b for b in blocks or [] if _get(b, "type") == "tool_use"]


def openai_tool_result(
    sandbox: Sandbox, tool_call: Any, *, timeout: Optional[float] = None
) -> Dict[str, Any]:
    """Run one entry of ``message.tool_calls``; returns the ``{"role": "tool", ...}`` message."""
    call_id, name, arguments = _openai_call(tool_call)
    return _openai_message(call_id, handle_tool_call(sandbox, name, arguments, timeout=timeout))


def openai_tool_messages(
    sandbox: Sandbox, message: Any, *, timeout: Optional[float] = None
) -> List[Dict[str, Any]]:
    """Run every tool call of an assistant message; returns the tool messages, in order."""
    return [
        openai_tool_result(sandbox, call, timeout=timeout)
        for call in (_get(message, "tool_calls") or [])
    ]


def anthropic_tool_result(
    sandbox: Sandbox, block: Any, *, timeout: Optional[float] = None
) -> Dict[str, Any]:
    """Run one ``tool_use`` block; returns the matching ``tool_result`` block."""
    text, is_error = run_tool(sandbox, str(_get(block, "name")), _get(block, "input"), timeout=timeout)
    return _anthropic_block(str(_get(block, "id")), text, is_error)


def anthropic_tool_results(
    sandbox: Sandbox, content: Any, *, timeout: Optional[float] = None
) -> List[Dict[str, Any]]:
    """Run every ``tool_use`` block of a response (or its ``content``); returns the
    ``tool_result`` blocks for the next user message."""
    return [anthropic_tool_result(sandbox, b, timeout=timeout) for b in _anthropic_blocks(content)]


async def async_openai_tool_result(
    sandbox: AsyncSandbox, tool_call: Any, *, timeout: Optional[float] = None
) -> Dict[str, Any]:
    call_id, name, arguments = _openai_call(tool_call)
    text = await async_handle_tool_call(sandbox, name, arguments, timeout=timeout)
    return _openai_message(call_id, text)


async def async_openai_tool_messages(
    sandbox: AsyncSandbox, message: Any, *, timeout: Optional[float] = None
) -> List[Dict[str, Any]]:
    return [
        await async_openai_tool_result(sandbox, call, timeout=timeout)
        for call in (_get(message, "tool_calls") or [])
    ]


async def async_anthropic_tool_result(
    sandbox: AsyncSandbox, block: Any, *, timeout: Optional[float] = None
) -> Dict[str, Any]:
    text, is_error = await async_run_tool(
        sandbox, str(_get(block, "name")), _get(block, "input"), timeout=timeout
    )
    return _anthropic_block(str(_get(block, "id")), text, is_error)


async def async_anthropic_tool_results(
    sandbox: AsyncSandbox, content: Any, *, timeout: Optional[float] = None
) -> List[Dict[str, Any]]:
    return [
        await async_anthropic_tool_result(sandbox, b, timeout=timeout)
        for b in _anthropic_blocks(content)
    ]


#: Ready lists (fresh copies are also available from the functions above).
TOOLS: List[Dict[str, Any]] = tool_definitions()
OPENAI_TOOLS: List[Dict[str, Any]] = openai_tools()
ANTHROPIC_TOOLS: List[Dict[str, Any]] = anthropic_tools()

__all__ = [
    "EXECUTE_PYTHON",
    "WRITE_FILE",
    "READ_FILE",
    "INSTALL_PACKAGES",
    "TOOLS",
    "OPENAI_TOOLS",
    "ANTHROPIC_TOOLS",
    "tool_definitions",
    "openai_tools",
    "anthropic_tools",
    "format_execution",
    "run_tool",
    "async_run_tool",
    "handle_tool_call",
    "async_handle_tool_call",
    "openai_tool_result",
    "openai_tool_messages",
    "anthropic_tool_result",
    "anthropic_tool_results",
    "async_openai_tool_result",
    "async_openai_tool_messages",
    "async_anthropic_tool_result",
    "async_anthropic_tool_results",
]


# -- stateful: one interpreter per conversation ----------------------------------------------

#: ``execute_python`` for a :class:`ToolSession`: state carries over between calls.
EXECUTE_PYTHON_STATEFUL: Dict[str, Any] = {
    "name": "execute_python",
    "description": (
        "Execute Python code in a persistent interpreter in a secure sandbox, like a notebook "
        "cell: variables, imports and open files carry over between calls; the value of the "
        "last expression is shown, and matplotlib figures come back as images"
    ),
    "parameters": {
        "type": "object",
        "properties": {"code": {"type": "string", "description": "Python code to execute"}},
        "required": ["code"],
    },
}


class ToolSession:
    """The tools of one conversation: ``execute_python`` runs in one context of ``sandbox``
    (created on first use, restarted if a timeout or a crash killed it); the other tools are
    :func:`run_tool`'s. Images in results reach the model as image content."""

    def __init__(self, sandbox: Sandbox, *, timeout: Optional[float] = None) -> None:
        self.sandbox = sandbox
        self.timeout = timeout
        self.context: Optional[Context] = None

    @staticmethod
    def openai_tools(*, files: bool = True, install: bool = True) -> List[Dict[str, Any]]:
        tools = [EXECUTE_PYTHON_STATEFUL] + tool_definitions(files=files, install=install)[1:]
        return [{"type": "function", "function": copy.deepcopy(t)} for t in tools]

    @staticmethod
    def anthropic_tools(*, files: bool = True, install: bool = True) -> List[Dict[str, Any]]:
        tools = [EXECUTE_PYTHON_STATEFUL] + tool_definitions(files=files, install=install)[1:]
        return [
            {"name": t["name"], "description": t["description"], "input_schema": copy.deepcopy(t["parameters"])}
            for t in tools
        ]

    def execute(self, code: str) -> Tuple[str, bool, Optional[ExecutionResult]]:
        """Runs ``code`` in the conversation's context: (text, is_error, the result)."""
        if self.context is None:
            self.context = self.sandbox.create_context()
        elif self.context.info.status == "dead":
            self.context.restart()
        try:
            result = self.context.run(code, self.timeout)
        except TimeoutError as e:
            if "restart" in str(e):
                self.context.info.status = "dead"
            return f"Error: execution timed out ({e})", True, None
        if "restart the context" in result.error:
            self.context.info.status = "dead"  # restarted on the next call
        return format_execution(result), result.exit_code != 0, result

    def run_tool(self, name: str, arguments: ToolCallArguments) -> Tuple[str, bool, Optional[ExecutionResult]]:
        if name in EXECUTE_NAMES:
            try:
                return self.execute(_string(_parse_arguments(name, arguments), "code"))
            except _ToolInputError as e:
                return f"Error: {e}", True, None
            except CerverError as e:
                _reraise_if_fatal(e)
                return f"Error: {e}", True, None
        text, is_error = run_tool(self.sandbox, name, arguments, timeout=self.timeout)
        return text, is_error, None

    def anthropic_tool_result(self, block: Any) -> Dict[str, Any]:
        """Runs one ``tool_use`` block; the ``tool_result`` carries images as image blocks."""
        text, is_error, result = self.run_tool(str(_get(block, "name")), _get(block, "input"))
        out = _anthropic_block(str(_get(block, "id")), text, is_error)
        if result is not None and any(r.png or r.jpeg for r in result.results):
            out["content"] = anthropic_content(result, text)
        return out

    def anthropic_tool_results(self, content: Any) -> List[Dict[str, Any]]:
        return [self.anthropic_tool_result(b) for b in _anthropic_blocks(content)]

    def openai_messages(self, message: Any) -> List[Dict[str, Any]]:
        """Runs every tool call of an assistant message: the ``tool`` messages (text), then one
        ``user`` message with the images the calls produced, if any (OpenAI's tool messages
        take no images)."""
        messages: List[Dict[str, Any]] = []
        images: List[Dict[str, Any]] = []
        for call in _get(message, "tool_calls") or []:
            call_id, name, arguments = _openai_call(call)
            text, _is_error, result = self.run_tool(name, arguments)
            messages.append(_openai_message(call_id, text))
            if result is not None:
                images += openai_content(result, "")[1:]
        if images:
            note = {"type": "text", "text": "Images produced by the code above:"}
            messages.append({"role": "user", "content": [note] + images})
        return messages

    def close(self) -> None:
        """Ends the conversation's interpreter (the sandbox stays)."""
        if self.context is not None:
            try:
                self.context.delete()
            except CerverError:
                pass
            self.context = None


class AsyncToolSession:
    """:class:`ToolSession` for an :class:`AsyncSandbox`."""

    def __init__(self, sandbox: AsyncSandbox, *, timeout: Optional[float] = None) -> None:
        self.sandbox = sandbox
        self.timeout = timeout
        self.context: Optional[AsyncContext] = None

    openai_tools = staticmethod(ToolSession.openai_tools)
    anthropic_tools = staticmethod(ToolSession.anthropic_tools)

    async def execute(self, code: str) -> Tuple[str, bool, Optional[ExecutionResult]]:
        if self.context is None:
            self.context = await self.sandbox.create_context()
        elif self.context.info.status == "dead":
            await self.context.restart()
        try:
            result = await self.context.run(code, self.timeout)
        except TimeoutError as e:
            if "restart" in str(e):
                self.context.info.status = "dead"
            return f"Error: execution timed out ({e})", True, None
        if "restart the context" in result.error:
            self.context.info.status = "dead"
        return format_execution(result), result.exit_code != 0, result

    async def run_tool(
        self, name: str, arguments: ToolCallArguments
    ) -> Tuple[str, bool, Optional[ExecutionResult]]:
        if name in EXECUTE_NAMES:
            try:
                return await self.execute(_string(_parse_arguments(name, arguments), "code"))
            except _ToolInputError as e:
                return f"Error: {e}", True, None
            except CerverError as e:
                _reraise_if_fatal(e)
                return f"Error: {e}", True, None
        text, is_error = await async_run_tool(self.sandbox, name, arguments, timeout=self.timeout)
        return text, is_error, None

    async def anthropic_tool_results(self, content: Any) -> List[Dict[str, Any]]:
        out = []
        for block in _anthropic_blocks(content):
            text, is_error, result = await self.run_tool(str(_get(block, "name")), _get(block, "input"))
            item = _anthropic_block(str(_get(block, "id")), text, is_error)
            if result is not None and any(r.png or r.jpeg for r in result.results):
                item["content"] = anthropic_content(result, text)
            out.append(item)
        return out

    async def close(self) -> None:
        if self.context is not None:
            try:
                await self.context.delete()
            except CerverError:
                pass
            self.context = None
