"""Builds over MCP, end to end: real Debian packages, a real ISO, really booted.

The first build on a machine bootstraps and caches the Debian base (a few
minutes); later ones reuse it. These tests need root and the tools that
`.ci/run` installs (mmdebstrap, squashfs-tools, GRUB, xorriso, QEMU, OVMF).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx2
import pytest

import ofmcp
from ofmcp import call, ok, tool_error

pytestmark = pytest.mark.anyio

STACK = {
    "name": "web-stack",
    "description": "Debian Bookworm server with SSH, Docker and monitoring",
    "base_image": "debian-bookworm",
    "features": ["ssh", "docker", "monitoring"],
    "packages": ["curl"],
}
HEX12 = r"^[0-9a-f]{12}$"


async def wait_for_build(session, build_id: str, budget: float, progress: list | None = None) -> dict:
    """Poll get_build_status (with wait_seconds) until the build ends; the final status."""
    return await ofmcp.wait_until_done(session, "get_build_status", {"build_id": build_id}, budget, progress)


async def wait_for_running_stage(session, build_id: str, stage: str, budget: float = 700) -> dict:
    """Poll until the build is running in `stage` (it must not end first)."""
    deadline = time.monotonic() + budget
    while True:
        status = await ok(session, "get_build_status", {"build_id": build_id, "wait_seconds": 1})
        if status["status"] == "running" and status["stage"] == stage:
            return status
        assert status["status"] in ("queued", "running"), status
        assert time.monotonic() < deadline, f"build {build_id} never reached {stage}: {status}"


def extract_build_layer(iso: Path, into: Path) -> Path:
    """The ISO's /live and /boot trees, and its top squashfs layer unpacked."""
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/live", str(into / "live"),
         "-extract", "/boot/grub/grub.cfg", str(into / "grub.cfg")],
        check=True, capture_output=True,
    )
    layer = into / "layer"
    subprocess.run(["unsquashfs", "-q", "-n", "-d", str(layer), str(into / "live/10-build.squashfs")], check=True, capture_output=True)
    return layer


def installed(layer: Path) -> set[str]:
    out = subprocess.run(
        ["dpkg-query", f"--admindir={layer}/var/lib/dpkg", "-W", "-f", "${Package} ${db:Status-Status}\n"],
        check=True, capture_output=True, text=True,
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}


def boot(iso: Path, firmware: str, serial: Path) -> subprocess.Popen:
    args = ["qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "1", "-display", "none",
            "-monitor", "none", "-serial", f"file:{serial}", "-cdrom", str(iso), "-boot", "d", "-no-reboot"]
    if firmware == "uefi":
        args += ["-bios", "/usr/share/ovmf/OVMF.fd"]
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_login(procs: dict[str, tuple[subprocess.Popen, Path]], hostname: str, budget: float) -> dict[str, float]:
    """Seconds until each VM's serial console shows the login prompt."""
    started = time.monotonic()
    seen: dict[str, float] = {}
    prompt = f"{hostname} login:".encode()
    try:
        while len(seen) < len(procs):
            for name, (proc, serial) in procs.items():
                if name in seen:
                    continue
                if serial.exists() and prompt in serial.read_bytes():
                    seen[name] = time.monotonic() - started
                elif proc.poll() is not None:
                    raise AssertionError(f"{name}: QEMU exited ({proc.returncode}) before a login prompt:\n{serial.read_bytes()[-2000:]!r}")
            if time.monotonic() - started > budget:
                tails = {n: s.read_bytes()[-1500:] if s.exists() else b"" for n, (_, s) in procs.items() if n not in seen}
                raise AssertionError(f"no login prompt within {budget} s: {tails}")
            time.sleep(1)
    finally:
        for proc, _ in procs.values():
            proc.kill()
            proc.wait(timeout=10)
    return seen


