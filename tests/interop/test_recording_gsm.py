"""A GSM call recorded by ``voipgw run`` (the ``recorder`` tap, libgsm decoding), with sipp as
both peers. The calling trunk (sipp on 127.0.0.2) offers GSM only (RFC 3551 payload type 3)
and replays a pcap (``play_pcap_audio``) that this test writes: RTP packets of a tone that
libgsm's encoder made, one 33-octet frame per 20 ms packet (RFC 3551 §4.5.8), timestamps
advancing 160 per packet. alice (a sipp UAS) answers with GSM
(tests/interop/recorded_trunk_call.py). The caller's file must be an 8 kHz WAV holding exactly
what libgsm decodes of the octets sent, and its tone must be the one encoded. Before session 63
the recorder counted GSM as another codec and wrote nothing.
"""

from __future__ import annotations

import math
import re
import wave
from pathlib import Path

import pytest

from gateway.core.media import gsm
from tests.conftest import missing
from tests.interop.harness import analyse_tone
from tests.interop.recorded_trunk_call import record_a_trunk_call, rtp_packets

pytestmark = pytest.mark.interop

TONE = 425.0
PACKETS = 50  # 1 s
GSM = "m=audio [media_port] RTP/AVP 3\n      a=rtpmap:3 GSM/8000"


def test_a_gsm_call_is_recorded_as_8_khz_audio(tmp_path: Path) -> None:
    libgsm = gsm.load_libgsm()
    if libgsm is None:
        missing("libgsm is not installed (apt-get install libgsm1)")
    signal = [round(12000 * math.sin(2 * math.pi * TONE * n / 8000)) for n in range(8000)]
    payloads = gsm.GsmEncoder(libgsm).encode_frames(signal)
    assert len(payloads) == PACKETS and {len(p) for p in payloads} == {33}
    path, log = record_a_trunk_call(tmp_path, GSM, rtp_packets(3, payloads, 0x6A3D))

    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        written = wav.readframes(wav.getnframes())
    decoder = gsm.GsmDecoder(libgsm)
    assert written == b"".join(decoder.decode(payload) for payload in payloads)
    heard = analyse_tone(path)
    assert heard.dominant_frequency == pytest.approx(TONE, abs=5)
    assert heard.power_share > 0.9
    assert "recorder: GSM decoded by libgsm" in log
    assert re.search(
        r"recording of call \S+: .*\(50 packets; 0 dropped, 0 late, 0 malformed\)", log
    )
    assert "not written, other codecs" not in log
    assert "Traceback" not in log
