"""The same read-only conversation over every transport: SSE, Streamable HTTP, stdio."""

from __future__ import annotations

import pytest

from ofmcp import CATEGORIES, HEX64, TOOLS, catalog_templates, check_diagnostics_shape, diag_index, feature_names, ok

pytestmark = pytest.mark.anyio

TRANSPORTS = ["sse", "http", "stdio"]
# Each HTTP transport talks from an owner of its own that never creates
# recipes, so the listings below hold templates only, whatever ran before.
OWNER = {"sse": "127.0.0.11", "http": "127.0.0.12", "stdio": None}

VALID_RECIPE = {
    "name": "web-1",
    "description": "A small web server.",
    "base_image": "debian-bookworm",
    "packages": ["nginx", "curl"],
    "services": ["nginx.service"],
    "features": ["ssh", {"name": "firewall", "options": {"input_policy": "drop"}}],
    "users": [{"name": "admin", "sudo": True, "ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f test@example"]}],
    "networking": {"allowed_ports": [{"port": 80}]},
}

INVALID_RECIPE = {
    "name": "web-2",
    "base_image": "debian-bookworm",
    "packges": ["vim"],
    "packages": ["vim", "rm -rf /"],
}


RECIPE_FIELDS = ("name", "description", "tags", "base_image", "architecture", "locale", "timezone", "features", "packages", "services", "users", "files", "kernel_args", "networking", "security")


