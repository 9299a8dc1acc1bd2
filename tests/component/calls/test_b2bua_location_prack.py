"""A caller's location UPDATE (RFC 6442 §4.1) while our 2xx waits for its PRACK (RFC 3262 §3:
not before the PRACK of our reliable 183 with SDP), through the B2BUA on the in-memory network.

- the trunk's answer to our location UPDATE in its early dialog, arriving after it answered the
  call and before the caller's PRACK, is the caller's UPDATE's answer, Geolocation-Error and
  all; our 200 to the INVITE still waits for the PRACK;
- a trunk silent on that UPDATE: the bounded wait (LOCATION_UPDATE_WAIT) runs out during the
  PRACK wait and the caller's UPDATE gets 200 all the same;
- the caller's UPDATE sent during the PRACK wait reaches the trunk, which has answered: in its
  confirmed dialog, with session timer fields (a refresh of that leg, RFC 4028 §10), and its
  answer is the caller's (before, the location went nowhere and the UPDATE got 200 at once);
- the same before the caller's ACK, in a late-offer call (our 200 offered, its ACK answers);
- a Geolocation-Error in an answer that comes after the caller's UPDATE was answered without
  it goes into the call record, and the log does not say it was relayed.

Set-up as test_b2bua_location.py: alice calls 112 (an emergency number) on trunk "carrier",
requiring 100rel; the carrier answers by hand.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from gateway.core.calls.location_updates import LOCATION_UPDATE_WAIT
from gateway.core.sdp.body import sdp_of
from gateway.core.sip.message import Request, Response
from gateway.testing.sip_agent import Call, Exchange
from tests.component.calls.b2bua_env import ALICE, GW, B2bua, eventually, sent
from tests.component.calls.location_calls import (
    BY_VALUE,
    MIXED,
    MOVED,
    MOVED_ONLY,
    located_body,
    located_call,
    started,
    update,
)
from tests.component.calls.location_followups import location_record, trunk_ignores

REQUIRE_100REL = [("Require", "100rel"), ("Supported", "100rel")]
CANNOT_PROCESS = '100 ;code="Cannot Process Location"'


async def early_media_unpracked(env: B2bua) -> tuple[Call, Call]:
    """alice calls 112 requiring 100rel and her location; the carrier's 183 with SDP reaches
    her reliably and she does not PRACK it (yet): (her call, the carrier's leg)."""
    env.trunk.auto = None
    call = await env.alice.invite(
        "sip:112@127.0.0.1:5060",
        sdp=located_body(env.alice.offer_sdp()),
        content_type=MIXED,
        extra=[*BY_VALUE, *REQUIRE_100REL],
    )
    assert (await call.final()).status == 407
    await call.authenticate()
    call.send_prack = False
    leg_b = await env.trunk.next_call()
    assert leg_b.incoming is not None
    offer = sdp_of(leg_b.invite.content_type, leg_b.invite.body)
    await env.trunk.respond(leg_b.incoming, 183, body=env.trunk.answer_sdp(offer))
    assert call.exchange is not None
    await call.exchange.wait_for(lambda r: r.status == 183)
    return call, leg_b


async def early_update(call: Call) -> Exchange:
    """alice's UPDATE without an offer with her new location, in her early dialog."""
    return await call.early_request("UPDATE", body=MOVED_ONLY, content_type=MIXED, extra=BY_VALUE)


async def prack_and_answer(call: Call) -> Response:
    """alice PRACKs the 183 at last; the final response to her INVITE."""
    assert call.exchange is not None
    early = next(r for r in call.exchange.responses if r.status == 183)
    rack = f"{early.headers.get('RSeq')} {early.cseq.number} INVITE"
    prack = await call.early_request("PRACK", extra=[("RAck", rack)])
    assert (await prack.final()).status == 200
    return await call.final()


def invite_oks_to_alice(env: B2bua) -> list[float]:
    return [
        d.time for d in sent(env.network.capture, GW, ALICE, b"SIP/2.0 200 ") if b"INVITE" in d.data
    ]


async def test_the_trunks_answer_during_the_prack_wait_answers_the_callers_update(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await started(nursery, tmp_path, voipgw_seed)
    call, leg_b = await early_media_unpracked(env)
    taken = trunk_ignores(env, "UPDATE")
    moved = await early_update(call)
    await eventually(lambda: len(taken) == 1)
    await leg_b.answer()  # our 2xx to alice now waits for her PRACK
    await trio.sleep(1)
    assert invite_oks_to_alice(env) == []
    await env.trunk.respond(taken[0], 200, extra=[("Geolocation-Error", CANNOT_PROCESS)])
    answered = await moved.final()
    assert answered.status == 200
    assert answered.headers.get("Geolocation-Error") == CANNOT_PROCESS
    assert invite_oks_to_alice(env) == []  # still waiting for the PRACK
    assert (await prack_and_answer(call)).status == 200
    env.trunk.in_dialog = None
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: location_record(env) is not None)
    assert location_record(env)["errors"] == [{"from": "carrier", "status": 200, "code": "100"}]


async def test_the_bounded_wait_runs_out_during_the_prack_wait(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await started(nursery, tmp_path, voipgw_seed)
    call, leg_b = await early_media_unpracked(env)
    taken = trunk_ignores(env, "UPDATE")
    sent_at = trio.current_time()
    moved = await early_update(call)
    await eventually(lambda: len(taken) == 1)
    await leg_b.answer()
    answered = await moved.final()
    assert answered.status == 200 and "Geolocation-Error" not in answered.headers
    assert LOCATION_UPDATE_WAIT <= trio.current_time() - sent_at < LOCATION_UPDATE_WAIT + 1
    assert invite_oks_to_alice(env) == []  # the PRACK wait goes on
    assert (await prack_and_answer(call)).status == 200
    env.trunk.in_dialog = None
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: location_record(env) is not None)
    assert location_record(env)["errors"] == [
        {"from": "carrier", "unanswered_after": LOCATION_UPDATE_WAIT}
    ]


async def test_the_callers_update_during_the_prack_wait_reaches_the_answered_trunk(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await started(nursery, tmp_path, voipgw_seed)
    call, leg_b = await early_media_unpracked(env)
    taken = trunk_ignores(env, "UPDATE")
    await leg_b.answer()
    await trio.sleep(1)  # the carrier's 200 is in and ACKed; alice has not PRACKed
    moved = await early_update(call)
    await eventually(lambda: len(taken) == 1)
    [received] = taken
    sent_update = received.request
    assert sent_update.to.tag == leg_b.local_tag and MOVED in sent_update.body
    assert sent_update.headers.get("Geolocation") == BY_VALUE[0][1]
    # The carrier's dialog is confirmed: our UPDATE is a session refresh of it as well.
    assert sent_update.headers.get("Session-Expires") is not None
    await env.trunk.respond(received, 424, extra=[("Geolocation-Error", CANNOT_PROCESS)])
    answered = await moved.final()
    assert answered.status == 424
    assert answered.headers.get("Geolocation-Error") == CANNOT_PROCESS
    assert (await prack_and_answer(call)).status == 200
    env.trunk.in_dialog = None
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: location_record(env) is not None)
    record = location_record(env)
    assert record["updates"] == 1
    assert record["errors"] == [{"from": "carrier", "status": 424, "code": "100"}]


async def test_a_late_geolocation_error_is_recorded_and_not_said_to_be_relayed(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = await started(nursery, tmp_path, voipgw_seed)
    call = await located_call(env, "112")
    taken = trunk_ignores(env, "UPDATE")
    answered = await update(call, MOVED_ONLY, BY_VALUE)
    assert answered.status == 200 and "Geolocation-Error" not in answered.headers
    caplog.set_level(logging.INFO, logger="gateway.core.calls.call")
    await env.trunk.respond(taken[0], 424, extra=[("Geolocation-Error", CANNOT_PROCESS)])
    await eventually(lambda: "late answer to the location update" in caplog.text)
    said = [r.getMessage() for r in caplog.records if "Geolocation-Error 100" in r.getMessage()]
    assert said and all("not relayed" in line for line in said)
    assert "relayed to the caller" not in caplog.text
    env.trunk.in_dialog = None
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: location_record(env) is not None)
    assert location_record(env)["errors"] == [
        {"from": "carrier", "unanswered_after": LOCATION_UPDATE_WAIT},
        {"from": "carrier", "status": 424, "code": "100"},
    ]


async def test_the_callers_update_before_its_ack_reaches_the_answered_trunk(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A late offer: our 200 to alice offers and waits for her ACK with the answer (the call
    not up yet). Her UPDATE with a new location meanwhile goes to the trunk, which has
    answered, in its confirmed dialog; its answer is hers."""
    env = await started(nursery, tmp_path, voipgw_seed)
    env.trunk.auto = None
    held: list[tuple[Request | Response, tuple[str, int]]] = []
    send_raw = env.alice._send_raw

    async def hold_acks(message: Request | Response, destination: tuple[str, int]) -> None:
        if isinstance(message, Request) and message.method == "ACK" and call.dialog is not None:
            held.append((message, destination))  # alice's ACK of our 200 waits
            return
        await send_raw(message, destination)

    call = await env.alice.invite(
        "sip:112@127.0.0.1:5060", sdp=MOVED_ONLY, content_type=MIXED, extra=BY_VALUE
    )
    assert (await call.final()).status == 407
    await call.authenticate()
    leg_b = await env.trunk.next_call()
    assert leg_b.incoming is not None
    monkeypatch.setattr(env.alice, "_send_raw", hold_acks)
    await env.trunk.respond(leg_b.incoming, 200, body=env.trunk.offer_sdp())
    assert (await call.final()).status == 200
    await eventually(lambda: len(held) == 1)
    taken = trunk_ignores(env, "UPDATE")
    exchange = await call.request("UPDATE", body=MOVED_ONLY, content_type=MIXED, extra=BY_VALUE)
    await eventually(lambda: len(taken) == 1)
    assert taken[0].request.to.tag == leg_b.local_tag and MOVED in taken[0].request.body
    await env.trunk.respond(taken[0], 200, extra=[("Geolocation-Error", CANNOT_PROCESS)])
    answered = await exchange.final()
    assert answered.status == 200
    assert answered.headers.get("Geolocation-Error") == CANNOT_PROCESS
    assert env.gateway.calls is not None
    (ours,) = env.gateway.calls.calls
    assert ours.state == "offered"  # still waiting for alice's ACK with the answer
    monkeypatch.undo()
    await send_raw(*held[0])  # alice's ACK with her answer: the call is up
    await eventually(lambda: ours.state == "answered")
    env.trunk.in_dialog = None
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
