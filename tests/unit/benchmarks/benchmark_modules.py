"""benchmarks/NAME.py imported as a module, for tests of a benchmark's own logic (its
configurations, its verdicts) without running it."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

BENCHMARKS = Path(__file__).parents[3] / "benchmarks"


def load_benchmark(name: str) -> types.ModuleType:
    """benchmarks/NAME.py, imported (with benchmarks/ on the path for its own imports:
    gateway_config, bench_ports, sip_calls ...)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))
