"""Ports on 127.0.0.1 for interop tests, and waiting until a peer listens on one.

Every peer the harness starts (the gateway, sipp, baresip, linphonec, stunnel, openssl s_server,
dnsmasq, dumpcap) needs ports chosen by the test, because none of them can report a port picked
by the kernel. A port is "free" when a probe could bind it a moment ago; another process may take
it before the peer binds it, seconds later. So no port handed out here is a port-0 probe's (in
the kernel's ephemeral range, where any process's outgoing connection or port-0 bind may take it
meanwhile), and each is locked against every other test process, another run's included, through
tests/port_blocks.py: a single port (``free_port``, ``free_port_pair``) from the units this process
holds there, a block (``free_port_block``) from units locked (``lend``) until it is released, so a
concurrent run's allocator steps over them. Within the process, each port is handed out once.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path
from typing import Literal

from tests.port_blocks import (
    GATEWAY_DEFAULT_MEDIA,
    UNIT,
    claimed,
    give_back,
    lend,
    overlaps_default_media,
    port_block,
)

#: Interop tests bind and send to the loopback address only, never a routable one.
LOOPBACK = "127.0.0.1"

Kind = Literal["udp", "tcp", "both"]

# Ports handed out in this process, so two allocations in one session never return the same one.
_handed_out: set[int] = set()
_random = random.Random()
# Where the next search for a block starts (free_port_block); None until the first.
_cursor: int | None = None


def _bindable(port: int, kind: Kind) -> bool:
    types = {
        "udp": [socket.SOCK_DGRAM],
        "tcp": [socket.SOCK_STREAM],
        "both": [socket.SOCK_DGRAM, socket.SOCK_STREAM],
    }[kind]
    sockets = []
    try:
        for sock_type in types:
            sock = socket.socket(socket.AF_INET, sock_type)
            sockets.append(sock)
            sock.bind((LOOPBACK, port))
        return True
    except OSError:
        return False
    finally:
        for sock in sockets:
            sock.close()


def free_port(kind: Kind = "udp") -> int:
    """A port on 127.0.0.1 free for ``kind`` ("udp", "tcp" or "both") and not handed out before,
    for a peer that binds it later (a listener's port on its command line or in its config).

    From this process's units of tests/port_blocks.py (``port_block``), which no other test
    process is given while this one runs, below the kernel's ephemeral range; never given back
    (a stopped peer's successor may take its port over). Checked bindable now as well: a program
    outside the tests may have bound it since its unit was claimed.
    """
    for _ in range(UNIT):
        port = port_block(1, even=False)[0]
        if _bindable(port, kind):
            return port
    raise RuntimeError(f"no free {kind} port on {LOOPBACK} in {UNIT} tries")


def free_port_pair() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (a SIP listener binds both)."""
    return free_port("both")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _regions(count: int) -> list[tuple[int, int]]:
    """The first and last port a block of ``count`` may start on, per region the kernel never
    picks ports from for other programs' sockets: 10000 up to its ephemeral range, and above
    that range (Debian: 61000-65535; room when a machine's ephemeral range starts low)."""
    low, high = _ephemeral_range()
    regions = [(10000, min(low, 65536) - count), (max(high + 1, 10000), 65536 - count)]
    return [(first, last) for first, last in regions if last >= first]


def free_port_block(count: int, kind: Kind = "udp", *, align: int = 2) -> int:
    """First port of ``count`` consecutive ports free for ``kind``, none handed out before.

    The block starts on a multiple of ``align`` (RTP on even ports, RTCP on the next odd one,
    RFC 3550 §11) and lies outside the kernel's ephemeral range (:func:`_regions`).

    Blocks are handed out next-fit: each search starts where the last block ended (the first at
    a random port, so two runs on one machine start apart) and walks every region once,
    wrapping at the top. Scattered at random, the small blocks of a session (sipp, phones) left
    no 100 free ports in a row once, and a gateway's media range failed to find a place.
    """
    global _cursor
    regions = _regions(count)
    if not regions:
        raise RuntimeError(f"no room for {count} ports outside the ephemeral range")
    if _cursor is None:
        _cursor = _random.randrange(regions[0][0], regions[0][1] + 1)
    cursor = _cursor
    # The region the cursor is in (or the next one above it), then the others, wrapping; last
    # the start of the cursor's region, below the cursor.
    first = next((i for i, (_, last) in enumerate(regions) if cursor <= last), 0)
    ordered = regions[first:] + regions[:first]
    stretches = [(max(ordered[0][0], cursor), ordered[0][1]), *ordered[1:]]
    stretches.append((ordered[0][0], min(cursor - 1, ordered[0][1])))
    for low, high in stretches:
        base = _aligned(low, align)
        while base <= high:
            conflict = _first_conflict(range(base, base + count), kind)
            if conflict is None and not lend(range(base, base + count)):
                conflict = base - base % UNIT + UNIT  # another process locked a unit just now
            if conflict is None:
                _handed_out.update(range(base, base + count))
                _cursor = base + count
                return base
            base = _aligned(conflict, align)
    raise RuntimeError(f"no block of {count} free {kind} ports on {LOOPBACK}")


def _aligned(port: int, align: int) -> int:
    return port + (-port % align)


def _first_conflict(ports: range, kind: Kind) -> int | None:
    """None when every port of ``ports`` may be handed out, else the first port past the
    conflict found, where the search goes on."""
    for port in reversed(ports):
        if port in _handed_out:
            return port + 1
    if overlaps_default_media(ports):
        # A gateway whose config names no media range binds these (tests/port_blocks.py).
        return GATEWAY_DEFAULT_MEDIA.stop
    for unit_start in range(ports.start - ports.start % UNIT, ports.stop, UNIT):
        # Another test process's block (tests/port_blocks.py), or ours.
        if claimed(range(unit_start, unit_start + UNIT)):
            return unit_start + UNIT
    for port in ports:
        if not _bindable(port, kind):
            return port + 1
    return None


def release_port_block(first: int, count: int) -> None:
    """Ports of a block whose user has exited may be handed out again: a session of hundreds
    of gateways, each with its own block of media ports, would otherwise run out of them."""
    block = range(first, first + count)
    for port in block:
        if port in _handed_out:
            _handed_out.discard(port)
            give_back(range(port, port + 1))


def _listening(port: int, kind: Literal["udp", "tcp"]) -> bool:
    # /proc/net/{udp,tcp}: "sl local_address rem_address st ...", addresses as HEXIP:HEXPORT.
    # A bound UDP socket is state 07 (unconnected), a listening TCP socket 0A (LISTEN).
    wanted_state = "07" if kind == "udp" else "0A"
    suffix = f":{port:04X}"
    for table in (f"/proc/net/{kind}", f"/proc/net/{kind}6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[1].endswith(suffix) and fields[3] == wanted_state:
                return True
    return False


def wait_listening(
    port: int,
    kind: Literal["udp", "tcp"] = "udp",
    *,
    timeout: float = 10.0,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll until some socket listens on ``port`` (UDP bound or TCP LISTEN).

    Raises RuntimeError when ``process`` exits first or after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not _listening(port, kind):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {kind} {port}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {kind} port {port} after {timeout} s")
        time.sleep(0.05)
