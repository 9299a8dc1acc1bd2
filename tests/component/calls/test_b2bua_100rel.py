"""Reliable provisional responses to a caller that requires them (RFC 3262, ``Require: 100rel``),
as some carrier and IMS interconnects send every INVITE. Before, such a call got 420.

The gateway sends each 1xx to that caller with ``Require: 100rel`` and an RSeq (the first random
in 1..2**31-1, then one more each time), one unacknowledged at a time, re-sent at T1, 2*T1 ...
until its PRACK, which gets 200; without a PRACK for 64*T1 the INVITE is refused with 500 and the
callee CANCELled. The callee's leg negotiates on its own (test_b2bua_100rel_callee.py): it is
not required to send reliable responses.

Set-up as b2bua_env.py: trunk "carrier" at 127.0.0.2 calls alice's DID; alice answers by hand.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import trio

from gateway.core.sip.dialog import Dialog
from gateway.testing.sip_agent import Call, simple_sdp
from tests.component.calls.b2bua_env import (
    ALICE,
    ALICE_DID,
    GW,
    T1,
    TRUNK,
    B2bua,
    eventually,
    sent,
    start_b2bua,
)
from tests.component.calls.b2bua_scenarios import assert_no_media_ports_held

REQUIRE_100REL = [("Require", "100rel"), ("Supported", "100rel")]
ALICE_ANSWER_SDP = simple_sdp(ALICE[0], 30000, version=1)


async def env_with_manual_alice(nursery: trio.Nursery, tmp_path: Path, seed: int) -> B2bua:
    return await start_b2bua(nursery, tmp_path, seed, alice_auto=None)


async def test_a_caller_that_requires_100rel_gets_reliable_ringing_and_its_prack_is_answered(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with_manual_alice(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=REQUIRE_100REL)
    leg_b = await env.alice.next_call()
    # The callee is not asked for reliable responses: that is the caller's leg's business.
    assert leg_b.invite.headers.get("Require") is None
    await leg_b.ring()
    assert call.exchange is not None
    ringing = await call.exchange.wait_for(lambda r: r.status == 180)
    assert ringing.headers.get("Require") == "100rel"
    rseq = int(ringing.headers.get("RSeq") or "0")
    assert 1 <= rseq <= 2**31 - 1
    await eventually(lambda: len(call.pracks) == 1)
    assert (await call.pracks[0].final()).status == 200
    # Answered after the PRACK: the call goes on as any other.
    await trio.sleep(3)
    await leg_b.answer(sdp=ALICE_ANSWER_SDP)
    assert (await call.final()).status == 200
    # Once PRACKed, the 180 was not re-sent.
    assert len(sent(env.network.capture, GW, TRUNK, b"SIP/2.0 180 ")) == 1
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)


async def test_a_second_1xx_waits_for_the_prack_of_the_first_and_takes_the_next_rseq(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with_manual_alice(nursery, tmp_path, voipgw_seed)
    env.network.set_link(TRUNK, GW, delay=1.0)  # the trunk's PRACK takes a second to arrive
    call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=REQUIRE_100REL)
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    # Early media right behind it, before the 180's PRACK came: a 183 with the SDP answer.
    await env.alice.respond(leg_b.incoming, 183, body=ALICE_ANSWER_SDP)  # type: ignore[arg-type]
    assert call.exchange is not None
    early = await call.exchange.wait_for(lambda r: r.status == 183, timeout=10)
    ringing = await call.exchange.wait_for(lambda r: r.status == 180)
    assert int(early.headers.get("RSeq") or "0") == int(ringing.headers.get("RSeq") or "0") + 1
    assert b"m=audio" in early.body  # the answer, rewritten to the relay, in a reliable 183
    # RFC 3262 §3: the 183 went out only after the 180's PRACK arrived.
    first_prack = sent(env.network.capture, TRUNK, GW, b"PRACK ")[0]
    first_183 = sent(env.network.capture, GW, TRUNK, b"SIP/2.0 183 ")[0]
    assert first_183.time >= first_prack.time + 1.0  # its arrival, a second after it left
    await eventually(lambda: len(call.pracks) == 2)
    assert [(await p.final()).status for p in call.pracks] == [200, 200]
    await leg_b.answer(sdp=ALICE_ANSWER_SDP)
    assert (await call.final(timeout=10)).status == 200
    assert (await call.bye(timeout=10)).status == 200
    await eventually(lambda: env.calls == 0)


async def test_without_a_prack_the_1xx_is_resent_and_after_64_t1_the_invite_gets_500(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with_manual_alice(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=REQUIRE_100REL)
    call.send_prack = False
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    started = trio.current_time()
    final = await call.final(timeout=64 * T1 + 5)
    assert final.status == 500
    assert "no PRACK" in (final.headers.get("Warning") or "")
    waited = trio.current_time() - started
    assert 64 * T1 - 0.1 <= waited <= 64 * T1 + 0.5
    ringing = sent(env.network.capture, GW, TRUNK, b"SIP/2.0 180 ")
    # Sent at 0, then re-sent at T1, 3*T1, 7*T1 ... 63*T1 (doubling, as Timer A): 7 in all.
    gaps = [round((b.time - a.time) / T1) for a, b in itertools.pairwise(ringing)]
    assert gaps == [1, 2, 4, 8, 16, 32]
    # The callee, still ringing, is CANCELled.
    cancel = await env.alice.next_request("CANCEL", timeout=5)
    assert cancel.request.call_id == leg_b.call_id
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)


async def test_a_prack_that_acknowledges_nothing_gets_481_and_a_bad_rack_400(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with_manual_alice(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=REQUIRE_100REL)
    call.send_prack = False  # the test sends them
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    assert call.exchange is not None
    ringing = await call.exchange.wait_for(lambda r: r.status == 180)
    rseq = int(ringing.headers.get("RSeq") or "0")
    early = Dialog.create_uac(call.invite, ringing)
    tries = [(f"{rseq + 1} 1 INVITE", 481), ("one 1 INVITE", 400), (f"{rseq} 1 INVITE", 200)]
    for rack, status in tries:
        prack = early.create_request("PRACK", via=env.trunk.new_via(), extra=[("RAck", rack)])
        exchange = await env.trunk.send(prack, GW)
        assert (await exchange.final()).status == status, rack
    await leg_b.answer(sdp=ALICE_ANSWER_SDP)
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_caller_that_only_supports_100rel_gets_ordinary_provisional_responses(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Control: Supported (not Require) leaves the choice to us; we keep 1xx unreliable."""
    env = await env_with_manual_alice(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[("Supported", "100rel")])
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    assert call.exchange is not None
    ringing = await call.exchange.wait_for(lambda r: r.status == 180)
    assert ringing.headers.get("RSeq") is None and ringing.headers.get("Require") is None
    await leg_b.answer(sdp=ALICE_ANSWER_SDP)
    assert (await call.final()).status == 200
    assert call.pracks == []
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


