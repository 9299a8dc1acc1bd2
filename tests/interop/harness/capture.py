"""Packet capture on the loopback interface, and counting RTP in a capture with tshark.

    with Capture(tmp_path / "call.pcap", udp_filter(gw.media_ports, trunk.media_port)) as cap:
        ...                                   # the call
    streams = rtp_streams(cap.path, [trunk.media_port, *range(low, high + 1)])
    assert streams[(("127.0.0.1", a), ("127.0.0.1", b))] >= 90

dumpcap (tshark's capture engine) writes the file. Capturing needs root or the capabilities
Debian gives dumpcap for the wireshark group.

Why probes: neither end of a capture is what it seems. dumpcap prints "Capturing on" before it
necessarily sees packets, and the kernel hands captured packets to dumpcap a ring block at a time,
when the block is full or 250 ms after its first packet (libpcap's TPACKET_V3 ring, dumpcap's read
timeout), so a SIGTERM loses the packets of the block not handed over yet. Starting a capture,
sending 3 datagrams at once and stopping it 0.2 s later lost all three in 19 runs of 20 on the
2-vCPU CI machine; waiting 1.5 s before the stop still lost them in 1 run of 10 (the start). So
the capture filter also takes the datagrams that a socket of the harness sends to itself on a port
of this process's own block (tests/port_blocks.py, which no other program uses), each starting
with ``PROBE`` and a token unique to the wait:

- ``start()`` sends probes every 20 ms and returns once one is in the file: the capture sees
  every packet sent after that;
- ``stop()`` does the same before it stops dumpcap (packets reach the file in the order they were
  captured, so everything sent before the probe is there), then rewrites the file without the
  probes, so that no reader (``rtp_streams``, ``udp_flows``, ``sip_requests``, a test's own
  tshark) can count one.

A probe is 4 datagrams of 60000 octets (lo's MTU is 65536, so not fragmented): they fill a ring
block, which the kernel then hands over at once, so a wait takes about 25 ms instead of up to
250 ms. dumpcap writes the pcap to its standard output (``-w -``), which it flushes after every
block; written to a file it would keep 4 KiB in stdio first. The file is a classic pcap (-P), whose
records ``_pcap_records`` splits without tshark.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import pytest

from tests.conftest import require_peer
from tests.interop.harness.processes import start_process, stop_process
from tests.port_blocks import LOOPBACK, port_block

Address = tuple[str, int]

#: What every probe datagram starts with; ``stop()`` removes the records that carry it.
PROBE = b"voipgw-capture-probe:"
PROBE_INTERVAL = 0.02  # seconds between two probes while start() or stop() waits
PROBE_SIZE = 60_000  # octets of each probe datagram; PROBE_BURST of them fill a ring block
PROBE_BURST = 4
_probe_port: int | None = None  # one port of this process's block, taken at the first capture


def _probe_socket() -> socket.socket:
    """A UDP socket on the probe port that sends to itself (nested captures share the port)."""
    global _probe_port
    if _probe_port is None:
        _probe_port = port_block(1)[0]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, _probe_port))
    sock.connect((LOOPBACK, _probe_port))
    return sock


def _pcap_records(data: bytes) -> tuple[bytes, list[bytes]]:
    """A classic pcap's file header and its records (each a record header and its packet)."""
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    records = []
    offset = 24
    while offset + 16 <= len(data):
        (captured,) = struct.unpack(order + "I", data[offset + 8 : offset + 12])
        records.append(data[offset : offset + 16 + captured])
        offset += 16 + captured
    return data[:24], records


def udp_filter(*ports: int | tuple[int, int]) -> str:
    """A capture filter for UDP on the given ports and inclusive (low, high) port ranges."""
    terms = [
        f"portrange {port[0]}-{port[1]}" if isinstance(port, tuple) else f"port {port}"
        for port in ports
    ]
    return "udp and (" + " or ".join(terms) + ")" if terms else "udp"


