"""AMR's RTP payload format (gateway/core/media/amr.py, RFC 4867): the two packings of one
speech frame laid out bit by bit as the RFC's figures lay them out, back to the storage frame
opencore-amr reads, and which receivers' fmtp the tone can be packed for."""

from __future__ import annotations

import pytest

from gateway.core.media import amr
from tests.conftest import missing


def storage_frame(mode: int, speech_bits: str) -> bytes:
    """A storage frame (RFC 4867 §5.3) of ``mode`` holding ``speech_bits`` ("0"/"1", d(0)
    first): the header (0, FT, Q = 1, 0, 0), then the bits padded with zeros to an octet."""
    assert len(speech_bits) == amr.SPEECH_BITS[mode]
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
    payload = amr.bandwidth_efficient_payload(storage_frame(4, speech))
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
    payload = amr.octet_aligned_payload(storage_frame(4, speech))
    assert len(payload) == 1 + 1 + 19
    bits = bits_of(payload)
    assert bits[:8] == "1111" + "0000"
    assert bits[8:16] == "0" + "0100" + "1" + "00"
    assert bits[16:164] == speech
    assert bits[164:] == "0000"


@pytest.mark.parametrize("mode", range(8))
@pytest.mark.parametrize("octet_aligned", [False, True], ids=["bandwidth-efficient", "octet"])
def test_every_mode_packs_and_unpacks_to_the_same_storage_frame(
    mode: int, octet_aligned: bool
) -> None:
    frame = storage_frame(mode, pattern(amr.SPEECH_BITS[mode]))
    pack = amr.octet_aligned_payload if octet_aligned else amr.bandwidth_efficient_payload
    payload = pack(frame)
    bits = amr.SPEECH_BITS[mode]
    assert len(payload) == ((16 + bits + 7) // 8 if octet_aligned else (10 + bits + 7) // 8)
    assert amr.storage_frame(payload, octet_aligned=octet_aligned) == frame


def test_a_payload_the_gateway_does_not_make_is_refused_by_name() -> None:
    frame = storage_frame(7, pattern(244))
    efficient = amr.bandwidth_efficient_payload(frame)
    aligned = amr.octet_aligned_payload(frame)
    with pytest.raises(amr.AmrError, match="octets for one frame of mode 7"):
        amr.storage_frame(efficient[:-1], octet_aligned=False)
    with pytest.raises(amr.AmrError, match="speech octets for mode 7"):
        amr.storage_frame(aligned + b"\0", octet_aligned=True)
    # F = 1: another frame follows (§4.3.2): not one frame a packet.
    with pytest.raises(amr.AmrError, match="more than one frame"):
        amr.storage_frame(bytes((efficient[0] | 0x08,)) + efficient[1:], octet_aligned=False)
    with pytest.raises(amr.AmrError, match="more than one frame"):
        followed = aligned[:1] + bytes((aligned[1] | 0x80,)) + aligned[2:]
        amr.storage_frame(followed, octet_aligned=True)
    # FT = 8, a SID frame (comfort noise), and FT = 15, no data: no speech to pack.
    with pytest.raises(amr.AmrError, match="frame type 8 is no speech frame"):
        amr.bandwidth_efficient_payload(bytes((8 << 3 | amr.QUALITY_BIT,)) + bytes(5))
    with pytest.raises(amr.AmrError, match="frame type 15 is no speech frame"):
        amr.storage_frame(b"\xf0\x7c", octet_aligned=True)
    with pytest.raises(amr.AmrError, match="an AMR payload of 1 octets"):
        amr.storage_frame(b"\xf0", octet_aligned=True)


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
    assert amr.tone_packing(fmtp) == packing


def test_the_encoder_makes_storage_frames_of_its_mode_that_the_decoder_takes() -> None:
    amrnb = amr.load_amrnb()
    if amrnb is None:
        missing("opencore-amr is not installed (apt-get install libopencore-amrnb0)")
    encoder = amr.AmrEncoder(amrnb, 7)
    frames = encoder.encode([0] * 2 * amr.FRAME_SAMPLES)
    assert [len(frame) for frame in frames] == [32, 32]
    assert {frame[0] for frame in frames} == {7 << 3 | amr.QUALITY_BIT}
    pcm = amr.AmrDecoder(amrnb).decode(frames[0])
    assert len(pcm) == 2 * amr.FRAME_SAMPLES
    with pytest.raises(ValueError, match="not a whole number of 20 ms frames"):
        encoder.encode([0] * 100)
    with pytest.raises(ValueError, match="AMR mode 8 is not one of 0-7"):
        amr.AmrEncoder(amrnb, 8)
    # A frame shorter than its mode says would make the library read past it.
    with pytest.raises(amr.AmrError, match="31 octets is not one of mode 7"):
        amr.AmrDecoder(amrnb).decode(frames[0][:-1])
