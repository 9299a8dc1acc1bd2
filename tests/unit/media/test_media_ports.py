"""Media port pair allocation: even RTP port, RTCP on the next, reuse, exhaustion, release.

These bind real UDP sockets on 127.0.0.1 in RANGE, a block of this process (tests/port_blocks.py).
A port that another process happens to hold is skipped by the allocator, so the
tests assert properties, not exact port numbers, except where they control the whole range.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
from collections.abc import Iterator

import pytest

from gateway.core.config import PortRange
from gateway.core.media import ports
from gateway.core.media.errors import LocalMediaError, MediaError, PortsExhausted
from gateway.core.media.ports import PortAllocator, PortPair, rtp_ports
from tests.port_blocks import ModuleBlock

ADDRESS = "127.0.0.1"
RANGE = ModuleBlock(100, parse=PortRange.parse)


def range_low() -> int:
    """The first port of RANGE."""
    return RANGE.get().low


def can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((ADDRESS, port))
        except OSError:
            return False
        return True


@contextlib.contextmanager
def all_pairs(allocator: PortAllocator) -> Iterator[list[PortPair]]:
    """Allocate until the allocator is exhausted; close everything afterwards."""
    pairs: list[PortPair] = []
    try:
        with pytest.raises(PortsExhausted):
            while True:
                pairs.append(allocator.allocate())
        yield pairs
    finally:
        for pair in pairs:
            pair.close()


def test_rtp_ports_are_even_with_rtcp_inside_the_range() -> None:
    assert list(rtp_ports(PortRange(21000, 21007))) == [21000, 21002, 21004, 21006]
    assert list(rtp_ports(PortRange(21001, 21008))) == [21002, 21004, 21006]
    assert list(rtp_ports(PortRange(21001, 21006))) == [21002, 21004]


def test_pair_is_even_rtp_and_next_rtcp_bound_non_blocking() -> None:
    allocator = PortAllocator(ADDRESS, RANGE.get())
    with allocator.allocate() as pair:
        assert pair.rtp_port % 2 == 0
        assert pair.rtcp_port == pair.rtp_port + 1
        assert RANGE.get().low <= pair.rtp_port < pair.rtcp_port <= RANGE.get().high
        assert pair.rtp_socket.getsockname() == (ADDRESS, pair.rtp_port)
        assert pair.rtcp_socket.getsockname() == (ADDRESS, pair.rtcp_port)
        assert pair.rtp_socket.type == socket.SOCK_DGRAM
        assert pair.rtp_socket.getblocking() is False
        assert pair.rtcp_socket.getblocking() is False
        assert allocator.in_use == 1


@pytest.mark.skipif(not hasattr(socket, "SOCK_NONBLOCK"), reason="socket(2) flag of Linux")
def test_pair_sockets_are_non_blocking_from_creation(monkeypatch: pytest.MonkeyPatch) -> None:
    # The relay's reads rely on the kernel's O_NONBLOCK (an empty socket raises at once); the
    # allocator sets it in socket(2) itself, without a setblocking() system call per socket.
    def no_setblocking(self: socket.socket, flag: bool) -> None:
        raise AssertionError("setblocking() is one more system call per socket")

    monkeypatch.setattr(socket.socket, "setblocking", no_setblocking)
    allocator = PortAllocator(ADDRESS, RANGE.get())
    with allocator.allocate() as pair:
        for sock in (pair.rtp_socket, pair.rtcp_socket):
            assert fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
            assert sock.gettimeout() == 0.0
            with pytest.raises(BlockingIOError):
                sock.recv(2048)


def test_pairs_are_distinct() -> None:
    allocator = PortAllocator(ADDRESS, RANGE.get())
    with allocator.allocate() as first, allocator.allocate() as second:
        assert first.rtp_port != second.rtp_port
        assert allocator.in_use == 2


def test_closing_releases_both_ports_and_the_pair() -> None:
    allocator = PortAllocator(ADDRESS, RANGE.get())
    with allocator.allocate() as pair:
        assert not can_bind(pair.rtp_port)
        assert not can_bind(pair.rtcp_port)
    assert pair.closed
    assert pair.rtp_socket.fileno() == -1
    assert pair.rtcp_socket.fileno() == -1
    assert can_bind(pair.rtp_port)
    assert can_bind(pair.rtcp_port)
    assert allocator.in_use == 0


def test_closing_twice_releases_once() -> None:
    allocator = PortAllocator(ADDRESS, PortRange(range_low(), range_low() + 3))
    pair = allocator.allocate()
    available = allocator.available
    pair.close()
    pair.close()
    assert allocator.available == available + 1
    assert allocator.in_use == 0


def test_exhaustion_raises_a_503_error_naming_the_range() -> None:
    allocator = PortAllocator(ADDRESS, PortRange(range_low() + 10, range_low() + 17))
    with all_pairs(allocator) as pairs, pytest.raises(PortsExhausted) as info:
        allocator.allocate()
    assert 1 <= len(pairs) <= 4
    assert info.value.sip_status == 503
    assert isinstance(info.value, MediaError)
    assert f"{range_low() + 10}-{range_low() + 17}" in str(info.value)


def test_a_freed_pair_is_reused() -> None:
    allocator = PortAllocator(ADDRESS, PortRange(range_low() + 20, range_low() + 27))
    with all_pairs(allocator) as pairs:
        freed = pairs.pop(1 if len(pairs) > 1 else 0)
        freed.close()
        with allocator.allocate() as again:
            assert again.rtp_port == freed.rtp_port
            assert again.rtp_socket is not freed.rtp_socket


def test_freed_pairs_are_reused_least_recently_freed_first() -> None:
    allocator = PortAllocator(ADDRESS, PortRange(range_low() + 30, range_low() + 37))
    with all_pairs(allocator) as pairs:
        if len(pairs) < 2:
            pytest.fail(f"another process holds most of {range_low() + 30}-{range_low() + 37}")
        first, second = pairs[0], pairs[1]
        second.close()
        first.close()
        with allocator.allocate() as a, allocator.allocate() as b:
            assert (a.rtp_port, b.rtp_port) == (second.rtp_port, first.rtp_port)


def _free_block(size: int = 4) -> int:
    """An even port starting ``size`` consecutive ports free right now (other processes on the
    machine may hold any fixed port, the kernel's ephemeral range included)."""
    for low in range(range_low() + 40, RANGE.get().high - 2, 4):
        if all(can_bind(port) for port in range(low, low + size)):
            return low
    pytest.fail(f"no 4 consecutive free UDP ports in {range_low() + 40}-{RANGE.get().high}")


def test_a_pair_held_by_another_socket_is_skipped_and_nothing_leaks() -> None:
    low = _free_block()
    allocator = PortAllocator(ADDRESS, PortRange(low, low + 3))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((ADDRESS, low + 1))  # the RTCP port of the first pair
        with allocator.allocate() as pair:
            assert pair.rtp_port == low + 2
            # The first pair's RTP port was bound, then released when its RTCP port failed.
            assert can_bind(low)
        with pytest.raises(PortsExhausted), allocator.allocate(), allocator.allocate():
            pass
        assert allocator.in_use == 0
    with allocator.allocate() as pair:
        assert pair.rtp_port == low  # the squatter is gone: the skipped pair is usable again


def test_an_address_that_is_not_local_is_a_configuration_error() -> None:
    allocator = PortAllocator("192.0.2.1", RANGE.get())  # TEST-NET-1 (RFC 5737): not on this host
    with pytest.raises(OSError):
        allocator.allocate()
    assert allocator.in_use == 0
    assert allocator.available == len(rtp_ports(RANGE.get()))


def test_an_address_that_is_not_an_ip_is_refused() -> None:
    with pytest.raises(LocalMediaError, match="not an IP address"):
        PortAllocator("media.example.com", RANGE.get())


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6 support")
    allocator = PortAllocator("::1", RANGE.get())
    try:
        pair = allocator.allocate()
    except OSError as exc:
        pytest.fail(f"no ::1 on this machine: {exc}")
    with pair:
        assert pair.rtp_socket.family == socket.AF_INET6
        assert pair.address == "::1"


def test_out_of_descriptors_is_a_503_not_our_bug_with_a_warning_a_minute(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Session 63: at a service's 1024 open files the 251st call's bind raised OSError (EMFILE)
    # out of the allocator: "internal error", 500 and a traceback per call. Out of descriptors
    # is out of ports for the call (503), said once a minute with how many were refused.
    allocator = PortAllocator(ADDRESS, RANGE.get())
    held = allocator.allocate()
    free = allocator.available

    def no_descriptors(*args: object) -> socket.socket:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    clock = [1000.0]
    monkeypatch.setattr(ports.socket, "socket", no_descriptors)
    monkeypatch.setattr(ports.time, "monotonic", lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="gateway.core.media.ports"):
        for _ in range(3):
            with pytest.raises(
                PortsExhausted, match=r"^no media sockets on 127\.0\.0\.1: Too many"
            ):
                allocator.allocate()
        clock[0] += ports.OUT_OF_DESCRIPTORS_LOG_EVERY
        with pytest.raises(PortsExhausted):
            allocator.allocate()
    said = (
        " not bound since the last such line, their calls refused (503): no socket could be made"
        f" (EMFILE) with 1 of {free + 1} pairs of {RANGE.get()} in use: the process's open-files"
        " limit (see 'open files:' at the start; systemd: LimitNOFILE=)"
    )
    assert [record.getMessage() for record in caplog.records] == [
        f"media ports: 1 port pair(s){said}",
        f"media ports: 3 port pair(s){said}",
    ]
    assert (allocator.in_use, allocator.available) == (1, free)  # nothing taken, nothing lost
    monkeypatch.undo()
    pair = allocator.allocate()  # descriptors back: ports again
    pair.close()
    held.close()
