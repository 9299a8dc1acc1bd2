"""MediaSession: the SDP each leg sees and the relay remotes behind it (no packets here).

A real MediaRelay binds its port pairs on 127.0.0.1 in RANGE (a block of this process,
tests/port_blocks.py), but nothing is served: these tests read the rewritten SDP text and the
relay sides' destinations. Leg SDPs are the peer samples of tests/unit/sdp/sdp_samples.py or
written out here in the same shapes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from gateway.core.config import PortRange
from gateway.core.media.errors import LocalMediaError, PortsExhausted
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import MediaRelay, MediaStream
from gateway.core.media.session import (
    EncryptedMediaNotSupported,
    MediaSession,
    Side,
    is_leg_specific,
)
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import (
    Attribute,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
)
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from tests.port_blocks import ModuleBlock
from tests.unit.sdp.sdp_samples import (
    ALL_SAMPLES,
    BARESIP_DTLS,
    BARESIP_PLAIN,
    BARESIP_SDES,
    IPV6,
    LINPHONE_SRTP,
    MULTICAST_SCHEDULE,
    RTPENGINE_SRTP_OFFER,
    SDES_KEY_80,
    SIPP_UAC,
    UNKNOWN_ATTRIBUTES,
    WEBRTC_ICE_PWD,
    WEBRTC_OFFER,
    crlf,
)

ADDRESS = "127.0.0.1"
MEDIA_ADDRESS = "203.0.113.5"
RANGE = ModuleBlock(200, parse=PortRange.parse)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sdp(text: str) -> SessionDescription:
    return parse_sdp_untrusted(crlf(text))


def text(sd: SessionDescription) -> str:
    return serialize_sdp(sd).decode()


def lines(sd: SessionDescription) -> list[str]:
    return text(sd).splitlines()


def offer(
    *media: str, origin: str = "- 1 1 IN IP4 127.0.0.1", connection: str = "127.0.0.1"
) -> SessionDescription:
    """A phone's SDP: session c= ``connection`` and the given media sections."""
    head = f"v=0\no={origin}\ns=-\nc=IN IP4 {connection}\nt=0 0\n"
    return sdp(head + "".join(m.strip("\n") + "\n" for m in media))


AUDIO = "m=audio 20000 RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n"
VIDEO = "m=video 20010 RTP/AVP 96\na=rtpmap:96 H264/90000\na=fmtp:96 profile-level-id=42e01f\n"
ANSWER_AUDIO = "m=audio 30000 RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\n"
ANSWER_VIDEO = "m=video 30010 RTP/AVP 96\na=rtpmap:96 H264/90000\n"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def relay(clock: FakeClock) -> Iterator[MediaRelay]:
    relay = MediaRelay(PortAllocator(ADDRESS, RANGE.get()), clock=clock)
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


def ports(stream: MediaStream, side: str) -> tuple[int, int]:
    pair = (stream.a if side == "a" else stream.b).ports
    return pair.rtp_port, pair.rtcp_port


def only_stream(session: MediaSession) -> MediaStream:
    (stream,) = session.streams
    return stream


def sent(session: MediaSession, side: Side) -> SessionDescription:
    """What the session last sent on ``side``'s leg (there must be something)."""
    found = session.last_sent(side)
    assert found is not None
    return found


def media_lines(sd: SessionDescription) -> list[str]:
    return [line for line in lines(sd) if line.startswith("m=")]


# -- the first offer and answer -----------------------------------------------------------------


def test_offer_to_b_rewrites_baresip_offer(session: MediaSession):
    to_b = session.offer_to_b(sdp(BARESIP_PLAIN))
    stream = only_stream(session)
    b_rtp, b_rtcp = ports(stream, "b")
    assert (
        text(to_b)
        == crlf(f"""
v=0
o=voipgw 1000 1000 IN IP4 {MEDIA_ADDRESS}
s=-
c=IN IP4 {MEDIA_ADDRESS}
t=0 0
a=tool:baresip 1.0.0
m=audio {b_rtp} RTP/AVP 0 8 96 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=rtcp-rsize
a=ssrc:3104204325 cname:sip:a@127.0.0.1:5381
a=minptime:20
a=ptime:20
a=rtcp:{b_rtcp}
""").decode()
    )
    # Side A points at baresip (RTCP on RTP port + 1, RFC 3605 §2.1); B is not known yet.
    assert stream.a.rtp_destination == ("127.0.0.1", 20102)
    assert stream.a.rtcp_destination == ("127.0.0.1", 20103)
    assert not stream.a.rtcp_mux
    assert stream.b.rtp_destination is None
    assert stream.b.rtcp_destination is None
    assert session.offerer == "a"


def test_answer_from_b_rewrites_sipp_answer(session: MediaSession):
    session.offer_to_b(sdp(BARESIP_PLAIN))
    to_a = session.answer_from_b(sdp(SIPP_UAC))
    stream = only_stream(session)
    a_rtp, a_rtcp = ports(stream, "a")
    assert (
        text(to_a)
        == crlf(f"""
v=0
o=voipgw 1001 1001 IN IP4 {MEDIA_ADDRESS}
s=-
c=IN IP4 {MEDIA_ADDRESS}
t=0 0
m=audio {a_rtp} RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=sendrecv
a=rtcp:{a_rtcp}
""").decode()
    )
    assert stream.b.rtp_destination == ("127.0.0.1", 6000)
    assert stream.b.rtcp_destination == ("127.0.0.1", 6001)
    assert stream.a.rtp_destination == ("127.0.0.1", 20102)
    assert session.last_sent("a") == to_a
    session.settle()
    assert session.offerer is None
    assert session.streams == (stream,)


