"""benchmarks/srtp_protect.py --contexts: SRTP over many sessions at once, three ways (a
benchmark that broke would only be noticed when somebody needs its numbers)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.benchmarks.benchmark_modules import load_benchmark

SCRIPT = Path(__file__).parents[3] / "benchmarks" / "srtp_protect.py"
WAYS = ["libsrtp, in place (the relay's)", "libsrtp, bytes", "srtp_python (pre-keyed contexts)"]


def test_it_prints_each_way_for_each_number_of_sessions() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--packets", "60", "--repeats", "1", "--contexts", "1", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "gateway.core.media.srtp_python " in result.stdout.splitlines()[0]
    headings = re.findall(r"^AES_CM_128_HMAC_SHA1_80 over (\d+) session\(s\)", result.stdout, re.M)
    assert headings == ["1", "3"]
    rows = re.findall(r"^(\S.*?)\s+([\d.]+)\s+([\d.]+)$", result.stdout.split("over 1 ")[1], re.M)
    assert [way for way, _, _ in rows] == WAYS * 2
    assert all(float(protect) > 0 and float(unprotect) > 0 for _, protect, unprotect in rows)


def test_a_way_that_drops_packets_stops_the_run_instead_of_timing_it() -> None:
    bench = load_benchmark("srtp_protect")
    packets = bench.contexts_packets(2, 3)
    assert bench.round_robin(lambda index: len, packets, 1) > 0
    with pytest.raises(SystemExit, match="session 0 dropped packet 0"):
        bench.round_robin(lambda index: lambda packet: None, packets, 1)
    with pytest.raises(SystemExit, match="dropped"):
        bench.round_robin(lambda index: lambda packet: -1, packets, 1)


def test_each_session_has_its_own_key_and_ssrc() -> None:
    bench = load_benchmark("srtp_protect")
    packets = bench.contexts_packets(3, 2)
    assert len({bench.context_key(index) for index in range(3)}) == 3
    assert len({packet[0][8:12] for packet in packets}) == 3
    assert [len(per_session) for per_session in packets] == [2, 2, 2]
