"""The timed SIPREC environment of the in-memory SIPREC timer tests: moved here from
test_b2bua_siprec_timers.py so that no test module imports another."""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.testing.sip_agent import AutoAnswer, Call, SipAgent, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, B2bua
from tests.component.calls.siprec_calls import CALLER_PORT, siprec_env, srs_answer


async def timed_env(
    nursery: trio.Nursery, tmp_path: Path, seed: int
) -> tuple[B2bua, SipAgent, object]:
    """A recorded call (alice's phone answers by itself) whose SRS has not answered yet."""
    env, srs = await siprec_env(
        nursery, tmp_path, seed, alice_auto=AutoAnswer(), session_expires=90
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    assert (await call.final()).status == 200
    return env, srs, call


async def take(srs: SipAgent, recording: Call, *extra: tuple[str, str]) -> None:
    """The SRS answers the recording INVITE 200 with ``extra`` headers; its ACK comes."""
    assert recording.incoming is not None
    await srs.respond(recording.incoming, 200, body=srs_answer(), extra=extra)
    await srs.next_request("ACK", timeout=5)
