#!/usr/bin/env python3
"""A real MCP client for the end-to-end tests: Python's official SDK (`mcp` 2.x).

It launches the MCP server (vault-mcp) over stdio with the SDK's own stdio
transport, negotiates the protocol the SDK's way (`server/discover`, falling back
to `initialize`, unless --mode says otherwise), then serves a Rust test over its
own stdin/stdout, one JSON object per line:

    stdout, first line:  {"ready": true, "protocol_version": ..., "server_info": ..., "capabilities": ...}
                     or  {"fatal": "what went wrong"}        (then exit status 1)
    stdin:   {"id": 1, "op": "list_tools"}
             {"id": 2, "op": "call", "tool": "execute", "args": {...}, "timeout": 30}
             {"id": 3, "op": "ping"}
             {"id": 4, "op": "stats"}
    stdout:  {"id": 1, "tools": [{"name", "description", "inputSchema", "outputSchema", "annotations"}]}
             {"id": 2, "isError": false, "text": "...", "structured": {...} | null, "content": [...]}
             {"id": 3, "ok": true}
             {"id": 4, "protocol_errors": ["..."]}
             {"id": N, "error": "Type: message", "code": -32601 | null}   (a request that failed)

Requests are served concurrently (each in its own task), so answers can come
back out of order: match them by "id". "text" is the text blocks joined with
newlines. "protocol_errors" lists transport-level problems the SDK reported,
such as a line on the server's stdout that is not JSON-RPC. When stdin closes,
in-flight requests are cancelled and the SDK shuts the server down.

The server's environment is the SDK's safe default set (HOME, PATH, ...) plus
every VAULTD_* and XDG_* variable, RUST_LOG and RUST_BACKTRACE of this process.
The server's stderr goes to --server-stderr.
"""

import argparse
import json
import os
import sys
import traceback

import anyio
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client

PASSED_ENV_PREFIXES = ("VAULTD_", "XDG_")
PASSED_ENV_NAMES = ("HOME", "PATH", "LANG", "TMPDIR", "RUST_LOG", "RUST_BACKTRACE")


def dump(model):
    if model is None:
        return None
    if hasattr(model, "model_dump"):
        return model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return model


def tool_entry(tool):
    return {
        "name": tool.name,
        "title": getattr(tool, "title", None),
        "description": tool.description,
        "inputSchema": tool.input_schema,
        "outputSchema": tool.output_schema,
        "annotations": dump(tool.annotations),
    }


def call_entry(result):
    texts = [block.text for block in result.content if getattr(block, "type", None) == "text"]
    return {
        "isError": bool(result.is_error),
        "text": "\n".join(texts),
        "structured": result.structured_content,
        "content": [dump(block) for block in result.content],
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True, help="the MCP server executable (vault-mcp)")
    parser.add_argument("--server-stderr", required=True, help="file that receives the server's stderr")
    parser.add_argument("--mode", default="auto", help="SDK connect mode: auto (default), legacy, or a protocol version")
    parser.add_argument("server_args", nargs="*", help="arguments for the server (after --)")
    args = parser.parse_args()

    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(PASSED_ENV_PREFIXES) or k in PASSED_ENV_NAMES
    }
    params = StdioServerParameters(command=args.server, args=args.server_args, env=env)

    out_lock = anyio.Lock()

    async def emit(obj):
        line = json.dumps(obj, ensure_ascii=False)
        async with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    protocol_errors = []

    async def on_message(message):
        if isinstance(message, Exception):
            protocol_errors.append(f"{type(message).__name__}: {message}")

    async def handle(client, cmd):
        ident = cmd.get("id")
        try:
            op = cmd.get("op")
            if op == "list_tools":
                result = await client.list_tools()
                answer = {"tools": [tool_entry(t) for t in result.tools]}
            elif op == "call":
                result = await client.call_tool(
                    cmd["tool"], cmd.get("args") or {}, read_timeout_seconds=cmd.get("timeout")
                )
                answer = call_entry(result)
            elif op == "ping":
                await client.send_ping()
                answer = {"ok": True}
            elif op == "stats":
                answer = {"protocol_errors": list(protocol_errors)}
            else:
                answer = {"error": f"unknown op {op!r}", "code": None}
        except MCPError as e:
            answer = {"error": f"MCPError: {e.message}", "code": e.code, "data": e.data}
        except Exception as e:  # noqa: BLE001 - every failure goes back to the test
            traceback.print_exc(file=sys.stderr)
            answer = {"error": f"{type(e).__name__}: {e}", "code": None}
        await emit({"id": ident, **answer})

    with open(args.server_stderr, "ab", buffering=0) as errlog:
        try:
            async with Client(
                stdio_client(params, errlog=errlog),
                mode=args.mode,
                message_handler=on_message,
                cache=None,
            ) as client:
                await emit(
                    {
                        "ready": True,
                        "protocol_version": client.protocol_version,
                        "server_info": dump(client.server_info),
                        "capabilities": dump(client.server_capabilities),
                        "instructions": client.instructions,
                    }
                )
                async with anyio.create_task_group() as tg:
                    stdin = anyio.wrap_file(sys.stdin)
                    async for line in stdin:
                        line = line.strip()
                        if not line:
                            continue
                        try:
                            cmd = json.loads(line)
                        except ValueError as e:
                            await emit({"id": None, "error": f"bad command line: {e}", "code": None})
                            continue
                        tg.start_soon(handle, client, cmd)
                    tg.cancel_scope.cancel()
        except Exception as e:  # noqa: BLE001
            traceback.print_exc(file=sys.stderr)
            await emit({"fatal": f"{type(e).__name__}: {e}"})
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main))
