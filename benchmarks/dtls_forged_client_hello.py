"""What a forged ClientHello costs the ``dtls`` engine as DTLS server (session 40: a handshake
per source, docs/media_security.md "A handshake per source"; session 41: a source other than
the SDP address is asked for a cookie first, "Cookies for other sources").

Feeds ``N`` ClientHellos, each from its own source that never returns a cookie (spoofed), to
ports' negotiations (at most ``MAX_NEW_HANDSHAKES_BURST`` to each: before session 41 each was
answered with a handshake, and past it a port dropped new sources, review-d4) and prints the
handshakes started, the HelloVerifyRequests and the octets answered. The ClientHellos and
ports are made in every run, fed only in those with ``N`` > 0, so the instructions per forged
ClientHello are the difference between two runs under callgrind (independent of the
machine's load)::

    valgrind --tool=callgrind --callgrind-out-file=cg.0 \
        python benchmarks/dtls_forged_client_hello.py 0
    valgrind --tool=callgrind --callgrind-out-file=cg.40 \
        python benchmarks/dtls_forged_client_hello.py 40

(summary of cg.40 - summary of cg.0) / 40. Not a timed test; no sockets. With ``fragmented``
after ``N`` each ClientHello is cut in two fragments, two records in its one datagram (RFC 6347
§4.2.3: what a forger writes to pass for a ClientHello longer than the path MTU; before
review-d5 that skipped the cookie). With ``restart`` after ``N`` (session 44) every port's
association is established first (a whole handshake with the peer, in every run) and each
ClientHello comes from the peer's own address and port, as a forged restart of the peer's DTLS
client on the established association would (RFC 6347 §4.2.8: asked for our cookie first).
With ``restart-unaddressed`` (session 45) the same without sources, as on an ICE leg (the port
takes DTLS from the selected pair only and feeds it without its source): the association is
established so and each ClientHello fed with ``receive_packet``; before session 45 each started
a candidate (no cookie could be asked), now each gets a HelloVerifyRequest the usual way.
"""

from __future__ import annotations

import datetime
import sys

from gateway.plugins.keyexchange.dtls_certificates import generate_identity
from gateway.plugins.keyexchange.dtls_srtp import (
    MAX_NEW_HANDSHAKES_BURST,
    DtlsKeyExchange,
    DtlsNegotiation,
)

MADE = 40
"""ClientHellos made in every run (the most that can be fed)."""


def in_two_fragments(hello: bytes) -> bytes:
    """``hello`` (one record, one whole ClientHello) as two fragments in two records."""
    message = hello[13 + 12 :]
    half = len(message) // 2
    sequence = int.from_bytes(hello[5:11], "big")
    records = b""
    for n, (offset, part) in enumerate(((0, message[:half]), (half, message[half:]))):
        handshake = hello[13:19] + offset.to_bytes(3, "big") + len(part).to_bytes(3, "big") + part
        number = (sequence + n).to_bytes(6, "big")
        records += hello[:5] + number + len(handshake).to_bytes(2, "big") + handshake
    return records


def main() -> None:
    feed = int(sys.argv[1]) if len(sys.argv) > 1 else MADE
    fragmented = sys.argv[2:] == ["fragmented"]
    unaddressed = sys.argv[2:] == ["restart-unaddressed"]
    restart = sys.argv[2:] == ["restart"] or unaddressed
    modes = ([], ["fragmented"], ["restart"], ["restart-unaddressed"])
    if not 0 <= feed <= MADE or sys.argv[2:] not in modes:
        raise SystemExit(
            f"usage: {sys.argv[0]} [0..{MADE}] [fragmented|restart|restart-unaddressed]"
        )
    now = datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC)
    ours_id = generate_identity(now=now, max_age=datetime.timedelta(days=30))
    theirs_id = generate_identity(now=now, max_age=datetime.timedelta(days=30))
    ports = []
    for _ in range(-(-MADE // MAX_NEW_HANDSHAKES_BURST)):
        ours = DtlsKeyExchange(identity=lambda: ours_id).offer(suites=[], secure_signalling=False)
        peer = DtlsKeyExchange(identity=lambda: theirs_id).answer(
            ours.local_sdp_attributes(), suites=[], secure_signalling=False
        )
        assert peer is not None
        ours.remote_sdp_attributes(peer.local_sdp_attributes())  # the peer is active: we serve
        if restart:
            established(ours, peer, unaddressed=unaddressed)
        ports.append(ours)
    hellos = []
    for _ in range(MADE):
        client = DtlsKeyExchange(identity=lambda: theirs_id).answer(
            ports[0].local_sdp_attributes(), suites=[], secure_signalling=False
        )
        assert client is not None
        hello = client.packets_to_send(now=0.0)
        hellos.append([in_two_fragments(d) for d in hello] if fragmented else hello)
    answered = 0
    for n, hello in enumerate(hellos[:feed]):
        ours = ports[n // MAX_NEW_HANDSHAKES_BURST]
        source = PEER if restart else ("127.0.0.1", 20000 + n)
        for datagram in hello:
            if unaddressed:
                ours.receive_packet(datagram, now=0.1)
            else:
                ours.receive_packet_from(datagram, source=source, now=0.1)
        answered += sum(len(d) for d, _ in ours.addressed_packets_to_send(now=0.1))
        if unaddressed:  # the core's usual way: to the selected pair
            answered += sum(len(d) for d in ours.packets_to_send(now=0.1))
    stats = [port.statistics() for port in ports]
    started = sum(s.handshakes_by_source for s in stats) + sum(
        1 for s in stats if s.datagrams_received
    )
    dropped = sum(s.dropped_rate for s in stats)
    cookies = sum(getattr(s, "hello_verify_requests", 0) for s in stats)
    if restart:
        started = sum(s.peer_restarts for s in stats)
    print(
        f"fed {feed} ClientHellos; {started} handshakes; {dropped} dropped for the rate; "
        f"{cookies} HelloVerifyRequests; answered {answered} octets"
    )


PEER = ("127.0.0.1", 40000)
"""The peer's SDP address, from which its handshake came (``restart``)."""


def established(ours: DtlsNegotiation, peer: DtlsNegotiation, *, unaddressed: bool) -> None:
    """A whole handshake between ``ours`` (the server) and ``peer`` from :data:`PEER` (fed
    without its source when ``unaddressed``)."""
    ours.note_sdp_address(PEER)
    for _ in range(20):
        for datagram in peer.packets_to_send(now=0.0):
            if unaddressed:
                ours.receive_packet(datagram, now=0.0)
            else:
                ours.receive_packet_from(datagram, source=PEER, now=0.0)
        out = [datagram for datagram, _ in ours.addressed_packets_to_send(now=0.0)]
        for datagram in out + ours.packets_to_send(now=0.0):
            peer.receive_packet(datagram, now=0.0)
        if ours.state == "established" and peer.state == "established":
            return
    raise SystemExit("the handshake did not complete")


if __name__ == "__main__":
    main()
