"""benchmarks/soak.py's verdicts at the end of a run: a table that is larger drained than idle,
or a process figure past its growth threshold, is flagged LEAK?; the C allocator's free bytes
are only marked ``free`` (memory glibc keeps, not the gateway's), and its bytes in use are a
process figure like RSS. Checked on hand-made samples, no gateway started."""

from __future__ import annotations

import pytest

from tests.unit.benchmarks.benchmark_modules import load_benchmark

soak = load_benchmark("soak")


def verdicts(output: str, figures: set[str]) -> dict[str, str]:
    """The summary table's verdict column of ``figures``."""
    found = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 5 and cells[0] in figures:
            found[cells[0]] = cells[4]
    return found


def run_summary(
    growth: dict[str, float], capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, str]]:
    """soak.summary over 10 samples 1000 calls apart, each figure growing by ``growth`` per
    1000 calls (drained: its last value), 100 calls up throughout."""
    load = [
        {"t": i, "calls_started": 1000.0 * i, "calls": 100.0}
        | {key: 1e6 + per_1000 * i for key, per_1000 in growth.items()}
        for i in range(10)
    ]
    idle = {key: 1e6 for key in growth}
    drained = {key: load[-1][key] for key in growth}
    flagged = soak.summary(idle, load, drained)
    return flagged, verdicts(capsys.readouterr().out, set(growth))


def test_the_allocators_free_bytes_are_never_a_leak(capsys: pytest.CaptureFixture[str]) -> None:
    flagged, found = run_summary(
        {"malloc_free_bytes": 1e6, "workers_malloc_free_bytes": 1e6}, capsys
    )
    assert found == {"malloc_free_bytes": "free", "workers_malloc_free_bytes": "free"}
    assert flagged == 0


def test_the_allocators_bytes_in_use_are_judged_by_their_growth(
    capsys: pytest.CaptureFixture[str],
) -> None:
    flagged, found = run_summary(
        {"malloc_in_use_bytes": 200_000.0, "workers_malloc_in_use_bytes": 1_000.0}, capsys
    )
    # 200 KB per 1000 calls is past the 64 KiB threshold; 1 KB, grown drained, is not flagged.
    assert found == {"malloc_in_use_bytes": "LEAK?", "workers_malloc_in_use_bytes": "ok"}
    assert flagged == 1


def test_a_table_larger_drained_than_idle_is_flagged(capsys: pytest.CaptureFixture[str]) -> None:
    flagged, found = run_summary({"sip_transactions": 1.0}, capsys)
    assert found == {"sip_transactions": "LEAK?"}
    assert flagged == 1


def test_an_rss_is_judged_by_its_growth_less_the_allocators_free_bytes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Session 69's workers: RSS +76 KiB per 1000 calls, all of it the heap's free bytes."""
    flagged, found = run_summary(
        {
            "workers_rss_kib": 76.0,
            "workers_malloc_free_bytes": 76.0 * 1024,
            "rss_kib": 76.0,  # no free bytes grew beside it: held by the gateway
            "malloc_free_bytes": 0.0,
        },
        capsys,
    )
    assert found["workers_rss_kib"] == "ok"
    assert found["rss_kib"] == "LEAK?"
    assert flagged == 1
