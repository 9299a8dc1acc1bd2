"""The gateway's default ``[media] ports`` lie outside every port the tests hand out, and a test
whose gateway would bind them fails (tests/media_range_guard.py, loaded for every test).

The default (30000-30999) lay inside the region tests/port_blocks.py hands out (10000 up to the
kernel's ephemeral range): a test's gateway left on it bound, call by call, ports another test's
block had just been given (a phone's, sipp's), and so did two test runs' gateways on one machine.
The default itself stays: operators' firewall rules name it.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.config import MediaSection, PortRange
from gateway.core.media.ports import PortAllocator
from gateway.core.media.remote_relay import WorkerPool
from tests import media_range_guard, port_blocks
from tests.interop.harness import ports
from tests.port_blocks import GATEWAY_DEFAULT_MEDIA, UNIT, port_block_text

DEFAULT = PortRange.parse(MediaSection().ports)


def test_the_ports_left_out_of_the_tests_blocks_are_the_gateway_s_default() -> None:
    assert GATEWAY_DEFAULT_MEDIA.start <= DEFAULT.low
    assert DEFAULT.high < GATEWAY_DEFAULT_MEDIA.stop, (
        f"the default [media] ports moved to {MediaSection().ports}: move "
        "tests/port_blocks.py's GATEWAY_DEFAULT_MEDIA with them"
    )
    assert media_range_guard.DEFAULT == DEFAULT


@pytest.fixture
def no_real_locks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """port_blocks as if every unit were free: /dev/null descriptors for locks, every port
    bindable, a fresh start, a wide region; nothing locked for real."""
    fds: list[int] = []

    def lock(unit: int) -> int:
        fds.append(os.open(os.devnull, os.O_RDONLY))
        return fds[-1]

    monkeypatch.setattr(port_blocks, "_lock", lock)
    monkeypatch.setattr(port_blocks, "_bindable", lambda port: True)
    monkeypatch.setattr(port_blocks, "_ephemeral_low", lambda: 40000)
    monkeypatch.setattr(port_blocks, "_held", {})
    monkeypatch.setattr(port_blocks, "_free", range(0))
    yield fds
    for fd in fds:
        os.close(fd)


def test_port_block_steps_over_the_default_media_range(
    no_real_locks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(port_blocks, "_next_unit", 29500 // UNIT)
    below = port_blocks.port_block(5 * UNIT)
    assert below == range(29500, 30000)  # up to the default, not into it
    across = port_blocks.port_block(2 * UNIT)
    assert across == range(GATEWAY_DEFAULT_MEDIA.stop, GATEWAY_DEFAULT_MEDIA.stop + 2 * UNIT)


def test_the_harness_blocks_step_over_the_default_media_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "_handed_out", set())
    monkeypatch.setattr(ports, "_cursor", GATEWAY_DEFAULT_MEDIA.start - 50)
    lent: dict[int, list[int]] = {}
    monkeypatch.setattr(port_blocks, "_lent", lent)
    try:
        first = ports.free_port_block(UNIT)
        assert first >= GATEWAY_DEFAULT_MEDIA.stop, first
    finally:
        for fd, _ in lent.values():
            os.close(fd)


def test_a_relay_in_a_test_on_the_default_media_range_fails_the_test() -> None:
    with pytest.raises(pytest.fail.Exception, match="meet the gateway's default"):
        PortAllocator("127.0.0.1", DEFAULT)
    with pytest.raises(pytest.fail.Exception, match="meet the gateway's default"):
        WorkerPool("127.0.0.1", PortRange(DEFAULT.high - 9, DEFAULT.high + 10), 2)
    PortAllocator("127.0.0.1", PortRange.parse(port_block_text(4)))  # binds nothing yet


def test_a_gateway_process_on_the_default_media_range_fails_the_test(tmp_path: Path) -> None:
    # Refused before anything starts (unguarded, this child would exit at once: unknown key).
    (tmp_path / "gw.toml").write_text("[gateway]\nno_such_key = 1\n")
    with pytest.raises(pytest.fail.Exception, match="meet the gateway's default"):
        subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", "gw.toml"],
            cwd=tmp_path,
            stderr=subprocess.DEVNULL,
        ).wait(60)


@pytest.mark.parametrize(
    ("command", "config", "refused"),
    [
        (
            ["-m", "gateway", "run", "--config", "gw.toml"],
            '[sip]\nlisten = ["udp:127.0.0.1:0"]\n',
            True,
        ),
        (["-m", "gateway", "run", "--config=gw.toml"], '[media]\naddress = "127.0.0.1"\n', True),
        (["-m", "gateway", "run", "--config", "gw.toml"], '[media]\nports = "30500-30599"\n', True),
        (
            ["-m", "gateway", "run", "--config", "gw.toml"],
            '[media]\nports = "29000-29099"\n',
            False,
        ),
        (
            ["-m", "gateway", "run", "--config", "gw.toml", "--media-ports", "29000-29099"],
            "",
            False,
        ),
        (["-m", "gateway", "run", "--media-ports=29000-29099"], None, False),
        (["-m", "gateway", "run"], None, True),  # the embedded defaults
        ([".venv/bin/voipgw", "run", "--listen", "udp:127.0.0.1:0"], None, True),
        (["-m", "gateway", "run", "--config", "gw.toml"], "[media\n", False),  # refused anyway
        (["-m", "gateway", "check-config", "gw.toml"], "", False),  # starts nothing
        (["-m", "gateway", "run", "--help"], None, False),  # nor does this
    ],
)
def test_the_media_range_of_a_gateway_command(
    tmp_path: Path, command: list[str], config: str | None, refused: bool
) -> None:
    if config is not None:
        (tmp_path / "gw.toml").write_text(config)
    args = [sys.executable, *command] if command[0] == "-m" else command
    if refused:
        with pytest.raises(pytest.fail.Exception, match="meet the gateway's default"):
            media_range_guard.check_command(args, cwd=tmp_path)
    else:
        media_range_guard.check_command(args, cwd=tmp_path)


def test_the_sip_benchmarks_give_their_gateway_a_media_range() -> None:
    """sip_calls.py and soak.py run voipgw outside pytest, where the guard is not loaded: their
    config (benchmarks/gateway_config.py) takes the range as an argument without a default, and
    both pass a block of tests/port_blocks.py (benchmarks/bench_ports.py, --media-ports)."""
    path = Path(__file__).parents[1] / "benchmarks" / "gateway_config.py"
    spec = importlib.util.spec_from_file_location("voipgw_bench_gateway_config", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parameter = inspect.signature(module.gateway_config).parameters["media_ports"]
    assert parameter.default is inspect.Parameter.empty
    text = module.gateway_config(
        Path("/nonexistent"), listen=["udp:127.0.0.1:0"], media_ports="29000-29099", carrier_port=9
    )
    assert tomllib.loads(text)["media"]["ports"] == "29000-29099"