@pytest.mark.deadline(2400)
async def test_build_ssh_docker_monitoring_then_download_and_boot(connect, server, tmp_path):
    async with connect("sse", ip="127.0.0.61") as s:
        created = await ok(s, "create_build", {"recipe": STACK})
        build_id = created["build_id"]
        assert created["status"] == "queued", created
        assert created["features"] == ["ssh", "docker", "monitoring"], created
        assert len(created["recipe_digest"]) == 64

        listed = await ok(s, "list_builds", {})
        assert build_id in [b["build_id"] for b in listed["builds"]], listed

        progress: list = []
        final = await wait_for_build(s, build_id, budget=2000, progress=progress)
        assert final["status"] == "completed", f"{final}\n{server.stderr_tail()}"
        assert final["progress"] == 100
        # The client that waited saw the stages go by, as progress notifications.
        messages = " ".join(m or "" for _, _, m in progress)
        assert progress, "no progress notifications while waiting"
        assert all(total == 100 for _, total, _ in progress)
        assert [v for v, _, _ in progress] == sorted(v for v, _, _ in progress), progress
        assert "apply" in messages or "image" in messages or "finish" in messages, messages

        details = await ok(s, "get_build", {"build_id": build_id})
        assert details["status"] == "completed"
        assert ofmcp.HEX64.match(details["iso_sha256"]), details
        assert details["iso_size_bytes"] > 100 * 1024 * 1024
        assert details["recipe"]["features"] == STACK["features"]
        assert details["plan_summary"]["features"] == ["ssh", "docker", "monitoring"]
        assert details["package_count"] > 150
        assert set(details["artifacts"]) == {"image.iso", "build.log", "packages.json", "sbom.spdx.json"}
        assert set(details["result"]["stage_seconds"]) == {"bootstrap", "apply", "image", "finish"}

        log = await ok(s, "get_build_log", {"build_id": build_id, "tail_lines": 5000})
        text = "\n".join(log["lines"])
        for needle in ("==> [apply ", "docker: install docker.io", "==> done"):
            assert needle in text, needle
        assert re.search(r"==> \[apply \d+\.\ds\] step \d+/\d+: ", text), "steps are logged with the elapsed time"
        resource = await s.read_resource(f"build://{build_id}/log")
        assert "==> done" in resource.contents[0].text

        link = await ok(s, "get_iso_download_url", {"build_id": build_id})
        assert link["iso_sha256"] == details["iso_sha256"] and link["url"].startswith(server.base)
        assert link["sha256sum_line"] == f"{link['iso_sha256']}  {link['filename']}"

    # Another owner sees nothing of it.
    async with connect("http", ip="127.0.0.62") as other:
        for tool in ("get_build", "get_build_status", "get_iso_download_url", "get_build_log", "cancel_build", "retry_build"):
            text = await tool_error(other, tool, {"build_id": build_id})
            assert "not found" in text, (tool, text)
        assert build_id not in [b["build_id"] for b in (await ok(other, "list_builds", {}))["builds"]]

    # The download: ranges, checksum headers, and the whole file.
    iso = tmp_path / "web-stack.iso"
    async with httpx2.AsyncClient(trust_env=False, timeout=httpx2.Timeout(30.0, read=120.0)) as http:
        head = await http.get(link["url"], headers={"Range": "bytes=0-1023"})
        assert head.status_code == 206, head.text[:300]
        assert len(head.content) == 1024
        assert head.headers["content-range"] == f"bytes 0-1023/{link['iso_size_bytes']}"
        assert head.headers["x-checksum-sha256"] == link["iso_sha256"]
        assert link["filename"] in head.headers["content-disposition"]
        tail = await http.get(link["url"], headers={"Range": f"bytes={link['iso_size_bytes'] - 10}-"})
        assert tail.status_code == 206 and len(tail.content) == 10

        digest = hashlib.sha256()
        async with http.stream("GET", link["url"]) as r:
            assert r.status_code == 200
            with iso.open("wb") as f:
                async for chunk in r.aiter_bytes():
                    digest.update(chunk)
                    f.write(chunk)
        assert digest.hexdigest() == link["iso_sha256"]

        forged = link["url"][:-3] + ("aaa" if not link["url"].endswith("aaa") else "bbb")
        assert (await http.get(forged)).status_code == 403
        assert (await http.get(link["url"].split("?")[0])).status_code == 403

    # What the recipe asked for is in the image, and enabled.
    layer = extract_build_layer(iso, tmp_path)
    packages = installed(layer)
    for package in ("openssh-server", "docker.io", "prometheus-node-exporter", "curl", "systemd-resolved"):
        assert package in packages, package
    wants = layer / "etc/systemd/system/multi-user.target.wants"
    for unit in ("ssh.service", "docker.service", "prometheus-node-exporter.service", "openfactory-ssh-keygen.service"):
        assert (wants / unit).is_symlink(), unit
    assert not list((layer / "etc/ssh").glob("ssh_host_*")), "the image must not carry SSH host keys"
    assert (tmp_path / "live/filesystem.module").read_text() == "00-base.squashfs\n10-build.squashfs\n"
    grub = (tmp_path / "grub.cfg").read_text()
    assert "boot=live" in grub and "console=ttyS0,115200n8" in grub

    # It boots, under BIOS and under UEFI, to a login prompt on the serial console.
    procs = {fw: (boot(iso, fw, tmp_path / f"{fw}.serial"), tmp_path / f"{fw}.serial") for fw in ("bios", "uefi")}
    seen = wait_for_login(procs, "web-stack", budget=420)
    assert set(seen) == {"bios", "uefi"}


