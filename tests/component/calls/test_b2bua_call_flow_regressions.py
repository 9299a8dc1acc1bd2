"""Plain regression tests for what test_b2bua_fuzzed_call_flows found: each with the message
that showed it, not the fuzz seed."""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.core.sip.serializer import serialize_message
from gateway.testing.sip_agent import SDP, AutoAnswer
from tests.component.calls.b2bua_env import (
    ALICE,
    ALICE_DID,
    GW,
    B2bua,
    next_within,
    start_b2bua,
)
from tests.component.calls.b2bua_scenarios import second_phone
from tests.component.calls.fuzz_checks import WINDOW


def _stranded(env: B2bua) -> list[str]:
    """The gateway's client transactions with no timer armed: only a final response from the
    peer would ever end them."""
    table = env.gateway.endpoint.transactions
    return [repr(txn) for txn in table._client.values() if not txn.running_timers]


async def test_a_callee_that_sent_only_100_trying_is_cancelled_with_the_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Alice's phone answers the INVITE with 100 Trying (its transaction does) and nothing more
    # yet: its 180 was lost (the fuzz mutated it into "CSeq: 1 ACK", which matches no
    # transaction). The trunk cancels. RFC 3261 §9.1: a CANCEL may be sent once any
    # provisional response came, 100 included; the gateway waited for a 101-199 that a phone
    # without 100rel never repeats, so alice rang for ever and the gateway's INVITE client
    # transaction stayed in Proceeding (no timer there) for ever: a leak per such call.
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(ring=False, status=None)
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await trio.sleep(1.0)
    assert leg_b.answered is None
    await call.cancel()
    assert (await call.final(timeout=WINDOW)).status == 487
    cancel = await next_within(env.alice, "CANCEL", WINDOW)
    assert cancel is not None, "alice was never CANCELled: she rings for ever"
    await trio.sleep(2 * WINDOW)
    assert _stranded(env) == []