# -- RFC 3262 §3: our 2xx waits for the PRACK of a reliable 1xx that carried SDP --------------


async def early_media_then_answer(env: B2bua, *, prack: bool = True) -> tuple[Call, Call]:
    """The trunk (requiring 100rel; PRACKing unless ``prack`` is false) calls alice, who sends
    a 183 with SDP and at once her 200: (leg A, leg B)."""
    call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=REQUIRE_100REL)
    call.send_prack = prack
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    await env.alice.respond(leg_b.incoming, 183, body=ALICE_ANSWER_SDP)
    assert call.exchange is not None
    await call.exchange.wait_for(lambda r: r.status == 183)
    await leg_b.answer(sdp=ALICE_ANSWER_SDP)
    return call, leg_b


async def test_our_2xx_waits_for_the_prack_of_a_reliable_183_with_sdp(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with_manual_alice(nursery, tmp_path, voipgw_seed)
    env.network.set_link(TRUNK, GW, delay=1.0)  # the trunk's PRACK takes a second to arrive
    call, _ = await early_media_then_answer(env)
    assert (await call.final(timeout=10)).status == 200
    prack_in = sent(env.network.capture, TRUNK, GW, b"PRACK ")[0].time + 1.0  # its arrival
    ok_out = [
        d for d in sent(env.network.capture, GW, TRUNK, b"SIP/2.0 200 ") if b"INVITE" in d.data
    ]
    assert ok_out[0].time >= prack_in  # not before the PRACK, although alice answered at once
    assert (await call.bye(timeout=10)).status == 200
    await eventually(lambda: env.calls == 0)


async def test_without_that_prack_the_caller_gets_500_and_the_callee_who_answered_bye(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with_manual_alice(nursery, tmp_path, voipgw_seed)
    call, leg_b = await early_media_then_answer(env, prack=False)
    final = await call.final(timeout=64 * T1 + 5)
    assert final.status == 500
    bye = await env.alice.next_request("BYE", timeout=5)
    assert bye.request.call_id == leg_b.call_id
    assert sent(env.network.capture, GW, TRUNK, b"SIP/2.0 200 ") == []
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)


async def test_a_cancel_or_the_callees_bye_while_our_2xx_waits(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with_manual_alice(nursery, tmp_path, voipgw_seed)
    call, leg_b = await early_media_then_answer(env, prack=False)
    await call.cancel()
    assert (await call.final(timeout=10)).status == 487
    bye = await env.alice.next_request("BYE", timeout=10)
    assert bye.request.call_id == leg_b.call_id
    await eventually(lambda: env.calls == 0)

    # The callee hangs up instead: the caller, who never had our 2xx, gets 480, not a BYE.
    call, leg_b = await early_media_then_answer(env, prack=False)
    await env.alice.next_request("ACK")
    assert (await leg_b.bye()).status == 200
    final = await call.final(timeout=10)
    assert final.status == 480
    assert "BYE from B leg" in (final.headers.get("Warning") or "")
    assert env.trunk.requests("BYE") == []
    await eventually(lambda: env.calls == 0)