@pytest.mark.deadline(900)
async def test_a_failing_step_fails_the_build_and_names_it(connect, server):
    async with connect("sse", ip="127.0.0.63") as s:
        recipe = {"name": "broken", "base_image": "debian-bookworm", "packages": ["openfactory-no-such-package"]}
        created = await ok(s, "create_build", {"recipe": recipe})
        final = await wait_for_build(s, created["build_id"], budget=850)
        assert final["status"] == "failed", final
        assert "install openfactory-no-such-package" in final["failed_step"], final
        assert "Unable to locate package openfactory-no-such-package" in final["error"], final
        assert any("failed" in line for line in final["log_tail"]), final["log_tail"]

        text = await tool_error(s, "get_iso_download_url", {"build_id": created["build_id"]})
        assert "failed, not completed" in text, text
        async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as http:
            metrics = (await http.get(f"{server.base}/metrics")).text
        assert re.search(r'^openfactory_builds_finished_total\{status="failed"\} [1-9]', metrics, re.M), metrics[-2000:]
        assert "openfactory_builds_running" in metrics

        retried = await ok(s, "retry_build", {"build_id": created["build_id"]})
        assert retried["build_id"] != created["build_id"] and retried["status"] == "queued"
        details = await ok(s, "get_build", {"build_id": retried["build_id"]})
        assert details["retry_of"] == created["build_id"]
        cancelled = await ok(s, "cancel_build", {"build_id": retried["build_id"]})
        assert cancelled["status"] in ("cancelled", "running"), cancelled
        final = await wait_for_build(s, retried["build_id"], budget=300)
        assert final["status"] == "cancelled", final
        text = await tool_error(s, "cancel_build", {"build_id": retried["build_id"]})
        assert "already finished" in text, text
        text = await tool_error(s, "retry_build", {"build_id": "0" * 12})
        assert "not found" in text


async def test_invalid_recipes_and_ids_queue_nothing(connect):
    async with connect("http", ip="127.0.0.64") as s:
        text = await tool_error(s, "create_build", {"recipe": {"name": "Bad Name!", "base_image": "windows-11"}})
        assert "name" in text and "base_image" in text, text
        text = await tool_error(s, "create_build", {"recipe": "no-such-template"})
        assert "not found" in text, text
        text = await tool_error(s, "create_build", {"recipe": 42})
        assert "recipe" in text, text
        assert (await ok(s, "list_builds", {}))["count"] == 0

        for bad in ("../../etc/passwd", "a b", "x" * 10_000, "'; DROP TABLE builds; --"):
            text = await tool_error(s, "get_build", {"build_id": bad})
            assert "build_id" in text and len(text) < 400, text
        text = await tool_error(s, "list_builds", {"status_filter": "done"})
        assert "status_filter" in text and "completed" in text, text
        text = await tool_error(s, "list_builds", {"limit": 0})
        assert "limit" in text, text
        text = await tool_error(s, "get_build_status", {"build_id": "0" * 12, "wait_seconds": 3600})
        assert "wait_seconds" in text, text
        text = await tool_error(s, "get_build_log", {"build_id": "0" * 12, "tail_lines": "all"})
        assert "tail_lines" in text, text
        with pytest.raises(Exception) as err:
            await s.read_resource("build://../../etc/passwd/log")
        assert "not found" in str(err.value) or "build_id" in str(err.value)


