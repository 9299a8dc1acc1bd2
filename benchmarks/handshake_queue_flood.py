"""What a flood of forged handshake datagrams costs the call's handshake task's queue
(``CallHandshakes.deliver``, session 42: the room of sources that are neither the SDP
address nor a proven peer shared fairly, a longest-queue drop).

Feeds ``N`` DTLS ClientHello-shaped datagrams to one call's queue while its task never runs
(the queue stays full): the first 48 from 3 ports of one host, 16 each (all the room of
sources other than the SDP address), then each from a new port, as a flood of spoofed
sources while a phone behind a NAT sends. On main every datagram past the 48 is dropped
after the check; since session 42 each new source's takes the place of the newest of the
port with the most waiting while it has two or more (45 such swaps here: datagrams 49 to 93,
the three ports left with one each), then is dropped after the check. The instructions per
datagram are the difference between runs under callgrind (independent of the machine's
load)::

    valgrind --tool=callgrind --callgrind-out-file=cg.48 \
        python benchmarks/handshake_queue_flood.py 48
    valgrind --tool=callgrind --callgrind-out-file=cg.92 \
        python benchmarks/handshake_queue_flood.py 92
    valgrind --tool=callgrind --callgrind-out-file=cg.4048 \
        python benchmarks/handshake_queue_flood.py 4048

(cg.92 - cg.48) / 44: a datagram that takes another's place; (cg.4048 - cg.92) / 3956: one
dropped once the room is shared evenly (datagram 93, the last swap, is in that window: ~14
instructions of the quotient). No sockets, no trio run: ``deliver`` is what the
relay calls for each datagram. Not a timed test.
"""

from __future__ import annotations

import sys

from gateway.core.media.handshakes import CallHandshakes

SDP_ADDRESS = ("127.0.0.1", 4000)
HELLO = b"\x16\xfe\xfd" + bytes(10) + b"\x01" + bytes(60)


class Session:
    """The media session as ``deliver`` uses it: the SDP address, and drops counted."""

    def __init__(self) -> None:
        self.dropped = 0

    def peer_address(self, index: int, side: str, *, rtcp: bool = False) -> tuple[str, int]:
        return SDP_ADDRESS

    def count_dropped(self, side: str, reason: str, count: int = 1) -> None:
        self.dropped += count


def main() -> None:
    feed = int(sys.argv[1]) if len(sys.argv) > 1 else 4048
    if feed < 0 or sys.argv[2:]:
        raise SystemExit(f"usage: {sys.argv[0]} [N]")
    session = Session()
    handshakes = CallHandshakes(
        session,  # type: ignore[arg-type]
        lambda: {},
        on_keys=lambda: None,
        on_failure=lambda side, reason: None,
    )
    sources = [("127.0.0.1", 5001 + n % 3 if n < 48 else 5001 + n) for n in range(feed)]
    for source in sources:
        handshakes.deliver("a", 0, HELLO, source=source)
    print(f"fed {feed} datagrams; dropped {session.dropped}")


if __name__ == "__main__":
    main()
