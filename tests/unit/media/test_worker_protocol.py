"""The media worker control channel's codec (gateway/core/media/worker_protocol.py): every message
round-trips through a frame, frames split anywhere reassemble, and malformed frames end in a
ChannelError that names the problem without quoting key material. Each message type's bytes are
pinned to the protocol version (a layout change without a bump of PROTOCOL_VERSION fails), and
the worker's Hello is checked both ways (an older and a newer worker)."""

from __future__ import annotations

import struct

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.config import PortRange
from gateway.core.interfaces import SrtpKeys
from gateway.core.media import worker
from gateway.core.media.keying import StreamKeys
from gateway.core.media.relay import DirectionStatistics
from gateway.core.media.remote_relay import WorkerPool
from gateway.core.media.srtp import SrtpStatistics
from gateway.core.media.worker_protocol import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    RECEIVER_EVENT_NOT_TOLD,
    ChannelError,
    Close,
    Datagram,
    DtmfEvent,
    FrameReader,
    Hello,
    LatchPeer,
    Message,
    Open,
    PairsReady,
    Ping,
    PlayTone,
    Pong,
    ProtocolMismatch,
    Rtcp,
    SendDatagram,
    SendDtmf,
    SendStats,
    SetBlocked,
    SetDtls,
    SetDtmf,
    SetIce,
    SetKeys,
    SetOpaque,
    SetPayloadTypes,
    SetReceiverEvent,
    SetRedPayloadTypes,
    SetRemote,
    SetRtcpWatch,
    SetTap,
    SetTranscoding,
    Stats,
    StreamFailed,
    Tables,
    Tapped,
    TappedDatagram,
    check_hello,
    encode,
    parse_message_untrusted,
)

KEY = bytes(range(30))
OTHER_KEY = bytes(range(100, 130))
CM_KEYS = SrtpKeys("AES_CM_128_HMAC_SHA1_80", KEY, OTHER_KEY)
GCM_KEYS = SrtpKeys("AEAD_AES_256_GCM", KEY + KEY[:14], OTHER_KEY + KEY[:14])
MKI_KEYS = SrtpKeys("AES_CM_128_HMAC_SHA1_80", KEY, OTHER_KEY, b"\x01", bytes(3) + b"\x07")
REMOTE_MKI_KEYS = SrtpKeys("AES_CM_128_HMAC_SHA1_80", KEY, OTHER_KEY, None, bytes(128))


def direction(seed: int) -> DirectionStatistics:
    count = len(attrs.fields(DirectionStatistics))
    return DirectionStatistics(*(seed * 1000 + i for i in range(count)))


def srtp(seed: int) -> SrtpStatistics:
    return SrtpStatistics(*(seed + i for i in range(len(attrs.fields(SrtpStatistics)))))