async def test_a_fork_that_sent_only_100_trying_is_cancelled_when_another_answers(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Parallel ringing: alice's first phone has sent only its transaction's 100 Trying when
    # her second phone answers. The call goes on with the second phone; the first must be
    # CANCELled then (RFC 3261 §9.1: the 100 allows it), not left ringing with its INVITE
    # client transaction in Proceeding for ever.
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(ring=False, status=None)
    )
    phone2 = await second_phone(env, nursery, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    silent = await env.alice.next_call()
    answering = await phone2.next_call()
    await trio.sleep(1.0)
    await answering.answer()
    assert (await call.final(timeout=WINDOW)).status == 200
    cancel = await next_within(env.alice, "CANCEL", WINDOW)
    assert cancel is not None, "the fork that sent only 100 was never CANCELled"
    assert cancel.request.call_id == silent.call_id
    await trio.sleep(2 * WINDOW)
    assert _stranded(env) == []
    assert env.calls == 1


async def test_a_fork_whose_100_trying_comes_after_another_answered_is_cancelled(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # As above, but alice's first phone is slow: everything it sends reaches the gateway 3 s
    # late, its 100 Trying included, so her second phone has answered (and the call is up)
    # before that 100 comes. The 100 must still bring the CANCEL (RFC 3261 §9.1): the
    # answered call's handler waited for a 101-199 only, and the phone rang for ever.
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(ring=False, status=None)
    )
    phone2 = await second_phone(env, nursery, voipgw_seed)
    env.network.set_link(ALICE, GW, delay=3.0)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    silent = await env.alice.next_call()
    answering = await phone2.next_call()
    await answering.answer()
    assert (await call.final(timeout=WINDOW)).status == 200
    cancel = await next_within(env.alice, "CANCEL", WINDOW)
    assert cancel is not None, "the fork whose 100 came after the answer was never CANCELled"
    assert cancel.request.call_id == silent.call_id
    await trio.sleep(2 * WINDOW)
    assert _stranded(env) == []
    assert env.calls == 1


async def test_an_invite_sent_again_is_not_cancelled_on_the_first_ones_100_trying(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Alice's phone answers our INVITE 100 Trying, then 422 (RFC 4028 §7.3): the gateway sends
    # the INVITE again, a new transaction, whose 100 never reaches it. The caller cancels.
    # RFC 3261 §9.1: no CANCEL before a provisional response to the INVITE it cancels; the
    # first INVITE's 100 counted for the second (trying_seen was not reset with
    # provisional_seen), so a CANCEL went out before the callee had even answered 100.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    first = await env.alice.next_call()
    assert first.incoming is not None
    await trio.sleep(1.0)  # her transaction's 100 Trying has reached the gateway
    await env.alice.respond(first.incoming, 422, extra=[("Min-SE", "3600")])
    env.network.set_link(ALICE, GW, drop=1.0)  # the 422 is on its way; nothing after it
    second = await env.alice.next_call()
    assert second.invite.cseq.number == first.invite.cseq.number + 1
    await trio.sleep(1.0)
    await call.cancel()
    assert (await call.final(timeout=WINDOW)).status == 487
    assert await next_within(env.alice, "CANCEL", WINDOW) is None, (
        "CANCEL sent before any provisional response to the INVITE it cancels"
    )
    assert _stranded(env) == []


async def test_an_invite_first_without_branch_then_with_one_makes_one_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The trunk's INVITE arrived with its Via branch corrupted into a bare parameter
    # (";4294967296": an RFC 2543 request, matched the legacy way, RFC 3261 §17.2.3); its
    # retransmission arrives intact, with the RFC 3261 branch. Same Call-ID, From tag and CSeq,
    # another transaction: §8.2.2.2 makes it a merged request, answered 482. The gateway made a
    # second call of it: alice's phone got a second INVITE, and the caller's transaction (the
    # intact branch) waited on that second call's ringing, not on the call it set up.
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(ring=True, status=None)
    )
    invite = env.trunk.new_request(
        "INVITE", env.did_uri(ALICE_DID), body=env.trunk.offer_sdp(), content_type=SDP
    )
    via = "SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK20088cea4b1f892d;rport"
    intact = serialize_message(invite.with_headers(invite.headers.prepend("Via", via)))
    corrupted = intact.replace(b";branch=z9hG4bK20088cea4b1f892d", b";4294967296")
    await env.trunk.socket.sendto(corrupted, GW)
    await trio.sleep(0.5)  # Timer A: T1
    await env.trunk.socket.sendto(intact, GW)
    await trio.sleep(2.0)
    assert len(env.alice.requests("INVITE")) == 1
    assert env.calls == 1


async def test_the_482_of_a_merged_invite_is_retransmitted_over_udp_until_acked(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # A merged INVITE's 482 is a final response over UDP: its transaction re-sends it on Timer
    # G until the ACK comes (RFC 3261 §17.2.1), like any other. It answers without passing the
    # request up, so the endpoint never learnt its flow from a RequestReceived: its re-sends
    # had nowhere to go, and only the 482 to each of the caller's own retransmissions left.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    sock = env.network.bind(("127.0.0.77", 5099))
    invite = env.trunk.new_request(
        "INVITE", env.did_uri(ALICE_DID), body=env.trunk.offer_sdp(), content_type=SDP
    )
    data = serialize_message(
        invite.with_headers(
            invite.headers.prepend("Via", "SIP/2.0/UDP 127.0.0.77:5099;branch=z9hG4bKpath1")
        )
    )
    await sock.sendto(data, GW)
    await sock.sendto(data.replace(b"z9hG4bKpath1", b"z9hG4bKpath2"), GW)
    merged: list[bytes] = []
    with trio.move_on_after(4.0):  # T1 = 0.5 s: Timer G re-sends at 0.5, 1.5 and 3.5 s
        while True:
            packet, _ = await sock.recvfrom()
            if packet.startswith(b"SIP/2.0 482") and b"z9hG4bKpath2" in packet:
                merged.append(packet)
    assert len(merged) >= 3, f"the 482 went out {len(merged)} time(s) in 4 s"
    sock.close()
