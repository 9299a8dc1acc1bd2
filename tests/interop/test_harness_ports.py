"""The interop harness's port blocks: a full session's small blocks must leave room for a
gateway's media range (CI once failed a linphone test with "no block of 100 free udp ports"
after the session's sipp and phone blocks had been scattered at random over the range)."""

from __future__ import annotations

import socket

import pytest

from tests.interop.harness import ports
from tests.port_blocks import UNIT


@pytest.fixture
def fresh_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks handed out here go back when the test ends: nothing outlives it that holds them.
    monkeypatch.setattr(ports, "_handed_out", set())
    monkeypatch.setattr(ports, "_cursor", None)
    # Linux's default, whatever this machine says: the regions below and above it are known.
    monkeypatch.setattr(ports, "_ephemeral_range", lambda: (32768, 60999))


def test_a_session_of_small_blocks_still_leaves_a_gateways_media_range(
    fresh_allocator: None,
) -> None:
    # 3000 sipp-sized blocks (12,000 ports, about half the range below the ephemeral ports):
    # at random places they would leave no 100 ports in a row; packed, they leave plenty.
    for _ in range(3000):
        ports.free_port_block(4)
    first = ports.free_port_block(100)
    block = set(range(first, first + 100))
    assert first % 2 == 0
    assert len(ports._handed_out) == 3000 * 4 + 100
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ports.LOOPBACK, first))
    assert block <= ports._handed_out


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
