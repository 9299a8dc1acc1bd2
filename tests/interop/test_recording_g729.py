"""A G.729 call recorded by ``voipgw run`` (the ``recorder`` tap, bcg729 decoding), with sipp as
both peers.

The calling trunk (sipp on 127.0.0.2) offers G.729 only (RFC 3551 payload type 18) and replays a
pcap (``play_pcap_audio``) that this test writes: RTP packets of a tone that bcg729's encoder
made, two 10-octet frames per 20 ms packet (RFC 3551 §4.5.6), timestamps advancing 160 per
packet. alice (a sipp UAS) answers with G.729. The caller's file must be an 8 kHz WAV holding
exactly what bcg729 decodes of the octets sent, and its tone must be the one encoded. Before
session 56 the recorder counted G.729 as another codec and wrote nothing.
"""

from __future__ import annotations

import re
import wave
from pathlib import Path

import pytest

from gateway.core.media.g729 import Bcg729Decoder
from tests.interop.harness import SCENARIOS, GatewayProcess, SippUas, analyse_tone, run_sipp_uac
from tests.interop.sipp_calls import ACCOUNTS, DID, TRUNK_IP, inbound_trunk, register
from tests.interop.t38_pcaps import pcap_of
from tests.unit.taps.bcg729_encoder import bcg729_or_missing, g729_encode, tone

pytestmark = pytest.mark.interop

TONE = 425.0
PACKETS = 50  # 1 s


def _g729_scenarios(workdir: Path) -> tuple[Path, Path]:
    """uac_call_rtp.xml offering G.729 and replaying g729.pcap; uas_answer.xml answering it."""
    g729 = "m=audio [media_port] RTP/AVP 18\n      a=rtpmap:18 G729/8000\n      a=fmtp:18 annexb=no"
    pcmu = "m=audio [media_port] RTP/AVP 0\n      a=rtpmap:0 PCMU/8000"
    uac = (SCENARIOS / "uac_call_rtp.xml").read_text()
    assert pcmu in uac and '<exec rtp_stream="rtp_stream.ulaw,1,0"/>' in uac
    uac = uac.replace(pcmu, g729)
    uac = uac.replace(
        '<exec rtp_stream="rtp_stream.ulaw,1,0"/>', '<exec play_pcap_audio="g729.pcap"/>'
    )
    uas = (SCENARIOS / "uas_answer.xml").read_text()
    assert pcmu in uas
    (workdir / "uac_call_g729.xml").write_text(uac)
    (workdir / "uas_answer_g729.xml").write_text(uas.replace(pcmu, g729))
    return workdir / "uac_call_g729.xml", workdir / "uas_answer_g729.xml"


def test_a_g729_call_is_recorded_as_8_khz_audio(tmp_path: Path) -> None:
    bcg729 = bcg729_or_missing()
    frames = g729_encode(bcg729, tone(TONE, PACKETS * 0.02, amplitude=12000))
    payloads = [frames[i] + frames[i + 1] for i in range(0, len(frames), 2)]
    assert len(payloads) == PACKETS and {len(p) for p in payloads} == {20}
    rtp = [
        bytes([0x80, 18])
        + (100 + n).to_bytes(2, "big")
        + (4000 + 160 * n).to_bytes(4, "big")
        + (0x7290).to_bytes(4, "big")
        + payload
        for n, payload in enumerate(payloads)
    ]
    uac, uas = _g729_scenarios(tmp_path)
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
                files={"g729.pcap": pcap_of(rtp)},
            )
            caller.check()
            alice.wait(timeout=10).check()
        gw.wait_for_log(r"recording of call \S+: ")
        log = gw.log_text()

    (path,) = (tmp_path / "recordings").glob("*/*-0-caller.wav")
    assert not list((tmp_path / "recordings").glob("*/*-callee.*"))  # alice sent no audio
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
