"""Creating recipes from templates, their persistence, features, plans and tool schemas."""

from __future__ import annotations

import pytest

from ofmcp import (
    FEATURES,
    HEX64,
    TOOLS,
    catalog_templates,
    check_diagnostics_shape,
    diag_index,
    feature_names,
    make_home,
    ok,
    stdio_session,
    tool_error,
    unwrapped,
)
from test_transports import INVALID_RECIPE, VALID_RECIPE

pytestmark = pytest.mark.anyio


def custom_ids(listing: dict) -> list[str]:
    return [r["id"] for r in listing["recipes"] if r["source"] == "custom"]


async def test_create_from_template_and_reconnect(connect):
    """The brief's scenario, as owner 127.0.0.1: create my-gxp, then see it again from new sessions."""
    async with connect("http") as s:
        template = (await ok(s, "get_recipe", {"recipe_id": "gxp-medtech"}))["recipe"]
        created = await ok(
            s,
            "create_recipe_from_template",
            {"template_id": "gxp-medtech", "name": "my-gxp", "modifications": {"add_packages": ["vim", "htop"]}},
        )
        assert created["id"] == "my-gxp", created
        assert HEX64.match(created["recipe_digest"]), created["recipe_digest"]
        assert isinstance(created["warnings"], list)
        recipe = created["recipe"]
        assert recipe["name"] == "my-gxp"
        assert {"vim", "htop"} <= set(recipe["packages"]), recipe["packages"]
        # Everything else comes from the template.
        assert set(template["packages"]) <= set(recipe["packages"]), recipe["packages"]
        assert recipe["features"] == template["features"]
        assert recipe["users"] == template["users"]
        assert recipe["files"] == template["files"]
        assert recipe["timezone"] == template["timezone"]

        got = await ok(s, "get_recipe", {"recipe_id": "my-gxp"})
        assert got["id"] == "my-gxp"
        assert got["source"] == "custom"
        assert {"vim", "htop"} <= set(got["recipe"]["packages"])
        assert got["recipe"] == recipe
        assert got["recipe_digest"] == created["recipe_digest"]

        listing = await ok(s, "list_recipes")
        assert custom_ids(listing).count("my-gxp") == 1, custom_ids(listing)
        assert listing["total"] == len(listing["recipes"])
        templates = [r["id"] for r in listing["recipes"] if r["source"] == "template"]
        assert sorted(templates) == sorted(catalog_templates()), "templates missing from an owner's listing"

        # The hash is a content id.
        again = await ok(s, "validate_recipe", {"recipe": recipe})
        assert again["valid"] is True, again["errors"]
        assert again["recipe_digest"] == created["recipe_digest"]

    # A new session from the same address is the same owner.
    async with connect("http") as s:
        got2 = await ok(s, "get_recipe", {"recipe_id": "my-gxp"})
        assert got2["recipe"] == recipe and got2["recipe_digest"] == created["recipe_digest"]
        assert "my-gxp" in custom_ids(await ok(s, "list_recipes"))

    # Owners are addresses, not transports: the legacy SSE transport sees it too.
    async with connect("sse") as s:
        got3 = await ok(s, "get_recipe", {"recipe_id": "my-gxp"})
        assert got3["recipe_digest"] == created["recipe_digest"]
        assert "my-gxp" in custom_ids(await ok(s, "list_recipes"))


async def test_create_clashes_and_unknown_template(connect):
    async with connect("http", ip="127.0.0.21") as s:
        text = await tool_error(s, "create_recipe_from_template", {"template_id": "gxp-medtech", "name": "gxp-medtech"})
        assert "gxp-medtech" in text, text

        first = await ok(s, "create_recipe_from_template", {"template_id": "debian-minimal-server", "name": "dup-1"})
        text = await tool_error(
            s,
            "create_recipe_from_template",
            {"template_id": "gxp-medtech", "name": "dup-1", "modifications": {"add_packages": ["htop"]}},
        )
        assert "dup-1" in text, text
        # The clash left the first recipe alone.
        kept = await ok(s, "get_recipe", {"recipe_id": "dup-1"})
        assert kept["recipe_digest"] == first["recipe_digest"]
        assert "htop" not in kept["recipe"]["packages"]

        text = await tool_error(s, "create_recipe_from_template", {"template_id": "no-such-template", "name": "x-1"})
        assert "no-such-template" in text and "template" in text.lower(), text

        text = await tool_error(s, "create_recipe_from_template", {"template_id": "gxp-medtech", "name": "Bad Name"})
        assert "name" in text.lower(), text

        # None of the failures created anything.
        assert custom_ids(await ok(s, "list_recipes")) == ["dup-1"]


