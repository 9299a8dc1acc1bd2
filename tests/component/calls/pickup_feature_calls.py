"""Ringing alice and dialling a feature code in the in-memory pickup feature code tests: moved here
from test_pickup_feature_codes.py so that no test module imports another."""

from __future__ import annotations

from gateway.core.sip.message import Response
from gateway.testing.sip_agent import AutoAnswer, SipAgent, simple_sdp
from gateway.testing.sip_agent import Call as SipCall
from tests.component.calls.b2bua_env import ALICE_DID, B2bua
from tests.component.calls.pickup_calls import (
    BOB_PORT,
    CALLER_PORT,
)


async def dial_call(bob: SipAgent, user: str) -> tuple[SipCall, Response]:
    """bob's phone dials ``user`` (through the digest challenge, as for any call): the call
    and its final response."""
    call = await bob.invite(f"sip:{user}@127.0.0.1:5060", sdp=simple_sdp("127.0.0.1", BOB_PORT))
    await call.exchange.wait_for(lambda r: r.status == 407)  # type: ignore[union-attr]
    await call.authenticate()
    return call, await call.final()


async def ring_alice(env: B2bua) -> tuple[SipCall, SipCall]:
    """The carrier calls alice, her phone rings: (the caller's call, alice's ringing call)."""
    env.alice.auto = AutoAnswer(ring=True, status=None)
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT)
    )
    return incoming, await env.alice.next_call()
