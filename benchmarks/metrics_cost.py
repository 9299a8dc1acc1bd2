"""What the ``metrics`` plugin costs a call, enabled and disabled, and what a scrape costs.

Run from the repository root (about a minute)::

    python benchmarks/metrics_cost.py
    python benchmarks/metrics_cost.py --calls 2000 --live 45

The gateway runs in this process on the in-memory network of the component tests
(tests/component/calls/b2bua_env.py) in trio's virtual time, so the figures are CPU time of the
gateway's code, not network waits. A call is the trunk calling alice's DID, alice answering
(ringing first), the trunk hanging up: its INVITE, 180, 200, ACK, BYE, 200 through both legs,
with a media session (one relay stream, no RTP).

Figures:

- **calls, disabled / enabled**: CPU seconds (``time.process_time``) for ``--calls`` such calls
  one after another, without and with the plugin (no scrape meanwhile), per call, the best of
  ``--rounds`` alternated runs. The difference is within run-to-run noise (the order of the runs
  alone moves them by about 5 %); the next two figures measure the added code alone.
- **call events, enabled**: the time spent in ``CallStatistics.event`` (the call manager's one
  addition while a service is registered: counting, set-up time, the ended call's media), per
  call: the medians of each event kind summed, and the mean, which takes in the garbage
  collections that happened to start there.
- **disabled, per call event**: the one check the call manager makes without a service
  (``statistics is not None``), timed with ``timeit``.
- **scrape**: one rendering of the exposition with ``--live`` answered calls in progress, and
  the part of it per live call (walking its media and SRTP counters).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import trio
import trio.testing

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gateway.plugins.metrics as metrics_plugin
from gateway.core import status as status_module
from gateway.plugins.metrics.collect import render
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    B2bua,
    answered_call,
    eventually,
    start_b2bua,
)

SEED = 4242


async def one_call(env: B2bua) -> None:
    call, _ = await answered_call(env)
    response = await call.bye()
    assert response.status == 200
    await eventually(lambda: env.calls == 0)


async def run_calls(count: int, *, plugin: bool) -> tuple[float, dict[str, list[float]]]:
    """(CPU seconds for ``count`` calls, seconds inside CallStatistics.event by event kind)."""
    spent: dict[str, list[float]] = {}
    original = status_module.CallStatistics.event

    def timed(self: status_module.CallStatistics, call: Any, kind: str, *args: Any) -> None:
        start = time.perf_counter()
        original(self, call, kind, *args)
        spent.setdefault(kind, []).append(time.perf_counter() - start)

    status_module.CallStatistics.event = timed  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with trio.open_nursery() as nursery:
                env = await start_b2bua(
                    nursery,
                    Path(tmp),
                    SEED,
                    plugins=[("metrics", metrics_plugin)] if plugin else [],
                    plugin_tables=(
                        {"enable": ["metrics"], "metrics": {"listen": "127.0.0.1:0"}}
                        if plugin
                        else None
                    ),
                )
                await one_call(env)  # warm up
                spent.clear()
                start = time.process_time()
                for _ in range(count):
                    await one_call(env)
                elapsed = time.process_time() - start
                nursery.cancel_scope.cancel()
    finally:
        status_module.CallStatistics.event = original  # type: ignore[method-assign]
    return elapsed, spent


async def scrape_cost(live: int) -> tuple[float, float, int]:
    """(seconds for one render with ``live`` calls, seconds with none, bytes rendered)."""
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            env = await start_b2bua(
                nursery,
                Path(tmp),
                SEED,
                plugins=[("metrics", metrics_plugin)],
                plugin_tables={"enable": ["metrics"], "metrics": {"listen": "127.0.0.1:0"}},
            )
            status = env.gateway.status
            assert status is not None
            idle = min(timeit.repeat(lambda: render(status), number=20, repeat=5)) / 20
            for _ in range(live):
                call = await env.trunk.invite(env.did_uri(ALICE_DID))
                assert (await call.final()).status == 200
                await env.alice.next_request("ACK")
            assert env.calls == live
            busy = min(timeit.repeat(lambda: render(status), number=20, repeat=5)) / 20
            size = len(render(status))
            nursery.cancel_scope.cancel()
    return busy, idle, size


def disabled_check() -> float:
    """Seconds for the call manager's check when no service is registered."""

    class Manager:
        statistics = None

    manager = Manager()

    def event() -> None:
        statistics = manager.statistics
        if statistics is not None:
            raise AssertionError

    def nothing() -> None:
        pass

    loops = 2_000_000
    with_check = min(timeit.repeat(event, number=loops, repeat=5)) / loops
    bare = min(timeit.repeat(nothing, number=loops, repeat=5)) / loops
    return with_check - bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--live", type=int, default=45, help="at most 45 (the env's ports)")
    parser.add_argument("--rounds", type=int, default=2, help="disabled/enabled runs, alternated")
    args = parser.parse_args()

    def run(fn: object, *a: object, **k: object) -> object:
        return trio.run(
            lambda: fn(*a, **k),  # type: ignore[operator]
            clock=trio.testing.MockClock(autojump_threshold=0),
        )

    # Alternated and the best of each kept: the order of runs alone moves these by +-5 %.
    offs, ons = [], []
    for _ in range(args.rounds):
        offs.append(run(run_calls, args.calls, plugin=False)[0])  # type: ignore[index]
        on, spent = run(run_calls, args.calls, plugin=True)  # type: ignore[misc]
        ons.append(on)
    off, on = min(offs), min(ons)
    busy, idle, size = run(scrape_cost, args.live)  # type: ignore[misc]
    check = disabled_check()
    n = args.calls
    print(f"python {sys.version.split()[0]}, {n} calls each way")
    print(f"calls, disabled: {off / n * 1e6:8.1f} us CPU per call")
    print(f"calls, enabled:  {on / n * 1e6:8.1f} us CPU per call ({(on / off - 1) * 100:+.1f} %)")
    medians = {kind: statistics.median(times) for kind, times in spent.items()}
    median = sum(medians.values())
    mean = sum(sum(times) for times in spent.values()) / n
    print(
        f"call events, enabled: {median * 1e6:.1f} us per call (median of each event kind; "
        f"mean {mean * 1e6:.1f} us, garbage collections included)"
    )
    print("  by event, median: " + ", ".join(f"{k} {v * 1e6:.1f} us" for k, v in medians.items()))
    print(f"disabled, per call event: {check * 1e9:.0f} ns (4 events a call)")
    print(
        f"scrape: {busy * 1e3:.2f} ms with {args.live} live calls, {idle * 1e3:.2f} ms with none "
        f"({(busy - idle) / args.live * 1e6:.1f} us per live call); {size} bytes"
    )


if __name__ == "__main__":
    main()