def test_each_leg_has_its_own_origin_and_the_peers_session_lines_stay_behind(
    session: MediaSession,
):
    peer = sdp(f"""
v=0
o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1
s=Call to John Smith
i=SDP Offer #1
u=http://www.jdoe.example.com/home.html
e=Jane Doe <jane@jdoe.example.com>
p=+1 617 555-6011
c=IN IP4 198.51.100.1
b=AS:128
t=0 0
r=604800 3600 0 90000
k=clear:{SDES_KEY_80}
a=recvonly
m=audio 20000 RTP/AVP 0 101
i=the audio
b=TIAS:64000
k=prompt
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
""")
    to_b = session.offer_to_b(peer)
    out = text(to_b)
    for gone in ("jdoe", "John", "i=", "u=", "e=", "p=", "r=", "k=", SDES_KEY_80, "198.51.100"):
        assert gone not in out
    assert "b=AS:128" in out and "b=TIAS:64000" in out
    # The session-level direction is written on the m= line.
    out_lines = lines(to_b)
    assert out_lines[out_lines.index(media_lines(to_b)[0]) :] == [
        f"m=audio {ports(only_stream(session), 'b')[0]} RTP/AVP 0 101",
        "b=TIAS:64000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=recvonly",
        f"a=rtcp:{ports(only_stream(session), 'b')[1]}",
    ]
    assert only_stream(session).a.rtp_destination == ("198.51.100.1", 20000)


def test_unknown_attributes_and_media_level_connection(session: MediaSession):
    to_b = session.offer_to_b(sdp(UNKNOWN_ATTRIBUTES))
    out = lines(to_b)
    kept = ["a=X-nat:0", "a=silenceSupp:off - - - -", "a=x-custom-thing", "a=fmtp:18 annexb=no"]
    for line in [*kept, "a=X-cdsc: 1 audio RTP/AVP 0 18"]:
        assert line in out
    assert not any("192.0.2.44" in line for line in out)
    assert only_stream(session).a.rtp_destination == ("192.0.2.44", 17044)


# -- attributes that must not cross -------------------------------------------------------------

LEAKY_AUDIO = f"""
m=audio 20000 RTP/AVP 0 101
c=IN IP4 127.0.0.1
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ice-ufrag:8hhY
a=ice-pwd:{WEBRTC_ICE_PWD}
a=ice-options:trickle
a=candidate:1 1 UDP 2130706431 127.0.0.1 20000 typ host
a=remote-candidates:1 127.0.0.9 9999
a=end-of-candidates
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{SDES_KEY_80}
a=fingerprint:sha-256 06:29:84:32
a=setup:actpass
a=tls-id:8d2a6a0d8e1ed2e3
a=zrtp-hash:1.10 fe30efd02423cb054e50efd0248742ac7a52c8f91bc2df881ae642c371ba46df
a=key-mgmt:mikey AQAFgM0XflABAAAAAAAAAAAAAAsAyO
a=connection:new
a=rtcp-mux-only
a=rtcp-mux
a=mid:audio
a=ptime:30
a=maxptime:60
a=sendrecv
"""


def test_transport_and_key_attributes_are_removed_everything_else_kept(session: MediaSession):
    leaky = sdp(
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nt=0 0\na=ice-lite\na=group:BUNDLE audio\n"
        "a=group:LS audio\na=fingerprint:sha-256 AA:BB\na=setup:passive\n" + LEAKY_AUDIO.lstrip()
    )
    to_b = session.offer_to_b(leaky)
    b_rtp, _ = ports(only_stream(session), "b")
    assert lines(to_b)[4:] == [
        "t=0 0",
        "a=group:LS audio",
        f"m=audio {b_rtp} RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=mid:audio",
        "a=ptime:30",
        "a=maxptime:60",
        "a=sendrecv",
        "a=rtcp-mux",
    ]
    wire = serialize_sdp(to_b)
    for secret in (WEBRTC_ICE_PWD, SDES_KEY_80, "mikey", "zrtp", "8d2a6a0d"):
        assert secret.encode() not in wire


@pytest.mark.parametrize(
    ("attribute", "leg_specific"),
    [
        (Attribute("ICE-PWD", "x"), True),
        (Attribute("ice-lite"), True),
        (Attribute("Crypto", "1 x"), True),
        (Attribute("group", "BUNDLE 0 1"), True),
        (Attribute("group", "LS 0 1"), False),
        (Attribute("group"), False),
        (Attribute("rtcp", "9"), True),
        (Attribute("rtpmap", "0 PCMU/8000"), False),
        (Attribute("icecream"), False),
        (Attribute("sendonly"), False),
    ],
)
def test_is_leg_specific(attribute: Attribute, leg_specific: bool):
    assert is_leg_specific(attribute) is leg_specific


