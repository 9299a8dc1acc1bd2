"""The interop harness's port blocks: a full session's small blocks must leave room for a
gateway's media range (CI once failed a linphone test with "no block of 100 free udp ports"
after the session's sipp and phone blocks had been scattered at random over the range); and a
concurrent test run's allocator (another process) never hands out the same ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pgcluster
import pytest

from tests import port_blocks
from tests.interop.harness import GatewayProcess, chromium, ports
from tests.port_blocks import UNIT, PortLease

ROOT = Path(__file__).parents[2]


@pytest.fixture
def fresh_allocator(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Blocks handed out here go back when the test ends: nothing outlives it that holds them.
    monkeypatch.setattr(ports, "_handed_out", set())
    monkeypatch.setattr(ports, "_cursor", None)
    # Linux's default, whatever this machine says: the regions below and above it are known.
    monkeypatch.setattr(ports, "_ephemeral_range", lambda: (32768, 60999))
    lent: dict[int, list[int]] = {}
    monkeypatch.setattr(port_blocks, "_lent", lent)
    yield
    for fd, _ in lent.values():
        os.close(fd)  # the units' locks, which the session's own blocks do not share


def test_a_session_of_small_blocks_still_leaves_a_gateways_media_range(
    fresh_allocator: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3000 sipp-sized blocks (12,000 ports, about half the range below the ephemeral ports):
    # at random places they would leave no 100 ports in a row; packed, they leave plenty.
    # The packing alone is under test, so every port counts as bindable and no unit as another
    # process's, and none is locked: the real locks took 120 units at once, more than were left
    # while other test runs on the machine held theirs (helpers' concurrent runs failed here).
    monkeypatch.setattr(ports, "claimed", lambda ports: False)
    monkeypatch.setattr(ports, "lend", lambda ports: True)
    monkeypatch.setattr(ports, "_bindable", lambda port, kind: True)
    for _ in range(3000):
        ports.free_port_block(4)
    first = ports.free_port_block(100)
    assert first % 2 == 0
    assert len(ports._handed_out) == 3000 * 4 + 100
    assert set(range(first, first + 100)) <= ports._handed_out


def _everything_outside_the_ephemeral_range() -> set[int]:
    low, high = ports._ephemeral_range()
    return set(range(10000, low)) | set(range(high + 1, 65536))


def test_the_search_wraps_to_a_gap_below_where_the_last_block_ended(
    fresh_allocator: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    gap = ports.free_port_block(UNIT)  # a unit's worth that no other process holds, bindable
    taken = _everything_outside_the_ephemeral_range() - set(range(gap, gap + UNIT))
    monkeypatch.setattr(ports, "_handed_out", taken)
    monkeypatch.setattr(ports, "_cursor", gap + UNIT + 2)
    assert ports.free_port_block(UNIT) == gap
    with pytest.raises(RuntimeError, match="no block of 2 free udp ports"):
        ports.free_port_block(2)


def test_above_the_ephemeral_range_when_below_it_is_full(
    fresh_allocator: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    low, high = ports._ephemeral_range()
    monkeypatch.setattr(ports, "_handed_out", set(range(10000, low)))
    first = ports.free_port_block(100)
    assert first > high and first + 100 <= 65536
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ports.LOOPBACK, first + 99))


def test_a_released_block_is_handed_out_again(
    fresh_allocator: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ports.free_port_block(100)
    ports.release_port_block(first, 100)
    monkeypatch.setattr(ports, "_cursor", first)
    assert ports.free_port_block(100) == first


# The other process hands out a phone's block of RTP ports, which nothing binds until a call
# starts, and keeps it until told to exit on stdin.
OTHER = (
    "import sys; from tests.interop.harness import ports; b = ports.free_port_block(20); "
    "print(b, flush=True); sys.stdin.read()"
)


def test_another_process_never_gets_a_block_this_one_handed_out(
    fresh_allocator: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two test runs on one machine (helpers, developers): a probe's bind is no claim, as the
    phone binds its ports only later; the block's units are locked, and stepped over."""
    # As pytest runs it: tests/ on the path too (tests/conftest.py imports pgcluster so).
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": path},
    )
    try:
        assert other.stdout is not None
        theirs = int(other.stdout.readline())
        monkeypatch.setattr(ports, "_cursor", theirs)  # where this run's search would start
        mine = ports.free_port_block(20)
        assert mine >= theirs - theirs % UNIT + UNIT, (theirs, mine)  # past their unit
        ports.release_port_block(mine, 20)
        assert port_blocks._lent == {}  # its unit unlocked: another run may take it
    finally:
        other.communicate(b"", timeout=10)
    assert other.returncode == 0


