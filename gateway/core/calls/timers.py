"""The call tasks' timed waits, from one heap and one task.

A call's task waits for its next event until a deadline (:meth:`CallBase._next_event`): Timer C
and the trunks' response timeouts while ringing, our 2xx re-sent at T1, 2*T1 ... until its ACK
(RFC 3261 §13.3.1.4), the established call's media check and session timers. A trio cancel
scope per wait cost more than the rest of the wait (docs/benchmarks.md "Session 30", "Session
34 (calls)"). Here a wait is an entry in a heap, and one task, asleep in one cancel scope until
the earliest entry, wakes each call whose deadline passed, as that call's scope did; most waits
end with an event instead (``post``), which drops the entry.

A dropped entry stays in the heap until it comes to the top (it is skipped) or dropped entries
outnumber the live ones (the heap is rebuilt): the top is always a live entry, and an empty heap
means no call waits on a timer. The task's deadline is the top's, or an earlier one of a wait
that ended since: the next entry added moves it (until then the task may wake once for nothing,
never late). Everything runs
in trio's thread, from the call tasks, the endpoint's task (``post``, ``ack_received``) and this
task, none of which awaits while it changes the heap.
"""

from __future__ import annotations

import itertools
import math
from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from gateway.core.calls.base import CallBase

# Dropped entries kept before the heap is rebuilt without them, beyond as many as are live.
PRUNE_SLACK = 64

# An entry: [when, sequence number (no two equal, so calls are never compared), the call, or None
# once dropped or fired]. A list: the heap compares lists in C.
Entry = list[Any]


class CallTimers:
    """The heap of the call tasks' timed waits and the task that serves it (:meth:`run`, in the
    call manager's nursery)."""

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._sequence = itertools.count()
        self._live = 0
        self._scope: trio.CancelScope | None = None  # the task's sleep, while it sleeps

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, call: CallBase, when: float) -> None:
        """Wake ``call``'s task, parked in its timed wait, at ``when`` (it becomes
        ``call._wait_timer``); a time already past wakes it at once."""
        entry = [when, next(self._sequence), call]
        call._wait_timer = entry
        heap = self._heap
        heappush(heap, entry)
        self._live += 1
        # The task's deadline is the earliest entry's: this one's, or, after an earliest wait
        # ended (drop), the next one's, later than the task's; one move of trio's deadline
        # either way (its setter costs ~10,000 instructions, half the rest of a wait).
        scope = self._scope
        if scope is not None and heap[0][0] != scope.deadline:
            scope.deadline = heap[0][0]
        if len(heap) > 2 * self._live + PRUNE_SLACK:
            heap[:] = [e for e in heap if e[2] is not None]
            heapify(heap)

    def drop(self, call: CallBase) -> None:
        """``call``'s wait ended before its time (an event, its deadline moved, its end)."""
        entry = call._wait_timer
        assert entry is not None and entry[2] is call
        call._wait_timer = None
        entry[2] = None
        self._live -= 1
        heap = self._heap
        if heap[0] is entry:
            # The earliest wait: the next one is the top now. The task's deadline stays as it is
            # (never later than a live entry's) until the next add moves it, most often within
            # milliseconds; if none comes by then, the task wakes for nothing and sleeps again.
            while heap and heap[0][2] is None:
                heappop(heap)

    async def run(self) -> None:
        heap = self._heap
        while True:
            # A scope per firing: trio cannot take a cancellation back. Most waits never fire.
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as self._scope:
                await trio.sleep_forever()
            self._scope = None
            self._fire(trio.current_time())

    def _fire(self, now: float) -> None:
        # A function of its own: its locals, the last call woken among them, go as it returns
        # (an ended call is freed by reference counting, test_b2bua_call_freed.py).
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heappop(heap)
            call = entry[2]
            if call is None:
                continue
            # The call's task is parked in its timed wait (post and the abort drop the entry
            # as they wake it): it wakes and finds its entry fired (its call None).
            entry[2] = None
            self._live -= 1
            call._wake_timed_out()
        while heap and heap[0][2] is None:
            heappop(heap)
