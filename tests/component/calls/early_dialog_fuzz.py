"""The bystander call that the fuzzed early-dialog tests keep up beside the fuzzed one: moved here
from test_b2bua_fuzzed_early_dialogs.py so that no test module imports another."""

from __future__ import annotations

from gateway.testing.sip_agent import Call
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    B2bua,
)


async def _bystander(env: B2bua) -> tuple[Call, Call]:
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.answer()
    assert (await call.final()).status == 200
    await env.alice.next_request("ACK")
    return call, leg_b
