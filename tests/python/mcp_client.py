"""Drives a Cerver server's `/mcp` endpoint with the official MCP Python SDK, as any MCP client
would (a `ClientSession` with the initialize handshake, then the high-level `Client`, which
negotiates the newest protocol revision), and prints what it saw as one JSON object on the last
line of stdout (the Rust test `crates/cerver/tests/mcp.rs` asserts on it).

Usage: mcp_client.py URL API_KEY OTHER_USERS_SANDBOX_ID
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client


def summary(result):
    """The parts of a CallToolResult the test looks at."""
    return {
        "is_error": result.is_error,
        "text": [c.text for c in result.content if getattr(c, "type", None) == "text"],
        "structured": result.structured_content,
        "images": [
            {"data": c.data, "mime_type": c.mime_type}
            for c in result.content
            if getattr(c, "type", None) == "image"
        ],
    }


async def main(url: str, key: str, other_sandbox: str) -> dict:
    out: dict = {}
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30.0, read=300.0)
    )
    async with http, streamable_http_client(url, http_client=http) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["server"] = {
                "name": init.server_info.name,
                "protocol_version": init.protocol_version,
                "has_tools": init.capabilities.tools is not None,
                "instructions": init.instructions,
            }

            tools = await session.list_tools()
            out["tools"] = {
                t.name: {"description": t.description, "input_schema": t.input_schema}
                for t in tools.tools
            }

            async def call(name, **arguments):
                return summary(await session.call_tool(name, arguments))

            created = await call("create_sandbox", timeout_ms=120000, envs={"GREETING": "hi"})
            out["create"] = created
            sid = (created["structured"] or {}).get("sandbox_id")
            if sid is None:
                return out

            out["run"] = await call(
                "run_code", sandbox_id=sid, code="import os\nprint(2 ** 10, os.environ['GREETING'])"
            )
            ctx = await call("create_context", sandbox_id=sid)
            cid = (ctx["structured"] or {}).get("context_id")
            await call("run_code", sandbox_id=sid, code="kept = 41", context_id=cid)
            out["context_run"] = await call(
                "run_code", sandbox_id=sid, code="kept + 1", context_id=cid
            )
            out["run_image"] = await call(
                "run_code",
                sandbox_id=sid,
                code="from IPython.display import Image\ndisplay(Image(b'\\x89PNG-ish'))\n6 * 7",
            )
            out["write"] = await call(
                "write_file", sandbox_id=sid, path="notes/hello.txt", content="hello from mcp\n"
            )
            out["read"] = await call("read_file", sandbox_id=sid, path="notes/hello.txt")
            out["list_files"] = await call("list_files", sandbox_id=sid)
            out["run_reads_file"] = await call(
                "run_code", sandbox_id=sid, code="print(open('notes/hello.txt').read().strip().upper())"
            )
            out["run_fails"] = await call(
                "run_code", sandbox_id=sid, code="raise ValueError('boom')"
            )
            out["run_exit_3"] = await call(
                "run_code", sandbox_id=sid, code="import sys; sys.exit(3)"
            )
            out["run_timeout"] = await call(
                "run_code", sandbox_id=sid, code="import time; time.sleep(30)", timeout=0.5
            )
            out["bad_timeout"] = await call("run_code", sandbox_id=sid, code="1", timeout=-1)
            out["read_missing"] = await call("read_file", sandbox_id=sid, path="nope.txt")
            out["escape_path"] = await call(
                "write_file", sandbox_id=sid, path="../../etc/x", content="x"
            )
            out["install"] = await call("install_packages", sandbox_id=sid, packages="six")
            out["install_bad"] = await call(
                "install_packages", sandbox_id=sid, packages="--index-url http://x six"
            )
            out["list_sandboxes"] = await call("list_sandboxes")

            # Another user's sandbox is "not found" for every tool.
            out["other_run"] = await call("run_code", sandbox_id=other_sandbox, code="print(1)")
            out["other_read"] = await call("read_file", sandbox_id=other_sandbox, path="x")
            out["other_delete"] = await call("delete_sandbox", sandbox_id=other_sandbox)

            out["delete"] = await call("delete_sandbox", sandbox_id=sid)
            out["run_after_delete"] = await call("run_code", sandbox_id=sid, code="print(1)")
            out["sid"] = sid

    # The SDK's high-level client negotiates the newest protocol (2026-07-28: no initialize,
    # per-request metadata) when the server offers it.
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30.0, read=300.0)
    )
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        modern = {"protocol_version": client.protocol_version}
        created = summary(await client.call_tool("create_sandbox", {}))
        msid = created["structured"]["sandbox_id"]
        modern["run"] = summary(
            await client.call_tool("run_code", {"sandbox_id": msid, "code": "print(6 * 7)"})
        )
        modern["other_run"] = summary(
            await client.call_tool("run_code", {"sandbox_id": other_sandbox, "code": "1"})
        )
        modern["delete"] = summary(await client.call_tool("delete_sandbox", {"sandbox_id": msid}))
        out["modern"] = modern
    return out


if __name__ == "__main__":
    url, key, other = sys.argv[1:4]
    print(json.dumps(asyncio.run(main(url, key, other))))
