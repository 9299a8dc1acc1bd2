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


# The rewrite counted with every _send's session-level calls recorded: what the gateway does, not
# a copy of what it did before (session 42 made _send's session level one pass; the benchmark
# went on counting the three steps it replaced).
_SESSION_LEVEL_CALLS = """
import runpy, sys
from gateway.core.media import session
calls = []
relayed, without_repeats = session._relayed_attributes, session._without_repeats
def relayed_spy(attributes, direction, last):
    if direction is None and last is None:
        calls.append("attributes")
    return relayed(attributes, direction, last)
def without_repeats_spy(times):
    calls.append("times")
    return without_repeats(times)
session._relayed_attributes, session._without_repeats = relayed_spy, without_repeats_spy
runpy.run_path(sys.argv[1], run_name="sdp_instructions")["run"]("linphone", "rewrite", 3)
print(" ".join(sorted(calls)))
"""


def test_rewrite_builds_the_session_level_as_the_gateway_does() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SESSION_LEVEL_CALLS, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == ["attributes"] * 3 + ["times"] * 3, result.stderr
