"""Isolation over every tool and every HTTP route: account A owns a recipe, a
completed build, a running VM, a test run and a connected OAuth client;
account B (an API key), an anonymous address C and account D (signed in
through OAuth) call everything with A's ids. Nothing is revealed (not even
existence: "not found") and nothing of A's changes."""

from __future__ import annotations

import pytest
from mcp.types import PromptReference, ResourceTemplateReference

import ofmcp
from ofmcp import TOOLS, ok, tool_error, web_client, web_post, web_sign_in
from test_accounts import PASSWORD, client, sign_up
from test_builds import wait_for_build

pytestmark = pytest.mark.anyio

# Tools that take no id of anyone's: nothing of A's to reach through them (their listings are checked below).
NO_IDS = {"list_recipe_categories", "list_features", "validate_recipe", "list_recipes", "list_builds", "list_vms"}


@pytest.mark.deadline(900)
async def test_no_tool_and_no_route_reaches_another_owners_things(server):
    token_a, key_a = await sign_up(server, "owner-a@example.org")
    token_b, key_b = await sign_up(server, "owner-b@example.org")
    # A connected client of A's, and account D, which signs in through OAuth only.
    person_a = ofmcp.Person(server.base, ip="127.0.0.101")
    await web_sign_in(person_a.web, "owner-a@example.org", PASSWORD)
    oauth_a = (await ofmcp.oauth_access_token(server.base, person_a))["access_token"]
    a_grant = ofmcp.db_rows(server.home, "SELECT g.id FROM oauth_grants g JOIN accounts a ON a.id = g.account_id WHERE a.email = 'owner-a@example.org'")[0][0]
    await person_a.aclose()
    person_d = await ofmcp.Person(server.base, ip="127.0.0.105").sign_up("owner-d@example.org")
    oauth_d = (await ofmcp.oauth_access_token(server.base, person_d))["access_token"]
    await person_d.aclose()
    a_auth = {"Authorization": f"Bearer {key_a}"}
    async with ofmcp.unwrapped(ofmcp.http_session("http", server.base, ip="127.0.0.101", headers=a_auth)) as a:
        recipe_id = (await ok(a, "create_recipe_from_template", {"template_id": "debian-minimal-server", "name": "a-secret"}))["id"]
        build_id = (await ok(a, "create_build", {"recipe": {"name": "a-secret-box", "base_image": "debian-bookworm"}}))["build_id"]
        assert (await wait_for_build(a, build_id, budget=600))["status"] == "completed"
        await ok(a, "create_vm", {"build_id": build_id, "name": "a-vm"})
        run_id = (await ok(a, "run_tests", {"build_id": build_id, "tests": ["base"]}))["run_id"]
        iso_url = (await ok(a, "get_iso_download_url", {"build_id": build_id}))["url"]
        console_url = (await ok(a, "get_vm_console_url", {"vm_name": "a-vm"}))["url"]
        before = (
            await ok(a, "get_build", {"build_id": build_id}),
            await ok(a, "list_vms", {}),
            await ok(a, "get_recipe", {"recipe_id": recipe_id}),
        )

    calls = {
        "get_recipe": {"recipe_id": recipe_id},
        "plan_recipe": {"recipe_id": recipe_id},
        "create_recipe_from_template": {"template_id": recipe_id, "name": "stolen"},
        "create_build": {"recipe": recipe_id},
        "get_build": {"build_id": build_id},
        "get_build_status": {"build_id": build_id},
        "get_iso_download_url": {"build_id": build_id},
        "retry_build": {"build_id": build_id},
        "cancel_build": {"build_id": build_id},
        "get_build_log": {"build_id": build_id},
        "delete_build": {"build_id": build_id},
        "create_vm": {"build_id": build_id, "name": "stolen"},
        "start_vm": {"vm_name": "a-vm"},
        "stop_vm": {"vm_name": "a-vm", "force": True},
        "delete_vm": {"vm_name": "a-vm"},
        "get_vm_serial_log": {"vm_name": "a-vm"},
        "get_vm_console_url": {"vm_name": "a-vm"},
        "run_tests": {"build_id": build_id},
        "get_test_results": {"run_id": run_id},
        "list_test_runs": {"build_id": build_id},
        "stop_test_run": {"run_id": run_id},
    }
    assert set(calls) | NO_IDS == TOOLS, sorted(TOOLS - set(calls) - NO_IDS)
    # Every resource template, with A's ids; and every argument a completion fills with ids.
    resources = {
        "build://{build_id}": f"build://{build_id}",
        "build://{build_id}/log": f"build://{build_id}/log",
        "test-run://{run_id}": f"test-run://{run_id}",
        "recipe://{recipe_id}": f"recipe://{recipe_id}",
        "vm://{vm_name}": "vm://a-vm",
    }
    async with ofmcp.unwrapped(ofmcp.http_session("http", server.base, ip="127.0.0.101", headers=a_auth)) as a:
        templates = {t.uri_template: t for t in (await a.list_resource_templates()).resource_templates}
        assert set(templates) == set(resources), sorted(set(templates) ^ set(resources))
        for uri in resources.values():
            assert (await a.read_resource(uri)).contents, uri
        listed = {str(r.uri) for r in (await a.list_resources()).resources}
        assert set(resources.values()) <= listed, sorted(set(resources.values()) - listed)

    for who, ip, headers in (("account B", "127.0.0.102", {"Authorization": f"Bearer {key_b}"}), ("address C", "127.0.0.103", None),
                             ("account D (OAuth)", "127.0.0.105", {"Authorization": f"Bearer {oauth_d}"})):
        async with ofmcp.unwrapped(ofmcp.http_session("sse", server.base, ip=ip, headers=headers)) as s:
            for tool, args in calls.items():
                text = await tool_error(s, tool, args)
                assert "not found" in text.lower() or (tool == "create_recipe_from_template" and "template" in text.lower()), (who, tool, text)
                # Only the id the caller gave may come back, never anything about it.
                assert "a-secret-box" not in text and "completed" not in text, (who, tool, text)
            assert build_id not in str(await ok(s, "list_builds", {}))
            assert (await ok(s, "list_vms", {}))["count"] == 0
            assert recipe_id not in str(await ok(s, "list_recipes", {}))
            assert (await ok(s, "list_test_runs", {}))["count"] == 0
            for uri in resources.values():
                for attempt in (s.read_resource, s.subscribe_resource):
                    with pytest.raises(Exception) as e:
                        await attempt(uri)
                    assert "not found" in str(e.value).lower(), (who, uri, e.value)
                    assert "a-secret-box" not in str(e.value), (who, uri, e.value)
            listed = str(await s.list_resources())
            assert build_id not in listed and run_id not in listed and "a-vm" not in listed and "a-secret" not in listed, who
            for template, uri in resources.items():
                variable = template.split("{")[1].split("}")[0]
                done = await s.complete(ResourceTemplateReference(type="ref/resource", uri=template), {"name": variable, "value": ""})
                found = " ".join(done.completion.values)
                assert build_id not in found and run_id not in found and "a-vm" not in found and "a-secret" not in found, (who, template, found)
            for prompt, argument in (("test_latest_build", "build_id"), ("show_test_results", "run_id")):
                done = await s.complete(PromptReference(type="ref/prompt", name=prompt), {"name": argument, "value": ""})
                assert build_id not in done.completion.values and run_id not in done.completion.values, (who, prompt, done)

        # HTTP routes: without A's signed links nothing opens; nor with a forged or re-pointed one.
        async with client(server, ip=ip, token=headers["Authorization"].removeprefix("Bearer ") if headers else None) as http:
            path, _, query = iso_url.removeprefix(server.base).partition("?")
            for url in (path, path + "?token=forged", path + "?" + query.replace(query[-6:], "AAAAAA")):
                r = await http.get(url)
                assert r.status_code in (403, 404) and len(r.content) < 1000, (who, url, r.status_code)
            console_path, _, console_query = console_url.removeprefix(server.base).partition("?")
            for url in (console_path, console_path + "?token=forged"):
                r = await http.get(url)
                assert r.status_code in (403, 404) and "a-vm" not in r.text, (who, url, r.status_code)
            # The websocket refuses the upgrade itself (a plain GET is not even a websocket request).
            r = await http.get(console_path + "/ws?token=forged", headers={
                "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "binary"})
            assert r.status_code in (403, 404), (who, r.status_code)

    # The web console, with A's ids: account B signed in gets "not found" for every page, file, part
    # and form; a visitor is sent to sign in. B's own lists show nothing of A's.
    async with client(server, token=token_a) as http:
        a_key_id = (await http.get("/api/mcp-keys")).json()["keys"][0]["key_id"]
    pages = [f"/builds/{build_id}", f"/builds/{build_id}?part=status",
             *(f"/builds/{build_id}/files/{f}" for f in ("iso", "log", "packages", "sbom")),
             "/vms/a-vm", "/vms/a-vm?part=serial", f"/test-runs/{run_id}", f"/test-runs/{run_id}?part=results",
             f"/test-runs/{run_id}/junit.xml", f"/catalog/{recipe_id}"]
    forms = [f"/builds/{build_id}/cancel", f"/builds/{build_id}/retry", f"/builds/{build_id}/delete",
             f"/builds/{build_id}/vms", f"/builds/{build_id}/test-runs", "/vms/a-vm/start", "/vms/a-vm/stop",
             "/vms/a-vm/delete", f"/test-runs/{run_id}/stop", f"/settings/keys/{a_key_id}/revoke",
             f"/settings/connections/{a_grant}/remove"]
    async with web_client(server.base, ip="127.0.0.102") as b:
        await web_sign_in(b, "owner-b@example.org", PASSWORD)
        for path in pages:
            r = await b.get(path)
            assert r.status_code == 404 and "a-secret-box" not in r.text and "completed" not in r.text, (path, r.status_code)
        for path in forms:
            r = await web_post(b, "/settings", path, {"name": "stolen", "memory_mb": "512", "vcpus": "1", "force": "true"})
            assert r.status_code == 404 and "a-secret" not in r.text, (path, r.status_code)
        for path in ("/", "/builds", "/vms", "/test-runs", "/settings", "/catalog"):
            text = (await b.get(path)).text
            assert build_id not in text and "a-vm" not in text and run_id not in text and "a-secret" not in text, path
    async with web_client(server.base, ip="127.0.0.103") as visitor:
        for path in pages:
            r = await visitor.get(path)
            assert (r.status_code, r.headers.get("location", "")[:15]) in ((303, "/signin?next=%2"), (401, ""), (404, "")), (path, r.status_code)
            # Only the path the visitor gave may come back (in the sign-in link), never anything about it.
            assert "a-secret-box" not in r.text and "completed" not in r.text, path
        for path in forms:
            r = await web_post(visitor, "/signin", path, {"name": "stolen"})
            assert r.status_code == 303 and r.headers["location"] == "/signin", (path, r.status_code)

    # Account B's session cannot touch A's keys either.
    async with client(server, token=token_b) as http:
        assert "owner-a" not in (await http.get("/api/mcp-keys")).text

    # Nothing of A's changed: its connected client still works, and sees A's things.
    async with ofmcp.unwrapped(ofmcp.http_session("sse", server.base, ip="127.0.0.106", headers={"Authorization": f"Bearer {oauth_a}"})) as a:
        assert recipe_id in str(await ok(a, "list_recipes", {}))
    async with ofmcp.unwrapped(ofmcp.http_session("http", server.base, ip="127.0.0.104", headers=a_auth)) as a:
        after_build = await ok(a, "get_build", {"build_id": build_id})
        assert after_build["status"] == before[0]["status"] == "completed"
        assert (await ok(a, "list_vms", {}))["vms"][0]["state"] == "running"
        assert (await ok(a, "get_recipe", {"recipe_id": recipe_id}))["recipe_digest"] == before[2]["recipe_digest"]
        await ok(a, "stop_test_run", {"run_id": run_id})
        await ok(a, "delete_vm", {"vm_name": "a-vm"})