class Capture:
    """dumpcap on ``lo`` writing a pcap to ``path`` with a BPF ``capture_filter``."""

    def __init__(self, path: Path, capture_filter: str = "udp", *, interface: str = "lo") -> None:
        self.path = path
        self.capture_filter = capture_filter
        self.interface = interface
        self.log_path = path.with_suffix(".dumpcap.log")
        self.process: subprocess.Popen[bytes] | None = None
        self._probe: socket.socket | None = None
        self._probes_sent = 0
        self._stopped = False

    def start(self, timeout: float = 10.0) -> None:
        """Start dumpcap and return once it provably captures (see the module docstring)."""
        require_peer("tshark")
        dumpcap = shutil.which("dumpcap") or "/usr/bin/dumpcap"
        self._probe = _probe_socket()
        port = self._probe.getsockname()[1]
        self.process = start_process(
            # -P: classic pcap, readable by every tool; -q: no packet counter on stderr;
            # -w -: to stdout, flushed after every block the kernel hands over.
            [
                dumpcap,
                "-i",
                self.interface,
                "-f",
                f"({self.capture_filter}) or (udp and src port {port} and dst port {port})",
                "-w",
                "-",
                "-P",
                "-q",
            ],
            log=self.log_path,
            stdout=self.path,
        )
        if not self._probe_captured(timeout):
            self._stop_dumpcap()
            if self.process.returncode not in (None, 0) and "Capturing on" not in self._log():
                self._fail_to_start()
            raise RuntimeError(f"dumpcap did not start capturing:\n{self._log()}")

    def _probe_captured(self, timeout: float) -> bool:
        """Send a new probe every PROBE_INTERVAL until one is in the file, or False after
        ``timeout`` s or when dumpcap has exited."""
        assert self.process is not None and self._probe is not None
        self._probes_sent += 1
        token = PROBE + b"%d:%x:" % (self._probes_sent, id(self))
        datagram = token.ljust(PROBE_SIZE, b".")
        seen = self.path.stat().st_size  # the token can only be in what is written after
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            for _ in range(PROBE_BURST):
                self._probe.send(datagram)
            time.sleep(PROBE_INTERVAL)
            with self.path.open("rb") as pcap:
                pcap.seek(seen)
                if token in pcap.read():
                    return True
        return False

    def _fail_to_start(self) -> None:
        message = f"dumpcap could not capture on {self.interface}:\n{self._log()}"
        if "permission" in self._log().lower() and os.environ.get("VOIPGW_REQUIRE_PEERS") != "1":
            pytest.skip(message + "\n(run as root or add the user to the wireshark group)")
        raise RuntimeError(message)

    def _log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, check: bool = True) -> None:
        """Wait until every packet sent so far is in the file, stop dumpcap (SIGTERM) and take
        the probes out of the file. With ``check``, a capture that lost its end is an error."""
        if self.process is None or self._stopped:
            return  # a test may stop the capture itself before the with block ends
        self._stopped = True
        complete = self.process.poll() is None and self._probe_captured(timeout=10.0)
        self._stop_dumpcap()
        _header, records = _pcap_records(self.path.read_bytes())
        kept = [record for record in records if PROBE not in record]
        if len(kept) < len(records):
            self.path.write_bytes(_header + b"".join(kept))
        if check and not complete:
            raise RuntimeError(f"dumpcap stopped before the end of the capture:\n{self._log()}")

    def _stop_dumpcap(self) -> None:
        assert self.process is not None
        stop_process(self.process, sig=signal.SIGTERM, timeout=10.0)
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Under an exception the test has failed already: its error is the one to see.
        self.stop(check=exc_type is None)


#: tshark options that let its heuristic dissectors (DTLS, STUN) look at a UDP datagram before
#: the dissector registered for its port. Our ports are picked at random and tshark registers
#: dissectors on hundreds of UDP ports (``tshark -G decodes``): a phone's RTCP port 19999 is
#: GPRS-NS's, and its DTLS ClientHello there was read as "GPRS-NS Unknown PDU type".
HEURISTICS_FIRST = ["-o", "udp.try_heuristic_first:TRUE"]


def tshark_rows(output: str, separator: str = "\t") -> list[list[str]]:
    """The rows of tshark's ``-T fields`` ``output``, each a list of its fields, with boolean
    fields as ``"1"`` and ``"0"``: tshark 4.0 (Debian 12) prints them so, 4.2 and later (Debian
    13's 4.4) print ``True`` and ``False``. No other field we read is ever exactly either."""
    spelled = {"True": "1", "False": "0"}
    return [
        [spelled.get(field, field) for field in line.split(separator)]
        for line in output.splitlines()
        if line
    ]


