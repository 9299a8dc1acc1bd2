"""An AMR or AMR-WB call recorded by ``voipgw run`` (the ``recorder`` tap, opencore-amr
decoding), with sipp as both peers. The calling trunk (sipp on 127.0.0.2) offers AMR (or
AMR-WB) alone, packed as its a=fmtp says (RFC 4867 §8.1: bandwidth-efficient by default,
octet-aligned with ``octet-align=1``), and replays a pcap (``play_pcap_audio``) that this test
writes: RTP packets of a tone that opencore-amr's (vo-amrwbenc's) encoder made, one 20 ms frame
a packet, timestamps advancing 160 (320) per packet on the codec's RTP clock (§4.1). alice (a
sipp UAS) answers with the same codec (tests/interop/recorded_trunk_call.py). The caller's file
must be an 8 kHz (16 kHz) WAV holding exactly what opencore-amr decodes of the frames sent, and
its tone must be the one encoded. Before session 62 the recorder counted AMR as another codec
and wrote nothing.
"""

from __future__ import annotations

import math
import re
import wave
from pathlib import Path

import pytest

from gateway.core.media import amr
from tests.conftest import missing
from tests.interop.harness import analyse_tone
from tests.interop.recorded_trunk_call import record_a_trunk_call, rtp_packets

pytestmark = pytest.mark.interop

TONE = 425.0
PACKETS = 50  # 1 s


@pytest.mark.parametrize(
    ("codec", "fmtp", "octet_aligned"),
    [(amr.AMR, "mode-set=7", False), (amr.AMR_WB, "octet-align=1; mode-set=0,1,2", True)],
    ids=["amr-bandwidth-efficient", "amr-wb-octet-aligned"],
)
def test_an_amr_call_is_recorded_at_the_codecs_rate(
    tmp_path: Path, codec: amr.AmrCodec, fmtp: str, octet_aligned: bool
) -> None:
    encoder, decoder = amr.load_encoder(codec), amr.load_decoder(codec)
    if encoder is None or decoder is None:
        missing(f"{codec.name} is not installed (libopencore-amrnb0, libvo-amrwbenc0, ...)")
    rate = codec.sample_rate
    signal = [round(12000 * math.sin(2 * math.pi * TONE * n / rate)) for n in range(rate)]
    frames = amr.AmrEncoder(encoder).encode(signal)
    if octet_aligned:
        payloads = [amr.octet_aligned_payload(frame) for frame in frames]
    else:
        payloads = [amr.bandwidth_efficient_payload(codec, frame) for frame in frames]
    media = (
        f"m=audio [media_port] RTP/AVP 97\n      a=rtpmap:97 {codec.name}/{rate}\n"
        f"      a=fmtp:97 {fmtp}"
    )
    rtp = rtp_packets(97, payloads, 0x7A3B, step=codec.frame_samples)
    path, log = record_a_trunk_call(tmp_path, media, rtp)

    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (rate, 1, 2)
        written = wav.readframes(wav.getnframes())
    decoding = amr.AmrDecoder(decoder)
    assert written == b"".join(decoding.decode(frame) for frame in frames)
    heard = analyse_tone(path)
    assert heard.dominant_frequency == pytest.approx(TONE, abs=5)
    assert heard.power_share > 0.9
    assert f"recorder: {codec.name} decoded by opencore-amr" in log
    assert re.search(
        r"recording of call \S+: .*\(50 packets; 0 dropped, 0 late, 0 malformed\)", log
    )
    assert "not written, other codecs" not in log
    assert "Traceback" not in log
