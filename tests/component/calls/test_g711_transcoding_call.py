"""G.711 transcoding through a call ([media] g711_transcoding): the caller (a carrier, leg A)
speaks only PCMU, alice's phone (leg B) only PCMA. Alice is offered PCMA after the caller's
own formats, answers it, and the caller's answer names PCMU; each hears its own law, the
samples converted both ways; telephone-event passes unchanged; the call record says the
stream is transcoded. A callee that also has PCMU answers it and nothing is transcoded; with
the option off the offer is as it came. The carrier's own ``g711_transcoding`` overrides
``[media]``'s both ways. An answer numbering telephone-event as the caller numbers its PCMU
gets the converted packets still in each side's own number. In-memory signalling, virtual
time; RTP on real 127.0.0.1 sockets through the relay."""

from __future__ import annotations

import struct
from pathlib import Path

import trio

from gateway.core.calls.call import Call as GatewayCall
from gateway.core.media.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import AutoAnswer, Call, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, start_b2bua
from tests.component.calls.dtls_phone import bind
from tests.port_blocks import port_bases

TRUNK_PORT, ALICE_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)
TRUNK_SSRC, ALICE_SSRC = 0x7777, 0xA11CE
SAMPLES = bytes(range(0, 256, 2)) + bytes(range(1, 256, 8))  # 160 octets: 20 ms
EVENT = b"\x05\x0a\x00\xa0"  # RFC 4733: digit 5


def rtp(sequence: int, payload_type: int, ssrc: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, payload_type, sequence, 160 * sequence, ssrc) + payload


async def start(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    *,
    enabled: bool,
    trunk: bool | None = None,
) -> B2bua:
    """``enabled``: ``[media] g711_transcoding``; ``trunk``: the carrier's own, None: unset."""
    return await start_b2bua(
        nursery,
        tmp_path,
        seed,
        alice_auto=AutoAnswer(ring=False, status=None),
        media_table={"g711_transcoding": enabled},
        carrier=None if trunk is None else {"g711_transcoding": trunk},
    )


async def call_to_alice(env: B2bua, *, alice_formats: tuple[str, ...]) -> tuple[Call, Call, bytes]:
    """The carrier calls alice offering PCMU and telephone-event; she answers with
    ``alice_formats``. (carrier's call, alice's call, our answer to the carrier)."""
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", TRUNK_PORT, formats=("0", "101"))
    )
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    await env.alice.respond(
        leg_b.incoming, 200, body=simple_sdp("127.0.0.1", ALICE_PORT, formats=alice_formats)
    )
    final = await incoming.final()
    assert final.status == 200, final.reason
    await env.alice.next_request("ACK")
    return incoming, leg_b, final.body


def b2bua_call(env: B2bua) -> GatewayCall:
    assert env.gateway.calls is not None
    (call,) = env.gateway.calls.calls
    return call


async def test_a_pcmu_caller_and_a_pcma_callee_hear_each_other(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed, enabled=True)
    _, leg_b, answer = await call_to_alice(env, alice_formats=("8", "101"))
    offered = parse_sdp_untrusted(leg_b.invite.body).media[0]
    assert offered.formats == ("0", "101", "8")  # PCMA after the caller's own
    answered = parse_sdp_untrusted(answer).media[0]
    assert answered.formats == ("0", "101")  # the caller's law, never the added one
    assert "0 PCMU/8000" in answered.attributes.values("rtpmap")
    trunk_sock, alice_sock = await bind(TRUNK_PORT), await bind(ALICE_PORT)
    with trunk_sock, alice_sock:
        trunk_to, alice_to = ("127.0.0.1", answered.port), ("127.0.0.1", offered.port)
        with trio.fail_after(2):
            await trunk_sock.sendto(rtp(1, 0, TRUNK_SSRC, SAMPLES), trunk_to)
            assert await alice_sock.recv(2048) == rtp(
                1, 8, TRUNK_SSRC, SAMPLES.translate(ULAW_TO_ALAW)
            )
            await alice_sock.sendto(rtp(1, 8, ALICE_SSRC, SAMPLES), alice_to)
            assert await trunk_sock.recv(2048) == rtp(
                1, 0, ALICE_SSRC, SAMPLES.translate(ALAW_TO_ULAW)
            )
            await trunk_sock.sendto(rtp(2, 101, TRUNK_SSRC, EVENT), trunk_to)
            assert await alice_sock.recv(2048) == rtp(2, 101, TRUNK_SSRC, EVENT)
    record = b2bua_call(env).security_record()
    assert record["transcoding"] == {
        "line": 1,
        "described": "PCMU <-> PCMA transcoded",
        "now": True,
        "a_to_b_packets": 1,
        "b_to_a_packets": 1,
    }


