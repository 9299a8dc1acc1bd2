"""A ringing tone played to one leg on real sockets (MediaSession.play_ringback, the relay's
play_tone; docs/transfers.md "Media"): it goes through the leg's SRTP keys in the law and number
its SDP lists first, the other leg's media that way is dropped while it plays and relayed again
once it stops; a leg whose SDP lets it receive nothing, or that takes no G.711, gets none and
the reason says why (ports of this process, tests/port_blocks.py)."""

from __future__ import annotations

import itertools
import os

import pytest
import trio

from gateway.core.config import PortRange
from gateway.core.interfaces import SrtpKeys
from gateway.core.media import amr, tones
from gateway.core.media.g729 import load_bcg729
from gateway.core.media.gsm import load_libgsm
from gateway.core.media.keying import CallKeying
from gateway.core.media.opus import load_libopus
from gateway.core.media.relay import MediaRelay, MediaStream
from gateway.core.media.session import MediaSession
from gateway.core.media.srtp import SrtpSession
from gateway.core.media.tones import Tone, ToneCodec, codec_available, tone_frames
from gateway.core.sdp.parser import parse_sdp_untrusted
from tests.conftest import missing
from tests.integration.media.keyed_legs import FakeLeg
from tests.integration.media.phone_sockets import ADDRESS, rtp, udp_socket, until
from tests.integration.media.relay_fixtures import relay_fixture
from tests.port_blocks import ModuleBlock

RELAY_PORTS = ModuleBlock(100, parse=PortRange.parse)
A_PHONE = ModuleBlock(10)
B_PHONE = ModuleBlock(10)
SUITE = "AES_CM_128_HMAC_SHA1_80"

relay = relay_fixture(RELAY_PORTS)


def sdp_for(port: int, formats: str, *lines: str, version: int = 1) -> bytes:
    text = [
        "v=0",
        f"o=- 1 {version} IN IP4 {ADDRESS}",
        "s=-",
        f"c=IN IP4 {ADDRESS}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {formats}",
        *lines,
        "a=rtcp-mux",
        "",
    ]
    return "\r\n".join(text).encode()


@pytest.mark.parametrize(
    ("formats", "rtpmaps", "codec", "payload_type", "step"),
    [
        ("8 0", (), ToneCodec.PCMA, 8, 160),
        ("9 0 8", (), ToneCodec.G722, 9, 160),
        ("18 0", (), ToneCodec.G729, 18, 160),
        ("111 0", ("a=rtpmap:111 opus/48000/2",), ToneCodec.OPUS, 111, 960),
        ("96 0", ("a=rtpmap:96 AMR/8000", "a=fmtp:96 mode-set=0,2,4,7"), ToneCodec.AMR, 96, 160),
        (
            "97 0",
            ("a=rtpmap:97 AMR/8000", "a=fmtp:97 octet-align=1"),
            ToneCodec.AMR_OCTET_ALIGNED,
            97,
            160,
        ),
        (
            "98 0",
            ("a=rtpmap:98 AMR-WB/16000", "a=fmtp:98 mode-set=0,1,2; octet-align=1"),
            ToneCodec.AMR_WB_OCTET_ALIGNED,
            98,
            320,
        ),
        ("3 0", (), ToneCodec.GSM, 3, 160),
    ],
    ids=["pcma", "g722", "g729", "opus", "amr", "amr-octet-aligned", "amr-wb-octet-aligned", "gsm"],
)
async def test_the_tone_goes_through_the_legs_keys_in_place_of_the_other_legs_media(
    relay: MediaRelay,
    formats: str,
    rtpmaps: tuple[str, ...],
    codec: ToneCodec,
    payload_type: int,
    step: int,
) -> None:
    if codec is ToneCodec.G729 and load_bcg729() is None:
        missing("libbcg729 is not installed (apt-get install libbcg729-0)")
    if codec is ToneCodec.OPUS and load_libopus() is None:
        missing("libopus is not installed (apt-get install libopus0)")
    if codec is ToneCodec.GSM and not codec_available(codec):
        missing("libgsm is not installed (apt-get install libgsm1)")
    if codec.encoding in ("AMR", "AMR-WB") and not codec_available(codec):
        missing(f"{codec.encoding}'s encoder is not installed (libopencore-amrnb0, ...)")
    session = MediaSession(relay, media_address=ADDRESS)
    keying = CallKeying(session)
    leg_a, leg_b = FakeLeg("sdes"), FakeLeg("best-effort")
    ours, theirs = os.urandom(30), os.urandom(30)
    leg_a.fake_keys = SrtpKeys(SUITE, ours, theirs)
    a_side = SrtpSession(SrtpKeys(SUITE, theirs, ours))
    a_phone, b_phone = udp_socket(), udp_socket()
    with a_phone, b_phone:
        await a_phone.bind((ADDRESS, A_PHONE.first()))
        await b_phone.bind((ADDRESS, B_PHONE.first()))
        # A's phone lists PCMA first (as 8) and PCMU: the tone goes as PCMA. An HD phone
        # lists G722 first (as 9): as G.722. A low-bandwidth line G729 (18): as G.729. A
        # WebRTC client opus (111, RFC 7587 §7): as Opus, its timestamps on a 48 kHz clock. A
        # mobile operator's line AMR (RFC 4867), packed as its fmtp says; an HD one AMR-WB, its
        # timestamps on a 16 kHz clock.
        offer_b = session.offer_from(
            "a", parse_sdp_untrusted(sdp_for(A_PHONE.first(), formats, *rtpmaps))
        )
        session.answer_from("b", parse_sdp_untrusted(sdp_for(B_PHONE.first(), formats, *rtpmaps)))
        session.settle()
        keying.apply(leg_a, leg_b)
        b_port = offer_b.media[0].port
        stream = session.streams[0]
        assert isinstance(stream, MediaStream)

        await b_phone.sendto(rtp(1), (ADDRESS, b_port))
        with trio.fail_after(5):
            relayed, _ = await a_phone.recvfrom(2048)
        assert a_side.unprotect_rtp(relayed) == rtp(1)

        assert session.play_ringback("a", "eu") is None
        assert session.playing_tone
        player = stream.playing_tone("b_to_a")
        assert player is not None and player.tone == Tone("eu", codec, payload_type)
        await until(lambda: player.packets >= 10)
        dropped_before = stream.b_to_a.statistics().dropped
        await b_phone.sendto(rtp(2), (ADDRESS, b_port))  # dropped: the tone plays instead
        await until(lambda: stream.b_to_a.statistics().dropped == dropped_before + 1)
        frames = tone_frames("eu", codec)
        heard = []
        while len(heard) < 10:
            with trio.fail_after(5):
                packet, _ = await a_phone.recvfrom(2048)
            plain = a_side.unprotect_rtp(packet)  # A's keys decrypt it
            assert plain is not None
            if int.from_bytes(plain[8:12], "big") == player.ssrc:
                heard.append(plain)
        assert {p[1] & 0x7F for p in heard} == {payload_type}
        assert all(p[12:] in frames for p in heard)
        timestamps = [int.from_bytes(p[4:8], "big") for p in heard]
        steps = {(later - earlier) % 2**32 for earlier, later in itertools.pairwise(timestamps)}
        assert step in steps and all(each % step == 0 for each in steps), steps
        assert rtp(2) not in heard

        assert session.stop_tone()
        assert not session.playing_tone and stream.playing_tone("b_to_a") is None
        await b_phone.sendto(rtp(3), (ADDRESS, b_port))
        with trio.fail_after(5):
            while True:  # tone packets sent before the stop may still be queued
                packet, _ = await a_phone.recvfrom(2048)
                if a_side.unprotect_rtp(packet) == rtp(3):
                    break
        assert not session.stop_tone()  # none playing
        keying.close()
        session.close()


