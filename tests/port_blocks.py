"""Blocks of real ports on 127.0.0.1 for tests, never shared by two test processes.

Tests that bind a real socket bind port 0 where they can. Where a port must be known before
anything binds it (the media relay's configured range, a phone's port written into an SDP that is
built first), the test takes it from :func:`port_block` or :func:`port_bases`, usually at import.

The ports from 10000 up to the kernel's ephemeral range (Linux: 32768-60999, where port-0 binds
land, so no test's port-0 socket takes one) are split into units of 100. A block is one or more
consecutive units that this process claims by holding an exclusive ``flock`` on each unit's lock
file in /tmp/voipgw-test-ports until it exits (the kernel drops the locks however it ends), and
that a probe could bind (UDP and TCP): a second pytest run on the machine, another developer's or
an agent's, claims other units, and a program outside the tests that holds a port is stepped
over. Within a process, blocks are handed out in order, so two test modules never share a port.

Blocks taken at import (module constants) are held until the process exits: a whole collection
takes about 54 units, the same for a run of any length. A block a test takes while it runs
(a gateway's ``[media] ports`` written into its config) is leased instead (:class:`PortLease`,
the ``port_lease`` fixture of tests/conftest.py): given back when the test ends, its processes
stopped, and handed out again to the next test of this process, so that a long run (a test
repeated, a loop hunting a flaky failure) does not claim unit after unit until none is left.

The gateway's default ``[media] ports`` (30000-30999) are never handed out: a gateway whose config
names no range (a developer's on this machine; a test's fails the test, tests/media_range_guard.py)
binds them call by call, long after a probe found them free.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
UNIT = 100
LOW = 10_000
# /tmp itself, not tempfile.gettempdir(): TMPDIR may differ between two users' runs.
LOCK_DIR = Path("/tmp/voipgw-test-ports")
# The gateway's default [media] ports (gateway/core/config.py, MediaSection.ports), left out of
# every block here and in tests/interop/harness/ports.py; tests/test_media_range_guard.py fails
# when the default moves away from this range.
GATEWAY_DEFAULT_MEDIA = range(30000, 31000)

_held: dict[int, int] = {}  # unit -> its lock file's descriptor, open until the process exits
# Units locked for tests/interop/harness/ports.py's blocks: unit -> [lock file's descriptor,
# ports of it handed out], unlocked when the last of those ports is given back.
_lent: dict[int, list[int]] = {}
_next_unit = LOW // UNIT  # the first unit not yet tried
_free = range(0)  # the rest of the units claimed last, not yet handed out
# Blocks given back (PortLease.release): still this process's units, handed out again first.
_returned: list[range] = []


def _ephemeral_low() -> int:
    try:
        low, _high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return min(int(low), 32768)
    except (OSError, ValueError):
        return 32768


def _lock(unit: int) -> int | None:
    """A descriptor holding unit's lock, or None when another process holds it."""
    try:
        LOCK_DIR.mkdir()
    except FileExistsError:
        pass
    else:
        LOCK_DIR.chmod(0o1777)  # every user's runs lock here (sticky, as /tmp)
    path = LOCK_DIR / f"{unit * UNIT}.lock"
    try:
        # Read-only is enough for flock; opening without O_CREAT first, because Linux's
        # fs.protected_regular refuses O_CREAT on another user's file in a sticky directory.
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


def overlaps_default_media(ports: range) -> bool:
    """Whether ``ports`` meets :data:`GATEWAY_DEFAULT_MEDIA`."""
    return ports.start < GATEWAY_DEFAULT_MEDIA.stop and GATEWAY_DEFAULT_MEDIA.start < ports.stop


