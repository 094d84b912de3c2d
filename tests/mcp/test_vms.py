"""VMs over MCP: from a completed build to a login prompt and back, by name,
for its owner only; every file and port released on delete."""

from __future__ import annotations

import asyncio
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

import ofmcp
from ofmcp import ok, tool_error
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
    """tests/browser/console.mjs in headless Chromium; the screenshot is kept as a test artifact."""
    shot = ofmcp.browser("console.mjs", url, str(png), timeout=120)
    assert png.stat().st_size > 10_000, "the screenshot is empty"
    ofmcp.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, ofmcp.ARTIFACTS / "vm-console.png")
    return shot


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


# --------------------------------------------------------------------------- both backends

BACKEND_ARGS = {
    "qemu": ("--vm-backend", "qemu"),
    # A pool of its own, so the test sees exactly what it made.
    "libvirt": ("--vm-backend", "libvirt", "--libvirt-pool", "openfactory-mcp-test", "--libvirt-pool-path", "/var/lib/libvirt/images/openfactory-mcp-test"),
}


def virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True).stdout


def vm_ids(home: Path) -> list[str]:
    """The host's VM records (one directory per VM id, whichever the backend)."""
    vms = home / "vms"
    return sorted(p.name for p in vms.iterdir() if (p / "vm.json").is_file()) if vms.exists() else []


