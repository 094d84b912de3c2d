"""Hostile tool input: every case gets the right diagnostic, short messages, and the server stays up."""

from __future__ import annotations

import json

import pytest
from mcp.shared.exceptions import MCPError

from ofmcp import MAX_MESSAGE, call, check_diagnostics_shape, describe, diag_index, healthz, ok, text_of, tool_error

pytestmark = pytest.mark.anyio

OWNER = "127.0.0.5"
MEGA = "a" * (1 << 20)
BASE = {"name": "hostile-1", "base_image": "debian-bookworm"}


async def still_up(session, base: str) -> None:
    await session.send_ping()
    assert await healthz(base) == 200
    cats = await ok(session, "list_recipe_categories")
    assert len(cats["categories"]) == 7


async def validate_invalid(session, recipe: dict) -> dict:
    report = await ok(session, "validate_recipe", {"recipe": recipe})
    check_diagnostics_shape(report)
    assert report["valid"] is False, f"accepted as valid: {json.dumps(recipe)[:300]}"
    assert report["plan_summary"] is None
    # Nothing the server says about a hostile recipe echoes it back in bulk.
    assert len(json.dumps(report)) < 20 * MAX_MESSAGE, f"validate_recipe answer is {len(json.dumps(report))} bytes"
    return report


def assert_error(report: dict, path: str, code: str | tuple[str, ...]) -> dict:
    codes = (code,) if isinstance(code, str) else code
    hits = [d for d in report["errors"] if d["path"] == path and d["code"] in codes]
    assert hits, f"no error {codes} at `{path}`; errors: {[(d['path'], d['code']) for d in report['errors']]}"
    return hits[0]


SHELL_PACKAGES = ["vim; rm -rf /", "$(reboot)", "`id`", "a|b", "a&&b", "vim>/etc/passwd", "vim\nrm", "-oAPT::x=1"]
SHELL_SERVICES = ["nginx.service; reboot", "$(id).service", "`id`.service", "a b.service", "x.service\n[Unit]"]


async def test_shell_metacharacters(connect, server):
    async with connect("http", ip=OWNER) as s:
        report = await validate_invalid(s, {**BASE, "packages": ["vim", *SHELL_PACKAGES], "services": ["ssh.service", *SHELL_SERVICES]})
        for i in range(len(SHELL_PACKAGES)):
            assert_error(report, f"packages[{i + 1}]", "recipe.package-name")
        for i in range(len(SHELL_SERVICES)):
            assert_error(report, f"services[{i + 1}]", "recipe.service-name")
        assert not [d for d in report["errors"] if d["path"] in ("packages[0]", "services[0]")], report["errors"]
        # Same through create: a tool error that names the problem, and nothing is created.
        text = await tool_error(s, "create_recipe_from_template", {"template_id": "gxp-medtech", "name": "sh-1", "modifications": {"add_packages": ["$(reboot)"]}})
        assert "package" in text.lower(), text
        text = await tool_error(s, "create_recipe_from_template", {"template_id": "gxp-medtech", "name": "sh-1", "modifications": {"add_services": ["a.service; reboot"]}})
        assert "service" in text.lower(), text
        assert "not found" in (await tool_error(s, "get_recipe", {"recipe_id": "sh-1"})).lower()
        await still_up(s, server.base)


TRAVERSAL_PATHS = ["/etc/../../root/.ssh/authorized_keys", "../../etc/shadow", "/etc/ssh/../../boot/grub/grub.cfg", "/etc//passwd", "/boot/vmlinuz", "/etc/x\u0000y"]


async def test_path_traversal_in_files(connect, server):
    async with connect("http", ip=OWNER) as s:
        files = [{"path": p, "content": "x"} for p in TRAVERSAL_PATHS]
        report = await validate_invalid(s, {**BASE, "files": [{"path": "/etc/motd.d/ok", "content": "fine"}, *files]})
        for i in range(len(TRAVERSAL_PATHS)):
            assert_error(report, f"files[{i + 1}].path", "recipe.file-path")
        assert not [d for d in report["errors"] if d["path"].startswith("files[0]")], report["errors"]
        await still_up(s, server.base)


BAD_NAMES = ["../x", "../../etc/passwd", "..", "a/b", "/abs", ".hidden", "x\u0000y", "con sole"]


