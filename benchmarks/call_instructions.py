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

Without valgrind it runs in a few seconds and prints the number of calls done.
"""

from __future__ import annotations

import argparse
import gc
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

from gateway.core.store.sqlite import SqliteStore  # noqa: E402
from tests.component.calls.b2bua_env import answered_call, eventually, start_b2bua  # noqa: E402


def _store_in_virtual_time() -> None:
    """Open every SQLite store of this process without the checkpoint thread and with trio's
    clock timing its cache (the module's docstring says why)."""
    open_store = SqliteStore.open

    def open_in_virtual_time(state_dir: Any, **options: Any) -> SqliteStore:
        options.pop("checkpoint_interval", None)
        return open_store(state_dir, monotonic=trio.current_time, **options)

    SqliteStore.open = open_in_virtual_time  # type: ignore[method-assign]


async def run_calls(calls: int, state: Path) -> int:
    done = 0
    async with trio.open_nursery() as nursery:
        env = await start_b2bua(nursery, state, seed=7)
        for _ in range(calls):
            call, _leg_b = await answered_call(env)
            bye = await call.bye()
            assert bye.status == 200, bye.reason
            await eventually(lambda: env.calls == 0)
            done += 1
        nursery.cancel_scope.cancel()
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="calls, one after another")
    args = parser.parse_args()
    gc.disable()
    _store_in_virtual_time()
    with tempfile.TemporaryDirectory(prefix="call-instructions-") as state:
        done = trio.run(
            run_calls,
            args.calls,
            Path(state),
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
    print(f"{done} calls done")


if __name__ == "__main__":
    main()
