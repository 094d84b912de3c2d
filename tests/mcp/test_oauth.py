"""OAuth 2.1 for hosted MCP clients, with real clients: the official Python SDK's OAuthClientProvider signs
in (discovery, registration or a client metadata document, PKCE, consent, token, refresh) over Streamable
HTTP and legacy SSE and then acts as the account; the consent page in headless Chromium; the hostile cases
the RFCs name, each refused with its error code and nothing granted; and isolation between accounts that sign
in from one address while anonymous callers are off.

The server here runs as a deployment that hosted clients reach would: `--anonymous off`. Access tokens last
4 s so that the SDK must refresh within a test; client metadata documents are served over https from this
machine (a test CA, and `--oauth-allow-private-client-metadata`, which only tests use)."""

from __future__ import annotations

import asyncio
import http.server
import json
import ssl
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import httpx2
import pytest
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, TokenStorage
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

import ofmcp
from ofmcp import ok, tool_error

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery staple"
CALLBACK = "http://127.0.0.1:33418/callback"


def make_ca(dir: Path) -> tuple[Path, Path, Path]:
    """A test CA and a certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=dir)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=OpenFactory test CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.csr", "-subj", "/CN=127.0.0.1")
    (dir / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "cert.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "cert.pem",
        "-days", "2", "-extfile", "ext.cnf")
    return dir / "ca.pem", dir / "cert.pem", dir / "key.pem"


class Documents(http.server.ThreadingHTTPServer):
    """Client metadata documents over https on 127.0.0.1: a good one, and the hostile kinds."""

    daemon_threads = True

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}{path}"


def document_handler(docs: Documents):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            me = docs.url(self.path)
            good = {"client_id": me, "client_name": "Metadata document client", "redirect_uris": [CALLBACK],
                    "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"]}
            if self.path == "/redirect.json":
                self.send_response(302)
                self.send_header("Location", docs.url("/client.json"))
                self.end_headers()
                return
            if self.path == "/slow.json":
                time.sleep(8)
            body = json.dumps(good).encode()
            if self.path == "/huge.json":
                body = json.dumps({**good, "padding": "x" * 200_000}).encode()
            if self.path == "/other.json":
                body = json.dumps({**good, "client_id": docs.url("/client.json")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:
                pass

    return Handler


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return make_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def documents(tls):
    ca, cert, key = tls
    docs = Documents(("127.0.0.1", 0), None)
    docs.RequestHandlerClass = document_handler(docs)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    docs.socket = context.wrap_socket(docs.socket, server_side=True)
    threading.Thread(target=docs.serve_forever, daemon=True).start()
    yield docs
    docs.shutdown()


@pytest.fixture(scope="module")
def hosted(of_bin, tmp_path_factory, tls):
    """A server as a deployment that hosted clients reach runs it: anonymous callers refused."""
    root = tmp_path_factory.mktemp("hosted")
    home = ofmcp.make_home(of_bin, root / "home")
    srv = ofmcp.Server.start(of_bin, home, root, extra_args=(
        "--requests-per-minute", "0", "--anonymous", "off", "--oauth-access-token-seconds", "4",
        "--oauth-allow-private-client-metadata", "--oauth-client-metadata-ca", str(tls[0])))
    yield srv
    srv.stop()


class Memory(TokenStorage):
    def __init__(self):
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None
        self.issued: list[str] = []

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens
        self.issued.append(tokens.access_token)

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info):
        self.client = client_info


def provider(server_url: str, person: ofmcp.Person, storage: Memory, name: str, metadata_url: str | None = None) -> OAuthClientProvider:
    """The SDK's OAuth client, with a person who approves in their browser."""
    async def redirect_handler(url: str) -> None:
        await person.decide(url)

    async def callback_handler() -> AuthorizationCodeResult:
        q = ofmcp.query_of(person.answered)
        assert "code" in q, person.answered
        return AuthorizationCodeResult(code=q["code"], state=q.get("state"), iss=q.get("iss"))

    return OAuthClientProvider(
        server_url=server_url,
        client_metadata=OAuthClientMetadata(client_name=name, redirect_uris=[CALLBACK], token_endpoint_auth_method="none"),
        storage=storage, redirect_handler=redirect_handler, callback_handler=callback_handler,
        client_metadata_url=metadata_url)


