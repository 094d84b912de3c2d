"""Scale-out, with real processes on real engines: PostgreSQL, one control plane
with no in-process workers, and two `openfactory worker` processes, each in its
own work directory (and, where the machine allows, its own network namespace
reaching the control plane on an address of a veth pair this test made).
Driven with the official MCP SDK.

It runs on the PostgreSQL pass of the suite (OPENFACTORY_TEST_DATABASE=postgres):
several processes share one database there, as they would across machines.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest

import ofmcp
from ofmcp import ok

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        ofmcp.database_kind() != "postgres",
        reason="scale-out needs one database shared by several processes: it runs on the PostgreSQL pass",
    ),
]

HEARTBEAT_TIMEOUT = 20  # seconds without a heartbeat before a job is requeued


# --- network namespaces -----------------------------------------------------

@dataclass
class Net:
    """Where the control plane listens, and how each worker is started (in its namespace, or not)."""
    host: str
    namespaces: list[str] = field(default_factory=list)
    nat: bool = False

    def prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[i]] if self.namespaces else []


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def make_net(tag: str, workers: int) -> Net:
    """A namespace and a veth pair per worker (10.203.<n>.2 inside, .1 outside), routed back to this
    namespace, with NAT so that builds reach the Debian mirror. Without `ip netns`, loopback."""
    if os.geteuid() != 0 or not shutil.which("ip") or _run("ip", "netns", "add", f"of-{tag}-probe").returncode != 0:
        return Net(host="127.0.0.1")
    _run("ip", "netns", "del", f"of-{tag}-probe")
    net = Net(host="10.203.1.1")
    for i in range(workers):
        ns, outside, inside = f"of-{tag}-w{i}", f"of{tag}o{i}", f"of{tag}i{i}"
        steps = [
            ("ip", "netns", "add", ns),
            ("ip", "link", "add", outside, "type", "veth", "peer", "name", inside),
            ("ip", "link", "set", inside, "netns", ns),
            ("ip", "addr", "add", f"10.203.{i + 1}.1/24", "dev", outside),
            ("ip", "link", "set", outside, "up"),
            ("ip", "netns", "exec", ns, "ip", "addr", "add", f"10.203.{i + 1}.2/24", "dev", inside),
            ("ip", "netns", "exec", ns, "ip", "link", "set", inside, "up"),
            ("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"),
            ("ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", f"10.203.{i + 1}.1"),
        ]
        for step in steps:
            done = _run(*step)
            if done.returncode != 0:
                drop_net(net, tag)
                pytest.fail(f"setting up the namespace failed at {' '.join(step)}: {done.stderr}")
        net.namespaces.append(ns)
    # Builds download packages: let the namespaces out (and only them).
    if shutil.which("iptables"):
        _run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        net.nat = _run("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.203.0.0/16", "!", "-d", "10.203.0.0/16",
                       "-j", "MASQUERADE").returncode == 0
    return net


def drop_net(net: Net, tag: str) -> None:
    if net.nat:
        _run("iptables", "-t", "nat", "-D", "POSTROUTING", "-s", "10.203.0.0/16", "!", "-d", "10.203.0.0/16", "-j", "MASQUERADE")
    for i, ns in enumerate(net.namespaces):
        _run("ip", "link", "del", f"of{tag}o{i}")
        _run("ip", "netns", "del", ns)


# --- processes --------------------------------------------------------------

@dataclass
class Proc:
    argv: list[str]
    log: Path
    proc: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> "Proc":
        self.proc = subprocess.Popen(self.argv, env={**ofmcp.server_env(), **self.env}, stdin=subprocess.DEVNULL,
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30) -> int | None:
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def tail(self, n: int = 3000) -> str:
        try:
            return f"--- {self.log.name} ---\n" + self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@dataclass
class Cluster:
    of_bin: str
    home: Path
    tmp: Path
    net: Net
    port: int
    control: list[Proc]
    workers: dict[str, Proc]
    tokens: dict[str, str]
    # Where the control planes keep builds' outputs (shared object storage when there is one).
    artifacts: list[str] = field(default_factory=list)
    s3_env: dict[str, str] = field(default_factory=dict)
    completed: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://{self.net.host}:{self.port}"

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.of_bin, "--home", str(self.home), *args], env=ofmcp.server_env(),
                              capture_output=True, text=True, timeout=60)

    def enrol(self, name: str) -> str:
        done = self.cli("worker-token", "create", "--name", name)
        assert done.returncode == 0, done.stderr
        token = done.stdout.strip()
        assert token.startswith("of_wkr_") and token not in done.stderr, done
        self.tokens[name] = token
        return token

    def worker(self, name: str, index: int, *extra: str, wrap: tuple[str, ...] = ()) -> Proc:
        home = self.tmp / f"worker-{name}"
        home.mkdir(exist_ok=True)
        argv = [*self.net.prefix(index % max(1, len(self.net.namespaces))), *wrap, self.of_bin, "--home", str(home),
                "worker", "--server", self.base, "--token", self.tokens[name], *extra]
        proc = Proc(argv, self.tmp / f"worker-{name}.log").start()
        self.workers[name] = proc
        return proc

    def rows(self, sql: str) -> list[tuple[str, ...]]:
        return ofmcp.db_rows(self.home, sql)

    def logs(self) -> str:
        return "\n".join(p.tail() for p in [*self.control, *self.workers.values()])


def serve(c: "Cluster", port: int, name: str, *extra: str) -> Proc:
    host = c.net.host
    argv = [c.of_bin, "--home", str(c.home), "serve", "--listen", f"{host}:{port}", "--allowed-host", f"{host}:{port}",
            "--build-concurrency", "0", "--test-concurrency", "0", *c.artifacts, *extra,
            "--heartbeat-timeout-seconds", str(HEARTBEAT_TIMEOUT), "--requests-per-minute", "0",
            # A private test network: its callers work as their addresses (off the loopback the default is off).
            "--anonymous", "ip"]
    proc = Proc(argv, c.tmp / f"{name}.log", env=c.s3_env).start()
    deadline = time.monotonic() + 60
    with httpx2.Client(trust_env=False, timeout=2.0) as c:
        while True:
            assert proc.alive(), proc.tail()
            try:
                if c.get(f"http://{host}:{port}/healthz").status_code == 200:
                    return proc
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, proc.tail()
            time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(of_bin, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scale-out")
    home = ofmcp.make_home(of_bin, tmp / "control-plane")
    tag = f"{os.getpid() % 10000}"
    net = make_net(tag, workers=2)
    port = ofmcp.free_port()
    c = Cluster(of_bin, home, tmp, net, port, [], {}, {})
    endpoint = os.environ.get("OPENFACTORY_TEST_S3_ENDPOINT")
    if endpoint:
        c.artifacts = ["--artifacts", f"s3://{os.environ['OPENFACTORY_TEST_S3_BUCKET']}/scale-out-{os.getpid()}-{time.time_ns()}"]
        c.s3_env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": os.environ["OPENFACTORY_TEST_S3_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": os.environ["OPENFACTORY_TEST_S3_SECRET_ACCESS_KEY"],
            "AWS_REGION": os.environ.get("OPENFACTORY_TEST_S3_REGION", "garage"),
        }
    elif os.environ.get("OPENFACTORY_REQUIRE_S3") == "1":
        pytest.fail("OPENFACTORY_REQUIRE_S3=1 but OPENFACTORY_TEST_S3_ENDPOINT is unset (`cargo xtask garage` starts one)")
    try:
        c.control.append(serve(c, port, "control-plane"))
        for i, name in enumerate(["w1", "w2"]):
            c.enrol(name)
            c.worker(name, i, "--jobs", "build,test")
        yield c
    finally:
        for p in [*c.workers.values(), *c.control]:
            p.stop()
        drop_net(net, tag)


def session(c: Cluster, base: str | None = None):
    return ofmcp.unwrapped(ofmcp.http_session("http", base or c.base, ip=c.net.host))


async def wait_for(predicate, budget: float, what: str, c: Cluster):
    deadline = time.monotonic() + budget
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {budget} s\n{c.logs()}"
        await asyncio.sleep(1)


async def download_sha256(c: Cluster, s, build_id: str) -> tuple[str, str]:
    link = await ok(s, "get_iso_download_url", {"build_id": build_id})
    digest = hashlib.sha256()
    async with httpx2.AsyncClient(trust_env=False, follow_redirects=True, timeout=httpx2.Timeout(30.0, read=120.0)) as http:
        async with http.stream("GET", link["url"]) as r:
            assert r.status_code == 200, await r.aread()
            async for chunk in r.aiter_bytes():
                digest.update(chunk)
    return digest.hexdigest(), link["iso_sha256"]


@pytest.mark.deadline(1500)
async def test_two_workers_build_at_once_survive_a_kill_and_run_tests(cluster):
    c = cluster
    recipe = lambda name, pkg: {"name": name, "base_image": "debian-bookworm", "packages": [pkg]}
    async with session(c) as s:
        # a installs more, so that it is still applying when its worker is killed.
        a = (await ok(s, "create_build", {"recipe": {**recipe("scale-a", "less"), "packages": ["less", "python3", "vim"]}}))["build_id"]
        b = (await ok(s, "create_build", {"recipe": recipe("scale-b", "curl")}))["build_id"]

        # Both run at the same time, one on each worker.
        async def both_running():
            rows = dict((r[0], r) for r in c.rows(f"SELECT id, status, worker FROM builds WHERE id IN ('{a}', '{b}')"))
            running = [rows[x] for x in (a, b) if rows.get(x, ("", ""))[1] == "running"]
            return len(running) == 2 and {r[2] for r in running} == {"worker:w1", "worker:w2"} and rows
        rows = await wait_for(both_running, 180, "both builds running on the two workers", c)
        victim = rows[a][2].removeprefix("worker:")
        survivor = "w2" if victim == "w1" else "w1"

        # A worker that cannot run a job never gets it: with both workers busy, a third build waits,
        # and a claim from a machine with too little disk (or another architecture) comes back empty.
        third = (await ok(s, "create_build", {"recipe": recipe("scale-c", "htop")}))["build_id"]
        c.enrol("small")
        async with httpx2.AsyncClient(trust_env=False, timeout=60) as http:
            for caps in ({"arch": "amd64", "kvm": False, "free_disk_bytes": 64 << 20, "cores": 1},
                         {"arch": "arm64", "kvm": False, "free_disk_bytes": 1 << 40, "cores": 8}):
                r = await http.post(f"{c.base}/api/worker/v1/claim", headers={"Authorization": f"Bearer {c.tokens['small']}"},
                                    json={"kinds": ["build", "test_run"], "capabilities": caps, "wait_seconds": 0})
                assert r.status_code == 204, (caps, r.status_code, r.text)
        assert c.rows(f"SELECT status FROM builds WHERE id = '{third}'") == [("queued",)]
        await ok(s, "cancel_build", {"build_id": third})

        # kill -9 the worker of build a once it is applying: a is requeued and finished by the other.
        await wait_for(lambda: _stage_is(c, a, "apply"), 300, f"build {a} reaching apply", c)
        c.workers[victim].kill9()
        done_a = await ofmcp.wait_until_done(s, "get_build_status", {"build_id": a}, 900)
        done_b = await ofmcp.wait_until_done(s, "get_build_status", {"build_id": b}, 600)
        assert done_a["status"] == "completed", (done_a, c.logs())
        assert done_b["status"] == "completed", (done_b, c.logs())
        assert done_a["attempt"] == 2, done_a
        assert "no heartbeat" in done_a["requeued_because"] and f"worker:{victim}" in done_a["requeued_because"], done_a
        assert c.rows(f"SELECT worker FROM builds WHERE id = '{a}'") == [(f"worker:{survivor}",)]
        log = (await s.read_resource(f"build://{a}/log")).contents[0].text
        assert "attempt 2" in log and "requeued after" in log, log[:2000]

        # Both ISOs download from the control plane with the right SHA-256.
        for build in (a, b):
            got, want = await download_sha256(c, s, build)
            assert got == want, build
        c.completed.append(b)

        # A test run happens on a worker, and its VM is gone afterwards.
        c.worker(victim, 0 if victim == "w1" else 1, "--jobs", "build,test")
        run = await ok(s, "run_tests", {"build_id": b})
        result = await ofmcp.wait_until_done(s, "get_test_results", {"run_id": run["run_id"]}, 600)
        assert result["status"] == "passed", (result, c.logs())
        ran_on, vm = c.rows(f"SELECT worker, vm_id FROM test_runs WHERE id = '{run['run_id']}'")[0]
        assert ran_on.startswith("worker:"), ran_on
        worker_home = c.tmp / f"worker-{ran_on.removeprefix('worker:')}"
        vms = worker_home / "vms"
        assert not vms.exists() or not any(vms.iterdir()), list(vms.iterdir())
        assert subprocess.run(["pgrep", "-f", vm], capture_output=True).returncode == 1, f"a process of VM {vm} remains"


async def _stage_is(c: Cluster, build: str, stage: str) -> bool:
    rows = c.rows(f"SELECT status, stage FROM builds WHERE id = '{build}'")
    assert rows and rows[0][0] in ("queued", "running"), rows
    return rows[0] == ("running", stage)


@pytest.mark.deadline(300)
async def test_a_revoked_worker_is_refused_at_once_and_stops(cluster):
    c = cluster
    c.enrol("revoked")
    proc = c.worker("revoked", 0, "--jobs", "test")
    await wait_for(lambda: _said(proc, "is taking"), 60, "the worker starting", c)
    done = c.cli("worker-token", "revoke", "revoked")
    assert done.returncode == 0 and "revoked" in done.stdout, done
    async with httpx2.AsyncClient(trust_env=False, timeout=30) as http:
        r = await http.get(f"{c.base}/api/worker/v1/whoami", headers={"Authorization": f"Bearer {c.tokens['revoked']}"})
        assert r.status_code == 401 and "revoked" in r.json()["error"], r.text
        r = await http.post(f"{c.base}/api/worker/v1/claim", headers={"Authorization": "Bearer of_wkr_" + "0" * 40},
                            json={"kinds": ["build"], "capabilities": {"arch": "amd64", "kvm": False, "free_disk_bytes": 1, "cores": 1}, "wait_seconds": 0})
        assert r.status_code == 401, r.text
        # Hostile input gets a clear error naming the field, never a parser's words about Rust types.
        r = await http.post(f"{c.base}/api/worker/v1/claim", headers={"Authorization": f"Bearer {c.tokens['w1']}"},
                            content=b'{"kinds": ["build"], "capabilities": {"arch": 5}}')
        assert r.status_code == 400 and "arch" in r.json()["error"] and "invalid type" not in r.json()["error"], r.text
    # Its claim in flight ends within the long poll; the next is refused and the worker stops.
    deadline = time.monotonic() + 60
    while proc.alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert not proc.alive() and proc.proc.returncode == 3, proc.tail()
    assert "refused" in proc.tail()
    listed = c.cli("worker-token", "list").stdout
    assert "revoked" in listed and "of_wkr_" in listed and c.tokens["revoked"] not in listed, listed


async def _said(proc: Proc, text: str) -> bool:
    return text in proc.tail(20000)


@pytest.mark.deadline(300)
async def test_a_second_control_plane_serves_the_same_owners(cluster):
    c = cluster
    port = ofmcp.free_port()
    second = serve(c, port, "control-plane-2")
    c.control.append(second)
    other = f"http://{c.net.host}:{port}"
    async with session(c) as s1, session(c, other) as s2:
        created = await ok(s1, "create_build", {"recipe": {"name": "two-planes", "base_image": "debian-bookworm"}})
        build = created["build_id"]
        # Created through one, visible and cancellable through the other (stateless Streamable HTTP on both).
        seen = await ok(s2, "get_build_status", {"build_id": build})
        assert seen["build_id"] == build
        await ok(s2, "cancel_build", {"build_id": build})
        status = await ofmcp.wait_until_done(s1, "get_build_status", {"build_id": build}, 120)
        assert status["status"] == "cancelled", status
        listed = {b["build_id"] for b in (await ok(s2, "list_builds", {}))["builds"]}
        assert build in listed
        # A build made through the first downloads through the second, from the shared object storage.
        if c.artifacts and c.completed:
            got, want = await download_sha256(c, s2, c.completed[0])
            assert got == want



def _received(port: int) -> dict[str, int]:
    """Bytes each connection to the control plane's port has received so far, by the peer's address."""
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    got: dict[str, int] = {}
    peer = None
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and ":" in fields[-1] and not line.startswith("\t") and not line.startswith(" "):
            peer = fields[-1]
        for f in fields:
            if f.startswith("bytes_received:") and peer:
                got[peer] = int(f.split(":")[1])
    return got


@pytest.mark.deadline(900)
async def test_a_control_plane_killed_during_an_upload_loses_nothing(cluster):
    """kill -9 the control plane while a worker streams a build's ISO to it, start it again on its address:
    the worker tries the upload again (or the build is requeued), the build completes, and what is stored is
    the whole ISO with its SHA-256; no partial file is left or shown."""
    c = cluster
    async with session(c) as s:
        build = (await ok(s, "create_build", {"recipe": {"name": "upload-kill", "base_image": "debian-bookworm", "packages": ["less"]}}))["build_id"]
        await wait_for(lambda: _stage_is(c, build, "image"), 600, f"build {build} making its image", c)
    # Before the upload: what each connection had received. The ISO's stream shows as a climb of one of them.
    before = _received(c.port)
    plane = c.control[0]
    deadline = time.monotonic() + 600
    while True:
        climbed = {peer: n - before.get(peer, 0) for peer, n in _received(c.port).items()}
        if climbed and max(climbed.values()) > 32 << 20:
            break
        assert c.rows(f"SELECT status FROM builds WHERE id = '{build}'")[0][0] == "running", "the build ended before its upload was seen"
        assert time.monotonic() < deadline, c.logs()
        await asyncio.sleep(0.02)
    plane.kill9()
    killed_at = time.monotonic()
    read = max(climbed.values())
    assert c.rows(f"SELECT status FROM builds WHERE id = '{build}'")[0][0] == "running"
    await asyncio.sleep(1)
    c.control[0] = serve(c, c.port, "control-plane-restarted")
    async with session(c) as s:
        done = await ofmcp.wait_until_done(s, "get_build_status", {"build_id": build}, 300)
        assert done["status"] == "completed", (done, c.logs())
        retried = any("upload failed; trying again" in w.tail(200000) for w in c.workers.values())
        assert retried or done["attempt"] == 2, (done, c.logs())
        got, want = await download_sha256(c, s, build)
        assert got == want, (got, want)
    took = time.monotonic() - killed_at
    # Nothing half-written is left where the control plane keeps outputs (on S3 an unfinished multipart upload
    # is never an object).
    partial = [p for p in (c.home / "builds").rglob("*") if p.is_file() and "#" in p.name] if not c.artifacts else []
    assert not partial, partial
    print(f"\nkill -9 of the control plane during an upload ({read >> 20} MiB of the ISO received): build {done['status']} "
          f"on attempt {done['attempt']} ({'the worker tried the upload again' if retried else 'requeued'}), {took:.0f} s after the kill; ISO SHA-256 checked")
