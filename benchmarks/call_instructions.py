"""Whole calls through the B2BUA in one process, for callgrind's instruction counts.

The component tests' B2BUA (tests/component/calls/b2bua_env.py: ``start_b2bua``,
``answered_call``) runs on the in-memory network in trio's virtual time with its two test phones:
the trunk calls alice's DID (no authentication), alice rings and answers, both legs are ACKed,
the trunk hangs up; INVITE, 180, 200, ACK, BYE, 200 on each leg, one media session (no RTP). The
garbage collector is off, so a collection does not land in one run and not the other.

What it counts: callgrind counts every instruction of the process, so one run holds the
interpreter's start, the imports, the gateway's start and alice's registration. Run it twice,
with N = 20 and N = 220 calls, and take the difference / 200: the instructions of one call,
the gateway's and both phones' (they parse and build their messages with the same
``gateway.core.sip`` code)::

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.20 \\
        python benchmarks/call_instructions.py --calls 20
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.220 \\
        python benchmarks/call_instructions.py --calls 220
    # per call: (Ir of cg.220 - Ir of cg.20) / 200 (the "summary:" or "totals:" line)

Its count does not depend on the machine's load: everything in the call runs in trio's virtual
time (MockClock, autojump), and the two things the gateway times by the real clock are moved off
it for the run, by :func:`_store_in_virtual_time`. Before that (session 36) the same tree counted
9.63 M and 13.82 M per call at load average 17, its 20-call runs equal to 0.01 %:

- the SQLite store's checkpoint thread (``[store]`` sqlite, ``SQLITE_CHECKPOINT_INTERVAL``, 1 s
  of real time): callgrind counts every thread's instructions, and a run that takes longer (a
  loaded machine, valgrind's 50-fold slowdown) wakes it more often. Here the store is opened
  without it, so SQLite checkpoints at the commit that finds the log past 1000 pages, as the CLI
  does: a per-call cost instead of a per-second one (the gateway's thread is neither);
- the store's account and binding cache asks SQLite whether another connection wrote at most
  every ``CACHE_RECHECK_SECONDS`` (10 ms) of ``time.monotonic``: the slower the run, the more
  of a call's look-ups ask. Here it is trio's clock, so a call asks as often at any load.

With both moved (main 3ae01ae5, load average 7-21, three runs each): N = 20 counted
3,455,231,547 / 3,455,233,307 / 3,454,977,080 and N = 70 4,237,480,575 / 4,238,948,600 /
4,240,310,205 (15.65-15.71 M per call for that pair); 10 s of real sleep between 20 calls no
longer adds instructions. The per-call figure depends on the N pair: give it with the figure.

Two more things made runs of one tree differ (session 37), both fixed since: trio's random order
within a batch of runnable tasks (seeded here: :func:`_seed_trios_scheduler`), and runs that
stopped with their last calls' transactions still waiting for Timers D, J and K (each run now
waits them out at its end, so a call's count holds its transactions' whole life). Figures
before that change are not comparable with figures after it.

A third (session 43): the media relay's ports. The test module takes its block from
tests/port_blocks.py, which steps over the units other test processes hold, so on a loaded
machine two runs got other ports: other digits in every SDP body, other hashes in the parser's
caches, and runs of one tree counted 0.035-0.045 M per call apart (session 42). The run now
relays on a fixed block, locked as a test process locks its block so that no test run binds
it meanwhile: ``--media-ports FIRST`` names it (a run whose block another process holds, or
with a port that will not bind now, stops and says so rather than count on other ports); without
it, the first free one of :data:`FIXED_MEDIA_BLOCKS` (below the kernel's ephemeral ports, every
port bindable), so that runs started together each get one. Each run prints its
block: compare runs made on the same blocks (a script that starts the N = 20 and N = 70 runs
together names one for each, as the two might otherwise take them in either order).

Without valgrind it runs in a few seconds and prints the number of calls done.

``--trio-counts`` (no valgrind) prints instead what one call costs in trio's machinery, per
task (by its name; a call's task as ``call <Call-ID>``): task steps, wake-ups (a task
rescheduled, and by whom: another task, itself at a checkpoint that did not block, or the run
loop for a deadline or I/O), tasks spawned, cancel scopes entered and deadlines moved (by the
task that did it), and the run loop's turns. Counted over ``--calls`` calls after
``--warm-up`` calls, per call = count / calls; the in-memory network's delivery task, the
memory transport's receive task and the two test phones' tasks are the test's, not the
gateway's (the real UDP transport is read by the endpoint's task itself)::

    python benchmarks/call_instructions.py --calls 50 --trio-counts
"""

