"""The code interpreter from the SDK against the real server: rich results, structured errors,
contexts, the tool-content helpers and the stateful tool session."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import pytest

from cerver import AsyncSandbox, Context, Result, Sandbox, SandboxError, TimeoutError
from cerver import content, tools

FAKE_PNG = b"\x89PNG\r\n\x1a\nfake"
SHOW_PNG = f"from IPython.display import Image\ndisplay(Image({FAKE_PNG!r}))\n"


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox() as sandbox:
        yield sandbox


def test_results_and_error_info(sandbox: Sandbox) -> None:
    code = (
        "class T:\n    def _repr_html_(self): return '<b>t</b>'\n    def __repr__(self): return 'T()'\n"
        + SHOW_PNG
        + "T()"
    )
    result = sandbox.run(code)
    assert result.output == ""
    assert [r.formats() for r in result.results] == [["text", "png"], ["text", "html"]]
    image, main = result.results
    assert image.png_bytes() == FAKE_PNG and not image.is_main_result
    assert result.main_result is main and main.html == "<b>t</b>" and str(main) == "T()"

    failed = sandbox.run("{}['missing']")
    assert failed.error_info is not None
    assert (failed.error_info.name, failed.error_info.value) == ("KeyError", "'missing'")
    assert "Traceback" in failed.error_info.traceback and failed.exit_code == 1
    assert sandbox.run("print(1)").results == []


def test_streamed_results_and_one_event_per_line(sandbox: Sandbox) -> None:
    events = list(sandbox.run_stream("for i in range(3):\n    print(i)\nraise ValueError('v')"))
    assert [e.data for e in events if e.type == "stdout"] == ["0\n", "1\n", "2\n"]
    assert events[-1].error_info is not None and events[-1].error_info.name == "ValueError"
    seen: list = []
    result = sandbox.run("print('a')\n7 * 6", on_stdout=seen.append)
    assert seen == ["a\n"] and result.output == "a"
    assert result.main_result is not None and result.main_result.text == "42"


def test_contexts(sandbox: Sandbox) -> None:
    ctx = sandbox.create_context(cwd="work", envs={"K": "v"})
    assert isinstance(ctx, Context) and ctx.info.status == "running"
    ctx.run("import os\nx = 5")
    assert sandbox.run("print(x * 10, os.getcwd(), os.environ['K'])", context=ctx).output == (
        "50 /home/user/work v"
    )
    assert sandbox.run("x", context=ctx.context_id).main_result == Result(
        text="5", is_main_result=True
    )
    assert ctx.context_id in [c.context_id for c in sandbox.list_contexts()]
    with pytest.raises(TimeoutError):
        ctx.run("import time\ntime.sleep(30)", timeout=1)
    assert ctx.run("print(x)").output == "5"  # interrupted, state kept
    ctx.restart()
    assert "NameError" in ctx.run("x").error
    with pytest.raises(ValueError):
        sandbox.run("1", context=ctx, background=True)  # type: ignore[call-overload]
    assert ctx.delete()
    with pytest.raises(SandboxError):
        ctx.run("1")


async def test_async_contexts() -> None:
    async with AsyncSandbox() as sandbox:
        ctx = await sandbox.create_context()
        await ctx.run("y = [1, 2]")
        result = await sandbox.run("y + [3]", context=ctx)
        assert result.main_result is not None and result.main_result.text == "[1, 2, 3]"
        assert await ctx.delete()


def test_content_helpers(sandbox: Sandbox) -> None:
    result = sandbox.run(SHOW_PNG + "'done'")
    encoded = base64.b64encode(FAKE_PNG).decode()
    text = tools.format_execution(result)
    assert text == "[display] [image]\nOut: 'done'", text
    assert content.openai_content(result, "t") == [
        {"type": "text", "text": "t"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{encoded}"}},
    ]
    assert content.anthropic_content(result, "t")[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": encoded},
    }
    assert content.mcp_content(result, "t")[1] == {
        "type": "image", "data": encoded, "mimeType": "image/png"
    }


def test_tool_session_keeps_state_and_shows_images(sandbox: Sandbox) -> None:
    session = tools.ToolSession(sandbox, timeout=10)
    assert session.anthropic_tools()[0]["name"] == "execute_python"
    first = session.anthropic_tool_result(
        {"type": "tool_use", "id": "t1", "name": "execute_python", "input": {"code": "n = 20"}}
    )
    assert first == {"type": "tool_result", "tool_use_id": "t1", "content": "(no output)"}
    second = session.anthropic_tool_result(
        {"type": "tool_use", "id": "t2", "name": "execute_python", "input": {"code": SHOW_PNG + "n + 1"}}
    )
    assert second["content"][0]["type"] == "text" and "Out: 21" in second["content"][0]["text"]
    assert second["content"][1]["type"] == "image"
    call = SimpleNamespace(
        id="c1",
        function=SimpleNamespace(name="execute_python", arguments=json.dumps({"code": SHOW_PNG})),
    )
    messages = session.openai_messages(SimpleNamespace(tool_calls=[call]))
    assert messages[0]["role"] == "tool" and messages[0]["tool_call_id"] == "c1"
    assert messages[-1]["role"] == "user"
    assert messages[-1]["content"][1]["type"] == "image_url"
    # A crash restarts the interpreter on the next call, with the state gone.
    crashed, is_error, _ = session.run_tool("execute_python", {"code": "import os\nos._exit(1)"})
    assert is_error and "restart" in crashed
    text, is_error, _ = session.run_tool("execute_python", {"code": "print('n' in globals())"})
    assert (text, is_error) == ("False", False)
    session.close()


async def test_async_tool_session() -> None:
    async with AsyncSandbox() as sandbox:
        session = tools.AsyncToolSession(sandbox, timeout=10)
        blocks = [
            {"type": "tool_use", "id": "a", "name": "execute_python", "input": {"code": "k = 2"}},
            {"type": "tool_use", "id": "b", "name": "execute_python", "input": {"code": SHOW_PNG + "k * 3"}},
        ]
        first, second = await session.anthropic_tool_results(blocks)
        assert first["content"] == "(no output)"
        assert "Out: 6" in second["content"][0]["text"] and second["content"][1]["type"] == "image"
        await session.close()