async def test_queued_builds_count_against_a_limit(connect):
    async with connect("http", ip="127.0.0.65") as s:
        recipe = {"name": "quota", "base_image": "debian-bookworm"}
        ids = [(await ok(s, "create_build", {"recipe": recipe}))["build_id"] for _ in range(3)]
        text = await tool_error(s, "create_build", {"recipe": recipe})
        assert "limit is 3" in text and "cancel_build" in text, text
        for build_id in ids:
            await ok(s, "cancel_build", {"build_id": build_id})
        for build_id in ids:
            assert (await wait_for_build(s, build_id, budget=50))["status"] == "cancelled"
        listed = await ok(s, "list_builds", {"status_filter": "cancelled"})
        assert {b["build_id"] for b in listed["builds"]} == set(ids)
        # Finished builds no longer count.
        await ok(s, "cancel_build", {"build_id": (await ok(s, "create_build", {"recipe": recipe}))["build_id"]})


@pytest.mark.deadline(900)
async def test_a_restart_mid_build_requeues_the_build_and_leaves_nothing_mounted(of_bin, tmp_path):
    home = ofmcp.make_home(of_bin, tmp_path / "home")
    srv = ofmcp.Server.start(of_bin, home, tmp_path)
    try:
        async with ofmcp.unwrapped(ofmcp.http_session("http", srv.base)) as s:
            created = await ok(s, "create_build", {"recipe": {"name": "restart", "base_image": "debian-bookworm", "packages": ["curl"]}})
            build_id = created["build_id"]
            await wait_for_running_stage(s, build_id, "apply")
        srv.kill()  # SIGKILL: no chance to clean up
    finally:
        srv.kill()
    srv = ofmcp.Server.start(of_bin, home, tmp_path)
    try:
        async with ofmcp.unwrapped(ofmcp.http_session("http", srv.base)) as s:
            # The restarted host's worker knows the lease was its own: the build
            # is back in the queue at once (its second attempt), saying why.
            status = await ok(s, "get_build_status", {"build_id": build_id})
            assert status["status"] in ("queued", "running"), status
            assert status["attempt"] in (1, 2), status
            assert "restarted" in (status["requeued_because"] or ""), status
            assert "attempt 1 of 3" in status["requeued_because"], status
            await ok(s, "cancel_build", {"build_id": build_id})
            assert (await wait_for_build(s, build_id, budget=120))["status"] == "cancelled"
        mounts = Path("/proc/self/mounts").read_text()
        assert str(home) not in mounts, [m for m in mounts.splitlines() if str(home) in m]
        work = home / "work"
        assert not work.exists() or not any(work.iterdir()), list(work.iterdir())
    finally:
        assert srv.stop() is not None


def test_tools_are_installed():
    for tool in ("mmdebstrap", "mksquashfs", "unsquashfs", "grub-mkrescue", "xorriso", "qemu-system-x86_64"):
        assert shutil.which(tool), f"{tool} is missing (.ci/run installs it)"
    assert Path("/usr/share/ovmf/OVMF.fd").exists()


@pytest.mark.deadline(900)
async def test_cancelling_a_running_build_stops_it_and_cleans_up(connect, server):
    async with connect("sse", ip="127.0.0.66") as s:
        recipe = {"name": "cancel-me", "base_image": "debian-bookworm", "packages": ["curl", "git"]}
        build_id = (await ok(s, "create_build", {"recipe": recipe}))["build_id"]
        await wait_for_running_stage(s, build_id, "apply")
        answer = await ok(s, "cancel_build", {"build_id": build_id})
        assert answer["status"] == "running" and "requested" in answer["message"].lower(), answer
        final = await wait_for_build(s, build_id, budget=120)
        assert final["status"] == "cancelled", final
        text = await tool_error(s, "get_iso_download_url", {"build_id": build_id})
        assert "cancelled" in text
    mounts = Path("/proc/self/mounts").read_text()
    assert str(server.home / "work") not in mounts
    work = server.home / "work"
    assert not work.exists() or not any(work.iterdir()), list(work.iterdir())


def processes_of(*places: Path, besides: int) -> dict[int, str]:
    """Live processes working in any of `places` (other than `besides`, the server): by their command line,
    working directory or root (a chroot), so that one a cancel left behind is found even after it was
    reparented away from the server."""
    found: dict[int, str] = {}
    marks = [str(p) for p in places]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), besides):
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            where = [cmdline, os.readlink(entry / "cwd"), os.readlink(entry / "root")]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if any(mark in w for w in where for mark in marks):
            found[int(entry.name)] = cmdline[:200]
    return found


