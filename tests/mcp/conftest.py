"""Fixtures for the MCP end-to-end suite.

One `openfactory serve` process is shared by the whole session (its HOME is a
fresh temporary directory with the project's plugins installed through the
CLI). Tests that need a process of their own (stdio, shutdown) start it
themselves from the same kind of HOME.

Environment:
  OPENFACTORY_BIN            the binary (default <repo>/target/debug/openfactory)
  OPENFACTORY_PROJECT_KEY    public key to trust (default <repo>/target/signing/project.pub)
  OPENFACTORY_BUNDLES        directory of plugin bundle directories (default <repo>/target/bundles)
  OPENFACTORY_RECIPES_DIR    the template catalog (default <repo>/recipes)
  OPENFACTORY_TEST_DATABASE  sqlite (default: each HOME's own file) or postgres: each HOME gets a
                             fresh PostgreSQL database (of_test_<session pid>_<hex>), created through
                             OPENFACTORY_TEST_POSTGRES and dropped at the end of the session
  OPENFACTORY_TEST_POSTGRES  admin URL of a PostgreSQL server (`sudo cargo xtask postgres` prints one);
                             required with OPENFACTORY_TEST_DATABASE=postgres: the run fails without it

On PostgreSQL, `of_bin` is a launcher that execs the real binary with `--database-url` added to every
command that opens the database (serve, mcp --stdio, account, key), whoever launches it (ofmcp.Server,
stdio sessions, or a test running the CLI itself): see ofmcp.postgres_launcher.
"""

from __future__ import annotations

import _thread
import os
import subprocess
import threading
from pathlib import Path

import pytest

import ofmcp


def pytest_configure(config):
    # A wrong or unreachable database is the run's failure, never a skip.
    try:
        if ofmcp.database_kind() == "postgres":
            ofmcp.check_postgres()
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None


def pytest_report_header(config):
    if ofmcp.database_kind() == "postgres":
        return f"openfactory database: PostgreSQL, a fresh database per HOME on {ofmcp.redacted(ofmcp.postgres_admin_url())}"
    return "openfactory database: SQLite (a file in each HOME)"


@pytest.fixture(scope="session")
def anyio_backend():
    return "asyncio"


# A watchdog per test: a hung server must fail the run, not stall it. On
# expiry the main thread gets a KeyboardInterrupt, pytest stops, and fixture
# finalizers still terminate the server.
TEST_DEADLINE_SECONDS = 60


@pytest.fixture(autouse=True)
def _watchdog(request):
    # Tests that build or boot images say how long they may take: @pytest.mark.deadline(seconds).
    marker = request.node.get_closest_marker("deadline")
    deadline = marker.args[0] if marker else TEST_DEADLINE_SECONDS
    fired = threading.Event()

    def expire():
        fired.set()
        _thread.interrupt_main()

    timer = threading.Timer(deadline, expire)
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()
    if fired.is_set():
        pytest.fail(f"{request.node.nodeid} exceeded {deadline} s")


@pytest.fixture(scope="session")
def databases(tmp_path_factory):
    """On PostgreSQL, the directory listing each HOME's database (None on SQLite); every database in it is
    dropped when the session ends, after the servers using them have stopped."""
    if ofmcp.database_kind() != "postgres":
        yield None
        return
    stale = ofmcp.drop_stale_databases()
    if stale:
        print(f"\ndropped {len(stale)} database(s) left by earlier sessions: {' '.join(stale)}")
    registry = tmp_path_factory.mktemp("databases")
    yield registry
    problems = ofmcp.drop_databases(registry)
    assert not problems, "could not drop the test databases:\n" + "\n".join(problems)


@pytest.fixture(scope="session")
def of_bin(databases) -> str:
    binary = ofmcp.binary()
    if not os.access(binary, os.X_OK):
        pytest.fail(f"openfactory binary not found at {binary} (set OPENFACTORY_BIN or run cargo build -p openfactory)")
    if databases is None:
        return binary
    return ofmcp.postgres_launcher(binary, databases)


def _catalog_state() -> dict[str, tuple[int, int]]:
    root = ofmcp.recipes_dir()
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="session")
def catalog_snapshot() -> dict[str, tuple[int, int]]:
    """The template catalog as it was before any server started."""
    return _catalog_state()


@pytest.fixture
def catalog_now():
    return _catalog_state


@pytest.fixture(scope="session")
def server(of_bin, tmp_path_factory, catalog_snapshot) -> ofmcp.Server:
    """A running `openfactory serve` on 127.0.0.1 and a free port."""
    root = tmp_path_factory.mktemp("serve")
    home = ofmcp.make_home(of_bin, root / "home")
    # The suite calls faster than any client would; the limit has its own test.
    srv = ofmcp.Server.start(of_bin, home, root, extra_args=("--requests-per-minute", "0"))
    yield srv
    code = srv.stop()
    # VMs outlive the server by design; a failed test must not leave them running.
    subprocess.run(["pkill", "-f", f"qemu-system-x86_64 .*{home}/vms/"], check=False)
    # The session-wide server must shut down on SIGTERM within 10 s.
    assert code is not None, f"openfactory serve did not exit within 10 s of SIGTERM\n{srv.stderr_tail()}"


@pytest.fixture(scope="session")
def stdio_home(of_bin, tmp_path_factory) -> Path:
    """A HOME for `openfactory mcp --stdio` processes, plugins installed."""
    return ofmcp.make_home(of_bin, tmp_path_factory.mktemp("stdio") / "home")


@pytest.fixture
def connect(server, of_bin, stdio_home, tmp_path):
    """`connect(kind, ip=..., **session_options)` → async context manager yielding an initialized ClientSession.

    kind is "sse", "http" (Streamable HTTP) or "stdio"; ip is the client's
    source address for the HTTP transports (its owner identity).
    """

    def _connect(kind: str, ip: str = "127.0.0.1", headers: dict | None = None, **session_options):
        if kind == "stdio":
            return ofmcp.unwrapped(ofmcp.stdio_session(of_bin, stdio_home, tmp_path / "stdio-stderr.log", **session_options))
        return ofmcp.unwrapped(ofmcp.http_session(kind, server.base, ip=ip, headers=headers, **session_options))

    return _connect