async def test_a_leg_that_receives_nothing_or_takes_none_of_the_tones_codecs_gets_no_tone(
    relay: MediaRelay,
) -> None:
    session = MediaSession(relay, media_address=ADDRESS)
    assert session.play_ringback("a", "us") == "no SDP in force with that leg"
    # A's phone holds the call with a=sendonly: it receives nothing (RFC 3264 §6.1).
    session.offer_from("a", parse_sdp_untrusted(sdp_for(A_PHONE.first(), "0", "a=sendonly")))
    session.answer_from("b", parse_sdp_untrusted(sdp_for(B_PHONE.first(), "0", "a=recvonly")))
    session.settle()
    assert session.play_ringback("a", "us") == "its SDP says sendonly"
    # B was told sendonly by us: it may receive, and does (the usual hold is the other way).
    assert session.play_ringback("b", "us") is None
    assert session.stop_tone()
    session.close()

    session = MediaSession(relay, media_address=ADDRESS)
    ilbc = sdp_for(A_PHONE.first(), "97", "a=rtpmap:97 iLBC/8000")
    session.offer_from("a", parse_sdp_untrusted(ilbc))
    session.answer_from(
        "b", parse_sdp_untrusted(sdp_for(B_PHONE.first(), "97", "a=rtpmap:97 iLBC/8000"))
    )
    session.settle()
    codecs = ["PCMU", "PCMA", "G722"]
    codecs += ["G729"] if load_bcg729() is not None else []
    codecs += ["opus"] if load_libopus() is not None else []
    codecs += ["AMR"] if amr.load_encoder(amr.AMR) is not None else []
    codecs += ["AMR-WB"] if amr.load_encoder(amr.AMR_WB) is not None else []
    codecs += ["GSM"] if load_libgsm() is not None else []
    assert session.play_ringback("a", "us") == (
        f"it takes none of {', '.join(codecs[:-1])} and {codecs[-1]}"
    )
    assert not session.playing_tone
    session.close()

    # AMR the tone could go in but for what the line's fmtp asks: the reason says so.
    if amr.load_encoder(amr.AMR) is None:
        return
    session = MediaSession(relay, media_address=ADDRESS)
    amr_crc = ("a=rtpmap:96 AMR/8000", "a=fmtp:96 octet-align=1; crc=1")
    session.offer_from("a", parse_sdp_untrusted(sdp_for(A_PHONE.first(), "96", *amr_crc)))
    session.answer_from("b", parse_sdp_untrusted(sdp_for(B_PHONE.first(), "96", *amr_crc)))
    session.settle()
    assert session.play_ringback("a", "us") == (
        f"it takes none of {', '.join(codecs[:-1])} and {codecs[-1]} (its AMR asks for CRCs,"
        " robust sorting, interleaving or a mode-set without the tone's mode, RFC 4867 §8.1)"
    )
    assert not session.playing_tone
    session.close()


async def test_a_relay_told_to_play_a_codec_it_cannot_make_relays_on(
    relay: MediaRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A media worker whose encoder failed at its start is still told to play that codec by the
    # SIP process, which did not try it (it plays nothing itself): the stream says it cannot,
    # and the other leg's media goes on being relayed, as before a tone.
    session = MediaSession(relay, media_address=ADDRESS)
    session.offer_from("a", parse_sdp_untrusted(sdp_for(A_PHONE.first(), "8")))
    session.answer_from("b", parse_sdp_untrusted(sdp_for(B_PHONE.first(), "8")))
    session.settle()
    stream = session.streams[0]
    assert isinstance(stream, MediaStream)
    monkeypatch.setattr(tones, "_UNUSABLE", {ToneCodec.PCMA: "OSError: a broken build"})
    assert not stream.play_tone("b_to_a", Tone("eu", ToneCodec.PCMA, 8))
    assert stream.playing_tone("b_to_a") is None
    monkeypatch.setattr(tones, "_UNUSABLE", {})
    assert stream.play_tone("b_to_a", Tone("eu", ToneCodec.PCMA, 8))
    assert stream.playing_tone("b_to_a") is not None
    session.close()


async def test_the_tone_follows_the_legs_sdp_as_exchanges_change_it(relay: MediaRelay) -> None:
    """replan_ringback, after each exchange that settles while the tone plays (a transferee's
    re-INVITE while the target rings): the same SDP again leaves the tone as it plays; another
    law plays it again in that law and number; a hold that says inactive stops it."""
    session = MediaSession(relay, media_address=ADDRESS)

    def exchange(version: int, formats: str, *lines: str) -> None:
        session.offer_from(
            "a", parse_sdp_untrusted(sdp_for(A_PHONE.first(), formats, *lines, version=version))
        )
        session.answer_from(
            "b", parse_sdp_untrusted(sdp_for(B_PHONE.first(), formats, *lines, version=version))
        )
        session.settle()

    exchange(1, "0 8")
    assert session.replan_ringback() == (False, None)  # none plays
    assert session.play_ringback("a", "us") is None
    stream = session.streams[0]
    assert isinstance(stream, MediaStream)
    first = stream.playing_tone("b_to_a")
    assert first is not None and first.tone == Tone("us", ToneCodec.PCMU, 0)

    exchange(2, "0 8")  # a session refresh: nothing changes
    assert session.replan_ringback() == (False, None)
    assert stream.playing_tone("b_to_a") is first

    exchange(3, "8")  # A takes PCMA only now (RFC 3264 §8.3.2)
    assert session.replan_ringback() == (True, None)
    again = stream.playing_tone("b_to_a")
    assert again is not None and again is not first
    assert again.tone == Tone("us", ToneCodec.PCMA, 8)

    exchange(4, "8", "a=inactive")  # A holds, receiving nothing (RFC 3264 §6.1)
    assert session.replan_ringback() == (True, "its SDP says inactive")
    assert not session.playing_tone and stream.playing_tone("b_to_a") is None
    assert session.replan_ringback() == (False, None)
    session.close()
