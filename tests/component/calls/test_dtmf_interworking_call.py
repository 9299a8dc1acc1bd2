"""DTMF interworking through a call: the carrier (leg A) offers telephone-event 101, alice's
phone (leg B) answers without it (an older phone or PBX that does SIP INFO only). The caller's
answer keeps 101; its digits become one INFO each on alice's dialog (application/dtmf-relay,
never the event packets), and alice's INFO digits become RFC 4733 events towards the carrier
(marker on the first, one timestamp, three end packets, the SSRC and sequence of her audio),
answered 200 and not relayed. Both legs with telephone-event, or an INFO leg that does not
allow INFO: DTMF relayed as before / the call record says the digits could not be carried.
In-memory signalling, virtual time; RTP on real 127.0.0.1 sockets through the relay."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from gateway.core.media.dtmf import event_payload, parse_event_untrusted
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import AutoAnswer, Call, Received, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, eventually, start_b2bua
from tests.component.calls.dtls_phone import bind
from tests.component.calls.dtmf_calls import audio, b2bua_call, fields, rtp, telephone_events
from tests.port_blocks import port_bases

TRUNK_PORT, ALICE_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)
TRUNK_SSRC, ALICE_SSRC = 0x7777, 0xA11CE


async def call_to_alice(
    env: B2bua, *, alice_formats: tuple[str, ...], allow: str | None = None
) -> tuple[Call, Call, bytes]:
    """The carrier calls alice; she answers with ``alice_formats`` (and ``allow`` as her
    Allow). (carrier's call, alice's call, our answer to the carrier)."""
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", TRUNK_PORT)
    )
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    await env.alice.respond(
        leg_b.incoming,
        200,
        body=simple_sdp("127.0.0.1", ALICE_PORT, formats=alice_formats),
        extra=[("Allow", allow)] if allow else [],
    )
    final = await incoming.final()
    assert final.status == 200, final.reason
    await env.alice.next_request("ACK")
    return incoming, leg_b, final.body


async def start(nursery: trio.Nursery, tmp_path: Path, seed: int) -> B2bua:
    return await start_b2bua(
        nursery, tmp_path, seed, alice_auto=AutoAnswer(ring=False, status=None)
    )


async def test_digits_cross_between_rfc4733_and_sip_info(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    _, leg_b, answer = await call_to_alice(env, alice_formats=("0",))
    assert telephone_events(answer) == ["101 telephone-event/8000"]  # kept for the carrier
    to_carrier = parse_sdp_untrusted(answer).media[0].port
    to_alice = parse_sdp_untrusted(leg_b.invite.body).media[0].port
    trunk_sock, alice_sock = await bind(TRUNK_PORT), await bind(ALICE_PORT)
    with trunk_sock, alice_sock:
        trunk_to, alice_to = ("127.0.0.1", to_carrier), ("127.0.0.1", to_alice)
        with trio.fail_after(2):
            await trunk_sock.sendto(audio(1, TRUNK_SSRC), trunk_to)
            assert await alice_sock.recv(2048) == audio(1, TRUNK_SSRC)
            await alice_sock.sendto(audio(1, ALICE_SSRC), alice_to)
            assert await trunk_sock.recv(2048) == audio(1, ALICE_SSRC)

            # RFC 4733 -> INFO: the carrier presses 5 (200 ms), end packet sent three times.
            ts = 320
            packets = [
                rtp(
                    2,
                    101,
                    TRUNK_SSRC,
                    event_payload(5, end=False, duration=0),
                    marker=True,
                    timestamp=ts,
                ),
                rtp(3, 101, TRUNK_SSRC, event_payload(5, end=False, duration=800), timestamp=ts),
                *(
                    rtp(
                        4 + n,
                        101,
                        TRUNK_SSRC,
                        event_payload(5, end=True, duration=1600),
                        timestamp=ts,
                    )
                    for n in range(3)
                ),
            ]
            for packet in packets:
                await trunk_sock.sendto(packet, trunk_to)
            await trunk_sock.sendto(audio(7, TRUNK_SSRC), trunk_to)
            # Alice hears the audio, next in sequence; never the events.
            assert fields(await alice_sock.recv(2048))[1:3] == (0, 2)
        info = await env.alice.next_request("INFO")
        assert info.request.content_type == "application/dtmf-relay"
        assert info.request.body == b"Signal=5\r\nDuration=200\r\n"
        assert env.alice.requests("INFO") == [info.request]  # one per event

        # INFO -> RFC 4733: alice presses 7 (100 ms).
        exchange = await leg_b.request(
            "INFO", body=b"Signal=7\r\nDuration=100\r\n", content_type="application/dtmf-relay"
        )
        assert (await exchange.final()).status == 200
        received = []
        with trio.fail_after(2):
            for _ in range(4):  # a start, then three ends (100 ms is two 50 ms updates)
                received.append(await trunk_sock.recv(2048))
        heads = [fields(p) for p in received]
        events = [parse_event_untrusted(p[12:]) for p in received]
        assert [h[0] for h in heads] == [True, False, False, False]  # marker on the first
        assert {h[1] for h in heads} == {101}
        assert [h[2] for h in heads] == [2, 3, 4, 5]  # on from alice's audio
        assert len({h[3] for h in heads}) == 1  # one timestamp for the event
        assert {h[4] for h in heads} == {ALICE_SSRC}
        assert [e.event for e in events] == [7] * 4
        assert [e.end for e in events] == [False, True, True, True]
        assert events[-1].duration == 800
        with trio.fail_after(2):
            await alice_sock.sendto(audio(2, ALICE_SSRC), alice_to)
            assert fields(await trunk_sock.recv(2048))[1:3] == (0, 6)
    assert env.trunk.requests("INFO") == []  # answered by the gateway, not relayed
    record = b2bua_call(env).security_record()["dtmf"]
    assert record["digits_to_info"] == 1
    assert record["digits_to_rfc4733"] == 1
    assert record["rfc4733_leg"] == "a" and record["info_leg"] == "b"
    assert record["packets"] == {
        "taken": 5,
        "injected": 4,
        "ended_at_change": 0,
        "passed": 0,
        "end_copies_dropped": 0,
    }


async def test_a_bad_dtmf_info_is_refused(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    _, leg_b, _ = await call_to_alice(env, alice_formats=("0",))
    exchange = await leg_b.request(
        "INFO", body=b"Signal=Z\r\n", content_type="application/dtmf-relay"
    )
    final = await exchange.final()
    assert final.status == 400 and "not a digit" in final.reason
    assert env.trunk.requests("INFO") == []


async def test_an_info_leg_that_does_not_allow_info_gets_none(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    _, _, answer = await call_to_alice(
        env, alice_formats=("0",), allow="INVITE, ACK, CANCEL, BYE, OPTIONS"
    )
    to_carrier = parse_sdp_untrusted(answer).media[0].port
    trunk_sock = await bind(TRUNK_PORT)
    with trunk_sock:
        trunk_to = ("127.0.0.1", to_carrier)
        await trunk_sock.sendto(audio(1, TRUNK_SSRC), trunk_to)
        await trunk_sock.sendto(
            rtp(2, 101, TRUNK_SSRC, event_payload(1, end=True, duration=800), marker=True),
            trunk_to,
        )
        await eventually(lambda: "dtmf" in b2bua_call(env).security_record())
    await trio.sleep(1)
    assert env.alice.requests("INFO") == []
    record = b2bua_call(env).security_record()["dtmf"]
    assert record["not_carried"] == 1
    assert "does not allow INFO" in record["why"]


async def test_both_legs_with_telephone_event_relay_dtmf_as_before(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    _, leg_b, answer = await call_to_alice(env, alice_formats=("0", "101"))
    assert telephone_events(answer) == ["101 telephone-event/8000"]
    call = b2bua_call(env)
    assert call.media.dtmf is None
    (stream,) = call.media.streams
    assert stream.a_to_b.dtmf is None and stream.b_to_a.dtmf is None
    # An INFO is relayed as ever.
    exchange = await leg_b.request(
        "INFO", body=b"Signal=7\r\nDuration=100\r\n", content_type="application/dtmf-relay"
    )
    info = await env.trunk.next_request("INFO")
    assert info.request.body == b"Signal=7\r\nDuration=100\r\n"
    await env.trunk.respond(info, 200)
    assert (await exchange.final()).status == 200
    assert "dtmf" not in call.security_record()


async def test_both_legs_without_telephone_event_are_unchanged(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed)
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", TRUNK_PORT, formats=("0", "8"))
    )
    leg_b = await env.alice.next_call()
    assert telephone_events(leg_b.invite.body) == []  # nothing added to the offer
    assert leg_b.incoming is not None
    await env.alice.respond(
        leg_b.incoming, 200, body=simple_sdp("127.0.0.1", ALICE_PORT, formats=("0",))
    )
    final = await incoming.final()
    assert final.status == 200
    assert telephone_events(final.body) == []
    assert b2bua_call(env).media.dtmf is None


async def test_digits_the_carrier_sends_inside_red_become_info(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # RFC 4733 §2.5.1.5 / §2.6: the carrier offers RED (100) next to telephone-event and sends
    # its events only inside RED, each packet with the previous one as a redundant block
    # (RFC 2198 §3). Alice gets one INFO for the digit, never a RED packet; audio goes on.
    env = await start(nursery, tmp_path, voipgw_seed)
    red = b"a=rtpmap:100 red/8000\r\na=fmtp:100 101/101\r\na=sendrecv"
    offer = simple_sdp("127.0.0.1", TRUNK_PORT, formats=("0", "101", "100"))
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=offer.replace(b"a=sendrecv", red))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    # Alice keeps RED (RFC 3264 §6.1: else the carrier could not send it), not telephone-event.
    answer = simple_sdp("127.0.0.1", ALICE_PORT, formats=("0", "100"))
    answer = answer.replace(b"a=sendrecv", b"a=rtpmap:100 red/8000\r\na=sendrecv")
    await env.alice.respond(leg_b.incoming, 200, body=answer)
    final = await incoming.final()
    assert final.status == 200, final.reason
    await env.alice.next_request("ACK")
    to_carrier = parse_sdp_untrusted(final.body).media[0].port
    to_alice = parse_sdp_untrusted(leg_b.invite.body).media[0].port
    trunk_sock, alice_sock = await bind(TRUNK_PORT), await bind(ALICE_PORT)

    def red(sequence: int, previous: bytes, current: bytes) -> bytes:
        # One redundant block (F=1, PT 101, offset 0: the same event's earlier update, 4
        # octets), then the primary (PT 101).
        blocks = bytes((0x80 | 101, 0, 0, 4, 101)) + previous + current
        return rtp(sequence, 100, TRUNK_SSRC, blocks, timestamp=320, marker=sequence == 2)

    with trunk_sock, alice_sock:
        trunk_to, alice_to = ("127.0.0.1", to_carrier), ("127.0.0.1", to_alice)
        with trio.fail_after(2):
            await trunk_sock.sendto(audio(1, TRUNK_SSRC), trunk_to)
            assert await alice_sock.recv(2048) == audio(1, TRUNK_SSRC)
            await alice_sock.sendto(audio(1, ALICE_SSRC), alice_to)
            assert await trunk_sock.recv(2048) == audio(1, ALICE_SSRC)
            updates = [event_payload(9, end=False, duration=d) for d in (0, 400, 800)]
            ends = [event_payload(9, end=True, duration=1200)] * 3
            payloads = updates + ends
            for n in range(1, len(payloads)):
                await trunk_sock.sendto(red(n + 1, payloads[n - 1], payloads[n]), trunk_to)
            await trunk_sock.sendto(audio(7, TRUNK_SSRC), trunk_to)
            assert fields(await alice_sock.recv(2048))[1:3] == (0, 2)  # no RED, no gap
        info = await env.alice.next_request("INFO")
        assert info.request.body == b"Signal=9\r\nDuration=150\r\n"
        assert env.alice.requests("INFO") == [info.request]
    record = b2bua_call(env).security_record()["dtmf"]
    assert record["digits_to_info"] == 1
    assert record["packets"]["taken"] == 5


async def test_a_dtmf_info_answered_481_ends_the_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """RFC 5057 §5.1: the INFO travels in the invite usage; alice's 481 says her dialog is gone.
    The call ends: the carrier gets a BYE saying why, alice none (she has no dialog)."""
    env = await start(nursery, tmp_path, voipgw_seed)
    incoming, leg_b, answer = await call_to_alice(env, alice_formats=("0",))

    async def lost(received: Received) -> bool:
        if received.request.method != "INFO":
            return False
        await env.alice.respond(received, 481)
        return True

    env.alice.in_dialog = lost
    to_carrier = parse_sdp_untrusted(answer).media[0].port
    trunk_sock = await bind(TRUNK_PORT)
    with trunk_sock:
        trunk_to = ("127.0.0.1", to_carrier)
        ts = 320
        start_packet = event_payload(5, end=False, duration=0)
        await trunk_sock.sendto(
            rtp(2, 101, TRUNK_SSRC, start_packet, marker=True, timestamp=ts), trunk_to
        )
        for n in range(3):
            end = event_payload(5, end=True, duration=1600)
            await trunk_sock.sendto(rtp(3 + n, 101, TRUNK_SSRC, end, timestamp=ts), trunk_to)
        bye = await env.trunk.next_request("BYE", timeout=5)
    assert bye.request.call_id == incoming.call_id
    assert "cause=481" in (bye.request.headers.get("Reason") or "")
    await eventually(lambda: env.calls == 0)
    store = env.gateway.store
    await eventually(lambda: [r.ended_at for r in store.call_records_recent()] != [None])
    [record] = store.call_records_recent()
    assert record.end_reason == (
        "DTMF INFO to the B leg answered 481 Call/Transaction Does Not Exist: its dialog is gone"
    )
    assert env.alice.requests("BYE") == []
    assert leg_b.dialog is not None


async def test_a_change_of_plan_mid_digit_finishes_the_digits_in_progress(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Mid-call the plan ends (alice re-offers with telephone-event: both legs have it) while
    a digit goes each way. Alice's INFO digit 7 (5 s) being sent to the carrier as events is
    ended then: three end packets (E bit, the event's timestamp, on in the sequence), nothing
    of it after (RFC 4733 §2.5.1.4; before, its end never came and the carrier's receiver
    played 7 until its own timeout). The carrier's digit 3, begun and not ended, is reported
    once to alice as INFO with the duration known (its later packets now go to her as they
    come, never to the detector)."""
    env = await start(nursery, tmp_path, voipgw_seed)
    _, leg_b, answer = await call_to_alice(env, alice_formats=("0",))
    to_carrier = parse_sdp_untrusted(answer).media[0].port
    to_alice = parse_sdp_untrusted(leg_b.invite.body).media[0].port

    async def carrier_answers(received: Received) -> bool:
        if received.request.method != "INVITE":
            return False
        await env.trunk.respond(received, 200, body=simple_sdp("127.0.0.1", TRUNK_PORT, version=2))
        return True

    env.trunk.in_dialog = carrier_answers
    trunk_sock, alice_sock = await bind(TRUNK_PORT), await bind(ALICE_PORT)
    with trunk_sock, alice_sock:
        trunk_to, alice_to = ("127.0.0.1", to_carrier), ("127.0.0.1", to_alice)
        await trunk_sock.sendto(audio(1, TRUNK_SSRC), trunk_to)
        assert await alice_sock.recv(2048) == audio(1, TRUNK_SSRC)
        await alice_sock.sendto(audio(1, ALICE_SSRC), alice_to)
        assert await trunk_sock.recv(2048) == audio(1, ALICE_SSRC)
        # The carrier begins 3 (two packets: taken, no end yet).
        for sequence, duration in ((2, 0), (3, 400)):
            payload = event_payload(3, end=False, duration=duration)
            packet = rtp(sequence, 101, TRUNK_SSRC, payload, marker=sequence == 2, timestamp=320)
            await trunk_sock.sendto(packet, trunk_to)
        # Alice's 7 for 5 s: its first packets reach the carrier.
        exchange = await leg_b.request(
            "INFO", body=b"Signal=7\r\nDuration=5000\r\n", content_type="application/dtmf-relay"
        )
        assert (await exchange.final()).status == 200
        started = [await trunk_sock.recv(2048) for _ in range(2)]
        assert [fields(p)[0] for p in started] == [True, False]
        timestamp = fields(started[0])[3]
        # Alice re-offers with telephone-event; the carrier answers with it: no interworking.
        reoffer = simple_sdp("127.0.0.1", ALICE_PORT, version=2, formats=("0", "101"))
        assert (await leg_b.reinvite(reoffer)).status == 200
        call = b2bua_call(env)
        assert call.media is not None and call.media.dtmf is None
        info = await env.alice.next_request("INFO")
        assert info.request.body.startswith(b"Signal=3\r\nDuration=")
        with trio.move_on_after(6):  # longer than the 5 s the digit was to last
            while True:
                packet = await trunk_sock.recv(2048)
                if fields(packet)[1] == 101:
                    started.append(packet)
        ends = [p for p in started if parse_event_untrusted(p[12:]).end]
        assert len(ends) == 3 and started[-3:] == ends  # the last three, nothing after
        sequences = [fields(p)[2] for p in started]
        assert sequences == list(range(2, 2 + len(started)))  # on from alice's audio
        assert {fields(p)[3] for p in started} == {timestamp}
        assert {parse_event_untrusted(p[12:]).event for p in started} == {7}
        last = parse_event_untrusted(started[-4][12:]).duration
        assert {parse_event_untrusted(p[12:]).duration for p in ends} == {
            parse_event_untrusted(ends[0][12:]).duration
        }
        assert parse_event_untrusted(ends[0][12:]).duration >= last
        assert len(started) < 5000 // 50  # cut short: not the whole digit
        # Alice's audio follows the injected packets, numbered on.
        await alice_sock.sendto(audio(2, ALICE_SSRC), alice_to)
        with trio.fail_after(2):
            assert fields(await trunk_sock.recv(2048))[1:3] == (0, 2 + len(started))
    assert env.alice.requests("INFO") == [info.request]
    # The record counts what the ended interworking did, its end packets at the change with
    # it (its plan is gone: the counters are the stream's, kept for the call's life).
    record = call.security_record()["dtmf"]
    assert "rfc4733_leg" not in record  # no interworking now
    assert record["packets"] == {
        "taken": 2,  # the carrier's 3, read as INFO
        "injected": len(started),  # alice's 7, its three end packets included
        "ended_at_change": 3,
        "passed": 0,
        "end_copies_dropped": 0,
    }
    assert call.media.statistics()["dtmf_ended_at_change"] == 3  # the metrics' source