async def test_the_sdk_signs_in_registers_refreshes_and_acts_as_the_account(hosted):
    person = await ofmcp.Person(hosted.base).sign_up("oauth-sdk@example.org")
    storage = Memory()
    url = f"{hosted.base}/api/mcp/account"
    auth = provider(url, person, storage, "pytest SDK client")
    async with httpx2.AsyncClient(auth=auth, trust_env=False, timeout=httpx2.Timeout(30, read=120)) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                made = await ok(s, "create_recipe_from_template", {"template_id": "debian-minimal-server", "name": "oauth-made"})
                # The access token expires (4 s): the SDK refreshes, and the session goes on as the account.
                await asyncio.sleep(5)
                listed = await ok(s, "list_recipes", {})
                assert made["id"] in json.dumps(listed)
    assert storage.client.client_id.startswith("of_cli_"), "registered dynamically (RFC 7591)"
    assert len(storage.issued) >= 2, f"the SDK refreshed its token: {len(storage.issued)} issued"
    # What it made is the account's: the person sees it in the console, and the client under Settings.
    settings = (await person.web.get("/settings")).text
    assert "pytest SDK client" in settings and "connected" in settings, settings[-3000:]
    owner = ofmcp.db_rows(hosted.home, "SELECT owner_id FROM recipes WHERE id = 'oauth-made'")
    assert owner and owner[0][0].startswith("account:"), owner

    # Disconnecting it in Settings: its newest token stops working at once.
    grant = ofmcp.db_rows(hosted.home, "SELECT id FROM oauth_grants WHERE client_name = 'pytest SDK client'")[0][0]
    r = await ofmcp.web_post(person.web, "/settings", f"/settings/connections/{grant}/remove")
    assert r.status_code == 303
    async with httpx2.AsyncClient(trust_env=False, timeout=15) as raw:
        r = await raw.post(url, headers={"Authorization": f"Bearer {storage.issued[-1]}", "Accept": "application/json, text/event-stream",
                                         "Content-Type": "application/json"},
                           content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        assert r.status_code == 401, r.text
        assert 'error="invalid_token"' in r.headers["www-authenticate"] and "revoked" in r.json()["error"]["message"]
    await person.aclose()


async def test_the_sdk_signs_in_with_a_client_metadata_document_over_sse(hosted, documents):
    person = await ofmcp.Person(hosted.base).sign_up("oauth-cimd@example.org")
    storage = Memory()
    url = f"{hosted.base}/api/mcp/account/sse"
    auth = provider(url, person, storage, "ignored: the document names the client", metadata_url=documents.url("/client.json"))
    async with sse_client(url, auth=auth, timeout=15, sse_read_timeout=120) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            await ok(s, "create_recipe_from_template", {"template_id": "debian-minimal-server", "name": "cimd-made"})
            assert "cimd-made" in json.dumps(await ok(s, "list_recipes", {}))
    assert storage.client.client_id == documents.url("/client.json")
    settings = (await person.web.get("/settings")).text
    assert "Metadata document client" in settings
    await person.aclose()


async def test_the_consent_page_in_a_real_browser(hosted, tmp_path):
    async with ofmcp.web_client(hosted.base) as web:
        await ofmcp.web_sign_up(web, "oauth-browser@example.org", PASSWORD)
    # Something must answer at the loopback redirect for the browser to land
    # there: on a port of its own (a fixed one may be taken), registered as is.
    landing = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    callback = f"http://127.0.0.1:{landing.server_address[1]}/callback"
    threading.Thread(target=landing.serve_forever, daemon=True).start()
    try:
        client = await ofmcp.register_client(hosted.base, redirect_uri=callback, client_name="Browser test client")
        verifier, challenge = ofmcp.pkce_pair()
        shown = ofmcp.browser("oauth.mjs", ofmcp.authorize_url(hosted.base, client["client_id"], challenge, redirect_uri=callback),
                              "oauth-browser@example.org", PASSWORD, str(tmp_path), timeout=120)
    finally:
        landing.shutdown()
    assert shown["violations"] == [], shown["violations"]
    q = ofmcp.query_of(shown["landed"])
    assert shown["landed"].startswith(callback) and q["state"] == "st4te" and q["iss"] == hosted.base, shown
    r = await ofmcp.token_request(hosted.base, {"grant_type": "authorization_code", "client_id": client["client_id"], "code": q["code"],
                                                "code_verifier": verifier, "redirect_uri": callback})
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer", r.text


async def test_hostile_requests_are_refused_with_the_rfc_error_and_grant_nothing(hosted, server, documents):
    person = await ofmcp.Person(hosted.base).sign_up("oauth-hostile@example.org")
    base = hosted.base
    client = await ofmcp.register_client(base)
    cid = client["client_id"]
    grants = lambda: ofmcp.db_rows(hosted.home, "SELECT count(*) FROM oauth_grants")[0][0]

    async def code_for(challenge: str, **extra) -> str:
        return ofmcp.query_of(await person.decide(ofmcp.authorize_url(base, cid, challenge, **extra)))["code"]

    def exchange(code: str, verifier: str, **extra) -> dict:
        return {"grant_type": "authorization_code", "client_id": cid, "code": code, "code_verifier": verifier, "redirect_uri": CALLBACK, **extra}

    verifier, challenge = ofmcp.pkce_pair()
    # A wrong verifier, or none: invalid_grant.
    for bad in ("x" * 43, ofmcp.pkce_pair()[0]):
        r = await ofmcp.token_request(base, exchange(await code_for(challenge), bad))
        assert (r.status_code, r.json()["error"]) == (400, "invalid_grant"), r.text
    form = exchange(await code_for(challenge), verifier)
    del form["code_verifier"]
    r = await ofmcp.token_request(base, form)
    assert r.json()["error"] == "invalid_request" and "code_verifier" in r.json()["error_description"]

    # A code used twice: refused, and the tokens the first use issued are revoked.
    code = await code_for(challenge)
    first = (await ofmcp.token_request(base, exchange(code, verifier))).json()
    r = await ofmcp.token_request(base, exchange(code, verifier))
    assert r.json()["error"] == "invalid_grant" and "already used" in r.json()["error_description"]
    assert await mcp_status(base, first["access_token"]) == 401

    # A refresh token replayed after rotation: the whole family goes.
    tokens = (await ofmcp.token_request(base, exchange(await code_for(challenge), verifier))).json()
    rotated = (await ofmcp.token_request(base, {"grant_type": "refresh_token", "client_id": cid, "refresh_token": tokens["refresh_token"]})).json()
    assert await mcp_status(base, rotated["access_token"]) == 200
    r = await ofmcp.token_request(base, {"grant_type": "refresh_token", "client_id": cid, "refresh_token": tokens["refresh_token"]})
    assert r.json()["error"] == "invalid_grant"
    assert await mcp_status(base, rotated["access_token"]) == 401
    r = await ofmcp.token_request(base, {"grant_type": "refresh_token", "client_id": cid, "refresh_token": rotated["refresh_token"]})
    assert r.json()["error"] == "invalid_grant"

    before = grants()
    # A redirect URI that differs by one character, an unknown client: shown, never redirected.
    for url in (ofmcp.authorize_url(base, cid, challenge, redirect_uri=CALLBACK + "x"),
                ofmcp.authorize_url(base, cid, challenge, redirect_uri=CALLBACK.replace("callback", "callbacc")),
                ofmcp.authorize_url(base, "of_cli_000000000000000000000000", challenge)):
        r = await person.consent_page(url)
        assert r.status_code == 400 and "location" not in r.headers and "Nothing was shared" in r.text, (url, r.status_code)
    # Another audience, plain PKCE, another scope: back to the client with the RFC's code.
    for extra, error in (({"resource": "https://evil.example/mcp"}, "invalid_target"),
                         ({"code_challenge_method": "plain"}, "invalid_request"),
                         ({"scope": "admin"}, "invalid_scope")):
        r = await person.consent_page(ofmcp.authorize_url(base, cid, challenge, **extra))
        assert r.status_code == 303, (extra, r.status_code)
        q = ofmcp.query_of(r.headers["location"])
        assert r.headers["location"].startswith(CALLBACK) and q["error"] == error and q["state"] == "st4te", (extra, q)
    # Consent without this browser's CSRF token: refused, no code.
    page = await person.consent_page(ofmcp.authorize_url(base, cid, challenge))
    for token in ("", "forged"):
        r = await person.web.post(f"/oauth/authorize?{urllib.parse.urlsplit(ofmcp.authorize_url(base, cid, challenge)).query}",
                                  data={"csrf": token, "decision": "approve"})
        assert r.status_code == 403 and "location" not in r.headers, r.status_code
    # Client metadata documents that redirect, are huge, are slow, or name another client.
    for path, says in (("/redirect.json", "redirect"), ("/huge.json", "larger than 64 KiB"),
                       ("/slow.json", "within 5 s"), ("/other.json", "names another client_id")):
        started = time.monotonic()
        r = await person.consent_page(ofmcp.authorize_url(base, documents.url(path), challenge))
        assert r.status_code == 400 and says in r.text, (path, r.status_code, r.text[-600:])
        assert time.monotonic() - started < 7, f"{path} held the request for too long"
    assert grants() == before, "nothing was granted"

    # On a server that does not allow private addresses (the default), a document on one is refused unfetched.
    visitor = await ofmcp.Person(server.base).sign_up("oauth-private@example.org")
    r = await visitor.consent_page(ofmcp.authorize_url(server.base, documents.url("/client.json"), challenge))
    assert r.status_code == 400 and "private address" in r.text, r.text[-600:]
    await visitor.aclose()
    await person.aclose()


async def mcp_status(base: str, token: str) -> int:
    async with httpx2.AsyncClient(trust_env=False, timeout=15) as raw:
        r = await raw.post(f"{base}/api/mcp", headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
                                                      "Content-Type": "application/json"},
                           content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                               "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
        return r.status_code


async def test_accounts_behind_one_address_see_nothing_of_each_other(hosted):
    # Anonymous callers are refused on every transport, with the challenge that starts OAuth.
    async with httpx2.AsyncClient(trust_env=False, timeout=15) as raw:
        for method, path in (("POST", "/api/mcp"), ("GET", "/api/mcp/sse"), ("POST", "/api/mcp/account")):
            r = await raw.request(method, f"{hosted.base}{path}", headers={"Accept": "application/json, text/event-stream", "Content-Type": "application/json"},
                                  content="{}" if method == "POST" else None)
            assert r.status_code == 401 and "resource_metadata=" in r.headers["www-authenticate"], (path, r.status_code)
    a = await ofmcp.Person(hosted.base).sign_up("oauth-a@example.org")
    b = await ofmcp.Person(hosted.base).sign_up("oauth-b@example.org")
    token_a = (await ofmcp.oauth_access_token(hosted.base, a))["access_token"]
    token_b = (await ofmcp.oauth_access_token(hosted.base, b))["access_token"]
    async with ofmcp.unwrapped(ofmcp.http_session("http", hosted.base, headers={"Authorization": f"Bearer {token_a}"})) as s:
        made = await ok(s, "create_recipe_from_template", {"template_id": "debian-minimal-server", "name": "a-only"})
    for kind in ("http", "sse"):
        async with ofmcp.unwrapped(ofmcp.http_session(kind, hosted.base, headers={"Authorization": f"Bearer {token_b}"})) as s:
            assert "a-only" not in json.dumps(await ok(s, "list_recipes", {}))
            assert "not found" in (await tool_error(s, "get_recipe", {"recipe_id": made["id"]})).lower()
    await a.aclose()
    await b.aclose()


async def test_disconnecting_a_client_or_replaying_its_refresh_token_closes_its_open_streams(hosted):
    person = await ofmcp.Person(hosted.base).sign_up("oauth-streams@example.org")

    async def open_stream_then(revoke) -> float:
        tokens = await ofmcp.oauth_access_token(hosted.base, person)
        auth = {"Authorization": f"Bearer {tokens['access_token']}", "Accept": "text/event-stream"}
        async with httpx2.AsyncClient(base_url=hosted.base, trust_env=False, timeout=15) as raw, \
                raw.stream("GET", "/api/mcp/account/sse", headers=auth) as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            first = await anext(lines)
            assert first.startswith("event: endpoint"), first
            assert "/api/mcp/account/messages?sessionId=" in await anext(lines)
            await revoke(tokens)
            revoked_at = time.monotonic()

            async def drain():
                async for _ in lines:
                    pass

            await asyncio.wait_for(drain(), timeout=2.0)
            return time.monotonic() - revoked_at

    async def disconnect(tokens):
        # This person's one connected client (other tests' accounts share the server).
        grant = ofmcp.db_rows(hosted.home, "SELECT g.id FROM oauth_grants g JOIN accounts a ON a.id = g.account_id "
                                           "WHERE a.email = 'oauth-streams@example.org' AND g.revoked_at IS NULL")
        assert len(grant) == 1, grant
        grant = grant[0][0]
        r = await ofmcp.web_post(person.web, "/settings", f"/settings/connections/{grant}/remove")
        assert r.status_code == 303 and "disconnected" in (await person.web.get("/settings")).text

    async def replay(tokens):
        form = {"grant_type": "refresh_token", "client_id": tokens["client_id"], "refresh_token": tokens["refresh_token"]}
        assert (await ofmcp.token_request(hosted.base, form)).status_code == 200
        r = await ofmcp.token_request(hosted.base, form)
        assert r.json()["error"] == "invalid_grant"

    for revoke in (disconnect, replay):
        took = await open_stream_then(revoke)
        print(f"\n{revoke.__name__}: the open SSE stream closed {took * 1000:.0f} ms after the revocation")
        assert took < 2.0
    await person.aclose()
