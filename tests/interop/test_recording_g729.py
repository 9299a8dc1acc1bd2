"""A G.729 call recorded by ``voipgw run`` (the ``recorder`` tap, bcg729 decoding), with sipp as
both peers. The calling trunk (sipp on 127.0.0.2) offers G.729 only (RFC 3551 payload type 18)
and replays a pcap (``play_pcap_audio``) that this test writes: RTP packets of a tone that
bcg729's encoder made, two 10-octet frames per 20 ms packet (RFC 3551 §4.5.6), timestamps
advancing 160 per packet. alice (a sipp UAS) answers with G.729
(tests/interop/recorded_trunk_call.py). The caller's file must be an 8 kHz WAV holding exactly
what bcg729 decodes of the octets sent, and its tone must be the one encoded. Before session 56
the recorder counted G.729 as another codec and wrote nothing.
"""

from __future__ import annotations

import re
import wave
from pathlib import Path

import pytest

from gateway.core.media.g729 import Bcg729Decoder
from tests.interop.harness import analyse_tone
from tests.interop.recorded_trunk_call import record_a_trunk_call, rtp_packets
from tests.unit.taps.bcg729_encoder import bcg729_or_missing, g729_encode, tone

pytestmark = pytest.mark.interop

TONE = 425.0
PACKETS = 50  # 1 s
G729 = "m=audio [media_port] RTP/AVP 18\n      a=rtpmap:18 G729/8000\n      a=fmtp:18 annexb=no"


def test_a_g729_call_is_recorded_as_8_khz_audio(tmp_path: Path) -> None:
    bcg729 = bcg729_or_missing()
    frames = g729_encode(bcg729, tone(TONE, PACKETS * 0.02, amplitude=12000))
    payloads = [frames[i] + frames[i + 1] for i in range(0, len(frames), 2)]
    assert len(payloads) == PACKETS and {len(p) for p in payloads} == {20}
    path, log = record_a_trunk_call(tmp_path, G729, rtp_packets(18, payloads, 0x7290))

    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        written = wav.readframes(wav.getnframes())
    decoder = Bcg729Decoder(bcg729)
    assert written == b"".join(decoder.decode(payload) for payload in payloads)
    heard = analyse_tone(path)
    assert heard.dominant_frequency == pytest.approx(TONE, abs=5)
    assert heard.power_share > 0.9
    assert "recorder: G.729 decoded by bcg729" in log
    assert re.search(
        r"recording of call \S+: .*\(50 packets; 0 dropped, 0 late, 0 malformed\)", log
    )
    assert "not written, other codecs" not in log
    assert "Traceback" not in log