@pytest.mark.parametrize("name", sorted(ALL_SAMPLES))
def test_every_sample_is_refused_or_relayed_without_leg_specific_attributes(
    session: MediaSession, name: str
):
    try:
        to_b = session.offer_to_b(sdp(ALL_SAMPLES[name]))
    except SdpError as exc:
        assert exc.sip_status == 488
        assert session.streams == ()
        return
    again = parse_sdp_untrusted(serialize_sdp(to_b))
    for section in (again.attributes, *(m.attributes for m in again.media)):
        assert not [a for a in section if is_leg_specific(a) and a.name not in ("rtcp", "rtcp-mux")]
    assert again.origin.username == "voipgw"
    assert again.connection == Connection.for_address(MEDIA_ADDRESS)


# -- RTCP: RFC 3605 and RFC 5761 -----------------------------------------------------------------


def test_rtcp_attribute_with_and_without_address(session: MediaSession):
    session.offer_to_b(
        offer(
            AUDIO + "a=rtcp:53021 IN IP4 127.0.0.2\n",
            VIDEO + "a=rtcp:53031\n",
        )
    )
    audio, video = session.streams
    assert audio.a.rtcp_destination == ("127.0.0.2", 53021)
    assert video.a.rtcp_destination == ("127.0.0.1", 53031)
    assert video.a.rtp_destination == ("127.0.0.1", 20010)


def test_rtcp_mux_offered_and_declined_by_b(session: MediaSession):
    to_b = session.offer_to_b(offer(AUDIO + "a=rtcp-mux\na=rtcp:20000\n"))
    stream = only_stream(session)
    assert "a=rtcp-mux" in lines(to_b)
    assert not any(line.startswith("a=rtcp:") for line in lines(to_b))
    assert stream.a.rtcp_mux
    assert stream.a.rtcp_destination == ("127.0.0.1", 20000)

    to_a = session.answer_from_b(offer(ANSWER_AUDIO, connection="127.0.0.3"))
    # Leg A muxes (it offered, we accept, RFC 5761 §5.1.1); leg B does not: the relay bridges.
    assert "a=rtcp-mux" in lines(to_a)
    assert not any(line.startswith("a=rtcp:") for line in lines(to_a))
    assert not stream.b.rtcp_mux
    assert stream.b.rtcp_destination == ("127.0.0.3", 30001)


def test_rtcp_mux_accepted_by_b(session: MediaSession):
    session.offer_to_b(offer(AUDIO + "a=rtcp-mux\n"))
    session.answer_from_b(offer(ANSWER_AUDIO + "a=rtcp-mux\n"))
    stream = only_stream(session)
    assert stream.b.rtcp_mux
    assert stream.b.rtcp_destination == ("127.0.0.1", 30000)


def test_rtcp_mux_a_legs_security_offered_is_taken_from_the_answer(session: MediaSession):
    """A browser's leg: its LegSecurity adds a=rtcp-mux to our offer (offers_rtcp_mux), and
    the browser's answer keeps it: leg B's side muxes although the session's offer did not;
    leg A, which did not offer it, gets none (RFC 5761 §5.1.1)."""
    session.offer_to_b(offer(AUDIO))
    to_a = session.answer_from("b", offer(ANSWER_AUDIO + "a=rtcp-mux\n"), rtcp_mux_offered=True)
    stream = only_stream(session)
    assert stream.b.rtcp_mux
    assert stream.b.rtcp_destination == ("127.0.0.1", 30000)
    assert not stream.a.rtcp_mux
    assert "a=rtcp-mux" not in lines(to_a)


def test_rtcp_mux_answered_without_being_offered_is_ignored(session: MediaSession):
    session.offer_to_b(offer(AUDIO))
    to_a = session.answer_from_b(offer(ANSWER_AUDIO + "a=rtcp-mux\n"))
    stream = only_stream(session)
    assert not stream.b.rtcp_mux
    assert stream.b.rtcp_destination == ("127.0.0.1", 30001)
    assert "a=rtcp-mux" not in lines(to_a)
    assert f"a=rtcp:{ports(stream, 'a')[1]}" in lines(to_a)


# -- what cannot be relayed ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "proto"),
    [
        (BARESIP_SDES, "RTP/SAVP"),
        (LINPHONE_SRTP, "RTP/SAVP"),
        (RTPENGINE_SRTP_OFFER, "RTP/SAVP"),
        (BARESIP_DTLS, "UDP/TLS/RTP/SAVPF"),
        (WEBRTC_OFFER, "UDP/TLS/RTP/SAVPF"),
    ],
)
def test_srtp_only_offer_is_refused_with_488(
    session: MediaSession, relay: MediaRelay, sample: str, proto: str
):
    with pytest.raises(EncryptedMediaNotSupported) as info:
        session.offer_to_b(sdp(sample))
    assert info.value.sip_status == 488
    assert isinstance(info.value, SdpError)
    assert info.value.reason == f"encrypted media ({proto}) is not supported on this leg yet"
    assert relay.allocator.in_use == 0
    assert session.offerer is None
    # Nothing was recorded: the next offer is the leg's first SDP.
    session.offer_to_b(sdp(SIPP_UAC))
    assert sent(session, "b").origin.session_version == 1000


def test_srtp_reason_is_the_brief_text_for_rtp_savp(session: MediaSession):
    with pytest.raises(EncryptedMediaNotSupported) as info:
        session.offer_to_b(sdp(BARESIP_SDES))
    assert str(info.value) == "encrypted media (RTP/SAVP) is not supported on this leg yet"


