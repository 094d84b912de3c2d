"""Helpers for the MCP end-to-end suite: server processes, client sessions, result checks."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.parse
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

REPO = Path(__file__).resolve().parents[2]

TOOLS = {
    "list_recipe_categories",
    "list_recipes",
    "get_recipe",
    "validate_recipe",
    "create_recipe_from_template",
    "list_features",
    "plan_recipe",
    "create_build",
    "list_builds",
    "get_build",
    "get_build_status",
    "get_iso_download_url",
    "retry_build",
    "cancel_build",
    "get_build_log",
    "delete_build",
    "create_vm",
    "list_vms",
    "start_vm",
    "stop_vm",
    "delete_vm",
    "get_vm_serial_log",
    "get_vm_console_url",
    "run_tests",
    "get_test_results",
    "list_test_runs",
    "stop_test_run",
}
CATEGORIES = {"server", "containers", "monitoring", "healthcare", "security", "edge", "development"}
FEATURES = {"docker", "firewall", "gxp", "hardening", "monitoring", "motd", "podman", "ssh"}
HEX64 = re.compile(r"^[0-9a-f]{64}$")

# Every message the server writes about a problem must stay short.
MAX_MESSAGE = 1000
# A per-request bound for the MCP client (seconds).
REQUEST_TIMEOUT = 30.0


def binary() -> str:
    return os.environ.get("OPENFACTORY_BIN") or str(REPO / "target/debug/openfactory")


def recipes_dir() -> Path:
    return Path(os.environ.get("OPENFACTORY_RECIPES_DIR") or REPO / "recipes")


def catalog_templates() -> dict[str, str]:
    """Template id → category, read from the catalog directory itself."""
    return {p.stem: p.parent.name for p in recipes_dir().glob("*/*.toml")}


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENFACTORY_") or k == "OPENFACTORY_NOVNC_DIR"}
    env["OPENFACTORY_RECIPES_DIR"] = str(recipes_dir())
    return env


# --------------------------------------------------------------------------- databases
#
# OPENFACTORY_TEST_DATABASE=sqlite (the default) leaves every process on the SQLite file in its HOME.
# OPENFACTORY_TEST_DATABASE=postgres gives every HOME a PostgreSQL database of its own, created on the
# server named by OPENFACTORY_TEST_POSTGRES (an admin URL, e.g. postgres://postgres@127.0.0.1:5433/postgres):
# the suite's `of_bin` is then a launcher (see postgres_launcher) that adds `--database-url` to every
# command that opens the database, so that tests launching the CLI themselves get it too.

DATABASES = ("sqlite", "postgres")
# The CLI's commands that open the database (they take --database-url); the others never do.
DATABASE_COMMANDS = ("serve", "mcp", "account", "key", "worker-token")


def database_kind() -> str:
    kind = os.environ.get("OPENFACTORY_TEST_DATABASE") or "sqlite"
    if kind not in DATABASES:
        raise ValueError(f"OPENFACTORY_TEST_DATABASE={kind!r}: expected one of {', '.join(DATABASES)}")
    return kind


def postgres_admin_url() -> str | None:
    return os.environ.get("OPENFACTORY_TEST_POSTGRES") or None


def psql(sql: str, url: str | None = None, *args: str) -> subprocess.CompletedProcess:
    """Run one statement with the psql CLI (at the admin URL unless given); never raises on SQL errors."""
    url = url or postgres_admin_url()
    assert url, "OPENFACTORY_TEST_POSTGRES is not set"
    binary = shutil.which("psql") or "/usr/bin/psql"
    return subprocess.run(
        [binary, "-X", "-q", "-v", "ON_ERROR_STOP=1", *args, "-d", url, "-c", sql],
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def check_postgres() -> str:
    """The admin URL, once it answers; a message saying what is missing otherwise (raised as ValueError)."""
    url = postgres_admin_url()
    if not url:
        raise ValueError("OPENFACTORY_TEST_DATABASE=postgres needs OPENFACTORY_TEST_POSTGRES, an admin URL "
                         "(e.g. postgres://postgres@127.0.0.1:5433/postgres; `sudo cargo xtask postgres` starts one)")
    if not shutil.which("psql"):
        raise ValueError("OPENFACTORY_TEST_DATABASE=postgres needs the psql CLI (Debian: postgresql-client)")
    done = psql("SELECT 1", url)
    if done.returncode != 0:
        raise ValueError(f"PostgreSQL at OPENFACTORY_TEST_POSTGRES={redacted(url)} does not answer: {done.stderr.strip()[:500]}")
    return url


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def database_url_of(name: str) -> str:
    """The admin URL with another database name."""
    return urllib.parse.urlsplit(postgres_admin_url())._replace(path="/" + name).geturl()


def _home_key(home: str | Path) -> str:
    # The launcher computes the same key (LAUNCHER below).
    return hashlib.sha256(os.path.realpath(home).encode()).hexdigest()[:32]


_registry: Path | None = None


def database_url(home: Path) -> str | None:
    """The database URL the launcher gave processes of this HOME (None on SQLite, or before any asked)."""
    if _registry is None:
        return None
    try:
        name = (_registry / _home_key(home)).read_text().split("\n")[0]
    except FileNotFoundError:
        return None
    return database_url_of(name)


def db_rows(home: Path, sql: str) -> list[tuple[str, ...]]:
    """Rows of a query on HOME's database, whichever it is, every value as text (NULL as '')."""
    url = database_url(home)
    if url is None:
        db = sqlite3.connect(home / "openfactory.db")
        try:
            return [tuple("" if v is None else str(v) for v in row) for row in db.execute(sql)]
        finally:
            db.close()
    done = psql(sql, url, "-A", "-t", "-F", "\t")
    assert done.returncode == 0, f"psql {sql!r} failed: {done.stderr[:1000]}"
    return [tuple(line.split("\t")) for line in done.stdout.splitlines()]


