"""The reference document's own example, as a user says it: "Create a build from the GxP MedTech template with
extra packages: vim, htop". Over MCP, as an assistant would do it: the healthcare category listed, the template
found there (with what the catalog proved of it), copied with vim and htop, built, booted in a throwaway VM, and
every check passing: the template's own, its features', and vim and htop installed."""

from __future__ import annotations

import pytest

from ofmcp import ok
from test_builds import wait_for_build
from test_tests import wait_for_run

pytestmark = pytest.mark.anyio


@pytest.mark.deadline(2700)
async def test_the_gxp_medtech_template_with_vim_and_htop_builds_boots_and_passes(connect):
    async with connect("http", ip="127.0.0.91") as s:
        listed = await ok(s, "list_recipes", {"category": "healthcare"})
        by_id = {r["id"]: r for r in listed["recipes"]}
        assert "gxp-medtech" in by_id, sorted(by_id)
        gxp = by_id["gxp-medtech"]
        assert gxp["proof"]["status"] in ("proven", "failed", "unproven"), gxp

        made = await ok(s, "create_recipe_from_template", {
            "template_id": "gxp-medtech", "name": "my-gxp-medtech", "modifications": {"add_packages": ["vim", "htop"]}})
        assert {"vim", "htop"} <= set(made["recipe"]["packages"]), made["recipe"]["packages"]

        build_id = (await ok(s, "create_build", {"recipe": made["id"]}))["build_id"]
        final = await wait_for_build(s, build_id, budget=2000)
        assert final["status"] == "completed", final

        run = await ok(s, "run_tests", {
            "build_id": build_id,
            "tests": [{"package_installed": "vim", "name": "vim"}, {"package_installed": "htop", "name": "htop"}],
            "timeout_seconds": 900,
        })
        results = await wait_for_run(s, run["run_id"], budget=1000)
        not_passed = {c["name"]: (c["status"], c["message"], c["stdout"][-300:], c["stderr"][-300:])
                      for c in results["checks"] if c["status"] != "passed"}
        assert results["status"] == "passed" and not not_passed, (results["message"], not_passed)
        names = {c["name"] for c in results["checks"]}
        assert {"user/vim", "user/htop", "recipe/etc-versioned", "gxp/aide-baseline", "gxp/audit-immutable"} <= names, sorted(names)
        assert {n.split("/")[0] for n in names} >= {"base", "recipe", "ssh", "hardening", "gxp", "firewall", "monitoring"}, sorted(names)