def _ephemeral() -> range:
    low, high = ports._ephemeral_range()
    return range(low, high + 1)


def test_a_gateway_process_listens_on_a_locked_port_below_the_ephemeral_range(
    fresh_allocator: None, tmp_path: Path
) -> None:
    """Its SIP port is bound seconds after it is chosen (accounts added, the interpreter
    started): a port-0 probe's port, in the ephemeral range, could be any process's outgoing
    connection's by then. A block port is locked for this process and never the kernel's."""
    gateway = GatewayProcess(tmp_path)
    assert gateway.port not in _ephemeral()
    assert any(gateway.port in block for block in port_blocks.held())  # no other run's
    low, high = gateway.media_ports
    assert not low <= gateway.port <= high  # and it is not one of its media ports
    assert gateway.port != GatewayProcess(tmp_path / "second").port


def test_a_postgresql_cluster_listens_on_a_port_of_this_process_block(
    port_lease: PortLease,
) -> None:
    """Likewise the throwaway PostgreSQL server, which binds its port after initdb."""
    port = pgcluster.free_port(port_lease)
    assert port < 32768  # never the kernel's (port_blocks claims only below its range)
    assert any(port in block for block in port_blocks.held()), port


def test_a_peer_s_single_port_is_one_of_this_process_locked_units(fresh_allocator: None) -> None:
    """free_port and free_port_pair: the ports sipp, baresip's control, stunnel, openssl
    s_server or dnsmasq listen on, bound seconds after they are chosen. Never a port-0 probe's
    (in the ephemeral range, where any process's outgoing connection may take it meanwhile), but
    one of a unit this process holds: no other test, and no other test run, is given it."""
    got = [ports.free_port("udp"), ports.free_port("tcp"), ports.free_port_pair()]
    got += [ports.free_port("tcp") for _ in range(UNIT)]  # more than a unit's worth
    assert len(set(got)) == len(got)
    for port in got:
        assert port not in _ephemeral()
        assert port not in port_blocks.GATEWAY_DEFAULT_MEDIA
        assert any(port in block for block in port_blocks.held()), port
    # A block handed out next steps over them.
    block = ports.free_port_block(UNIT)
    assert not set(range(block, block + UNIT)) & set(got)


def test_single_ports_are_handed_out_one_by_one_from_one_unit(
    fresh_allocator: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit (UNIT ports, locked against other test processes) serves UNIT single ports of
    any helper before another unit is claimed: none is skipped (pgcluster.free_port skipped to
    an even port, one port in two) and none takes a unit of its own."""
    held: dict[int, int] = {}
    monkeypatch.setattr(port_blocks, "_held", held)
    monkeypatch.setattr(port_blocks, "_free", range(0))
    # Never given back: the lease's ports are of the unit locked here only (closed below).
    monkeypatch.setattr(port_blocks, "_returned", [])
    lease = PortLease()
    try:
        got = [pgcluster.free_port(lease) for _ in range(UNIT // 2)]
        got += [ports.free_port("tcp") for _ in range(UNIT // 2)]
        assert len(held) == 1, sorted(held)
        (unit,) = port_blocks.held()
        assert sorted(got) == list(unit)
    finally:
        for fd in held.values():
            os.close(fd)


def test_a_port_a_browser_page_connects_to_is_never_a_fetch_bad_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chromium refuses 10080 (and 5060, 5061, ...) before a packet leaves: the page's
    WebSocket to a gateway listening there failed in CI with nothing but "WebSocket error".
    10080 is in the tests' port units, so the browser harness steps over such ports."""
    handed_out = iter([10080, 5060, 10081])
    monkeypatch.setattr(chromium, "free_port", lambda kind: next(handed_out))
    assert chromium.page_port() == 10081
    assert {10080, 5060, 5061, 6000} <= chromium.BAD_PORTS
    assert 10081 not in chromium.BAD_PORTS
