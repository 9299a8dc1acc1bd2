"""The cyclic garbage collector's work inside the gateway, for ``sip_calls.py --gc-stats``.

Python imports ``sitecustomize`` at start-up from the path; the benchmark puts this directory on
the gateway's ``PYTHONPATH`` and names a file in ``VOIPGW_GC_STATS``. Every collection is timed
through ``gc.callbacks``, by the clock and by the thread's CPU time; a thread writes the totals
per generation and the recent pauses (1 ms or longer, with their ``time.monotonic()`` end, which
is system-wide on Linux) to that file every 0.2 s, as JSON. Nothing here runs unless the
variable is set. The variable is taken out of the environment as it is read, so the media
workers (``[media] workers``), which inherit the gateway's environment, do not write the same file.

The clock counts what the process waited for a CPU too: on a machine shared with the UAC and
UAS (two vCPUs) a collection's clock time was 3-7 times its CPU time (session 36). The CPU
time is the collector's own work; the clock time is what a call queued behind the pause waited.

Each collection also counts the objects it walks: the tracked objects of the generations it
collects, at its start (``len(gc.get_objects(g))``, a list of references made and dropped
before the collection; a few per cent of its time). That count does not depend on the load.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import threading
import time

_PATH = os.environ.pop("VOIPGW_GC_STATS", None)

if _PATH:
    # Per generation: collections, clock seconds, CPU seconds, objects walked.
    _totals: list[list[float]] = [[0, 0.0, 0.0, 0] for _ in range(3)]
    # (monotonic end, generation, clock seconds, CPU seconds, objects walked)
    _pauses: collections.deque[tuple[float, int, float, float, int]] = collections.deque(
        maxlen=2000
    )
    _started = [0.0, 0.0]
    _walked = [0]

    def _on_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _walked[0] = sum(len(gc.get_objects(g)) for g in range(info["generation"] + 1))
            _started[0] = time.perf_counter()
            _started[1] = time.thread_time()
            return
        took = time.perf_counter() - _started[0]
        cpu = time.thread_time() - _started[1]
        total = _totals[info["generation"]]
        total[0] += 1
        total[1] += took
        total[2] += cpu
        total[3] += _walked[0]
        if took >= 0.001:
            _pauses.append((time.monotonic(), info["generation"], took, cpu, _walked[0]))

    def _write_forever(path: str) -> None:
        while True:
            time.sleep(0.2)
            snapshot = {"totals": _totals, "pauses": list(_pauses)}
            with open(path + ".tmp", "w") as f:
                json.dump(snapshot, f)
            os.replace(path + ".tmp", path)

    gc.callbacks.append(_on_collection)
    threading.Thread(target=_write_forever, args=(_PATH,), daemon=True).start()
