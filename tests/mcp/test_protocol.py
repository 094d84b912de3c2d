"""The MCP surface around the tools, through the official Python SDK on both HTTP transports: prompts for what
people ask (their arguments checked and completed), completions owner-scoped, builds, test runs, recipes and VMs
as resources (a missing one names its URI in `data`), subscriptions that tell a client when a build changes, and
log messages for build progress when a client asks for them."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError as McpError
from mcp.types import PromptReference, ResourceTemplateReference

import ofmcp
from ofmcp import ok

pytestmark = pytest.mark.anyio

PROMPTS = {"build_server", "build_template", "test_latest_build", "show_test_results", "create_vm_from_latest_build",
           "configure_feature", "review_builds"}
TEMPLATES = {"build://{build_id}", "build://{build_id}/log", "test-run://{run_id}", "recipe://{recipe_id}", "vm://{vm_name}"}


@asynccontextmanager
async def listening(server, ip: str):
    """A Streamable HTTP session that keeps every notification it receives (in `.seen`)."""
    seen: list = []

    async def handler(message) -> None:
        if not isinstance(message, Exception):
            seen.append(message)

    async with ofmcp.http_client(ip) as client:
        async with streamable_http_client(f"{server.base}/api/mcp", http_client=client) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=ofmcp.REQUEST_TIMEOUT, message_handler=handler) as s:
                await s.initialize()
                s.seen = seen
                yield s


def notified(seen: list, method: str) -> list:
    out = []
    for m in seen:
        root = getattr(m, "root", m)
        if getattr(root, "method", None) == method:
            out.append(root)
    return out


async def eventually(check, budget: float = 15.0):
    deadline = asyncio.get_running_loop().time() + budget
    while not (found := check()):
        if asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.2)
    return found


@pytest.mark.parametrize("kind", ["sse", "http"])
async def test_prompts_say_what_to_call_and_name_a_bad_argument(connect, kind):
    async with connect(kind, ip="127.0.0.141") as s:
        listed = {p.name: p for p in (await s.list_prompts()).prompts}
        assert set(listed) == PROMPTS, sorted(listed)
        template = listed["build_template"]
        assert [(a.name, a.required) for a in template.arguments] == [("template", True), ("packages", False)]

        # The reference document's own example, as one prompt.
        got = await s.get_prompt("build_template", {"template": "gxp-medtech", "packages": "vim, htop"})
        text = got.messages[0].content.text
        assert got.messages[0].role == "user"
        assert "`gxp-medtech` template with these extra packages: vim, htop" in text, text
        assert "create_recipe_from_template" in text and "create_build" in text and "get_iso_download_url" in text, text

        for name, args, said in (
            ("build_template", {"template": "gxp-medtec"}, "argument `template`: unknown template `gxp-medtec`; did you mean `gxp-medtech`?"),
            ("build_server", {"features": "ssh, dockr"}, "unknown feature `dockr`; did you mean `docker`?"),
            ("build_server", {}, "argument `features`: required"),
            ("no_such_prompt", {}, "unknown prompt `no_such_prompt`"),
        ):
            with pytest.raises(McpError) as e:
                await s.get_prompt(name, args)
            assert said in e.value.error.message, (name, e.value.error.message)


async def test_completions_fill_names_and_only_the_callers_ids(connect):
    async with connect("http", ip="127.0.0.142") as s:
        done = await s.complete(PromptReference(type="ref/prompt", name="build_template"), {"name": "template", "value": "gxp"})
        assert done.completion.values == ["gxp-medtech"], done
        done = await s.complete(PromptReference(type="ref/prompt", name="build_server"), {"name": "features", "value": "ssh, dock"})
        assert done.completion.values == ["ssh, docker"], done
        done = await s.complete(PromptReference(type="ref/prompt", name="build_server"), {"name": "base_image", "value": ""})
        assert done.completion.values == ["debian-bookworm", "debian-trixie"], done
        # An argument of free text, or one nobody has, completes to nothing (and is no error).
        for ref, name in ((PromptReference(type="ref/prompt", name="build_template"), "packages"),
                          (PromptReference(type="ref/prompt", name="nope"), "x")):
            assert (await s.complete(ref, {"name": name, "value": "v"})).completion.values == []

        # An option completes from the feature chosen before it (the request's context); with none, nothing.
        configure = PromptReference(type="ref/prompt", name="configure_feature")
        done = await s.complete(configure, {"name": "option", "value": "log"}, context_arguments={"feature": "docker"})
        assert set(done.completion.values) == {"log_max_size", "log_max_file"}, done
        assert (await s.complete(configure, {"name": "option", "value": ""})).completion.values == []
        done = await s.complete(configure, {"name": "feature", "value": "dock"})
        assert done.completion.values == ["docker"], done
        done = await s.complete(PromptReference(type="ref/prompt", name="review_builds"), {"name": "status", "value": "c"})
        assert set(done.completion.values) == {"completed", "cancelled"}, done

        recipe = (await ok(s, "create_recipe_from_template", {"template_id": "debian-minimal-server", "name": "completed-mine"}))["id"]
        recipe_ref = ResourceTemplateReference(type="ref/resource", uri="recipe://{recipe_id}")
        done = await s.complete(recipe_ref, {"name": "recipe_id", "value": "completed-"})
        assert done.completion.values == [recipe], done
    # Another address is another owner: its completions do not know the recipe.
    async with connect("http", ip="127.0.0.143") as other:
        done = await other.complete(recipe_ref, {"name": "recipe_id", "value": "completed-"})
        assert done.completion.values == [], done


async def test_resources_are_listed_read_and_a_missing_one_names_its_uri(connect):
    async with connect("sse", ip="127.0.0.144") as s:
        templates = {t.uri_template for t in (await s.list_resource_templates()).resource_templates}
        assert templates == TEMPLATES, sorted(templates)
        listed = {str(r.uri) for r in (await s.list_resources()).resources}
        assert "recipe://gxp-medtech" in listed, sorted(listed)[:10]
        read = await s.read_resource("recipe://gxp-medtech")
        body = json.loads(read.contents[0].text)
        assert read.contents[0].mime_type == "application/json" and body["id"] == "gxp-medtech", body
        assert len(body["recipe_digest"]) == 64, body
        for uri in ("build://0123456789ab", "test-run://0123456789ab", "vm://nobody", "recipe://nothing-here",
                    "test://static-text", "build://../../etc/passwd"):
            with pytest.raises(McpError) as e:
                await s.read_resource(uri)
            assert e.value.error.code == -32002 and e.value.error.data == {"uri": uri}, (uri, e.value.error)


@pytest.mark.deadline(300)
async def test_a_subscriber_is_told_when_its_build_changes_and_progress_is_logged(server):
    async with listening(server, "127.0.0.145") as s:
        created = await ok(s, "create_build", {"recipe": {"name": "watched", "base_image": "debian-bookworm"}})
        uri = f"build://{created['build_id']}"
        await s.subscribe_resource(uri)
        await s.set_logging_level("info")
        # A wait on the build logs its progress, once the client asked for log messages.
        await ok(s, "get_build_status", {"build_id": created["build_id"], "wait_seconds": 1})
        logged = await eventually(lambda: [m for m in notified(s.seen, "notifications/message") if m.params.logger == "openfactory"])
        assert logged and "percent" in logged[0].params.data, s.seen
        # Cancelling changes the build: the subscriber is told, with the build's URI.
        await ok(s, "cancel_build", {"build_id": created["build_id"]})
        updates = await eventually(lambda: [m for m in notified(s.seen, "notifications/resources/updated") if str(m.params.uri) == uri])
        assert updates, f"no notifications/resources/updated for {uri}: {s.seen}"
        final = json.loads((await s.read_resource(uri)).contents[0].text)
        assert final["status"] in ("cancelled", "running"), final
        await s.unsubscribe_resource(uri)

    # Another owner cannot subscribe to it.
    async with listening(server, "127.0.0.146") as other:
        with pytest.raises(McpError) as e:
            await other.subscribe_resource(uri)
        assert e.value.error.data == {"uri": uri} and "watched" not in e.value.error.message, e.value.error


# ------------------------------------------------------------------ questions (elicitation; input-required on 2026-07-28)


def answering(*answers):
    """An elicitation callback that gives `answers` in turn and keeps what it was asked (in `.asked`)."""
    from mcp.types import ElicitResult

    queue = list(answers)

    async def callback(context, params):
        callback.asked.append(params)
        return ElicitResult(**queue.pop(0))

    callback.asked = []
    return callback


@pytest.mark.parametrize("kind", ["sse", "http", "stdio"])
@pytest.mark.deadline(300)
async def test_a_nameless_build_and_a_deletion_ask_a_client_that_can_ask(connect, kind):
    nameless = {"recipe": {"base_image": "debian-bookworm", "features": ["ssh"]}}
    ip = {"sse": "127.0.0.149", "http": "127.0.0.150", "stdio": "127.0.0.1"}[kind]
    # A client that cannot ask its user: the build is named after its base and features.
    async with connect(kind, ip=ip) as s:
        plain = await ok(s, "create_build", nameless)
        assert (await ok(s, "get_build", {"build_id": plain["build_id"]}))["recipe"]["name"] == "debian-bookworm-ssh"
        await ok(s, "cancel_build", {"build_id": plain["build_id"]})
    asker = answering({"action": "accept", "content": {"name": "named-by-me"}},
                      {"action": "accept", "content": {"name": "Not A Name"}},
                      {"action": "decline"},
                      {"action": "accept", "content": {"confirm": True}})
    async with connect(kind, ip=ip, elicitation_callback=asker) as s:
        created = await ok(s, "create_build", nameless)
        assert asker.asked[0].requested_schema["properties"]["name"]["default"] == "debian-bookworm-ssh", asker.asked[0]
        assert (await ok(s, "get_build", {"build_id": created["build_id"]}))["recipe"]["name"] == "named-by-me"
        # A bad answer is refused with the field and the fix, and nothing is queued.
        before = len((await ok(s, "list_builds", {}))["builds"])
        said = await ofmcp.tool_error(s, "create_build", nameless)
        assert said.startswith("name: `Not A Name`") and "nothing was queued" in said, said
        assert len((await ok(s, "list_builds", {}))["builds"]) == before
        # A deletion declined deletes nothing; confirmed, it deletes.
        await ok(s, "cancel_build", {"build_id": created["build_id"]})
        await wait_for_status(s, created["build_id"], ("cancelled", "failed", "completed"))
        said = await ofmcp.tool_error(s, "delete_build", {"build_id": created["build_id"]})
        assert said == "nothing was deleted: it was not confirmed", said
        assert created["build_id"] in asker.asked[2].message
        await ok(s, "get_build", {"build_id": created["build_id"]})
        await ok(s, "delete_build", {"build_id": created["build_id"]})
        assert "not found" in await ofmcp.tool_error(s, "get_build", {"build_id": created["build_id"]})
        assert len(asker.asked) == 4


async def wait_for_status(s, build_id: str, statuses, budget: float = 60.0) -> dict:
    deadline = asyncio.get_running_loop().time() + budget
    while (got := await ok(s, "get_build_status", {"build_id": build_id, "wait_seconds": 2}))["status"] not in statuses:
        assert asyncio.get_running_loop().time() < deadline, got
    return got


# ------------------------------------------------------------------ tasks (2026-07-28, SEP-2663), on the wire

TASKS = "io.modelcontextprotocol/tasks"


async def modern(http, method: str, params: dict, name: str | None = None, tasks: bool = True, elicitation: bool = False) -> dict:
    """One stateless 2026-07-28 request (no session): its JSON-RPC answer."""
    capabilities = {"extensions": {TASKS: {}}} if tasks else {}
    if elicitation:
        capabilities["elicitation"] = {"form": {}}
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "openfactory-tests", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": capabilities}
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    r = await http.post("/api/mcp", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": meta}},
                        headers=headers)
    assert r.status_code in (200, 400), r.text
    for line in r.text.splitlines() if r.headers["content-type"].startswith("text/event-stream") else [r.text]:
        body = line.removeprefix("data: ")
        if body.startswith("{"):
            return json.loads(body)
    raise AssertionError(r.text)


@pytest.mark.deadline(300)
async def test_a_build_asked_for_as_a_task_is_its_record_and_cancels(server):
    recipe = {"recipe": {"name": "tasked", "base_image": "debian-bookworm"}}
    async with ofmcp.http_client("127.0.0.147") as http:
        http.base_url = server.base
        # A client that declares the tasks extension gets a task named after the build record.
        created = (await modern(http, "tools/call", {"name": "create_build", "arguments": recipe}, name="create_build"))["result"]
        assert created["resultType"] == "task" and created["status"] == "working", created
        task_id = created["taskId"]
        assert task_id.startswith("build:") and created["pollIntervalMs"] > 0, created
        build_id = task_id.removeprefix("build:")
        got = (await modern(http, "tasks/get", {"taskId": task_id}, name=task_id))["result"]
        assert got["taskId"] == task_id and got["status"] in ("working", "completed"), got
        # Cancelling the task cancels the build; the task then says so (or, if it finished first, completed).
        assert (await modern(http, "tasks/cancel", {"taskId": task_id}, name=task_id))["result"] == {"resultType": "complete"}
        deadline = asyncio.get_running_loop().time() + 60
        while (got := (await modern(http, "tasks/get", {"taskId": task_id}, name=task_id))["result"])["status"] == "working":
            assert asyncio.get_running_loop().time() < deadline, got
            await asyncio.sleep(1)
        assert got["status"] in ("cancelled", "completed"), got
        # A client that does not declare the extension keeps the immediate answer.
        plain = (await modern(http, "tools/call", {"name": "create_build", "arguments": recipe}, name="create_build", tasks=False))["result"]
        assert plain.get("resultType") != "task" and plain["structuredContent"]["build_id"], plain
        await modern(http, "tools/call", {"name": "cancel_build", "arguments": {"build_id": plain["structuredContent"]["build_id"]}}, name="cancel_build")
        # A task id that is nobody's, or not a task id at all, is invalid params.
        for bad in ("build:000000000000", "vm:web", "nonsense"):
            error = (await modern(http, "tasks/get", {"taskId": bad}, name=bad))["error"]
            assert error["code"] == -32602 and "taskId" in error["message"], error
    # Another owner cannot see or cancel it.
    async with ofmcp.http_client("127.0.0.148") as http:
        http.base_url = server.base
        for method in ("tasks/get", "tasks/cancel"):
            error = (await modern(http, method, {"taskId": task_id}, name=task_id))["error"]
            assert error["code"] == -32602 and "tasked" not in error["message"] and build_id in error["message"], error


@pytest.mark.deadline(300)
async def test_on_2026_07_28_a_question_is_an_input_required_result(server):
    nameless = {"name": "create_build", "arguments": {"recipe": {"base_image": "debian-trixie"}}}
    async with ofmcp.http_client("127.0.0.151") as http:
        http.base_url = server.base
        asked = (await modern(http, "tools/call", nameless, name="create_build", tasks=False, elicitation=True))["result"]
        assert asked["resultType"] == "input_required", asked
        form = asked["inputRequests"]["build_name"]
        assert form["method"] == "elicitation/create" and form["params"]["mode"] == "form", form
        assert form["params"]["requestedSchema"]["properties"]["name"]["default"] == "debian-trixie", form
        # Nothing was queued by the question.
        listed = (await modern(http, "tools/call", {"name": "list_builds", "arguments": {}}, name="list_builds", tasks=False))["result"]
        assert listed["structuredContent"]["builds"] == [], listed
        # The call again, with the answer: the build is queued under that name.
        answer = {"build_name": {"action": "accept", "content": {"name": "asked-on-the-wire"}}}
        done = (await modern(http, "tools/call", {**nameless, "inputResponses": answer}, name="create_build", tasks=False,
                             elicitation=True))["result"]
        build_id = done["structuredContent"]["build_id"]
        got = (await modern(http, "tools/call", {"name": "get_build", "arguments": {"build_id": build_id}}, name="get_build", tasks=False))["result"]
        assert got["structuredContent"]["recipe"]["name"] == "asked-on-the-wire", got
        await modern(http, "tools/call", {"name": "cancel_build", "arguments": {"build_id": build_id}}, name="cancel_build", tasks=False)
        # A hostile answer gets a plain error, never a deserializer's.
        bad = (await modern(http, "tools/call", {**nameless, "inputResponses": {"build_name": {"action": 7}}}, name="create_build",
                            tasks=False, elicitation=True))["result"]
        assert bad["isError"] and bad["content"][0]["text"].startswith("inputResponses: "), bad
