"""The gateway's media relay, a second registered phone of alice's (alice2) and the check that no
media port is held, which the B2BUA call tests share: moved here from test_b2bua_more.py so that
no test module imports another."""

from __future__ import annotations

import trio

from gateway.core.ids import SeededIds
from gateway.core.media.relay import MediaRelay
from gateway.testing.network import Address
from gateway.testing.sip_agent import SipAgent
from tests.component.calls.b2bua_env import (
    ALICE_PASSWORD,
    GW,
    B2bua,
)

ALICE2: Address = ("127.0.0.5", 5060)  # alice's second phone


def relay(env: B2bua) -> MediaRelay:
    assert env.gateway.relay is not None
    return env.gateway.relay


def assert_no_media_ports_held(env: B2bua) -> None:
    assert relay(env).streams == frozenset()
    assert relay(env).allocator.in_use == 0


async def second_phone(env: B2bua, nursery: trio.Nursery, seed: int) -> SipAgent:
    """Alice's second phone, registered from ALICE2 (the test answers its calls)."""
    phone = await unregistered_second_phone(env, nursery, seed)
    registered = await phone.register()
    assert registered.status == 200, registered.reason
    assert env.gateway.directory is not None
    assert len(env.gateway.directory.contacts("alice")) == 2
    return phone


async def unregistered_second_phone(env: B2bua, nursery: trio.Nursery, seed: int) -> SipAgent:
    """Alice's second phone at ALICE2, serving, not registered yet."""
    phone = SipAgent(
        env.network,
        ALICE2,
        ids=SeededIds(seed + 3),
        user="alice",
        password=ALICE_PASSWORD,
        proxy=GW,
        auto=None,
        media_port=30010,
    )
    await nursery.start(phone.serve)
    return phone
