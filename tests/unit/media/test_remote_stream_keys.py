"""A media worker's stream is sent its keys only when they change (session 52): a call applies
its keys at each step of its set-up (CallKeying.apply: three times for a plain call), and the
worker took the same ``SetKeys`` again for nothing. A ``SetBlocked`` between two equal
applies (a failed key exchange blocks every stream) makes the next ``SetKeys`` go all the same,
or the worker would stay blocked."""

from __future__ import annotations

import os

from gateway.core.config import PortRange
from gateway.core.interfaces import SrtpKeys
from gateway.core.media.keying import StreamKeys
from gateway.core.media.remote_relay import RemoteStream, WorkerPool
from gateway.core.media.worker_protocol import Message, SetBlocked, SetKeys
from tests.port_blocks import PortLease

SUITE = "AES_CM_128_HMAC_SHA1_80"


class _Channel:
    """A worker's channel that takes every message and answers none."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> bool:
        self.sent.append(message)
        return True


def stream_on_a_channel(port_lease: PortLease) -> tuple[RemoteStream, _Channel]:
    # Never started: no port is bound, but a range of this process all the same.
    pool = WorkerPool("127.0.0.1", PortRange.parse(port_lease.text(10)), 1)
    slot = pool._workers[0]
    channel = _Channel()
    slot.channel = channel  # type: ignore[assignment]
    slot.ready.extend((40000, 40002))  # as its PairsReady would say: never bound here
    return pool.open_stream(), channel


def set_keys(channel: _Channel) -> list[SetKeys]:
    return [m for m in channel.sent if isinstance(m, SetKeys)]


async def test_equal_keys_go_to_the_worker_once(port_lease: PortLease) -> None:
    stream, channel = stream_on_a_channel(port_lease)
    plain = StreamKeys(None, None, blocked=False)
    for _ in range(3):
        stream.apply_keys(plain)
    assert set_keys(channel) == [SetKeys(stream.id, False, None, None, False, None, False, None)]
    assert not stream.a_to_b.blocked and not stream.b_to_a.blocked

    # New keys for leg A go, equal ones again do not; the block flag is a change too.
    keys = SrtpKeys(SUITE, os.urandom(30), os.urandom(30))
    stream.apply_keys(StreamKeys(keys, None, blocked=False))
    stream.apply_keys(
        StreamKeys(SrtpKeys(SUITE, keys.local_key, keys.remote_key), None, blocked=False)
    )
    stream.apply_keys(StreamKeys(keys, None, blocked=True))
    assert [(m.a, m.blocked) for m in set_keys(channel)] == [
        (None, False),
        (keys, False),
        (keys, True),
    ]
    assert stream.a_to_b.blocked and stream.b_to_a.blocked


async def test_keys_after_a_set_blocked_go_again(port_lease: PortLease) -> None:
    stream, channel = stream_on_a_channel(port_lease)
    plain = StreamKeys(None, None, blocked=False)
    stream.apply_keys(plain)
    stream.a_to_b.blocked = True  # CallKeying.block_all: SetBlocked per direction
    stream.b_to_a.blocked = True
    stream.apply_keys(plain)  # unblocks: the worker must hear of it
    assert [type(m).__name__ for m in channel.sent if isinstance(m, SetKeys | SetBlocked)] == [
        "SetKeys",
        "SetBlocked",
        "SetBlocked",
        "SetKeys",
    ]
    assert not stream.a_to_b.blocked and not stream.b_to_a.blocked