def test_srtp_stream_beside_a_plain_one_is_offered_with_port_0(session: MediaSession):
    srtp = f"m=audio 20004 RTP/SAVP 0\na=rtpmap:0 PCMU/8000\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{SDES_KEY_80}\n"  # noqa: E501
    to_b = session.offer_to_b(offer(srtp, AUDIO))
    stream = only_stream(session)
    assert session.stream_at(0) is None
    assert session.stream_at(1) is stream
    assert media_lines(to_b) == [
        "m=audio 0 RTP/SAVP 0",
        f"m=audio {ports(stream, 'b')[0]} RTP/AVP 0 101",
    ]
    assert SDES_KEY_80 not in text(to_b)
    to_a = session.answer_from_b(offer("m=audio 0 RTP/SAVP 0\n", ANSWER_AUDIO))
    assert media_lines(to_a) == [
        "m=audio 0 RTP/SAVP 0",
        f"m=audio {ports(stream, 'a')[0]} RTP/AVP 0 101",
    ]


def test_t38_over_tcp_beside_audio_is_offered_with_port_0_and_alone_is_refused(
    session: MediaSession, relay: MediaRelay
):
    # T.38 over UDPTL is passed through (test_t38_session.py); over TCP it is not relayed.
    t38 = "m=image 20020 TCP t38\na=T38FaxVersion:0\n"
    to_b = session.offer_to_b(offer(AUDIO, t38))
    assert media_lines(to_b)[1] == "m=image 0 TCP t38"
    assert len(session.streams) == 1
    session.abandon_offer()
    with pytest.raises(SdpError, match="no media stream the gateway can relay"):
        session.offer_to_b(offer(t38))
    assert relay.allocator.in_use == 0


def test_multicast_is_not_relayed(session: MediaSession):
    with pytest.raises(SdpError, match="no media stream the gateway can relay"):
        session.offer_to_b(sdp(MULTICAST_SCHEDULE))


@pytest.mark.parametrize(
    ("connection", "match"),
    [
        ("IN IP4 pbx.example.com", "not an IP address"),
        ("IN IP6 2001:db8::10", "IPv6 media address, the relay serves IPv4"),
        ("ATM NSAP 47.0091.8100.0000.0060.3e64.fd01.0060.3e64.fd01.00", "not an Internet address"),
    ],
)
def test_unroutable_connection_is_refused(
    session: MediaSession, relay: MediaRelay, connection: str, match: str
):
    bad = sdp(f"v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc={connection}\nt=0 0\n{AUDIO}")
    with pytest.raises(SdpError, match=match):
        session.offer_to_b(bad)
    assert relay.allocator.in_use == 0


def test_ipv6_sample_on_an_ipv4_relay_is_refused(session: MediaSession):
    with pytest.raises(SdpError, match="IPv6 media address"):
        session.offer_to_b(sdp(IPV6))


def test_missing_connection_is_refused(session: MediaSession, relay: MediaRelay):
    # The parser refuses this already; a description built in code must not slip through either.
    bad = SessionDescription(
        origin=Origin("-", 1, 1, "IN", "IP4", "127.0.0.1"),
        media=(MediaDescription("audio", 20000, "RTP/AVP", ("0",)),),
    )
    with pytest.raises(SdpError, match=r"m= line 1: no c= line"):
        session.offer_to_b(bad)
    assert relay.allocator.in_use == 0


@pytest.mark.parametrize(
    ("rtcp", "match"),
    [
        ("a=rtcp:99999\n", "a=rtcp port is out of range"),
        ("a=rtcp:0\n", "a=rtcp port 0"),
        ("a=rtcp:53021 IN IP4 rtcp.example.com\n", "a=rtcp: media address is not an IP"),
    ],
)
def test_bad_rtcp_attribute_is_refused(session: MediaSession, rtcp: str, match: str):
    with pytest.raises(SdpError, match=match):
        session.offer_to_b(offer(AUDIO + rtcp))


def test_port_0_line_gets_no_stream_and_stays_port_0(session: MediaSession, relay: MediaRelay):
    to_b = session.offer_to_b(offer(AUDIO, "m=video 0 RTP/AVP 96\n"))
    assert len(session.streams) == 1
    assert session.stream_at(1) is None
    assert media_lines(to_b)[1] == "m=video 0 RTP/AVP 96"
    assert relay.allocator.in_use == 2
    to_a = session.answer_from_b(offer(ANSWER_AUDIO, "m=video 0 RTP/AVP 96\n"))
    assert media_lines(to_a)[1] == "m=video 0 RTP/AVP 96"


def test_an_offer_with_only_port_0_lines_is_relayed(session: MediaSession):
    session.offer_to_b(offer(AUDIO))
    session.answer_from_b(offer(ANSWER_AUDIO))
    to_b = session.offer_to_b(offer("m=audio 0 RTP/AVP 0\n"))
    assert media_lines(to_b) == ["m=audio 0 RTP/AVP 0"]
    assert session.stream_at(0) is not None  # closed when settled


# -- re-offers ----------------------------------------------------------------------------------


def established(session: MediaSession) -> MediaStream:
    session.offer_to_b(offer(AUDIO))
    session.answer_from_b(offer(ANSWER_AUDIO, connection="127.0.0.3"))
    session.settle()
    return only_stream(session)