def connect_kind(connect, kind):
    return connect(kind, ip=OWNER[kind]) if OWNER[kind] else connect(kind)


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_tools_list_is_the_documented_set_with_object_schemas(connect, kind):
    async with connect_kind(connect, kind) as s:
        tools = (await s.list_tools()).tools
        names = [t.name for t in tools]
        assert len(names) == len(set(names)), f"duplicate tool names: {names}"
        assert set(names) == TOOLS, f"tools/list: extra {set(names) - TOOLS}, missing {TOOLS - set(names)}"
        for t in tools:
            assert t.description and t.description.strip(), f"{t.name} has no description"
            assert isinstance(t.input_schema, dict) and t.input_schema.get("type") == "object", f"{t.name} inputSchema: {t.input_schema}"
            assert isinstance(t.output_schema, dict) and t.output_schema.get("type") == "object", f"{t.name} outputSchema: {t.output_schema}"


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_catalog_browsing(connect, kind):
    templates = catalog_templates()
    async with connect_kind(connect, kind) as s:
        cats = (await ok(s, "list_recipe_categories"))["categories"]
        assert {c["name"] for c in cats} == CATEGORIES, cats
        assert len(cats) == 7
        for c in cats:
            assert c["title"] and c["description"], c
            expected = sum(1 for cat in templates.values() if cat == c["name"])
            assert c["count"] == expected, f"category {c['name']}: count {c['count']}, the catalog has {expected}"

        listing = await ok(s, "list_recipes")
        recipes = listing["recipes"]
        assert listing["total"] == len(recipes), listing["total"]
        by_id = {r["id"]: r for r in recipes}
        assert set(by_id) == set(templates), f"list_recipes ids differ from the catalog: {sorted(set(by_id) ^ set(templates))}"
        for rid, r in by_id.items():
            assert r["source"] == "template", r
            assert r["category"] == templates[rid], r
            assert r["name"] == rid, r
            assert r["description"], rid
            assert r["base_image"] in ("debian-bookworm", "debian-trixie"), r
            assert isinstance(r["features"], list) and all(isinstance(f, str) for f in r["features"]), r
            assert isinstance(r["tags"], list), r
        assert {"gxp", "hardening"} <= set(by_id["gxp-medtech"]["features"])

        health = await ok(s, "list_recipes", {"category": "healthcare"})
        assert {r["id"] for r in health["recipes"]} == {k for k, v in templates.items() if v == "healthcare"}
        assert health["total"] == len(health["recipes"])

        found = await ok(s, "list_recipes", {"search": "gxp"})
        assert "gxp-medtech" in {r["id"] for r in found["recipes"]}, found
        assert {r["id"] for r in found["recipes"]} <= set(templates)

        none = await ok(s, "list_recipes", {"search": "zzqx-no-such-thing-zzqx"})
        assert none == {"recipes": [], "total": 0} or (none["recipes"] == [] and none["total"] == 0), none


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_get_recipe_gxp_medtech(connect, kind):
    async with connect_kind(connect, kind) as s:
        got = await ok(s, "get_recipe", {"recipe_id": "gxp-medtech"})
        assert got["id"] == "gxp-medtech"
        assert got["source"] == "template"
        assert got["category"] == "healthcare"
        assert HEX64.match(got["recipe_digest"]), got["recipe_digest"]
        recipe = got["recipe"]
        assert recipe["name"] == "gxp-medtech"
        assert recipe["base_image"] == "debian-bookworm"
        assert recipe["timezone"] == "Europe/Berlin"
        assert recipe["hostname"] == "gxp-medtech-01"
        features = {f["name"]: f["options"] for f in recipe["features"]}
        assert {"gxp", "hardening", "ssh", "firewall", "monitoring"} <= set(features), features
        assert features["gxp"]["data_directories"] == ["/srv/gxp-data", "/srv/gxp-archive"], features["gxp"]
        assert features["gxp"]["session_timeout_seconds"] == 600
        assert features["hardening"]["password_min_length"] == 14, features["hardening"]
        assert features["hardening"]["umask"] == "027"
        assert "etckeeper" in recipe["packages"]
        assert {u["name"] for u in recipe["users"]} == {"admin", "auditor"}
        assert {f["path"] for f in recipe["files"]} == {"/etc/sudoers.d/10-gxp", "/etc/systemd/journald.conf.d/50-gxp.conf"}
        assert recipe["security"]["root_login"] is False

        # The recipe_digest is a content id: the same content validated again has the same id.
        again = await ok(s, "validate_recipe", {"recipe": recipe})
        assert again["valid"] is True, again["errors"]
        assert again["recipe_digest"] == got["recipe_digest"], (again["recipe_digest"], got["recipe_digest"])

        # The full recipe object: every field of the model, only `hostname` is optional.
        missing = [k for k in RECIPE_FIELDS if k not in recipe]
        assert not missing, f"get_recipe: the recipe object lacks {missing}; it has {sorted(recipe)}"


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_validate_valid_and_invalid(connect, kind):
    async with connect_kind(connect, kind) as s:
        good = await ok(s, "validate_recipe", {"recipe": VALID_RECIPE})
        check_diagnostics_shape(good)
        assert good["valid"] is True, good["errors"]
        assert good["errors"] == []
        assert HEX64.match(good["recipe_digest"] or ""), good["recipe_digest"]
        summary = good["plan_summary"]
        assert summary is not None
        assert summary["steps"] > 0 and summary["checks"] > 0, summary
        assert set(feature_names(summary["features"])) == {"ssh", "firewall"}, summary["features"]
        assert sum(summary["steps_by_source"].values()) == summary["steps"], summary
        assert {"ssh", "firewall"} <= set(summary["steps_by_source"]), summary["steps_by_source"]

        bad = await ok(s, "validate_recipe", {"recipe": INVALID_RECIPE})
        check_diagnostics_shape(bad)
        assert bad["valid"] is False
        assert bad["plan_summary"] is None, bad["plan_summary"]
        index = diag_index(bad)
        assert ("packages[1]", "recipe.package-name") in index, bad["errors"]
        assert index[("packages[1]", "recipe.package-name")]["severity"] == "error"
        typo = index.get(("packges", "recipe.unknown-field"))
        assert typo is not None, bad["errors"]
        assert typo["suggestion"] == "did you mean `packages`?", typo
        # vim is fine: nothing is reported against packages[0].
        assert not [d for d in bad["errors"] if d["path"] == "packages[0]"], bad["errors"]