from __future__ import annotations

import argparse
import collections
import gc
import re
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import trio
import trio.testing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The repository's tests/ is a namespace package: an installed distribution that ships a
# top-level "tests" package (one in the benchmark venv does) would win the import over it.
_tests = types.ModuleType("tests")
_tests.__path__ = [str(ROOT / "tests")]
sys.modules["tests"] = _tests

from gateway.core.sip.transaction import TransactionTimers  # noqa: E402
from gateway.core.store.sqlite import SqliteStore  # noqa: E402
from tests import port_blocks  # noqa: E402

# The relay's ports (the module docstring says why fixed blocks): the top of the tests' region
# (tests/port_blocks.py claims from its bottom up), below Linux's ephemeral range; one block per
# run that runs at the same time.
MEDIA_PORT_COUNT = 200
FIXED_MEDIA_BLOCKS = (32000, 32200, 32400, 31800)


def _media_block(first: int | None) -> range:
    """The relay's ports, ``first`` .. ``first + 199`` (None: the first usable block of
    :data:`FIXED_MEDIA_BLOCKS`), locked for this process as a test's block is
    (``port_blocks.lend``) and each port bindable now, as ``port_block`` probes a test's: the
    relay skips a pair it cannot bind and would count on other ports. Without ``first`` a block
    that reaches the kernel's ephemeral ports, that another process holds or with a port that
    will not bind is stepped over; with it, SystemExit says which of these stops the run."""
    for start in FIXED_MEDIA_BLOCKS if first is None else (first,):
        ports = range(start, start + MEDIA_PORT_COUNT)
        if (
            start % 2
            or start < port_blocks.LOW
            or ports.stop > port_blocks._ephemeral_low()
            or port_blocks.overlaps_default_media(ports)
        ):
            if first is None:
                continue
            raise SystemExit(
                f"--media-ports {start}: an even port from {port_blocks.LOW} whose block ends"
                f" below the kernel's ephemeral ports ({port_blocks._ephemeral_low()}) and misses"
                f" the gateway's default range {port_blocks.GATEWAY_DEFAULT_MEDIA.start}-"
                f"{port_blocks.GATEWAY_DEFAULT_MEDIA.stop - 1}"
            )
        if not port_blocks.lend(ports):
            if first is None:
                continue
            raise SystemExit(
                f"--media-ports {first}: ports {ports.start}-{ports.stop - 1} are held by another"
                " process (tests/port_blocks.py); name another block, or wait"
            )
        busy = next((port for port in ports if not port_blocks._bindable(port)), None)
        if busy is None:
            return ports
        port_blocks.give_back(ports)
        if first is not None:
            raise SystemExit(
                f"--media-ports {first}: port {busy} of {ports.start}-{ports.stop - 1} will not"
                " bind (a program outside the tests holds it); name another block"
            )
    raise SystemExit(
        f"the media port blocks from {', '.join(map(str, FIXED_MEDIA_BLOCKS))} are held by other"
        " processes (tests/port_blocks.py), have a port that will not bind, or reach the"
        f" kernel's ephemeral ports ({port_blocks._ephemeral_low()}): name another block with"
        " --media-ports, or wait"
    )


