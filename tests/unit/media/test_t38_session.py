"""T.38 passthrough in the SDP of both legs: image m= lines, their attributes, the stream's mode.

A real MediaRelay binds its port pairs on 127.0.0.1 (as test_media_session.py does), but nothing
is served: these tests read the rewritten SDP, the streams' opaque mode and the legs' security.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator

import pytest

from gateway.core.config import PortRange
from gateway.core.media.policy import BUILTIN_POLICIES
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import MediaRelay, MediaStream
from gateway.core.media.security import LegSecurity, MediaSecurityRefused
from gateway.core.media.session import MediaSession
from gateway.core.media.t38 import is_udptl_t38, t38_problem_untrusted
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from gateway.plugins.keyexchange.sdes import SdesKeyExchange
from tests.port_blocks import ModuleBlock

ADDRESS = "127.0.0.1"
MEDIA_ADDRESS = "203.0.113.5"
RANGE = ModuleBlock(200, parse=PortRange.parse)

AUDIO = "m=audio 20000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"
ANSWER_AUDIO = "m=audio 30000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"
# What an ATA sends after hearing CED (T.38 Annex D.2.3), a vendor attribute at the end.
T38_ATTRIBUTES = [
    "a=T38FaxVersion:0",
    "a=T38MaxBitRate:14400",
    "a=T38FaxFillBitRemoval",
    "a=T38FaxTranscodingMMR:0",
    "a=T38FaxTranscodingJBIG:0",
    "a=T38FaxRateManagement:transferredTCF",
    "a=T38FaxMaxBuffer:2000",
    "a=T38FaxMaxDatagram:400",
    "a=T38FaxUdpEC:t38UDPRedundancy",
    "a=X-vendor-fax:tone=1",
]
T38 = "m=image 20002 udptl t38\n" + "\n".join(T38_ATTRIBUTES) + "\n"
ANSWER_T38 = "m=image 30002 UDPTL t38\na=T38FaxVersion:0\na=T38FaxMaxDatagram:320\n"


def sdp(*media: str, version: int = 1, host: str = "127.0.0.1") -> SessionDescription:
    head = f"v=0\no=- 1 {version} IN IP4 {host}\ns=-\nc=IN IP4 {host}\nt=0 0\n"
    text = head + "".join(m.strip("\n") + "\n" for m in media)
    return parse_sdp_untrusted(text.replace("\n", "\r\n").encode())


def lines(sd: SessionDescription) -> list[str]:
    return serialize_sdp(sd).decode().splitlines()


def section(sd: SessionDescription, index: int) -> list[str]:
    """The lines of m= section ``index`` (its m= line first)."""
    all_lines = lines(sd)
    starts = [i for i, line in enumerate(all_lines) if line.startswith("m=")]
    end = starts[index + 1] if index + 1 < len(starts) else len(all_lines)
    return all_lines[starts[index] : end]


@pytest.fixture
def relay() -> Iterator[MediaRelay]:
    relay = MediaRelay(PortAllocator(ADDRESS, RANGE.get()), clock=lambda: 0.0)
    yield relay
    relay.close()
    assert relay.allocator.in_use == 0


@pytest.fixture
def session(relay: MediaRelay) -> Iterator[MediaSession]:
    session = MediaSession(
        relay, media_address=MEDIA_ADDRESS, session_id_source=itertools.count(1000).__next__
    )
    yield session
    session.close()


def audio_call(session: MediaSession) -> MediaStream:
    session.offer_from("a", sdp(AUDIO))
    session.answer_from("b", sdp(ANSWER_AUDIO))
    session.settle()
    (stream,) = session.streams
    assert isinstance(stream, MediaStream)
    return stream


# -- the re-INVITE to T.38 and back ---------------------------------------------------------------


def test_reinvite_to_t38_keeps_the_line_stream_and_passes_the_attributes(session: MediaSession):
    stream = audio_call(session)
    b_port, a_port = stream.b.ports.rtp_port, stream.a.ports.rtp_port

    to_b = session.offer_from("a", sdp(T38, version=2))

    assert section(to_b, 0) == [f"m=image {b_port} udptl t38", *T38_ATTRIBUTES]
    assert f"c=IN IP4 {MEDIA_ADDRESS}" in lines(to_b)
    assert session.stream_at(0) is stream
    assert not stream.opaque  # RTP in flight is still RTP until the answer
    assert stream.a.rtp_destination == ("127.0.0.1", 20002)

    to_a = session.answer_from("b", sdp(ANSWER_T38, version=2))
    assert section(to_a, 0) == [
        f"m=image {a_port} UDPTL t38",
        "a=T38FaxVersion:0",
        "a=T38FaxMaxDatagram:320",
    ]
    assert stream.opaque
    assert stream.b.rtp_destination == ("127.0.0.1", 30002)
    session.settle()
    assert session.streams == (stream,)

    # Back to audio (T.38 Annex D.2.3.2: after the fax): RTP again, same ports.
    to_b = session.offer_from("b", sdp(ANSWER_AUDIO, version=3))
    session.answer_from("a", sdp(AUDIO, version=3))
    session.settle()
    assert not stream.opaque
    assert session.streams == (stream,)
    assert section(to_b, 0)[0] == f"m=audio {a_port} RTP/AVP 0"


def test_t38_line_gets_no_rtcp_attributes_and_loses_the_peers(session: MediaSession):
    t38 = "m=image 20002 udptl t38\na=T38FaxVersion:0\na=rtcp:20003\na=rtcp-mux\n"
    to_b = session.offer_from("a", sdp(t38))
    assert section(to_b, 0)[1:] == ["a=T38FaxVersion:0"]
    (stream,) = session.streams
    assert stream.a.rtp_destination == ("127.0.0.1", 20002)
    assert not stream.a.rtcp_mux


def test_fax_only_call_opens_an_opaque_stream_at_once(session: MediaSession):
    to_b = session.offer_from("a", sdp(T38))
    (stream,) = session.streams
    assert isinstance(stream, MediaStream) and stream.opaque
    assert section(to_b, 0)[0] == f"m=image {stream.b.ports.rtp_port} udptl t38"


def test_t38_beside_audio_at_port_0_is_relayed(session: MediaSession):
    audio_call(session)
    to_b = session.offer_from("a", sdp("m=audio 0 RTP/AVP 0\n", T38, version=2))
    assert section(to_b, 0)[0] == "m=audio 0 RTP/AVP 0"
    image = session.stream_at(1)
    assert isinstance(image, MediaStream)
    assert section(to_b, 1)[0] == f"m=image {image.b.ports.rtp_port} udptl t38"
    session.answer_from("b", sdp("m=audio 0 RTP/AVP 0\n", ANSWER_T38, version=2))
    session.settle()
    assert session.stream_at(0) is None
    assert session.streams == (image,) and image.opaque


def test_abandoned_offer_puts_the_stream_back_to_rtp(session: MediaSession):
    stream = audio_call(session)
    session.offer_from("b", sdp(T38, version=2))
    session.answer_from("a", sdp(ANSWER_T38, version=2))  # in a 183, say
    assert stream.opaque
    session.abandon_offer()  # then a 488
    assert not stream.opaque
    assert stream.b.rtp_destination == ("127.0.0.1", 30000)


@pytest.mark.parametrize("proto", ["TCP", "UDP/TLS/UDPTL"])
def test_t38_over_tcp_or_dtls_is_not_relayed(session: MediaSession, proto: str):
    other = f"m=image 20002 {proto} t38\na=T38FaxVersion:0\n"
    to_b = session.offer_from("a", sdp(AUDIO, other))
    assert section(to_b, 1) == [f"m=image 0 {proto} t38"]
    session.abandon_offer()
    with pytest.raises(SdpError, match="no media stream the gateway can relay"):
        session.offer_from("a", sdp(other))


@pytest.mark.parametrize(
    ("attribute", "reason"),
    [
        ("a=T38FaxMaxDatagram:lots", "T38FaxMaxDatagram needs an integer"),
        ("a=T38FaxMaxDatagram:0", "T38FaxMaxDatagram:0"),
        ("a=T38MaxBitRate:99999999999", "out of range"),
        ("a=T38FaxVersion", "T38FaxVersion needs an integer"),
        ("a=T38FaxFillBitRemoval:yes", "takes no value, 0 or 1"),
        ("a=T38FaxUdpEC", "needs one token"),
    ],
)
def test_malformed_t38_attributes(session: MediaSession, attribute: str, reason: str):
    bad = f"m=image 20002 udptl t38\na=T38FaxVersion:0\n{attribute}\n"
    if attribute == "a=T38FaxVersion":
        bad = f"m=image 20002 udptl t38\n{attribute}\n"
    # Beside audio: that line at port 0, the call goes on.
    to_b = session.offer_from("a", sdp(AUDIO, bad))
    assert section(to_b, 1) == ["m=image 0 udptl t38"]
    assert len(session.streams) == 1
    session.abandon_offer()
    # Alone: 488 with the reason.
    with pytest.raises(SdpError, match=reason):
        session.offer_from("a", sdp(bad))


def test_t38_attribute_checks() -> None:
    good = sdp(T38).media[0]
    assert is_udptl_t38(good)
    assert t38_problem_untrusted(good) is None
    twice = sdp("m=image 1 udptl t38\na=T38FaxVersion:0\na=T38FaxVersion:1\n").media[0]
    assert t38_problem_untrusted(twice) == "a=T38FaxVersion given twice"
    many = "m=image 1 udptl t38\n" + "".join(f"a=T38X{i}\n" for i in range(33))
    assert t38_problem_untrusted(sdp(many).media[0]) == "more than 32 T.38 attributes"
    assert not is_udptl_t38(sdp("m=image 1 udptl jpeg\n").media[0])
    assert not is_udptl_t38(sdp("m=audio 1 udptl t38\n").media[0])


class RtpOnlyRelay:
    """A relay without an opaque mode (``Relay.carries_opaque`` False: neither of ours)."""

    def __init__(self, relay: MediaRelay) -> None:
        self._relay = relay
        self.allocator = relay.allocator
        self.carries_opaque = False
        self.counters_pushed = False  # Relay.counters_pushed: its streams' counters are of now

    def open_stream(self) -> MediaStream:
        return self._relay.open_stream()

    def session_closed(self) -> None:
        pass


def test_relay_without_opaque_mode_refuses_t38_saying_why(
    relay: MediaRelay, caplog: pytest.LogCaptureFixture
):
    session = MediaSession(RtpOnlyRelay(relay), media_address=MEDIA_ADDRESS)
    try:
        with caplog.at_level(logging.INFO, logger="gateway.core.media.session"):
            to_b = session.offer_from("a", sdp(AUDIO, T38))
        assert section(to_b, 1) == ["m=image 0 udptl t38"]
        assert "no opaque (T.38 datagram) mode" in caplog.text and "T.38" in caplog.text
        session.abandon_offer()
        with pytest.raises(SdpError, match=r"no opaque \(T\.38 datagram\) mode"):
            session.offer_from("a", sdp(T38))
    finally:
        session.close()


# -- each leg's policy -------------------------------------------------------------------------


def leg(policy: str, *, side: str = "a") -> LegSecurity:
    return LegSecurity(
        side=side,
        policy=BUILTIN_POLICIES[policy],
        secure_signalling=True,
        key_exchanges={"sdes": SdesKeyExchange(random_bytes=os.urandom)},
        signalling="tls",
    )


def test_policy_requiring_encryption_refuses_t38_from_its_peer_with_port_0(
    caplog: pytest.LogCaptureFixture,
):
    security = leg("encrypted-only")
    secure_audio = security.make_offer(sdp(AUDIO))  # an SRTP offer from a phone, in effect
    srtp_line = "\n".join(lines(secure_audio)[5:])
    with caplog.at_level(logging.INFO, logger="gateway.core.media.security"):
        plain = leg("encrypted-only").take_offer(sdp(srtp_line, T38))
    assert plain.media[1].port == 0 and plain.media[1].proto == "udptl"
    assert plain.media[0].port != 0
    assert "T.38" in caplog.text and "encrypted-only" in caplog.text


def test_policy_requiring_encryption_refuses_a_t38_only_offer_with_488():
    with pytest.raises(MediaSecurityRefused, match=r"T\.38 fax"):
        leg("encrypted-only").take_offer(sdp(T38))
    with pytest.raises(MediaSecurityRefused, match=r"T\.38 fax"):
        leg("sdes", side="b").make_offer(sdp("m=audio 0 RTP/AVP 0\n", T38))


def test_policy_requiring_encryption_offers_t38_with_port_0_beside_audio():
    offered = leg("sdes", side="b").make_offer(sdp(AUDIO, T38))
    assert offered.media[0].proto == "RTP/SAVP" and offered.media[0].port == 20000
    assert offered.media[1].port == 0


def test_record_says_the_fax_was_not_encrypted_for_the_rest_of_the_call():
    security = leg("best-effort")
    answer = security.take_offer(sdp(T38))
    assert answer.media[0].port == 20002
    security.make_answer(sdp(ANSWER_T38))
    record = security.record()
    assert record["fax_t38"] == "passed through, not encrypted"
    assert record["streams"] == [
        {
            "media": "t38",
            "key_exchange": "none",
            "suite": None,
            "encrypted": False,
            "keys_held_by": None,
        }
    ]
    security.take_offer(sdp(AUDIO, version=2))
    security.make_answer(sdp(ANSWER_AUDIO, version=2))
    record = security.record()
    assert record["streams"][0]["key_exchange"] != "none" or "media" not in record["streams"][0]
    assert record["fax_t38"] == "passed through, not encrypted"


def test_plain_words_report_names_the_unencrypted_fax():
    from gateway.core.cli import describe_leg

    fax = {"media": "t38", "key_exchange": "none", "encrypted": False}
    line = describe_leg({"signalling": "tls", "streams": [fax], "fax_t38": "x"})
    assert line == "signalling TLS; media fax (T.38 UDPTL), NOT encrypted"
    after = describe_leg({"signalling": "udp", "streams": [{"encrypted": False}], "fax_t38": "x"})
    assert after.endswith("; its fax (T.38) was passed through NOT encrypted")
    refused = dict(fax, refused="policy sdes requires encrypted media")
    assert "fax (T.38) refused: policy sdes" in describe_leg({"streams": [refused]})


def test_media_workers_say_they_have_an_opaque_mode() -> None:
    from gateway.core.media.remote_relay import WorkerPool

    pool = WorkerPool(ADDRESS, PortRange(22200, 22299), 2)  # not started: no process, no port
    assert pool.carries_opaque is True
    assert pool.for_call().carries_opaque is True