def test_hold_with_sendonly_passes_through_and_bumps_versions(session: MediaSession):
    stream = established(session)
    first_b, first_a = sent(session, "b"), sent(session, "a")
    to_b = session.offer_to_b(offer(AUDIO + "a=sendonly\n", origin="- 1 2 IN IP4 127.0.0.1"))
    assert to_b.origin == first_b.origin.bumped()
    assert "a=sendonly" in lines(to_b) and "a=sendrecv" not in lines(to_b)
    assert session.streams == (stream,)
    assert media_lines(to_b) == [f"m=audio {ports(stream, 'b')[0]} RTP/AVP 0 101"]
    to_a = session.answer_from_b(offer(ANSWER_AUDIO + "a=recvonly\n", connection="127.0.0.3"))
    assert to_a.origin == first_a.origin.bumped()
    assert "a=recvonly" in lines(to_a)
    assert stream.a.rtp_destination == ("127.0.0.1", 20000)
    assert stream.b.rtp_destination == ("127.0.0.3", 30000)


def test_hold_with_null_address_and_resume_on_new_ports(session: MediaSession):
    stream = established(session)
    version = sent(session, "b").origin.session_version
    to_b = session.offer_to_b(offer(AUDIO, connection="0.0.0.0"))
    assert "c=IN IP4 0.0.0.0" in lines(to_b)  # media level, after the m= line
    assert lines(to_b).index("c=IN IP4 0.0.0.0") > lines(to_b).index(media_lines(to_b)[0])
    assert f"c=IN IP4 {MEDIA_ADDRESS}" in lines(to_b)
    assert stream.a.rtp_destination is None
    assert stream.a.rtcp_destination is None
    assert to_b.origin.session_version == version + 1
    session.answer_from_b(offer(ANSWER_AUDIO, connection="127.0.0.3"))

    to_b = session.offer_to_b(offer(AUDIO.replace("20000", "21000"), connection="127.0.0.4"))
    assert "c=IN IP4 0.0.0.0" not in lines(to_b)
    assert to_b.origin.session_version == version + 2
    assert stream.a.rtp_destination == ("127.0.0.4", 21000)
    assert session.streams == (stream,)
    assert media_lines(to_b) == [f"m=audio {ports(stream, 'b')[0]} RTP/AVP 0 101"]


def test_unchanged_reoffer_keeps_the_version(session: MediaSession):
    established(session)
    before_b, before_a = session.last_sent("b"), session.last_sent("a")
    assert session.offer_to_b(offer(AUDIO)) == before_b
    assert session.answer_from_b(offer(ANSWER_AUDIO, connection="127.0.0.3")) == before_a


def test_reoffer_from_b_goes_to_a_on_the_same_ports(session: MediaSession):
    stream = established(session)
    first_a = sent(session, "a")
    to_a = session.offer_from("b", offer(ANSWER_AUDIO + "a=inactive\n", connection="127.0.0.5"))
    assert session.offerer == "b"
    assert stream.b.rtp_destination == ("127.0.0.5", 30000)
    assert to_a.origin == first_a.origin.bumped()
    assert media_lines(to_a) == [f"m=audio {ports(stream, 'a')[0]} RTP/AVP 0 101"]
    assert "a=inactive" in lines(to_a)
    with pytest.raises(LocalMediaError, match="no offer to side b"):
        session.answer_from("b", offer(AUDIO))
    to_b = session.answer_from("a", offer(AUDIO + "a=inactive\n", connection="127.0.0.6"))
    assert "a=inactive" in lines(to_b)
    assert stream.a.rtp_destination == ("127.0.0.6", 20000)
    assert media_lines(to_b) == [f"m=audio {ports(stream, 'b')[0]} RTP/AVP 0 101"]


def test_reoffer_adding_a_stream_opens_one(session: MediaSession, relay: MediaRelay):
    audio = established(session)
    to_b = session.offer_to_b(offer(AUDIO, VIDEO))
    video = session.stream_at(1)
    assert video is not None and session.streams == (audio, video)
    assert media_lines(to_b)[1] == f"m=video {ports(video, 'b')[0]} RTP/AVP 96"
    assert relay.allocator.in_use == 4


def test_reoffer_with_fewer_lines_is_refused_and_changes_nothing(session: MediaSession):
    session.offer_to_b(offer(AUDIO, VIDEO))
    session.answer_from_b(offer(ANSWER_AUDIO, ANSWER_VIDEO))
    before = session.last_sent("b")
    with pytest.raises(SdpError, match=r"offer has 1 m= lines, the session has 2"):
        session.offer_to_b(offer(AUDIO))
    assert len(session.streams) == 2
    assert session.last_sent("b") == before
    assert session.offerer is None  # the earlier exchange was settled


