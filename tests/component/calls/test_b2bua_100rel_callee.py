"""Reliable provisional responses from a callee (RFC 3262 §4), PRACKed by the gateway itself.

specs/sip-robustness.md: "Negotiate per leg; if leg A doesn't support 100rel, the B2BUA must
PRACK leg B itself and relay early SDP unreliably." Our INVITE says ``Supported: 100rel`` (not
with a late offer, where a reliable 1xx could carry an offer for A to answer); each reliable 1xx
is PRACKed in its early dialog (``RAck: RSeq CSeq INVITE``), a retransmission of it or one out
of order is dropped, and A gets an ordinary 1xx (a reliable one of ours only if A required it).
The 2xx confirms the early dialog, so our later requests to the callee continue its CSeq.
Before, a callee could not send reliable 1xx at all, and one insisting on them (421) was
unreachable.

Set-up as b2bua_env.py: trunk "carrier" at 127.0.0.2 calls alice's DID; alice answers by hand.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from gateway.core.sip.message import make_response
from gateway.core.sip.serializer import serialize_message
from gateway.testing.sip_agent import Call, Received, simple_sdp
from tests.component.calls.b2bua_env import (
    ALICE,
    ALICE_DID,
    GW,
    B2bua,
    assert_media_via_gateway,
    eventually,
    start_b2bua,
)

RELIABLE = [("Require", "100rel")]
ALICE_SDP = simple_sdp(ALICE[0], 30000, version=1)


async def ringing_reliably(env: B2bua, rseq: int, *, status: int = 180) -> tuple[Call, Call]:
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    body = ALICE_SDP if status == 183 else b""
    await env.alice.respond(
        leg_b.incoming, status, body=body, extra=[*RELIABLE, ("RSeq", str(rseq))]
    )
    return call, leg_b


def pracks(env: B2bua) -> list[Received]:
    return [r for r in env.alice.received if r.request.method == "PRACK"]


async def test_a_callees_reliable_180_is_pracked_by_us_and_the_caller_gets_an_ordinary_one(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call, leg_b = await ringing_reliably(env, rseq=7)
    assert leg_b.invite.headers.get_all("Supported") == ("100rel", "timer")
    prack = (await env.alice.next_request("PRACK")).request
    assert prack.headers.get("RAck") == "7 1 INVITE"
    assert prack.cseq.number == 2  # the early dialog's next CSeq after the INVITE's
    assert prack.call_id == leg_b.call_id
    assert call.exchange is not None
    ringing = await call.exchange.wait_for(lambda r: r.status == 180)
    assert ringing.headers.get("RSeq") is None and ringing.headers.get("Require") is None

    # The 2xx confirms the PRACKed early dialog: our BYE continues its CSeq (3, not 2 again).
    assert leg_b.incoming is not None
    await env.alice.respond(leg_b.incoming, 200, body=ALICE_SDP)
    assert (await call.final()).status == 200
    await env.alice.next_request("ACK")
    assert (await call.bye()).status == 200
    bye = (await env.alice.next_request("BYE")).request
    assert bye.cseq.number == 3
    await eventually(lambda: env.calls == 0)


async def test_a_retransmitted_or_out_of_order_reliable_1xx_is_not_pracked_again(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call, leg_b = await ringing_reliably(env, rseq=100)
    await env.alice.next_request("PRACK")
    assert leg_b.incoming is not None
    # The same 180 again (its PRACK "lost"), then one skipping an RSeq: both dropped (§4).
    for rseq in (100, 102):
        await env.alice.respond(leg_b.incoming, 180, extra=[*RELIABLE, ("RSeq", str(rseq))])
    # Then the next in order: a 183 with the early media answer, PRACKed and relayed.
    await env.alice.respond(leg_b.incoming, 183, body=ALICE_SDP, extra=[*RELIABLE, ("RSeq", "101")])
    assert call.exchange is not None
    early = await call.exchange.wait_for(lambda r: r.status == 183)
    assert_media_via_gateway(early.body)
    await trio.sleep(1)
    assert [r.request.headers.get("RAck") for r in pracks(env)] == [
        "100 1 INVITE",
        "101 1 INVITE",
    ]
    assert call.exchange.statuses.count(180) == 1
    await call.cancel()
    assert (await call.final()).status == 487


async def test_both_legs_reliable_each_on_its_own(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(
        env.did_uri(ALICE_DID), extra=[("Require", "100rel"), ("Supported", "100rel")]
    )
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    await env.alice.respond(leg_b.incoming, 180, extra=[*RELIABLE, ("RSeq", "1")])
    assert call.exchange is not None
    ringing = await call.exchange.wait_for(lambda r: r.status == 180)
    # A's 180 is reliable with an RSeq of ours, not the callee's; A PRACKs us, we PRACK alice.
    assert ringing.headers.get("Require") == "100rel"
    our_rseq = ringing.headers.get("RSeq")
    assert our_rseq is not None
    await eventually(lambda: len(call.pracks) == 1)
    assert call.pracks[0].request.headers.get("RAck") == f"{our_rseq} 1 INVITE"
    assert (await call.pracks[0].final()).status == 200
    assert [r.request.headers.get("RAck") for r in pracks(env)] == ["1 1 INVITE"]
    await env.alice.respond(leg_b.incoming, 200, body=ALICE_SDP)
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200


async def test_a_late_offer_does_not_tell_the_callee_we_support_reliable_1xx(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    leg_b = await env.alice.next_call()
    assert leg_b.invite.headers.get("Supported") == "timer"


async def test_a_reliable_1xx_without_a_usable_rseq_is_relayed_unpracked(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    for rseq in ([], [("RSeq", "0")], [("RSeq", "4294967296")], [("RSeq", "one")]):
        await env.alice.respond(leg_b.incoming, 180, extra=[*RELIABLE, *rseq])
    assert call.exchange is not None
    await call.exchange.wait_for(lambda r: r.status == 180)
    await trio.sleep(1)
    assert pracks(env) == []  # nothing can acknowledge it (RFC 3262 §7.1: RSeq 1..2**32-1)
    assert call.exchange.statuses.count(180) == 4  # each relayed as an ordinary 180
    await call.cancel()
    assert (await call.final()).status == 487


@pytest.mark.parametrize("header", ["From", "Call-ID"])
async def test_a_reliable_1xx_of_another_dialog_is_dropped_and_the_call_goes_on(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    header: str,
) -> None:
    # What the early-dialog fuzz found (test_b2bua_fuzzed_early_dialogs.py): a reliable 1xx
    # with our INVITE's Via branch and the callee's To tag but another From tag or Call-ID
    # matched our transaction (RFC 3261 §17.1.3) but not the early dialog, whose check raised:
    # the call failed as an internal error (logged at ERROR).
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call, leg_b = await ringing_reliably(env, rseq=7)
    await env.alice.next_request("PRACK")
    assert leg_b.incoming is not None
    request = leg_b.incoming.request
    value = str(request.from_.with_tag("another")) if header == "From" else "another-call-id"
    stranger = make_response(
        request.with_headers(request.headers.set(header, value)),
        183,
        to_tag=leg_b.local_tag,
        extra=[("Contact", str(env.alice.contact)), *RELIABLE, ("RSeq", "8")],
        body=ALICE_SDP,
        content_type="application/sdp",
    )
    await env.alice.socket.sendto(serialize_message(stranger), GW)
    await trio.sleep(2)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert len(pracks(env)) == 1  # not PRACKed
    assert env.calls == 1
    await env.alice.respond(leg_b.incoming, 200, body=ALICE_SDP)
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


@pytest.mark.parametrize("header", ["From", "Call-ID"])
async def test_a_2xx_of_another_dialog_is_dropped_and_the_call_goes_on(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    header: str,
) -> None:
    # As above for the 2xx: with the early dialog's To tag, it found the PRACKed early dialog,
    # whose check raised (an internal error ending the call). It belongs to no dialog of ours.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call, leg_b = await ringing_reliably(env, rseq=7)
    await env.alice.next_request("PRACK")
    assert leg_b.incoming is not None
    request = leg_b.incoming.request
    value = str(request.from_.with_tag("another")) if header == "From" else "another-call-id"
    stranger = make_response(
        request.with_headers(request.headers.set(header, value)),
        200,
        to_tag=leg_b.local_tag,
        extra=[("Contact", str(env.alice.contact))],
        body=ALICE_SDP,
        content_type="application/sdp",
    )
    await env.alice.socket.sendto(serialize_message(stranger), GW)
    await trio.sleep(2)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert env.calls == 1
    assert call.exchange is not None and not [s for s in call.exchange.statuses if s >= 200]
    await env.alice.respond(leg_b.incoming, 200, body=ALICE_SDP)
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
