"""A G.722 call recorded by ``voipgw run`` (the ``recorder`` tap), with sipp as both peers.

The calling trunk (sipp on 127.0.0.2) offers G.722 only (RFC 3551 payload type 9) and replays
a pcap (``play_pcap_audio``) that this test writes: RTP packets of a tone that Debian's
libspandsp2 encoded, 20 ms apart, timestamps advancing 160 per packet (RFC 3551 §4.5.2: the 8 kHz
RTP clock of 16 kHz audio). alice (a sipp UAS) answers with G.722. Both scenarios are the
harness's (uac_call_rtp.xml, uas_answer.xml) with the codec and the media action changed here.
The caller's file must be a 16 kHz WAV holding exactly what our decoder makes of the octets
sent (the decoder itself is checked against spandsp in tests/unit/taps/test_g722.py), and its
tone must be the 5 kHz one, which G.711's 8 kHz sampling could not carry: the recording is
wideband.
"""

from __future__ import annotations

import math
import re
import struct
import wave
from pathlib import Path

import pytest

from gateway.plugins.taps.g722 import G722Decoder
from tests.interop.harness import SCENARIOS, GatewayProcess, SippUas, analyse_tone, run_sipp_uac
from tests.interop.sipp_calls import ACCOUNTS, DID, TRUNK_IP, inbound_trunk, register
from tests.interop.t38_pcaps import pcap_of
from tests.unit.taps.spandsp import load_spandsp

pytestmark = pytest.mark.interop

TONE = 5000.0
PACKETS = 50  # 1 s


def _g722_scenarios(workdir: Path) -> tuple[Path, Path]:
    """uac_call_rtp.xml offering G.722 and replaying g722.pcap; uas_answer.xml answering it."""
    g722 = "m=audio [media_port] RTP/AVP 9\n      a=rtpmap:9 G722/8000"
    pcmu = "m=audio [media_port] RTP/AVP 0\n      a=rtpmap:0 PCMU/8000"
    uac = (SCENARIOS / "uac_call_rtp.xml").read_text()
    assert pcmu in uac and '<exec rtp_stream="rtp_stream.ulaw,1,0"/>' in uac
    uac = uac.replace(pcmu, g722)
    uac = uac.replace(
        '<exec rtp_stream="rtp_stream.ulaw,1,0"/>', '<exec play_pcap_audio="g722.pcap"/>'
    )
    uas = (SCENARIOS / "uas_answer.xml").read_text()
    assert pcmu in uas
    (workdir / "uac_call_g722.xml").write_text(uac)
    (workdir / "uas_answer_g722.xml").write_text(uas.replace(pcmu, g722))
    return workdir / "uac_call_g722.xml", workdir / "uas_answer_g722.xml"


def test_a_g722_call_is_recorded_as_16_khz_audio(tmp_path: Path) -> None:
    spandsp = load_spandsp()
    signal = [int(12000 * math.sin(2 * math.pi * TONE * i / 16000)) for i in range(320 * PACKETS)]
    octets = spandsp.encode(signal)
    payloads = [octets[i : i + 160] for i in range(0, len(octets), 160)]
    rtp = [
        struct.pack("!BBHII", 0x80, 9, 100 + n, 4000 + 160 * n, 0x7220) + payload
        for n, payload in enumerate(payloads)
    ]
    uac, uas = _g722_scenarios(tmp_path)
    recorder = (
        f'[plugins.recorder]\ndirectory = "{tmp_path / "recordings"}"\ntrunks = ["pbx"]\n'
        "min_free_mb = 0\n"
    )
    settings = {"plugins": {"enable": ["udp", "tcp", "recorder"]}}
    with GatewayProcess(
        tmp_path, accounts=ACCOUNTS, settings=settings, extra_toml=inbound_trunk() + recorder
    ) as gw:
        alice = SippUas(uas, workdir=tmp_path)
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            caller = run_sipp_uac(
                uac,
                gw.address,
                workdir=tmp_path,
                service=DID,
                caller="+4940777",
                local_ip=TRUNK_IP,
                call_duration_ms=1500,
                files={"g722.pcap": pcap_of(rtp)},
            )
            caller.check()
            alice.wait(timeout=10).check()
        gw.wait_for_log(r"recording of call \S+: ")
        log = gw.log_text()

    (path,) = (tmp_path / "recordings").glob("*/*-0-caller.wav")
    assert not list((tmp_path / "recordings").glob("*/*-callee.*"))  # alice sent no audio
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