async def test_create_with_modifications(connect):
    async with connect("http", ip="127.0.0.22") as s:
        mods = {
            "description": "Docker on trixie with node-exporter.",
            "base_image": "debian-trixie",
            "hostname": "mods-host",
            "timezone": "Europe/Paris",
            "add_packages": ["htop"],
            "remove_packages": ["curl"],
            "add_features": [{"name": "docker", "options": {"compose": True, "log_max_file": 3}}, "monitoring"],
            "remove_features": ["motd"],
            "add_services": ["docker-prune.timer"],
            "networking": {"allowed_ports": [{"port": 8080}]},
            "security": {"root_login": False, "password_authentication": False},
        }
        created = await ok(
            s, "create_recipe_from_template", {"template_id": "debian-minimal-server", "name": "mods-1", "modifications": mods}
        )
        r = created["recipe"]
        assert r["description"] == mods["description"]
        assert r["base_image"] == "debian-trixie"
        assert r["hostname"] == "mods-host"
        assert r["timezone"] == "Europe/Paris"
        assert "htop" in r["packages"] and "curl" not in r["packages"], r["packages"]
        assert "less" in r["packages"], "remove_packages removed more than asked"
        names = [f["name"] for f in r["features"]]
        assert "motd" not in names, names
        assert {"ssh", "firewall", "docker", "monitoring"} <= set(names), names
        docker = next(f for f in r["features"] if f["name"] == "docker")
        assert docker["options"].get("compose") is True and docker["options"].get("log_max_file") == 3, docker
        assert "docker-prune.timer" in r["services"], r["services"]
        assert 8080 in [p["port"] for p in r["networking"]["allowed_ports"]], r["networking"]
        assert r["security"]["root_login"] is False

        got = await ok(s, "get_recipe", {"recipe_id": "mods-1"})
        assert got["recipe"] == r and got["recipe_digest"] == created["recipe_digest"]


@pytest.mark.parametrize(
    "mods, needle",
    [
        ({"add_packages": ["vim; rm -rf /"]}, "package"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"add_features": ["nosuchfeature"]}, "nosuchfeature"),
        ({"base_image": "ubuntu-22.04"}, "base_image"),
        ({"add_services": ["nginx.service; reboot"]}, "service"),
    ],
    ids=["bad-package", "bad-timezone", "unknown-feature", "bad-base-image", "bad-service"],
)
async def test_create_rejects_an_invalid_result(connect, mods, needle):
    name = "inv-" + needle.replace("_", "-")
    async with connect("http", ip="127.0.0.23") as s:
        text = await tool_error(s, "create_recipe_from_template", {"template_id": "gxp-medtech", "name": name, "modifications": mods})
        assert needle in text.lower(), text
        gone = await tool_error(s, "get_recipe", {"recipe_id": name})
        assert "not found" in gone.lower(), gone


async def test_create_conflicting_feature_is_rejected(connect):
    async with connect("http", ip="127.0.0.23") as s:
        text = await tool_error(
            s, "create_recipe_from_template", {"template_id": "docker-host", "name": "both-engines", "modifications": {"add_features": ["podman"]}}
        )
        assert "podman" in text and "docker" in text, text


async def test_list_features(connect):
    async with connect("http", ip="127.0.0.24") as s:
        features = (await ok(s, "list_features"))["features"]
        by_name = {f["name"]: f for f in features}
        assert len(features) == len(by_name) == 8, [f["name"] for f in features]
        assert set(by_name) == FEATURES
        for f in features:
            assert f["version"] and f["summary"], f
            assert isinstance(f["category"], str)
            for key in ("requires", "conflicts", "reads"):
                assert isinstance(f[key], list), (f["name"], key, f[key])
            assert isinstance(f["options_schema"], dict) and f["options_schema"].get("type") == "object", (f["name"], f["options_schema"])
        assert "podman" in by_name["docker"]["conflicts"]
        assert "docker" in by_name["podman"]["conflicts"]
        assert "hardening" in by_name["gxp"]["requires"]
        assert "compose" in by_name["docker"]["options_schema"].get("properties", {}), by_name["docker"]["options_schema"]


