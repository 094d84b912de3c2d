"""The HTTP surface below MCP: raw SSE sessions, bad requests, Host checks, health, metrics, shutdown."""

from __future__ import annotations

import json
import re
import time
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urljoin, urlparse

import anyio
import anyio.to_thread
import httpx2
import pytest

from ofmcp import TOOLS, Server, SseEvents, http_client, http_session, make_home, ok

pytestmark = pytest.mark.anyio

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "raw-test", "version": "0"}},
}


class SSE:
    """A raw legacy-SSE session: the GET stream and the messages URL it announced."""

    def __init__(self, response: httpx2.Response, base: str):
        self.response = response
        self.base = base
        self._lines = response.aiter_lines()
        self.endpoint = ""

    async def next_event(self, timeout: float = 10.0) -> tuple[str, str]:
        events = SseEvents()
        with anyio.fail_after(timeout):
            async for line in self._lines:
                if done := events.feed(line):
                    return done
        raise AssertionError("SSE stream ended")

    @property
    def session_id(self) -> str:
        q = parse_qs(urlparse(self.endpoint).query)
        return (q.get("sessionId") or q.get("session_id") or [""])[0]


@asynccontextmanager
async def raw_sse(client: httpx2.AsyncClient, base: str):
    async with client.stream("GET", f"{base}/api/mcp/sse", headers={"Accept": "text/event-stream"}) as r:
        assert r.status_code == 200, f"GET /api/mcp/sse: HTTP {r.status_code}"
        assert r.headers.get("content-type", "").startswith("text/event-stream"), r.headers.get("content-type")
        sse = SSE(r, base)
        event, data = await sse.next_event()
        assert event == "endpoint", (event, data)
        sse.endpoint = urljoin(f"{base}/api/mcp/sse", data)
        assert urlparse(sse.endpoint).path.rstrip("/") == "/api/mcp/messages", sse.endpoint
        assert sse.session_id, f"no sessionId in {sse.endpoint}"
        yield sse


async def test_healthz(server):
    async with http_client() as c:
        r = await c.get(f"{server.base}/healthz")
        assert r.status_code == 200, r.text[:300]


SECURITY_HEADERS = ("content-security-policy", "x-content-type-options", "x-frame-options", "referrer-policy", "permissions-policy", "cache-control")


async def test_every_kind_of_response_has_the_security_headers(server):
    """Not only pages: JSON, metrics, MCP refusals, downloads and SSE streams get them too (harmlessly)."""
    async with http_client() as c:
        responses = [
            await c.get(f"{server.base}/healthz"),
            await c.get(f"{server.base}/metrics"),
            await c.get(f"{server.base}/api/auth/me"),
            await c.get(f"{server.base}/api/builds/0123456789ab/iso?token=forged"),
            await c.post(f"{server.base}/api/mcp", json=INITIALIZE, headers={"Authorization": "Bearer of_mcp_0", "Accept": "application/json, text/event-stream"}),
        ]
        async with raw_sse(c, server.base) as sse:
            responses.append(sse.response)
        for r in responses:
            missing = [h for h in SECURITY_HEADERS if h not in r.headers]
            assert not missing, (str(r.url), r.status_code, missing)
            assert r.headers["x-content-type-options"] == "nosniff", str(r.url)


METRIC_LINE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})?\s+(\S+)(\s+-?\d+)?$")


async def test_metrics(server):
    async with http_client() as c:
        r = await c.get(f"{server.base}/metrics")
        assert r.status_code == 200, r.text[:300]
        # Prometheus text exposition, or its OpenMetrics successor (Prometheus scrapes both).
        ctype = r.headers.get("content-type", "")
        assert ctype.startswith(("text/plain", "application/openmetrics-text")), ctype
        samples = []
        for line in r.text.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            m = METRIC_LINE.match(line)
            assert m, f"not Prometheus text format: {line!r}"
            float(m.group(2).replace("+Inf", "inf").replace("-Inf", "-inf"))
            samples.append(line)
        ours = [line for line in samples if line.startswith("openfactory_")]
        assert ours, f"no openfactory_ metrics in /metrics:\n{r.text[:1000]}"


def openfactory_samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("openfactory_"):
            m = METRIC_LINE.match(line)
            if m:
                out[line[: m.start(2)].strip()] = float(m.group(2))
    return out


async def test_metrics_move_with_traffic(server):
    """Serving MCP shows up in the openfactory_ metrics: some sample grows after a session and a tool call."""
    async with http_client() as c:
        before = openfactory_samples((await c.get(f"{server.base}/metrics")).text)
    async with http_session("http", server.base, ip="127.0.0.31") as s:
        await ok(s, "list_recipe_categories")
    async with http_client() as c:
        after = openfactory_samples((await c.get(f"{server.base}/metrics")).text)
    grown = [k for k, v in after.items() if v > before.get(k, 0.0)]
    assert grown, f"no openfactory_ sample grew after a session and a tool call:\nbefore {before}\nafter {after}"


