"""The web console: the whole journey in headless Chromium (tests/browser/web.mjs:
sign up, a key shown once, the catalog, a build watched live, a VM's screen,
a test run, accessibility, revoking the key), and at the HTTP level what a
browser would never send: missing or foreign CSRF tokens, replayed cookies,
hostile input. (Another account's ids on every page: test_isolation_all.)"""

from __future__ import annotations

import hashlib

import httpx2
import pytest

import ofmcp
from ofmcp import ARTIFACTS, ok, web_client, web_post, web_sign_in, web_sign_up
from test_builds import wait_for_build

pytestmark = pytest.mark.anyio

PASSWORD = "a long passphrase of words"


def cookie_names(response: httpx2.Response) -> dict[str, str]:
    """Set-Cookie headers by cookie name."""
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


@pytest.mark.deadline(2400)
async def test_the_web_console_in_a_real_browser(server, connect, tmp_path):
    state = str(tmp_path / "browser-state.json")

    def run(scenario: str, *args: str, timeout: float = 900) -> dict:
        return ofmcp.browser("web.mjs", scenario, server.base, str(ARTIFACTS), state, *args, timeout=timeout)

    key = run("signup", "web-journey@example.org")["key"]
    # The key shown once works over MCP, as the account.
    auth = {"Authorization": f"Bearer {key}"}
    async with connect("sse", ip="127.0.0.121", headers=auth) as s:
        assert {t.name for t in (await s.list_tools()).tools} == ofmcp.TOOLS

    assert run("catalog")["tiles"] == len(ofmcp.catalog_templates())

    built = run("build", "debian-minimal-server")
    build_id = built["build_id"]
    assert any(s["status"] == "running" for s in built["seen"]), built
    # What the page started is the account's build over MCP too: one owner, two front ends.
    async with connect("http", ip="127.0.0.122", headers=auth) as s:
        final = await wait_for_build(s, build_id, budget=1200)
        assert final["status"] == "completed", final

    shown = run("vm", build_id, "web-vm", timeout=300)
    assert shown["canvas"][0] >= 640 and shown["canvas"][1] >= 400, shown
    async with connect("http", ip="127.0.0.122", headers=auth) as s:
        vms = await ok(s, "list_vms", {})
        assert [v["name"] for v in vms["vms"]] == ["web-vm"] and vms["vms"][0]["state"] == "running"
    run("vm-delete", "web-vm", timeout=120)
    async with connect("http", ip="127.0.0.122", headers=auth) as s:
        assert (await ok(s, "list_vms", {}))["count"] == 0

    tested = run("tests", build_id, timeout=1200)
    assert tested["status"] == "passed" and tested["passed"] == tested["checks"], tested

    # WCAG 2.1 AA (axe-core) on every kind of page, light and dark, signed in and not.
    run("accessibility", build_id, tested["run_id"])
    run("pages")
    run("revoke")
    async with httpx2.AsyncClient(trust_env=False, timeout=10.0) as http:
        r = await http.get(f"{server.base}/api/mcp/sse", headers={**auth, "Accept": "text/event-stream"})
        assert r.status_code == 401 and "revoked" in r.text, (r.status_code, r.text)
    for name in ("catalog", "template", "settings-new-key", "build-running", "build-completed", "vm-console", "test-run", "settings-revoked"):
        assert (ARTIFACTS / f"web-{name}.png").stat().st_size > 20_000, name


async def test_a_visitor_reads_the_catalog_and_is_sent_to_sign_in_for_the_rest(server):
    async with web_client(server.base) as web:
        for path in ("/", "/catalog", "/catalog?category=healthcare&q=gxp", "/catalog/gxp-medtech", "/plugins", "/signin", "/signup"):
            r = await web.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), (path, r.status_code)
        assert "gxp-medtech" in (await web.get("/catalog?q=gxp")).text
        for path in ("/builds", "/vms", "/test-runs", "/settings", "/builds/0123456789ab", "/vms/web-1"):
            r = await web.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/signin?next=" + path.replace("/", "%2F"), (path, r.headers)
        # A fragment asked for by the page script gets 401, not a sign-in page.
        assert (await web.get("/builds/0123456789ab?part=status")).status_code == 401
        # A form from a visitor leads to sign-in; nothing is built.
        r = await web_post(web, "/signin", "/builds", {"recipe": "debian-minimal-server"})
        assert r.status_code == 303 and r.headers["location"] == "/signin"
        r = await web.get("/no/such/page")
        assert r.status_code == 404 and "Page not found" in r.text


