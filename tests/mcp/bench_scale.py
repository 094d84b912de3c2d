"""Throughput of warm builds with one and with two `openfactory worker` processes, each pinned to one core
(`taskset`), on PostgreSQL; run by `cargo xtask bench-scale`. Goal: two workers give at least 1.7× the
throughput of one. Prints the figures; exits non-zero only when it could not measure."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import ofmcp
import test_scale_out as so

BUILDS = int(os.environ.get("OPENFACTORY_BENCH_BUILDS", "4"))
GOAL = 1.7


async def run(c: so.Cluster, n: int, tag: str) -> float:
    async with so.session(c) as s:
        started = time.monotonic()
        ids = []
        for i in range(n):
            recipe = {"name": f"bench-{tag}-{i}", "base_image": "debian-bookworm", "packages": ["less"]}
            ids.append((await ofmcp.ok(s, "create_build", {"recipe": recipe}))["build_id"])
        for build in ids:
            done = await ofmcp.wait_until_done(s, "get_build_status", {"build_id": build}, 1800)
            assert done["status"] == "completed", done
        return time.monotonic() - started


async def main() -> int:
    of_bin = ofmcp.binary()
    if ofmcp.database_kind() != "postgres":
        print("bench-scale: needs OPENFACTORY_TEST_DATABASE=postgres", file=sys.stderr)
        return 2
    ofmcp.check_postgres()
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    (tmp / "databases").mkdir()
    launcher = ofmcp.postgres_launcher(of_bin, tmp / "databases")
    home = ofmcp.make_home(launcher, tmp / "control-plane")
    net = so.Net(host="127.0.0.1")
    c = so.Cluster(launcher, home, tmp, net, ofmcp.free_port(), [], {}, {})
    results = {}
    try:
        c.control.append(so.serve(c, c.port, "control-plane", "--max-active-builds", str(BUILDS + 1)))
        # Warm the cached base first, so that both runs measure warm builds.
        c.enrol("warm")
        c.worker("warm", 0, "--jobs", "build")
        await run(c, 1, "warm")
        c.workers.pop("warm").stop()
        for workers in (1, 2):
            procs = []
            for w in range(workers):
                name = f"b{workers}-{w}"
                c.enrol(name)
                procs.append(c.worker(name, 0, "--jobs", "build", wrap=("taskset", "-c", str(w))))
            seconds = await run(c, BUILDS, f"w{workers}")
            results[workers] = BUILDS / seconds * 3600
            print(f"  {workers} worker(s): {BUILDS} warm builds in {seconds:6.1f} s  ({results[workers]:.1f} builds/hour)")
            for p in procs:
                p.stop()
    finally:
        for p in [*c.workers.values(), *c.control]:
            p.stop()
        ofmcp.drop_databases(tmp / "databases")
    ratio = results[2] / results[1]
    print(f"  throughput 2 workers / 1 worker   {ratio:.2f}×   (goal ≥ {GOAL}×)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
