"""The DTMF digit check of the sipp DTMF interworking tests: moved here from
test_dtmf_interworking_sipp.py so that no test module imports another."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import require_peer
from tests.interop.harness import (
    LOOPBACK,
    rtp_packets,
)
from tests.interop.harness.capture import tshark_rows


def events_to(
    pcap: Path, ports: list[int], port: int, *, extra: tuple[str, ...] = ()
) -> list[list[str]]:
    """RFC 4733 packets (payload type 101) the relay sent to ``port``: marker, seq, timestamp,
    SSRC, event, end bit, duration, as tshark's rtpevent decodes them, then the ``extra``
    tshark fields (e.g. ``frame.time_relative``)."""
    args = [require_peer("tshark"), "-n", "-r", str(pcap)]
    for p in ports:
        args += ["-d", f"udp.port=={p},rtp"]
    args += ["-o", "rtpevent.event_payload_type_value:101"]
    args += ["-Y", f"rtpevent && udp.dstport == {port} && ip.src == {LOOPBACK}", "-T", "fields"]
    for field in (
        "rtp.marker",
        "rtp.seq",
        "rtp.timestamp",
        "rtp.ssrc",
        "rtpevent.event_id",
        "rtpevent.end_of_event",
        "rtpevent.duration",
        *extra,
    ):
        args += ["-e", field]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return tshark_rows(result.stdout)  # the marker and end bits as "1" and "0"


def assert_digits_crossed(
    pcap: Path,
    ports: list[int],
    info: str,
    *,
    info_port: int,
    event_ssrc: int,
    events_port: int,
    info_ssrc: int,
) -> None:
    """Both ways of one call's interworking, as the captures and traces saw it: the RFC 4733
    side's key press (digit 5, 80 ms, SSRC ``event_ssrc``) reached the INFO side (its media at
    ``info_port``) as one ``info`` (Signal=5, Duration=80) and as none of its event packets,
    only its audio (payload type 0); the INFO side's digit 7 reached the RFC 4733 side (media at
    ``events_port``) as events in the INFO side's own stream (SSRC ``info_ssrc``): a start and
    three ends (RFC 4733 §2.5), sequence numbers on from its five audio packets, one
    timestamp, 100 ms."""
    # 640 units at 8000 Hz; the trace shows lines with LF, the length counts CRLF ones.
    assert "Content-Length: 23\n\nSignal=5\nDuration=80\n" in info.replace("\r\n", "\n")
    to_info_side = [
        p
        for p in rtp_packets(pcap, ports)
        if int(p["dstport"]) == info_port and int(p["ssrc"], 16) == event_ssrc
    ]
    # (With workers the first audio packet may meet a stream its worker has not unblocked yet.)
    payload_types = [int(p["payload_type"]) for p in to_info_side]
    assert payload_types and set(payload_types) == {0}
    events = events_to(pcap, ports, events_port)
    assert [e[0] for e in events] == ["1", "0", "0", "0"]  # a start, three ends (100 ms)
    assert [int(e[1]) for e in events] == [5, 6, 7, 8]  # on from its audio (0..4)
    assert len({e[2] for e in events}) == 1  # one timestamp for the event
    assert {int(e[3], 16) for e in events} == {info_ssrc}
    assert {e[4] for e in events} == {"7"}
    assert [e[5] for e in events] == ["0", "1", "1", "1"]
    assert events[-1][6] == "800"
