"""The capture helper of the interop harness: a sipp call with RTP, captured and counted.

sipp's UAC streams a 2 s PCMU tone (100 packets of 20 ms) to a sipp UAS that echoes every packet
back; the capture must see exactly those packets in both directions, between the two media
ports, and nothing on a port outside the filter.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import (
    Capture,
    SippUas,
    rtp_packets,
    rtp_streams,
    run_sipp_uac,
    tone_ulaw,
    udp_filter,
    udp_flows,
)

LOCAL = "127.0.0.1"


def test_udp_filter() -> None:
    assert udp_filter(5060, (30000, 30099)) == "udp and (port 5060 or portrange 30000-30099)"
    assert udp_filter() == "udp"


@pytest.mark.interop
def test_capture_counts_rtp_of_a_sipp_call_both_ways(tmp_path: Path) -> None:
    tone = tone_ulaw(tmp_path / "tone.ulaw", 1000, seconds=2)
    with SippUas("uas_answer.xml", workdir=tmp_path, rtp_echo=True) as callee:
        # Every RTP packet of this call has the callee's media port at one end.
        with Capture(tmp_path / "call.pcap", udp_filter(callee.media_port)) as capture:
            caller = run_sipp_uac(
                "uac_call_rtp.xml", callee.address, workdir=tmp_path, rtp_file=tone
            )
        caller.check()
        callee.wait(timeout=10).check()
    ports = [caller.media_port, callee.media_port]
    streams = rtp_streams(capture.path, ports)
    sent = ((LOCAL, caller.media_port), (LOCAL, callee.media_port))
    echoed = ((LOCAL, callee.media_port), (LOCAL, caller.media_port))
    assert streams == {sent: 100, echoed: 100}
    packets = rtp_packets(capture.path, ports)
    assert {packet["payload_type"] for packet in packets} == {"0"}
    sequence = [int(p["seq"]) for p in packets if int(p["srcport"]) == caller.media_port]
    assert sequence == list(range(sequence[0], sequence[0] + 100))
    # The SIP signalling was outside the filter, so the capture holds the RTP and nothing else.
    assert udp_flows(capture.path) == streams
