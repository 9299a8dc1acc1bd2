"""The call's event queue (gateway/core/calls/base.py ``post`` and ``_next_event``): a deque the
endpoint's task appends to, whose one consumer, the call's task, is parked and woken directly.

What the trio memory channel it replaced guaranteed still holds: an event posted in the turn the
call's timed wait falls due is handed over, not lost, and the timer runs at the next wait; a
deadline already past comes before a queued event; the queue is bounded (STYLE.md habit 7).

The timed waits are entries in the call timers' heap (gateway/core/calls/timers.py), whose one task
wakes a call at its deadline exactly; an event, an ACK moving the deadline, or a cancellation
drops the entry, and the next entry moves the task's deadline to the earliest wait's; dropped
entries do not pile up.
"""

from __future__ import annotations

import collections
import logging
import math
import random
import types

import pytest
import trio
import trio.testing

from gateway.core.calls import base as call_base
from gateway.core.calls import timers as timers_module
from gateway.core.calls.base import CallBase
from gateway.core.calls.events import (
    CallEventInput,
    EndCallEvent,
    RecordingIndicationEvent,
    RequestEvent,
)
from gateway.core.calls.leg import Side
from gateway.core.calls.recording_indication import CallRecordingIndication
from gateway.core.calls.timers import CallTimers
from gateway.core.sip.message import Request, Response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.transaction import TransactionStateError


def bare_call() -> CallBase:
    """A CallBase with only what posting and waiting use (no legs or media; of the manager,
    the call timers, whose task the test runs)."""
    call = CallBase.__new__(CallBase)
    call.manager = types.SimpleNamespace(timers=CallTimers())  # type: ignore[assignment]
    call.id = "queue-test"
    call._events = collections.deque()
    call._events_closed = False
    call._waiter = None
    call._queued_requests = 0
    call._handling = None
    call._retransmit_at = {}
    call._unacked_1xx = None
    call._wait_timer = None
    call._wait_deadline = math.inf
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
    async with trio.open_nursery() as timers:
        timers.start_soon(call.manager.timers.run)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await trio.testing.wait_all_tasks_blocked()
            # The clock reaches the deadline and the event is posted before trio's run loop
            # looks at the deadlines: the post wakes the call's task, then the deadline passes.
            autojump_clock.jump(10.0 - trio.current_time())
            call.post(event)
        timers.cancel_scope.cancel()
    assert got == [event, None]
    assert call._waiter is None and not call._events
    assert call._wait_timer is None and not len(call.manager.timers)


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


INFO = (
    "INFO sip:alice@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-late\r\n"
    "From: <sip:+15550100@127.0.0.2>;tag=a\r\n"
    "To: <sip:alice@127.0.0.1>;tag=b\r\n"
    "Call-ID: queue-test\r\n"
    "CSeq: 2 INFO\r\n"
    "Content-Length: 0\r\n\r\n"
)


def test_what_reaches_an_ended_call_is_said_at_debug_and_a_request_gets_481(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An event that crosses the call's end (a media worker's callback, a request relayed to a
    call that just ended) is no flood: said at DEBUG as what it is, and a request is answered
    481 Call Has Ended (RFC 3261 §12.2.2, as the endpoint answers it a moment later). Both
    were the full queue's WARNING "event queue full, dropping", and the request 503 "call
    busy". A full queue still says so at WARNING and answers 503."""
    caplog.set_level(logging.DEBUG, logger="gateway.core.calls.call")
    call = bare_call()
    answered: list[tuple[object, Response]] = []
    call.manager.start_soon = lambda _respond, transaction, response: answered.append(  # type: ignore[attr-defined]
        (transaction, response)
    )
    call.endpoint = types.SimpleNamespace(respond=None)  # type: ignore[assignment]
    request = parse_message_untrusted(INFO.encode())
    assert isinstance(request, Request)
    late = RequestEvent(Side.A, "transaction", request, None)  # type: ignore[arg-type]
    call._events_closed = True
    call.post(EndCallEvent("media lost"))
    call.post(late)
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert said == [
        (logging.DEBUG, "call queue-test: EndCallEvent after the call ended, dropped"),
        (logging.DEBUG, "call queue-test: RequestEvent after the call ended, dropped"),
    ]
    ((transaction, response),) = answered
    assert (transaction, response.status, response.reason) == ("transaction", 481, "Call Has Ended")
    caplog.clear()
    answered.clear()
    call._events_closed = False
    call._queued_requests = call_base.EVENT_QUEUE
    call.post(late)
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert said == [(logging.WARNING, "call queue-test: event queue full, dropping RequestEvent")]
    ((_, response),) = answered
    assert (response.status, response.reason) == (503, "Service Unavailable (call busy)")


