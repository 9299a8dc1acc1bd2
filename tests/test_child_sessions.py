"""A process a test starts in a session of its own dies with the test run.

A signal to the run's process group (``timeout``, a cancelled CI job) does not reach such a
child, and a pytest killed alone (SIGKILL) leaves every child running: an MDF, a gateway or a
benchmark script that ran on for hours holding its ports. Each gets a parent-death signal
(tests/interop/harness/processes.py ``die_with_parent``). The PostgreSQL server, which pg_ctl
daemonizes, has a watcher instead (tests/pgcluster.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent
# Children meant to outlive the test process: the cluster's watcher acts once it is gone.
OUTLIVE = {"tests/pgcluster.py"}


def _own_session_starts(path: Path) -> list[ast.Call]:
    calls = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            value = keyword.value
            never = isinstance(value, ast.Constant) and not value.value
            if keyword.arg == "start_new_session" and not never:
                calls.append(node)
    return calls


def test_every_child_in_a_session_of_its_own_dies_with_the_test_process() -> None:
    starts = {path: _own_session_starts(path) for path in sorted(ROOT.rglob("*.py"))}
    assert sum(map(len, starts.values())) >= 5, "the scan found none: tests/ moved?"
    offences = [
        f"{path.relative_to(ROOT.parent)}:{call.lineno}"
        for path, calls in starts.items()
        for call in calls
        if str(path.relative_to(ROOT.parent)) not in OUTLIVE
        and not any(
            keyword.arg == "preexec_fn" and "die_with_parent" in ast.unparse(keyword.value)
            for keyword in call.keywords
        )
    ]
    assert offences == [], "give it preexec_fn=die_with_parent:\n" + "\n".join(offences)


def _popens(path: Path) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("Popen")
    ]


def test_every_process_a_benchmark_starts_dies_with_the_benchmark() -> None:
    # A benchmark killed alone left its gateways (in sessions of their own), sipp, stunnel and
    # rtpengine running, holding ports and a core (benchmarks/bench_children.py).
    benchmarks = ROOT.parent / "benchmarks"
    starts = {path: _popens(path) for path in sorted(benchmarks.glob("*.py"))}
    assert sum(map(len, starts.values())) >= 5, "the scan found none: benchmarks/ moved?"
    offences = [
        f"{path.relative_to(ROOT.parent)}:{call.lineno}"
        for path, calls in starts.items()
        for call in calls
        if not any(
            keyword.arg == "preexec_fn" and "die_with_parent" in ast.unparse(keyword.value)
            for keyword in call.keywords
        )
    ]
    assert offences == [], "give it preexec_fn=die_with_parent:\n" + "\n".join(offences)


def _multiprocessing_starts(path: Path) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(".Process")
    ]


def test_every_multiprocessing_child_of_a_benchmark_dies_with_the_benchmark() -> None:
    # The relay benchmarks' load generators (spawn) have no preexec_fn: a killed benchmark left
    # them spinning on a core; their target sets the signal in the child (bench_children.py).
    benchmarks = ROOT.parent / "benchmarks"
    starts = {path: _multiprocessing_starts(path) for path in sorted(benchmarks.glob("*.py"))}
    assert sum(map(len, starts.values())) >= 2, "the scan found none: benchmarks/ moved?"
    offences = [
        f"{path.relative_to(ROOT.parent)}:{call.lineno}"
        for path, calls in starts.items()
        for call in calls
        if not any(
            keyword.arg == "target" and ast.unparse(keyword.value) == "run_dying_with_parent"
            for keyword in call.keywords
        )
    ]
    assert offences == [], "give it target=run_dying_with_parent:\n" + "\n".join(offences)