LAUNCHER = r'''#!@PYTHON@ -IS
"""`openfactory` for the MCP suite on PostgreSQL; written by tests/mcp/ofmcp.py (postgres_launcher).

A command that opens the database (serve, mcp, account, key) without --database-url gets the one of
its --home: a database of its own, created on first use and listed in REGISTRY, which the suite drops
at its end. Then it execs the real binary, so its process is the binary itself."""
import fcntl, hashlib, os, secrets, subprocess, sys, urllib.parse

REAL = @REAL@
ADMIN = @ADMIN@
PSQL = @PSQL@
REGISTRY = @REGISTRY@
SESSION = @SESSION@
DATABASE_COMMANDS = @DATABASE_COMMANDS@
COMMANDS = {*DATABASE_COMMANDS, "recipe", "plugin", "build", "test"}


def home_of(args):
    for i, a in enumerate(args):
        if a == "--home" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--home="):
            return a[len("--home="):]
    return os.environ.get("OPENFACTORY_HOME")


def database_for(home):
    home = os.path.realpath(home)
    entry = os.path.join(REGISTRY, hashlib.sha256(home.encode()).hexdigest()[:32])
    with open(os.path.join(REGISTRY, ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(entry) as f:
                name = f.read().split("\n")[0]
        except FileNotFoundError:
            name = f"of_test_{SESSION}_{secrets.token_hex(6)}"
            done = subprocess.run([PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", ADMIN, "-c", f"CREATE DATABASE {name}"],
                                  env={**os.environ, "PGCONNECT_TIMEOUT": "10"}, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"openfactory test launcher: CREATE DATABASE {name} failed: {done.stderr.strip()}")
            with open(entry + ".tmp", "w") as f:
                f.write(f"{name}\n{home}\n")
            os.rename(entry + ".tmp", entry)
    return urllib.parse.urlsplit(ADMIN)._replace(path="/" + name).geturl()


args = sys.argv[1:]
command = next((a for a in args if a in COMMANDS), None)
if command in DATABASE_COMMANDS and not any(a == "--database-url" or a.startswith("--database-url=") for a in args):
    home = home_of(args)
    if home is None:
        sys.exit(f"openfactory test launcher: `{command}` without --home: which database is its?")
    args = [*args, "--database-url", database_for(home)]
os.execv(REAL, [REAL, *args])
'''


