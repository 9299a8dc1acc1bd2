"""A phone behind a NAT keys its DTLS-SRTP leg while spoofed ClientHellos flood the port, one
from each of ever new sources (session 43; docs/media_security.md, "Cookies for other
sources"): once its ClientHello returned our cookie (RFC 6347 §4.2.1), its datagrams go
first in the call's handshake task's queue (``QUEUE_VERIFIED_FIRST``). The real ``dtls``
engine at both ends, the real task, virtual time (autojump_clock); tests/component/
keyexchange/dtls_flood.py has the flood."""

from __future__ import annotations

import trio

from gateway.core.media.handshakes import QUEUE, QUEUE_KEPT_FOR_PEERS
from gateway.plugins.keyexchange.dtls_srtp import DEFAULT_HANDSHAKE_TIMEOUT
from tests.component.keyexchange.dtls_flood import phone_under_flood

ROOM = QUEUE - QUEUE_KEPT_FOR_PEERS
"""The queue's room for sources that are neither the SDP address nor a proven peer (48)."""


def lucky_first_hello(n: int, spoofed: int) -> int:
    """The phone's first datagram (its ClientHello, without a cookie) comes first in its
    burst, as by luck; every later one after the burst."""
    return 0 if n == 0 else spoofed


async def test_a_phone_returning_our_cookie_is_keyed_under_a_flood_of_spoofed_sources(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Every later datagram of the phone reaches the port after a burst of 48 spoofed
    # ClientHellos, one per source, that fill the room: before session 43 each was dropped
    # (a source with none waiting has no more right than each of 48 with one), its resends
    # too, and the leg timed out. Now the ClientHello that returns our cookie is told by
    # the engine before it is queued, and the rest of the handshake comes from a source
    # whose handshake began so: each takes the place of the newest spoofed one.
    outcome = await phone_under_flood(ROOM, lucky_first_hello)
    assert outcome.failure is None
    assert outcome.keyed_at is not None and outcome.keyed_at < 1.0  # no resend needed
    assert outcome.phone_dropped == 0


async def test_a_phone_that_did_not_return_our_cookie_yet_has_only_an_equal_chance(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Fairness between sources nothing verified is kept: the phone's first ClientHello after
    # a full burst is dropped, as each spoofed source's after it, and so are its resends;
    # the leg times out (the reason says cookies were asked and none returned).
    outcome = await phone_under_flood(ROOM, lambda n, spoofed: spoofed)
    assert outcome.keyed_at is None
    assert outcome.phone_dropped == outcome.phone_datagrams >= 4
    assert outcome.failure is not None and outcome.failure.startswith("DTLS handshake timed out")
    assert "none returned it" in outcome.failure
    assert DEFAULT_HANDSHAKE_TIMEOUT <= trio.current_time() < 2 * DEFAULT_HANDSHAKE_TIMEOUT
