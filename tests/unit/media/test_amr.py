"""AMR's and AMR-WB's RTP payload format (gateway/core/media/amr.py, RFC 4867): the two
packings of one speech frame laid out bit by bit as the RFC's figures lay them out, back to the
storage frame the libraries read, and which receivers' fmtp the tone can be packed for."""

from __future__ import annotations

import pytest

from gateway.core.media import amr
from tests.conftest import missing

CODECS = pytest.mark.parametrize("codec", [amr.AMR, amr.AMR_WB], ids=["amr", "amr-wb"])


def storage_frame(codec: amr.AmrCodec, mode: int, speech_bits: str) -> bytes:
    """A storage frame (RFC 4867 §5.3) of ``mode`` holding ``speech_bits`` ("0"/"1", d(0)
    first): the header (0, FT, Q = 1, 0, 0), then the bits padded with zeros to an octet."""
    assert len(speech_bits) == codec.speech_bits[mode]
    padded = speech_bits + "0" * (-len(speech_bits) % 8)
    return bytes((mode << 3 | amr.QUALITY_BIT,)) + int(padded, 2).to_bytes(len(padded) // 8, "big")


def bits_of(payload: bytes) -> str:
    return "".join(f"{octet:08b}" for octet in payload)


def pattern(count: int) -> str:
    """Speech bits whose every position is told apart: d(k) = 1 where k % 3 == 0 or k % 7 == 1."""
    return "".join("1" if k % 3 == 0 or k % 7 == 1 else "0" for k in range(count))


def test_a_bandwidth_efficient_payload_is_laid_out_as_rfc_4867_s_figure() -> None:
    # §4.3.5.1's example: one 7.4 kbit/s frame (FT = 4, 148 bits), no mode requested (CMR =
    # 15), Q = 1; "two zero bits are added to the end as padding": 4 + 6 + 148 + 2 = 160 bits.
    speech = pattern(148)
    payload = amr.bandwidth_efficient_payload(amr.AMR, storage_frame(amr.AMR, 4, speech))
    assert len(payload) == 20
    bits = bits_of(payload)
    assert bits[:4] == "1111"  # CMR = 15
    assert bits[4:10] == "0" + "0100" + "1"  # F = 0 (the last frame), FT = 4, Q = 1
    assert bits[10:158] == speech  # d(0) .. d(147), straight after the table of contents
    assert bits[158:] == "00"


def test_an_octet_aligned_payload_is_laid_out_as_rfc_4867_s_figure() -> None:
    # §4.4.5.1: the CMR and four reserved zero bits in the first octet, then the table of
    # contents entry in one octet (F, FT, Q, two padding bits), then the speech bits from an
    # octet's start, padded with zeros to an octet (148 bits: 19 octets, 4 padding bits).
    speech = pattern(148)
    payload = amr.octet_aligned_payload(storage_frame(amr.AMR, 4, speech))
    assert len(payload) == 1 + 1 + 19
    bits = bits_of(payload)
    assert bits[:8] == "1111" + "0000"
    assert bits[8:16] == "0" + "0100" + "1" + "00"
    assert bits[16:164] == speech
    assert bits[164:] == "0000"


@CODECS
@pytest.mark.parametrize("octet_aligned", [False, True], ids=["bandwidth-efficient", "octet"])
def test_every_mode_packs_and_unpacks_to_the_same_storage_frame(
    codec: amr.AmrCodec, octet_aligned: bool
) -> None:
    # RFC 4867 §3.6: AMR's 8 modes, AMR-WB's 9, each with its own number of bits.
    assert len(codec.speech_bits) == (8 if codec is amr.AMR else 9)
    for mode, bits in enumerate(codec.speech_bits):
        frame = storage_frame(codec, mode, pattern(bits))
        if octet_aligned:
            payload = amr.octet_aligned_payload(frame)
            assert len(payload) == 2 + (bits + 7) // 8
        else:
            payload = amr.bandwidth_efficient_payload(codec, frame)
            assert len(payload) == (10 + bits + 7) // 8
        assert amr.storage_frame(codec, payload, octet_aligned=octet_aligned) == frame


def test_a_payload_the_gateway_does_not_make_is_refused_by_name() -> None:
    frame = storage_frame(amr.AMR, 7, pattern(244))
    efficient = amr.bandwidth_efficient_payload(amr.AMR, frame)
    aligned = amr.octet_aligned_payload(frame)
    with pytest.raises(amr.AmrError, match="31 octets are no bandwidth-efficient AMR payload"):
        amr.storage_frame(amr.AMR, efficient[:-1], octet_aligned=False)
    with pytest.raises(amr.AmrError, match="34 octets are no octet-aligned AMR payload"):
        amr.storage_frame(amr.AMR, aligned + b"\0", octet_aligned=True)
    # F = 1: another frame follows (§4.3.2, §4.4.2): not one frame a packet.
    speech = pattern(244)
    two = "1111" + "1" + "0111" + "1" + "0" + "0111" + "1" + speech + speech
    with pytest.raises(amr.AmrError, match="2 frames in the payload, not one"):
        amr.storage_frame(amr.AMR, bits_to_payload(two), octet_aligned=False)
    followed = aligned[:1] + bytes((aligned[1] | 0x80, aligned[1])) + aligned[2:] + aligned[2:]
    with pytest.raises(amr.AmrError, match="2 frames in the payload, not one"):
        amr.storage_frame(amr.AMR, followed, octet_aligned=True)
    # FT = 8, AMR's SID frame (comfort noise) but AMR-WB's 23.85 kbit/s, and FT = 15, no
    # data: no speech to pack.
    with pytest.raises(amr.AmrError, match="frame type 8 is no AMR speech frame"):
        amr.bandwidth_efficient_payload(amr.AMR, bytes((8 << 3 | amr.QUALITY_BIT,)) + bytes(5))
    wideband = storage_frame(amr.AMR_WB, 8, pattern(477))
    assert len(amr.bandwidth_efficient_payload(amr.AMR_WB, wideband)) == 61  # 4 + 6 + 477 bits
    with pytest.raises(amr.AmrError, match="frame type 9 is no AMR-WB speech frame"):
        amr.bandwidth_efficient_payload(amr.AMR_WB, bytes((9 << 3 | amr.QUALITY_BIT,)) + bytes(5))
    with pytest.raises(amr.AmrError, match="frame type 15 is no AMR speech frame"):
        amr.storage_frame(amr.AMR, b"\xf0\x7c", octet_aligned=True)
    with pytest.raises(amr.AmrError, match="1 octets are no octet-aligned AMR-WB payload"):
        amr.storage_frame(amr.AMR_WB, b"\xf0", octet_aligned=True)


@pytest.mark.parametrize(
    ("fmtp", "packing"),
    [
        (None, "bandwidth-efficient"),  # §8.1: every parameter at its default
        ("", "bandwidth-efficient"),
        ("octet-align=0", "bandwidth-efficient"),
        ("octet-align=1", "octet-aligned"),
        ("Octet-Align=1;Mode-Set=7", "octet-aligned"),
        ("mode-set=0,2,4,7; mode-change-period=2; max-red=0", "bandwidth-efficient"),
        ("mode-set=0,2,4", None),  # 12.2 kbit/s not among the modes it takes
        ("octet-align=1; crc=1", None),
        ("octet-align=1; robust-sorting=1", None),
        ("octet-align=1; interleaving=4", None),
        ("mode-set=7a", None),
        ("octet-align=true", None),
    ],
)
def test_the_tone_is_packed_as_the_receivers_fmtp_asks_or_not_sent(
    fmtp: str | None, packing: str | None
) -> None:
    assert amr.tone_packing(amr.AMR, fmtp) == packing


def test_a_wideband_tone_needs_12_65_kbit_s_in_the_mode_set() -> None:
    # AMR-WB's tone is mode 2 (GSMA IR.92's VoLTE mode-set is 0,1,2); AMR's mode 7.
    assert amr.tone_packing(amr.AMR_WB, "mode-set=0,1,2") == "bandwidth-efficient"
    assert amr.tone_packing(amr.AMR_WB, "mode-set=0,1,2; octet-align=1") == "octet-aligned"
    assert amr.tone_packing(amr.AMR_WB, "mode-set=7,8") is None
    assert amr.tone_packing(amr.AMR, "mode-set=0,1,2") is None


@CODECS
def test_the_encoder_makes_storage_frames_of_its_mode_that_the_decoder_takes(
    codec: amr.AmrCodec,
) -> None:
    encoder_library, decoder_library = amr.load_encoder(codec), amr.load_decoder(codec)
    if encoder_library is None or decoder_library is None:
        missing(f"{codec.name}'s encoder or decoder is not installed (libopencore-amrnb0, ...)")
    encoder = amr.AmrEncoder(encoder_library)
    assert encoder.mode == codec.tone_mode
    frames = encoder.encode([0] * 2 * codec.frame_samples)
    octets = 32 if codec is amr.AMR else 33  # 244 or 253 bits and the header
    assert [len(frame) for frame in frames] == [octets, octets]
    assert {frame[0] for frame in frames} == {codec.tone_mode << 3 | amr.QUALITY_BIT}
    pcm = amr.AmrDecoder(decoder_library).decode(frames[0])
    assert len(pcm) == 2 * codec.frame_samples
    with pytest.raises(ValueError, match="not a whole number of 20 ms frames"):
        encoder.encode([0] * 100)
    last = len(codec.speech_bits)
    with pytest.raises(ValueError, match=f"{codec.name} mode {last} is not one of 0-{last - 1}"):
        amr.AmrEncoder(encoder_library, last)
    # A frame shorter than its mode says would make the library read past it.
    with pytest.raises(amr.AmrError, match=f"a storage frame of {octets - 1} octets"):
        amr.AmrDecoder(decoder_library).decode(frames[0][:-1])
    with pytest.raises(amr.AmrError, match="frame type 12"):
        amr.AmrDecoder(decoder_library).decode(bytes((12 << 3,)))  # reserved
    # SID (comfort noise) and NO_DATA (nothing sent) decode to a frame of samples too.
    sid_type = len(codec.speech_bits)
    decoder = amr.AmrDecoder(decoder_library)
    decoder.decode(frames[0])
    sid = bytes((sid_type << 3 | amr.QUALITY_BIT,)) + bytes((codec.sid_bits + 7) // 8)
    assert len(decoder.decode(sid)) == 2 * codec.frame_samples
    assert len(decoder.decode(bytes((amr.NO_DATA << 3,)))) == 2 * codec.frame_samples
    decoder.reset()
    assert decoder.decode(frames[0]) == amr.AmrDecoder(decoder_library).decode(frames[0])


def bits_to_payload(bits: str) -> bytes:
    padded = bits + "0" * (-len(bits) % 8)
    return int(padded or "0", 2).to_bytes(len(padded) // 8, "big")


def test_a_bandwidth_efficient_payload_of_several_frames_is_read_frame_by_frame() -> None:
    # RFC 4867 §4.3.5.2's layout: a CMR, then every table of contents entry (F = 1 but for the
    # last), then the frames' bits one after another. Here 12.2 kbit/s speech, SID (8) and
    # NO_DATA (15), a CMR asking for mode 5 (ignored: the recorder encodes nothing).
    speech, sid = pattern(244), pattern(39)
    bits = "0101" + "1" + "0111" + "1" + "1" + "1000" + "1" + "0" + "1111" + "0" + speech + sid
    frames = amr.frames_untrusted(amr.AMR, bits_to_payload(bits), octet_aligned=False)
    assert frames == [
        storage_frame(amr.AMR, 7, speech),
        bytes((8 << 3 | amr.QUALITY_BIT,)) + int(sid + "0", 2).to_bytes(5, "big"),
        bytes((amr.NO_DATA << 3,)),  # Q = 0 kept
    ]


def test_an_octet_aligned_payload_of_several_frames_is_read_frame_by_frame() -> None:
    # §4.4.5.2: each table of contents entry in an octet, each frame from an octet's start.
    wide = pattern(253)
    toc = ["1" + "0010" + "1" + "00", "0" + "1111" + "1" + "00"]
    octets = "1111" + "0000" + "".join(toc) + wide + "000"
    frames = amr.frames_untrusted(amr.AMR_WB, bits_to_payload(octets), octet_aligned=True)
    assert frames == [storage_frame(amr.AMR_WB, 2, wide), bytes((amr.NO_DATA << 3 | 4,))]


@CODECS
@pytest.mark.parametrize("octet_aligned", [False, True], ids=["bandwidth-efficient", "octet"])
def test_what_the_gateway_packs_is_read_back(codec: amr.AmrCodec, octet_aligned: bool) -> None:
    for mode, bits in enumerate(codec.speech_bits):
        frame = storage_frame(codec, mode, pattern(bits))
        if octet_aligned:
            payload = amr.octet_aligned_payload(frame)
        else:
            payload = amr.bandwidth_efficient_payload(codec, frame)
        assert amr.frames_untrusted(codec, payload, octet_aligned=octet_aligned) == [frame]


@pytest.mark.parametrize(
    ("bits", "octet_aligned", "why"),
    [
        ("1111" + "0" + "1100" + "1", False, "a reserved frame type (12)"),
        ("1111" + "0" + "0111" + "1" + "1" * 100, False, "fewer bits than 12.2 kbit/s has"),
        ("1111" + ("1" + "0000" + "1") * 17, False, "no last entry within 16"),
        ("1111", False, "no table of contents"),
        ("11110000" + "0" + "0111" + "1" + "00" + "1" * 244 + "0000" + "1" * 8, True, "more"),
        ("1111" + "0" + "0111" + "1" + "1" * 244 + "000000" + "0" * 8, False, "an octet more"),
        ("", True, "nothing"),
    ],
)
def test_a_payload_that_is_none_gives_none(bits: str, octet_aligned: bool, why: str) -> None:
    payload = bits_to_payload(bits)
    assert amr.frames_untrusted(amr.AMR, payload, octet_aligned=octet_aligned) is None, why


@pytest.mark.parametrize(
    ("fmtp", "packing"),
    [
        (None, "bandwidth-efficient"),
        ("octet-align=1; mode-set=0,1,2", "octet-aligned"),  # any modes: it is read, not made
        ("octet-align=1; crc=1", None),
        ("robust-sorting=1; octet-align=1", None),
        ("interleaving=2; octet-align=1", None),
        ("octet-align=2", None),
    ],
)
def test_what_a_session_packs_is_read_from_its_fmtp(fmtp: str | None, packing: str | None) -> None:
    assert amr.payload_packing(fmtp) == packing
