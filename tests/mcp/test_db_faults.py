"""Database faults, on both engines: a table another process keeps locked, and
(on PostgreSQL) a database that turns read-only under the server, as after a
failover to a standby. A write in the way is refused within the lock wait (5 s)
with a clear "try again" (never a hang, never a database's own words), nothing
is half written, reads go on, and once the fault is gone the same write works.
Prints its figures (they go into the README's reliability section)."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import ofmcp
from ofmcp import ok, tool_error

pytestmark = pytest.mark.anyio

OWNER = "127.0.6.1"
TEMPLATE = "gxp-medtech"


@pytest.fixture
def served(of_bin, tmp_path):
    home = ofmcp.make_home(of_bin, tmp_path / "home")
    srv = ofmcp.Server.start(of_bin, home, tmp_path, extra_args=("--requests-per-minute", "0"))
    yield srv
    code = srv.stop()
    assert code is not None, f"the server did not stop on SIGTERM after the fault\n{srv.stderr_tail()}"


@contextmanager
def recipes_locked(home: Path):
    """Another process holds a write lock on the recipes (readers may go on)."""
    url = ofmcp.database_url(home)
    if url is None:
        db = sqlite3.connect(home / "openfactory.db", isolation_level=None, timeout=1)
        db.execute("BEGIN IMMEDIATE")  # the write lock, held until the rollback
        try:
            yield "SQLite: another connection's BEGIN IMMEDIATE"
        finally:
            db.execute("ROLLBACK")
            db.close()
        return
    # psql holds the lock in an open transaction until its stdin closes.
    psql = subprocess.Popen(
        ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert psql.stdin and psql.stdout
    psql.stdin.write("BEGIN; LOCK TABLE recipes IN EXCLUSIVE MODE; SELECT 'locked';\n")
    psql.stdin.flush()
    line = [""]
    reader = threading.Thread(target=lambda: line.__setitem__(0, psql.stdout.readline()), daemon=True)
    reader.start()
    reader.join(10)
    assert "locked" in line[0], f"psql did not take the lock: {line[0]!r}"
    try:
        yield "PostgreSQL: another session's LOCK TABLE recipes IN EXCLUSIVE MODE"
    finally:
        psql.stdin.write("ROLLBACK;\n")
        psql.stdin.close()
        psql.wait(timeout=10)


def recipe_args(name: str) -> dict:
    return {"template_id": TEMPLATE, "name": name, "modifications": {"add_packages": ["vim"]}}


async def test_a_locked_table_refuses_writes_in_seconds_and_keeps_nothing_half_done(served):
    async with ofmcp.unwrapped(ofmcp.http_session("http", served.base, ip=OWNER)) as s:
        await ok(s, "create_recipe_from_template", recipe_args("before-lock"))
        with recipes_locked(served.home) as how:
            started = time.monotonic()
            text = await tool_error(s, "create_recipe_from_template", recipe_args("during-lock"))
            took = time.monotonic() - started
            assert "database" in text and "try again" in text, text
            assert "lock" not in text.lower() and "sql" not in text.lower(), f"the database's own words: {text}"
            # Reads go on while the lock is held.
            listed = await ok(s, "list_recipes", {})
            names = {r["name"] for r in listed["recipes"] if r.get("owner") != "catalog"}
            assert "before-lock" in names and "during-lock" not in names, names
            assert await ofmcp.healthz(served.base) == 200
        print(f"\nlocked table ({how}): a write refused after {took:.1f} s with {text!r}; reads answered meanwhile")
        assert 3 <= took <= 30, f"refused after {took:.1f} s: the lock wait is 5 s"
        # Nothing of the refused write, and once the lock is gone it works.
        assert "not found" in (await tool_error(s, "get_recipe", {"recipe_id": "during-lock"})).lower()
        await ok(s, "create_recipe_from_template", recipe_args("during-lock"))
        assert (await ok(s, "get_recipe", {"recipe_id": "during-lock"}))["id"] == "during-lock"


def set_read_only(url: str, read_only: bool) -> None:
    """Turn the database read-only (or back) for new sessions, and end the server's sessions so that its
    pool reconnects under the new rule."""
    name = url.rsplit("/", 1)[1].split("?")[0]
    rule = f"ALTER DATABASE {name} SET default_transaction_read_only = {'on' if read_only else 'off'}"
    for sql in (rule, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"):
        done = ofmcp.psql(sql)
        assert done.returncode == 0, done.stderr


async def test_a_database_turned_read_only_refuses_writes_serves_reads_and_recovers(served):
    url = ofmcp.database_url(served.home)
    if url is None:
        pytest.skip("read-only is PostgreSQL's fault (a standby after failover); SQLite's is the locked file above")
    async with ofmcp.unwrapped(ofmcp.http_session("http", served.base, ip=OWNER)) as s:
        await ok(s, "create_recipe_from_template", recipe_args("before-ro"))
        set_read_only(url, True)
        try:
            # The first call after the server's connections were cut may meet one of them; then every
            # write is refused the same way, and reads are served.
            refusals = []
            for i in range(3):
                refusals.append(await tool_error(s, "create_recipe_from_template", recipe_args(f"during-ro-{i}")))
            for text in refusals:
                assert "database" in text and "try again" in text, text
                assert "read-only" not in text and "transaction" not in text, f"the database's own words: {text}"
            listed = await ok(s, "list_recipes", {})
            names = {r["name"] for r in listed["recipes"]}
            assert "before-ro" in names and not {n for n in names if n.startswith("during-ro")}, names
        finally:
            set_read_only(url, False)
        print(f"\nread-only database: 3 writes refused ({refusals[-1]!r}), reads served; writable again at once")
        # Writable again: the server's pool reconnects by itself.
        for attempt in range(5):
            answer = await ofmcp.call(s, "create_recipe_from_template", recipe_args("after-ro"))
            if not answer.is_error:
                break
            time.sleep(0.5)
        assert (await ok(s, "get_recipe", {"recipe_id": "after-ro"}))["id"] == "after-ro"
        for i in range(3):
            assert "not found" in (await tool_error(s, "get_recipe", {"recipe_id": f"during-ro-{i}"})).lower()