def hypervisors(vm_id: str) -> list[int]:
    """Live processes running VM `vm_id` (QEMU's process name and libvirt's guest name carry the id)."""
    ps = subprocess.run(["ps", "-ww", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in ps.splitlines() if f"openfactory-vm-{vm_id}" in line and not line.split()[1].startswith("Z")]


def remove_vms(home: Path) -> None:
    """Teardown: whatever a failed test left running."""
    for vm_id in vm_ids(home):
        for pid in hypervisors(vm_id):
            subprocess.run(["kill", "-9", str(pid)], check=False)
        virsh("undefine", f"openfactory-vm-{vm_id}")


@pytest.mark.deadline(900)
@pytest.mark.parametrize("backend", ["qemu", "libvirt"])
async def test_vms_outlive_a_host_restart_and_crashes_are_reaped(of_bin, tmp_path, backend):
    if backend == "libvirt" and not Path("/var/run/libvirt/libvirt-sock").exists():
        assert not os.environ.get("OPENFACTORY_REQUIRE_LIBVIRT"), "libvirt is required here and libvirtd is not running"
        pytest.skip("no libvirt daemon (`libvirtd -d` starts one)")
    home = ofmcp.make_home(of_bin, tmp_path / "home")
    args = BACKEND_ARGS[backend]
    srv = ofmcp.Server.start(of_bin, home, tmp_path, extra_args=args)
    try:
        async with ofmcp.unwrapped(ofmcp.http_session("http", srv.base)) as s:
            build_id = (await ok(s, "create_build", {"recipe": {"name": "reap-box", "base_image": "debian-bookworm"}}))["build_id"]
            assert (await wait_for_build(s, build_id, budget=600))["status"] == "completed"
            vm = await ok(s, "create_vm", {"build_id": build_id, "name": "survivor", "memory_mb": 768})
            assert vm["backend"] == backend and vm["state"] == "running", vm
            await wait_for_console(s, "survivor", "Linux version", budget=120)
            if backend == "libvirt":
                # The console works the same: the bridge reaches libvirt's VNC server.
                url = (await ok(s, "get_vm_console_url", {"vm_name": "survivor"}))["url"]
                async with websockets.asyncio.client.connect(url.replace("http://", "ws://").replace("?", "/ws?"), subprotocols=["binary"]) as ws:
                    assert bytes(await asyncio.wait_for(ws.recv(), timeout=10)).startswith(b"RFB 003.")
        [vm_id] = vm_ids(home)
        [pid] = hypervisors(vm_id)
        assert srv.stop() is not None

        # A new host process re-attaches: same VM, same hypervisor process, still controllable.
        srv = ofmcp.Server.start(of_bin, home, tmp_path, extra_args=args)
        async with ofmcp.unwrapped(ofmcp.http_session("http", srv.base)) as s:
            [listed] = (await ok(s, "list_vms", {}))["vms"]
            assert listed["name"] == "survivor" and listed["state"] == "running", listed
            assert hypervisors(vm_id) == [pid]
            await wait_for_console(s, "survivor", "login:", budget=300)

            # The hypervisor dies under it: the reaper marks the VM, and says so.
            subprocess.run(["kill", "-9", str(pid)], check=True)
            deadline = time.monotonic() + 60
            while True:
                [listed] = (await ok(s, "list_vms", {}))["vms"]
                if listed.get("stopped_unexpectedly_at"):
                    break
                assert time.monotonic() < deadline, f"not reaped within 60 s: {listed}"
                await asyncio.sleep(2)
            assert listed["state"] == "stopped", listed
            async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as http:
                metrics = (await http.get(f"{srv.base}/metrics")).text
            assert "openfactory_vms_reaped_total 1" in metrics, [m for m in metrics.splitlines() if "reaped" in m]

            # It starts again (the mark goes), and delete leaves nothing behind.
            assert (await ok(s, "start_vm", {"vm_name": "survivor"}))["state"] == "running"
            [listed] = (await ok(s, "list_vms", {}))["vms"]
            assert "stopped_unexpectedly_at" not in listed, listed
            await ok(s, "delete_vm", {"vm_name": "survivor"})
            assert hypervisors(vm_id) == []
            assert vm_ids(home) == []
            if backend == "libvirt":
                assert f"openfactory-vm-{vm_id}" not in virsh("list", "--all", "--name")
                assert vm_id not in virsh("vol-list", "openfactory-mcp-test")

            # kill -9 during a test run: its VM booting, the host dies without a word.
            run_id = (await ok(s, "run_tests", {"build_id": build_id}))["run_id"]
            deadline = time.monotonic() + 300
            while True:
                state = await ok(s, "get_test_results", {"run_id": run_id, "wait_seconds": 2})
                # The VM's record comes first, its hypervisor a moment later
                # (libvirtd starts it): kill -9 once both are there.
                if state["status"] == "running" and state["stage"] == "boot" and vm_ids(home) and hypervisors(vm_ids(home)[0]):
                    break
                assert state["status"] in ("queued", "running") and time.monotonic() < deadline, (
                    f"no booting VM with a hypervisor within 300 s: {state}, VMs {vm_ids(home)}")
            [first] = vm_ids(home)
            assert hypervisors(first), f"the run's VM {first} has no hypervisor"
        srv.kill()  # SIGKILL: no chance to clean up

        # The restarted host puts the run back in the queue, saying why, and removes the VM of the interrupted
        # attempt (its hypervisor, its record, on libvirt its domain and volume) before it runs again.
        srv = ofmcp.Server.start(of_bin, home, tmp_path, extra_args=args)
        async with ofmcp.unwrapped(ofmcp.http_session("http", srv.base)) as s:
            state = await ok(s, "get_test_results", {"run_id": run_id})
            assert state["status"] in ("queued", "running"), state
            assert "restarted" in (state["requeued_because"] or "") and "attempt 1 of 3" in state["requeued_because"], state
            assert hypervisors(first) == [], f"the interrupted attempt's VM {first} still runs"
            assert first not in vm_ids(home), vm_ids(home)
            if backend == "libvirt":
                assert f"openfactory-vm-{first}" not in virsh("list", "--all", "--name")
                assert first not in virsh("vol-list", "openfactory-mcp-test")
            # Stopping it ends it within seconds, with nothing left.
            await ok(s, "stop_test_run", {"run_id": run_id})
            deadline = time.monotonic() + 120
            while (state := await ok(s, "get_test_results", {"run_id": run_id, "wait_seconds": 2}))["status"] in ("queued", "running"):
                assert time.monotonic() < deadline, state
            assert state["status"] == "stopped", state
            assert state["attempt"] in (1, 2), state
        assert vm_ids(home) == [], vm_ids(home)
        print(f"\nkill -9 during a test run ({backend}): requeued with {state['requeued_because']!r}; the VM of attempt 1 removed")
    finally:
        srv.stop()
        remove_vms(home)