def postgres_launcher(real_bin: str, registry: Path) -> str:
    """Write the launcher (in `registry`, which lists the databases it creates); its path."""
    global _registry
    _registry = registry
    values = {
        "@PYTHON@": sys.executable,
        "@REAL@": repr(str(real_bin)),
        "@ADMIN@": repr(postgres_admin_url()),
        "@PSQL@": repr(shutil.which("psql") or "/usr/bin/psql"),
        "@REGISTRY@": repr(str(registry)),
        "@SESSION@": repr(str(os.getpid())),
        "@DATABASE_COMMANDS@": repr(DATABASE_COMMANDS),
    }
    text = LAUNCHER
    for k, v in values.items():
        text = text.replace(k, v)
    launcher = registry / "openfactory"
    launcher.write_text(text)
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(launcher)


def drop_databases(registry: Path) -> list[str]:
    """Drop every database the launcher created (WITH (FORCE): a server left running loses its connections);
    the problems, if any."""
    problems = []
    for entry in sorted(registry.iterdir()):
        if entry.name.startswith(".") or entry.name == "openfactory" or entry.suffix == ".tmp":
            continue
        name = entry.read_text().split("\n")[0]
        done = psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if done.returncode != 0:
            problems.append(f"{name}: {done.stderr.strip()[:300]}")
    return problems


STALE = re.compile(r"^of_test_([0-9]+)_[0-9a-f]+$")


def drop_stale_databases() -> list[str]:
    """Drop databases an earlier session left (it was killed before its end), when the server is on this
    machine and that session's process is gone; their names."""
    host = urllib.parse.urlsplit(postgres_admin_url()).hostname
    if host not in (None, "", "127.0.0.1", "localhost", "::1"):
        return []
    listed = psql("SELECT datname FROM pg_database WHERE datname LIKE 'of_test_%'", None, "-A", "-t")
    dropped = []
    for name in listed.stdout.split():
        m = STALE.match(name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # that session still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        if psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)").returncode == 0:
            dropped.append(name)
    return dropped


# --------------------------------------------------------------------------- processes


def make_home(of_bin: str, home: Path) -> Path:
    """A fresh HOME with the project key trusted and every bundle installed through the CLI."""
    home.mkdir(parents=True, exist_ok=True)
    key = os.environ.get("OPENFACTORY_PROJECT_KEY") or str(REPO / "target/signing/project.pub")
    bundles = Path(os.environ.get("OPENFACTORY_BUNDLES") or REPO / "target/bundles")
    env = server_env()

    def run(*args: str) -> None:
        p = subprocess.run([of_bin, "--home", str(home), *args], env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"openfactory {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"

    run("plugin", "trust", key)
    dirs = sorted(d for d in bundles.iterdir() if d.is_dir())
    assert dirs, f"no plugin bundles in {bundles}"
    for d in dirs:
        # The first-party bundles' privileges (shown by install) are granted:
        # the suite is the operator here, and it read them.
        run("plugin", "install", "--grant", "declared", str(d))
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    home: Path
    stderr_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, of_bin: str, home: Path, workdir: Path, ready_timeout: float = 30.0, extra_args: tuple[str, ...] = ()) -> "Server":
        port = free_port()
        stderr_path = workdir / f"serve-{port}.stderr"
        stdout_path = workdir / f"serve-{port}.stdout"
        proc = subprocess.Popen(
            [of_bin, "--home", str(home), "serve", "--listen", f"127.0.0.1:{port}", *extra_args],
            env=server_env(),
            stdin=subprocess.DEVNULL,
            stdout=stdout_path.open("wb"),
            stderr=stderr_path.open("wb"),
        )
        srv = cls(proc, port, home, stderr_path)
        deadline = time.monotonic() + ready_timeout
        last = "no answer"
        with httpx2.Client(trust_env=False, timeout=2.0) as c:
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"openfactory serve exited with {proc.returncode} before ready\n{srv.stderr_tail()}")
                try:
                    r = c.get(f"{srv.base}/healthz")
                    if r.status_code == 200:
                        return srv
                    last = f"HTTP {r.status_code}"
                except httpx2.TransportError as e:
                    last = repr(e)
                if time.monotonic() > deadline:
                    srv.kill()
                    raise AssertionError(f"/healthz not 200 within {ready_timeout} s ({last})\n{srv.stderr_tail()}")
                time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then wait; the exit code, or None (and SIGKILL) if it did not exit in time."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stderr_tail(self, n: int = 4000) -> str:
        try:
            return "--- server stderr (tail) ---\n" + self.stderr_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


