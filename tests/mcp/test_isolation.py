"""Owners are client addresses: 127.0.0.1 (A) and 127.0.0.2 (B) never see each other's recipes."""

from __future__ import annotations

import pytest

from ofmcp import ok, tool_error

pytestmark = pytest.mark.anyio

A = "127.0.0.1"
B = "127.0.0.2"


def custom_ids(listing: dict) -> set[str]:
    return {r["id"] for r in listing["recipes"] if r["source"] == "custom"}


async def assert_invisible(session, recipe_id: str) -> None:
    """`recipe_id` exists for someone else: this session must not be able to reach it in any way."""
    listing = await ok(session, "list_recipes")
    assert recipe_id not in {r["id"] for r in listing["recipes"]}, f"{recipe_id} is listed for the wrong owner"
    found = await ok(session, "list_recipes", {"search": recipe_id})
    assert recipe_id not in {r["id"] for r in found["recipes"]}, f"{recipe_id} is found by search for the wrong owner"
    text = await tool_error(session, "get_recipe", {"recipe_id": recipe_id})
    assert "not found" in text.lower(), text
    text = await tool_error(session, "plan_recipe", {"recipe_id": recipe_id})
    assert "not found" in text.lower(), text
    text = await tool_error(session, "create_recipe_from_template", {"template_id": recipe_id, "name": recipe_id + "-copy"})
    assert recipe_id in text and "template" in text.lower(), text


@pytest.mark.parametrize("kind", ["http", "sse"])
async def test_owners_are_isolated(connect, kind):
    b_name, a_name, shared = f"iso-b-{kind}", f"iso-a-{kind}", f"shared-{kind}"
    # Both sessions open at once: ownership is per connection, not per server.
    async with connect(kind, ip=A) as a, connect(kind, ip=B) as b:
        await ok(b, "create_recipe_from_template", {"template_id": "debian-minimal-server", "name": b_name})
        assert b_name in custom_ids(await ok(b, "list_recipes"))
        await assert_invisible(a, b_name)

        await ok(a, "create_recipe_from_template", {"template_id": "debian-minimal-server", "name": a_name})
        assert a_name in custom_ids(await ok(a, "list_recipes"))
        await assert_invisible(b, a_name)
        # B still has its own, and A's creation did not leak B's into A.
        assert (await ok(b, "get_recipe", {"recipe_id": b_name}))["source"] == "custom"
        assert b_name not in custom_ids(await ok(a, "list_recipes"))

        # The same name, independently, for each owner.
        ra = await ok(a, "create_recipe_from_template", {"template_id": "gxp-medtech", "name": shared, "modifications": {"add_packages": ["vim"]}})
        rb = await ok(b, "create_recipe_from_template", {"template_id": "gxp-medtech", "name": shared, "modifications": {"add_packages": ["htop"]}})
        assert ra["recipe_digest"] != rb["recipe_digest"]
        got_a = (await ok(a, "get_recipe", {"recipe_id": shared}))
        got_b = (await ok(b, "get_recipe", {"recipe_id": shared}))
        assert "vim" in got_a["recipe"]["packages"] and "htop" not in got_a["recipe"]["packages"], got_a["recipe"]["packages"]
        assert "htop" in got_b["recipe"]["packages"] and "vim" not in got_b["recipe"]["packages"], got_b["recipe"]["packages"]
        assert got_a["recipe_digest"] == ra["recipe_digest"] and got_b["recipe_digest"] == rb["recipe_digest"]
        listed_a = [r["id"] for r in (await ok(a, "list_recipes"))["recipes"]].count(shared)
        listed_b = [r["id"] for r in (await ok(b, "list_recipes"))["recipes"]].count(shared)
        assert (listed_a, listed_b) == (1, 1)


async def test_not_found_does_not_reveal_other_owners(connect):
    """Another owner's id and an id nobody has get the same answer (modulo the id itself)."""
    async with connect("http", ip=B) as b:
        await ok(b, "create_recipe_from_template", {"template_id": "debian-minimal-server", "name": "secret-b"})
    async with connect("http", ip=A) as a:
        other = await tool_error(a, "get_recipe", {"recipe_id": "secret-b"})
        nobody = await tool_error(a, "get_recipe", {"recipe_id": "secret-z"})
        assert other.replace("secret-b", "ID") == nobody.replace("secret-z", "ID"), (other, nobody)


@pytest.mark.parametrize("kind", ["http", "sse"])
async def test_forwarding_headers_do_not_change_the_owner(connect, kind):
    name = f"fwd-a-{kind}"
    async with connect(kind, ip=A) as a:
        await ok(a, "create_recipe_from_template", {"template_id": "debian-minimal-server", "name": name})
    spoof = {"X-Forwarded-For": A, "X-Real-IP": A, "Forwarded": f"for={A}"}
    async with connect(kind, ip=B, headers=spoof) as b:
        await assert_invisible(b, name)
