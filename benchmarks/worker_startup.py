"""How long ``[media] workers = N`` takes to start: a WorkerPool of N real worker processes on
127.0.0.1, from ``serve`` called to every worker ready (what ``voipgw run`` waits for before it
takes calls), then stopped; each run printed, then the median.

Wall-clock time on a machine others may share: compare two trees only in interleaved runs under
the same load (``uptime``), e.g. the same command from two worktrees one after the other, a few
times. Session 39 started the workers at once instead of one after another
(docs/benchmarks.md, "Session 39 (media worker start-up)").

    python benchmarks/worker_startup.py --workers 4 --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import trio
from bench_ports import media_ports

from gateway.core.config import PortRange
from gateway.core.media.remote_relay import WorkerPool

ADDRESS = "127.0.0.1"
PAIRS_PER_WORKER = 8


async def start_once(ports: PortRange, workers: int) -> float:
    """Seconds from ``serve`` called to every worker ready."""
    pool = WorkerPool(ADDRESS, ports, workers)
    async with trio.open_nursery() as nursery:
        started = time.perf_counter()
        await nursery.start(pool.serve)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--runs", type=int, default=5, help="pools started (default 5)")
    args = parser.parse_args()
    block = media_ports(2 * PAIRS_PER_WORKER * args.workers)
    ports = PortRange(block.start, block.stop - 1)
    times = []
    for run in range(args.runs):
        seconds = trio.run(start_once, ports, args.workers)
        times.append(seconds)
        print(f"run {run + 1}: {args.workers} workers ready in {seconds:.3f} s", flush=True)
    print(f"median: {statistics.median(times):.3f} s over {args.runs} runs")


if __name__ == "__main__":
    main()