def _import_b2bua_env(first: int | None) -> types.ModuleType:
    """tests/component/calls/b2bua_env.py with its relay on :func:`_media_block`'s ports. The
    module takes its block at import, by ``port_block``, whose tries over units other
    processes hold (a failed ``flock``, a port that would not bind, each an exception) differed
    between runs too; it is handed this one instead."""
    ports = _media_block(first)
    print(f"media ports {ports.start}-{ports.stop - 1}")

    def this_block(count: int, *, even: bool = True) -> range:
        assert count == MEDIA_PORT_COUNT and even, "b2bua_env takes one block of 200"
        return ports

    port_block = port_blocks.port_block
    port_blocks.port_block = this_block
    try:
        from tests.component.calls import b2bua_env
    finally:
        port_blocks.port_block = port_block
    assert ports == b2bua_env.MEDIA_PORTS
    return b2bua_env


def _store_in_virtual_time() -> None:
    """Open every SQLite store of this process without the checkpoint thread and with trio's
    clock timing its cache (the module's docstring says why)."""
    open_store = SqliteStore.open

    def open_in_virtual_time(state_dir: Any, **options: Any) -> SqliteStore:
        options.pop("checkpoint_interval", None)
        return open_store(state_dir, monotonic=trio.current_time, **options)

    SqliteStore.open = open_in_virtual_time  # type: ignore[method-assign]


_CALL_TASK = re.compile(r"^call \S+$")


def _task_name(task: trio.lowlevel.Task) -> str:
    name = task.name
    if _CALL_TASK.match(name):
        return "call <Call-ID>"
    return name.removeprefix("gateway.").removeprefix("tests.component.calls.")


class TrioCounts(trio.abc.Instrument):
    """trio's work per task: see the module docstring (``--trio-counts``)."""

    def __init__(self) -> None:
        self.counting = False
        self.steps: collections.Counter[str] = collections.Counter()
        self.wakeups: collections.Counter[tuple[str, str]] = collections.Counter()
        self.spawned: collections.Counter[str] = collections.Counter()
        self.scopes: collections.Counter[str] = collections.Counter()
        self.deadline_moves: collections.Counter[str] = collections.Counter()
        self.turns = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if self.counting:
            self.spawned[_task_name(task)] += 1

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if not self.counting:
            return
        try:
            running = trio.lowlevel.current_task()
        except RuntimeError:
            by = "(run loop: deadline or I/O)"
        else:
            by = "(itself: a checkpoint)" if running is task else _task_name(running)
        self.wakeups[(_task_name(task), by)] += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.counting:
            self.steps[_task_name(task)] += 1

    def before_io_wait(self, timeout: float) -> None:
        if self.counting:
            self.turns += 1

    def _running(self) -> str:
        try:
            return _task_name(trio.lowlevel.current_task())
        except RuntimeError:
            return "(run loop)"

    def install_scope_counters(self) -> None:
        enter = trio.CancelScope.__enter__
        deadline = trio.CancelScope.deadline
        counts = self

        def counted_enter(scope: trio.CancelScope) -> trio.CancelScope:
            if counts.counting:
                counts.scopes[counts._running()] += 1
            return enter(scope)

        def counted_set(scope: trio.CancelScope, value: float) -> None:
            if counts.counting:
                counts.deadline_moves[counts._running()] += 1
            assert deadline.fset is not None
            deadline.fset(scope, value)

        trio.CancelScope.__enter__ = counted_enter  # type: ignore[method-assign]
        trio.CancelScope.deadline = property(deadline.fget, counted_set)  # type: ignore[method-assign,assignment]

    def report(self, calls: int) -> str:
        def per(n: int) -> str:
            return f"{n / calls:8.2f}"

        lines = [f"trio's work per call (over {calls} calls)", ""]
        lines.append(f"{'task':70} {'steps':>8} {'woken':>8} {'scopes':>8} {'moves':>8}")
        woken: collections.Counter[str] = collections.Counter()
        for (task, _by), n in self.wakeups.items():
            woken[task] += n
        names = sorted(
            set(self.steps) | set(woken) | set(self.scopes) | set(self.deadline_moves),
            key=lambda name: -self.steps[name],
        )
        for name in names:
            lines.append(
                f"{name[:70]:70} {per(self.steps[name])} {per(woken[name])}"
                f" {per(self.scopes[name])} {per(self.deadline_moves[name])}"
            )
        lines.append(
            f"{'all':70} {per(sum(self.steps.values()))} {per(sum(woken.values()))}"
            f" {per(sum(self.scopes.values()))} {per(sum(self.deadline_moves.values()))}"
        )
        lines += ["", f"run-loop turns (I/O waits): {per(self.turns)}", "", "tasks spawned:"]
        for name, n in self.spawned.most_common():
            lines.append(f"  {name[:70]:70} {per(n)}")
        lines += ["", "wake-ups, by whom:"]
        for (task, by), n in sorted(self.wakeups.items(), key=lambda item: -item[1]):
            lines.append(f"  {task[:50]:50} <- {by[:50]:50} {per(n)}")
        return "\n".join(lines)