async def test_a_callee_with_pcmu_too_is_not_transcoded(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed, enabled=True)
    _, leg_b, answer = await call_to_alice(env, alice_formats=("0", "8", "101"))
    offered = parse_sdp_untrusted(leg_b.invite.body).media[0]
    answered = parse_sdp_untrusted(answer).media[0]
    assert answered.formats == ("0", "101")  # our added PCMA is not the caller's to get
    trunk_sock, alice_sock = await bind(TRUNK_PORT), await bind(ALICE_PORT)
    with trunk_sock, alice_sock:
        trunk_to, alice_to = ("127.0.0.1", answered.port), ("127.0.0.1", offered.port)
        with trio.fail_after(2):
            await trunk_sock.sendto(rtp(1, 0, TRUNK_SSRC, SAMPLES), trunk_to)
            assert await alice_sock.recv(2048) == rtp(1, 0, TRUNK_SSRC, SAMPLES)
            await alice_sock.sendto(rtp(1, 0, ALICE_SSRC, SAMPLES), alice_to)
            assert await trunk_sock.recv(2048) == rtp(1, 0, ALICE_SSRC, SAMPLES)
    assert "transcoding" not in b2bua_call(env).security_record()


async def test_off_the_offer_goes_as_it_came(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed, enabled=False)
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", TRUNK_PORT, formats=("0", "101"))
    )
    leg_b = await env.alice.next_call()
    assert parse_sdp_untrusted(leg_b.invite.body).media[0].formats == ("0", "101")
    assert leg_b.incoming is not None
    await env.alice.respond(leg_b.incoming, 488)
    final = await incoming.final()
    assert final.status >= 400