EVERY_MESSAGE: list[Message] = [
    Hello(1),
    Hello(2**32 - 1),
    Open(1, 30000, 30002),
    SetRemote(2, "a", ("192.0.2.10", 4000), ("192.0.2.10", 4007), False),
    SetRemote(2, "b", None, None, True),
    SetRemote(2, "b", ("2001:db8::1", 65535), None, True),
    SetBlocked(3, "b_to_a", True),
    SetKeys(4, False, CM_KEYS, None, False, None, False, None),
    SetKeys(4, True, None, GCM_KEYS, False, None, True, None),
    SetKeys(4, False, CM_KEYS, GCM_KEYS, True, CM_KEYS, True, GCM_KEYS),
    SetKeys(4, False, MKI_KEYS, REMOTE_MKI_KEYS, False, None, False, None),  # RFC 3711 §3.1
    SetDtls(5, "a", False, True),
    SetDtls(5, "b", True, False),
    SetDtls(5, "a", True, True, True),  # sdp_address_only
    SetDtls(5, "b", False, True, False, True),  # proves_peer
    SetDtls(5, "a", False, True, False, False, True),  # handshake_per_source
    SendDatagram(6, "b", True, b"\x16\xfe\xfd" + bytes(200)),
    SendDatagram(6, "a", False, b"\x16\xfe\xfd" + bytes(20), copy_to_sdp_address=False),
    SendDatagram(6, "b", False, b"\x16", False, ("2001:db8::1", 65535)),  # to one source
    LatchPeer(6, "a", False, ("192.0.2.10", 4000)),
    LatchPeer(6, "b", True, ("2001:db8::1", 65535)),
    LatchPeer(6, "a", False, ("::1", 5004, 0, 0)),
    LatchPeer(6, "a", False, ("::1", 5004, 0xFFFF_FFFF, 0xFFFF_FFFF)),  # flow info, scope id
    Close(2**32 - 1),
    Close(1, final_counters=True),
    SendStats(2**32 - 1),
    Ping(17),
    Pong(17),
    PairsReady((30000, 30002, 30004)),
    PairsReady(()),
    Datagram(7, "a", False, ("127.0.0.1", 5004), b"\x16" * 65535),
    Datagram(7, "b", True, None, b"\x00\x01"),
    Datagram(7, "a", True, ("::1", 5004, 0, 3), b"\x10"),  # scope id 3
    Stats(8, 0.25, direction(1), direction(2), srtp(3), None),
    Stats(8, 0.0, direction(0), direction(0), None, srtp(9)),
    StreamFailed(9, "unknown SRTP suite 'ROT13'"),
    SetTap(10, True),
    SetTap(10, False),
    Tapped(11, "a_to_b", b"\x80\x00" + bytes(170)),
    Tapped(11, "b_to_a", b""),
    SetRtcpWatch(14, "a_to_b", True),
    SetRtcpWatch(14, "b_to_a", False),
    Rtcp(14, "b_to_a", b"\x81\xc9\x00\x07" + bytes(28)),
    SetOpaque(12, True),
    SetOpaque(12, False),
    # A UDPTL datagram whose first octet looks like RTP version 2 (T.38 Annex D seq 0x80xx).
    TappedDatagram(13, "a_to_b", ("192.0.2.7", 4002), b"\x80\x01" + bytes(300)),
    TappedDatagram(13, "b_to_a", ("2001:db8::7", 1), b"\x00"),
    TappedDatagram(13, "b_to_a", None, bytes(2048)),
    SetIce(
        14, "a", False, True, "gw01", "gatewaypassword0123456789", "peer", "peerpassword0123456789"
    ),
    SetIce(14, "b", True, True, "gw01", "gatewaypassword0123456789", "", ""),
    SetIce(14, "b", True, False, "", "", "", ""),
    SetPayloadTypes(15, "a_to_b", ((101, 96), (0, 8))),
    SetPayloadTypes(15, "b_to_a", ()),
    SetPayloadTypes(15, "b_to_a", tuple((pt, 127 - pt) for pt in range(128))),
    SetRedPayloadTypes(15, "a_to_b", (63,)),
    SetRedPayloadTypes(15, "b_to_a", ()),
    SetRedPayloadTypes(15, "b_to_a", tuple(range(128))),
    SetDtmf(16, "a_to_b", 101, -1, 8000, 0),
    SetDtmf(16, "b_to_a", -1, 96, 48000, 2**32 - 1),
    SetDtmf(16, "b_to_a", -1, -1, 0, 0),
    SetDtmf(16, "a_to_b", 101, -1, 8000, 7, (63, 121)),
    SendDtmf(16, "b_to_a", True, True, b"\x05\x0a\x01\x90"),
    SendDtmf(16, "a_to_b", False, False, b""),
    DtmfEvent(16, "a_to_b", b"\x80\xe5" + bytes(14)),
    SetTranscoding(17, "a_to_b", "PCMU", 0, 8),
    SetTranscoding(17, "b_to_a", "PCMA", 8, 0),
    SetTranscoding(17, "b_to_a", "", -1, -1),
    SetReceiverEvent(18, "a_to_b", 101, 8000),
    SetReceiverEvent(18, "b_to_a", -1, 0),
    SetReceiverEvent(18, "b_to_a", RECEIVER_EVENT_NOT_TOLD, 0),
    PlayTone(19, "a_to_b", "us", "PCMU", 0),
    PlayTone(19, "b_to_a", "uk", "PCMA", 96),
    PlayTone(19, "a_to_b", "", "", -1),
    PlayTone(19, "b_to_a", "fr", "G722", 9),
    PlayTone(19, "a_to_b", "eu", "G729", 18),
    PlayTone(19, "b_to_a", "us", "opus", 111),
    PlayTone(19, "a_to_b", "uk", "AMR", 96),
    PlayTone(19, "b_to_a", "fr", "AMR octet-aligned", 97),
    PlayTone(19, "a_to_b", "eu", "AMR-WB", 98),
    PlayTone(19, "b_to_a", "us", "AMR-WB octet-aligned", 99),
    PlayTone(19, "a_to_b", "eu", "GSM", 3),
    Tables((("media_streams", 0), ("python_allocated_blocks", 2**64 - 1))),
    Tables(()),
]


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Message) -> None:
    frame = encode(message)
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert parse_message_untrusted(frame[4:]) == message
    assert FrameReader().feed(frame) == [message]


