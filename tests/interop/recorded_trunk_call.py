"""A trunk's call recorded by ``voipgw run`` (the ``recorder`` tap), sipp as both peers, in one
codec: the calling trunk (sipp on 127.0.0.2) offers it alone and replays RTP packets the test
made (``play_pcap_audio``); alice (a sipp UAS) answers with it and sends nothing. Both scenarios
are the harness's (uac_call_rtp.xml, uas_answer.xml) with the SDP's media line and the media
action changed. Shared by the G.722 and G.729 recording tests."""

from __future__ import annotations

from pathlib import Path

from tests.interop.harness import SCENARIOS, GatewayProcess, SippUas, run_sipp_uac
from tests.interop.sipp_calls import ACCOUNTS, DID, TRUNK_IP, inbound_trunk, register
from tests.interop.t38_pcaps import pcap_of

_PCMU = "m=audio [media_port] RTP/AVP 0\n      a=rtpmap:0 PCMU/8000"
_RTP_STREAM = '<exec rtp_stream="rtp_stream.ulaw,1,0"/>'


def rtp_packets(
    payload_type: int, payloads: list[bytes], ssrc: int, *, step: int = 160
) -> list[bytes]:
    """One RTP packet a payload, 20 ms apart on an 8 kHz clock (160 a packet: G.711, G.722's
    RTP clock, G.729, AMR; RFC 3551 §4.5), or ``step`` a packet (AMR-WB's 16 kHz: 320)."""
    return [
        bytes([0x80, payload_type])
        + (100 + n).to_bytes(2, "big")
        + (4000 + step * n).to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + payload
        for n, payload in enumerate(payloads)
    ]


def record_a_trunk_call(tmp_path: Path, media_lines: str, rtp: list[bytes]) -> tuple[Path, str]:
    """The call, recorded: the caller's WAV (alice sent no audio: no callee file) and the
    gateway's log. ``media_lines``: the SDP's m= line and attributes for both scenarios, as
    sipp writes them (``m=audio [media_port] RTP/AVP 9\\n      a=rtpmap:9 G722/8000``)."""
    uac = (SCENARIOS / "uac_call_rtp.xml").read_text()
    uas = (SCENARIOS / "uas_answer.xml").read_text()
    assert _PCMU in uac and _RTP_STREAM in uac and _PCMU in uas
    uac = uac.replace(_PCMU, media_lines).replace(_RTP_STREAM, '<exec play_pcap_audio="a.pcap"/>')
    (tmp_path / "uac_call_codec.xml").write_text(uac)
    (tmp_path / "uas_answer_codec.xml").write_text(uas.replace(_PCMU, media_lines))
    recorder = (
        f'[plugins.recorder]\ndirectory = "{tmp_path / "recordings"}"\ntrunks = ["pbx"]\n'
        "min_free_mb = 0\n"
    )
    settings = {"plugins": {"enable": ["udp", "tcp", "recorder"]}}
    with GatewayProcess(
        tmp_path, accounts=ACCOUNTS, settings=settings, extra_toml=inbound_trunk() + recorder
    ) as gw:
        alice = SippUas(tmp_path / "uas_answer_codec.xml", workdir=tmp_path)
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            caller = run_sipp_uac(
                tmp_path / "uac_call_codec.xml",
                gw.address,
                workdir=tmp_path,
                service=DID,
                caller="+4940777",
                local_ip=TRUNK_IP,
                call_duration_ms=1500,
                files={"a.pcap": pcap_of(rtp)},
            )
            caller.check()
            alice.wait(timeout=10).check()
        gw.wait_for_log(r"recording of call \S+: ")
        log = gw.log_text()
    (path,) = (tmp_path / "recordings").glob("*/*-0-caller.wav")
    assert not list((tmp_path / "recordings").glob("*/*-callee.*"))  # alice sent no audio
    return path, log
