"""A media worker's call (``CallRelay`` and its ``RemoteStream`` proxies) leaves no reference
cycle once its media session closed, whatever the call hung on its streams.

A key exchange's datagram handler (DTLS: :mod:`gateway.core.media.handshakes`, a closure over the
session) and a quality observer stay on a stream's sides and directions after it closed; the
session holds its ``CallRelay``, which keeps its streams for the call's final counters. Kept
past the session's close, that is a cycle through the session, and with it the call: freed only
by the cyclic collector (docs/benchmarks.md "Soak": the full collections of such garbage held
the event loop for 300-590 ms). The collector is off here: only reference counting frees.
tests/integration/test_gateway_workers_call_freed.py runs whole calls against real workers.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from gateway.core.config import PortRange
from gateway.core.media.remote_relay import CallRelay, WorkerPool
from gateway.core.media.session import MediaSession
from gateway.core.media.worker_protocol import Message
from tests.port_blocks import PortLease


class _Channel:
    """A worker's channel that takes every message."""

    def send(self, message: Message) -> bool:
        return True


def _call_relay(port_lease: PortLease) -> CallRelay:
    """The relay of one call, on a pool never started whose one worker has two pairs ready."""
    pool = WorkerPool("127.0.0.1", PortRange.parse(port_lease.text(10)), 1)
    slot = pool._workers[0]
    slot.channel = _Channel()  # type: ignore[assignment]
    slot.ready.extend((slot.ports.low, slot.ports.low + 2))
    return CallRelay(pool, None)


def _hooks_over(
    session: MediaSession,
) -> tuple[Callable[[bytes, tuple[str, int]], None], Callable[[bytes], None]]:
    """A datagram handler and an RTCP observer that hold ``session``, as a call's do."""

    def handler(packet: bytes, source: tuple[str, int]) -> None:
        session.statistics()

    def observer(packet: bytes) -> None:
        session.statistics()

    return handler, observer


async def test_handlers_that_hold_the_session_leave_no_cycle_once_it_closed(
    port_lease: PortLease, no_collector: None
) -> None:
    relay = _call_relay(port_lease)
    session = MediaSession(relay, media_address="127.0.0.1")
    stream = relay.open_stream()
    handler, observer = _hooks_over(session)
    stream.a.set_non_rtp_handler(handler)
    stream.b.set_non_rtp_handler(handler, rtcp=True)
    stream.a_to_b.rtcp_observer = observer
    stream.close()
    session.close()
    freed = weakref.ref(session)
    del session, stream, relay, handler, observer
    assert freed() is None
