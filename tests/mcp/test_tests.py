"""Test runs over MCP: a build's ISO booted in a throwaway VM, every declared
check run through the guest agent, the caller's own checks added, results
with their evidence (and as JUnit), a run stopped midway, the VM always gone."""

from __future__ import annotations

import asyncio
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import ofmcp
from ofmcp import ok, tool_error
from test_builds import STACK, wait_for_build

pytestmark = pytest.mark.anyio


async def wait_for_run(session, run_id: str, budget: float, progress: list | None = None) -> dict:
    """Poll get_test_results (with wait_seconds) until the run ends; the final results."""
    return await ofmcp.wait_until_done(session, "get_test_results", {"run_id": run_id}, budget, progress)


def live_test_vms(home: Path) -> list[str]:
    """QEMU processes of this server still running (test VMs carry no VM name, only an id)."""
    ps = subprocess.run(["ps", "-ww", "-eo", "stat=,args="], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if "qemu-system" in line and str(home) in line and not line.lstrip().startswith("Z")]


def vm_records(home: Path) -> list[str]:
    vms = home / "vms"
    return [p.name for p in vms.iterdir() if (p / "vm.json").exists()] if vms.exists() else []


@pytest.mark.deadline(2400)
async def test_a_stack_passes_its_declared_checks_and_a_broken_check_fails_with_evidence(connect, server):
    async with connect("http", ip="127.0.0.81") as s:
        build_id = (await ok(s, "create_build", {"recipe": STACK}))["build_id"]
        # Not completed yet: nothing to boot.
        text = await tool_error(s, "run_tests", {"build_id": build_id})
        assert "not completed" in text, text
        final = await wait_for_build(s, build_id, budget=1200)
        assert final["status"] == "completed", final

        # Bad input: every problem at once, each with its place and fix; nothing queued.
        text = await tool_error(s, "run_tests", {
            "build_id": build_id,
            "tests": ["dokcer", {"command_succeeds": "false"}, {"port_open": 70000}, {"http_get": "http://x/$(reboot)"}, {"unit_active": "a", "port_open": 1}, 7],
            "memory_mb": 10**9,
            "timeout_seconds": 5,
        })
        for wanted in ("Did you mean `docker`?", "tests[1].command_succeeds", "tests[2].port_open", "tests[3].http_get",
                       "tests[4]: one check per object", "tests[5]: expected a check name", "memory_mb:", "timeout_seconds:"):
            assert wanted in text, (wanted, text)
        text = await tool_error(s, "run_tests", {"build_id": build_id, "tests": "docker"})
        assert "tests: expected a list" in text, text
        assert (await ok(s, "list_test_runs", {"build_id": build_id}))["count"] == 0

        # Every declared check, plus two of ours: one that must pass, one that cannot.
        run = await ok(s, "run_tests", {
            "build_id": build_id,
            "tests": [
                {"http_get": "http://127.0.0.1:9100/metrics", "name": "exporter-http", "timeout_seconds": 60},
                {"command_succeeds": ["false"], "name": "broken", "timeout_seconds": 3},
            ],
            "timeout_seconds": 900,
        })
        run_id = run["run_id"]
        assert run["status"] == "queued", run
        sources = {name.split("/")[0] for name in run["checks"]}
        assert {"base", "recipe", "ssh", "docker", "monitoring", "user"} <= sources, run["checks"]
        progress: list = []
        results = await wait_for_run(s, run_id, budget=1000, progress=progress)

    assert progress and all(total == 100 for _, total, _ in progress), progress
    assert any("boot" in (m or "") for _, _, m in progress) and any("check" in (m or "") for _, _, m in progress), progress
    by_name = {c["name"]: c for c in results["checks"]}
    assert list(by_name) == run["checks"], "every check reported, in order"
    assert results["status"] == "failed", results["message"]
    assert results["message"].startswith("1 of ") and "user/broken" in results["message"], results["message"]
    not_passed = {n: (c["status"], c["message"], c["stdout"], c["stderr"]) for n, c in by_name.items() if c["status"] != "passed"}
    assert list(not_passed) == ["user/broken"], not_passed
    broken = by_name["user/broken"]
    assert broken["status"] == "failed" and broken["exit_code"] == 1 and broken["command"] == "false", broken
    assert "exit code 1" in broken["message"] and broken["attempts"] >= 2, broken
    assert by_name["user/exporter-http"]["stdout"].startswith("HTTP/1."), by_name["user/exporter-http"]
    assert results["passed"] == len(by_name) - 1 and results["failed"] == 1 and results["total"] == len(by_name)
    assert 10 < results["boot_seconds"] < results["duration_seconds"], results
    assert any("login:" in line for line in results["serial_log"]), results["serial_log"][-10:]

    async with connect("sse", ip="127.0.0.81") as s:
        junit = await ok(s, "get_test_results", {"run_id": run_id, "format": "junit"})
        suite = ET.fromstring(junit["junit_xml"]).find("testsuite")
        assert suite.get("tests") == str(len(by_name)) and suite.get("failures") == "1", junit["junit_xml"][:500]
        failed_cases = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
        assert failed_cases == ["user/broken"]
        text = await tool_error(s, "get_test_results", {"run_id": run_id, "format": "html"})
        assert "format" in text and "json or junit" in text
        listed = await ok(s, "list_test_runs", {"build_id": build_id})
        assert [r["run_id"] for r in listed["runs"]] == [run_id] and listed["runs"][0]["passed"] == len(by_name) - 1
        stopped = await ok(s, "stop_test_run", {"run_id": run_id})
        assert stopped["status"] == "failed" and "already finished" in stopped["message"], stopped

    # Another owner: nothing to see, nothing to stop, nothing to test.
    async with connect("http", ip="127.0.0.82") as other:
        for tool, args in (
            ("get_test_results", {"run_id": run_id}),
            ("stop_test_run", {"run_id": run_id}),
            ("run_tests", {"build_id": build_id}),
            ("list_test_runs", {"build_id": build_id}),
        ):
            text = await tool_error(other, tool, args)
            assert "not found" in text, (tool, text)
        assert (await ok(other, "list_test_runs", {}))["count"] == 0
        text = await tool_error(other, "get_test_results", {"run_id": "../../etc"})
        assert "not a test run id" in text, text

    # The throwaway VM is gone: no process, no record.
    assert not live_test_vms(server.home), live_test_vms(server.home)
    assert vm_records(server.home) == []

    # A run stopped midway: it ends within seconds, its VM removed, its checks skipped.
    async with connect("http", ip="127.0.0.81") as s:
        run_id = (await ok(s, "run_tests", {"build_id": build_id, "tests": ["docker"]}))["run_id"]
        deadline = time.monotonic() + 300
        while True:
            state = await ok(s, "get_test_results", {"run_id": run_id, "wait_seconds": 2})
            if state["status"] == "running" and state["stage"] == "boot" and live_test_vms(server.home):
                break
            assert time.monotonic() < deadline, state
        stopping = await ok(s, "stop_test_run", {"run_id": run_id})
        assert stopping["status"] == "running" and "Stopping" in stopping["message"], stopping
        stopped = await wait_for_run(s, run_id, budget=60)
        assert stopped["status"] == "stopped", stopped
        assert stopped["checks"] and all(c["status"] == "skipped" for c in stopped["checks"]), stopped["checks"]
    assert not live_test_vms(server.home), live_test_vms(server.home)
    assert vm_records(server.home) == []
