"""The SIP process's side of a media worker's stream keeps a peer's whole socket address (media
worker protocol 3, session 40): what a worker's ``Datagram`` gave reaches the handshake task,
and the task's ``latch_peer`` goes back in ``LatchPeer``, an IPv6 link-local peer's scope id
(RFC 4007 §6) with it. A real worker on ::1 always has scope id 0, which the relay fills in
for host and port alone (tests/integration/media/test_media_workers.py): only here does a
lost scope id show."""

from __future__ import annotations

from typing import Any

from gateway.core.config import PortRange
from gateway.core.media.remote_relay import WorkerPool
from gateway.core.media.worker_protocol import Datagram, LatchPeer, Message
from tests.port_blocks import PortLease

PEER = ("::1", 5004, 0, 3)
"""A peer's address as an IPv6 socket gives it: host, port, flow info, scope id 3."""


class _Channel:
    """A worker's channel that takes every message and answers none."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> bool:
        self.sent.append(message)
        return True


async def test_a_peers_scope_id_goes_from_its_datagram_to_the_latch(port_lease: PortLease) -> None:
    # Never started: no port is bound, but a range of this process all the same.
    pool = WorkerPool("::1", PortRange.parse(port_lease.text(10)), 1)
    slot = pool._workers[0]
    channel = _Channel()
    slot.channel = channel  # type: ignore[assignment]
    slot.ready.extend((40000, 40002))  # as its PairsReady would say: never bound here
    stream = pool.open_stream()
    received: list[tuple[bytes, Any]] = []
    stream.a.set_non_rtp_handler(lambda packet, source: received.append((packet, source)))
    pool._handle(slot, Datagram(stream.id, "a", False, PEER, b"\x10hello"))
    assert received == [(b"\x10hello", PEER)]
    stream.a.latch_peer(received[0][1], now=0.0)
    assert channel.sent[-1] == LatchPeer(stream.id, "a", False, PEER)
