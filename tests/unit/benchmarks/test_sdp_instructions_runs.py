"""benchmarks/sdp_instructions.py runs (a benchmark that broke would only be noticed when
somebody needs its numbers): without valgrind, a small N; each kind of body parsed, and the
rewrite and the look-ups of linphone's SDES offer (the sample with the most attributes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[3] / "benchmarks" / "sdp_instructions.py"


@pytest.mark.parametrize(
    ("kind", "op"),
    [
        ("sipp", "parse"),
        ("baresip", "parse"),
        ("linphone", "parse"),
        ("polycom", "parse"),
        ("linphone", "rewrite"),
        ("linphone", "look"),
    ],
)
def test_it_runs(kind: str, op: str) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), kind, op, "-n", "20"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.startswith(f"{kind} {op}: 20 operations in "), result.stdout