def port_block(count: int, *, even: bool = True) -> range:
    """``count`` consecutive ports of this process alone; the first is even (RTP on an even
    port, RTCP on the next, RFC 3550 §11) unless ``even`` is false (a single port for a peer's
    SIP or TLS listener: no port is skipped)."""
    global _free
    for index, returned in enumerate(_returned):
        start = returned.start + (returned.start % 2 if even else 0)
        if start + count <= returned.stop:
            block = range(start, start + count)
            rest = [range(returned.start, start), range(block.stop, returned.stop)]
            _returned[index : index + 1] = [part for part in rest if part]
            return block
    start = _free.start + (_free.start % 2 if even else 0)
    if start + count > _free.stop:
        _free = _claim(-(-count // UNIT))
        start = _free.start
    block = range(start, start + count)
    _free = range(block.stop, _free.stop)
    return block


def _claim(units: int) -> range:
    """The ports of ``units`` consecutive units, locked for this process and all bindable."""
    global _next_unit
    first = _next_unit
    while (first + units) * UNIT <= _ephemeral_low():
        if overlaps_default_media(range(first * UNIT, (first + units) * UNIT)):
            first += 1
            continue
        fds: list[int] = []
        for unit in range(first, first + units):
            fd = _lock(unit)
            if fd is None:
                break
            fds.append(fd)
        ports = range(first * UNIT, (first + units) * UNIT)
        if len(fds) == units and all(_bindable(port) for port in ports):
            _held.update(zip(range(first, first + units), fds, strict=True))
            _next_unit = first + units
            return ports
        for fd in fds:
            os.close(fd)
        first += 1
    raise RuntimeError(f"no {units * UNIT} free ports on {LOOPBACK} below {_ephemeral_low()}")


def port_bases(count: int, spacing: int = 10) -> tuple[int, ...]:
    """``count`` even first ports, ``spacing`` apart in one block: each base has its
    ``spacing`` ports (RTP, RTCP, a second stream ...)."""
    return tuple(port_block(count * spacing)[::spacing])


def port_block_text(count: int) -> str:
    """A :func:`port_block` as a ``[media] ports`` value, "LOW-HIGH" (``PortRange.parse``)."""
    block = port_block(count)
    return f"{block.start}-{block.stop - 1}"


def claimed(ports: range) -> bool:
    """Whether a test process (this one included) holds a unit that ``ports`` overlap: for an
    allocator that picks ports some other way (tests/interop/harness/ports.py), to step over
    the blocks handed out here. Units :func:`lend` locked for this process are not claimed:
    that allocator knows which of their ports it handed out."""
    for unit in range(ports.start // UNIT, (ports.stop - 1) // UNIT + 1):
        if unit in _lent:
            continue
        if unit in _held:
            return True
        fd = _lock(unit)
        if fd is None:
            return True
        os.close(fd)
    return False


def held() -> list[range]:
    """The ports of every unit this process holds."""
    return [range(unit * UNIT, (unit + 1) * UNIT) for unit in sorted(_held)]


def lend(ports: range) -> bool:
    """Lock every unit ``ports`` overlap for this process, as :func:`port_block` does, for an
    allocator that hands out smaller blocks itself (tests/interop/harness/ports.py): another
    test process steps over them (:func:`claimed`) until :func:`give_back` returned every port.
    A probe's bind is no claim: a phone binds its RTP ports only when a call starts, and
    another run's allocator, probing before that, took the same ports. False, locking nothing,
    when another process holds one of the units."""
    units = range(ports.start // UNIT, (ports.stop - 1) // UNIT + 1)
    locked: dict[int, int] = {}
    for unit in units:
        if unit in _lent:
            continue
        fd = None if unit in _held else _lock(unit)
        if fd is None:
            for mine in locked.values():
                os.close(mine)
            return False
        locked[unit] = fd
    for unit, fd in locked.items():
        _lent[unit] = [fd, 0]
    for port in ports:
        _lent[port // UNIT][1] += 1
    return True


def give_back(ports: range) -> None:
    """Ports :func:`lend` locked that their user is done with; a unit none of whose ports is
    handed out any more is unlocked."""
    for port in ports:
        entry = _lent.get(port // UNIT)
        if entry is None:
            continue
        entry[1] -= 1
        if entry[1] <= 0:
            os.close(entry[0])
            del _lent[port // UNIT]


def _give_back_block(block: range) -> None:
    """``block`` for :func:`port_block` to hand out again, merged with its neighbours."""
    merged = sorted([*_returned, block], key=lambda r: r.start)
    _returned.clear()
    for part in merged:
        if _returned and _returned[-1].stop == part.start:
            _returned[-1] = range(_returned[-1].start, part.stop)
        else:
            _returned.append(part)


class PortLease:
    """Blocks one test takes while it runs (:func:`port_block`, :func:`port_block_text`), given
    back by :meth:`release` once its processes have stopped (the ``port_lease`` fixture does
    it at the test's teardown): the next test of this process gets them again instead of new
    units. Never for a block kept beyond the test (a module constant, a cached port)."""

    def __init__(self) -> None:
        self.blocks: list[range] = []

    def block(self, count: int, *, even: bool = True) -> range:
        block = port_block(count, even=even)
        self.blocks.append(block)
        return block

    def text(self, count: int) -> str:
        """A leased block as a ``[media] ports`` value, "LOW-HIGH"."""
        block = self.block(count)
        return f"{block.start}-{block.stop - 1}"

    def release(self) -> None:
        for block in self.blocks:
            _give_back_block(block)
        self.blocks.clear()
