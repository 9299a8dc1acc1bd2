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

``--phone N [--calls K] [--seed S]`` (session 43): K phones behind a NAT, each keying a call
(the real ``dtls`` engines at both ends, the real handshake task, trio's virtual clock:
tests/component/keyexchange/dtls_flood.py) while every datagram a phone sends lands at a
random place in a burst of N spoofed ClientHellos, one from each of N new sources, that
reach the port before the task runs again. Prints how many were keyed within the handshake
timeout (20 s), the median and slowest time to keys, and the phone's datagrams the queue
dropped. Since session 43 a phone that returned our cookie is queued first
(``QUEUE_VERIFIED_FIRST``, ``returns_cookie_untrusted``): only its first ClientHello depends
on its place in the burst.

``--engine N`` (session 43): the price of that check for a flood's dropped ClientHellos, under
callgrind as above (``with_engine``); ``--engine-bad-cookie N`` (review-d7) for ClientHellos of
message_seq 1 carrying a cookie that is not ours, the check's dearest case.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

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


def phones(spoofed: int, calls: int, seed: int) -> None:
    """K phones under a flood of ``spoofed`` sources per datagram (module docstring)."""
    import random
    import statistics

    import trio
    import trio.testing

    _tests_importable()
    from tests.component.keyexchange.dtls_flood import FloodOutcome, phone_under_flood

    draw = random.Random(seed)
    outcomes: list[FloodOutcome] = []

    async def one() -> None:
        outcomes.append(await phone_under_flood(spoofed, lambda n, s: draw.randint(0, s)))

    for _ in range(calls):
        trio.run(one, clock=trio.testing.MockClock(autojump_threshold=0))
    times = sorted(o.keyed_at for o in outcomes if o.keyed_at is not None)
    sent = sum(o.phone_datagrams for o in outcomes)
    dropped = sum(o.phone_dropped for o in outcomes)
    median = f"{statistics.median(times):.2f} s" if times else "-"
    slowest = f"{times[-1]:.2f} s" if times else "-"
    print(
        f"{spoofed} spoofed sources per phone datagram, {calls} calls (seed {seed}): "
        f"{len(times)} keyed (median {median}, slowest {slowest}); "
        f"phone datagrams {sent}, dropped by the queue {dropped}"
    )


def _tests_importable() -> None:
    # The repository's tests/ is a namespace package: an installed distribution that ships a
    # top-level "tests" package (one in the benchmark venv does) would win the import over it
    # (as benchmarks/call_instructions.py does).
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    namespace = types.ModuleType("tests")
    namespace.__path__ = [str(root / "tests")]
    sys.modules["tests"] = namespace


def with_engine(feed: int, *, bad_cookie: bool = False) -> None:
    """``--engine N``: N first ClientHellos (message_seq 0), each from a new source, delivered
    to a queue whose port has the real ``dtls`` engine's ``returns_cookie_untrusted`` (session
    43: a datagram the full room would drop is shown to it first); the queue's task never
    runs. (cg.2100 - cg.100) / 2000: what such a dropped datagram costs with the check.
    ``--engine-bad-cookie N`` (review-d7): ClientHellos of message_seq 1 with a cookie that is
    not ours (the last octet of a real one changed), what a flood that wants the check's
    price writes: the engine parses each and computes its HMAC(s)."""
    _tests_importable()
    import trio

    from tests.unit.keyexchange.dtls_source_pairs import ours_and_peer, stranger_for

    ours, _ = ours_and_peer(we_serve=True)
    client = stranger_for(ours)
    hello = client.packets_to_send(now=0.0)[0]
    if bad_cookie:
        ours.receive_packet_from(hello, source=("127.0.0.1", 1024), now=0.0)
        ((request, _),) = ours.addressed_packets_to_send(now=0.0)
        client.receive_packet(request, now=0.0)
        (returned,) = client.packets_to_send(now=0.0)
        assert returned[17:19] == b"\x00\x01"  # message_seq 1, our cookie in it
        at = 13 + 12 + 2 + 32  # record and handshake headers, client_version, random
        at += 1 + returned[at]  # session_id
        end = at + 1 + returned[at]  # the cookie's last octet, + 1
        hello = returned[: end - 1] + bytes([returned[end - 1] ^ 1]) + returned[end:]
    session = Session()
    handshakes = CallHandshakes(
        session,  # type: ignore[arg-type]
        lambda: {},
        on_keys=lambda: None,
        on_failure=lambda side, reason: None,
    )
    handshakes._cookie_checks = {("a", 0, False): ours.returns_cookie_untrusted}

    async def feed_all() -> None:  # deliver reads trio's clock for the engine
        for n in range(feed):
            source = ("127.0.0.1", 1025 + n % 64000)
            handshakes.deliver("a", 0, hello, source=source)

    trio.run(feed_all)
    print(f"fed {feed} ClientHellos with the engine's check; dropped {session.dropped}")


def main() -> None:
    if sys.argv[1:2] == ["--engine"] and len(sys.argv) == 3 and sys.argv[2].isdigit():
        with_engine(int(sys.argv[2]))
        return
    if sys.argv[1:2] == ["--engine-bad-cookie"] and len(sys.argv) == 3 and sys.argv[2].isdigit():
        with_engine(int(sys.argv[2]), bad_cookie=True)
        return
    if sys.argv[1:2] == ["--phone"]:
        args = sys.argv[2:]
        try:
            spoofed = int(args[0])
            options = dict(zip(args[1::2], map(int, args[2::2]), strict=True))
        except (IndexError, ValueError):
            raise SystemExit(f"usage: {sys.argv[0]} --phone N [--calls K] [--seed S]") from None
        if set(options) - {"--calls", "--seed"} or spoofed < 0:
            raise SystemExit(f"usage: {sys.argv[0]} --phone N [--calls K] [--seed S]")
        phones(spoofed, options.get("--calls", 20), options.get("--seed", 1))
        return
    feed = int(sys.argv[1]) if len(sys.argv) > 1 else 4048
    if feed < 0 or sys.argv[2:]:
        raise SystemExit(
            f"usage: {sys.argv[0]} [N] | --phone N [--calls K] [--seed S] | --engine N"
            " | --engine-bad-cookie N"
        )
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
