"""The queue between the transports and the SIP endpoint's task (gateway/core/transport/inbound.py):
bounded, first in first out, and a delivery wakes the one waiting task; a waiting task stays
cancellable (the endpoint's timer deadline, shutdown)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from gateway.core.transport.flows import Flow, FlowKey
from gateway.core.transport.inbound import InboundQueue


async def _send(data: bytes) -> None:
    pass


FLOW = Flow(
    key=FlowKey("udp", ("127.0.0.1", 5060), ("127.0.0.9", 5099)), send=_send, reliable=False
)


def test_full_refuses_and_order_is_kept() -> None:
    queue = InboundQueue(2)
    assert queue.put((b"1", FLOW, 0.0)) and queue.put((b"2", FLOW, 0.0))
    assert not queue.put((b"3", FLOW, 0.0))  # full: the caller drops and counts it
    assert len(queue) == 2
    assert [queue.take(), queue.take(), queue.take()] == [
        (b"1", FLOW, 0.0),
        (b"2", FLOW, 0.0),
        None,
    ]
    assert queue.put((b"4", FLOW, 0.0))  # room again


async def test_a_delivery_wakes_the_waiting_task(autojump_clock: trio.abc.Clock) -> None:
    queue = InboundQueue(4)
    taken: list[bytes] = []

    async def consumer() -> None:
        await queue.wait()
        item = queue.take()
        assert item is not None
        taken.append(item[0])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        assert taken == []
        queue.put((b"hello", FLOW, 0.0))
    assert taken == [b"hello"]


async def test_a_queued_message_is_no_wait_and_a_wait_can_be_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    queue = InboundQueue(4)
    queue.put((b"queued", FLOW, 0.0))
    with trio.fail_after(1):
        await queue.wait()  # returns at once
    queue.take()
    with trio.move_on_after(5) as scope:
        await queue.wait()
    assert scope.cancelled_caught
    # The cancelled wait left no waiter behind: a delivery now wakes nobody, and the next
    # wait is allowed.
    queue.put((b"later", FLOW, 0.0))
    with trio.fail_after(1):
        await queue.wait()


async def test_only_one_task_may_wait(autojump_clock: trio.abc.Clock) -> None:
    queue = InboundQueue(4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.wait)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(RuntimeError, match="already waiting"):
            await queue.wait()
        nursery.cancel_scope.cancel()
