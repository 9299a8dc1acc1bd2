"""G.711 transcoding through ``voipgw run`` against sipp ([media] g711_transcoding = true, or
only the calling trunk's ``g711_transcoding = true``):
the calling trunk (sipp on 127.0.0.2, calls/uac_call_pcmu_only.xml) speaks PCMU only, alice's
side (sipp, calls/uas_answer_pcma_only.xml) PCMA only. Alice must be offered PCMU then the
added PCMA (her scenario checks), answers PCMA; the trunk's answer must be PCMU and name no
PCMA (its scenario checks). Each replays audio from a pcap; a capture read by tshark shows
what the gateway sent each of them: the other's samples in their own law, converted octet by
octet through the G.711 tables, with the same length. In process with ``[media]``'s key, and
in a media worker with the trunk's own key instead (no run of its own: the run time counts)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.interop.harness import Capture, GatewayProcess, SippUas, run_sipp_uac, udp_filter
from tests.interop.harness.capture import rtp_payloads, rtp_streams
from tests.interop.sipp_calls import ACCOUNTS, DID, TRUNK_IP, inbound_trunk, register
from tests.interop.t38_pcaps import pcap_of

pytestmark = pytest.mark.interop

TRUNK_SSRC, ALICE_SSRC = 0x7A0C0303, 0xA11CE222
PACKETS = 5
SAMPLES = bytes(range(0, 256, 2)) + bytes(range(1, 256, 8))  # 160 octets: 20 ms
PCMU, PCMA = 0, 8


def audio(payload_type: int, ssrc: int) -> list[bytes]:
    return [
        struct.pack("!BBHII", 0x80, payload_type, seq, 160 * seq, ssrc) + SAMPLES
        for seq in range(PACKETS)
    ]


def received(pcap: Path, ports: list[int], gateway: tuple[int, int], port: int) -> dict[int, bytes]:
    """What the gateway's media ports sent to ``port``, per payload type."""
    low, high = gateway
    [(source, destination)] = [
        (src, dst)
        for src, dst in rtp_streams(pcap, ports)
        if dst[1] == port and low <= src[1] <= high
    ]
    return rtp_payloads(pcap, ports, source, destination)


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "media-workers-by-trunk"])
def test_a_pcmu_trunk_and_a_pcma_callee_hear_each_other(tmp_path: Path, workers: int) -> None:
    from gateway.core.media.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW

    # The second run leaves [media] at its default (off) and enables it on the trunk.
    by_trunk = workers == 2
    with GatewayProcess(
        tmp_path,
        accounts=ACCOUNTS,
        extra_toml=inbound_trunk() + ("g711_transcoding = true\n" if by_trunk else ""),
        settings={"media": {"workers": workers, "g711_transcoding": not by_trunk}},
    ) as gw:
        alice = SippUas("calls/uas_answer_pcma_only.xml", workdir=tmp_path, timeout=20)
        (alice.rundir / "callee_audio.pcap").write_bytes(pcap_of(audio(PCMA, ALICE_SSRC)))
        register(gw, tmp_path, "udp", alice.port)
        with alice, Capture(tmp_path / "g711.pcap", udp_filter(gw.media_ports)) as capture:
            caller = run_sipp_uac(
                "calls/uac_call_pcmu_only.xml",
                gw.address,
                workdir=tmp_path,
                service=DID,
                caller="+4940777",
                local_ip=TRUNK_IP,
                call_duration_ms=1500,
                files={"caller_audio.pcap": pcap_of(audio(PCMU, TRUNK_SSRC))},
            )
            caller.check()  # answered PCMU, no PCMA named
            answered = alice.wait(timeout=15)
            answered.check()  # offered PCMU, then PCMA with its rtpmap
            capture.stop()
        log = gw.log_text()

    low, high = gw.media_ports
    ports = [*range(low, high + 1), caller.media_port, answered.media_port]
    to_alice = received(capture.path, ports, gw.media_ports, answered.media_port)
    to_trunk = received(capture.path, ports, gw.media_ports, caller.media_port)
    assert to_alice == {PCMA: SAMPLES.translate(ULAW_TO_ALAW) * PACKETS}
    # Alice starts playing the moment our ACK reaches her: every packet of hers must arrive,
    # in a worker too. The call sends that ACK only once the relay carries her answer (a
    # worker confirms it, MediaSession.applied()); it used to ACK first, and a worker then
    # sometimes read her first packet before her answer's messages and dropped it.
    assert to_trunk == {PCMU: SAMPLES.translate(ALAW_TO_ULAW) * PACKETS}
    assert "PCMA 8 offered for transcoding from PCMU" in log
    assert "PCMU <-> PCMA transcoded" in log
    assert "Traceback" not in log