def test_a_new_dialogs_offer_with_fewer_lines_removes_the_others(session: MediaSession):
    """A transfer target's 2xx offers in a dialog of its own (RFC 3264 §8 counts m= lines
    per dialog): an audio-only phone taking a video call. The other leg is offered the video
    line at port 0 (§8.2), the target's answer has its one line (§6), the video stream
    closes; the target's next re-offer is judged against its own dialog's SDP."""
    session.offer_to_b(offer(AUDIO, VIDEO))
    session.answer_from_b(offer(ANSWER_AUDIO, ANSWER_VIDEO))
    session.settle()
    audio, video = session.streams
    to_a = session.offer_from("b", offer(ANSWER_AUDIO, connection="127.0.0.7"), new_dialog=True)
    assert [(m.media, m.port) for m in to_a.media] == [
        ("audio", ports(audio, "a")[0]),
        ("video", 0),
    ]
    to_target = session.answer_from("a", offer(AUDIO, "m=video 0 RTP/AVP 96\n"))
    assert [(m.media, m.port) for m in to_target.media] == [("audio", ports(audio, "b")[0])]
    session.settle()
    assert session.streams == (audio,)
    assert video.closed
    assert audio.b.rtp_destination == ("127.0.0.7", 30000)
    # The target holds: its one line is its dialog's count.
    to_a = session.offer_from("b", offer(ANSWER_AUDIO + "a=sendonly\n", connection="127.0.0.7"))
    assert [(m.media, m.port) for m in to_a.media] == [
        ("audio", ports(audio, "a")[0]),
        ("video", 0),
    ]
    to_target = session.answer_from("a", offer(AUDIO + "a=recvonly\n", "m=video 0 RTP/AVP 96\n"))
    assert len(to_target.media) == 1
    session.settle()
    # The caller's re-offer carries the removed line to the target at port 0 (§8.1 lets an
    # offer add lines); the target answers it at port 0.
    to_target = session.offer_from("a", offer(AUDIO, "m=video 0 RTP/AVP 96\n"))
    assert [(m.media, m.port) for m in to_target.media] == [
        ("audio", ports(audio, "b")[0]),
        ("video", 0),
    ]
    answer = offer(ANSWER_AUDIO, "m=video 0 RTP/AVP 96\n", connection="127.0.0.7")
    assert len(session.answer_from("b", answer).media) == 2
    session.settle()
    assert session.streams == (audio,)
    # The caller's own leg still may not drop a line (its dialog has two).
    with pytest.raises(SdpError, match=r"offer has 1 m= lines, the session has 2"):
        session.offer_from("a", offer(AUDIO))


def test_both_parties_of_a_video_call_transferred_to_phones_without_video(session: MediaSession):
    """Each side's new party offers one m= line in a dialog of its own: the first transfer
    removes the video line (port 0 to the other leg), the second finds the other leg's dialog
    with one line too and offers it one; the video slot, closed, is on no dialog's line."""
    session.offer_to_b(offer(AUDIO, VIDEO))
    session.answer_from_b(offer(ANSWER_AUDIO, ANSWER_VIDEO))
    session.settle()
    audio, _video = session.streams
    session.offer_from("b", offer(ANSWER_AUDIO, connection="127.0.0.7"), new_dialog=True)
    session.answer_from("a", offer(AUDIO, "m=video 0 RTP/AVP 96\n"))
    session.settle()
    to_b = session.offer_from("a", offer(AUDIO, connection="127.0.0.8"), new_dialog=True)
    assert [(m.media, m.port) for m in to_b.media] == [("audio", ports(audio, "b")[0])]
    to_a = session.answer_from("b", offer(ANSWER_AUDIO, connection="127.0.0.7"))
    assert [(m.media, m.port) for m in to_a.media] == [("audio", ports(audio, "a")[0])]
    session.settle()
    assert session.streams == (audio,)
    assert audio.a.rtp_destination == ("127.0.0.8", 20000)
    # Either party may add video again: a new stream on the second line.
    to_b = session.offer_from("a", offer(AUDIO, VIDEO, connection="127.0.0.8"))
    assert [m.media for m in to_b.media] == ["audio", "video"]
    assert to_b.media[1].port != 0
    assert len(session.streams) == 2


def test_a_new_dialogs_offer_abandoned_leaves_the_call_as_it_was(session: MediaSession):
    session.offer_to_b(offer(AUDIO, VIDEO))
    session.answer_from_b(offer(ANSWER_AUDIO, ANSWER_VIDEO))
    session.settle()
    before = session.last_sent("b")
    session.offer_from("b", offer(ANSWER_AUDIO, connection="127.0.0.7"), new_dialog=True)
    session.abandon_offer()
    assert len(session.streams) == 2
    assert session.last_sent("b") == before
    # The old party's own re-offer is still judged against its two lines.
    with pytest.raises(SdpError, match=r"offer has 1 m= lines, the session has 2"):
        session.offer_from("b", offer(ANSWER_AUDIO))


def test_reoffer_removing_a_stream_closes_it_when_settled(session: MediaSession, relay: MediaRelay):
    session.offer_to_b(offer(AUDIO, VIDEO))
    session.answer_from_b(offer(ANSWER_AUDIO, ANSWER_VIDEO))
    video = session.stream_at(1)
    assert video is not None
    to_b = session.offer_to_b(offer(AUDIO, "m=video 0 RTP/AVP 96\n"))
    assert media_lines(to_b)[1] == "m=video 0 RTP/AVP 96"
    assert video.a.rtp_destination is None  # the offerer said: send nothing there
    with pytest.raises(SdpError, match="accepts a stream the offer removed"):
        session.answer_from_b(offer(ANSWER_AUDIO, ANSWER_VIDEO))
    to_a = session.answer_from_b(offer(ANSWER_AUDIO, "m=video 0 RTP/AVP 96\n"))
    assert media_lines(to_a)[1] == "m=video 0 RTP/AVP 96"
    assert video.b.rtp_destination is None
    session.settle()
    assert video.closed
    assert relay.allocator.in_use == 2
    # RFC 3264 §8.1: a later offer may reuse the slot for a new stream, on new ports.
    to_b = session.offer_to_b(offer(AUDIO, VIDEO))
    again = session.stream_at(1)
    assert again is not None and again is not video
    assert media_lines(to_b)[1] == f"m=video {ports(again, 'b')[0]} RTP/AVP 96"