def _tshark_fields(
    pcap: Path,
    ports: Iterable[int],
    fields: list[str],
    display_filter: str = "rtp",
    *,
    heuristics_first: bool = False,
) -> list[list[str]]:
    """tshark's ``fields`` for each packet of ``pcap`` matching ``display_filter``, UDP on
    ``ports`` decoded as RTP. Pass ``heuristics_first`` when the filter is about a protocol
    tshark finds by content (``dtls``, ``stun``); RTP has no default heuristic, so it is left
    off for RTP, where another protocol's heuristic could claim a packet."""
    decode = []
    for port in sorted(set(ports)):
        decode += ["-d", f"udp.port=={port},rtp"]
    if heuristics_first:
        decode += HEURISTICS_FIRST
    args = [require_peer("tshark"), "-n", "-r", str(pcap), *decode, "-Y", display_filter]
    args += ["-T", "fields"]
    for field in fields:
        args += ["-e", field]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"tshark failed on {pcap}:\n{result.stderr}")
    return tshark_rows(result.stdout)


def even_ports(*ranges: tuple[int, int]) -> list[int]:
    """The even ports of ``ranges`` (inclusive (low, high) pairs): where the gateway and the
    phones put RTP, RTCP going to the next odd one (RFC 3550 §11). Decoding only these as RTP
    keeps (S)RTCP out of the counts."""
    return [port for low, high in ranges for port in range(low, high + 1) if port % 2 == 0]


def rtp_streams(pcap: Path, ports: Iterable[int]) -> dict[tuple[Address, Address], int]:
    """RTP packets per (source, destination) in ``pcap``, UDP on ``ports`` decoded as RTP.

    tshark decodes a UDP packet as RTP when either of its ports is in ``ports`` (-d
    udp.port==N,rtp), so list the media ports of every party in the call.
    """
    rows = _tshark_fields(pcap, ports, ["ip.src", "udp.srcport", "ip.dst", "udp.dstport"])
    counts = Counter(((src, int(sport)), (dst, int(dport))) for src, sport, dst, dport in rows)
    return dict(counts)


def rtp_packets(pcap: Path, ports: Iterable[int]) -> list[dict[str, str]]:
    """Every RTP packet in ``pcap`` as tshark fields: src, srcport, dst, dstport, ssrc, seq,
    timestamp, payload_type, marker (strings as tshark prints them, the marker "1" or "0"; ssrc in
    hex)."""
    names = [
        "src",
        "srcport",
        "dst",
        "dstport",
        "ssrc",
        "seq",
        "timestamp",
        "payload_type",
        "marker",
    ]
    fields = [
        "ip.src",
        "udp.srcport",
        "ip.dst",
        "udp.dstport",
        "rtp.ssrc",
        "rtp.seq",
        "rtp.timestamp",
        "rtp.p_type",
        "rtp.marker",
    ]
    return [dict(zip(names, row, strict=True)) for row in _tshark_fields(pcap, ports, fields)]


def udp_flows(pcap: Path) -> dict[tuple[Address, Address], int]:
    """UDP packets per (source, destination) in ``pcap``, whatever they carry."""
    rows = _tshark_fields(pcap, [], ["ip.src", "udp.srcport", "ip.dst", "udp.dstport"], "udp")
    counts = Counter(((src, int(sport)), (dst, int(dport))) for src, sport, dst, dport in rows)
    return dict(counts)


def rtp_payloads(
    pcap: Path, ports: Iterable[int], source: Address, destination: Address
) -> dict[int, bytes]:
    """The payloads of the RTP packets from ``source`` to ``destination``, joined in capture
    order, per payload type (0 PCMU, 8 PCMA, 101 telephone-event, ...).

    Turn G.711 audio into a WAV with ``g711_wav`` to measure the tone a relay forwarded, e.g.
    when the receiving phone does not record it. ``ports`` as for ``rtp_streams``.
    """
    fields = ["ip.src", "udp.srcport", "ip.dst", "udp.dstport", "rtp.p_type", "rtp.payload"]
    payloads: dict[int, bytearray] = {}
    for src, sport, dst, dport, payload_type, payload in _tshark_fields(pcap, ports, fields):
        if ((src, int(sport)), (dst, int(dport))) != (source, destination):
            continue
        # tshark 4.0 prints the payload as plain hex; older versions separate bytes with ":".
        data = bytes.fromhex(payload.replace(":", ""))
        payloads.setdefault(int(payload_type), bytearray()).extend(data)
    return {payload_type: bytes(data) for payload_type, data in payloads.items()}


