"""DTMF interworking across a transfer: a digit goes only to a party that was in the call when
it was pressed. The carrier (leg A) has telephone-event, alice (leg B) answers without it, so
the carrier's digits go to her as INFO, one in flight at a time. Alice holds an INFO
unanswered while the carrier presses another digit (queued), and transfers the carrier to bob:
the queued digit was pressed to alice and must never reach bob (a PIN keyed for one party is
not another's; dtmf-44 sent it to him: the INFO leg was taken by side when the INFO went).
In-memory signalling, virtual time; RTP on real 127.0.0.1 sockets."""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.core.media.dtmf import event_payload
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import AutoAnswer, Received, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, eventually, start_b2bua
from tests.component.calls.dtls_phone import bind
from tests.component.calls.dtmf_calls import audio, b2bua_call, rtp
from tests.component.calls.transfer_calls import (
    BOB_URI,
    alice_calls,
    bob_phone,
    eventually_notify,
    refer,
)
from tests.port_blocks import port_bases

(TRUNK_PORT,) = port_bases(1)  # this process's own ports (tests/port_blocks.py)
TRUNK_SSRC = 0x7777


def digit(event: int, first_sequence: int, timestamp: int) -> list[bytes]:
    """The carrier's RFC 4733 packets of one 100 ms ``event``: a start, three end packets."""
    return [
        rtp(first_sequence, 101, TRUNK_SSRC, event_payload(event, end=False, duration=0),
            marker=True, timestamp=timestamp),
        *(
            rtp(first_sequence + 1 + n, 101, TRUNK_SSRC,
                event_payload(event, end=True, duration=800), timestamp=timestamp)
            for n in range(3)
        ),
    ]  # fmt: skip


async def test_a_digit_pressed_to_the_transferor_never_reaches_the_transfer_target(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(ring=False, status=None)
    )
    bob = await bob_phone(env, nursery, voipgw_seed)
    held: list[Received] = []

    async def alice_holds_info(received: Received) -> bool:
        if received.request.method != "INFO":
            return False
        held.append(received)  # answered later, by the test
        return True

    env.alice.in_dialog = alice_holds_info
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    await env.alice.respond(
        leg_b.incoming, 200, body=simple_sdp("127.0.0.1", 30000, formats=("0",))
    )
    final = await incoming.final()
    assert final.status == 200, final.reason
    await env.alice.next_request("ACK")
    to_carrier = ("127.0.0.1", parse_sdp_untrusted(final.body).media[0].port)
    call = b2bua_call(env)
    assert call.media is not None and call.media.dtmf is not None
    with await bind(TRUNK_PORT) as trunk_sock:
        await trunk_sock.sendto(audio(1, TRUNK_SSRC), to_carrier)
        for packet in digit(1, 2, 320):  # to alice as INFO, which she holds
            await trunk_sock.sendto(packet, to_carrier)
        await eventually(lambda: len(held) == 1)
        for packet in digit(2, 6, 1600):  # pressed to alice: queued behind her INFO
            await trunk_sock.sendto(packet, to_carrier)
        await trio.sleep(0.5)
        assert len(held) == 1

        # Alice transfers the carrier to bob; the carrier takes bob's offer.
        assert await refer(leg_b, BOB_URI) == 202
        await eventually_notify(env.alice, "SIP/2.0 200 OK")
        assert call.b is not None and call.b.side.value == "b"
        # Alice answers the INFO she held: the digit queued for her has no one to go to.
        await env.alice.respond(held[0], 200)
        await trio.sleep(5)
    assert bob.requests("INFO") == []
    assert [r.body for r in env.alice.requests("INFO")] == [b"Signal=1\r\nDuration=100\r\n"]


async def test_a_digit_from_info_for_the_transferor_never_goes_to_the_transfer_target(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The other way: alice (leg A, telephone-event) calls a number on the carrier, which
    answers without it (SIP INFO). The carrier's INFO digits go to alice as events, one
    after the other (7 for 2 s, then 8 waiting). Alice transfers the carrier to bob, who
    takes her place on leg A; the carrier's answer to bob's offer leaves telephone-event out
    again, so the interworking goes on, unchanged. The 8 was keyed for alice: not for bob."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    await bob_phone(env, nursery, voipgw_seed)
    versions = iter(range(1, 100))

    def carrier_answer(offer: bytes) -> bytes:  # an older PBX: no telephone-event
        return simple_sdp("127.0.0.1", 40000, version=next(versions), formats=("0",))

    env.trunk.answer_sdp = carrier_answer  # type: ignore[method-assign]
    call_a = await alice_calls(env, "sip:+15550123@127.0.0.1:5060")
    trunk_leg = await env.trunk.next_call()
    call = b2bua_call(env)
    plan = call.media.dtmf if call.media is not None else None
    assert plan is not None and plan.rfc4733_side == "a"
    alice = call.a
    for body in (b"Signal=7\r\nDuration=2000\r\n", b"Signal=8\r\nDuration=100\r\n"):
        exchange = await trunk_leg.request("INFO", body=body, content_type="application/dtmf-relay")
        assert (await exchange.final()).status == 200
    assert await refer(call_a, BOB_URI) == 202
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    assert call.a is not alice  # bob's leg now
    assert call.media is not None and call.media.dtmf == plan  # the interworking goes on
    await trio.sleep(5)
    work = call._dtmf
    assert work is not None and not work.events and not work.injecting
    assert work.to_rfc4733 == 1  # the 7 (begun towards alice)
    assert work.events_dropped == 1  # the 8: not to bob
