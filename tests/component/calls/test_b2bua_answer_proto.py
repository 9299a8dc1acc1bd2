"""A callee whose answer uses another transport protocol than our offer (RFC 3264 §6).

Seen in a soak run: over UDP the gateway offered the callee plain RTP/AVP, the callee answered
RTP/SAVP with an a=crypto line, and the call went up as if nothing was wrong (the callee would
then send SRTP the relay has no keys for). Now such an answer, which changes the stream's
security, is bad SDP: its 2xx is ACKed (RFC 3261 §13.2.2.4), then BYEd with a Reason (RFC
3326), and the caller gets 488 with the reason as Warning. An answer that changes only the
RFC 4585 feedback profile (RTP/AVPF for RTP/AVP) is tolerated (RFC 4585 §5): the call goes
up and the caller's answer keeps the profile it offered.

Set-up as b2bua_env.py: trunk "carrier" at 127.0.0.2 calls alice's DID over UDP; alice answers
by hand.
"""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import Received
from tests.component.calls.answer_proto_calls import CRYPTO, alice_answer
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    answered_call,
    eventually,
    start_b2bua,
)
from tests.component.calls.reinvite_answers import alice_answers_reinvites


async def test_an_srtp_answer_to_a_plain_offer_is_acked_byed_and_the_caller_gets_488(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    offered = parse_sdp_untrusted(leg_b.incoming.request.body)
    assert offered.media[0].proto == "RTP/AVP" and not offered.media[0].crypto  # UDP: no keys
    await env.alice.respond(leg_b.incoming, 200, body=alice_answer("RTP/SAVP", CRYPTO))

    final = await call.final()
    assert final.status == 488
    warning = final.headers.get("Warning") or ""
    assert "the answer's RTP/SAVP (SRTP keyed in SDP) is not the offer's RTP/AVP" in warning
    await env.alice.next_request("ACK")
    bye = (await env.alice.next_request("BYE")).request
    reason = bye.headers.get("Reason") or ""
    assert "cause=488" in reason and "is not the offer's RTP/AVP" in reason
    assert "inline:" not in warning + reason
    await eventually(lambda: env.calls == 0)


async def test_a_feedback_profile_answered_to_a_plain_offer_is_tolerated(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    body = alice_answer("RTP/AVPF", "a=rtcp-fb:* nack")
    await env.alice.respond(leg_b.incoming, 200, body=body)

    final = await call.final()
    assert final.status == 200, final.reason
    answer = parse_sdp_untrusted(final.body)
    assert answer.media[0].proto == "RTP/AVP"  # the caller's own profile (RFC 3264 §6)
    assert not answer.media[0].attributes.has("rtcp-fb")  # RFC 4585 §4.2
    await env.alice.next_request("ACK")
    assert (await call.bye()).status == 200
    await env.alice.next_request("BYE")
    await eventually(lambda: env.calls == 0)


async def test_a_reinvites_answer_in_another_security_family_ends_the_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)

    async def srtp_answer(received: Received) -> None:
        # recvonly: the right answer to the hold (RFC 3264 §6.1) but for its profile.
        body = alice_answer("RTP/SAVP", CRYPTO, version=2, direction="recvonly")
        await env.alice.respond(received, 200, body=body)

    alice_answers_reinvites(env, srtp_answer)
    hold = await call.reinvite(env.trunk.offer_sdp(direction="sendonly"))
    assert hold.status == 488
    assert "is not the offer's RTP/AVP" in (hold.headers.get("Warning") or "")
    for agent in (env.alice, env.trunk):
        bye = (await agent.next_request("BYE", timeout=5)).request
        assert "is not the offer's RTP/AVP" in (bye.headers.get("Reason") or "")
    await eventually(lambda: env.calls == 0)
