"""Timer C for the B2BUA (RFC 3261 §16.6 step 11, §16.8): a call that no callee answers within
``[sip] ring_timeout`` is given up: CANCEL to every B leg still ringing, 408 to the caller. It
also frees a call whose callee's 200 cannot be read. Signalling on the in-memory network,
virtual time."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from gateway.testing.sip_agent import AutoAnswer, Received
from tests.component.calls.b2bua_env import ALICE_DID, eventually, start_b2bua

RING_TIMEOUT = 20.0


async def test_an_unanswered_call_is_given_up_after_the_ring_timeout(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        alice_auto=AutoAnswer(ring=True, status=None),  # rings, never answers
        sip={"ring_timeout": RING_TIMEOUT},
    )
    started = trio.current_time()
    with caplog.at_level(logging.INFO, logger="gateway.core.calls.call"):
        call = await env.trunk.invite(env.did_uri(ALICE_DID))
        await call.exchange.wait_for(lambda response: response.status == 180, timeout=5)
        await trio.sleep(RING_TIMEOUT - 1)
        assert [s for s in call.exchange.statuses if s >= 200] == []  # still ringing

        final = await call.final(timeout=5)
        assert final.status == 408
        assert RING_TIMEOUT <= trio.current_time() - started < RING_TIMEOUT + 1
        await env.alice.next_request("CANCEL", timeout=5)
        await eventually(lambda: env.calls == 0)
    assert any(
        f"ended: no answer within {RING_TIMEOUT:g} s" in r.getMessage() for r in caplog.records
    )


async def test_a_call_whose_200_cannot_be_read_is_freed_by_the_ring_timeout(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # A 200 with "Contact: *" is malformed (RFC 3261 §20.10: only in REGISTER): the gateway
    # drops it as it drops every malformed response, and the B leg stays unanswered.
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        alice_auto=AutoAnswer(ring=True, status=None),
        sip={"ring_timeout": RING_TIMEOUT},
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    at_alice = await env.alice.next_call(timeout=5)
    assert at_alice.incoming is not None
    received: Received = at_alice.incoming
    await env.alice.respond(
        received, 200, body=env.alice.answer_sdp(received.request.body), extra=[("Contact", "*")]
    )
    final = await call.final(timeout=RING_TIMEOUT + 5)
    assert final.status == 408
    await eventually(lambda: env.calls == 0, timeout=40)  # after the drain of the B leg


async def test_each_provisional_response_restarts_the_ring_timeout(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # A queue that answers 183 and plays music, sending 183 again every 15 s, rings on.
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        alice_auto=AutoAnswer(ring=False, status=None),
        sip={"ring_timeout": RING_TIMEOUT},
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    queue = await env.alice.next_call(timeout=5)
    for _ in range(4):  # 60 s of ringing in all, three times the timeout
        await queue.ring(183)
        await trio.sleep(RING_TIMEOUT * 0.75)
    assert [s for s in call.exchange.statuses if s >= 200] == []
    await queue.answer()
    assert (await call.final(timeout=5)).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
