"""tracemalloc snapshots of the gateway on demand, for ``soak.py --tracemalloc``.

Python imports ``sitecustomize`` at start-up from the path; the benchmark puts this directory on
the gateway's ``PYTHONPATH`` and names a file prefix in ``VOIPGW_TRACEMALLOC``. Allocations are
traced from the start (``VOIPGW_TRACEMALLOC_FRAMES`` frames each, 10 by default: tracing costs
the gateway about twice its CPU); each SIGUSR1 runs a full collection and writes a snapshot to
``PREFIX-N.snap`` (N = 1, 2, ...) and then ``PREFIX-N.done``, which the benchmark waits for and
diffs. Nothing here runs unless the variable is set.
"""

from __future__ import annotations

import gc
import os
import signal
import tracemalloc

_PREFIX = os.environ.get("VOIPGW_TRACEMALLOC")

if _PREFIX:
    tracemalloc.start(int(os.environ.get("VOIPGW_TRACEMALLOC_FRAMES", "10")))
    _taken = [0]

    def _snapshot(signum: int, frame: object) -> None:
        _taken[0] += 1
        gc.collect()
        path = f"{_PREFIX}-{_taken[0]}"
        tracemalloc.take_snapshot().dump(path + ".snap")
        with open(path + ".done", "w"):
            pass

    signal.signal(signal.SIGUSR1, _snapshot)
