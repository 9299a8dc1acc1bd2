"""ruff and mypy are part of the test command (issue #2): style and types fail the suite."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _tool(module: str) -> list[str]:
    # Run as ``python -m`` with this interpreter, so ask this interpreter: the venv's bin
    # directory need not be on PATH (`.ci/run` calls .venv/bin/python without activating).
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: pip install -e '.[test]'")
    return [sys.executable, "-m", module]


def test_ruff_check() -> None:
    result = _run(*_tool("ruff"), "check", "gateway", "tests", "plugin_examples", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = _run(
        *_tool("ruff"), "format", "--check", "gateway", "tests", "plugin_examples", "benchmarks"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy() -> None:
    # Configuration (strict on gateway.core.sip and gateway.core.sdp) is in pyproject.toml.
    result = _run(*_tool("mypy"))
    assert result.returncode == 0, result.stdout + result.stderr
