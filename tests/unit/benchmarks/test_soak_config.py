"""benchmarks/soak.py's gateway configuration is one ``voipgw check-config`` takes, and it grants
the callees' single REGISTER the expiry the soak asks for: its callees register once and
nothing refreshes them, so a registrar granting less (the default ``[registrar] max_expires``,
7200 s) would end every call to them with 480 partway through a long soak."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

from gateway.core.config import from_toml

ROOT = Path(__file__).parents[3]
BENCHMARKS = ROOT / "benchmarks"


def _soak() -> types.ModuleType:
    sys.path.insert(0, str(BENCHMARKS))  # its own imports (gateway_config, bench_ports, ...)
    try:
        spec = importlib.util.spec_from_file_location("soak", BENCHMARKS / "soak.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_the_gateways_configuration_passes_check_config_and_grants_the_callees_a_day(
    tmp_path: Path,
) -> None:
    soak = _soak()
    uas = {name: 62100 + 2 * index for index, name in enumerate(soak.UAS)}
    ports = soak.Ports(62060, 62062, 62064, 62066, uas, {}, 62070, 62072, "20000-20099", [])
    config = tmp_path / "voipgw.toml"
    config.write_text(soak.voipgw_config(tmp_path / "state", ports, users=10))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert soak.CALLEE_EXPIRES == 86400
    assert from_toml(config).registrar.max_expires == soak.CALLEE_EXPIRES