def tree(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


async def test_path_traversal_in_names(connect, server):
    sandbox = server.home.parent
    async with connect("http", ip=OWNER) as s:
        before = tree(sandbox)
        for name in BAD_NAMES:
            report = await validate_invalid(s, {**BASE, "name": name})
            assert_error(report, "name", "recipe.name")
            text = await tool_error(s, "create_recipe_from_template", {"template_id": "gxp-medtech", "name": name})
            assert "name" in text.lower(), text
        # Ids that look like paths reach nothing: not the catalog by path, not the file system.
        for rid in ["../x", "../../../../etc/passwd", "healthcare/gxp-medtech", "../recipes/healthcare/gxp-medtech", "gxp-medtech/", "gxp-medtech.toml", "./gxp-medtech"]:
            text = await tool_error(s, "get_recipe", {"recipe_id": rid})
            assert "not found" in text.lower() or "recipe_id" in text, text
            assert "root:" not in text
            await tool_error(s, "create_recipe_from_template", {"template_id": rid, "name": "trav-1"})
        assert [r["id"] for r in (await ok(s, "list_recipes"))["recipes"] if r["source"] == "custom"] == []
        await still_up(s, server.base)
    # Nothing named after the hostile names appeared anywhere around or inside HOME.
    suspicious = {"x", "passwd", "b", "abs", ".hidden", "y", "con sole", "trav-1", "gxp-medtech"}
    new_paths = tree(sandbox) - before
    written = [p for p in new_paths if p.rsplit("/", 1)[-1].split(".")[0] in suspicious or "\x00" in p or p.rsplit("/", 1)[-1].startswith(".hidden")]
    assert not written, f"files appeared for rejected names: {written}"
    assert sorted(p.name for p in sandbox.iterdir() if not p.name.startswith("serve-")) == ["home"]


async def test_one_megabyte_strings(connect, server):
    async with connect("http", ip=OWNER) as s:
        report = await validate_invalid(s, {**BASE, "description": MEGA})
        assert_error(report, "description", ("recipe.size", "recipe.description", "recipe.too-large"))

        report = await validate_invalid(s, {**BASE, "name": MEGA})
        assert_error(report, "name", ("recipe.name", "recipe.size"))

        report = await validate_invalid(s, {**BASE, "packages": [MEGA + ";"]})
        assert_error(report, "packages[0]", ("recipe.package-name", "recipe.size"))

        report = await validate_invalid(s, {**BASE, "files": [{"path": "/etc/" + MEGA, "content": "x"}]})
        assert_error(report, "files[0].path", ("recipe.file-path", "recipe.size"))


        # Tool errors stay bounded too (tool_error checks the length).
        await tool_error(s, "create_recipe_from_template", {"template_id": "gxp-medtech", "name": MEGA})
        await tool_error(s, "create_recipe_from_template", {"template_id": MEGA, "name": "mega-1"})
        await tool_error(s, "get_recipe", {"recipe_id": MEGA})
        await tool_error(s, "create_recipe_from_template", {"template_id": "gxp-medtech", "name": "mega-2", "modifications": {"add_packages": [MEGA]}})
        search = await ok(s, "list_recipes", {"search": MEGA})
        assert search["total"] == 0
        await still_up(s, server.base)


async def test_huge_unknown_field_name_is_not_echoed(connect, server):
    """A 100 kB unknown key: reported as unknown, without sending the key back in full (path or message)."""
    async with connect("http", ip=OWNER) as s:
        report = await validate_invalid(s, {**BASE, MEGA[:100_000]: 1})
        assert any(d["code"] == "recipe.unknown-field" for d in report["errors"]), report["errors"]
        await still_up(s, server.base)


async def test_unknown_fields(connect, server):
    async with connect("http", ip=OWNER) as s:
        report = await validate_invalid(
            s,
            {
                **BASE,
                "packges": ["vim"],
                "features": [{"name": "ssh", "optons": {}}],
                "users": [{"name": "admin", "sudoo": True}],
                "networking": {"dhcpp": True},
            },
        )
        assert assert_error(report, "packges", "recipe.unknown-field")["suggestion"] == "did you mean `packages`?"
        assert assert_error(report, "features[0].optons", "recipe.unknown-field")["suggestion"] == "did you mean `options`?"
        assert_error(report, "users[0].sudoo", "recipe.unknown-field")
        assert_error(report, "networking.dhcpp", "recipe.unknown-field")

        report = await validate_invalid(s, {**BASE, "features": ["nosuchfeature", "dockr"]})
        assert_error(report, "features[0].name", "recipe.unknown-feature")
        typo = assert_error(report, "features[1].name", "recipe.unknown-feature")
        assert "docker" in (typo.get("suggestion") or ""), typo

        # Unknown keys in create's modifications are named, not ignored.
        text = await tool_error(s, "create_recipe_from_template", {"template_id": "gxp-medtech", "name": "uf-1", "modifications": {"add_pkgs": ["vim"]}})
        assert "add_pkgs" in text, text
        assert "not found" in (await tool_error(s, "get_recipe", {"recipe_id": "uf-1"})).lower()
        await still_up(s, server.base)


async def test_wrong_types(connect, server):
    async with connect("http", ip=OWNER) as s:
        report = await validate_invalid(
            s,
            {
                **BASE,
                "packages": "vim",
                "services": [42],
                "features": [42],
                "networking": {"dhcp": "yes", "allowed_ports": [{"port": 70000}]},
                "kernel_args": {"quiet": True},
                "tags": None,
            },
        )
        assert_error(report, "packages", "recipe.wrong-type")
        assert_error(report, "services[0]", "recipe.wrong-type")
        assert_error(report, "features[0]", "recipe.wrong-type")
        assert_error(report, "networking.dhcp", "recipe.wrong-type")
        assert_error(report, "networking.allowed_ports[0].port", "recipe.out-of-range")
        assert_error(report, "kernel_args", "recipe.wrong-type")
        assert_error(report, "tags", "recipe.wrong-type")

        report = await validate_invalid(s, {"description": "no name, no base image"})
        assert_error(report, "name", "recipe.missing-field")
        assert_error(report, "base_image", "recipe.missing-field")

        # Wrong argument types are tool errors naming the argument.
        text = await tool_error(s, "get_recipe", {"recipe_id": 123})
        assert "recipe_id" in text, text
        text = await tool_error(s, "get_recipe", {})
        assert "recipe_id" in text, text
        text = await tool_error(s, "create_recipe_from_template", {"template_id": "gxp-medtech", "name": "wt-1", "modifications": {"add_packages": "vim"}})
        assert "add_packages" in text, text
        text = await tool_error(s, "create_recipe_from_template", {"template_id": ["gxp-medtech"], "name": "wt-1"})
        assert "template_id" in text, text
        text = await tool_error(s, "list_recipes", {"category": 7})
        assert "category" in text, text
        assert "not found" in (await tool_error(s, "get_recipe", {"recipe_id": "wt-1"})).lower()

        # A missing required argument is the server's own field error (what it is for), never
        # the MCP library's "failed to deserialize parameters: missing field".
        text = await tool_error(s, "create_vm", {"build_id": "0" * 12})
        assert text.startswith("name: required; a name for the VM"), text
        text = await tool_error(s, "create_vm", {"build_id": "0" * 12, "name": None})
        assert text.startswith("name: required; "), text
        text = await tool_error(s, "create_vm", {"build_id": "0" * 12, "name": "web-1", "memory_mb": "lots"})
        assert text == "memory_mb: expected a whole number, got a string", text
        text = await tool_error(s, "list_builds", {"limit": 500})
        assert text == "limit: 500 is out of range; use 1 to 100 (default 20)", text
        for tool, args in (("stop_vm", {}), ("get_build_log", {"tail_lines": 10}), ("run_tests", {"tests": []})):
            text = await tool_error(s, tool, args)
            assert ": required; " in text and "deserialize" not in text, (tool, text)

        # A recipe that is not an object: either a tool error naming `recipe`, or valid=false with
        # a wrong-type diagnostic, but never a success or a crash.
        for not_an_object in ["name = 'x'", ["name", "x"], 42, None]:
            result = await call(s, "validate_recipe", {"recipe": not_an_object})
            if result.is_error:
                text = text_of(result)
                assert "recipe" in text and len(text) < MAX_MESSAGE, text
            else:
                report = result.structured_content
                assert report["valid"] is False, describe(result)
                assert any(d["code"] == "recipe.wrong-type" for d in report["errors"]), describe(result)
        await still_up(s, server.base)


async def test_unknown_tool_is_an_error(connect, server):
    async with connect("http", ip=OWNER) as s:
        try:
            result = await call(s, "build_image", {"recipe_id": "gxp-medtech"})
        except MCPError as e:
            assert len(e.message) < MAX_MESSAGE
        else:
            assert result.is_error, describe(result)
        await still_up(s, server.base)
