"""Fixtures for the MCP end-to-end suite.

One `openfactory serve` process is shared by the whole session (its HOME is a
fresh temporary directory with the project's plugins installed through the
CLI). Tests that need a process of their own (stdio, shutdown) start it
themselves from the same kind of HOME.

Environment:
  OPENFACTORY_BIN          the binary (default <repo>/target/debug/openfactory)
  OPENFACTORY_PROJECT_KEY  public key to trust (default <repo>/target/signing/project.pub)
  OPENFACTORY_BUNDLES      directory of plugin bundle directories (default <repo>/target/bundles)
  OPENFACTORY_RECIPES_DIR  the template catalog (default <repo>/recipes)
"""

from __future__ import annotations

import _thread
import os
import subprocess
import threading
from pathlib import Path

import pytest

import ofmcp


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
def of_bin() -> str:
    binary = ofmcp.binary()
    if not os.access(binary, os.X_OK):
        pytest.fail(f"openfactory binary not found at {binary} (set OPENFACTORY_BIN or run cargo build -p openfactory)")
    return binary


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
    """`connect(kind, ip=...)` → async context manager yielding an initialized ClientSession.

    kind is "sse", "http" (Streamable HTTP) or "stdio"; ip is the client's
    source address for the HTTP transports (its owner identity).
    """

    def _connect(kind: str, ip: str = "127.0.0.1", headers: dict | None = None):
        if kind == "stdio":
            return ofmcp.unwrapped(ofmcp.stdio_session(of_bin, stdio_home, tmp_path / "stdio-stderr.log"))
        return ofmcp.unwrapped(ofmcp.http_session(kind, server.base, ip=ip, headers=headers))

    return _connect
