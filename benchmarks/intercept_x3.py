"""Benchmark what interception adds per RTP packet of an intercepted call (X3), beside what the
relay spends on the same packet anyway (one SRTP protect), measured in the same run.

Run from the repository root::

    python benchmarks/intercept_x3.py
    python benchmarks/intercept_x3.py --packets 50000 --repeats 7

A call's sink (gateway/plugins/taps/intercept) gets each decrypted packet the relay forwards and
queues one X3 PDU per task and destination: the PDU header, sequence number, timestamp,
network function ID (``ne_identifier``, here 9 octets) and matched target attributes, then the
packet. Measured: ``InterceptSink.packet`` for a 172-octet
RTP packet (12-octet header, 20 ms of G.711) with one task and one destination, one task and two
destinations, and two tasks (the caller and the callee both targets), the links' queues large
enough to take every PDU (the links are not connected: what is measured is the call's side, the
work done in the relay's task). The yardstick: ``SrtpSession.protect_rtp`` of the same packet
(AES_CM_128_HMAC_SHA1_80), what the relay does per packet on an SRTP leg. Figures are the best
of ``--repeats`` runs, per packet, in microseconds; "PDU octets" is what goes to the mediation
function per packet and destination.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import struct
import sys
import time
import uuid
from collections.abc import Callable

if importlib.util.find_spec("gateway") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.core.interfaces import SrtpKeys
from gateway.core.media.srtp import SUITES, SrtpSession
from gateway.plugins.taps.intercept import InterceptSink, pdu
from gateway.plugins.taps.intercept.delivery import DeliveryLink
from gateway.plugins.taps.intercept.targets import TargetIdentifier
from gateway.plugins.taps.intercept.tasks import Destination, Match, Task

SUITE = "AES_CM_128_HMAC_SHA1_80"
PACKET = struct.pack("!BBHII", 0x80, 0, 1, 160, 0x1234ABCD) + b"\xd5" * 160


def packets(count: int) -> list[bytes]:
    return [
        struct.pack("!BBHII", 0x80, 0, n & 0xFFFF, 160 * n, 0x1234ABCD) + PACKET[12:]
        for n in range(count)
    ]


def best_per_packet(run: Callable[[list[bytes]], None], data: list[bytes], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(data)
        best = min(best, time.perf_counter() - start)
    return best / len(data) * 1e6


def srtp_protect(data: list[bytes]) -> None:
    length = SUITES[SUITE].key_salt_length
    session = SrtpSession(SrtpKeys(SUITE, bytes(range(length)), bytes(range(1, length + 1))))
    protect = session.protect_rtp
    for packet in data:
        protect(packet)


def sink_with(
    tasks: int, destinations: int, queue: int
) -> tuple[InterceptSink, list[DeliveryLink]]:
    """A call's sink with ``tasks`` matching tasks, each delivering to the same
    ``destinations`` links (not connected: their queues keep what the sink gives them)."""
    made: dict[uuid.UUID, DeliveryLink] = {}
    for _ in range(destinations):
        did = uuid.uuid4()
        made[did] = DeliveryLink(
            Destination(did, ("127.0.0.1", 9)),
            ssl_context=None,
            queue=queue,
            keepalive_interval=30.0,
            version=5,
        )
    target = TargetIdentifier("e164Number", "+4930123456")
    matches = [
        Match(Task(uuid.uuid4(), (target,), "X2andX3", tuple(made)), "a" if n == 0 else "b", target)
        for n in range(tasks)
    ]

    def links_for(match: Match, kind: str) -> list[DeliveryLink]:
        return [made[did] for did in match.task.dids]

    # The Network Function ID every PDU carries, as Interception encodes it (ne_identifier).
    network_function = pdu.encode_attributes(((pdu.NETWORK_FUNCTION_ID, b"sbc-fra-1"),))
    sink = InterceptSink(
        matches, links_for, 0x0102030405060708, time.time, network_function=network_function
    )
    return sink, list(made.values())


def intercept(tasks: int, destinations: int) -> Callable[[list[bytes]], None]:
    def run(data: list[bytes]) -> None:
        sink, links = sink_with(tasks, destinations, queue=len(data) * tasks + 1)
        packet = sink.packet
        for rtp in data:
            packet("0", "a_to_b", rtp, now=0.0)
        if sum(link.dropped for link in links):
            raise SystemExit("a PDU was dropped: the figures would lie")

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = packets(args.packets)
    print(f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}")
    print(f"{args.packets} packets of {len(PACKET)} octets, best of {args.repeats} runs\n")
    reference = best_per_packet(srtp_protect, data, args.repeats)
    print(f"{'per packet':46} {'µs':>8} {'x SRTP protect':>15}")
    print(f"{'SRTP protect (' + SUITE + ')':46} {reference:8.2f} {1.0:15.2f}")
    for tasks, destinations, label in (
        (1, 1, "X3: one task, one destination"),
        (1, 2, "X3: one task, two destinations"),
        (2, 1, "X3: two tasks (caller and callee), one each"),
    ):
        cost = best_per_packet(intercept(tasks, destinations), data, args.repeats)
        print(f"{label:46} {cost:8.2f} {cost / reference:15.2f}")
    # The PDU the sink queues for one packet: header, sequence, timestamp, target, the packet.
    x3 = pdu.Pdu(
        pdu.X3,
        pdu.FORMAT_RTP,
        pdu.FROM_TARGET,
        uuid.uuid4(),
        0,
        (
            pdu.sequence_attribute(0),
            pdu.timestamp_attribute(0.0),
            (pdu.NETWORK_FUNCTION_ID, b"sbc-fra-1"),
            (pdu.MATCHED_TARGET, b"+4930123456"),
        ),
        PACKET,
    )
    size = len(pdu.encode_pdu(x3))
    print(f"\nPDU octets per packet and destination: {size} ({len(PACKET)} of them the packet)")


if __name__ == "__main__":
    main()