def test_every_message_type_is_covered() -> None:
    assert {type(m) for m in EVERY_MESSAGE} == set(Message.__args__)  # type: ignore[attr-defined]


@given(st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=40))
def test_frames_split_anywhere_reassemble_in_order(cuts: list[int]) -> None:
    data = b"".join(encode(m) for m in EVERY_MESSAGE)
    reader = FrameReader()
    received: list[Message] = []
    offset = 0
    for cut in cuts * 1000:
        if offset >= len(data):
            break
        received += reader.feed(data[offset : offset + cut * 97])
        offset += cut * 97
    received += reader.feed(data[offset:])
    assert received == EVERY_MESSAGE
    assert reader.pending == 0


@given(
    stream=st.integers(min_value=0, max_value=2**32 - 1),
    side=st.sampled_from(["a", "b"]),
    host=st.ip_addresses().map(str),
    port=st.integers(min_value=0, max_value=65535),
    mux=st.booleans(),
    packet=st.binary(max_size=2000),
)
def test_round_trip_property(
    stream: int, side: str, host: str, port: int, mux: bool, packet: bytes
) -> None:
    for message in (
        SetRemote(stream, side, (host, port), None, mux),
        Datagram(stream, side, mux, (host, port), packet),
        SendDatagram(stream, side, mux, packet),
        SendDatagram(stream, side, mux, packet, copy_to_sdp_address=mux),
        TappedDatagram(stream, "a_to_b" if mux else "b_to_a", (host, port), packet),
        SetOpaque(stream, mux),
    ):
        assert parse_message_untrusted(encode(message)[4:]) == message


def test_keys_never_appear_in_reprs() -> None:
    message = SetKeys(4, False, CM_KEYS, None, True, CM_KEYS, False, None)
    text = repr(message) + str(message)
    assert KEY.hex() not in text and repr(KEY) not in text
    assert "redacted" in text
    assert "200 octets" in repr(SendDatagram(1, "a", False, bytes(200)))
    ice = SetIce(
        1, "a", False, True, "gw01", "gatewaysecret0123456789", "peer", "peersecret012345678901"
    )
    assert "secret" not in repr(ice) and "gw01" in repr(ice)
    keys = StreamKeys(CM_KEYS, GCM_KEYS, False, True, CM_KEYS)
    assert KEY.hex() not in repr(keys) and repr(KEY) not in repr(keys)


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (b"", "empty frame"),
        (b"\xff", "unknown message type 255"),
        (b"\x07\x00\x00", "truncated frame"),  # Close needs a 4-octet stream id
        (b"\x07\x00\x00\x00\x01\x00\x00", "1 octets after the last field"),
        (b"\x03\x00\x00\x00\x01\x02\x01", "value 2 is not one of a_to_b, b_to_a"),
        (b"\x05\x00\x00\x00\x01\x00\x00\x02", "boolean field holds 2"),
        (b"\x17\x00\x00\x00\x01\x00\x02\xff\xfe", "string field is not UTF-8"),
        (b"\x06\x00\x00\x00\x01\x00\x00\xff\xff\xff\xff", "truncated frame"),  # 4 GiB
        (b"\x14\x00\x03\x75\x30", "truncated frame"),  # 3 ports announced, 1 sent
        (b"\x0a\x00\x00\x00\x01\x02", "boolean field holds 2"),  # SetOpaque
        (b"\x0a\x00\x00\x00\x01", "truncated frame"),  # SetOpaque without its flag
        (b"\x0a\x00\x00\x00\x01\x01\x00", "1 octets after the last field"),
        (b"\x1a\x00\x00\x00\x01\x02\x00", "value 2 is not one of a_to_b, b_to_a"),
        (b"\x1a\x00\x00\x00\x01\x00\x02", "boolean field holds 2"),  # source present?
        (b"\x1a\x00\x00\x00\x01\x00\x01\x00\x03abc", "truncated frame"),  # no port
        (b"\x1a\x00\x00\x00\x01\x00\x00\x00\x00\x00\x09\x80", "truncated frame"),
        (b"\x0d\x00\x00\x00\x01\x00\x01\x65\x80", "payload type over 127"),  # 101 -> 128
        (b"\x0d\x00\x00\x00\x01\x01\x02\x65\x60", "truncated frame"),  # 2 pairs, 1 sent
        (b"\x10\x00\x00\x00\x01\x00\x02\x3f\x80", "payload type over 127"),  # RED 63, 128
        (b"\x10\x00\x00\x00\x01\x00\x02\x3f", "truncated frame"),  # 2 RED types, 1 sent
        (b"\x1f\x00\x02\x00\x01a" + bytes(8), "truncated frame"),  # 2 tables, 1 sent
        (b"\x1f\x00\x01\x00\x01a" + bytes(7), "truncated frame"),  # a 7-octet count
    ],
)
def test_malformed_frames_are_clear_errors(frame: bytes, problem: str) -> None:
    with pytest.raises(ChannelError) as caught:
        parse_message_untrusted(frame)
    assert str(caught.value) == problem