async def run_calls(
    b2bua_env: types.ModuleType,
    calls: int,
    state: Path,
    counts: TrioCounts | None = None,
    warm_up: int = 0,
) -> int:
    done = 0
    async with trio.open_nursery() as nursery:
        env = await b2bua_env.start_b2bua(nursery, state, seed=7)
        for number in range(warm_up + calls):
            if counts is not None and number == warm_up:
                counts.counting = True
            call, _leg_b = await b2bua_env.answered_call(env)
            bye = await call.bye()
            assert bye.status == 200, bye.reason
            await b2bua_env.eventually(lambda: env.calls == 0)
            done += 1
        # Every transaction of the last calls ends too (Timers D, J and K: RFC 3261 §17), so a
        # run holds the whole life of each of its calls' transactions; otherwise two runs
        # stopped at different points of the last calls' timers.
        timers = TransactionTimers(t1=b2bua_env.T1)
        await trio.sleep(max(timers.timeout, timers.timer_d, timers.t4) + 1)
        if counts is not None:
            counts.counting = False
        nursery.cancel_scope.cancel()
    return done


def _seed_trios_scheduler() -> None:
    """trio runs each batch of runnable tasks in a random order (a module-level
    ``random.Random`` in trio/_core/_run.py, private), so two runs of one tree interleave the
    phones' and the gateway's tasks differently and counted 0.36-0.64 % apart (session 37).
    Seeded, each run takes the same order. Private to trio: where it is missing, the runs vary
    as before and this says so."""
    import random

    from trio._core import _run

    shuffler = getattr(_run, "_r", None)
    if isinstance(shuffler, random.Random):
        shuffler.seed(0)
    else:
        print("trio's batch order could not be seeded: runs of one tree may differ by ~0.5 %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="calls, one after another")
    parser.add_argument(
        "--trio-counts",
        action="store_true",
        help="print trio's task steps, wake-ups and cancel scopes per call (not for valgrind)",
    )
    parser.add_argument(
        "--warm-up", type=int, default=3, help="with --trio-counts: calls made before counting"
    )
    parser.add_argument(
        "--media-ports",
        type=int,
        default=None,
        metavar="FIRST",
        help="the relay's 200 ports from FIRST (default: the first free block of"
        f" {', '.join(map(str, FIXED_MEDIA_BLOCKS))}: see the module docstring)",
    )
    args = parser.parse_args()
    b2bua_env = _import_b2bua_env(args.media_ports)
    gc.disable()
    _store_in_virtual_time()
    _seed_trios_scheduler()
    counts: TrioCounts | None = None
    if args.trio_counts:
        counts = TrioCounts()
        counts.install_scope_counters()
    with tempfile.TemporaryDirectory(prefix="call-instructions-") as state:
        done = trio.run(
            run_calls,
            b2bua_env,
            args.calls,
            Path(state),
            counts,
            args.warm_up if counts is not None else 0,
            clock=trio.testing.MockClock(autojump_threshold=0),
            instruments=[counts] if counts is not None else (),
        )
    print(f"{done} calls done")
    if counts is not None:
        print(counts.report(args.calls))


if __name__ == "__main__":
    main()
