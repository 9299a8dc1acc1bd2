"""Late offer through the B2BUA: an INVITE without SDP (RFC 3261 §13.2.1), as many PBXs and
carrier trunks send by default ("delayed offer").

The gateway sends its INVITE to B without SDP too; B's 2xx brings the offer, our 200 to A carries
it rewritten to the relay, A's ACK brings the answer and our ACK to B carries that answer,
rewritten. When the answer never comes or is unusable, B's 2xx is still ACKed with a valid
answer (every stream rejected, RFC 3264 §6) and then BYEd (§13.2.2.4). A re-INVITE without SDP
(§14.1) goes the same way inside the call.

Set-up as b2bua_env.py: trunk "carrier" at 127.0.0.2 calls alice's DID; alice answers by hand.
"""

from __future__ import annotations

from pathlib import Path

import trio

import gateway.plugins.keyexchange.sdes as sdes_plugin
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import SipAgent, sdp_connection, simple_sdp
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    GW,
    T1,
    TRUNK,
    B2bua,
    answered_call,
    assert_media_via_gateway,
    eventually,
    sent,
    start_b2bua,
)
from tests.component.calls.b2bua_scenarios import assert_no_media_ports_held, second_phone

ALICE_OFFER = simple_sdp("127.0.0.3", 30000, version=1)


async def late_offer_env(nursery: trio.Nursery, tmp_path: Path, seed: int) -> B2bua:
    return await start_b2bua(nursery, tmp_path, seed, alice_auto=None)