def test_stream_rejected_by_the_answer(session: MediaSession, relay: MediaRelay):
    session.offer_to_b(offer(AUDIO, VIDEO))
    video = session.stream_at(1)
    assert video is not None
    to_a = session.answer_from_b(offer(ANSWER_AUDIO, "m=video 0 RTP/AVP 96\n"))
    assert media_lines(to_a)[1] == "m=video 0 RTP/AVP 96"
    assert video.a.rtp_destination is None and video.b.rtp_destination is None
    assert not video.closed  # another fork may still accept it
    session.settle()
    assert video.closed
    assert session.stream_at(1) is None
    assert relay.allocator.in_use == 2


# -- early answers, forking, failed offers ------------------------------------------------------


def test_later_answer_for_the_same_offer_wins(session: MediaSession):
    session.offer_to_b(offer(AUDIO, VIDEO))
    audio, video = session.streams
    # 183 from an announcement server: audio only.
    early = session.answer_from_b(
        offer(ANSWER_AUDIO, "m=video 0 RTP/AVP 96\n", connection="127.0.0.7")
    )
    assert media_lines(early)[1] == "m=video 0 RTP/AVP 96"
    assert audio.b.rtp_destination == ("127.0.0.7", 30000)
    assert video.a.rtp_destination is None
    # 200 from the phone: both.
    final = session.answer_from_b(offer(ANSWER_AUDIO, ANSWER_VIDEO, connection="127.0.0.8"))
    assert final.origin == early.origin.bumped()
    assert media_lines(final)[1] == f"m=video {ports(video, 'a')[0]} RTP/AVP 96"
    assert audio.b.rtp_destination == ("127.0.0.8", 30000)
    assert video.b.rtp_destination == ("127.0.0.8", 30010)
    assert video.a.rtp_destination == ("127.0.0.1", 20010)
    session.settle()
    assert session.streams == (audio, video)


def test_same_answer_twice_gives_the_same_sdp(session: MediaSession):
    session.offer_to_b(offer(AUDIO))
    first = session.answer_from_b(offer(ANSWER_AUDIO))
    assert session.answer_from_b(offer(ANSWER_AUDIO)) == first


def test_abandoned_initial_offer_releases_everything(session: MediaSession, relay: MediaRelay):
    session.offer_to_b(offer(AUDIO, VIDEO))
    assert relay.allocator.in_use == 4
    session.abandon_offer()
    assert session.streams == ()
    assert relay.allocator.in_use == 0
    assert session.offerer is None
    session.abandon_offer()  # nothing in progress: harmless


def test_abandoned_reoffer_restores_the_call(session: MediaSession, relay: MediaRelay):
    audio = established(session)
    sent_b = sent(session, "b")
    session.offer_to_b(
        offer(AUDIO.replace("20000", "21000"), VIDEO, connection="127.0.0.9"),
    )
    assert audio.a.rtp_destination == ("127.0.0.9", 21000)
    session.answer_from_b(offer(ANSWER_AUDIO, ANSWER_VIDEO, connection="127.0.0.10"))  # a 183
    assert audio.b.rtp_destination == ("127.0.0.10", 30000)
    session.abandon_offer()  # then the re-INVITE failed
    assert session.streams == (audio,)
    assert relay.allocator.in_use == 2
    assert audio.a.rtp_destination == ("127.0.0.1", 20000)
    assert audio.b.rtp_destination == ("127.0.0.3", 30000)
    # One m= line again is fine, and the failed offer's version was used up.
    to_b = session.offer_to_b(offer(AUDIO + "a=sendonly\n"))
    assert to_b.origin.session_version == sent_b.origin.session_version + 2


def test_calls_in_the_wrong_order(session: MediaSession):
    with pytest.raises(LocalMediaError, match="no offer to side b"):
        session.answer_from_b(offer(ANSWER_AUDIO))
    session.settle()  # nothing in progress: harmless
    session.offer_to_b(offer(AUDIO))
    with pytest.raises(LocalMediaError, match="still waiting for its answer"):
        session.offer_from("b", offer(ANSWER_AUDIO))
    with pytest.raises(LocalMediaError, match="no answer yet"):
        session.settle()
    with pytest.raises(LocalMediaError, match="no offer to side a"):
        session.answer_from("a", offer(ANSWER_AUDIO))
    with pytest.raises(LocalMediaError, match="side must be"):
        session.offer_from("c", offer(AUDIO))  # type: ignore[arg-type]