# --------------------------------------------------------------------------- clients


class SseEvents:
    """Server-sent events from a stream's lines: `feed` each line; an event's name and data when one ends."""

    def __init__(self) -> None:
        self.event, self.data = "message", []

    def feed(self, line: str) -> tuple[str, str] | None:
        if line == "":
            done = (self.event, "\n".join(self.data)) if self.data else None
            self.event, self.data = "message", []
            return done
        if not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                self.event = value
            elif field == "data":
                self.data.append(value)
        return None


def http_client(ip: str = "127.0.0.1", headers: dict | None = None, timeout: httpx2.Timeout | None = None) -> httpx2.AsyncClient:
    """An httpx2 client whose connections come from source address `ip` (the owner identity)."""
    return httpx2.AsyncClient(
        transport=httpx2.AsyncHTTPTransport(local_address=ip, trust_env=False),
        trust_env=False,
        headers=headers,
        timeout=timeout or httpx2.Timeout(15.0, read=REQUEST_TIMEOUT),
    )


@asynccontextmanager
async def http_session(kind: str, base: str, ip: str = "127.0.0.1", headers: dict | None = None, **session_options):
    """An initialized ClientSession over legacy SSE ("sse") or Streamable HTTP ("http"); `session_options` go to
    ClientSession (an `elicitation_callback`, say)."""
    if kind == "sse":

        def factory(headers=None, timeout=None, auth=None):
            return httpx2.AsyncClient(
                transport=httpx2.AsyncHTTPTransport(local_address=ip, trust_env=False),
                trust_env=False,
                headers=headers,
                timeout=timeout,
                auth=auth,
            )

        async with sse_client(
            f"{base}/api/mcp/sse",
            headers=headers,
            timeout=15.0,
            sse_read_timeout=REQUEST_TIMEOUT,
            httpx_client_factory=factory,
        ) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT, **session_options) as session:
                await _initialize(session)
                yield session
    elif kind == "http":
        async with http_client(ip, headers) as client:
            async with streamable_http_client(f"{base}/api/mcp", http_client=client) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT, **session_options) as session:
                    await _initialize(session)
                    yield session
    else:
        raise ValueError(kind)


@asynccontextmanager
async def stdio_session(of_bin: str, home: Path, errlog_path: Path, **session_options):
    params = StdioServerParameters(
        command=of_bin,
        args=["--home", str(home), "mcp", "--stdio"],
        env={"OPENFACTORY_RECIPES_DIR": str(recipes_dir())},
    )
    with errlog_path.open("a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT, **session_options) as session:
                await _initialize(session)
                yield session


async def _initialize(session: ClientSession) -> None:
    result = await session.initialize()
    assert result.capabilities.tools is not None, f"server does not declare the tools capability: {result.capabilities}"
    assert result.server_info.name, "server_info.name is empty"


@asynccontextmanager
async def unwrapped(cm):
    """Re-raise a failure from inside the SDK's task groups as itself, not as nested ExceptionGroups."""
    try:
        async with cm as session:
            yield session
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0]
        raise


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


# --------------------------------------------------------------------------- results


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def describe(result: CallToolResult) -> str:
    body = json.dumps(result.structured_content)[:1500] if result.structured_content is not None else text_of(result)[:1500]
    return f"is_error={result.is_error} {body}"


async def call(session: ClientSession, tool: str, args: dict[str, Any] | None = None) -> CallToolResult:
    """tools/call; the SDK itself checks structuredContent against the tool's outputSchema on success."""
    return await session.call_tool(tool, args or {})


