"""SIPREC (RFC 7866) with a real SRS: sipp as the recorder.

baresip, SRTP mandatory over TLS (SDES), calls a sipp trunk that answers in plain RTP and echoes
the media; the trunk's calls are recorded to a second sipp acting as the SRS
(``scenarios/calls/uas_siprec_srs.xml``: it checks ``Require: siprec``, the ``+sip.src`` Contact and
the metadata, answers the two streams in reverse label order and expects the BYE at the end).
The copies the gateway sends the SRS, captured on its two ports, are the phone's decrypted
1000 Hz tone (label 1, the caller) and the trunk's echo of it (label 2).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import LOOPBACK, Baresip, Capture, SippUas, analyse_tone, tone_wav
from tests.interop.harness.audio import g711_wav
from tests.interop.harness.capture import rtp_payloads_by_seq, udp_filter
from tests.interop.harness.tls_gateway import TlsGatewayProcess

pytestmark = pytest.mark.interop

PASSWORD = "wonderland-51c3"
TONE = 1000.0
AUDIO_SECONDS = 2.0
PCMU_PAYLOAD = 160


def test_an_srtp_call_to_a_recorded_trunk_is_sent_to_the_srs_in_clear(tmp_path: Path) -> None:
    with (
        SippUas("uas_answer.xml", workdir=tmp_path / "trunk", rtp_echo=True) as trunk,
        SippUas("calls/uas_siprec_srs.xml", workdir=tmp_path / "srs") as srs,
    ):
        extra = trunk.trunk_toml() + (
            "[plugins.siprec]\n"
            f'srs = "sip:srs@{srs.address}"\n'
            'trunks = ["carrier"]\n'
            f'media_address = "{LOOPBACK}"\n'
        )
        srs_ports = (srs.media_port, srs.media_port + 2)
        with (
            TlsGatewayProcess(
                tmp_path / "gw",
                plugins=("udp", "tcp", "tls", "sdes", "siprec"),
                accounts={"alice": PASSWORD},
                digest_algorithms=("MD5",),  # baresip 1.0.0 answers MD5 only
                settings={"gateway": {"log_level": "debug", "domains": [LOOPBACK]}},
                extra_toml=extra,
            ) as gw,
            Baresip(
                tmp_path,
                "alice",
                source=tone_wav(tmp_path / "alice.wav", TONE),
                mediaenc="srtp-mand",
            ) as alice,
        ):
            alice.register_over_tls(LOOPBACK, gw.tls_port, PASSWORD, mediaenc="srtp-mand")
            with Capture(tmp_path / "srs.pcap", udp_filter(*srs_ports)) as capture:
                alice.dial(f"sip:+4989555@{LOOPBACK}:{gw.tls_port};transport=tls")
                alice.wait_established()
                alice.wait_audio(AUDIO_SECONDS)
                alice.hangup()
                alice.wait_closed()
                gw.wait_for_log(r"SIPREC: call \S+: \d+ packets, \d+ sent to the SRS")
            log = gw.log_text()
        trunk.wait().check()
        srs.wait().check()  # the INVITE's checks passed and the BYE came

    flows = rtp_payloads_by_seq(capture.path, list(srs_ports))
    by_port = {destination[1]: packets for (_, destination), packets in flows.items()}
    assert set(by_port) == set(srs_ports), list(flows)
    for port in srs_ports:
        packets = by_port[port]
        assert len(packets) >= 40 * AUDIO_SECONDS, (port, len(packets))
        assert all(len(payload) == PCMU_PAYLOAD for payload in packets.values())  # plain RTP
        audio = b"".join(packets[seq] for seq in sorted(packets))
        heard = analyse_tone(g711_wav(audio, tmp_path / f"srs-{port}.wav"))
        assert heard.dominant_frequency == pytest.approx(TONE, abs=3), port
        assert heard.power_share > 0.9, port
    assert "not recorded" not in log
