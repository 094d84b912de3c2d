"""MCP Inspector (npm @modelcontextprotocol/inspector, its CLI mode), a real client people point at a server,
against the running server on both HTTP transports: it lists the tools (with its own schema portability check,
`--strict`), prompts and resource templates, gets a prompt, reads a resource and calls a tool, and what it
prints is what the server offers. `cargo xtask test` installs it under OPENFACTORY_MCP_CLIENTS_DIR; without it
the test fails, never skips."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ofmcp import TOOLS
from test_protocol import PROMPTS, TEMPLATES


def inspector(tmp_path: Path, url: str, transport: str, method: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    prefix = os.environ.get("OPENFACTORY_MCP_CLIENTS_DIR")
    if not prefix:
        pytest.fail("OPENFACTORY_MCP_CLIENTS_DIR is not set: `cargo xtask test` installs MCP Inspector and sets it")
    cli = Path(prefix) / "node_modules/.bin/mcp-inspector"
    assert cli.exists(), f"{cli} is missing (`cargo xtask test` installs @modelcontextprotocol/inspector)"
    done = subprocess.run(
        [str(cli), "--cli", url, "--transport", transport, "--method", method, *args],
        capture_output=True, text=True, timeout=90,
        # Its catalog of servers is a file it writes: keep it out of the home directory.
        env={**os.environ, "MCP_CATALOG_PATH": str(tmp_path / "catalog.json"), "NO_COLOR": "1"})
    if ok:
        assert done.returncode == 0, f"mcp-inspector {method} ({transport}) exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def answer(done: subprocess.CompletedProcess) -> dict:
    """The JSON the CLI printed (its last JSON document)."""
    text = done.stdout.strip()
    start = text.find("{")
    assert start >= 0, f"no JSON in:\n{done.stdout}\n{done.stderr}"
    return json.loads(text[start:])


@pytest.mark.parametrize("transport", ["http", "sse"])
def test_mcp_inspector_lists_and_calls_what_the_server_offers(server, tmp_path, transport):
    url = f"{server.base}/api/mcp" + ("/sse" if transport == "sse" else "")
    run = lambda method, *args: answer(inspector(tmp_path, url, transport, method, *args))  # noqa: E731

    # Every tool, and their schemas portable by the Inspector's own strict check (it exits 6 otherwise).
    tools = run("tools/list", "--strict")["tools"]
    assert {t["name"] for t in tools} == TOOLS, sorted(t["name"] for t in tools)
    assert all(t.get("outputSchema", {}).get("type") == "object" for t in tools), [t["name"] for t in tools if "outputSchema" not in t]

    assert {p["name"] for p in run("prompts/list")["prompts"]} == PROMPTS
    assert {t["uriTemplate"] for t in run("resources/templates/list")["resourceTemplates"]} == TEMPLATES

    got = run("prompts/get", "--prompt-name", "build_template", "--prompt-args", "template=gxp-medtech", "packages=vim,htop")
    assert "`gxp-medtech` template with these extra packages: vim, htop" in got["messages"][0]["content"]["text"], got

    read = run("resources/read", "--uri", "recipe://gxp-medtech")
    assert json.loads(read["contents"][0]["text"])["id"] == "gxp-medtech", read

    called = run("tools/call", "--tool-name", "list_recipe_categories")
    assert not called.get("isError"), called
    assert "healthcare" in {c["name"] for c in called["structuredContent"]["categories"]}, called
