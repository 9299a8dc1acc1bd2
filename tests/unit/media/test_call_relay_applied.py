"""``CallRelay.applied`` when a media worker does not answer its ``Ping`` in time: the call goes
on, and the ping it gave up on leaves nothing behind in the worker's slot."""

from __future__ import annotations

import trio
import trio.testing

from gateway.core.config import PortRange
from gateway.core.media.remote_relay import APPLIED_WAIT, CallRelay, WorkerPool
from gateway.core.media.worker_protocol import Message, Ping, Pong
from tests.port_blocks import PortLease


class _StuckChannel:
    """A worker's channel whose worker takes every message and answers none (yet)."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> None:
        self.sent.append(message)


async def test_a_ping_given_up_on_is_forgotten(
    port_lease: PortLease, autojump_clock: trio.testing.MockClock
) -> None:
    # Never started: no port is bound, but a range of this process all the same.
    pool = WorkerPool("127.0.0.1", PortRange.parse(port_lease.text(10)), 1)
    slot = pool._workers[0]
    channel = _StuckChannel()
    slot.channel = channel  # type: ignore[assignment]
    relay = CallRelay(pool, None)
    relay._workers.add(0)
    for _ in range(3):  # three answers, each given up on after APPLIED_WAIT
        started = trio.current_time()
        await relay.applied()
        assert trio.current_time() - started == APPLIED_WAIT
    assert [type(message) for message in channel.sent] == [Ping, Ping, Ping]
    # A stuck worker that never exits would otherwise keep one event per answer for ever.
    assert slot.pongs == {}
    # Its late answers find nothing to wake.
    for message in channel.sent:
        assert isinstance(message, Ping)
        pool._handle(slot, Pong(message.token))
    assert slot.pongs == {}