@pytest.mark.parametrize("log_digits", [False, True], ids=["default", "log_dtmf_digits"])
async def test_the_timeout_line_names_the_digit_only_when_the_operator_asks(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    log_digits: bool,
) -> None:
    """The carrier's 6 loses its end packets: the timeout ends it and logs it at INFO. A
    digit may be a card number's or a PIN's (PCI DSS 3.3): the line says ``withheld`` unless
    ``[gateway] log_dtmf_digits = true`` (read by the gateway, handed to each call's media)."""
    gateway_table = {"log_dtmf_digits": True} if log_digits else None
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        alice_auto=AutoAnswer(ring=False, status=None),
        gateway_table=gateway_table,
    )
    _, _, answer = await call_to_alice(env, alice_formats=("0",))
    to_carrier = parse_sdp_untrusted(answer).media[0].port
    caplog.set_level(logging.INFO, logger="gateway")
    trunk_sock = await bind(TRUNK_PORT)
    with trunk_sock:
        trunk_to = ("127.0.0.1", to_carrier)
        await trunk_sock.sendto(audio(1, TRUNK_SSRC), trunk_to)
        for sequence, duration in ((2, 0), (3, 400)):
            payload = event_payload(6, end=False, duration=duration)
            packet = rtp(sequence, 101, TRUNK_SSRC, payload, marker=sequence == 2, timestamp=320)
            await trunk_sock.sendto(packet, trunk_to)
        info = await env.alice.next_request("INFO")  # after the timeout: all ends were lost
    assert info.request.body.startswith(b"Signal=6\r\n")  # the digit itself still goes on
    lines = [r.getMessage() for r in caplog.records if "ended by timeout" in r.getMessage()]
    shown = "6" if log_digits else "withheld"
    expected = f"m= line 1: DTMF event {shown} from leg a ended by timeout (end packets lost)"
    assert lines == [expected]
