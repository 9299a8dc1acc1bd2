"""benchmarks/sip_calls.py's gateway configuration is one ``voipgw check-config`` takes, with
and without ``--record`` (the recorder tap recording every call): a benchmark whose gateway
refused its configuration would only be noticed when somebody needs its numbers. (The
interop test tests/interop/test_benchmarks_sipp.py runs the script without ``--record``.)"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]
BENCHMARKS = ROOT / "benchmarks"


def _sip_calls() -> types.ModuleType:
    sys.path.insert(0, str(BENCHMARKS))  # its own imports (gateway_config, bench_ports)
    try:
        spec = importlib.util.spec_from_file_location("sip_calls", BENCHMARKS / "sip_calls.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.parametrize("record", [False, True], ids=["plain", "record"])
def test_the_gateways_configuration_passes_check_config(tmp_path: Path, record: bool) -> None:
    sip_calls = _sip_calls()
    recordings = tmp_path / "recordings" if record else None
    text = sip_calls.voipgw_config(
        tmp_path / "state",
        sip_calls.SipPorts(62060),
        "20000-20099",
        None,
        recordings=recordings,
    )
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
    assert ("recorder" in text) == record
    if record:
        assert f'directory = "{recordings}"' in text and "all_calls = true" in text