async def test_every_form_needs_this_browsers_csrf_token(server):
    async with web_client(server.base, ip="127.0.0.131") as a, web_client(server.base, ip="127.0.0.132") as b:
        await web_sign_up(a, "csrf-a@example.org", PASSWORD)
        await web_sign_up(b, "csrf-b@example.org", PASSWORD)
        token_b = ofmcp.csrf_of((await b.get("/settings")).text)
        for data in ({"name": "no token"}, {"name": "empty", "csrf": ""}, {"name": "forged", "csrf": "AAAA"}, {"name": "b's token", "csrf": token_b}):
            r = await a.post("/settings/keys", data=data)
            assert r.status_code == 403 and "This form has expired" in r.text, (data, r.status_code)
        assert "No keys yet" in (await a.get("/settings")).text
        # A page from another site may not post here at all.
        token_a = ofmcp.csrf_of((await a.get("/settings")).text)
        r = await a.post("/settings/keys", data={"name": "cross-site", "csrf": token_a}, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        assert "No keys yet" in (await a.get("/settings")).text
        # The page's own form works, and says so once.
        r = await a.post("/settings/keys", data={"name": "laptop", "csrf": token_a})
        assert r.status_code == 303 and r.headers["location"] == "/settings#new-key"
        page = (await a.get("/settings")).text
        assert "Key “laptop” created." in page and ofmcp.re.search(r"of_mcp_[0-9a-f]{40}", page)
        again = (await a.get("/settings")).text
        assert "created." not in again and not ofmcp.re.search(r"of_mcp_[0-9a-f]{40}", again)
        # Signing out and in again changes the token: a form opened before no longer posts.
        assert (await a.post("/signout", data={"csrf": token_a})).status_code == 303
        await web_sign_in(a, "csrf-a@example.org", PASSWORD)
        r = await a.post("/settings/keys", data={"name": "stale", "csrf": token_a})
        assert r.status_code == 403


async def test_sessions_are_httponly_cookies_kept_hashed_and_ended_on_sign_out(server):
    async with web_client(server.base, ip="127.0.0.133") as web:
        first = await web.get("/signin")
        csrf_cookie = cookie_names(first)["of_csrf"]
        assert "HttpOnly" in csrf_cookie and "SameSite=Strict" in csrf_cookie and "Path=/" in csrf_cookie
        for header, value in (("content-security-policy", "script-src 'self'"), ("content-security-policy", "frame-ancestors 'none'"),
                              ("x-frame-options", "DENY"), ("x-content-type-options", "nosniff"), ("cache-control", "no-store")):
            assert value in first.headers[header], (header, first.headers.get(header))
        r = await web_post(web, "/signup", "/signup", {"email": "cookie@example.org", "password": PASSWORD})
        session = cookie_names(r)["of_session"]
        assert "HttpOnly" in session and "SameSite=Lax" in session and "Path=/" in session and "Max-Age=" in session
        assert "Secure" not in session  # served over http here; https public URLs make it Secure and __Host-
        secret = web.cookies["of_session"]
        hashes = [row[0] for row in ofmcp.db_rows(server.home, "SELECT id_hash FROM web_sessions")]
        assert hashlib.sha256(secret.encode()).hexdigest() in hashes and secret not in hashes

        assert (await web.get("/settings")).status_code == 200
        r = await web_post(web, "/settings", "/signout")
        assert r.status_code == 303 and cookie_names(r)["of_session"].count("Max-Age=0") == 1
        # The old cookie, replayed, signs no one in: the session is gone on the server.
        async with web_client(server.base, ip="127.0.0.133") as replay:
            replay.cookies.set("of_session", secret)
            assert (await replay.get("/settings")).status_code == 303

    # Signing out everywhere ends the account's other browsers.
    async with web_client(server.base) as one, web_client(server.base) as two:
        await web_sign_up(one, "everywhere@example.org", PASSWORD)
        await web_sign_in(two, "everywhere@example.org", PASSWORD)
        assert (await two.get("/settings")).status_code == 200
        r = await web_post(one, "/settings", "/settings/sign-out-everywhere")
        assert r.status_code == 303
        assert (await two.get("/settings")).status_code == 303
        assert (await one.get("/settings")).status_code == 303


async def test_sign_in_problems_name_the_field_and_keep_what_was_typed(server):
    async with web_client(server.base) as web:
        r = await web_post(web, "/signup", "/signup", {"email": "not-an-email", "password": "short"})
        assert r.status_code == 400
        assert 'id="email-error"' in r.text and 'id="password-error"' in r.text and 'value="not-an-email"' in r.text
        assert "short" not in r.text.split('id="password"')[1].split(">")[0], "the password is never sent back"
        await web_sign_up(web, "twice@example.org", PASSWORD)
    async with web_client(server.base) as web:
        r = await web_post(web, "/signup", "/signup", {"email": "twice@example.org", "password": PASSWORD})
        assert r.status_code == 409 and "already exists" in r.text
        # Ten sign-ins per email at once, then one every three minutes.
        for _ in range(10):
            r = await web_post(web, "/signin", "/signin", {"email": "twice@example.org", "password": "wrong password"})
            assert r.status_code == 401 and "Wrong email or password" in r.text
        r = await web_post(web, "/signin", "/signin", {"email": "twice@example.org", "password": PASSWORD})
        assert r.status_code == 429 and "Too many sign-ins for this email: wait" in r.text, r.text
    # After signing in, `next` leads back, but never to another site.
    async with web_client(server.base) as web:
        await web_sign_up(web, "next@example.org", PASSWORD)
    for nxt, where in (("/builds?status=failed", "/builds?status=failed"), ("//evil.example/x", "/"), ("https://evil.example/", "/"), ("/\\evil.example", "/")):
        async with web_client(server.base) as fresh:
            r = await web_post(fresh, "/signin", "/signin", {"email": "next@example.org", "password": PASSWORD, "next": nxt})
            assert r.status_code == 303 and r.headers["location"] == where, (nxt, r.status_code, r.headers.get("location"))


async def test_hostile_input_is_escaped_bounded_and_refused_with_its_field(server):
    async with web_client(server.base, ip="127.0.0.134") as web:
        await web_sign_up(web, "hostile-web@example.org", PASSWORD)
        script = '<script>alert("x")</script>'
        r = await web_post(web, "/settings", "/settings/keys", {"name": script})
        assert r.status_code == 303
        page = (await web.get("/settings")).text
        assert script not in page and "&lt;script&gt;" in page
        for q in (script, '"><img src=x onerror=alert(1)>', "x" * 30_000, "$(rm -rf /); `id` | cat /etc/passwd"):
            r = await web.get("/catalog", params={"q": q})
            assert r.status_code in (200, 414, 431), r.status_code
            if r.status_code == 200:
                assert "<script>alert" not in r.text and "<img src=x" not in r.text and len(r.text) < 200_000
        r = await web.get("/catalog", params={"category": "no-such-category"})
        assert r.status_code == 200 and "unknown category" in r.text
        for path in ("/catalog/..%2F..%2Fetc%2Fpasswd", "/catalog/%2e%2e", "/builds/..%2Fsecrets", "/builds/abc'%3B--", "/vms/..%2Fetc", "/test-runs/%00"):
            r = await web.get(path)
            assert r.status_code in (400, 404) and "root:" not in r.text, (path, r.status_code)
        r = await web.get("/builds/0123456789ab/files/..%2F..%2Fsecrets%2Flink-signing.key")
        assert r.status_code == 404
        # A VM name that is not one, and numbers that are not numbers: the message names the field.
        r = await web_post(web, "/builds", "/builds/0123456789ab/vms", {"name": "../etc", "memory_mb": "1024", "vcpus": "1"})
        assert r.status_code == 303
        assert "is not a VM name" in (await web.get(r.headers["location"].split("#")[0])).text
        r = await web_post(web, "/builds", "/builds/0123456789ab/vms", {"name": "ok", "memory_mb": "1e9; reboot", "vcpus": "x"})
        assert r.status_code == 303
        shown = (await web.get(r.headers["location"].split("#")[0])).text
        assert "memory_mb: `1e9; reboot` is not a whole number" in shown and "vcpus: `x` is not a whole number" in shown
        # A well-formed request for a build that is not this account's: not found.
        r = await web_post(web, "/builds", "/builds/0123456789ab/vms", {"name": "ok", "memory_mb": "1024", "vcpus": "1"})
        assert r.status_code == 404 and "Build not found" in r.text
        # Garbage and oversized form bodies are refused, with a page that says why.
        token = ofmcp.csrf_of((await web.get("/settings")).text)
        r = await web.post("/settings/keys", content=b"csrf=" + token.encode() + b"&name=%ZZ%", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 303  # taken literally, as browsers mean it
        r = await web.post("/settings/keys", content=b"csrf=" + token.encode() + b"&name=" + b"x" * 200_000, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413 and "Form too large" in r.text
        r = await web_post(web, "/settings", "/settings/keys", {"name": "n" * 500})
        assert r.status_code == 303
        assert "name: give 1 to 64 characters" in (await web.get("/settings")).text


async def test_an_address_brings_its_work_into_the_account_from_settings(server, connect):
    ip = "127.0.0.135"
    async with connect("sse", ip=ip) as anonymous:
        await ok(anonymous, "create_recipe_from_template", {"template_id": "debian-minimal-server", "name": "from-my-address"})
    async with web_client(server.base, ip=ip) as web:
        await web_sign_up(web, "claimer@example.org", PASSWORD)
        page = (await web.get("/settings")).text
        assert "127.0.0.135" in page and "1 recipes" in page
        r = await web_post(web, "/settings", "/settings/claim")
        assert r.status_code == 303
        assert "Moved into your account: 1 recipes" in (await web.get("/settings")).text
        assert "from-my-address" in (await web.get("/catalog?q=from-my-address")).text
    async with connect("sse", ip=ip) as anonymous:
        assert "from-my-address" not in str(await ok(anonymous, "list_recipes", {}))


async def test_operators_see_what_only_operators_should_on_the_plugins_page(server, of_bin):
    import subprocess

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([of_bin, "--home", str(server.home), *args], input=stdin, env=ofmcp.server_env(), capture_output=True, text=True, timeout=60)

    made = cli("account", "create", "operator@example.org", "--operator", stdin=PASSWORD + "\n")
    assert made.returncode == 0 and "an operator" in made.stdout, made.stderr
    plugins_dir = str(server.home / "plugins")
    async with web_client(server.base) as visitor:
        page = (await visitor.get("/plugins")).text
        assert "docker" in page and "verified" in page and "CPU per call" in page and plugins_dir not in page
    async with web_client(server.base) as web:
        await web_sign_in(web, "operator@example.org", PASSWORD)
        assert plugins_dir in (await web.get("/plugins")).text
        assert "operator" in (await web.get("/settings")).text
        # Taken back, from the next page on.
        taken = cli("account", "operator", "operator@example.org", "--revoke")
        assert taken.returncode == 0 and "no longer" in taken.stdout, taken.stderr
        assert plugins_dir not in (await web.get("/plugins")).text
    assert cli("account", "operator", "nobody@example.org").returncode != 0


async def test_the_plugins_page_shows_what_each_plugin_may_touch_and_what_it_was_granted(of_bin, tmp_path):
    import html
    import re
    import subprocess

    home = ofmcp.make_home(of_bin, tmp_path / "home")
    # docker's one privilege taken back: the page must say so, not just list it.
    taken = subprocess.run([of_bin, "--home", str(home), "plugin", "grant", "docker", "none"], env=ofmcp.server_env(), capture_output=True, text=True, timeout=60)
    assert taken.returncode == 0, taken.stderr
    srv = ofmcp.Server.start(of_bin, home, tmp_path)
    try:
        async with web_client(srv.base) as visitor:
            page = html.unescape((await visitor.get("/plugins")).text)
    finally:
        srv.stop()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"<tr><td><strong>([a-z-]+)</strong>.*?</tr>", page, re.S)}
    assert {"docker", "firewall", "gxp", "hardening", "ssh"} <= set(rows), sorted(rows)
    docker, hardening, gxp = rows["docker"], rows["hardening"], rows["gxp"]
    # What a plugin may touch, from its signed bundle's declaration.
    assert "packages: </span>docker.io, docker-cli" in docker, docker
    assert "files: </span>/etc/docker/daemon.json" in docker
    assert "runs: </span>aideinit (from aide-common), sed (from sed)" in gxp, gxp
    # Each privilege with whether this operator granted it.
    assert "privileged-groups — not granted" in docker and "— granted" not in docker
    assert "pam — granted" in hardening and "package-sources — granted" in hardening, hardening
    assert "not granted" not in hardening
    # A privilege's meaning is one hover away.
    assert re.search(r'title="[^"]+"[^>]*>privileged-groups — not granted', docker), docker


async def test_cookies_are_secure_and_host_prefixed_behind_https(of_bin, tmp_path):
    home = ofmcp.make_home(of_bin, tmp_path / "home")
    srv = ofmcp.Server.start(of_bin, home, tmp_path, extra_args=("--public-url", "https://console.example.org", "--allowed-host", "console.example.org"))
    try:
        async with web_client(srv.base) as web:
            r = await web.get("/signin", headers={"Host": "console.example.org"})
            assert r.status_code == 200
            csrf = cookie_names(r)["__Host-of_csrf"]
            assert "Secure" in csrf and "HttpOnly" in csrf and "Path=/" in csrf and "Domain" not in csrf
            assert "https://console.example.org/api/mcp/sse" in (await web.get("/", headers={"Host": "console.example.org"})).text
    finally:
        srv.stop()
