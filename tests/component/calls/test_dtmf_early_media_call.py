"""DTMF interworking before the answer (early media, RFC 3261 §13.2.1, RFC 3960), and digits
whose end packets were all lost (RFC 4733 §2.5.2.2).

- The carrier (leg A, telephone-event 101) calls alice, an IVR doing SIP INFO only that plays
  its prompt in early media: her 183 carries an SDP answer without telephone-event. The
  carrier's key press reaches her as an INFO in the early dialog (RFC 6086 §4.2) before she
  answers; her own INFO in that dialog reaches the carrier as events; after her 200 with the
  same SDP the interworking goes on unchanged (the relay keeps its settings, the next INFO
  continues the dialog's CSeq).
- A 200 whose SDP has telephone-event after all ends the interworking the 183 made.
- A trunk declared ``dtmf = "info"`` calling alice, whose 183 accepts the telephone-event we
  offered for it: its INFO in our early dialog becomes events, alice's events an INFO to it in
  that early dialog, which our 200 then confirms.
- Key presses under seeded loss whose end packets are all lost still become one INFO each,
  in order, after the end timeout; late end packets do not repeat them.

In-memory signalling, virtual time; RTP on real 127.0.0.1 sockets through the relay."""

from __future__ import annotations

import random
from pathlib import Path

import trio

from gateway.core.media.dtmf import END_TIMEOUT, event_payload, parse_event_untrusted
from gateway.core.media.session import DtmfPlan
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.dialog import Dialog, DialogState
from gateway.core.sip.message import Response
from gateway.testing.sip_agent import AutoAnswer, Call, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, eventually, start_b2bua
from tests.component.calls.b2bua_scenarios import second_phone
from tests.component.calls.dtls_phone import bind
from tests.component.calls.dtmf_calls import (
    audio,
    b2bua_call,
    fields,
    rtp,
    telephone_events,
)
from tests.port_blocks import port_bases

TRUNK_PORT, ALICE_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)
TRUNK_SSRC, ALICE_SSRC = 0x7779, 0xA11D0
ALLOW_INFO = [("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO")]


def key_press(digit: int, first_seq: int, timestamp: int, *, updates: int = 2) -> list[bytes]:
    """An RFC 4733 key press from the carrier: a start with the marker, ``updates`` updates
    50 ms apart (400 units each), three end packets (§2.5.1.4)."""
    packets = [
        rtp(
            first_seq,
            101,
            TRUNK_SSRC,
            event_payload(digit, end=False, duration=400),
            marker=True,
            timestamp=timestamp,
        )
    ]
    for n in range(updates):
        duration = 800 + 400 * n
        packets.append(
            rtp(
                first_seq + 1 + n,
                101,
                TRUNK_SSRC,
                event_payload(digit, end=False, duration=duration),
                timestamp=timestamp,
            )
        )
    end = 400 * (updates + 2)
    for n in range(3):
        packets.append(
            rtp(
                first_seq + 1 + updates + n,
                101,
                TRUNK_SSRC,
                event_payload(digit, end=True, duration=end),
                timestamp=timestamp,
            )
        )
    return packets


async def ringing_with_early_media(
    env: B2bua, *, trunk_formats: tuple[str, ...], alice_formats: tuple[str, ...]
) -> tuple[Call, Call, Response]:
    """The carrier calls alice, who answers early: 183 with an SDP of ``alice_formats`` and
    Allow with INFO; she keeps the early dialog her 183 made, as a UA does. (carrier's call,
    alice's call, the 183 the carrier got)."""
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", TRUNK_PORT, formats=trunk_formats)
    )
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    sent = await env.alice.respond(
        leg_b.incoming,
        183,
        body=simple_sdp("127.0.0.1", ALICE_PORT, formats=alice_formats),
        extra=ALLOW_INFO,
    )
    leg_b.dialog = Dialog.create_uas(leg_b.invite, sent)  # her early dialog (RFC 3261 §12.1.1)
    assert incoming.exchange is not None
    early = await incoming.exchange.wait_for(lambda r: r.status == 183)
    incoming.dialog = Dialog.create_uac(incoming.invite, early)  # the carrier's early dialog
    return incoming, leg_b, early


async def start(nursery: trio.Nursery, tmp_path: Path, seed: int, **trunk: str) -> B2bua:
    return await start_b2bua(
        nursery,
        tmp_path,
        seed,
        alice_auto=AutoAnswer(ring=False, status=None),
        carrier=dict(trunk) or None,
    )


