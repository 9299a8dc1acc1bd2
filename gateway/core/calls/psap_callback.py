"""PSAP callbacks (RFC 7090): the emergency service calling back a caller whose call dropped.

A call taker whose emergency call was cut off calls the caller back on the number the call
presented. Treated as an ordinary call, that callback could meet a full gateway, a draining node,
an account or trunk at its ``max_calls``, or a caller-identity check that refuses unsigned calls.
RFC 7090 marks it with ``Priority: psap-callback`` so that such policies let it through. Its
security considerations warn that the marking alone proves nothing (anyone can write a header):
a provider gives the treatment only to a marked call that comes from where callbacks come from
and only for a while after an emergency call was made (the "reasonable time" of RFC 6881's
callback guidance), removes the marking otherwise, and treats the call as an ordinary one.

Here that means all three: the INVITE comes from a configured trunk (our trust domain, as for
P-Asserted-Identity), carries ``Priority: psap-callback``, and calls a number that one of our
accounts presented on an emergency call (``[numbering] emergency_numbers``) through a trunk
within the last ``[gateway] psap_callback_window`` seconds. Such a call is served like the
emergency call it follows (past the call limits, the drain and overload control) and reaches
the phone with the marking, so that the phone can skip do-not-disturb. A marked INVITE that
fails a condition is an ordinary call, and its marking goes no further (each leg's INVITE is
the gateway's own: nothing is copied from the caller's but what the B2BUA chooses).

The numbers are kept in this node's memory and, with a store, in the store too (a table of
its own, bounded like the memory), so that a callback the carrier sends to another node of a
cluster sharing a PostgreSQL store, or to this node after a restart (a crash during a major
incident is when callbacks matter most), is still recognised. The store is written when an
emergency call leaves through a trunk, and read only for a trunk's INVITE marked
``Priority: psap-callback`` to a number this node's memory does not hold (at most
:data:`STORE_READS_PER_SECOND` a second, so that a trunk marking every INVITE costs no more);
the answer is then kept in memory. Ordinary calls never touch the store. Each store call is one
statement on the event loop, as every store call of the gateway is (the store's API is
synchronous, gateway/core/store/interface.py), and waits at most what the store allows: PostgreSQL
``[store] statement_timeout``, SQLite's 50 ms lock wait; a PostgreSQL store whose connection is
lost fails at once. A store that fails or does not answer in time leaves this node's memory to
answer alone (logged once, summarized every 300 s while it goes on, and once more when it
answers again: gateway/core/failure_log.py), and is asked again only
:data:`STORE_RETRY_SECONDS` later; a callback is neither delayed further nor refused for it, and
the numbers the store missed meanwhile are written with the next emergency calls' (a few with
each, :data:`WRITES_PER_CALL`).
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import TYPE_CHECKING

from gateway.core.calls.limits import CallRate
from gateway.core.failure_log import FailureLog

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.core.store.interface import Store

log = logging.getLogger(__name__)

PRIORITY_VALUE = "psap-callback"  # RFC 7090's value of the Priority header (RFC 3261 §20.26)
MAX_NUMBERS = 10_000
"""Numbers remembered at once, in memory and in the store. Emergency calls are rare; past
this, those whose window ends first are dropped (a flood of calls to 112 cannot grow either)."""

STORE_READS_PER_SECOND = 10.0
"""Store look-ups for marked INVITEs this node's memory cannot answer, at most, a second (in
bursts of as many); past them memory answers alone."""

STORE_RETRY_SECONDS = 5.0
"""After a store call failed or did not answer in time, how long memory answers alone before
the store is asked again: a store that takes its whole statement timeout to fail holds the event
loop up once every this long, not at each emergency call or marked INVITE."""

WRITES_PER_CALL = 4
"""Store writes one emergency call makes at most: its own number, then numbers the store missed
while it did not answer (after an outage they reach the store a few per emergency call, rather
than all at once on the event loop)."""

MISS_KEPT_SECONDS = 1.0
"""How long the store's "no such number" is taken as the answer for that number: the gateway
asks about one INVITE more than once (overload control, the call cap, the trunk's limit)."""


def marked_as_callback(priority: str | None) -> bool:
    """Whether a Priority header value is ``psap-callback`` (a token: case-insensitive)."""
    return priority is not None and priority.strip().lower() == PRIORITY_VALUE


class PsapCallbacks:
    """The numbers our emergency calls presented, each until ``window`` seconds after the call
    (``0``: none kept, no call is a callback), in memory and in ``store`` if given. Times are
    the caller's clock (trio's); the store keeps its own (wall-clock, or the server's).
    ``wall_clock`` (Unix time) stamps the store outage's log lines; for tests."""

    def __init__(
        self,
        window: float,
        store: Store | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self._until: dict[str, float] = {}
        self._store = store if window > 0 else None
        self._reads = CallRate(STORE_READS_PER_SECOND)
        self._miss: tuple[str, float] | None = None  # the store's last "no", and when
        # Numbers presented while the store did not answer, written with the next one.
        self._unwritten: dict[str, float] = {}
        self._retry_at = 0.0  # while store_failing: when the store is asked again
        self.wall_clock = wall_clock
        self.store_outage = FailureLog(
            log,
            "PSAP callbacks: the store",
            "reads and writes",
            "until it does, only this node's memory knows which numbers a callback may call",
        )
        """The store's failures, logged once, summarized every 300 s while they go on, and
        once more when it answers again (gateway/core/failure_log.py)."""
        self.store_failures = 0
        """Writes and reads the store failed or did not answer in time (monitoring)."""
        self.store_hits = 0
        """Callbacks recognised from the store only (another node's call, or before a restart)."""

    def emergency_call_presented(self, number: str, now: float) -> None:
        """An emergency call left through a trunk presenting ``number`` (as E.164 where the
        numbering plan reads it): callbacks to it qualify until ``now + window``, on this node
        from memory, on the others (and after a restart) from the store."""
        if self.window <= 0 or not number:
            return
        self._remember(number, now + self.window)
        if self._miss is not None and self._miss[0] == number:
            self._miss = None
        store = self._store
        if store is None:
            return
        self._unwritten.pop(number, None)
        self._unwritten[number] = now + self.window
        while len(self._unwritten) > MAX_NUMBERS:
            del self._unwritten[next(iter(self._unwritten))]
        if self.store_failing and now < self._retry_at:
            return
        # Those missed whose window is over go unwritten (the oldest lead: one window for all).
        while self._unwritten:
            oldest, until = next(iter(self._unwritten.items()))
            if until > now:
                break
            del self._unwritten[oldest]
        # This one, then a few the store missed while it did not answer, newest first.
        newest = list(itertools.islice(reversed(self._unwritten.items()), WRITES_PER_CALL))
        for unwritten, until in newest:
            try:
                store.psap_number_presented(unwritten, until - now, MAX_NUMBERS)
            except Exception as exc:  # StoreError, or a backend's own: the call goes on
                self._failed(exc, now)
                return
            del self._unwritten[unwritten]
        self._answered()

    def called_back(self, number: str, now: float) -> bool:
        """Whether ``number`` presented an emergency call less than ``window`` seconds ago:
        from memory, else (with a store) from the store, whose answer memory then keeps."""
        until = self._until.get(number)
        if until is not None:
            if now < until:
                return True
            del self._until[number]
        store = self._store
        if store is None:
            return False
        miss = self._miss
        if miss is not None and miss[0] == number and now - miss[1] < MISS_KEPT_SECONDS:
            return False
        if (self.store_failing and now < self._retry_at) or not self._reads.allow(now):
            return False
        try:
            left = store.psap_number_remaining(number)
        except Exception as exc:  # StoreError, or a backend's own: memory has answered
            self._failed(exc, now)
            return False
        self._answered()
        if left is None:
            self._miss = (number, now)
            return False
        self.store_hits += 1
        self._remember(number, now + left)
        return True

    @property
    def store_failing(self) -> bool:
        """The store's last answer was a failure: memory answers alone until it answers."""
        return self.store_outage.failing

    @property
    def stored(self) -> bool:
        """Whether the numbers go to a store too (there is one, and a window)."""
        return self._store is not None

    def _remember(self, number: str, until: float) -> None:
        self._until.pop(number, None)  # re-inserted last: the oldest entries come first
        self._until[number] = until
        while len(self._until) > MAX_NUMBERS:
            del self._until[next(iter(self._until))]

    def _failed(self, exc: Exception, now: float) -> None:
        self.store_failures += 1
        self._retry_at = now + STORE_RETRY_SECONDS
        self.store_outage.failed(f"the store did not answer ({exc})", now=self.wall_clock())

    def _answered(self) -> None:
        if self.store_outage.failing:  # no clock read per store answer otherwise
            self.store_outage.answered(now=self.wall_clock())

    def __len__(self) -> int:
        return len(self._until)
