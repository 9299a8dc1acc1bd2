"""benchmarks/sip_calls.py ``--rounds N``: the rate ladder climbed N times, the systems' order
turned each round, and a summary of the rounds (per rate the rounds it passed in, each round's
max cps and their median). Checked with hand-made steps and a stand-in for a step's run: no
B2BUA or sipp started."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from tests.unit.benchmarks.benchmark_modules import load_benchmark

sip_calls = load_benchmark("sip_calls")

RATES = [500.0, 550.0, 600.0]


def step(system: str, rate: float, passed: bool, round_number: int = 1) -> Any:
    """A step of ``system`` at ``rate``: every call set up, or a tenth of them refused."""
    calls = int(rate * 30)
    refused = 0 if passed else calls // 10
    return sip_calls.Step(
        system=system,
        mode="noauth",
        rate=rate,
        calls=calls,
        ok_calls=calls - refused,
        failed=refused,
        retransmissions=0,
        unexpected=refused,
        cps=rate if passed else 0.9 * rate,
        p50_ms=4.0,
        p99_ms=60.0,
        max_ms=80.0,
        cpu_us=1800.0,
        b2bua_load=90.0,
        uac_load=6.0,
        uas_load=6.0,
        b2bua_wait=0.2,
        workers_load=0.0,
        window=30.0,
        note="",
        round=round_number,
    )


def squeezed(line: str) -> str:
    """``line`` with its column padding taken out."""
    return " ".join(line.split())


def test_each_rate_counts_the_rounds_it_passed_in_and_the_median_max_is_a_rate_run() -> None:
    steps = [
        # Round 1 fails at 600, round 2 at 550 (600 not reached: not passed), round 3 passes all.
        step("voipgw", 500, True, 1),
        step("voipgw", 550, True, 1),
        step("voipgw", 600, False, 1),
        step("voipgw", 500, True, 2),
        step("voipgw", 550, False, 2),
        step("voipgw", 500, True, 3),
        step("voipgw", 550, True, 3),
        step("voipgw", 600, True, 3),
    ]
    lines = sip_calls.rounds_summary(steps, ["noauth"], ["voipgw"], RATES, 3)
    assert squeezed(lines[1]) == (
        "noauth voipgw passed: 500 3/3, 550 2/3, 600 1/3; max cps 550 / 500 / 600, median 550"
    )


def test_a_round_passing_nothing_is_below_the_first_rate_an_even_count_takes_a_rate_run() -> None:
    steps = [
        step("voipgw", 500, False, 1),
        step("voipgw", 500, True, 2),
        step("voipgw", 550, True, 2),
        step("voipgw", 600, False, 2),
    ]
    lines = sip_calls.rounds_summary(steps, ["noauth"], ["voipgw"], RATES, 2)
    assert squeezed(lines[1]) == (
        "noauth voipgw passed: 500 1/2, 550 1/2, 600 0/2; max cps <500 / 550, median <500"
    )
    three = [*steps, step("voipgw", 500, True, 3), step("voipgw", 550, False, 3)]
    four = [*three, step("voipgw", 500, True, 4), step("voipgw", 550, True, 4)]
    # 0, 550, 500, 550: the lower middle of four is 500, a rate that ran (not 525).
    assert sip_calls.rounds_summary(four, ["noauth"], ["voipgw"], RATES, 4)[1].endswith(
        "median 500"
    )


class StandInSystem:
    """What ``climb`` asks of a system: whether it runs the mode, its process, its start."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.process = None
        self.started = 0

    def supports(self, mode: str) -> bool:
        return True

    def start(self, args: argparse.Namespace) -> None:
        self.started += 1
        self.process = None  # a real start sets a Popen; the stand-in's never exits


def test_rounds_turn_the_systems_order_and_a_failure_ends_that_systems_climb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fails = {("voipgw", 550.0)}  # voipgw fails at 550 in every round; sippy passes all

    def run_step(system: Any, mode: str, rate: float, args: argparse.Namespace) -> Any:
        return step(system.name, rate, (system.name, rate) not in fails)

    monkeypatch.setattr(sip_calls, "run_step", run_step)
    monkeypatch.setattr(sip_calls, "print_step", lambda s: None)
    monkeypatch.setattr(sip_calls.time, "sleep", lambda seconds: None)
    systems = {name: StandInSystem(name) for name in ("voipgw", "sippy")}
    args = argparse.Namespace(systems=["voipgw", "sippy"], rates=RATES, rounds=2, pause=0.0)

    first = sip_calls.climb(systems, "noauth", 1, args)
    second = sip_calls.climb(systems, "noauth", 2, args)

    def order(steps: list[Any]) -> list[tuple[str, float]]:
        return [(s.system, s.rate) for s in steps]

    assert order(first) == [
        ("voipgw", 500.0),
        ("sippy", 500.0),
        ("voipgw", 550.0),
        ("sippy", 550.0),
        ("sippy", 600.0),  # voipgw failed at 550: it does not run 600
    ]
    assert order(second) == [
        ("sippy", 500.0),  # turned: sippy first in round 2
        ("voipgw", 500.0),
        ("sippy", 550.0),
        ("voipgw", 550.0),
        ("sippy", 600.0),
    ]
    assert {s.round for s in first} == {1}
    assert {s.round for s in second} == {2}


def test_one_round_prints_the_summary_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(modes=["noauth"], systems=["voipgw"], rates=RATES, rounds=1)
    sip_calls.print_summary([step("voipgw", 500, True), step("voipgw", 550, False)], args)
    out = capsys.readouterr().out
    assert "Round" not in out and "Over 1 rounds" not in out
    assert "| noauth | voipgw |     500 |" in out

    args.rounds = 2
    sip_calls.print_summary([step("voipgw", 500, True, 1), step("voipgw", 500, False, 2)], args)
    out = capsys.readouterr().out
    assert "Round 1 of 2:" in out and "Round 2 of 2:" in out
    assert "| noauth | voipgw |    <500 |" in out  # round 2's table: its own steps only
    assert "passed: 500 1/2, 550 0/2, 600 0/2" in out