@pytest.mark.deadline(600)
async def test_cancelling_a_cold_bootstrap_removes_every_process_of_the_build(of_bin, tmp_path):
    """The bootstrap (mmdebstrap, and the apt and dpkg it starts) runs in a PID namespace of its own: cancel
    takes the whole tree down, not only its first process."""
    home = ofmcp.make_home(of_bin, tmp_path / "home")
    cache = tmp_path / "cold-cache"  # nothing bootstrapped yet: the build starts with mmdebstrap
    srv = ofmcp.Server.start(of_bin, home, tmp_path, extra_args=("--cache", str(cache)))
    try:
        async with ofmcp.unwrapped(ofmcp.http_session("http", srv.base)) as s:
            recipe = {"name": "cold-cancel", "base_image": "debian-bookworm", "packages": ["curl"]}
            build_id = (await ok(s, "create_build", {"recipe": recipe}))["build_id"]
            await wait_for_running_stage(s, build_id, "bootstrap", budget=120)
            # Wait until the bootstrap is deep in its tree: apt or dpkg at work under mmdebstrap.
            deadline = time.monotonic() + 240
            while True:
                tree = processes_of(cache, home, besides=srv.proc.pid)
                deep = {pid: c for pid, c in tree.items() if re.match(r"(\S*/)?(apt-get|apt|dpkg|dpkg-deb)\s|/usr/lib/apt/methods/", c)}
                if deep:
                    break
                status = await ok(s, "get_build_status", {"build_id": build_id})
                assert status["status"] == "running", status
                assert time.monotonic() < deadline, f"no apt or dpkg under the bootstrap within 240 s: {tree}"
                await asyncio.sleep(0.2)
            cancelled_at = time.monotonic()
            await ok(s, "cancel_build", {"build_id": build_id})
            final = await wait_for_build(s, build_id, budget=120)
            assert final["status"] == "cancelled", final
            # Nothing of the build is left: no process (however deep), no mount.
            while (left := processes_of(cache, home, besides=srv.proc.pid)) and time.monotonic() < cancelled_at + 15:
                await asyncio.sleep(0.2)
            gone_in = time.monotonic() - cancelled_at
            assert not left, f"processes of the cancelled build still run: {left}"
            mounts = Path("/proc/self/mounts").read_text()
            assert str(home) not in mounts and str(cache) not in mounts, [m for m in mounts.splitlines() if str(tmp_path) in m]
        print(f"\ncancel during a cold bootstrap: {len(tree)} processes of the build ({len(deep)} apt/dpkg), all gone {gone_in:.1f} s after cancel")
    finally:
        assert srv.stop() is not None


@pytest.mark.deadline(900)
async def test_a_disk_quota_refuses_builds_until_one_is_deleted(of_bin, tmp_path):
    home = ofmcp.make_home(of_bin, tmp_path / "home")
    srv = ofmcp.Server.start(of_bin, home, tmp_path, extra_args=("--max-disk-mib-per-owner", "1"))
    try:
        async with ofmcp.unwrapped(ofmcp.http_session("http", srv.base)) as s:
            recipe = {"name": "quota-box", "base_image": "debian-bookworm"}
            first = (await ok(s, "create_build", {"recipe": recipe}))["build_id"]
            text = await tool_error(s, "delete_build", {"build_id": first})
            assert "cancel_build first" in text, text
            assert (await wait_for_build(s, first, budget=600))["status"] == "completed"
            # The ISO is over the 1 MiB quota: nothing more is built until space is freed.
            text = await tool_error(s, "create_build", {"recipe": recipe})
            assert "disk quota" in text and "delete_build" in text, text
            deleted = await ok(s, "delete_build", {"build_id": first})
            assert deleted["freed_bytes"] > 100 * 2**20, deleted
            assert not (home / "builds" / first).exists()
            text = await tool_error(s, "get_build", {"build_id": first})
            assert "not found" in text, text
            text = await tool_error(s, "delete_build", {"build_id": first})
            assert "not found" in text, text
            second = (await ok(s, "create_build", {"recipe": recipe}))["build_id"]
            await ok(s, "cancel_build", {"build_id": second})
    finally:
        srv.stop()