async def test_digits_cross_to_an_info_ivr_in_early_media_and_on_after_its_answer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    incoming, leg_b, early = await ringing_with_early_media(
        env, trunk_formats=("0", "101"), alice_formats=("0",)
    )
    assert telephone_events(early.body) == ["101 telephone-event/8000"]  # kept for the carrier
    call = b2bua_call(env)
    assert call.state == "ringing"
    assert call.media.dtmf == DtmfPlan(0, "a", "b", 101, 8000)
    (stream,) = call.media.streams
    settings = (stream.a_to_b.dtmf, stream.b_to_a.dtmf)
    to_carrier = parse_sdp_untrusted(early.body).media[0].port
    to_alice = parse_sdp_untrusted(leg_b.invite.body).media[0].port
    trunk_sock, alice_sock = await bind(TRUNK_PORT), await bind(ALICE_PORT)
    with trunk_sock, alice_sock:
        trunk_to, alice_to = ("127.0.0.1", to_carrier), ("127.0.0.1", to_alice)
        with trio.fail_after(2):
            await alice_sock.sendto(audio(1, ALICE_SSRC), alice_to)  # her prompt
            assert await trunk_sock.recv(2048) == audio(1, ALICE_SSRC)
            await trunk_sock.sendto(audio(1, TRUNK_SSRC), trunk_to)
            assert await alice_sock.recv(2048) == audio(1, TRUNK_SSRC)
            # The caller presses 1 at the prompt, before anyone answered.
            for packet in key_press(1, 2, 320):
                await trunk_sock.sendto(packet, trunk_to)
            await trunk_sock.sendto(audio(8, TRUNK_SSRC), trunk_to)
            assert fields(await alice_sock.recv(2048))[1:3] == (0, 2)  # never the events
        info = await env.alice.next_request("INFO")
        assert info.request.body == b"Signal=1\r\nDuration=200\r\n"
        assert info.request.content_type == "application/dtmf-relay"
        # In her early dialog: her To tag, the CSeq after our INVITE's (RFC 3261 §12.2.1.1).
        assert info.request.to.tag == leg_b.local_tag
        assert info.request.call_id == leg_b.call_id
        assert info.request.cseq.number == leg_b.invite.cseq.number + 1
        assert call.state == "ringing"

        # Her INFO in the early dialog: answered 200 by us, events to the carrier.
        exchange = await leg_b.request(
            "INFO", body=b"Signal=7\r\nDuration=100\r\n", content_type="application/dtmf-relay"
        )
        assert (await exchange.final()).status == 200
        with trio.fail_after(2):
            received = [await trunk_sock.recv(2048) for _ in range(4)]
        assert [parse_event_untrusted(p[12:]).event for p in received] == [7] * 4
        assert [fields(p)[2] for p in received] == [2, 3, 4, 5]  # on from her audio
        assert {fields(p)[4] for p in received} == {ALICE_SSRC}
        assert env.trunk.requests("INFO") == []

        # She answers with the same SDP: the interworking goes on as it was.
        await leg_b.answer(sdp=simple_sdp("127.0.0.1", ALICE_PORT, formats=("0",)))
        final = await incoming.final()
        assert final.status == 200
        await env.alice.next_request("ACK")
        assert call.media.dtmf == DtmfPlan(0, "a", "b", 101, 8000)
        assert (stream.a_to_b.dtmf, stream.b_to_a.dtmf) == settings
        with trio.fail_after(2):
            for packet in key_press(2, 9, 1600):
                await trunk_sock.sendto(packet, trunk_to)
            await trunk_sock.sendto(audio(15, TRUNK_SSRC), trunk_to)
            assert fields(await alice_sock.recv(2048))[1:3] == (0, 3)  # one gapless sequence
        second = await env.alice.next_request("INFO")
        assert second.request.body == b"Signal=2\r\nDuration=200\r\n"
        assert second.request.cseq.number == info.request.cseq.number + 1  # the same dialog
    record = call.security_record()["dtmf"]
    assert record["digits_to_info"] == 2 and record["digits_to_rfc4733"] == 1
    assert "info_failed" not in record


