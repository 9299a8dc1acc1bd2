"""A MediaSession on a real relay, for the session unit tests (test_session_dtmf_plan.py,
test_session_dtmf_info_offerer.py, test_session_g711.py): the relay binds its ports on 127.0.0.1
in the test module's own block, and nothing is sent."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

from gateway.core.config import PortRange
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import MediaRelay, MediaStream
from gateway.core.media.session import MediaSession


def make_session(ports: PortRange, **options: bool) -> tuple[MediaSession, MediaRelay]:
    """A session and its relay; ``options`` are MediaSession's switches (``dtmf_interworking``,
    ``g711_transcoding``)."""
    relay = MediaRelay(PortAllocator("127.0.0.1", ports), clock=lambda: 0.0)
    session = MediaSession(
        relay,
        media_address="127.0.0.1",
        session_id_source=itertools.count(1).__next__,
        **options,
    )
    return session, relay


@contextmanager
def closed_after(ports: PortRange, **options: bool) -> Iterator[MediaSession]:
    """:func:`make_session`'s session, closed with its relay at the end, which must leave no
    port taken (a module's ``session`` fixture)."""
    session, relay = make_session(ports, **options)
    yield session
    session.close()
    relay.close()
    assert relay.allocator.in_use == 0


def stream_of(session: MediaSession) -> MediaStream:
    """The session's one stream."""
    (stream,) = session.streams
    assert isinstance(stream, MediaStream)
    return stream