async def test_plan_recipe(connect):
    async with connect("http", ip="127.0.0.24") as s:
        planned = await ok(s, "plan_recipe", {"recipe_id": "gxp-medtech"})
        assert planned["valid"] is True, planned["errors"]
        assert planned["errors"] == []
        plan = planned["plan"]
        assert plan["steps"] and plan["checks"], plan
        for step in plan["steps"]:
            assert step["source"] and step["type"], step
        sources = {step["source"] for step in plan["steps"]}
        assert {"gxp", "hardening", "recipe"} <= sources, sources
        assert {"gxp", "hardening", "ssh", "firewall", "monitoring"} <= set(feature_names(plan["features"]))
        assert "recipe_digest" in plan

        # The plan agrees with validate_recipe's summary of the same content.
        recipe = (await ok(s, "get_recipe", {"recipe_id": "gxp-medtech"}))["recipe"]
        summary = (await ok(s, "validate_recipe", {"recipe": recipe}))["plan_summary"]
        assert summary["steps"] == len(plan["steps"]) and summary["checks"] == len(plan["checks"]), (summary, len(plan["steps"]))

        inline = await ok(s, "plan_recipe", {"recipe": VALID_RECIPE})
        assert inline["valid"] is True and inline["plan"]["steps"], inline["errors"]

        bad = await ok(s, "plan_recipe", {"recipe": INVALID_RECIPE})
        check_diagnostics_shape(bad)
        assert bad["valid"] is False and bad["plan"] is None
        assert ("packages[1]", "recipe.package-name") in diag_index(bad), bad["errors"]

        # An owner's own recipe can be planned by id.
        await ok(s, "create_recipe_from_template", {"template_id": "web-server-nginx", "name": "plan-own"})
        own = await ok(s, "plan_recipe", {"recipe_id": "plan-own"})
        assert own["valid"] is True and own["plan"]["steps"], own["errors"]

        text = await tool_error(s, "plan_recipe", {"recipe_id": "no-such-recipe"})
        assert "not found" in text.lower(), text
        text = await tool_error(s, "plan_recipe", {})
        assert "recipe_id" in text or "recipe" in text, text


EXPECTED_ARGS = {
    "list_recipe_categories": (set(), set()),
    "list_recipes": ({"category", "search"}, set()),
    "get_recipe": ({"recipe_id"}, {"recipe_id"}),
    "validate_recipe": ({"recipe"}, {"recipe"}),
    "create_recipe_from_template": ({"template_id", "name", "modifications"}, {"template_id", "name"}),
    "list_features": (set(), set()),
    "plan_recipe": ({"recipe_id", "recipe"}, set()),
    "create_build": ({"recipe"}, {"recipe"}),
    "list_builds": ({"status_filter", "limit"}, set()),
    "get_build": ({"build_id"}, {"build_id"}),
    "get_build_status": ({"build_id", "wait_seconds"}, {"build_id"}),
    "get_iso_download_url": ({"build_id"}, {"build_id"}),
    "retry_build": ({"build_id"}, {"build_id"}),
    "cancel_build": ({"build_id"}, {"build_id"}),
    "get_build_log": ({"build_id", "tail_lines"}, {"build_id"}),
    "create_vm": ({"build_id", "name", "memory_mb", "vcpus"}, {"build_id", "name"}),
    "list_vms": ({"build_id"}, set()),
    "start_vm": ({"vm_name"}, {"vm_name"}),
    "stop_vm": ({"vm_name", "force"}, {"vm_name"}),
    "delete_vm": ({"vm_name"}, {"vm_name"}),
    "get_vm_serial_log": ({"vm_name", "tail_lines"}, {"vm_name"}),
    "get_vm_console_url": ({"vm_name"}, {"vm_name"}),
    "delete_build": ({"build_id"}, {"build_id"}),
    "run_tests": ({"build_id", "tests", "memory_mb", "vcpus", "timeout_seconds"}, {"build_id"}),
    "get_test_results": ({"run_id", "wait_seconds", "format"}, {"run_id"}),
    "list_test_runs": ({"build_id", "limit"}, set()),
    "stop_test_run": ({"run_id"}, {"run_id"}),
}


async def test_input_schemas_name_the_documented_arguments(connect):
    assert set(EXPECTED_ARGS) == TOOLS
    async with connect("http", ip="127.0.0.24") as s:
        for tool in (await s.list_tools()).tools:
            props, required = EXPECTED_ARGS[tool.name]
            schema = tool.input_schema
            assert set(schema.get("properties", {})) == props, (tool.name, sorted(schema.get("properties", {})))
            assert set(schema.get("required", [])) == required, (tool.name, schema.get("required"))


async def test_create_over_stdio(of_bin, tmp_path):
    # A HOME of its own, so the shared stdio owner keeps a templates-only catalog.
    home = make_home(of_bin, tmp_path / "home")
    async with unwrapped(stdio_session(of_bin, home, tmp_path / "stderr.log")) as s:
        created = await ok(
            s,
            "create_recipe_from_template",
            {"template_id": "gxp-medtech", "name": "stdio-gxp", "modifications": {"add_packages": ["vim", "htop"]}},
        )
        got = await ok(s, "get_recipe", {"recipe_id": "stdio-gxp"})
        assert got["source"] == "custom"
        assert {"vim", "htop"} <= set(got["recipe"]["packages"])
        assert got["recipe_digest"] == created["recipe_digest"]
        assert "stdio-gxp" in custom_ids(await ok(s, "list_recipes"))


async def test_the_catalog_is_never_written(connect, catalog_snapshot, catalog_now):
    """Owners' recipes live in the server's HOME, never in the template catalog."""
    async with connect("http", ip="127.0.0.25") as s:
        await ok(s, "create_recipe_from_template", {"template_id": "web-server-nginx", "name": "catalog-probe"})
    assert catalog_now() == catalog_snapshot
