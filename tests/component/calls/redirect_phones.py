"""Starting bob's phone in the in-memory redirect tests: moved here from test_b2bua_redirect.py so
that no test module imports another."""

from __future__ import annotations

import trio

from gateway.core.ids import SeededIds
from gateway.testing.sip_agent import SipAgent
from tests.component.calls.b2bua_env import (
    GW,
    B2bua,
)

BOB = ("127.0.0.4", 5060)


async def start_bob(env: B2bua, nursery: trio.Nursery, seed: int) -> SipAgent:
    bob = SipAgent(
        env.network,
        BOB,
        ids=SeededIds(seed + 7),
        user="bob",
        password="bob-password-1",
        proxy=GW,
        auto=None,
        media_port=31000,
    )
    await nursery.start(bob.serve)
    assert (await bob.register()).status == 200
    return bob
