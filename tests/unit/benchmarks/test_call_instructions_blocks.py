"""benchmarks/call_instructions.py's choice of the relay's fixed port block (docs/benchmarks.md,
session 43): without ``--media-ports`` the first usable of FIXED_MEDIA_BLOCKS, a block that
reaches the kernel's ephemeral ports or has a port some program outside the tests holds stepped
over, as tests/port_blocks.py steps over such units; with it, that block or a stop saying why.
tests/port_blocks.py's lock, probe and ephemeral bound are replaced here, so that no real lock is
taken and a benchmark or test run beside this one changes nothing."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests import port_blocks

SCRIPT = Path(__file__).parents[3] / "benchmarks" / "call_instructions.py"


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # The script puts the repository first on sys.path and its own "tests" namespace module in
    # sys.modules at import: both put back after the test.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setitem(sys.modules, "tests", sys.modules["tests"])
    spec = importlib.util.spec_from_file_location("call_instructions_blocks", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.port_blocks is port_blocks
    return module


class FakeLocks:
    """port_blocks.lend / give_back / _bindable: ``held`` blocks are another process's, a port
    in ``bound`` is held by a program outside the tests."""

    def __init__(self, held: set[int], bound: set[int]) -> None:
        self.held = held
        self.bound = bound
        self.lent: list[range] = []

    def lend(self, ports: range) -> bool:
        if ports.start in self.held:
            return False
        self.lent.append(ports)
        return True

    def give_back(self, ports: range) -> None:
        self.lent.remove(ports)

    def bindable(self, port: int) -> bool:
        return port not in self.bound


def _machine(
    monkeypatch: pytest.MonkeyPatch,
    *,
    ephemeral_low: int = 32768,
    held: set[int] | None = None,
    bound: set[int] | None = None,
) -> FakeLocks:
    locks = FakeLocks(held or set(), bound or set())
    low: Callable[[], int] = lambda: ephemeral_low  # noqa: E731
    monkeypatch.setattr(port_blocks, "_ephemeral_low", low)
    monkeypatch.setattr(port_blocks, "lend", locks.lend)
    monkeypatch.setattr(port_blocks, "give_back", locks.give_back)
    monkeypatch.setattr(port_blocks, "_bindable", locks.bindable)
    return locks


def test_the_first_free_block_by_default(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    locks = _machine(monkeypatch, held={32000})
    assert script._media_block(None) == range(32200, 32400)
    assert locks.lent == [range(32200, 32400)]


def test_a_block_reaching_the_ephemeral_ports_is_stepped_over_by_default(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ip_local_port_range from 32300: 32200 and 32400 reach it; 32000 is another run's.
    locks = _machine(monkeypatch, ephemeral_low=32300, held={32000})
    assert script._media_block(None) == range(31800, 32000)
    assert locks.lent == [range(31800, 32000)]


def test_a_block_with_a_port_bound_outside_the_tests_is_stepped_over_by_default(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The relay would skip the busy pair and count on other ports: not the same run.
    locks = _machine(monkeypatch, bound={32151})
    assert script._media_block(None) == range(32200, 32400)
    assert locks.lent == [range(32200, 32400)]  # 32000's lock given back


def test_a_named_block_is_that_block_or_a_stop_saying_why(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    locks = _machine(monkeypatch, held={32200}, bound={32001})
    with pytest.raises(SystemExit, match="--media-ports 32001: an even port"):
        script._media_block(32001)
    with pytest.raises(SystemExit, match="--media-ports 32600: an even port"):
        script._media_block(32600)
    with pytest.raises(SystemExit, match="ports 32200-32399 are held by another process"):
        script._media_block(32200)
    with pytest.raises(SystemExit, match="port 32001 of 32000-32199 will not bind"):
        script._media_block(32000)
    assert locks.lent == []
    assert script._media_block(31800) == range(31800, 32000)


def test_no_usable_default_block_says_so(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine(monkeypatch, ephemeral_low=32300, held={32000, 31800})
    with pytest.raises(SystemExit, match="media port blocks from 32000, 32200, 32400, 31800"):
        script._media_block(None)