async def test_malformed_json_on_a_live_sse_session(server):
    async with http_client() as c, raw_sse(c, server.base) as sse:
        r = await c.post(sse.endpoint, content=b'{"jsonrpc": "2.0", "id": 1, "method": "ping"', headers={"Content-Type": "application/json"})
        assert r.status_code == 400, f"HTTP {r.status_code}: {r.text[:300]}"
        try:
            body = r.json()
        except ValueError:
            raise AssertionError(f"400 body is not JSON: {r.text[:300]!r}")
        assert body.get("jsonrpc") == "2.0", body
        assert body.get("error", {}).get("code") == -32700, body
        assert "id" in body and body["id"] is None, body
        assert len(r.text) < 1000

        # The session survives the bad message: a real initialize is answered on the stream.
        r = await c.post(sse.endpoint, json=INITIALIZE)
        assert r.status_code in (200, 202, 204), f"HTTP {r.status_code}: {r.text[:300]}"
        event, data = await sse.next_event()
        assert event == "message", (event, data)
        reply = json.loads(data)
        assert reply.get("id") == 1 and "result" in reply, reply
        assert reply["result"]["capabilities"].get("tools") is not None, reply


DESERIALIZER_WORDS = ("invalid type", "missing field", "unknown variant", "expected value", "EOF while parsing",
                      "trailing characters", "fail to deserialize", "at line 1 column 2")


async def test_streamable_http_refusals_are_json_rpc_errors_in_the_servers_words(server):
    """A bad message on Streamable HTTP is refused before rmcp reads it (its field named, never a deserializer's
    words), and rmcp's own plain-text refusals (a wrong Content-Type or Accept, an unknown session) come as JSON."""
    accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    cases = [
        (b'{"jsonrpc": "2.0", "id": 1, "method": "ping"', accept, 400, -32700, "not JSON"),
        (b"\xff\xfe{}", accept, 400, -32700, "UTF-8"),
        (b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}', accept, 400, -32600, "`id`"),
        (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', accept, 400, -32600, "batch"),
        (b'{"jsonrpc": "2.0", "id": 4, "method": "initialize", "params": {}}', accept, 400, -32600, "`params.protocolVersion`"),
        (b'{"jsonrpc": "2.0", "id": 6, "method": "logging/setLevel", "params": {"level": "loud"}}', accept, 400, -32602, "`logging/setLevel`"),
        (json.dumps(INITIALIZE).encode(), {**accept, "Content-Type": "text/plain"}, 415, -32600, "Content-Type"),
        (json.dumps(INITIALIZE).encode(), {**accept, "Accept": "text/html"}, 406, -32600, "accept"),
        (b'{"jsonrpc": "2.0", "id": 5, "method": "tools/list"}', {**accept, "Mcp-Session-Id": "no-such-session"}, 404, -32600, "ession"),
    ]
    async with http_client() as c:
        for body, headers, status, code, says in cases:
            r = await c.post(f"{server.base}/api/mcp", content=body, headers=headers)
            assert r.status_code == status, f"{body[:60]!r}: HTTP {r.status_code} {r.text[:300]}"
            assert r.headers["content-type"].startswith("application/json"), (body[:60], r.headers)
            error = r.json()
            assert error["jsonrpc"] == "2.0" and error["error"]["code"] == code, (body[:60], error)
            message = error["error"]["message"]
            assert says in message, (body[:60], message)
            assert not [w for w in DESERIALIZER_WORDS if w in message], (body[:60], message)
        # A message that repeats a key is read as the check read it (the last one wins), not refused by rmcp.
        repeated = b'{"jsonrpc": "2.0", "id": "first", ' + json.dumps(INITIALIZE).encode()[1:]
        r = await c.post(f"{server.base}/api/mcp", content=repeated, headers=accept)
        assert r.status_code == 200 and '"protocolVersion"' in r.text, f"HTTP {r.status_code} {r.text[:300]}"
        assert '"first"' not in r.text, r.text[:300]
        # 5 MiB: more than a message may be.
        r = await c.post(f"{server.base}/api/mcp", content=b"[" * (5 << 20), headers=accept)
        assert r.status_code == 413, f"HTTP {r.status_code} {r.text[:300]}"
        assert "too large" in r.json()["error"]["message"], r.text[:300]


async def test_unknown_session_id_is_404(server):
    async with http_client() as c:
        async with raw_sse(c, server.base) as sse:
            sid = sse.session_id
            wrong = sid[:-1] + ("0" if sid[-1] != "0" else "1")
            url = sse.endpoint.replace(f"={sid}", f"={wrong}")
            assert url != sse.endpoint
            r = await c.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert r.status_code == 404, f"unknown sessionId: HTTP {r.status_code}: {r.text[:300]}"
            endpoint = sse.endpoint
        # Once its stream is gone the session is gone too (polled: the server notices the close).
        deadline = time.monotonic() + 5
        while True:
            r = await c.post(endpoint, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            if r.status_code == 404:
                break
            assert time.monotonic() < deadline, f"closed session still accepts messages: HTTP {r.status_code}"
            await anyio.sleep(0.05)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "localhost.evil.example", "127.0.0.1.evil.example", "[::2]"])
