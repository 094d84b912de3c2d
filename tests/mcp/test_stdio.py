"""`openfactory mcp --stdio` at the wire level: newline-delimited JSON-RPC only, exit when stdin closes."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time

from ofmcp import TOOLS, recipes_dir, server_env


def read_line(proc: subprocess.Popen, buffer: bytearray, timeout: float = 20.0) -> bytes:
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"no line on stdout within {timeout} s (got {bytes(buffer)[:300]!r})"
            if sel.select(left):
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"stdout closed (exit {proc.poll()}) after {bytes(buffer)[:300]!r}"
                buffer.extend(chunk)
        line, _, rest = bytes(buffer).partition(b"\n")
        buffer[:] = rest
        return line
    finally:
        sel.close()


def test_stdio_wire_and_exit_on_stdin_close(of_bin, stdio_home, tmp_path):
    env = server_env()
    env["OPENFACTORY_RECIPES_DIR"] = str(recipes_dir())
    stderr = (tmp_path / "stdio.stderr").open("wb")
    proc = subprocess.Popen(
        [of_bin, "--home", str(stdio_home), "mcp", "--stdio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
    )
    buffer = bytearray()
    try:

        def send(msg: dict) -> None:
            proc.stdin.write(json.dumps(msg).encode() + b"\n")
            proc.stdin.flush()

        seen: list[dict] = []

        def reply(expected_id: int) -> dict:
            # Every line on stdout is a JSON-RPC message; keep the others, return the reply.
            while True:
                line = read_line(proc, buffer)
                try:
                    msg = json.loads(line)
                except ValueError:
                    raise AssertionError(f"non-JSON line on stdout: {line[:300]!r}")
                assert msg.get("jsonrpc") == "2.0", msg
                if msg.get("id") == expected_id:
                    return msg
                seen.append(msg)

        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}})
        init = reply(1)
        assert "result" in init, init
        assert init["result"]["capabilities"].get("tools") is not None, init
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        tools = reply(2)
        assert {t["name"] for t in tools["result"]["tools"]} == TOOLS, tools

        # A malformed line is answered with a parse error (id null) and the server keeps going.
        proc.stdin.write(b'{"jsonrpc": "2.0", "id": 3, "method": \n')
        proc.stdin.flush()
        send({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "list_recipe_categories", "arguments": {}}})
        cats = reply(4)
        assert len(cats["result"]["structuredContent"]["categories"]) == 7, cats

        proc.stdin.close()
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise AssertionError("mcp --stdio did not exit within 5 s of stdin closing")
        assert code == 0, f"mcp --stdio exited with {code}: {(tmp_path / 'stdio.stderr').read_text(errors='replace')[-2000:]}"
        rest = bytes(buffer) + proc.stdout.read()
        assert not rest.strip(), f"unexpected trailing stdout: {rest[:300]!r}"
        parse_errors = [m for m in seen if m.get("error", {}).get("code") == -32700]
        assert parse_errors and parse_errors[0].get("id") is None, f"no parse error (-32700, id null) for the malformed line; other messages: {seen}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()
