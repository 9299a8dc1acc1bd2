"""The bounded queue between the relay's tap and a sink's own task.

The relay calls a sink's ``packet`` inside its packet loop, which must never wait (STYLE.md habit
7): the copy goes into a bounded queue and, when it is full (the disk or the network behind the
sink is slow) or closed (the call ended), is dropped and counted. The sink's task takes the
copies in order from :attr:`CopyQueue.receive`.
"""

from __future__ import annotations

import trio

Copy = tuple[str, str, bytes, float]
"""A copy of one forwarded packet: stream id, direction, the packet, the gateway's clock."""


class CopyQueue:
    def __init__(self, size: int) -> None:
        self._send, self.receive = trio.open_memory_channel[Copy](size)
        self.dropped = 0
        """Copies the queue had no room for (or that came after ``close``)."""

    def put(self, stream_id: str, direction: str, packet: bytes, now: float) -> None:
        try:
            self._send.send_nowait((stream_id, direction, packet, now))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            # Full, closed by the call's end, or the task stopped taking copies (a failed disk).
            self.dropped += 1

    def close(self) -> None:
        """No more copies: the sink's task ends after the last one queued."""
        self._send.close()
