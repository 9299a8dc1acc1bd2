"""How long a gateway with media workers takes to stop with calls up: a WorkerPool of 2 real
worker processes on 127.0.0.1 carrying N calls (one stream each, default 200), then the pool and
the calls cancelled together, as ``voipgw`` stopping cancels its nursery. Each call's end awaits
its final counters (``MediaSession.final_counters``, bounded by ``FINAL_COUNTERS_WAIT``, shielded
as in ``Call.run``). Printed per run: seconds from the cancellation to the last call's end, and
to the pool stopped (every worker exited). No asserts: figures.

Wall-clock time on a machine others may share: compare two trees in interleaved runs under the
same load, e.g. the same command from two worktrees one after the other:

    cd TREE/benchmarks && PYTHONPATH=TREE python workers_shutdown.py --calls 200 --runs 3

Session 48 woke the calls' waits as a worker's channel closes (docs/benchmarks.md, "Session 48
(media workers at shutdown)"): before, every call whose ``SendStats`` went out before its
worker's channel closed waited out the whole 0.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import trio
from bench_ports import media_ports

from gateway.core.config import PortRange
from gateway.core.media.remote_relay import WorkerPool
from gateway.core.media.session import MediaSession

ADDRESS = "127.0.0.1"
WORKERS = 2
RESERVE_PAIRS = 64
"""Port pairs each worker keeps bound beyond its streams (remote_relay's reserve)."""


async def stop_once(ports: PortRange, calls: int) -> tuple[float, float, float, int]:
    """Seconds from the cancellation to the last call's end, to the pool stopped and to
    everything stopped (the gateway's nursery exited), and how many calls' counters were said
    partial."""
    pool = WorkerPool(ADDRESS, ports, WORKERS)
    ended: list[float] = []
    partial = 0
    pool_stopped = 0.0
    cancelled_at = 0.0

    async def serve_pool(*, task_status: trio.TaskStatus[None]) -> None:
        nonlocal pool_stopped
        try:
            await pool.serve(task_status=task_status)
        finally:
            pool_stopped = time.perf_counter()

    async def call(session: MediaSession, *, task_status: trio.TaskStatus[None]) -> None:
        nonlocal partial
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            await session.final_counters()  # shielded and bounded inside, as at a call's end
            ended.append(time.perf_counter())
            partial += session.counters_partial

    async with trio.open_nursery() as gateway:
        await gateway.start(serve_pool)
        for number in range(calls):
            relay = pool.for_call()
            relay.open_stream()
            await gateway.start(call, MediaSession(relay, media_address=ADDRESS))
            if number % 16 == 15:
                for index in range(WORKERS):  # a round trip: their reserves topped up
                    await pool.sync(index)
        for index in range(WORKERS):
            await pool.sync(index)  # every Open applied: the calls are up
        cancelled_at = time.perf_counter()
        gateway.cancel_scope.cancel()
    stopped = time.perf_counter() - cancelled_at
    return max(ended) - cancelled_at, pool_stopped - cancelled_at, stopped, partial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls up (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="gateways stopped (default 3)")
    args = parser.parse_args()
    block = media_ports(2 * WORKERS * (args.calls + 2 * RESERVE_PAIRS))
    ports = PortRange(block.start, block.stop - 1)
    last_ends, pool_stops, stops = [], [], []
    for run in range(args.runs):
        last_end, pool_stop, stop, partial = trio.run(stop_once, ports, args.calls)
        last_ends.append(last_end)
        pool_stops.append(pool_stop)
        stops.append(stop)
        print(
            f"run {run + 1}: {args.calls} calls on {WORKERS} workers: last call's end "
            f"{last_end:.3f} s, pool stopped {pool_stop:.3f} s, all stopped {stop:.3f} s after "
            f"the cancellation ({partial} calls' counters partial)",
            flush=True,
        )
    print(
        f"median over {args.runs} runs: last call's end {statistics.median(last_ends):.3f} s, "
        f"pool stopped {statistics.median(pool_stops):.3f} s, all stopped "
        f"{statistics.median(stops):.3f} s"
    )


if __name__ == "__main__":
    main()