async def test_a_late_offer_is_carried_through_both_2xx_and_both_acks(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await late_offer_env(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    assert call.invite.body == b""

    leg_b = await env.alice.next_call()
    # B's INVITE carries no offer either: the callee makes it.
    assert leg_b.invite.body == b""
    assert leg_b.invite.content_type is None
    await leg_b.answer(sdp=ALICE_OFFER)

    final = await call.final()
    assert final.status == 200
    # A gets the offer, rewritten so that media flows through the relay.
    assert final.content_type == "application/sdp"
    assert_media_via_gateway(final.body)
    offer_a = parse_sdp_untrusted(final.body)
    assert [m.formats for m in offer_a.media] == [("0", "8", "101")]

    # The trunk's ACK answered that offer; alice's ACK carries that answer, rewritten.
    ack_b = (await env.alice.next_request("ACK")).request
    acks_from_trunk = sent(env.network.capture, TRUNK, GW, b"ACK ")
    assert len(acks_from_trunk) == 1
    assert b"\r\n\r\nv=0" in acks_from_trunk[0].data
    assert ack_b.content_type == "application/sdp"
    assert_media_via_gateway(ack_b.body)
    answer_b = parse_sdp_untrusted(ack_b.body)
    assert len(answer_b.media) == 1 and answer_b.media[0].port != 0
    # The relay points each side at what that side's SDP said.
    assert sdp_connection(final.body) != sdp_connection(ack_b.body)
    await eventually(lambda: env.calls == 1)

    assert (await call.bye()).status == 200
    bye = await env.alice.next_request("BYE")
    assert bye.request.call_id == leg_b.call_id
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)


async def test_an_ack_without_the_answer_ends_the_call_and_b_still_gets_a_valid_ack(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await late_offer_env(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    call.ack_answer = b""  # the trunk ACKs our 2xx without the answer it owes
    leg_b = await env.alice.next_call()
    await leg_b.answer(sdp=ALICE_OFFER)
    assert (await call.final()).status == 200

    # RFC 3261 §13.2.2.4: B's 2xx is ACKed with a valid answer that rejects the stream, then
    # BYEd; A, whose ACK made the call unusable, gets a BYE too. Both say why.
    ack_b = (await env.alice.next_request("ACK")).request
    answer = parse_sdp_untrusted(ack_b.body)
    assert [m.port for m in answer.media] == [0]
    bye_b = (await env.alice.next_request("BYE")).request
    assert "cause=488" in (bye_b.headers.get("Reason") or "")
    assert "ACK without the SDP answer" in (bye_b.headers.get("Reason") or "")
    bye_a = await env.trunk.next_request("BYE")
    assert bye_a.request.call_id == call.call_id
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)


async def test_a_caller_that_never_acks_the_offer_is_hung_up_after_64_t1(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await late_offer_env(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    leg_b = await env.alice.next_call()
    env.network.set_link(TRUNK, GW, drop=1.0)  # nothing from the trunk arrives any more
    await leg_b.answer(sdp=ALICE_OFFER)
    answered_at = trio.current_time()
    assert (await call.final()).status == 200

    # Our 2xx with the offer is retransmitted (§13.3.1.4) and B is not ACKed meanwhile.
    ack_b = await env.alice.next_request("ACK", timeout=64 * T1 + 5)
    waited = ack_b.at - answered_at
    assert 64 * T1 - 0.1 <= waited <= 64 * T1 + 0.5
    retransmitted = sent(env.network.capture, GW, TRUNK, b"SIP/2.0 200 ")
    assert len(retransmitted) >= 7  # T1, 2T1, 4T1, then every T2 (4 s) for 32 s
    assert [m.port for m in parse_sdp_untrusted(ack_b.request.body).media] == [0]
    bye_b = (await env.alice.next_request("BYE")).request
    assert "no ACK from A leg" in (bye_b.headers.get("Reason") or "")
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)


async def test_a_2xx_without_an_offer_ends_the_late_offer_call_488(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await late_offer_env(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    leg_b = await env.alice.next_call()
    await env.alice.respond(leg_b.incoming, 200, body=b"")  # type: ignore[arg-type]

    final = await call.final()
    assert final.status == 488
    assert "2xx without SDP offer" in (final.headers.get("Warning") or "")
    # B's 2xx is ACKed (no offer: nothing to answer) and BYEd.
    ack_b = (await env.alice.next_request("ACK")).request
    assert ack_b.body == b""
    assert (await env.alice.next_request("BYE")).request.call_id == leg_b.call_id
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)


async def test_a_late_offer_rings_both_phones_and_the_second_2xx_is_acked_and_byed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await late_offer_env(nursery, tmp_path, voipgw_seed)
    phone2: SipAgent = await second_phone(env, nursery, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    first = await env.alice.next_call()
    second = await phone2.next_call()
    assert first.invite.body == b"" and second.invite.body == b""
    await first.ring()
    await second.ring()
    ringing = await call.exchange.wait_for(lambda r: r.status == 180)  # type: ignore[union-attr]
    assert ringing.body == b""  # no early SDP: a 1xx may not carry the offer here

    await first.answer(sdp=ALICE_OFFER)
    await second.answer(sdp=simple_sdp("127.0.0.5", 31000, version=1))  # crosses our CANCEL
    assert (await call.final()).status == 200
    assert (await env.alice.next_request("ACK")).request.body != b""
    # The losing 2xx carries an offer too: its ACK rejects it, then BYE (§13.2.2.4).
    ack_2 = (await phone2.next_request("ACK")).request
    assert [m.port for m in parse_sdp_untrusted(ack_2.body).media] == [0]
    assert (await phone2.next_request("BYE")).request.call_id == second.call_id
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)


async def test_an_early_offer_still_acks_without_a_body(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Control: with SDP in the INVITE nothing of the above applies."""
    env = await late_offer_env(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.invite.body != b""
    await leg_b.answer()
    final = await call.final()
    assert final.status == 200
    assert_media_via_gateway(final.body)
    assert (await env.alice.next_request("ACK")).request.body == b""
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


# -- a re-INVITE without SDP (RFC 3261 §14.1) ---------------------------------------------------


async def test_a_reinvite_without_sdp_is_relayed_as_a_late_offer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)  # alice answers by herself
    call, leg_b = await answered_call(env)
    # A PBX asks for the other side's current offer, e.g. before a transfer.
    ok = await call.reinvite(b"")
    assert ok.status == 200
    assert_media_via_gateway(ok.body)

    reinvite = (await env.alice.next_request("INVITE")).request
    assert reinvite.call_id == leg_b.call_id
    assert reinvite.body == b"" and reinvite.content_type is None
    # Alice's ACK of her 2xx (which offered) carries the trunk's answer, rewritten.
    ack = (await env.alice.next_request("ACK")).request
    assert ack.cseq.number == reinvite.cseq.number
    assert_media_via_gateway(ack.body)
    assert [m.port != 0 for m in parse_sdp_untrusted(ack.body).media] == [True]
    await trio.sleep(10)
    assert env.calls == 1 and env.alice.requests("BYE") == []
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)


async def test_a_late_reinvite_acked_without_the_answer_ends_the_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, leg_b = await answered_call(env)
    call.ack_answer = b""  # the trunk owes an answer in its ACK and sends none
    assert (await call.reinvite(b"")).status == 200

    reinvite = (await env.alice.next_request("INVITE")).request
    assert reinvite.call_id == leg_b.call_id and reinvite.body == b""
    ack = (await env.alice.next_request("ACK")).request
    assert ack.cseq.number == reinvite.cseq.number
    assert [m.port for m in parse_sdp_untrusted(ack.body).media] == [0]  # §13.2.2.4
    bye_b = (await env.alice.next_request("BYE")).request
    reason = bye_b.headers.get("Reason") or ""
    assert "cause=488" in reason and "ACK without the SDP answer" in reason
    assert (await env.trunk.next_request("BYE")).request.call_id == call.call_id
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)


# -- a late offer and the callee's media security -----------------------------------------------

SDES_KEY = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"  # RFC 4568 §6.1's shape


def sdes_offer(port: int) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {SDES_KEY}\r\n"
    ).encode()


async def sdes_env(nursery: trio.Nursery, tmp_path: Path, seed: int) -> B2bua:
    env = await start_b2bua(
        nursery, tmp_path, seed, alice_auto=None, plugins=[("sdes", sdes_plugin)]
    )
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", media_policy="sdes")
    return env


async def test_an_sdes_offer_over_udp_signalling_ends_the_call_488_and_no_key_is_sent_back(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await sdes_env(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    leg_b = await env.alice.next_call()
    await leg_b.answer(sdp=sdes_offer(30000))
    final = await call.final()
    # RFC 4568 §8.1: SDES keys only over TLS-protected signalling; alice's leg is UDP. The
    # refusal is the same as for an early offer, stated to the caller.
    assert final.status == 488
    assert "TLS-protected signalling" in (final.headers.get("Warning") or "")
    ack = (await env.alice.next_request("ACK")).request
    rejected = parse_sdp_untrusted(ack.body).media
    assert [m.port for m in rejected] == [0] and not rejected[0].crypto
    assert b"inline:" not in ack.body
    assert (await env.alice.next_request("BYE")).request.call_id == leg_b.call_id
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)


async def test_a_plain_offer_from_a_callee_whose_policy_requires_sdes_ends_the_call_488(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await sdes_env(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    leg_b = await env.alice.next_call()
    await leg_b.answer(sdp=ALICE_OFFER)  # RTP/AVP: the policy refuses it
    final = await call.final()
    assert final.status == 488
    warning = final.headers.get("Warning") or ""
    assert "policy sdes requires encrypted media" in warning
    ack = (await env.alice.next_request("ACK")).request
    assert [m.port for m in parse_sdp_untrusted(ack.body).media] == [0]
    assert (await env.alice.next_request("BYE")).request.call_id == leg_b.call_id
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)


async def test_when_the_answering_fork_is_unusable_the_other_fork_stops_ringing(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Early offer and late offer alike: the first 2xx ends the call (its SDP is unusable), so
    the phone still ringing gets a CANCEL (RFC 3261 §9.1) instead of ringing on alone."""
    env = await late_offer_env(nursery, tmp_path, voipgw_seed)
    phone2: SipAgent = await second_phone(env, nursery, voipgw_seed)
    for late in (False, True):
        call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"" if late else None)
        ringing = await env.alice.next_call()
        answering = await phone2.next_call()
        await ringing.ring()
        await call.exchange.wait_for(lambda r: r.status == 180)  # type: ignore[union-attr]
        await phone2.respond(answering.incoming, 200, body=b"")  # type: ignore[arg-type]
        assert (await call.final()).status == 488
        cancel = await env.alice.next_request("CANCEL", timeout=5)
        assert cancel.request.call_id == ringing.call_id
        await eventually(lambda: env.calls == 0)
        assert_no_media_ports_held(env)
