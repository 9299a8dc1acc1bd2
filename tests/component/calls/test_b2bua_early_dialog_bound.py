"""A callee's reliable 1xx under ever new To tags (a proxy forking widely, RFC 3261 §16.7, or a
callee misbehaving): the B leg keeps at most MAX_EARLY_DIALOGS early dialogs, and with them
the RSeqs and the answers of reliable 1xx it keeps per tag (RFC 3262 §4, §5). Before session
42 each new tag added one of each for as long as the call rang. Past the bound a reliable 1xx
is relayed as an unreliable one and not PRACKed; the dialogs kept work as before.

Set-up as b2bua_env.py: trunk "carrier" calls alice's DID; alice answers by hand, her agent
standing in for every forked phone (one To tag each).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from gateway.core.calls.leg import MAX_EARLY_DIALOGS
from gateway.core.media.dtmf import event_payload
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import simple_sdp
from tests.component.calls.b2bua_env import ALICE, ALICE_DID, eventually, start_b2bua
from tests.component.calls.dtls_phone import bind
from tests.component.calls.dtmf_calls import b2bua_call, rtp
from tests.port_blocks import port_bases

RELIABLE = [("Require", "100rel"), ("RSeq", "1")]
ALLOW_INFO = [("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO")]
(TRUNK_PORT,) = port_bases(1)  # this process's own ports (tests/port_blocks.py)
TRUNK_SSRC = 0x7779


async def test_reliable_1xx_under_many_to_tags_keep_bounded_early_dialogs(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.core.calls")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None and call.exchange is not None
    first_tag = leg_b.local_tag
    forks = 3 * MAX_EARLY_DIALOGS
    for fork in range(forks):
        leg_b.local_tag = first_tag if fork == 0 else f"fork-{fork}"
        body = simple_sdp(ALICE[0], 30000 + 2 * fork, version=1)
        await env.alice.respond(leg_b.incoming, 183, body=body, extra=RELIABLE)
    # Every 1xx reached the caller; only the first MAX_EARLY_DIALOGS tags were PRACKed.
    await call.exchange.wait_for(lambda _: len(call.exchange.responses) > forks)  # type: ignore[union-attr]
    await trio.sleep(1)
    pracks = env.alice.requests("PRACK")
    assert len(pracks) == MAX_EARLY_DIALOGS
    assert {p.to.tag for p in pracks} == {first_tag} | {
        f"fork-{fork}" for fork in range(1, MAX_EARLY_DIALOGS)
    }
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    (b_leg,) = gateway_call.b_legs
    assert len(b_leg.early_dialogs) == MAX_EARLY_DIALOGS
    assert len(b_leg.last_rseq) == MAX_EARLY_DIALOGS
    assert b_leg.answers_in_1xx is not None
    assert len(b_leg.answers_in_1xx) == MAX_EARLY_DIALOGS
    said = [r for r in caplog.records if "past 32 early dialogs" in r.getMessage()]
    assert len(said) == 1  # once per leg, not once per 1xx
    # A kept dialog's bare 2xx confirms the answer its reliable 183 gave (RFC 3262 §5).
    leg_b.local_tag = first_tag
    await env.alice.respond(leg_b.incoming, 200)
    ok = await call.final()
    assert ok.status == 200 and ok.body
    await env.alice.next_request("ACK")
    assert (await call.bye()).status == 200
    await env.alice.next_request("BYE")
    await eventually(lambda: env.calls == 0)


async def test_a_stock_forking_proxys_every_branch_is_pracked_and_may_answer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A ring-all group behind Kamailio forks to 12 phones at once (its default max_branches;
    32 at most): each phone's reliable 183 is PRACKed (RFC 3262 §4: the UAC MUST), for a
    phone may send no 2xx before the PRACK of its reliable 1xx with SDP (§3), and the last
    one to ring answers. A bound of 8 left phones 9 to 12 unable to answer at all."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None and call.exchange is not None
    first_tag = leg_b.local_tag
    forks = 12
    tags = [first_tag] + [f"fork-{fork}" for fork in range(1, forks)]
    for fork, tag in enumerate(tags):
        leg_b.local_tag = tag
        body = simple_sdp(ALICE[0], 30000 + 2 * fork, version=1)
        await env.alice.respond(leg_b.incoming, 183, body=body, extra=RELIABLE)
    await call.exchange.wait_for(lambda _: len(call.exchange.responses) > forks)  # type: ignore[union-attr]
    await trio.sleep(1)
    assert {p.to.tag for p in env.alice.requests("PRACK")} == set(tags)
    # The twelfth phone answers; its bare 2xx confirms the answer its reliable 183 gave.
    leg_b.local_tag = tags[-1]
    await env.alice.respond(leg_b.incoming, 200)
    ok = await call.final()
    assert ok.status == 200 and ok.body
    ack = await env.alice.next_request("ACK")
    assert ack.request.to.tag == tags[-1]
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_no_dtmf_info_goes_into_an_early_dialog_past_the_bound(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The bound holds for the early dialogs our requests make too: the carrier (RFC 4733
    events) presses a key while the call relays the early media of a fork past the bound,
    whose 183 has no telephone-event (its digits go as INFO, RFC 6086 §4.2). No INFO goes
    into that fork's early dialog, which is not made; the digit is counted as failed."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", TRUNK_PORT, formats=("0", "101"))
    )
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None and call.exchange is not None
    first_tag = leg_b.local_tag
    for fork in range(MAX_EARLY_DIALOGS + 1):
        leg_b.local_tag = first_tag if fork == 0 else f"fork-{fork}"
        body = simple_sdp(ALICE[0], 30000 + 2 * fork, version=1, formats=("0",))
        # The last one unreliable: the fork whose early media the caller hears, past the bound.
        reliable = RELIABLE if fork < MAX_EARLY_DIALOGS else []
        await env.alice.respond(leg_b.incoming, 183, body=body, extra=[*reliable, *ALLOW_INFO])
    await call.exchange.wait_for(lambda _: len(call.exchange.responses) > MAX_EARLY_DIALOGS)  # type: ignore[union-attr]
    gateway_call = b2bua_call(env)
    assert gateway_call.media is not None and gateway_call.media.dtmf is not None
    early = call.exchange.responses[-1]
    to_carrier = ("127.0.0.1", parse_sdp_untrusted(early.body).media[0].port)
    trunk_sock = await bind(TRUNK_PORT)
    with trunk_sock:
        start = event_payload(1, end=False, duration=400)
        await trunk_sock.sendto(rtp(1, 101, TRUNK_SSRC, start, marker=True), to_carrier)
        end = event_payload(1, end=True, duration=800)
        for sequence in (2, 3, 4):
            await trunk_sock.sendto(rtp(sequence, 101, TRUNK_SSRC, end, timestamp=160), to_carrier)
        await eventually(lambda: gateway_call.security_record()["dtmf"].get("info_failed", 0) == 1)
    assert env.alice.requests("INFO") == []
    (b_leg,) = gateway_call.b_legs
    assert len(b_leg.early_dialogs) == MAX_EARLY_DIALOGS
    await call.cancel()
    await eventually(lambda: env.calls == 0)


async def test_a_reliable_183_past_the_bound_never_moves_the_early_media(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The 33rd fork's reliable 183 with SDP is not PRACKed (no early dialog kept for it):
    its answer is never completed (RFC 3262 §5) and its phone sends it again and again until
    it gives up (§3: 64*T1, then 5xx). It reaches the caller as ringing (180, no SDP), and the
    relay's early media stays with the fork the caller hears, at every copy. Before session 43
    each copy moved the early media to that phone, away from the fork the caller heard."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None and call.exchange is not None
    first_tag = leg_b.local_tag
    for fork in range(MAX_EARLY_DIALOGS):
        leg_b.local_tag = first_tag if fork == 0 else f"fork-{fork}"
        body = simple_sdp(ALICE[0], 30000 + 2 * fork, version=1)
        await env.alice.respond(leg_b.incoming, 183, body=body, extra=RELIABLE)
    # The 100 Trying, then a 183 for each.
    await call.exchange.wait_for(lambda _: len(call.exchange.responses) > MAX_EARLY_DIALOGS)  # type: ignore[union-attr]
    gateway_call = b2bua_call(env)
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    heard = (ALICE[0], 30000 + 2 * (MAX_EARLY_DIALOGS - 1))  # the last fork kept
    assert stream.b.rtp_destination == heard  # type: ignore[attr-defined]
    leg_b.local_tag = "fork-past-the-bound"
    body = simple_sdp(ALICE[0], 31000, version=1)
    before = len(call.exchange.responses)
    for copy in range(1, 4):  # the first and two retransmissions (T1, 2*T1)
        await env.alice.respond(leg_b.incoming, 183, body=body, extra=RELIABLE)
        await call.exchange.wait_for(
            lambda _, n=copy: len(call.exchange.responses) >= before + n  # type: ignore[union-attr]
        )
        assert stream.b.rtp_destination == heard  # type: ignore[attr-defined]
    past = call.exchange.responses[-3:]
    assert [r.status for r in past] == [180, 180, 180] and not any(r.body for r in past)
    assert "fork-past-the-bound" not in {p.to.tag for p in env.alice.requests("PRACK")}
    await call.cancel()
    await eventually(lambda: env.calls == 0)


async def test_the_fork_past_the_bound_may_still_answer_with_its_sdp(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The 33rd fork's reliable 183 reached the caller as 180 without SDP (its answer never
    completed, RFC 3262 §5); that phone then answers 200 with its SDP (a UAS ought to wait for
    the PRACK, §3, but some do not): the 2xx's answer is taken (RFC 3261 §13.2.1), the caller
    gets it in our 200 and the relay sends to that phone, not to the fork it heard ringing."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None and call.exchange is not None
    first_tag = leg_b.local_tag
    for fork in range(MAX_EARLY_DIALOGS):
        leg_b.local_tag = first_tag if fork == 0 else f"fork-{fork}"
        body = simple_sdp(ALICE[0], 30000 + 2 * fork, version=1)
        await env.alice.respond(leg_b.incoming, 183, body=body, extra=RELIABLE)
    await call.exchange.wait_for(lambda _: len(call.exchange.responses) > MAX_EARLY_DIALOGS)  # type: ignore[union-attr]
    leg_b.local_tag = "fork-past-the-bound"
    env.alice._by_dialog[(leg_b.call_id, leg_b.local_tag)] = leg_b
    body = simple_sdp(ALICE[0], 31000, version=1)
    before = len(call.exchange.responses)
    await env.alice.respond(leg_b.incoming, 183, body=body, extra=RELIABLE)
    await call.exchange.wait_for(lambda _: len(call.exchange.responses) > before)  # type: ignore[union-attr]
    assert call.exchange.responses[-1].status == 180
    await leg_b.answer(200, sdp=body)
    ok = await call.final()
    assert ok.status == 200 and ok.body
    ack = await env.alice.next_request("ACK")
    assert ack.request.to.tag == "fork-past-the-bound"
    gateway_call = b2bua_call(env)
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    await eventually(lambda: stream.b.rtp_destination == (ALICE[0], 31000))  # type: ignore[attr-defined]
    assert env.alice.requests("BYE") == [] and env.trunk.requests("BYE") == []
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
