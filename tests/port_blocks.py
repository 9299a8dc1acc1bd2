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

A block a test takes while it runs (a gateway's ``[media] ports`` written into its config) is
leased (:class:`PortLease`, the ``port_lease`` fixture of tests/conftest.py): given back when the
test ends, its processes stopped, and handed out again to the next test of this process, so that
a long run (a test repeated, a loop hunting a flaky failure) does not claim unit after unit until
none is left. A module's blocks (its relay's range, its phones' ports) are :class:`ModuleBlock`
constants, taken when the module's first test asks for them and given back when its last test
has ended. After each module (tests/conftest.py's ``_port_units_back``), :func:`trim` unlocks
every unit none of whose ports is handed out, for other runs on the machine to claim: a run holds
the units of the module it runs, not of every module it collected (blocks taken at import, held
to the end, were 54 units of a whole collection, a quarter of the region: four runs at once ran
out). A block taken at import (:func:`port_block` in a module constant) is still held until the
process exits, as is a single port a peer was given (the interop harness's ``free_port``).

The gateway's default ``[media] ports`` (30000-30999) are never handed out: a gateway whose config
names no range (a developer's on this machine; a test's fails the test, tests/media_range_guard.py)
binds them call by call, long after a probe found them free.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

LOOPBACK = "127.0.0.1"
T = TypeVar("T")
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
        # The rest of the units claimed last is given back, not dropped: dropped, it was
        # neither handed out nor returned, and trim() never unlocked its unit.
        if _free:
            _give_back_block(_free)
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
        mine = any(unit in _held or unit in _lent for unit in range(first, first + units))
        if mine or overlaps_default_media(range(first * UNIT, (first + units) * UNIT)):
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


def trim() -> None:
    """Unlock every unit of this process none of whose ports is handed out (all given back, or
    never handed out), for another test process to claim; the next claim looks from the lowest
    unit again. Called between two modules (tests/conftest.py), when no test runs: a block a
    test or a module leased is back by then, its processes stopped."""
    global _free, _next_unit
    if _free:
        _give_back_block(_free)
        _free = range(0)
    unlocked = [
        unit
        for unit in sorted(_held)
        if any(part.start <= unit * UNIT and (unit + 1) * UNIT <= part.stop for part in _returned)
    ]
    for unit in unlocked:
        os.close(_held.pop(unit))
        cut = range(unit * UNIT, (unit + 1) * UNIT)
        parts = []
        for part in _returned:
            if cut.start < part.stop and part.start < cut.stop:
                parts += [range(part.start, cut.start), range(cut.stop, part.stop)]
            else:
                parts.append(part)
        _returned[:] = [part for part in parts if len(part) > 0]
    _next_unit = LOW // UNIT


# ModuleBlocks taken while the current module runs, given back after its last test.
_module_blocks: list[ModuleBlock[Any]] = []
_module_running = False


class ModuleBlock(Generic[T]):
    """A test module's block of ``count`` ports (``RELAY_PORTS = ModuleBlock(100)``, a module
    constant), taken from :func:`port_block` when one of the module's tests first asks for it
    (:meth:`get`, :meth:`ports`, :meth:`text`, :meth:`first`: in a test or a fixture, never at
    import) and given back after the module's last test (:func:`end_module`), so that the
    units of a collected module are claimed only while it runs. ``parse`` makes what
    :meth:`get` returns of the "LOW-HIGH" text (``PortRange.parse``); without it, the range.
    A helper module's constant shared by several test modules is taken again by each,
    possibly other ports."""

    def __init__(
        self, count: int, *, even: bool = True, parse: Callable[[str], T] | None = None
    ) -> None:
        self.count = count
        self.even = even
        self._parse = parse
        self._block: range | None = None
        self._parsed: T | None = None

    def ports(self) -> range:
        if self._block is None:
            if not _module_running:
                raise RuntimeError(
                    "a ModuleBlock is taken in a test or a fixture, not at import: it is given"
                    " back when the module's tests end"
                )
            self._block = port_block(self.count, even=self.even)
            _module_blocks.append(self)
        return self._block

    def text(self) -> str:
        """The block as a ``[media] ports`` value, "LOW-HIGH" (``PortRange.parse``)."""
        block = self.ports()
        return f"{block.start}-{block.stop - 1}"

    def first(self) -> int:
        """The first port (even unless ``even`` is false): a phone's RTP port, RTCP the next."""
        return self.ports().start

    def get(self) -> T:
        """``parse`` of :meth:`text`, made once while the block is taken."""
        if self._parse is None:
            raise TypeError("a ModuleBlock without parse: ports(), text() or first()")
        if self._parsed is None:
            self._parsed = self._parse(self.text())
        return self._parsed

    def give_back(self) -> None:
        if self._block is not None:
            _give_back_block(self._block)
            self._block = None
            self._parsed = None


def start_module() -> None:
    """A module's tests begin: its ModuleBlocks may be taken."""
    global _module_running
    _module_running = True


def end_module() -> None:
    """A module's tests have ended, every fixture of theirs torn down: its ModuleBlocks are
    given back and the units left with nothing handed out unlocked (:func:`trim`)."""
    global _module_running
    _module_running = False
    for block in _module_blocks:
        block.give_back()
    _module_blocks.clear()
    trim()