async def test_a_late_offer_is_transcoded_too(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # An INVITE without SDP (RFC 3261 §13.2.1): alice's 200 is the offer (PCMA only), the
    # carrier's ACK the answer (PCMU only), each of them answered in its own law.
    env = await start(nursery, tmp_path, voipgw_seed, enabled=True)
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    incoming.ack_answer = simple_sdp("127.0.0.1", TRUNK_PORT, formats=("0", "101"))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None and leg_b.invite.body == b""
    await env.alice.respond(
        leg_b.incoming, 200, body=simple_sdp("127.0.0.1", ALICE_PORT, formats=("8", "101"))
    )
    final = await incoming.final()
    assert final.status == 200
    offered = parse_sdp_untrusted(final.body).media[0]
    assert offered.formats == ("8", "101", "0")  # PCMU after alice's own
    ack = (await env.alice.next_request("ACK")).request
    answered = parse_sdp_untrusted(ack.body).media[0]
    assert answered.formats == ("8", "101")  # alice's law, never the added one
    trunk_sock, alice_sock = await bind(TRUNK_PORT), await bind(ALICE_PORT)
    with trunk_sock, alice_sock:
        trunk_to, alice_to = ("127.0.0.1", offered.port), ("127.0.0.1", answered.port)
        with trio.fail_after(2):
            await trunk_sock.sendto(rtp(1, 0, TRUNK_SSRC, SAMPLES), trunk_to)
            assert await alice_sock.recv(2048) == rtp(
                1, 8, TRUNK_SSRC, SAMPLES.translate(ULAW_TO_ALAW)
            )
            await alice_sock.sendto(rtp(1, 8, ALICE_SSRC, SAMPLES), alice_to)
            assert await trunk_sock.recv(2048) == rtp(
                1, 0, ALICE_SSRC, SAMPLES.translate(ALAW_TO_ULAW)
            )
    assert b2bua_call(env).security_record()["transcoding"]["described"] == (
        "PCMU <-> PCMA transcoded"
    )


async def test_the_trunk_setting_overrides_media_both_ways(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # [media] off (the default), on for the one carrier that needs it: its calls transcode.
    env = await start(nursery, tmp_path, voipgw_seed, enabled=False, trunk=True)
    _, leg_b, answer = await call_to_alice(env, alice_formats=("8", "101"))
    assert parse_sdp_untrusted(leg_b.invite.body).media[0].formats == ("0", "101", "8")
    assert parse_sdp_untrusted(answer).media[0].formats == ("0", "101")
    assert b2bua_call(env).security_record()["transcoding"]["now"] is True


async def test_a_trunk_set_false_is_never_transcoded(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed, enabled=True, trunk=False)
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", TRUNK_PORT, formats=("0", "101"))
    )
    leg_b = await env.alice.next_call()
    assert parse_sdp_untrusted(leg_b.invite.body).media[0].formats == ("0", "101")
    assert leg_b.incoming is not None
    await env.alice.respond(leg_b.incoming, 488)
    assert (await incoming.final()).status >= 400


def audio_sdp(port: int, formats: str, *rtpmaps: str) -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    lines += [f"m=audio {port} RTP/AVP {formats}", *(f"a=rtpmap:{m}" for m in rtpmaps), ""]
    return "\r\n".join(lines).encode()


async def test_converted_packets_keep_each_sides_numbers_through_a_renumbering(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The carrier numbers PCMU 96 (dynamic) and telephone-event 101; alice answers PCMA 8
    # and telephone-event 96, so her events are renumbered 96 -> 101 towards the carrier:
    # her PCMA, converted to the carrier's PCMU 96, must not be renumbered to 101 with them
    # (RFC 3264 §5.1: each receives with the numbers its own SDP gave).
    env = await start(nursery, tmp_path, voipgw_seed, enabled=True)
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID),
        sdp=audio_sdp(TRUNK_PORT, "96 101", "96 PCMU/8000", "101 telephone-event/8000"),
    )
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    offered = parse_sdp_untrusted(leg_b.invite.body).media[0]
    assert offered.formats == ("96", "101", "8")
    await env.alice.respond(
        leg_b.incoming,
        200,
        body=audio_sdp(ALICE_PORT, "8 96", "8 PCMA/8000", "96 telephone-event/8000"),
    )
    final = await incoming.final()
    assert final.status == 200, final.reason
    await env.alice.next_request("ACK")
    answered = parse_sdp_untrusted(final.body).media[0]
    assert answered.formats == ("96", "101")
    trunk_sock, alice_sock = await bind(TRUNK_PORT), await bind(ALICE_PORT)
    with trunk_sock, alice_sock:
        trunk_to, alice_to = ("127.0.0.1", answered.port), ("127.0.0.1", offered.port)
        with trio.fail_after(2):
            await alice_sock.sendto(rtp(1, 8, ALICE_SSRC, SAMPLES), alice_to)
            assert await trunk_sock.recv(2048) == rtp(
                1, 96, ALICE_SSRC, SAMPLES.translate(ALAW_TO_ULAW)
            )
            await alice_sock.sendto(rtp(2, 96, ALICE_SSRC, EVENT), alice_to)
            assert await trunk_sock.recv(2048) == rtp(2, 101, ALICE_SSRC, EVENT)
            await trunk_sock.sendto(rtp(1, 96, TRUNK_SSRC, SAMPLES), trunk_to)
            assert await alice_sock.recv(2048) == rtp(
                1, 8, TRUNK_SSRC, SAMPLES.translate(ULAW_TO_ALAW)
            )
            await trunk_sock.sendto(rtp(2, 101, TRUNK_SSRC, EVENT), trunk_to)
            assert await alice_sock.recv(2048) == rtp(2, 96, TRUNK_SSRC, EVENT)
