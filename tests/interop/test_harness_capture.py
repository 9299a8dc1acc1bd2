"""The capture helper of the interop harness: a sipp call with RTP, captured and counted.

sipp's UAC streams a 2 s PCMU tone (100 packets of 20 ms) to a sipp UAS that echoes every packet
back; the capture must see exactly those packets in both directions, between the two media
ports, and nothing on a port outside the filter.
"""

from __future__ import annotations

import socket
import struct
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
from tests.interop.harness.capture import PROBE, _tshark_fields, sip_requests, tshark_rows
from tests.port_blocks import PortLease

LOCAL = "127.0.0.1"


def test_udp_filter() -> None:
    assert udp_filter(5060, (30000, 30099)) == "udp and (port 5060 or portrange 30000-30099)"
    assert udp_filter() == "udp"


def test_tshark_rows_spell_booleans_as_tshark_4_0_does() -> None:
    # tshark 4.4 (Debian 13) prints a boolean field as True or False, 4.0 (Debian 12) as 1 or 0.
    newer = "1\t4711\tTrue\n0\t4712\tFalse\n\n"
    assert tshark_rows(newer) == [["1", "4711", "1"], ["0", "4712", "0"]]
    assert tshark_rows("1\t4711\t1\n") == [["1", "4711", "1"]]
    assert tshark_rows("True|AES-CM|Trueish", "|") == [["1", "AES-CM", "Trueish"]]


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


@pytest.mark.interop
def test_capture_has_every_datagram_sent_right_after_start_and_right_before_stop(
    port_lease: PortLease,
    tmp_path: Path,
) -> None:
    """dumpcap says "Capturing on" before it sees packets, and loses on SIGTERM what the kernel
    has not handed over yet: without the probes of start() and stop(), datagrams sent at once
    after the start and stopped at once went missing in nearly every run. A nested capture sees
    the inner one's probes on the shared probe port, and neither file keeps any."""
    port = port_lease.block(1)[0]
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        receiver.bind((LOCAL, port))
        sender.bind((LOCAL, 0))
        flow = ((LOCAL, sender.getsockname()[1]), (LOCAL, port))
        for run in range(5):
            with (
                Capture(tmp_path / f"outer{run}.pcap", udp_filter(port)) as outer,
                Capture(tmp_path / f"inner{run}.pcap", udp_filter(port)) as inner,
            ):
                for number in range(3):
                    sender.sendto(b"datagram %d" % number, (LOCAL, port))
            for capture in (outer, inner):
                # The payloads in the file's bytes: cheaper than tshark, five runs over.
                data = capture.path.read_bytes()
                assert (run, data.count(b"datagram ")) == (run, 3)
                assert PROBE not in data
        assert udp_flows(outer.path) == udp_flows(inner.path) == {flow: 3}
        inner.stop()  # again, as a test that stops its capture inside the with block does


def _udp_pcap(path: Path, datagrams: list[tuple[int, int, bytes]]) -> None:
    """A pcap of (source port, destination port, payload) UDP datagrams on 127.0.0.1, raw IPv4
    (LINKTYPE_RAW): the exact packets a test needs, without a capture's start-up race."""
    loopback = socket.inet_aton(LOCAL)
    records = b""
    for sport, dport, payload in datagrams:
        udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0)
        packet = ip + loopback + loopback + udp
        records += struct.pack("<IIII", 0, 0, len(packet), len(packet)) + packet
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101) + records)


@pytest.mark.interop
def test_sip_requests_counts_a_retransmitted_request_once(tmp_path: Path) -> None:
    """A REFER sent again unchanged (Timer E, RFC 3261 §17.1.2.2) is one REFER; a new one
    (another branch and CSeq) is another."""
    refer = (
        b"REFER sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
        b"Call-ID: a@127.0.0.1\r\nCSeq: 1 REFER\r\nContent-Length: 0\r\n\r\n"
    )
    again = refer.replace(b"z9hG4bK1", b"z9hG4bK2").replace(b"1 REFER", b"2 REFER")
    _udp_pcap(tmp_path / "sip.pcap", [(5070, 5060, m) for m in (refer, refer, again)])
    counted = sip_requests(tmp_path / "sip.pcap", [5060], "REFER")
    assert counted == {("udp", (LOCAL, 5070), (LOCAL, 5060)): 2}


def _dtls_client_hello() -> bytes:
    """A DTLS 1.2 ClientHello record (RFC 6347 §4.1, §4.2.2): one suite, no cookie."""
    body = b"\xfe\xfd" + bytes(32) + b"\x00" + b"\x00" + b"\x00\x02\xc0\x2b" + b"\x01\x00"
    length = len(body).to_bytes(3, "big")
    handshake = b"\x01" + length + b"\x00\x00" + bytes(3) + length + body
    return b"\x16\xfe\xfd" + bytes(8) + len(handshake).to_bytes(2, "big") + handshake


@pytest.mark.interop
def test_a_client_hello_is_read_on_a_port_tshark_gives_another_protocol(tmp_path: Path) -> None:
    """UDP 19999 is GPRS-NS's in tshark (``tshark -G decodes``): a phone's RTCP port there made
    its ClientHello invisible to ``dtls`` filters (the DTLS forks interop test failed in CI).
    Read with the heuristics first, it is a ClientHello wherever it is."""
    _udp_pcap(tmp_path / "dtls.pcap", [(19999, 30000, _dtls_client_hello())])
    rows = _tshark_fields(
        tmp_path / "dtls.pcap",
        [],
        ["udp.srcport"],
        "dtls.handshake.type == 1",
        heuristics_first=True,
    )
    assert rows == [["19999"]]
