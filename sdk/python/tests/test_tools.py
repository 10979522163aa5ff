"""cerver.tools: the definitions' schemas, and dispatch of OpenAI- and Anthropic-shaped tool
calls (built as plain dicts and SimpleNamespace objects, no model API) against the real
server."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from cerver import AsyncSandbox, AuthenticationError, Sandbox
from cerver import tools

# As the documentation's "Tool Definition" shows it.
DOC_TOOL_DEFINITION = {
    "name": "execute_python",
    "description": "Execute Python code in a secure sandbox",
    "parameters": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "description": "Python code to execute"},
            "envs": {"type": "object", "description": "Environment variables"},
        },
        "required": ["code"],
    },
}


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox() as sandbox:
        yield sandbox


# -- schemas ---------------------------------------------------------------------------------


def test_generic_definition_is_the_documented_one() -> None:
    assert tools.EXECUTE_PYTHON == DOC_TOOL_DEFINITION
    assert tools.tool_definitions(files=False, install=False) == [DOC_TOOL_DEFINITION]
    assert [t["name"] for t in tools.TOOLS] == [
        "execute_python", "write_file", "read_file", "install_packages"
    ]


def test_definitions_are_valid_json_schema_objects() -> None:
    for tool in tools.tool_definitions():
        params = tool["parameters"]
        assert params["type"] == "object"
        assert set(params["required"]) <= set(params["properties"])
        for prop in params["properties"].values():
            assert prop["type"] in ("string", "object") and prop["description"]
        json.dumps(tool)  # serialisable as sent to a provider


def test_openai_shape() -> None:
    openai = tools.openai_tools()
    assert tools.OPENAI_TOOLS == openai
    assert openai[0] == {"type": "function", "function": DOC_TOOL_DEFINITION}
    assert all(t["type"] == "function" and set(t["function"]) == {"name", "description", "parameters"}
               for t in openai)
    assert len(tools.openai_tools(files=False, install=False)) == 1


def test_anthropic_shape() -> None:
    anthropic = tools.anthropic_tools()
    assert tools.ANTHROPIC_TOOLS == anthropic
    assert anthropic[0] == {
        "name": "execute_python",
        "description": "Execute Python code in a secure sandbox",
        "input_schema": DOC_TOOL_DEFINITION["parameters"],
    }
    assert all(set(t) == {"name", "description", "input_schema"} for t in anthropic)
    assert anthropic[0]["input_schema"]["required"] == ["code"]


def test_definitions_are_fresh_copies() -> None:
    mine = tools.openai_tools()
    mine[0]["function"]["name"] = "changed"
    assert tools.openai_tools()[0]["function"]["name"] == "execute_python"
    assert tools.EXECUTE_PYTHON["name"] == "execute_python"


# -- dispatch --------------------------------------------------------------------------------


def test_handle_tool_call_accepts_json_string_and_dict(sandbox: Sandbox) -> None:
    assert tools.handle_tool_call(sandbox, "execute_python", json.dumps({"code": "print(2 ** 100)"})) \
        == "1267650600228229401496703205376"
    assert tools.handle_tool_call(sandbox, "execute_python", {"code": "print(6 * 7)"}) == "42"
    # The documentation's examples name the tool execute_code.
    assert tools.handle_tool_call(sandbox, "execute_code", {"code": "print('doc')"}) == "doc"
    # A model that sends bare code instead of JSON arguments.
    assert tools.handle_tool_call(sandbox, "execute_python", "print('bare')") == "bare"


def test_execute_with_envs_errors_and_no_output(sandbox: Sandbox) -> None:
    code = "import os\nprint(os.environ['TOKEN'])"
    assert tools.handle_tool_call(sandbox, "execute_python", {"code": code, "envs": {"TOKEN": "t1"}}) == "t1"
    text, is_error = tools.run_tool(sandbox, "execute_python", {"code": "print('partial')\n1/0"})
    assert is_error
    assert text.startswith("partial\n[stderr]\nTraceback")
    assert "ZeroDivisionError" in text and text.endswith("[exit code 1]")
    assert tools.handle_tool_call(sandbox, "execute_python", {"code": "x = 1"}) == "(no output)"


def test_bad_arguments_come_back_as_text(sandbox: Sandbox) -> None:
    assert tools.run_tool(sandbox, "execute_python", {}) == ("Error: missing string argument 'code'", True)
    assert tools.run_tool(sandbox, "read_file", "not json")[1] is True
    assert tools.run_tool(sandbox, "execute_python", {"code": "1", "envs": "x"})[1] is True
    assert tools.run_tool(sandbox, "launch_rockets", {}) == ("Error: unknown tool 'launch_rockets'", True)


def test_timeout_comes_back_as_text(sandbox: Sandbox) -> None:
    text, is_error = tools.run_tool(sandbox, "execute_python", {"code": "while True: pass"}, timeout=1)
    assert is_error and "timed out" in text


def test_file_tools(sandbox: Sandbox) -> None:
    assert tools.handle_tool_call(sandbox, "write_file", {"path": "notes/a.txt", "content": "hi there"}) \
        == "Wrote 8 bytes to notes/a.txt"
    assert tools.handle_tool_call(sandbox, "read_file", json.dumps({"path": "notes/a.txt"})) == "hi there"
    sandbox.files.write("raw.bin", b"\xff\x00")
    assert tools.handle_tool_call(sandbox, "read_file", {"path": "raw.bin"}) \
        == "(binary file raw.bin, 2 bytes, base64)\n/wA="
    text, is_error = tools.run_tool(sandbox, "read_file", {"path": "missing.txt"})
    assert is_error and text.startswith("Error: ")


def test_install_tool_reports_rejection(sandbox: Sandbox) -> None:
    text, is_error = tools.run_tool(sandbox, "install_packages", {"packages": "six; rm -rf /"})
    assert is_error and text.startswith("Error: ")


def test_fatal_errors_raise(server) -> None:
    with pytest.raises(AuthenticationError):
        tools.handle_tool_call(Sandbox(api_key="sk_live_bad"), "execute_python", {"code": "1"})


def test_openai_tool_calls_to_messages(sandbox: Sandbox) -> None:
    # What client.chat.completions.create(...).choices[0].message looks like.
    message = SimpleNamespace(
        role="assistant",
        content=None,
        tool_calls=[
            SimpleNamespace(id="call_1", type="function", function=SimpleNamespace(
                name="execute_python", arguments='{"code": "import math\\nprint(math.factorial(10))"}')),
            SimpleNamespace(id="call_2", type="function", function=SimpleNamespace(
                name="write_file", arguments='{"path": "f.txt", "content": "abc"}')),
        ],
    )
    assert tools.openai_tool_messages(sandbox, message) == [
        {"role": "tool", "tool_call_id": "call_1", "content": "3628800"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Wrote 3 bytes to f.txt"},
    ]
    # The dict form (e.g. message.model_dump()) works too.
    as_dict = {"id": "call_3", "type": "function",
               "function": {"name": "read_file", "arguments": '{"path": "f.txt"}'}}
    assert tools.openai_tool_result(sandbox, as_dict) == \
        {"role": "tool", "tool_call_id": "call_3", "content": "abc"}
    assert tools.openai_tool_messages(sandbox, SimpleNamespace(tool_calls=None)) == []


def test_anthropic_tool_use_to_results(sandbox: Sandbox) -> None:
    # What client.messages.create(...) looks like.
    response = SimpleNamespace(
        stop_reason="tool_use",
        content=[
            SimpleNamespace(type="text", text="Let me compute that."),
            SimpleNamespace(type="tool_use", id="toolu_1", name="execute_python",
                            input={"code": "print(2 ** 100)"}),
            {"type": "tool_use", "id": "toolu_2", "name": "execute_python",
             "input": {"code": "raise SystemExit(4)"}},
        ],
    )
    results = tools.anthropic_tool_results(sandbox, response)
    assert results == [
        {"type": "tool_result", "tool_use_id": "toolu_1",
         "content": "1267650600228229401496703205376"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "[exit code 4]",
         "is_error": True},
    ]
    assert tools.anthropic_tool_results(sandbox, response.content) == results
    assert tools.anthropic_tool_result(sandbox, response.content[1]) == results[0]


def test_documented_examples_tool_names_dispatch(sandbox: Sandbox) -> None:
    """The docs' OpenAI/Anthropic examples define `execute_code` with only `code`."""
    block = SimpleNamespace(type="tool_use", id="t", name="execute_code", input={"code": "print(2**10)"})
    assert tools.anthropic_tool_result(sandbox, block)["content"] == "1024"


async def test_async_dispatch() -> None:
    async with AsyncSandbox() as sandbox:
        assert await tools.async_handle_tool_call(sandbox, "execute_python", '{"code": "print(1+1)"}') == "2"
        message = {"tool_calls": [{"id": "c", "function": {"name": "execute_python",
                                                           "arguments": '{"code": "print(3)"}'}}]}
        assert await tools.async_openai_tool_messages(sandbox, message) == \
            [{"role": "tool", "tool_call_id": "c", "content": "3"}]
        blocks = [{"type": "tool_use", "id": "u", "name": "write_file",
                   "input": {"path": "a.txt", "content": "zz"}}]
        assert await tools.async_anthropic_tool_results(sandbox, blocks) == \
            [{"type": "tool_result", "tool_use_id": "u", "content": "Wrote 2 bytes to a.txt"}]
