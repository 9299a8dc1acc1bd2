"""The call's event queue (gateway/core/calls/base.py ``post`` and ``_next_event``): a deque the
endpoint's task appends to, whose one consumer, the call's task, is parked and woken directly.

What the trio memory channel it replaced guaranteed still holds: an event posted in the turn the
call's timed wait falls due is handed over, not lost, and the timer runs at the next wait; a
deadline already past comes before a queued event; the queue is bounded (STYLE.md habit 7).
"""

from __future__ import annotations

import collections
import math

import trio
import trio.testing

from gateway.core.calls import base as call_base
from gateway.core.calls.base import CallBase
from gateway.core.calls.events import CallEventInput, EndCallEvent


def bare_call() -> CallBase:
    """A CallBase with only what posting and waiting use (no manager, legs or media)."""
    call = CallBase.__new__(CallBase)
    call.id = "queue-test"
    call._events = collections.deque()
    call._events_closed = False
    call._waiter = None
    call._queued_requests = 0
    call._handling = None
    call._retransmit_at = {}
    call._unacked_1xx = None
    call._wait = None
    return call


async def test_an_event_posted_as_the_timed_wait_falls_due_is_kept_and_the_timer_runs_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = bare_call()
    got: list[CallEventInput | None] = []

    async def consumer() -> None:
        got.append(await call._next_event(10.0))
        got.append(await call._next_event(10.0))

    event = EndCallEvent("test")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        # The clock reaches the deadline and the event is posted before trio's run loop looks at
        # the deadlines: the post wakes the call's task, then the deadline passes.
        autojump_clock.jump(10.0 - trio.current_time())
        call.post(event)
    assert got == [event, None]
    assert call._waiter is None and not call._events


async def test_a_deadline_already_past_comes_before_a_queued_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = bare_call()
    event = EndCallEvent("test")
    call.post(event)
    assert await call._next_event(trio.current_time()) is None
    assert await call._next_event(math.inf) is event


async def test_the_queue_is_bounded_and_refuses_once_the_call_has_ended() -> None:
    call = bare_call()
    for n in range(call_base.EVENT_ROOM + 5):
        call.post(EndCallEvent(str(n)))
    assert len(call._events) == call_base.EVENT_ROOM
    call._events.clear()
    call._events_closed = True
    call.post(EndCallEvent("late"))
    assert not call._events
