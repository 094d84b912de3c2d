"""VMs over MCP: from a completed build to a login prompt and back, by name,
for its owner only; every file and port released on delete."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx2
import pytest
import websockets
import websockets.asyncio.client
import websockets.exceptions

from ofmcp import REPO, ok, tool_error
from test_builds import wait_for_build

pytestmark = pytest.mark.anyio


async def wait_for_console(session, name: str, needle: str, budget: float) -> list[str]:
    deadline = time.monotonic() + budget
    while True:
        log = await ok(session, "get_vm_serial_log", {"vm_name": name, "tail_lines": 5000})
        if any(needle in line for line in log["lines"]):
            return log["lines"]
        assert time.monotonic() < deadline, f"no `{needle}` on {name}'s console within {budget} s: {log['lines'][-20:]}"
        await asyncio.sleep(2)


def browser_screenshot(url: str, png: Path) -> dict:
    """tests/browser/console.mjs in headless Chromium (playwright-core from OPENFACTORY_BROWSER_DIR)."""
    driver_dir = Path(os.environ.get("OPENFACTORY_BROWSER_DIR") or REPO / "target/browser")
    assert (driver_dir / "node_modules/playwright-core").is_dir(), f"playwright-core is not installed in {driver_dir} (cargo xtask test installs it)"
    script = driver_dir / "console.mjs"
    shutil.copy(REPO / "tests/browser/console.mjs", script)
    done = subprocess.run(["node", str(script), url, str(png)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"browser check failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    assert png.stat().st_size > 10_000, "the screenshot is empty"
    # Kept as a test artifact, to look at.
    artifacts = REPO / "target/test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, artifacts / "vm-console.png")
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.deadline(1200)
async def test_a_vm_from_a_build_boots_stops_starts_and_is_deleted(connect, server, tmp_path):
    async with connect("sse", ip="127.0.0.71") as s:
        build = await ok(s, "create_build", {"recipe": {"name": "vm-box", "base_image": "debian-bookworm"}})
        build_id = build["build_id"]
        # A build that is not complete has no ISO to boot.
        text = await tool_error(s, "create_vm", {"build_id": build_id, "name": "early"})
        assert "not completed" in text, text
        final = await wait_for_build(s, build_id, budget=900)
        assert final["status"] == "completed", final

        for args, field in (
            ({"build_id": build_id, "name": "../etc"}, "name"),
            ({"build_id": build_id, "name": "Web Server"}, "name"),
            ({"build_id": build_id, "name": "big", "memory_mb": 1024 * 1024 * 1024}, "memory_mb"),
            ({"build_id": build_id, "name": "many", "vcpus": 512}, "vcpus"),
            ({"build_id": "0" * 12, "name": "ghost"}, "not found"),
        ):
            text = await tool_error(s, "create_vm", args)
            assert field in text, (args, text)

        vm = await ok(s, "create_vm", {"build_id": build_id, "name": "web-1", "memory_mb": 1024, "vcpus": 1})
        assert vm["state"] == "running" and vm["build_id"] == build_id, vm
        assert vm["accelerator"] in ("kvm", "tcg")
        text = await tool_error(s, "create_vm", {"build_id": build_id, "name": "web-1"})
        assert "already have a VM named `web-1`" in text, text
        await wait_for_console(s, "web-1", "vm-box login:", budget=300)
        listed = await ok(s, "list_vms", {"build_id": build_id})
        assert [v["name"] for v in listed["vms"]] == ["web-1"] and listed["vms"][0]["state"] == "running"

        # The browser console: a page with noVNC, and a websocket that reaches the VM's VNC server.
        console = await ok(s, "get_vm_console_url", {"vm_name": "web-1"})
        url = console["url"]
        assert url.startswith(f"{server.base}/console/") and "token=" in url, console
        async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as http:
            page = await http.get(url)
            assert page.status_code == 200 and "VM console" in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert page.headers["referrer-policy"] == "no-referrer"
            assert (await http.get(f"{server.base}/console/novnc/core/rfb.js")).status_code == 200
            assert (await http.get(url[:-4] + "AAAA")).status_code == 403
            assert (await http.get(url.split("?")[0])).status_code == 403
        ws_url = url.replace("http://", "ws://").replace("?", "/ws?")
        async with websockets.asyncio.client.connect(ws_url, subprotocols=["binary"]) as ws:
            greeting = await asyncio.wait_for(ws.recv(), timeout=10)
            assert bytes(greeting).startswith(b"RFB 003.008"), greeting
        # And in a real browser: noVNC connects and draws the screen.
        shot = browser_screenshot(url, tmp_path / "console.png")
        assert shot["connected"] and shot["canvas"][0] >= 640 and shot["canvas"][1] >= 400, shot
        assert not shot["errors"], shot["errors"]
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await websockets.asyncio.client.connect(ws_url.split("?")[0] + "?token=forged", subprotocols=["binary"])
        assert refused.value.response.status_code == 403

    # Another owner: not found, for every VM tool, and nothing changes.
    async with connect("http", ip="127.0.0.72") as other:
        for tool, args in (
            ("start_vm", {"vm_name": "web-1"}),
            ("stop_vm", {"vm_name": "web-1", "force": True}),
            ("delete_vm", {"vm_name": "web-1"}),
            ("get_vm_serial_log", {"vm_name": "web-1"}),
            ("get_vm_console_url", {"vm_name": "web-1"}),
        ):
            text = await tool_error(other, tool, args)
            assert "not found" in text, (tool, text)
        assert (await ok(other, "list_vms", {}))["count"] == 0
        text = await tool_error(other, "create_vm", {"build_id": build_id, "name": "stolen"})
        assert "not found" in text, text

    async with connect("sse", ip="127.0.0.71") as s:
        assert (await ok(s, "list_vms", {}))["vms"][0]["state"] == "running"
        stopped = await ok(s, "stop_vm", {"vm_name": "web-1"})
        assert stopped["state"] == "stopped" and "ACPI" in stopped["message"], stopped
        again = await ok(s, "stop_vm", {"vm_name": "web-1"})
        assert "not running" in again["message"]
        started = await ok(s, "start_vm", {"vm_name": "web-1"})
        assert started["state"] == "running"
        await wait_for_console(s, "web-1", "Linux version", budget=120)
        forced = await ok(s, "stop_vm", {"vm_name": "web-1", "force": True})
        assert forced["state"] == "stopped" and "at once" in forced["message"], forced
        await ok(s, "start_vm", {"vm_name": "web-1"})
        text = await tool_error(s, "stop_vm", {"vm_name": "web-1", "force": "yes"})
        assert "force" in text, text

        # A console link stops working when its VM is gone.
        late = (await ok(s, "get_vm_console_url", {"vm_name": "web-1"}))["url"]
        deleted = await ok(s, "delete_vm", {"vm_name": "web-1"})
        async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as http:
            assert (await http.get(late)).status_code == 404
        assert deleted["state"] == "deleted"
        text = await tool_error(s, "delete_vm", {"vm_name": "web-1"})
        assert "not found" in text, text
        assert (await ok(s, "list_vms", {}))["count"] == 0
    vms_dir = server.home / "vms"
    assert not vms_dir.exists() or not [p for p in vms_dir.iterdir() if not p.name.startswith(".")], list(vms_dir.iterdir())
    # No QEMU of ours is left running. (An exited one may linger as a zombie
    # where PID 1 does not reap orphans, as in some containers: that holds nothing.)
    ps = subprocess.run(["ps", "-ww", "-eo", "stat=,args="], capture_output=True, text=True).stdout
    live = [line for line in ps.splitlines() if "qemu-system" in line and str(server.home) in line and not line.lstrip().startswith("Z")]
    assert not live, live