def test_invalid_answer_changes_nothing(session: MediaSession):
    session.offer_to_b(offer(AUDIO))
    stream = only_stream(session)
    with pytest.raises(SdpError, match="answer has 2 m= lines"):
        session.answer_from_b(offer(ANSWER_AUDIO, ANSWER_VIDEO))
    with pytest.raises(SdpError, match="not an IP address"):
        session.answer_from_b(offer(ANSWER_AUDIO, connection="phone.example.com"))
    assert stream.b.rtp_destination is None
    assert session.last_sent("a") is None
    session.answer_from_b(offer(ANSWER_AUDIO))  # the exchange is still open


def test_new_offer_settles_an_answered_exchange(session: MediaSession, relay: MediaRelay):
    session.offer_to_b(offer(AUDIO, VIDEO))
    video = session.stream_at(1)
    session.answer_from_b(offer(ANSWER_AUDIO, "m=video 0 RTP/AVP 96\n"))
    session.offer_from("b", offer(ANSWER_AUDIO, "m=video 0 RTP/AVP 96\n"))
    assert video is not None and video.closed
    assert relay.allocator.in_use == 2


# -- resources, identity, statistics ------------------------------------------------------------


def test_ports_exhausted_leaves_nothing_allocated(clock: FakeClock):
    relay = MediaRelay(
        PortAllocator(ADDRESS, PortRange(RANGE.get().high - 9, RANGE.get().high - 6)), clock=clock
    )
    try:
        session = MediaSession(relay, media_address=MEDIA_ADDRESS)
        with pytest.raises(PortsExhausted) as info:
            session.offer_to_b(offer(AUDIO, VIDEO))
        assert info.value.sip_status == 503
        assert relay.allocator.in_use == 0
        assert session.streams == ()
        assert session.last_sent("b") is None
        session.offer_to_b(offer(AUDIO))  # one stream fits
        assert relay.allocator.in_use == 2
    finally:
        relay.close()


def test_close_releases_every_stream_and_is_idempotent(session: MediaSession, relay: MediaRelay):
    session.offer_to_b(offer(AUDIO, VIDEO))
    streams = session.streams
    session.close()
    session.close()
    assert session.closed
    assert all(s.closed for s in streams)
    assert relay.allocator.in_use == 0
    with pytest.raises(LocalMediaError, match="closed"):
        session.offer_to_b(offer(AUDIO))


def test_default_session_ids_differ_per_leg(relay: MediaRelay):
    session = MediaSession(relay, media_address=MEDIA_ADDRESS)
    try:
        to_b = session.offer_to_b(offer(AUDIO))
        to_a = session.answer_from_b(offer(ANSWER_AUDIO))
        assert 0 <= to_b.origin.session_id < 2**56
        assert to_b.origin.session_id != to_a.origin.session_id
    finally:
        session.close()


def test_ipv6_media_address_in_c_and_o(relay: MediaRelay):
    session = MediaSession(relay, media_address="2001:db8::5", session_id_source=lambda: 7)
    try:
        to_b = session.offer_to_b(offer(AUDIO))
        assert lines(to_b)[1:4] == [
            "o=voipgw 7 7 IN IP6 2001:db8::5",
            "s=-",
            "c=IN IP6 2001:db8::5",
        ]
    finally:
        session.close()


def test_media_address_must_be_an_ip_literal(relay: MediaRelay):
    with pytest.raises(LocalMediaError, match="not an IP address"):
        MediaSession(relay, media_address="media.example.com")


def test_last_activity_and_statistics(session: MediaSession, clock: FakeClock):
    assert session.last_activity is None
    clock.now = 5.0
    session.offer_to_b(offer(AUDIO))
    clock.now = 9.0
    session.answer_from_b(offer(ANSWER_AUDIO))
    session.offer_to_b(offer(AUDIO, VIDEO))
    assert session.last_activity == 9.0
    session.answer_from_b(offer(ANSWER_AUDIO, "m=video 0 RTP/AVP 96\n"))
    session.settle()  # the video stream (opened at 9.0) is closed
    assert session.last_activity == 9.0
    assert session.statistics() == {
        "streams": 1,
        "a_to_b_packets": 0,
        "a_to_b_bytes": 0,
        "a_to_b_dropped": 0,
        "b_to_a_packets": 0,
        "b_to_a_bytes": 0,
        "b_to_a_dropped": 0,
        "last_activity": 9.0,
    }
    session.close()
    assert session.last_activity == 9.0
    assert session.statistics()["streams"] == 0


def test_repr_names_no_peer_data(session: MediaSession):
    session.offer_to_b(sdp(BARESIP_PLAIN))
    shown = repr(session)
    assert shown == f"<MediaSession {MEDIA_ADDRESS} streams=1 pending_offer=from a>"


def test_drops_counted_outside_the_relay_are_in_the_summary_by_reason(
    session: MediaSession,
) -> None:
    """The call's handshake task drops key-exchange datagrams the relay handed it (kept past
    their bound, still kept when the call ends, nobody's): counted with the relay's drops of
    the peer's direction, by reason, in the summary the record and the metrics read."""
    session.count_dropped("a", "blocked", 3)
    session.count_dropped("b", "malformed")
    summary = session.statistics()
    assert summary["a_to_b_dropped"] == 3 and summary["a_to_b_dropped_blocked"] == 3
    assert summary["b_to_a_dropped"] == 1 and summary["b_to_a_dropped_malformed"] == 1
    assert "a_to_b_dropped_malformed" not in summary
