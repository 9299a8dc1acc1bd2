"""The capacity search of benchmarks/relay_srtp.py (``--capacity``), which produces the relay
figures docs/benchmarks.md holds against issue 7's targets: driven here by a model relay with a
known capacity instead of sockets, so the bracketing, the step between and the generator's limit
are checked exactly."""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio

BENCHMARKS = Path(__file__).parents[3] / "benchmarks"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("relay_srtp", BENCHMARKS / "relay_srtp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("relay_srtp", module)
    spec.loader.exec_module(module)
    return module


relay_srtp = _load()
CALLS = 1000


def _args(**overrides: Any) -> argparse.Namespace:
    values: dict[str, Any] = {"rate": 50.0, "capacity_step": 1.1, "capacity_steps": 10}
    values.update(overrides)
    return argparse.Namespace(**values)


class ModelRelay:
    """Relays up to ``capacity`` kpps without loss and loses the rest; the generator offers at
    most ``generator`` kpps. Records the per-call rate of every step it is run at."""

    def __init__(self, capacity: float, generator: float = math.inf) -> None:
        self.capacity = capacity
        self.generator = generator
        self.rates: list[float] = []

    async def __call__(self, step_args: argparse.Namespace) -> Any:
        self.rates.append(step_args.rate)
        offered = min(CALLS * 2 * step_args.rate / 1000, self.generator)
        relayed = min(offered, self.capacity)
        return relay_srtp.Result(
            scenario=relay_srtp.SCENARIOS["srtp-srtp"],
            calls=CALLS,
            relay="voipgw",
            window=4.0,
            offered_kpps=offered,
            relayed_kpps=relayed,
            loss=100.0 * (1 - relayed / offered),
            cpu_us=1000.0 / self.capacity,
            relay_load=100.0,
            generator_load=50.0,
            generator_max_load=50.0,
            others_load=1.0,
            relay_wait=0.0,
            generator_wait=0.0,
            verified=6000,
            mismatched=0,
            send_errors=0,
            extra="",
            rate=step_args.rate,
        )


def _search(relay: ModelRelay, **overrides: Any) -> Any:
    scenario = relay_srtp.SCENARIOS["srtp-srtp"]
    return trio.run(relay_srtp.find_capacity, scenario, "voipgw", _args(**overrides), relay)


def test_steps_up_while_passing_then_tries_between_the_bracket() -> None:
    relay = ModelRelay(capacity=120.0)  # 60 packets/s per phone at 1000 calls
    capacity = _search(relay)
    assert relay.rates == pytest.approx([50.0, 55.0, 60.5, math.sqrt(55.0 * 60.5)])
    assert capacity.passed.rate == pytest.approx(math.sqrt(55.0 * 60.5))
    assert capacity.passed.relayed_kpps == pytest.approx(2 * math.sqrt(55.0 * 60.5))
    assert capacity.failed.rate == pytest.approx(60.5)
    assert not capacity.generator_bound


def test_steps_down_while_failing() -> None:
    relay = ModelRelay(capacity=80.0)  # below the first step's 100 kpps
    capacity = _search(relay)
    down = [50.0, 50.0 / 1.1, 50.0 / 1.1**2, 50.0 / 1.1**3]
    assert relay.rates[:4] == pytest.approx(down)
    assert relay.rates[4] == pytest.approx(math.sqrt(down[3] * down[2]))
    assert capacity.passed.relayed_kpps <= 80.0
    assert capacity.failed.rate == pytest.approx(down[2])


def test_a_step_the_generator_cannot_offer_ends_the_search() -> None:
    relay = ModelRelay(capacity=500.0, generator=100.0)
    capacity = _search(relay)
    assert relay.rates == pytest.approx([50.0, 55.0])
    assert capacity.generator_bound
    assert capacity.passed.rate == pytest.approx(50.0)
    assert capacity.failed is None


def test_the_table_says_at_least_when_not_bracketed(capsys: pytest.CaptureFixture[str]) -> None:
    bounded = _search(ModelRelay(capacity=500.0), capacity_steps=2)  # runs out of steps
    assert bounded.failed is None and not bounded.generator_bound
    relay_srtp.print_capacity_table([bounded])
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.startswith("| SRTP->SRTP")
    assert f">= {2 * 50.0 * 1.1**2:.1f}" in row


def test_the_ratio_is_voipgws_capacity_over_rtpengines(capsys: pytest.CaptureFixture[str]) -> None:
    voipgw = _search(ModelRelay(capacity=80.0))
    searched = _search(ModelRelay(capacity=120.0))
    rtpengine = relay_srtp.Capacity(
        searched.scenario, "rtpengine", searched.passed, searched.failed, generator_bound=False
    )
    relay_srtp.print_capacity_table([voipgw, rtpengine])
    row = capsys.readouterr().out.splitlines()[-1]
    expected = voipgw.passed.relayed_kpps / rtpengine.passed.relayed_kpps
    assert row.endswith(f"| {expected:.2f} |")


def _as(relay: str, search: Any, round_: int) -> Any:
    return relay_srtp.Capacity(
        search.scenario, relay, search.passed, search.failed, generator_bound=False, round=round_
    )


def test_with_rounds_each_relay_shows_its_median_and_the_ratio_is_the_rounds_median(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--capacity-rounds: a host whose speed drifts moves rtpengine's capacity between rounds;
    each round's ratio is of its own two searches, and the row gives their median."""
    voipgw = [_as("voipgw", _search(ModelRelay(capacity=k)), i) for i, k in enumerate((80, 84))]
    voipgw.append(_as("voipgw", _search(ModelRelay(capacity=78.0)), 2))
    rtpengine = [
        _as("rtpengine", _search(ModelRelay(capacity=k)), i) for i, k in enumerate((120, 100, 110))
    ]
    relay_srtp.print_capacity_table([*voipgw, *rtpengine])
    row = capsys.readouterr().out.splitlines()[-1]
    kpps = [c.passed.relayed_kpps for c in voipgw]
    engine = [c.passed.relayed_kpps for c in rtpengine]
    each = [v / e for v, e in zip(kpps, engine, strict=True)]
    assert f"| {sorted(kpps)[1]:.1f} (" in row  # voipgw's median search
    assert f"| {sorted(engine)[1]:.1f} (" in row
    shown = " / ".join(f"{r:.2f}" for r in each)
    assert row.endswith(f"| {sorted(each)[1]:.2f} ({shown}) |")


def test_a_round_whose_search_failed_is_left_out_of_the_ratios(
    capsys: pytest.CaptureFixture[str],
) -> None:
    voipgw = [_as("voipgw", _search(ModelRelay(capacity=80.0)), i) for i in (0, 2)]  # 1 raised
    rtpengine = [
        _as("rtpengine", _search(ModelRelay(capacity=k)), i) for i, k in enumerate((120, 100, 110))
    ]
    relay_srtp.print_capacity_table([*voipgw, *rtpengine])
    row = capsys.readouterr().out.splitlines()[-1]
    v = voipgw[0].passed.relayed_kpps
    first, third = v / rtpengine[0].passed.relayed_kpps, v / rtpengine[2].passed.relayed_kpps
    assert row.endswith(f"({first:.2f} / {third:.2f}) |")