async def test_foreign_host_header_is_403(server, host):
    # One client (so one connection) per request: the server may close a connection after
    # refusing it, and a refused request must not make the next check fail for that reason.
    async with http_client() as c:
        async with c.stream("GET", f"{server.base}/api/mcp/sse", headers={"Host": host, "Accept": "text/event-stream"}) as r:
            assert r.status_code == 403, f"GET /api/mcp/sse with Host {host}: HTTP {r.status_code}"
    async with http_client() as c:
        r = await c.post(
            f"{server.base}/api/mcp",
            json=INITIALIZE,
            headers={"Host": host, "Accept": "application/json, text/event-stream"},
        )
        assert r.status_code == 403, f"POST /api/mcp with Host {host}: HTTP {r.status_code}"
    # Also on a live session's messages URL.
    async with http_client() as c, raw_sse(c, server.base) as sse, http_client() as other:
        r = await other.post(sse.endpoint, json=INITIALIZE, headers={"Host": host})
        assert r.status_code == 403, f"POST messages with Host {host}: HTTP {r.status_code}"


async def test_local_host_headers_are_accepted(server):
    async with http_client() as c:
        for host in [f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}", "localhost"]:
            async with c.stream("GET", f"{server.base}/api/mcp/sse", headers={"Host": host, "Accept": "text/event-stream"}) as r:
                assert r.status_code == 200, f"GET /api/mcp/sse with Host {host}: HTTP {r.status_code}"
            r = await c.post(f"{server.base}/api/mcp", json=INITIALIZE, headers={"Host": host, "Accept": "application/json, text/event-stream"})
            assert r.status_code == 200, f"POST /api/mcp with Host {host}: HTTP {r.status_code}: {r.text[:300]}"
            sid = r.headers.get("mcp-session-id")
            if sid:
                await c.delete(f"{server.base}/api/mcp", headers={"Host": host, "Mcp-Session-Id": sid})


async def test_sigterm_with_open_sessions(of_bin, tmp_path):
    """A second server, with an SSE stream and a Streamable HTTP session open, stops on SIGTERM within 10 s."""
    home = make_home(of_bin, tmp_path / "home")
    srv = Server.start(of_bin, home, tmp_path)
    try:
        async with http_client() as c, raw_sse(c, srv.base) as sse:
            r = await c.post(sse.endpoint, json=INITIALIZE)
            assert r.status_code in (200, 202, 204)
            await sse.next_event()
            r = await c.post(f"{srv.base}/api/mcp", json=INITIALIZE, headers={"Accept": "application/json, text/event-stream"})
            assert r.status_code == 200, r.text[:300]
            started = time.monotonic()
            code = await anyio.to_thread.run_sync(srv.stop)
            assert code is not None, f"serve did not exit within 10 s of SIGTERM with sessions open\n{srv.stderr_tail()}"
            print(f"serve exited with {code} {time.monotonic() - started:.2f} s after SIGTERM")
    finally:
        srv.kill()


def _sse_data(text: str) -> list[dict]:
    """The JSON-RPC messages in an SSE or JSON response body."""
    text = text.strip()
    if text.startswith("{"):
        return [json.loads(text)]
    return [json.loads(line[5:].strip()) for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]


async def test_streamable_http_serves_session_and_stateless_clients(server):
    """Both protocol generations on /api/mcp: a 2025-11-25 session, and 2026-07-28 stateless requests."""
    accept = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    async with http_client() as c:
        init = dict(INITIALIZE, params=dict(INITIALIZE["params"], protocolVersion="2025-11-25"))
        r = await c.post(f"{server.base}/api/mcp", json=init, headers=accept)
        assert r.status_code == 200, r.text[:300]
        session = r.headers.get("mcp-session-id")
        assert session, "session mode must hand out an Mcp-Session-Id"
        assert _sse_data(r.text)[-1]["result"]["protocolVersion"] == "2025-11-25"
        h = dict(accept, **{"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"})
        r = await c.post(f"{server.base}/api/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
        assert r.status_code == 202, r.text[:300]
        r = await c.post(f"{server.base}/api/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_recipe_categories", "arguments": {}}}, headers=h)
        result = _sse_data(r.text)[-1]["result"]
        assert len(result["structuredContent"]["categories"]) == 7

        meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
        h = dict(accept, **{"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"})
        r = await c.post(f"{server.base}/api/mcp", json={"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": meta}}, headers=h)
        assert r.status_code == 200, r.text[:300]
        assert "mcp-session-id" not in r.headers, "2026-07-28 requests are stateless"
        names = sorted(t["name"] for t in _sse_data(r.text)[-1]["result"]["tools"])
        assert names == sorted(TOOLS), names