async def test_a_refusal_the_transaction_no_longer_takes_does_not_reach_the_gateway(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The 481 to a request reaching an ended call and the 503 past a full queue are tasks of
    the manager's nursery, the gateway's top one. A transaction that no longer takes a
    response (answered or ended before that task ran: not seen to happen, the endpoint made
    it for the request just now) makes Endpoint.respond raise TransactionStateError: said at
    DEBUG, and the nursery, which stands for the gateway, goes on (it ended with the
    exception)."""
    caplog.set_level(logging.DEBUG, logger="gateway.core.calls.call")
    request = parse_message_untrusted(INFO.encode())
    assert isinstance(request, Request)
    tried: list[int] = []

    async def respond(transaction: object, response: Response) -> None:
        tried.append(response.status)
        raise TransactionStateError("final response already sent")

    async with trio.open_nursery() as gateway_nursery:
        call = bare_call()
        call.manager.start_soon = gateway_nursery.start_soon  # type: ignore[attr-defined]
        call.endpoint = types.SimpleNamespace(respond=respond)  # type: ignore[assignment]
        late = RequestEvent(Side.A, "transaction", request, None)  # type: ignore[arg-type]
        call._queued_requests = call_base.EVENT_QUEUE
        call.post(late)  # the queue is full: 503
        call._events_closed = True
        call.post(late)  # the call has ended: 481
        await trio.testing.wait_all_tasks_blocked()
    assert sorted(tried) == [481, 503]  # trio runs new tasks in either order
    answered = [r.getMessage() for r in caplog.records if "answered already" in r.getMessage()]
    assert answered == ["call queue-test: INFO answered already"] * 2


# -- the timed waits: an entry in the call timers' heap, one task waking them (calls/timers.py) --


async def waiting(call: CallBase, deadline: float, got: list[tuple[float, object]]) -> None:
    event = await call._next_event(deadline)
    got.append((trio.current_time(), event))


async def test_a_timed_wait_wakes_at_its_deadline_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = bare_call()
    timers = call.manager.timers
    got: list[tuple[float, object]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        await waiting(call, 10.0, got)
        await waiting(call, 12.5, got)
        nursery.cancel_scope.cancel()
    assert got == [(10.0, None), (12.5, None)]
    assert call._wait_timer is None and call._waiter is None and not len(timers)


async def test_an_event_ends_a_timed_wait_and_the_others_still_come_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call, other, third = bare_call(), bare_call(), bare_call()
    timers = other.manager.timers = third.manager.timers = call.manager.timers
    ended: list[tuple[float, object]] = []
    got: list[tuple[float, object]] = []
    event = EndCallEvent("test")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        nursery.start_soon(waiting, call, 100.0, ended)
        await trio.sleep(1)
        nursery.start_soon(waiting, other, 200.0, got)
        await trio.sleep(1)
        assert timers._scope is not None and timers._scope.deadline == 100.0
        call.post(event)
        await trio.testing.wait_all_tasks_blocked()
        assert call._wait_timer is None and len(timers) == 1  # the earliest wait's entry: gone
        # A new wait moves the task's deadline to the earliest live one, later or earlier.
        nursery.start_soon(waiting, third, 150.0, got)
        await trio.testing.wait_all_tasks_blocked()
        assert timers._scope is not None and timers._scope.deadline == 150.0
        # The earliest wait ends again, with nothing added after it: the task may wake at its
        # time for nothing, and wakes nobody.
        nursery.start_soon(waiting, call, 120.0, ended)
        await trio.testing.wait_all_tasks_blocked()
        call.post(event)
        await trio.sleep(140 - trio.current_time())
        assert got == [] and len(ended) == 2
        while len(got) < 2:
            await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert ended == [(2.0, event), (2.0, event)]
    assert got == [(150.0, None), (200.0, None)]
    assert not len(timers)


async def test_an_ack_moves_the_wait_from_the_retransmission_to_the_deadline_asked_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = bare_call()
    call._answer_in_ack = None
    timers = call.manager.timers
    invite = types.SimpleNamespace(cseq=types.SimpleNamespace(number=1))
    # Our 2xx on A's leg, due again at T1 (0.5 s) and given up at 64*T1.
    call._retransmit_at[Side.A] = (0.5, 0.5, invite, 32.0)
    got: list[tuple[float, object]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        nursery.start_soon(waiting, call, 5.0, got)
        await trio.sleep(0.1)
        assert call._wait_timer is not None and call._wait_timer[0] == 0.5
        call.ack_received(Side.A, invite)  # type: ignore[arg-type]
        assert call._wait_timer is not None and call._wait_timer[0] == 5.0
        while not got:
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert got == [(5.0, None)]  # not woken at 0.5 s for a 2xx acknowledged
    assert not call._retransmit_at and not len(timers)


async def test_a_wait_cancelled_leaves_no_entry(autojump_clock: trio.testing.MockClock) -> None:
    call = bare_call()
    timers = call.manager.timers
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        with trio.move_on_after(1):
            await call._next_event(100.0)
        assert call._wait_timer is None and call._waiter is None and not len(timers)
        nursery.cancel_scope.cancel()


def test_dropped_entries_do_not_pile_up() -> None:
    timers = CallTimers()
    first = bare_call()
    timers.add(first, 1.0)  # a live wait at the top: the others, dropped, stay below it
    for n in range(1000):
        call = bare_call()
        timers.add(call, 100.0 + n)
        timers.drop(call)
        assert len(timers) <= 2 * 2 + timers_module.PRUNE_SLACK + 1
    timers.drop(first)
    assert not len(timers)


async def test_many_calls_waits_ended_moved_or_cancelled_in_any_order_each_woken_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Forty calls at once, each through a few timed waits of seeded random lengths, many falling
    # due in the same instant, some also waiting for our 2xx's next retransmission; each wait may
    # be ended by an event, moved by the 2xx's ACK (ack_received) or cancelled (a scope around
    # the call's work) at a random time, the very instant it falls due among them. A wait woken
    # by time wakes at the time it asked for, or at its deadline if the ACK took the
    # retransmission away first: never late, never early, never for nothing. Nothing is left
    # in the heap.
    timers = CallTimers()
    wrong: list[tuple[int, float, float, float]] = []

    async def poke(call: CallBase, action: float, at: float, acked: list[float]) -> None:
        await trio.sleep(at)
        if action < 0.3:
            call.post(EndCallEvent("test"))
        elif action < 0.5 and Side.A in call._retransmit_at:
            acked[0] = trio.current_time()
            call.ack_received(Side.A, call._retransmit_at[Side.A][2])  # type: ignore[arg-type]

    async def calling(n: int) -> None:
        rng = random.Random(n)
        call = bare_call()
        call.manager.timers = timers
        call._answer_in_ack = None
        call.a = types.SimpleNamespace(flow=None)  # type: ignore[assignment]
        call.config = types.SimpleNamespace(sip=types.SimpleNamespace(t1=0.5, t2=4.0))  # type: ignore[assignment]
        invite = types.SimpleNamespace(cseq=types.SimpleNamespace(number=1))
        for _ in range(rng.randint(1, 5)):
            now = trio.current_time()
            deadline = now + rng.choice([0.0, 0.5, 1.0, 1.0, 2.0, 3.5, rng.random() * 5])
            due = now + rng.choice([0.25, 0.5, 1.0]) if rng.random() < 0.4 else math.inf
            if due != math.inf:
                call._retransmit_at[Side.A] = (due, 0.5, invite, now + 32)  # type: ignore[assignment]
            wake = min(deadline, due)
            action, at = rng.random(), rng.choice([0.0, 0.25, 0.5, 1.0, rng.random()])
            acked = [math.inf]  # when the ACK came, if it did
            event: object = None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(poke, call, action, at, acked)
                with trio.move_on_after(rng.choice([math.inf, math.inf, 0.75])) as scope:
                    event = await call._next_event(deadline)
                woken = trio.current_time()
                nursery.cancel_scope.cancel()
            assert call._wait_timer is None and call._waiter is None
            # An ACK before the retransmission takes it away; one in the same instant may not.
            expected = deadline if acked[0] < wake else wake
            on_time = woken == expected or (acked[0] == wake and woken in (wake, deadline))
            if not scope.cancelled_caught and event is None and not on_time:
                wrong.append((n, woken, wake, deadline))
            if event is not None and woken > wake and acked[0] > wake:
                wrong.append((n, woken, wake, deadline))  # the timer came late: the event won
            call._events.clear()
            call._queued_requests = 0
            call._retransmit_at.clear()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        async with trio.open_nursery() as calls:
            for n in range(40):
                calls.start_soon(calling, n)
        nursery.cancel_scope.cancel()
    assert wrong == []
    assert not len(timers) and timers._live == 0


def test_a_recording_indication_the_full_queue_dropped_is_posted_again_at_the_next_change() -> None:
    """One RecordingIndicationEvent stands for every change of the recordings' states until
    the call's task reads them (RFC 7866 §7.1.1's a=record). One that a full queue dropped left
    the call marked as having one queued, and no later change was ever told to the parties."""
    call = bare_call()
    call.taps = types.SimpleNamespace(may_indicate=lambda tap: True)  # type: ignore[assignment]
    call._recording_states = {}
    call._indication_posted = False
    for n in range(call_base.EVENT_ROOM):
        call.post(EndCallEvent(str(n)))
    CallRecordingIndication.recording_indicated(call, "siprec", "on")  # type: ignore[arg-type]
    assert not any(isinstance(event, RecordingIndicationEvent) for event in call._events)
    call._events.clear()  # the call's task caught up
    CallRecordingIndication.recording_indicated(call, "siprec", "paused")  # type: ignore[arg-type]
    assert [type(event) for event in call._events] == [RecordingIndicationEvent]
    CallRecordingIndication.recording_indicated(call, "siprec", "on")  # type: ignore[arg-type]
    assert len(call._events) == 1  # one queued stands for both changes