async def test_an_answer_with_telephone_event_ends_what_the_early_answer_made(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    incoming, leg_b, _ = await ringing_with_early_media(
        env, trunk_formats=("0", "101"), alice_formats=("0",)
    )
    call = b2bua_call(env)
    assert call.media.dtmf is not None
    await leg_b.answer(sdp=simple_sdp("127.0.0.1", ALICE_PORT, formats=("0", "101")))
    assert (await incoming.final()).status == 200
    assert call.media.dtmf is None  # re-decided: both have it now, relayed as ever
    (stream,) = call.media.streams
    assert stream.a_to_b.dtmf is None and stream.b_to_a.dtmf is None
    to_alice = parse_sdp_untrusted(leg_b.invite.body).media[0].port
    trunk_sock, alice_sock = await bind(TRUNK_PORT), await bind(ALICE_PORT)
    with trunk_sock, alice_sock, trio.fail_after(2):
        await alice_sock.sendto(audio(1, ALICE_SSRC), ("127.0.0.1", to_alice))
        to_carrier = parse_sdp_untrusted((await incoming.final()).body).media[0].port
        press = key_press(4, 1, 160)[0]
        await trunk_sock.sendto(press, ("127.0.0.1", to_carrier))
        assert await alice_sock.recv(2048) == press  # the event itself, as before
    assert env.alice.requests("INFO") == []


async def test_an_info_trunk_and_an_rfc4733_callee_exchange_digits_in_early_media(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed, dtmf="info")
    incoming, leg_b, early = await ringing_with_early_media(
        env, trunk_formats=("0",), alice_formats=("0", "101")
    )
    assert telephone_events(early.body) == []  # the PBX never offered it
    call = b2bua_call(env)
    assert call.media.dtmf == DtmfPlan(0, "b", "a", 101, 8000)
    to_trunk = parse_sdp_untrusted(early.body).media[0].port
    to_alice = parse_sdp_untrusted(leg_b.invite.body).media[0].port
    trunk_sock, alice_sock = await bind(TRUNK_PORT), await bind(ALICE_PORT)
    with trunk_sock, alice_sock:
        trunk_to, alice_to = ("127.0.0.1", to_trunk), ("127.0.0.1", to_alice)
        with trio.fail_after(2):
            await trunk_sock.sendto(audio(1, TRUNK_SSRC), trunk_to)
            assert await alice_sock.recv(2048) == audio(1, TRUNK_SSRC)
            await alice_sock.sendto(audio(1, ALICE_SSRC), alice_to)
            assert await trunk_sock.recv(2048) == audio(1, ALICE_SSRC)
        # The PBX's INFO in our early dialog (its To tag ours): events towards alice.
        exchange = await incoming.request(
            "INFO", body=b"Signal=9\r\nDuration=100\r\n", content_type="application/dtmf-relay"
        )
        assert (await exchange.final()).status == 200
        with trio.fail_after(2):
            received = [await alice_sock.recv(2048) for _ in range(4)]
        assert [parse_event_untrusted(p[12:]).event for p in received] == [9] * 4
        assert {fields(p)[4] for p in received} == {TRUNK_SSRC}
        # Alice's key press (events 101) reaches the PBX as an INFO in our early dialog.
        press = [
            rtp(
                2,
                101,
                ALICE_SSRC,
                event_payload(3, end=False, duration=400),
                marker=True,
                timestamp=320,
            ),
            *(
                rtp(3 + n, 101, ALICE_SSRC, event_payload(3, end=True, duration=960), timestamp=320)
                for n in range(3)
            ),
        ]
        with trio.fail_after(2):
            for packet in press:
                await alice_sock.sendto(packet, alice_to)
        info = await env.trunk.next_request("INFO")
        assert info.request.body == b"Signal=3\r\nDuration=120\r\n"
        assert info.request.from_.tag == incoming.dialog.remote_tag  # type: ignore[union-attr]
        assert call.state == "ringing"
    assert env.alice.requests("INFO") == []
    # Alice answers; our 200 confirms the early dialog the INFO went in (its CSeq goes on).
    await leg_b.answer(sdp=simple_sdp("127.0.0.1", ALICE_PORT, formats=("0", "101")))
    assert (await incoming.final()).status == 200
    assert call.a.dialog is not None and call.a.dialog.state is DialogState.CONFIRMED
    assert call.a.dialog.local_seq == info.request.cseq.number
    assert call.media.dtmf == DtmfPlan(0, "b", "a", 101, 8000)


async def test_key_presses_whose_end_packets_are_lost_become_one_info_each(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    incoming, leg_b, early = await ringing_with_early_media(
        env, trunk_formats=("0", "101"), alice_formats=("0",)
    )
    await leg_b.answer(sdp=simple_sdp("127.0.0.1", ALICE_PORT, formats=("0",)))
    assert (await incoming.final()).status == 200
    to_carrier = parse_sdp_untrusted(early.body).media[0].port
    loss = random.Random(voipgw_seed)
    digits = [loss.randrange(10) for _ in range(6)]
    ends_lost = [n % 2 == 0 for n in range(6)]  # every other press loses all three ends
    trunk_sock = await bind(TRUNK_PORT)
    with trunk_sock:
        trunk_to = ("127.0.0.1", to_carrier)
        seq = 1
        for n, digit in enumerate(digits):
            packets = key_press(digit, seq, 8000 * (n + 1), updates=3)
            seq += len(packets)
            first, updates, ends = packets[0], packets[1:4], packets[4:]
            # Seeded loss of the updates; the start arrives, as the ends of every other one.
            sent = [first, *(p for p in updates if loss.random() > 0.3)]
            if not ends_lost[n]:
                sent += ends
            for packet in sent:
                await trunk_sock.sendto(packet, trunk_to)
                await trio.sleep(0.05)
            # Pause before the next press, longer than the end timeout: the timed out one is
            # read, not ended by the next.
            await trio.sleep(END_TIMEOUT + 0.2)
            # Its INFO went already, whether its end packets came or the timeout ended it.
            assert len(env.alice.requests("INFO")) == n + 1
            if ends_lost[n]:
                for packet in ends:  # its end packets turn up late after all: ignored
                    await trunk_sock.sendto(packet, trunk_to)
        await eventually(lambda: len(env.alice.requests("INFO")) == len(digits))
        await trio.sleep(2)
    infos = env.alice.requests("INFO")
    assert [i.body.split(b"\r\n")[0] for i in infos] == [b"Signal=%d" % d for d in digits]
    durations = [int(i.body.split(b"Duration=")[1].split(b"\r\n")[0]) for i in infos]
    for duration, lost in zip(durations, ends_lost, strict=True):
        if lost:  # estimated from what was seen: at least the start's 50 ms, at most 250 ms
            assert 50 <= duration <= 250
        else:
            assert duration == 250  # the end packets' 2000 units
    record = b2bua_call(env).security_record()["dtmf"]
    assert record["digits_to_info"] == len(digits)
    assert record["ended_by_timeout"] == sum(ends_lost)


async def test_forked_early_media_the_digit_goes_to_the_fork_heard_last_then_to_the_answerer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    phone2 = await second_phone(env, nursery, voipgw_seed)
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", TRUNK_PORT, formats=("0", "101"))
    )
    leg1 = await env.alice.next_call()
    leg2 = await phone2.next_call()
    # Both phones play early media without telephone-event; the call relays the later one's.
    for agent, leg, port in ((env.alice, leg1, ALICE_PORT), (phone2, leg2, ALICE_PORT + 2)):
        assert leg.incoming is not None
        sent = await agent.respond(
            leg.incoming,
            183,
            body=simple_sdp("127.0.0.1", port, formats=("0",)),
            extra=ALLOW_INFO,
        )
        leg.dialog = Dialog.create_uas(leg.invite, sent)
        await trio.sleep(0.1)
    assert incoming.exchange is not None
    early = await incoming.exchange.wait_for(lambda r: r.status == 183)
    to_carrier = parse_sdp_untrusted(early.body).media[0].port
    trunk_sock = await bind(TRUNK_PORT)
    with trunk_sock:
        trunk_to = ("127.0.0.1", to_carrier)
        for packet in key_press(1, 1, 160):
            await trunk_sock.sendto(packet, trunk_to)
        info = await phone2.next_request("INFO")  # the fork whose media the caller hears
        assert info.request.call_id == leg2.call_id
        assert info.request.body == b"Signal=1\r\nDuration=200\r\n"
        assert env.alice.requests("INFO") == []
        # The other phone answers: the digits go on in its (new) dialog.
        await leg1.answer(sdp=simple_sdp("127.0.0.1", ALICE_PORT, formats=("0",)))
        assert (await incoming.final()).status == 200
        await env.alice.next_request("ACK")
        for packet in key_press(2, 7, 1600):
            await trunk_sock.sendto(packet, trunk_to)
        second = await env.alice.next_request("INFO")
        assert second.request.call_id == leg1.call_id
        assert second.request.body == b"Signal=2\r\nDuration=200\r\n"
        assert second.request.cseq.number == leg1.invite.cseq.number + 1
    assert len(phone2.requests("INFO")) == 1
    assert (await phone2.next_request("CANCEL")).request.call_id == leg2.call_id
    record = b2bua_call(env).security_record()["dtmf"]
    assert record["digits_to_info"] == 2 and "info_failed" not in record