async def wait_until_done(session: ClientSession, tool: str, args: dict[str, Any], budget: float, progress: list | None = None) -> dict[str, Any]:
    """Call a status tool with wait_seconds until its `status` is no longer queued or running; the last answer.
    Progress notifications, if `progress` is given, are appended to it."""
    deadline = time.monotonic() + budget

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        if progress is not None:
            progress.append((value, total, message))

    while True:
        result = await session.call_tool(tool, {**args, "wait_seconds": 20}, read_timeout_seconds=45, progress_callback=on_progress)
        assert not result.is_error, text_of(result)
        status = result.structured_content
        if status["status"] not in ("queued", "running"):
            return status
        assert time.monotonic() < deadline, f"{tool}({args}) still {status['status']} after {budget} s: {status.get('message')}"


async def ok(session: ClientSession, tool: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call a tool that must succeed; its structuredContent."""
    result = await call(session, tool, args)
    assert not result.is_error, f"{tool}({_short(args)}) failed: {text_of(result)[:1500]}"
    assert isinstance(result.structured_content, dict), f"{tool}: structuredContent is not an object: {describe(result)}"
    return result.structured_content


async def tool_error(session: ClientSession, tool: str, args: dict[str, Any] | None = None) -> str:
    """Call a tool that must fail as a tool result (isError=true); its bounded, non-empty text."""
    result = await call(session, tool, args)
    assert result.is_error, f"{tool}({_short(args)}) should have failed, got {describe(result)}"
    text = text_of(result)
    assert text.strip(), f"{tool}({_short(args)}): error result has no text"
    assert len(text) < MAX_MESSAGE, f"{tool}({_short(args)}): error text is {len(text)} chars: {text[:300]}…"
    return text


def _short(args: Any) -> str:
    s = json.dumps(args)
    return s if len(s) < 200 else s[:200] + "…"


def diag_index(report: dict[str, Any]) -> dict[tuple[str, str], dict]:
    """(path, code) → diagnostic, over errors and warnings."""
    return {(d["path"], d["code"]): d for d in report["errors"] + report["warnings"]}


def check_diagnostics_shape(report: dict[str, Any]) -> None:
    for key, severity in (("errors", "error"), ("warnings", "warning")):
        for d in report[key]:
            assert d["severity"] == severity, f"{key} holds a {d['severity']}: {d}"
            assert isinstance(d["code"], str) and d["code"], d
            assert isinstance(d["path"], str), d
            assert isinstance(d["message"], str) and d["message"], d
            assert len(d["message"]) < MAX_MESSAGE, f"message of {d['code']} at {d['path']} is {len(d['message'])} chars"
            if d.get("suggestion") is not None:
                assert len(d["suggestion"]) < MAX_MESSAGE, f"suggestion of {d['code']} is {len(d['suggestion'])} chars"


async def healthz(base: str) -> int:
    async with httpx2.AsyncClient(trust_env=False, timeout=5.0) as c:
        return (await c.get(f"{base}/healthz")).status_code


def feature_names(features: list) -> list[str]:
    """Feature names from a list of names or of objects with a `name`."""
    return [f if isinstance(f, str) else f["name"] for f in features]


# --------------------------------------------------------------------------- browsers and the web console

ARTIFACTS = REPO / "target/test-artifacts"


def browser(script: str, *args: str, timeout: float = 900) -> dict[str, Any]:
    """Run tests/browser/<script> in Node, next to playwright-core (OPENFACTORY_BROWSER_DIR, which
    `cargo xtask test` fills); the JSON object it prints last."""
    driver = Path(os.environ.get("OPENFACTORY_BROWSER_DIR") or REPO / "target/browser")
    assert (driver / "node_modules/playwright-core").is_dir(), f"playwright-core is not installed in {driver} (cargo xtask test installs it)"
    for source in (REPO / "tests/browser").glob("*.mjs"):
        shutil.copy(source, driver / source.name)
    done = subprocess.run(["node", str(driver / script), *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{script} {' '.join(args[:1])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def web_client(base: str, ip: str = "127.0.0.1") -> httpx2.AsyncClient:
    """A cookie-keeping client for the web console that does not follow redirects."""
    return httpx2.AsyncClient(
        base_url=base,
        transport=httpx2.AsyncHTTPTransport(local_address=ip, trust_env=False),
        trust_env=False,
        timeout=httpx2.Timeout(15.0, read=120.0),
        follow_redirects=False,
    )


async def web_post(client: httpx2.AsyncClient, page: str, action: str, fields: dict[str, str] | None = None) -> httpx2.Response:
    """Post a form the way its page would: with the CSRF token the page (at `page`) carries."""
    token = csrf_of((await client.get(page)).text)
    return await client.post(action, data={"csrf": token, **(fields or {})})


async def web_sign_up(client: httpx2.AsyncClient, email: str, password: str) -> None:
    r = await web_post(client, "/signup", "/signup", {"email": email, "password": password})
    assert r.status_code == 303 and r.headers["location"].startswith("/settings"), (r.status_code, r.text[:500])


async def web_sign_in(client: httpx2.AsyncClient, email: str, password: str) -> None:
    r = await web_post(client, "/signin", "/signin", {"email": email, "password": password})
    assert r.status_code == 303, (r.status_code, r.text[:500])


# --------------------------------------------------------------------------- OAuth


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier and its S256 challenge."""
    import base64
    import secrets

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class Person:
    """Someone with a browser, signed in to the console: approves (or denies) what OAuth clients ask for,
    as a browser would (the consent page's own form, its CSRF token, the redirect it answers with)."""

    def __init__(self, base: str, ip: str = "127.0.0.1"):
        self.base = base
        self.web = web_client(base, ip=ip)
        self.answered: str | None = None

    async def sign_up(self, email: str, password: str = "correct horse battery staple") -> "Person":
        await web_sign_up(self.web, email, password)
        return self

    async def consent_page(self, authorize_url: str) -> httpx2.Response:
        return await self.web.get(authorize_url.removeprefix(self.base))

    async def decide(self, authorize_url: str, decision: str = "approve") -> str:
        """Open the consent page and press a button; where the browser is sent (the client's redirect)."""
        page = await self.consent_page(authorize_url)
        assert page.status_code == 200, (page.status_code, page.headers.get("location"), page.text[-800:])
        action = re.search(r'<form[^>]*method="post"[^>]*action="([^"]*oauth/authorize[^"]*)"', page.text)
        assert action, page.text[-1500:]
        target = action.group(1).replace("&amp;", "&")
        r = await self.web.post(target, data={"csrf": csrf_of(page.text), "decision": decision})
        assert r.status_code == 303, (r.status_code, r.text[-800:])
        self.answered = r.headers["location"]
        return self.answered

    async def aclose(self) -> None:
        await self.web.aclose()


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


async def register_client(base: str, redirect_uri: str = "http://127.0.0.1:33418/callback", **extra) -> dict[str, Any]:
    async with httpx2.AsyncClient(trust_env=False, timeout=15.0) as http:
        r = await http.post(f"{base}/oauth/register", json={"redirect_uris": [redirect_uri], "client_name": "pytest", "token_endpoint_auth_method": "none", **extra})
        assert r.status_code == 201, r.text
        return r.json()


def authorize_url(base: str, client_id: str, challenge: str, redirect_uri: str = "http://127.0.0.1:33418/callback", **extra: str) -> str:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "code_challenge": challenge,
              "code_challenge_method": "S256", "state": "st4te", "resource": f"{base}/api/mcp/account", **extra}
    return f"{base}/oauth/authorize?{urllib.parse.urlencode(params)}"


async def token_request(base: str, form: dict[str, str]) -> httpx2.Response:
    async with httpx2.AsyncClient(trust_env=False, timeout=15.0) as http:
        return await http.post(f"{base}/oauth/token", data=form)


async def oauth_access_token(base: str, person: Person) -> dict[str, Any]:
    """The whole flow by hand (registration, consent, code + PKCE): the token response."""
    client = await register_client(base)
    verifier, challenge = pkce_pair()
    answered = await person.decide(authorize_url(base, client["client_id"], challenge))
    code = query_of(answered)["code"]
    r = await token_request(base, {"grant_type": "authorization_code", "client_id": client["client_id"], "code": code,
                                   "code_verifier": verifier, "redirect_uri": "http://127.0.0.1:33418/callback"})
    assert r.status_code == 200, r.text
    return {**r.json(), "client_id": client["client_id"]}