def sip_requests(
    pcap: Path, ports: Iterable[int], method: str
) -> dict[tuple[str, Address, Address], int]:
    """Packets carrying a SIP ``method`` request per (transport, source, destination).

    SIP is decoded on ``ports`` over UDP and TCP (-d udp.port==N,sip and tcp.port==N,sip); the
    transport is "udp" or "tcp". A TCP segment with two requests of ``method`` counts once. A
    UDP datagram equal to an earlier one between the same addresses is a retransmission (RFC
    3261 §17.1.2.2: a request until it is answered, as a loaded machine's peers do) and is not
    counted, as the sipp and baresip trace readers leave them out; a new request has a new
    branch or CSeq, so it counts.
    """
    args = [require_peer("tshark"), "-n", "-r", str(pcap)]
    for port in sorted(set(ports)):
        args += ["-d", f"udp.port=={port},sip", "-d", f"tcp.port=={port},sip"]
    args += ["-Y", f'sip.Method == "{method}"', "-T", "fields"]
    fields = ["ip.src", "udp.srcport", "tcp.srcport", "ip.dst", "udp.dstport", "tcp.dstport"]
    for field in [*fields, "udp.payload"]:
        args += ["-e", field]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"tshark failed on {pcap}:\n{result.stderr}")
    counts: Counter[tuple[str, Address, Address]] = Counter()
    datagrams = set()
    for line in result.stdout.splitlines():
        src, udp_sport, tcp_sport, dst, udp_dport, tcp_dport, payload = line.split("\t")
        if udp_sport:
            if (src, udp_sport, dst, udp_dport, payload) in datagrams:
                continue
            datagrams.add((src, udp_sport, dst, udp_dport, payload))
            counts["udp", (src, int(udp_sport)), (dst, int(udp_dport))] += 1
        else:
            counts["tcp", (src, int(tcp_sport)), (dst, int(tcp_dport))] += 1
    return dict(counts)


def rtp_payloads_by_seq(
    pcap: Path, ports: Iterable[int]
) -> dict[tuple[Address, Address], dict[int, bytes]]:
    """The payload of every RTP packet per (source, destination) and sequence number.

    For SRTP (RFC 3711 §3.1) the header is in clear, so tshark decodes it as RTP and the
    "payload" is the encrypted payload followed by the authentication tag: compare it with the
    same sequence numbers on the plain side of a relay to see what the encryption did. A
    sequence number seen twice in one flow (a retransmission, a replay) keeps the first.
    ``ports`` as for ``rtp_streams``; what is not RTP version 2 there (STUN keep-alives that
    linphone sends from its RTP port, RFC 7983) is left out. Once tshark has seen a ZRTP
    exchange on a flow it decodes the flow's packets as SRTP (encrypted payload and tag in
    fields of their own): they are joined the same way.
    """
    fields = ["ip.src", "udp.srcport", "ip.dst", "udp.dstport", "rtp.seq", "rtp.payload"]
    fields += ["srtp.enc_payload", "srtp.auth_tag"]
    flows: dict[tuple[Address, Address], dict[int, bytes]] = {}
    rows = _tshark_fields(pcap, ports, fields, "rtp.version == 2 && !stun")
    for src, sport, dst, dport, seq, payload, *srtp in rows:
        flow = flows.setdefault(((src, int(sport)), (dst, int(dport))), {})
        octets = payload or "".join(srtp)
        flow.setdefault(int(seq), bytes.fromhex(octets.replace(":", "")))
    return flows


def inside(address: Address, ports: tuple[int, int]) -> bool:
    """Whether ``address``'s port is in the inclusive range ``ports`` (a party's media ports)."""
    return ports[0] <= address[1] <= ports[1]


def one_flow(
    flows: dict[tuple[Address, Address], dict[int, bytes]],
    source: tuple[int, int],
    destination: tuple[int, int],
) -> dict[int, bytes]:
    """Of ``rtp_payloads_by_seq``'s flows, the one from a port in ``source`` to a port in
    ``destination`` (there must be exactly one)."""
    found = [
        packets
        for (src, dst), packets in flows.items()
        if inside(src, source) and inside(dst, destination)
    ]
    assert len(found) == 1, (source, destination, list(flows))
    return found[0]
