"""The queue between the transports and the SIP endpoint's task.

Every transport hands each message it reads to ``TransportHost.deliver`` from its own task; one
task, the endpoint's, takes them, so the sans-IO transaction table is never touched
concurrently. This is a bounded FIFO with that one consumer: a trio memory channel did the same,
but a hand-off through it cost a channel state machine, a ``WouldBlock`` raised and caught per
empty poll and, around each wait, a new cancel scope (session 29 profile, docs/benchmarks.md).
Here the consumer parks with :func:`trio.lowlevel.wait_task_rescheduled` and a delivery wakes it
directly; the endpoint keeps one cancel scope across its waits and moves its deadline.
"""

from __future__ import annotations

import collections

import trio

from gateway.core.transport.flows import Flow

Inbound = tuple[bytes, Flow, float]
"""A message's bytes, the flow it came over, and when it arrived (trio's clock)."""


class InboundQueue:
    """Bounded FIFO of delivered messages with a single consumer task."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: collections.deque[Inbound] = collections.deque()
        self._waiter: trio.lowlevel.Task | None = None
        self._abort_wait = self._abort  # bound once, not per wait

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Inbound) -> bool:
        """Queue ``item`` and wake the consumer; False (nothing queued) when full. Synchronous:
        a transport's task calls it and goes on reading."""
        items = self._items
        if len(items) >= self.size:
            return False
        items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)
        return True

    def take(self) -> Inbound | None:
        """The oldest queued message, or None when there is none (no checkpoint)."""
        items = self._items
        return items.popleft() if items else None

    async def wait(self) -> None:
        """Park until a message is queued (return at once if one is). Not a checkpoint when it
        returns at once. Cancellable; only one task may wait."""
        if self._items:
            return
        if self._waiter is not None:
            raise RuntimeError("another task is already waiting on the inbound queue")
        self._waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort_wait)

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        # Cancelled while parked (the endpoint's timer deadline, or shutdown).
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED
