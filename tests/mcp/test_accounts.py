"""Accounts and `of_mcp_` API keys: the key life cycle over HTTP, MCP clients
acting as their account on every transport and from any address, a revoked
key closing open streams at once, and bad keys, tokens and passwords refused."""

from __future__ import annotations

import asyncio
import time

import httpx2
import pytest

import ofmcp
from ofmcp import ok, tool_error
from test_isolation import assert_invisible, custom_ids

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery staple"


def client(server, ip: str = "127.0.0.1", token: str | None = None) -> httpx2.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return httpx2.AsyncClient(base_url=server.base, transport=httpx2.AsyncHTTPTransport(local_address=ip, trust_env=False), trust_env=False, headers=headers, timeout=15.0)


async def sign_up(server, email: str) -> tuple[str, str]:
    """A new account; its session token and one MCP key."""
    async with client(server) as http:
        r = await http.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text
        token = r.json()["token"]
    async with client(server, token=token) as http:
        r = await http.post("/api/mcp-keys", json={"name": "tests"})
        assert r.status_code == 201, r.text
        return token, r.json()["key"]


async def test_the_key_life_cycle_over_http(server):
    async with client(server) as http:
        r = await http.post("/api/auth/register", json={"email": "Ada@Example.org", "password": PASSWORD})
        assert r.status_code == 201, r.text
        session = r.json()
        assert session["email"] == "ada@example.org" and session["token"] and session["expires_at"]
        # Every bad registration says which field and what to do.
        for body, status, wanted in (
            ({"email": "ada@example.org", "password": PASSWORD}, 409, "already exists"),
            ({"email": "eve@example.org", "password": "short"}, 400, "password: use 10 to 1024"),
            ({"email": "not-an-email", "password": PASSWORD}, 400, "email: give an address"),
            ({"email": "eve@example.org", "password": PASSWORD, "admin": True}, 400, "`admin`: unknown field"),
            ({"email": "eve@example.org"}, 400, "password: required"),
            ({"email": "eve@example.org", "password": 12345678901}, 400, "password: expected a string, got a number"),
        ):
            r = await http.post("/api/auth/register", json=body)
            assert r.status_code == status and wanted in r.json()["error"], (body, r.status_code, r.text)
        r = await http.post("/api/auth/register", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"].startswith("body: expected a JSON object with email and password"), r.text
        # No deserializer's wording reaches the client.
        for body in (b"", b"[]", b'{"email": 1}', b'{"email": "a@b.org", "password": "x", "extra": 1}'):
            error = (await http.post("/api/auth/register", content=body, headers={"content-type": "application/json"})).json()["error"]
            assert not any(w in error for w in ("missing field", "invalid type", "at line", "unknown field `")), error

        r = await http.post("/api/auth/login", json={"email": "ada@example.org", "password": "wrong password!"})
        assert r.status_code == 401 and r.json()["error"] == "wrong email or password"
        r = await http.post("/api/auth/login", json={"email": "nobody@example.org", "password": PASSWORD})
        assert r.status_code == 401 and r.json()["error"] == "wrong email or password", "no account enumeration"
        r = await http.post("/api/auth/login", json={"email": "ada@example.org", "password": PASSWORD})
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        # Key routes need a session token.
        assert (await http.get("/api/mcp-keys")).status_code == 401

    async with client(server, token=token) as http:
        assert (await http.get("/api/auth/me")).json()["email"] == "ada@example.org"
        r = await http.post("/api/mcp-keys", json={"name": "Claude Desktop"})
        assert r.status_code == 201, r.text
        created = r.json()
        key = created["key"]
        assert key.startswith("of_mcp_") and len(key) == 47 and key.startswith(created["prefix"]), created
        r = await http.post("/api/mcp-keys", json={"name": ""})
        assert r.status_code == 400 and "name:" in r.json()["error"]
        listed = (await http.get("/api/mcp-keys")).json()["keys"]
        assert [k["key_id"] for k in listed] == [created["key_id"]]
        assert key not in str(listed) and listed[0]["last_used_at"] is None and listed[0]["prefix"] == created["prefix"]

    # The key works for MCP and is marked used; the key is not a session token.
    async with ofmcp.unwrapped(ofmcp.http_session("http", server.base, headers={"Authorization": f"Bearer {key}"})) as s:
        await ok(s, "list_recipes")
    async with client(server, token=token) as http:
        assert (await http.get("/api/mcp-keys")).json()["keys"][0]["last_used_at"] is not None
    async with client(server, token=key) as http:
        r = await http.get("/api/mcp-keys")
        assert r.status_code == 401 and "not an MCP API key" in r.json()["error"]

    # Another account cannot see or revoke it.
    other_token, _ = await sign_up(server, "bob@example.org")
    async with client(server, token=other_token) as http:
        assert (await http.get("/api/mcp-keys")).json()["keys"] != []
        assert created["key_id"] not in str((await http.get("/api/mcp-keys")).json())
        assert (await http.delete(f"/api/mcp-keys/{created['key_id']}")).status_code == 404
    async with client(server, token=token) as http:
        r = await http.delete(f"/api/mcp-keys/{created['key_id']}")
        assert r.status_code == 200 and r.json()["revoked_at"], r.text
        assert (await http.delete("/api/mcp-keys/../../etc")).status_code == 404
    # Secrets never reach the server's log.
    log = server.stderr_path.read_text(errors="replace")
    assert key not in log and PASSWORD not in log and token not in log


async def test_an_account_follows_its_key_across_addresses_and_transports(server):
    _, key = await sign_up(server, "carol@example.org")
    auth = {"Authorization": f"Bearer {key}"}
    name = "carol-box"
    async with ofmcp.unwrapped(ofmcp.http_session("sse", server.base, ip="127.0.0.91", headers=auth)) as s:
        await ok(s, "create_recipe_from_template", {"template_id": "debian-minimal-server", "name": name})
    # The same key from another address, over the other transport: the same account.
    async with ofmcp.unwrapped(ofmcp.http_session("http", server.base, ip="127.0.0.92", headers=auth)) as s:
        assert name in custom_ids(await ok(s, "list_recipes"))
    # The address without the key is an IP session of its own; another account sees nothing either.
    async with ofmcp.unwrapped(ofmcp.http_session("http", server.base, ip="127.0.0.91")) as s:
        await assert_invisible(s, name)
    _, dave = await sign_up(server, "dave@example.org")
    async with ofmcp.unwrapped(ofmcp.http_session("sse", server.base, ip="127.0.0.91", headers={"Authorization": f"Bearer {dave}"})) as s:
        await assert_invisible(s, name)


async def test_bad_keys_are_refused_never_downgraded(server):
    async with client(server) as http:
        for value in ("Bearer of_mcp_" + "0" * 40, "Bearer not-a-key", "Basic YTpi", "Bearer " + "of_mcp_" + "x" * 5000):
            r = await http.get("/api/mcp/sse", headers={"Authorization": value, "Accept": "text/event-stream"})
            assert r.status_code == 401 and "Invalid API key" in r.text, (value[:30], r.status_code, r.text[:200])
            r = await http.post("/api/mcp", headers={"Authorization": value, "Accept": "application/json, text/event-stream"},
                                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            assert r.status_code == 401 and "Invalid API key" in r.text, (value[:30], r.status_code, r.text[:200])
            # The OAuth challenge (RFC 6750, RFC 9728): where to learn to sign in, and why this one was refused.
            challenge = r.headers["www-authenticate"]
            assert challenge.startswith(f'Bearer resource_metadata="{server.base}/.well-known/oauth-protected-resource/api/mcp"'), challenge
            assert 'error="invalid_token"' in challenge, challenge
        # Session tokens: tampered, truncated and garbage are refused.
        r = await http.post("/api/auth/register", json={"email": "erin@example.org", "password": PASSWORD})
        token = r.json()["token"]
        for bad in (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), token.split(".")[0], "x.y.z", "-"):
            r = await http.get("/api/mcp-keys", headers={"Authorization": f"Bearer {bad}"})
            assert r.status_code == 401, (bad, r.text)


async def test_sign_in_is_throttled_after_repeated_failures(server):
    async with client(server) as http:
        await http.post("/api/auth/register", json={"email": "frank@example.org", "password": PASSWORD})
        # Ten sign-ins per email at once, then one every three minutes: the right password waits too.
        for _ in range(10):
            r = await http.post("/api/auth/login", json={"email": "frank@example.org", "password": "guess guess guess"})
            assert r.status_code == 401
        r = await http.post("/api/auth/login", json={"email": "frank@example.org", "password": PASSWORD})
        assert r.status_code == 429 and "too many sign-ins for this email; wait" in r.json()["error"], r.text
        wait = int(r.json()["error"].split("wait ")[1].split(" s")[0])
        assert 1 <= wait <= 180, r.text
        # Another email is not held up.
        r = await http.post("/api/auth/login", json={"email": "grace@example.org", "password": PASSWORD})
        assert r.status_code == 401, r.text


async def test_revoking_a_key_closes_its_open_streams_at_once(server):
    token, key = await sign_up(server, "grace@example.org")
    async with client(server, token=token) as http:
        key_id = (await http.get("/api/mcp-keys")).json()["keys"][0]["key_id"]

    # A real MCP client (the official SDK) over SSE with the key, working.
    async with ofmcp.unwrapped(ofmcp.http_session("sse", server.base, headers={"Authorization": f"Bearer {key}"})) as s:
        await ok(s, "list_recipes")
        # A second, raw stream with the same key, to time the close.
        async with client(server) as raw, raw.stream("GET", "/api/mcp/sse", headers={"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith("event: endpoint")

            async with client(server, token=token) as http:
                r = await http.delete(f"/api/mcp-keys/{key_id}")
                assert r.status_code == 200
            revoked_at = time.monotonic()

            async def drain():
                async for _ in lines:
                    pass

            await asyncio.wait_for(drain(), timeout=1.0)
            assert time.monotonic() - revoked_at < 1.0
        # The SDK's session is closed too: its next call fails.
        with pytest.raises(Exception):
            await asyncio.wait_for(s.call_tool("list_recipes", {}), timeout=5)

    # The next call with the key, on any transport: 401, saying it was revoked.
    async with client(server) as http:
        r = await http.post("/api/mcp", headers={"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream"},
                            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert r.status_code == 401 and "revoked" in r.text, r.text
        r = await http.get("/api/mcp/sse", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 401 and "revoked" in r.text, r.text


async def test_operators_manage_accounts_and_keys_from_the_cli(of_bin, tmp_path):
    import subprocess

    home = tmp_path / "home"
    env = ofmcp.server_env()

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([of_bin, "--home", str(home), *args], input=stdin, env=env, capture_output=True, text=True, timeout=60)

    created = run("account", "create", "ops@example.org", stdin=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    assert run("account", "create", "ops@example.org", stdin=PASSWORD + "\n").returncode != 0
    weak = run("account", "create", "weak@example.org", stdin="short\n")
    assert weak.returncode != 0 and "password" in weak.stderr
    key = run("key", "create", "--email", "ops@example.org", "--name", "CI")
    assert key.returncode == 0 and key.stdout.strip().startswith("of_mcp_"), key.stderr
    listed = run("key", "list", "--email", "ops@example.org")
    assert "CI" in listed.stdout and key.stdout.strip() not in listed.stdout
    key_id = listed.stdout.split()[0]
    assert run("key", "revoke", "--email", "ops@example.org", key_id).returncode == 0
    assert "revoked" in run("key", "list", "--email", "ops@example.org").stdout
    missing = run("key", "create", "--email", "nobody@example.org", "--name", "x")
    assert missing.returncode != 0 and "no account" in missing.stderr


async def test_an_address_claims_its_ip_session_into_an_account_explicitly(server):
    ip = "127.0.0.95"
    async with ofmcp.unwrapped(ofmcp.http_session("http", server.base, ip=ip)) as s:
        await ok(s, "create_recipe_from_template", {"template_id": "debian-minimal-server", "name": "claim-me"})
    async with client(server, ip=ip) as http:
        r = await http.post("/api/auth/register", json={"email": "heidi@example.org", "password": PASSWORD})
        token = r.json()["token"]
    async with client(server, ip=ip, token=token) as http:
        key = (await http.post("/api/mcp-keys", json={"name": "laptop"})).json()["key"]
    auth = {"Authorization": f"Bearer {key}"}
    # Signing in moves nothing by itself.
    async with ofmcp.unwrapped(ofmcp.http_session("http", server.base, ip=ip, headers=auth)) as s:
        assert "claim-me" not in custom_ids(await ok(s, "list_recipes"))
    async with client(server, ip=ip, token=token) as http:
        r = await http.post("/api/auth/claim")
        assert r.status_code == 200 and r.json()["claimed"]["recipes"] == 1 and r.json()["from"] == f"ip:{ip}", r.text
        assert (await http.post("/api/auth/claim")).json()["claimed"]["recipes"] == 0
    async with ofmcp.unwrapped(ofmcp.http_session("sse", server.base, ip="127.0.0.96", headers=auth)) as s:
        assert "claim-me" in custom_ids(await ok(s, "list_recipes"))
    async with ofmcp.unwrapped(ofmcp.http_session("http", server.base, ip=ip)) as s:
        await assert_invisible(s, "claim-me")
    async with client(server, ip=ip) as http:
        assert (await http.post("/api/auth/claim")).status_code == 401


async def test_requests_are_rate_limited_per_caller(of_bin, tmp_path):
    home = ofmcp.make_home(of_bin, tmp_path / "home")
    srv = ofmcp.Server.start(of_bin, home, tmp_path, extra_args=("--requests-per-minute", "20"))
    try:
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {"Accept": "application/json, text/event-stream"}
        async with client(srv, ip="127.0.0.97") as http:
            statuses = [(await http.post("/api/mcp", json=body, headers=headers)).status_code for _ in range(20)]
            assert 429 not in statuses, statuses
            r = await http.post("/api/mcp", json={**body, "id": "over-the-limit"}, headers=headers)
            # An MCP endpoint answers in JSON-RPC, to the request's id, and keeps 429 and Retry-After.
            answer = r.json()
            assert r.status_code == 429 and answer["jsonrpc"] == "2.0" and answer["id"] == "over-the-limit", r.text
            assert "at most 20 requests a minute from this address" in answer["error"]["message"], r.text
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert answer["error"]["data"]["retry_after_seconds"] == int(r.headers["retry-after"]), r.text
            # Any other route keeps its plain JSON error.
            r = await http.get("/api/auth/me")
            assert r.status_code == 429 and "at most 20 requests a minute" in r.json()["error"], r.text
        # Another address has its own budget; health checks are never limited.
        async with client(srv, ip="127.0.0.98") as http:
            assert (await http.post("/api/mcp", json=body, headers=headers)).status_code != 429
        async with client(srv, ip="127.0.0.97") as http:
            assert (await http.get("/healthz")).status_code == 200
    finally:
        srv.stop()
