"""A G.722 call recorded by ``voipgw run`` (the ``recorder`` tap), with sipp as both peers. The
calling trunk (sipp on 127.0.0.2) offers G.722 only (RFC 3551 payload type 9) and replays a pcap
(``play_pcap_audio``) that this test writes: RTP packets of a tone that Debian's libspandsp2
encoded, 20 ms apart, timestamps advancing 160 per packet (RFC 3551 §4.5.2: the 8 kHz RTP clock
of 16 kHz audio). alice (a sipp UAS) answers with G.722 (tests/interop/recorded_trunk_call.py).
The caller's file must be a 16 kHz WAV holding exactly what our decoder makes of the octets sent
(the decoder itself is checked against spandsp in tests/unit/taps/test_g722.py), and its tone
must be the 5 kHz one, which G.711's 8 kHz sampling could not carry: the recording is wideband.
"""

from __future__ import annotations

import math
import re
import wave
from pathlib import Path

import pytest

from gateway.plugins.taps.g722 import G722Decoder
from tests.interop.harness import analyse_tone
from tests.interop.recorded_trunk_call import record_a_trunk_call, rtp_packets
from tests.unit.taps.spandsp import load_spandsp

pytestmark = pytest.mark.interop

TONE = 5000.0
PACKETS = 50  # 1 s
G722 = "m=audio [media_port] RTP/AVP 9\n      a=rtpmap:9 G722/8000"


def test_a_g722_call_is_recorded_as_16_khz_audio(tmp_path: Path) -> None:
    spandsp = load_spandsp()
    signal = [int(12000 * math.sin(2 * math.pi * TONE * i / 16000)) for i in range(320 * PACKETS)]
    octets = spandsp.encode(signal)
    payloads = [octets[i : i + 160] for i in range(0, len(octets), 160)]
    path, log = record_a_trunk_call(tmp_path, G722, rtp_packets(9, payloads, 0x7220))

    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        frames = wav.readframes(wav.getnframes())
    decoder = G722Decoder()
    assert frames == b"".join(decoder.decode(payload) for payload in payloads)
    heard = analyse_tone(path)
    assert heard.dominant_frequency == pytest.approx(TONE, abs=5)
    assert heard.power_share > 0.9
    assert re.search(
        r"recording of call \S+: .*\(50 packets; 0 dropped, 0 late, 0 malformed\)", log
    )
    assert "Traceback" not in log
