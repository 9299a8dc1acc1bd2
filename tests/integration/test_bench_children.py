"""benchmarks/bench_children.py: a benchmark's multiprocessing child dies with the benchmark,
killed alone (SIGKILL: no ``finally``, no multiprocessing atexit), as the relay benchmarks' load
generators must (they spun on a core after the benchmark was gone)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
# A benchmark in small: a spawn child through run_dying_with_parent, which says it runs its
# target (the signal set by then) in a file and sleeps; the benchmark prints its pid.
BENCHMARK = f"""
import multiprocessing, os, sys, time
sys.path.insert(0, {str(BENCHMARKS)!r})
from bench_children import run_dying_with_parent

def generator(ready):
    open(ready, "w").close()
    time.sleep(120)

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=run_dying_with_parent, args=(os.getpid(), generator, sys.argv[1]))
    child.start()
    print(child.pid, flush=True)
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_benchmarks_multiprocessing_child_dies_when_the_benchmark_is_killed(
    tmp_path: Path,
) -> None:
    script = tmp_path / "benchmark.py"
    script.write_text(BENCHMARK)
    ready = tmp_path / "ready"
    benchmark = subprocess.Popen(
        [sys.executable, str(script), str(ready)], stdout=subprocess.PIPE, text=True
    )
    child = 0
    try:
        assert benchmark.stdout is not None
        child = int(benchmark.stdout.readline())
        deadline = time.monotonic() + 60  # a bound for a hang, not a timing
        while not ready.exists():
            assert time.monotonic() < deadline, "the child never ran its target"
            time.sleep(0.05)
        benchmark.send_signal(signal.SIGKILL)
        benchmark.wait()
        deadline = time.monotonic() + 60
        while _alive(child):
            assert time.monotonic() < deadline, "the child outlived the benchmark"
            time.sleep(0.05)
    finally:
        if benchmark.poll() is None:
            benchmark.kill()
            benchmark.wait()
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)
