"""The phones, REFER and NOTIFY steps of the in-memory transfer tests: moved here from
test_b2bua_transfer.py so that no test module imports another."""

from __future__ import annotations

import trio

from gateway.core.ids import SeededIds
from gateway.core.sip.message import Request
from gateway.testing.network import Address
from gateway.testing.sip_agent import AutoAnswer, Call, SipAgent
from tests.component.calls.b2bua_env import (
    GW,
    RING_AND_ANSWER,
    B2bua,
)

BOB: Address = ("127.0.0.4", 5060)
BOB_URI = "<sip:bob@127.0.0.1:5060>"


async def bob_phone(
    env: B2bua, nursery: trio.Nursery, seed: int, auto: AutoAnswer | None = RING_AND_ANSWER
) -> SipAgent:
    bob = SipAgent(
        env.network,
        BOB,
        ids=SeededIds(seed + 3),
        user="bob",
        password="bob-password-1",
        proxy=GW,
        auto=auto,
        media_port=50000,
    )
    await nursery.start(bob.serve)
    assert (await bob.register()).status == 200
    return bob


async def refer(leg: Call, refer_to: str, *extra: tuple[str, str]) -> int:
    exchange = await leg.request("REFER", extra=[("Refer-To", refer_to), *extra])
    return (await exchange.final()).status


async def alice_calls(env: B2bua, uri: str) -> Call:
    """alice's call to ``uri``, through the digest challenge, answered."""
    call = await env.alice.invite(uri)
    assert (await call.final()).status == 407
    await call.authenticate()
    assert (await call.final(timeout=30)).status == 200
    return call


def replaces_of(call: Call) -> str:
    """The escaped Replaces naming ``call``'s dialog in a Refer-To, as its agent sees it: the
    gateway's tag is the to-tag (RFC 3891 §3)."""
    assert call.dialog is not None
    ours = call.dialog
    return f"{ours.call_id}%3Bto-tag%3D{ours.remote_tag}%3Bfrom-tag%3D{ours.local_tag}"


def sipfrag_of(notify: Request) -> str:
    return notify.body.decode().strip()


async def eventually_notify(agent: SipAgent, status_line: str) -> Request:
    """The agent's NOTIFY whose sipfrag is ``status_line`` (earlier ones skipped)."""
    while True:
        notify = await agent.next_request("NOTIFY")
        if sipfrag_of(notify.request) == status_line:
            return notify.request