def test_a_truncated_key_is_an_error_that_quotes_no_key() -> None:
    frame = encode(SetKeys(4, False, CM_KEYS, None, False, None, False, None))
    with pytest.raises(ChannelError) as caught:
        parse_message_untrusted(frame[4:-10])
    assert str(caught.value) == "truncated frame"


def test_an_oversized_frame_is_refused_before_it_is_buffered() -> None:
    reader = FrameReader()
    with pytest.raises(ChannelError, match=f"over the {MAX_FRAME} limit"):
        reader.feed(struct.pack(">I", MAX_FRAME + 1) + b"\x07")


def test_a_partial_frame_waits_for_the_rest() -> None:
    frame = encode(Open(1, 30000, 30002))
    reader = FrameReader()
    assert reader.feed(frame[:6]) == []
    assert reader.pending == 6
    assert reader.feed(frame[6:] + frame[:2]) == [Open(1, 30000, 30002)]
    assert reader.pending == 2


def test_values_that_do_not_fit_their_field_are_our_bug() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode(Open(1, 70000, 30002))
    with pytest.raises(ValueError, match="over"):
        encode(SendDatagram(1, "a", False, bytes(MAX_FRAME)))


# -- the protocol version ------------------------------------------------------------------------

LAYOUT_VERSION = 18
"""The PROTOCOL_VERSION whose layouts FRAMES below are. A change to any message's layout fails
test_each_message_type_has_the_layout_of_its_protocol_version: then bump PROTOCOL_VERSION in
worker_protocol.py, and this number with the new frames (never new frames under an old number:
a worker of the old version cannot read them, and the version is how the two find out)."""


def counters(first: int, count: int) -> str:
    return "".join(f"{n:016x}" for n in range(first, first + count))


KEYS_WITH_MKI = SrtpKeys(
    "AES_CM_128_HMAC_SHA1_80", bytes(range(1, 31)), bytes(range(31, 61)), b"\x01"
)

