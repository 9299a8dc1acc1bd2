"""The gateway configurations the call benchmarks write are ones ``voipgw check-config`` takes: a
benchmark whose gateway refused its configuration would only be noticed when somebody needs its
numbers. benchmarks/sip_calls.py's with and without ``--record`` (the recorder tap recording
every call; the interop test tests/interop/test_benchmarks_sipp.py runs the script without it);
benchmarks/soak.py's, which must also grant its callees' single REGISTER the expiry the soak
asks for: they register once and nothing refreshes them, so a registrar granting less (the
default ``[registrar] max_expires``, 7200 s) would end every call to them with 480 partway
through a long soak."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.core.config import from_toml
from tests.unit.benchmarks.benchmark_modules import load_benchmark

ROOT = Path(__file__).parents[3]


def _check_config(tmp_path: Path, text: str) -> Path:
    """``text`` written to a file that ``voipgw check-config`` takes (exit status 0)."""
    config = tmp_path / "voipgw.toml"
    config.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return config


@pytest.mark.parametrize("record", [False, True], ids=["plain", "record"])
def test_sip_calls_configuration_passes_check_config(tmp_path: Path, record: bool) -> None:
    sip_calls = load_benchmark("sip_calls")
    recordings = tmp_path / "recordings" if record else None
    text = sip_calls.voipgw_config(
        tmp_path / "state",
        sip_calls.SipPorts(62060),
        "20000-20099",
        None,
        recordings=recordings,
    )
    _check_config(tmp_path, text)
    assert ("recorder" in text) == record
    if record:
        assert f'directory = "{recordings}"' in text and "all_calls = true" in text


def test_soak_configuration_passes_check_config_and_grants_the_callees_a_day(
    tmp_path: Path,
) -> None:
    soak = load_benchmark("soak")
    uas = {name: 62100 + 2 * index for index, name in enumerate(soak.UAS)}
    ports = soak.Ports(62060, 62062, 62064, 62066, uas, {}, 62070, 62072, "20000-20099", [])
    config = _check_config(tmp_path, soak.voipgw_config(tmp_path / "state", ports, users=10))
    assert soak.CALLEE_EXPIRES == 86400
    assert from_toml(config).registrar.max_expires == soak.CALLEE_EXPIRES
