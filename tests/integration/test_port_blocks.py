"""tests/port_blocks.py: the real ports a test process takes are its own, in this process and
against a second test process on the machine (a subprocess here, as a concurrent pytest run)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests import port_blocks
from tests.port_blocks import (
    ModuleBlock,
    PortLease,
    claimed,
    held,
    port_bases,
    port_block,
    port_block_text,
)

ROOT = Path(__file__).parents[2]
# The other process takes a block and holds it (its locks) until told to exit on stdin.
OTHER = (
    "import sys; from tests.port_blocks import port_block; b = port_block(150); "
    "print(b.start, b.stop, flush=True); sys.stdin.read()"
)


def test_blocks_of_one_process_are_disjoint_even_and_bindable() -> None:
    blocks = [port_block(150), port_block(3), port_block(40)]
    ports = [port for block in blocks for port in block]
    assert len(set(ports)) == len(ports)
    assert all(block.start % 2 == 0 and len(block) > 0 for block in blocks)
    assert all(claimed(block) for block in blocks)
    for port in blocks[1]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", port))
    low, high = map(int, port_block_text(4).split("-"))
    assert high - low == 3 and low not in ports
    first, second = port_bases(2)
    assert second - first == 10 and first not in ports


def test_another_process_gets_ports_of_its_own() -> None:
    mine = port_block(150)
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None
        start, stop = map(int, other.stdout.readline().split())
        theirs = range(start, stop)
        assert len(theirs) == 150
        ours = {port for unit in held() for port in unit}
        assert set(mine) <= ours
        assert not set(theirs) & ours
        # Held by the other process: this one steps over it too.
        assert claimed(theirs)
    finally:
        other.communicate("", timeout=10)
    assert other.returncode == 0


def test_a_leased_block_is_handed_out_again_once_given_back_and_a_long_run_claims_no_unit() -> None:
    lease = PortLease()
    first, text = lease.block(20), lease.text(4)
    units = held()
    lease.release()
    again = PortLease()
    assert again.block(20) == first and again.text(4) == text  # the same ports, no new ones
    again.release()
    # A long run: ten thousand tests each leasing a gateway's media ports (200,000 ports: more
    # than every unit below the ephemeral range) claim no unit beyond those.
    for _ in range(10_000):
        each = PortLease()
        each.text(20)
        each.release()
    assert held() == units
    # A block taken for good (a module's constant) is never handed out again.
    kept = port_block(20)
    lease = PortLease()
    assert not set(lease.block(20)) & set(kept)
    lease.release()
    assert claimed(first) and claimed(kept)  # still this process's units


def test_a_modules_block_is_taken_while_it_runs_and_its_units_unlocked_after_it() -> None:
    # Taken at import, 54 units of a whole collection were held to the end of the run: four
    # runs at once claimed every unit. A ModuleBlock is taken by the module's first test that
    # asks, and its units are unlocked once the module's tests have ended (tests/conftest.py).
    block = ModuleBlock(250, parse=lambda text: tuple(map(int, text.split("-"))))
    kept = port_block(20)  # taken for good: its unit stays this process's
    ports = block.ports()
    assert block.ports() == ports and block.get() == (ports.start, ports.stop - 1)
    assert len(ports) == 250 and ports.start % 2 == 0 and claimed(ports)
    before = held()
    port_blocks.end_module()  # as between this module and the next
    try:
        mine = {port for unit in held() for port in unit}
        assert not set(ports) & mine  # unlocked: another run may claim them now
        assert set(kept) <= mine
        assert len(held()) < len(before)
        with pytest.raises(RuntimeError, match="not at import"):
            ModuleBlock(20).ports()  # between modules (at import): refused
    finally:
        port_blocks.start_module()
    again = block.ports()  # a helper's block the next module takes: its own again
    assert len(again) == 250 and not set(again) & set(kept)


def test_a_unit_is_unlocked_after_its_module_whatever_blocks_came_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A block bigger than what was left of the units claimed last claimed new ones and dropped
    # that rest, neither handed out nor given back: its unit was never unlocked, held to the
    # end of the run (a phone's 10 ports, then a relay's 100; a test's leased 20, then 100).
    mine: dict[int, int] = {}  # this test's units only: closed below whatever happens
    monkeypatch.setattr(port_blocks, "_held", mine)
    monkeypatch.setattr(port_blocks, "_free", range(0))
    monkeypatch.setattr(port_blocks, "_returned", [])
    monkeypatch.setattr(port_blocks, "_next_unit", port_blocks.LOW // port_blocks.UNIT)
    monkeypatch.setattr(port_blocks, "_module_blocks", [])
    try:
        phone, relay = ModuleBlock(10), ModuleBlock(250)
        phone.ports()
        relay.ports()
        lease = PortLease()
        lease.block(20)  # a test's gateway's, given back at its end
        lease.release()
        assert len(mine) == 4
        port_blocks.end_module()
        assert mine == {}, sorted(mine)  # every unit unlocked: nothing is handed out
    finally:
        port_blocks.start_module()
        for fd in mine.values():
            os.close(fd)