# One frame per message type, every field set away from its default: length u32, type u8,
# fields (spaces between them only for the reader).
FRAMES: list[tuple[Message, str]] = [
    (Hello(1), "00000005 00 00000001"),
    (Open(1, 30000, 30002), "00000009 01 00000001 7530 7532"),
    (
        SetRemote(2, "b", ("192.0.2.10", 4000), None, True),
        "00000017 02 00000002 01 01 000a 3139322e302e322e3130 0fa0 00 01",
    ),
    (SetBlocked(3, "b_to_a", True), "00000007 03 00000003 01 01"),
    (
        SetKeys(4, True, KEYS_WITH_MKI, None, True, None, False, None),
        "00000072 04 00000004 01"
        " 01 0017 4145535f434d5f3132385f484d41435f534841315f3830"
        " 0000001e 0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e"
        " 0000001e 1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c"
        " 00000001 01 00000000"
        " 00 01 00 00 00",
    ),
    (
        SetDtls(5, "b", True, True, True, True, True, True),
        "0000000c 05 00000005 01 01 01 01 01 01 01",
    ),
    (
        SetIce(6, "a", True, True, "gw01", "pw", "ph", "pp"),
        "0000001a 0b 00000006 00 01 01 0004 67773031 0002 7077 0002 7068 0002 7070",
    ),
    (
        SendDatagram(7, "b", True, b"\x16\xfe\xfd", False, ("::1", 5004, 0, 7)),
        "00000020 06 00000007 01 01 00000003 16fefd 00 01 0003 3a3a31 138c 02 00000000 00000007",
    ),
    (
        LatchPeer(18, "b", True, ("::1", 5004, 0, 7)),
        "00000018 12 00000012 01 01 01 0003 3a3a31 138c 02 00000000 00000007",
    ),
    (SendStats(19), "00000005 13 00000013"),
    (Close(8, final_counters=True), "00000006 07 00000008 01"),
    (Ping(9), "00000005 08 00000009"),
    (SetTap(10, True), "00000006 09 0000000a 01"),
    (SetOpaque(11, True), "00000006 0a 0000000b 01"),
    (SetRtcpWatch(12, "b_to_a", True), "00000007 0c 0000000c 01 01"),
    (SetPayloadTypes(13, "b_to_a", ((101, 96), (0, 8))), "0000000b 0d 0000000d 01 02 6560 0008"),
    (SetRedPayloadTypes(14, "b_to_a", (63, 121)), "00000009 10 0000000e 01 02 3f79"),
    (
        SetDtmf(15, "b_to_a", 101, -1, 8000, 0x01020304, (63,), True),
        "00000015 0e 0000000f 01 0065 ffff 00001f40 01020304 01 3f 01",
    ),
    (
        SendDtmf(16, "b_to_a", True, False, b"\x05\x0a\x01\x90"),
        "00000010 0f 00000010 01 01 00 00000004 050a0190",
    ),
    (SetTranscoding(17, "b_to_a", "PCMA", 8, 0), "0000000b 11 00000011 01 02 0008 0000"),
    (SetReceiverEvent(29, "b_to_a", 101, 8000), "0000000c 1d 0000001d 01 0065 00001f40"),
    (PlayTone(30, "a_to_b", "us", "GSM", 3), "0000000a 1e 0000001e 00 01 0a 0003"),
    (PairsReady((30000, 30002)), "00000007 14 0002 7530 7532"),
    (
        Datagram(21, "b", True, ("127.0.0.1", 5004), b"\x16\xfe\xff"),
        "0000001d 15 00000015 01 01 01 0009 3132372e302e302e31 138c 00 00000003 16feff",
    ),
    (
        Stats(
            22,
            0.25,
            DirectionStatistics(*range(1, 22)),
            DirectionStatistics(*range(22, 43)),
            None,
            SrtpStatistics(*range(1, 8)),
        ),
        f"00000197 16 00000016 3fd0000000000000 {counters(1, 21)} {counters(22, 21)}"
        f" 00 01 {counters(1, 7)}",
    ),
    (StreamFailed(23, "no"), "00000009 17 00000017 0002 6e6f"),
    (Pong(24), "00000005 18 00000018"),
    (Tapped(25, "b_to_a", b"\x80\x00"), "0000000c 19 00000019 01 00000002 8000"),
    (
        TappedDatagram(26, "b_to_a", ("2001:db8::7", 1), b"\x00\x01"),
        "0000001c 1a 0000001a 01 01 000b 323030313a6462383a3a37 0001 00000002 0001",
    ),
    (Rtcp(27, "b_to_a", b"\x81\xc9"), "0000000c 1b 0000001b 01 00000002 81c9"),
    (DtmfEvent(28, "b_to_a", b"\x80\xe5"), "0000000c 1c 0000001c 01 00000002 80e5"),
    (
        Tables((("trio_tasks", 9), ("media_streams", 2**40))),
        "0000002e 1f 0002 000a 7472696f5f7461736b73 0000000000000009"
        " 000d 6d656469615f73747265616d73 0000010000000000",
    ),
]


def test_each_message_type_has_the_layout_of_its_protocol_version() -> None:
    assert PROTOCOL_VERSION == LAYOUT_VERSION, (
        "PROTOCOL_VERSION changed: put this version's frames in FRAMES and set LAYOUT_VERSION"
    )
    assert [type(m) for m, _ in FRAMES] == list(dict.fromkeys(type(m) for m, _ in FRAMES))
    assert {type(m) for m, _ in FRAMES} == set(Message.__args__), (  # type: ignore[attr-defined]
        "a message type was added or removed: bump PROTOCOL_VERSION in worker_protocol.py"
    )
    for message, frame in FRAMES:
        expected = bytes.fromhex(frame.replace(" ", ""))
        assert encode(message) == expected, (
            f"{type(message).__name__}'s layout changed: bump PROTOCOL_VERSION in "
            "worker_protocol.py (and LAYOUT_VERSION and FRAMES here)"
        )
        assert parse_message_untrusted(expected[4:]) == message


