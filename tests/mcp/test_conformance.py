"""The official MCP conformance suite (npm @modelcontextprotocol/conformance) against the MCP server over
Streamable HTTP, in both versions `cargo xtask test` installs: 0.2 (2026-07-28 and 2025-11-25) and 0.1 (the last
release of 2025-11-25 alone). Every scenario runs (`--suite all`); the suite itself fails on any failure outside
the baseline in tests/mcp/conformance/ and on any baseline entry that now passes.

A baseline entry says why on its own line: `fixture:` for a scenario that needs the suite's own fixture tools,
resources or prompts (`test_simple_text`, `test://static-text`…), which a real server does not have, and
`not yet:` for what this server still lacks (each one an open item of the MCP issue). A fixture entry is checked:
the fixtures it names are in the suite's code and are none of this server's tools, prompts or resources."""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

import ofmcp
from test_conformance_auth import conformance_suite

pytestmark = pytest.mark.anyio

HERE = Path(__file__).parent / "conformance"
# (node_modules directory, baseline file)
SUITES = {
    "0.2": ("@modelcontextprotocol/conformance", HERE / "baseline-0.2.yml"),
    "0.1": ("conformance-0.1", HERE / "baseline-0.1.yml"),
}
ENTRY = re.compile(r"^  - ([a-z0-9-]+)\s+# (fixture|not yet): (.+)$")


def baseline(path: Path) -> dict[str, tuple[str, str]]:
    """scenario → (kind, reason); every line under `server:` must be an entry with its reason."""
    entries: dict[str, tuple[str, str]] = {}
    lines = path.read_text().splitlines()
    body = [line for line in lines if line.strip() and not line.startswith("#")]
    assert body and body[0] == "server:", f"{path}: expected `server:` first"
    for line in body[1:]:
        m = ENTRY.match(line)
        assert m, f"{path}: `{line}` is not `  - scenario  # fixture|not yet: reason`"
        assert m.group(1) not in entries, f"{path}: {m.group(1)} listed twice"
        entries[m.group(1)] = (m.group(2), m.group(3))
    return entries


@pytest.mark.deadline(600)
@pytest.mark.parametrize("version", sorted(SUITES))
async def test_the_official_conformance_suite_passes_outside_its_baseline(server, tmp_path, version):
    node, _ = conformance_suite()
    directory, baseline_file = SUITES[version]
    cli = Path(os.environ["OPENFACTORY_MCP_CLIENTS_DIR"]) / "node_modules" / directory / "dist/index.js"
    assert cli.is_file(), f"{cli} is missing (`cargo xtask test` installs conformance {version})"
    expected = baseline(baseline_file)
    out = tmp_path / "results"
    done = subprocess.run(
        [node, str(cli), "server", "--url", f"{server.base}/api/mcp", "--suite", "all", "-o", str(out),
         "--expected-failures", str(baseline_file)],
        capture_output=True, text=True, timeout=540, env={**os.environ, "NO_COLOR": "1"})
    text = done.stdout + done.stderr

    # Every check the suite saved, per scenario.
    checks: dict[str, list[dict]] = collections.defaultdict(list)
    for saved in sorted(out.glob("server-*/checks.json")):
        scenario = re.sub(r"-\d{4}-\d{2}-\d{2}T.*$", "", saved.parent.name.removeprefix("server-"))
        checks[scenario].extend(json.loads(saved.read_text()))
    assert checks, f"the suite saved no results under {out}:\n{text}"
    counts = collections.Counter(c["status"] for found in checks.values() for c in found)
    failed = {s for s, found in checks.items() if any(c["status"] == "FAILURE" for c in found)}
    print(f"conformance {version}: {len(checks)} scenarios, {counts['SUCCESS']} checks passed, "
          f"{counts['FAILURE']} failed, {counts['WARNING']} warnings; {len(failed)} scenarios fail, "
          f"{len(expected)} in the baseline ({sum(k == 'fixture' for k, _ in expected.values())} fixture, "
          f"{sum(k == 'not yet' for k, _ in expected.values())} not yet)")
    for scenario in sorted(failed):
        kind, reason = expected.get(scenario, ("UNEXPECTED", ""))
        print(f"  {kind:10} {scenario}: {reason}")
    for found in checks.values():
        for c in found:
            if c["status"] == "WARNING":
                print(f"  warning {c['id']}: {(c.get('errorMessage') or '')[:160]}")

    # A fixture entry is honest: the fixtures its reason names (in backticks) are the suite's (its code names
    # them) and are not this server's (no tool, prompt or resource template has that name).
    suite_code = cli.read_text(errors="replace")
    async with ofmcp.unwrapped(ofmcp.http_session("http", server.base, ip="127.0.0.150")) as s:
        ours = {t.name for t in (await s.list_tools()).tools} | {p.name for p in (await s.list_prompts()).prompts}
        ours |= {t.uri_template for t in (await s.list_resource_templates()).resource_templates}
    for scenario, (kind, reason) in expected.items():
        if kind != "fixture":
            continue
        named = re.findall(r"`([^`]+)`", reason)
        assert named, f"{baseline_file}: {scenario}'s reason names no fixture in backticks: {reason}"
        for fixture in named:
            assert fixture in suite_code, f"{scenario}: the suite never mentions `{fixture}`"
            assert fixture not in ours, f"{scenario}: `{fixture}` is one of this server's, not a missing fixture"
    assert failed <= set(expected), f"failures outside the baseline: {sorted(failed - set(expected))}\n{text[-4000:]}"
    assert done.returncode == 0, f"the suite exited with {done.returncode} (a stale baseline entry?):\n{text[-4000:]}"
