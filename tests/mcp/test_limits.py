"""Rate limits under abuse, against the real server with its default limits: a
flood of made-up API keys from one address is answered 429 after a handful of
lookups, while a real key, verified once, keeps its own budget. Prints its
figures (they go into the README's reliability section)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter

import pytest

import ofmcp
from test_accounts import client, sign_up

pytestmark = pytest.mark.anyio

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
ACCEPT = {"Accept": "application/json, text/event-stream"}
FLOOD = 3000
# The server's budget of unverified credentials per address (limits.rs: UNVERIFIED_BURST).
UNVERIFIED_BURST = 10


@pytest.fixture
def limited(of_bin, tmp_path):
    home = ofmcp.make_home(of_bin, tmp_path / "home")
    srv = ofmcp.Server.start(of_bin, home, tmp_path)  # default limits: 600 a minute
    yield srv
    srv.stop()


async def test_made_up_keys_are_refused_before_a_lookup_and_a_real_key_keeps_working(limited):
    _, key = await sign_up(limited, "flood-owner@example.org")
    attacker = "127.0.3.1"
    async with client(limited, ip=attacker) as http:
        # The real key is verified once: one of the address's unverified checks.
        r = await http.post("/api/mcp", json=PING, headers={**ACCEPT, "Authorization": f"Bearer {key}"})
        assert r.status_code not in (401, 429), r.text

        statuses: Counter[int] = Counter()
        limit = asyncio.Semaphore(32)

        async def made_up() -> None:
            async with limit:
                bogus = f"Bearer of_mcp_{secrets.token_hex(20)}"
                r = await http.post("/api/mcp", json=PING, headers={**ACCEPT, "Authorization": bogus})
                statuses[r.status_code] += 1
                if r.status_code == 429:
                    assert "retry-after" in r.headers, r.headers

        started = time.monotonic()
        await asyncio.gather(*(made_up() for _ in range(FLOOD)))
        took = time.monotonic() - started
        print(f"\n{FLOOD} made-up keys from one address in {took:.1f} s: "
              f"{statuses[401]} looked up and refused (401), {statuses[429]} refused before a lookup (429)")
        assert set(statuses) <= {401, 429}, statuses
        # The rest of the burst, plus at most one more every 6 s while the flood ran.
        assert statuses[401] <= UNVERIFIED_BURST - 1 + int(took / 6) + 1, statuses
        assert statuses[429] >= FLOOD - UNVERIFIED_BURST - int(took / 6) - 1, statuses

        # The verified key has its own budget: the flood did not shut it out.
        r = await http.post("/api/mcp", json=PING, headers={**ACCEPT, "Authorization": f"Bearer {key}"})
        assert r.status_code not in (401, 429), r.text
    # Another address was never throttled by the flood.
    async with client(limited, ip="127.0.3.2") as http:
        r = await http.post("/api/mcp", json=PING, headers={**ACCEPT, "Authorization": "Bearer of_mcp_" + "0" * 40})
        assert r.status_code == 401, r.text