@pytest.mark.parametrize("version", [0, 1, 2, 0x01020304])
def test_the_hello_is_the_same_in_every_version(version: int) -> None:
    """Type 0 and the version as u32, whatever PROTOCOL_VERSION is: how two versions find out
    that they differ. Never change it."""
    frame = b"\x00\x00\x00\x05\x00" + version.to_bytes(4, "big")
    assert encode(Hello(version)) == frame
    assert FrameReader().feed(frame) == [Hello(version)]


def test_a_worker_of_this_version_is_taken() -> None:
    check_hello(Hello(PROTOCOL_VERSION), PROTOCOL_VERSION)
    check_hello(Hello(7), 7)


@pytest.mark.parametrize(
    ("first", "ours", "problem"),
    [
        # the package upgraded under a running SIP process: its restarted worker is newer
        (Hello(2), 1, "the media worker speaks protocol version 2, this process 1"),
        # downgraded under it: older
        (Hello(1), 2, "the media worker speaks protocol version 1, this process 2"),
        (
            # No Hello: not a worker from before versions (that one refuses the unknown
            # --protocol-version and sends nothing), so its version is not known.
            PairsReady((30000,)),
            1,
            "the media worker speaks protocol version unknown (its first message is no Hello "
            "this process can read), this process 1",
        ),
    ],
)
def test_a_worker_of_another_version_is_a_mismatch_that_names_both(
    first: Message, ours: int, problem: str
) -> None:
    with pytest.raises(ProtocolMismatch) as caught:
        check_hello(first, ours)
    assert str(caught.value) == problem
    assert caught.value.ours == ours
    assert caught.value.theirs == (first.version if isinstance(first, Hello) else None)


# The worker's command line is the other half of what two releases share: an old SIP process
# starts a worker of the installed release with it. An option a worker requires that the SIP
# process does not pass (or one it passes that the worker does not know) is argparse's usage
# error and exit 2 before the worker can name its version: the crash loop the version prevents.
WORKER_OPTIONS = {
    # option: required by the worker
    "--fd": True,
    "--protocol-version": True,
    "--index": False,
    "--address": True,
    "--ports": True,
    "--log-level": False,
    "--stats-interval": False,
    "--ringback-tone": False,
    "--plugin-exception-text": False,
}
"""The worker's options in protocol version LAYOUT_VERSION."""


def test_the_worker_command_line_is_that_of_its_protocol_version() -> None:
    assert PROTOCOL_VERSION == LAYOUT_VERSION
    options = {
        action.option_strings[-1]: action.required
        for action in worker._parser()._actions
        if action.option_strings and action.dest != "help"
    }
    assert options == WORKER_OPTIONS, (
        "the worker's command line changed: bump PROTOCOL_VERSION in worker_protocol.py (and "
        "LAYOUT_VERSION, FRAMES and WORKER_OPTIONS here)"
    )
    pool = WorkerPool("127.0.0.1", PortRange(40000, 40019), 2, plugin_exception_text=True)
    command = pool._command(pool._workers[0], 7)
    assert command[1:3] == ["-m", "gateway.core.media.worker"]
    passed = [word for word in command[3:] if word.startswith("--")]
    assert passed == list(WORKER_OPTIONS), (
        "the SIP process passes its workers other options: bump PROTOCOL_VERSION in "
        "worker_protocol.py (and LAYOUT_VERSION, FRAMES and WORKER_OPTIONS here)"
    )
    assert worker._parser().parse_args(command[3:]).protocol_version == PROTOCOL_VERSION


@pytest.mark.parametrize("plan", ["us", "fr", "none"])
def test_each_worker_is_told_the_ringing_tone_plan_to_make_frames_for(plan: str) -> None:
    pool = WorkerPool("127.0.0.1", PortRange(40000, 40019), 2, ringback_tone=plan)
    for slot in pool._workers:
        command = pool._command(slot, 7)
        assert worker._parser().parse_args(command[3:]).ringback_tone == plan


def test_a_worker_refuses_a_ringing_tone_plan_it_does_not_know(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pool = WorkerPool("127.0.0.1", PortRange(40000, 40019), 2, ringback_tone="xx")
    with pytest.raises(SystemExit):
        worker._parser().parse_args(pool._command(pool._workers[0], 7)[3:])
    assert "--ringback-tone: invalid choice: 'xx'" in capsys.readouterr().err
