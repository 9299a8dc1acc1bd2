"""The cyclic garbage collector's work inside the gateway, for ``sip_calls.py --gc-stats``.

Python imports ``sitecustomize`` at start-up from the path; the benchmark puts this directory on
the gateway's ``PYTHONPATH`` and names a file in ``VOIPGW_GC_STATS``. Every collection is timed
through ``gc.callbacks``; a thread writes the totals per generation and the recent pauses (1 ms
or longer, with their ``time.monotonic()`` end, which is system-wide on Linux) to that file
every 0.2 s, as JSON. Nothing here runs unless the variable is set.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import threading
import time

_PATH = os.environ.get("VOIPGW_GC_STATS")

if _PATH:
    _totals = [[0, 0.0] for _ in range(3)]  # per generation: collections, seconds
    _pauses: collections.deque[tuple[float, int, float]] = collections.deque(maxlen=2000)
    _started = [0.0]

    def _on_collection(phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            _started[0] = now
            return
        took = now - _started[0]
        total = _totals[info["generation"]]
        total[0] += 1
        total[1] += took
        if took >= 0.001:
            _pauses.append((time.monotonic(), info["generation"], took))

    def _write_forever(path: str) -> None:
        while True:
            time.sleep(0.2)
            snapshot = {"totals": _totals, "pauses": list(_pauses)}
            with open(path + ".tmp", "w") as f:
                json.dump(snapshot, f)
            os.replace(path + ".tmp", path)

    gc.callbacks.append(_on_collection)
    threading.Thread(target=_write_forever, args=(_PATH,), daemon=True).start()
