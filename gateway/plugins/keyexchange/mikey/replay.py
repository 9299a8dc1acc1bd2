"""The timestamp check and replay cache of MIKEY responders (RFC 3830 §5.4).

A message is fresh when its T (NTP time) is within ``max_skew`` seconds of our clock and it was
not seen before. The cache remembers each accepted message (by digest) until its T leaves the
window, and holds at most ``max_entries``: when full, the oldest entry is dropped and every
message not newer than it is refused from then on as possibly replayed (the floor), so the bound
never lets a replay through; it only makes a burst past the bound refuse old-but-valid messages.

The cache also holds the authenticated messages we send ourselves (``remember_own``): the
pre-shared key is the same both ways, so our own I_MSG sent back to us would pass its MAC check;
it is refused as a replay instead (a reflection attack). They are kept apart from the peer's,
with their own bound (``max_entries`` more): their T is our clock's, and evicting one must not
raise the floor to our time, or every message of a peer whose clock is behind ours (within
``max_skew``) would be refused from then on. Past that bound the oldest of ours is forgotten
(no floor): a reflection of it is then taken, as it would be once its T left the window.

A restart must not reopen the window (RFC 3830 §5.4: a message is refused when it was seen
within the skew, whether or not the process that saw it still runs). With a ``journal`` (the
plugin gives :class:`~gateway.plugins.keyexchange.mikey.replay_store.ReplayStore`, SQLite in
``<state_dir>/mikey/``) every accepted message's digest and T, every one of ours and every rise
of the floor are written through, and the first use of the cache after a start reads back what
is still inside the window. The alternative, refusing every message stamped before our start,
would not do: a peer's clock may run up to ``max_skew`` ahead, so a message seen just before a
restart can carry a T after it, and a floor high enough to cover that would refuse every
message for twice the skew after each start. A journal that cannot be read is the one case
where that floor is used (``now + max_skew``): better no MIKEY for a few minutes than replays.
"""

from __future__ import annotations

import hashlib
import heapq
from typing import Protocol

__all__ = ["ReplayCache", "ReplayJournal"]


class ReplayJournal(Protocol):
    """Where a :class:`ReplayCache` keeps what it saw across restarts (one ``scope`` per
    cache). Implementations log their own failures; only :meth:`load` raises (``OSError``)."""

    def load(self, scope: str, *, since: float) -> tuple[list[tuple[bytes, float, bool]], float]:
        """The digests with T at or after ``since`` as (digest, T, ours), and the floor.
        Raises ``OSError`` when the journal cannot be read."""

    def record(self, scope: str, digest: bytes, timestamp: float, *, own: bool) -> None:
        """Remember one message (``own``: ours, see :meth:`ReplayCache.remember_own`)."""

    def raise_floor(self, scope: str, floor: float) -> None:
        """The cache's floor rose to ``floor``."""

    def forget_before(self, scope: str, timestamp: float) -> None:
        """Entries with T before ``timestamp`` left the window."""


class ReplayCache:
    """Seen MIKEY messages, bounded (STYLE.md habit 7). ``check`` is sans-IO: it takes the
    message's T as Unix time and ``now``."""

    def __init__(
        self,
        *,
        max_skew: float = 120.0,
        max_entries: int = 10_000,
        journal: ReplayJournal | None = None,
        scope: str = "",
    ) -> None:
        if max_skew <= 0 or max_entries < 1:
            raise ValueError("a replay cache needs a positive skew and at least one entry")
        self.max_skew = max_skew
        self.max_entries = max_entries
        self.journal = journal
        self.scope = scope
        self._loaded = journal is None
        self._seen: dict[bytes, float] = {}
        self._expiry: list[tuple[float, bytes]] = []  # heap of (T, digest)
        self._floor = float("-inf")
        self._own: dict[bytes, float] = {}
        self._own_expiry: list[tuple[float, bytes]] = []  # heap of (T, digest)
        self.refused = 0

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, message: bytes, timestamp: float, *, now: float) -> str | None:
        """Why ``message`` (with T = ``timestamp``) is not fresh, or None after remembering it."""
        self._load(now)
        self._expire(now)
        if abs(timestamp - now) > self.max_skew:
            self.refused += 1
            off = timestamp - now
            return f"its timestamp is {off:+.0f} s off our clock (more than {self.max_skew:g} s)"
        digest = hashlib.sha256(message).digest()
        if digest in self._seen or digest in self._own or timestamp <= self._floor:
            self.refused += 1
            return "it is a replay of an earlier message"
        if len(self._seen) >= self.max_entries:
            oldest, old_digest = heapq.heappop(self._expiry)
            del self._seen[old_digest]
            self._floor = max(self._floor, oldest)
            if self.journal is not None:
                self.journal.raise_floor(self.scope, self._floor)
            if timestamp <= self._floor:
                self.refused += 1
                return "it is a replay of an earlier message"
        self._seen[digest] = timestamp
        heapq.heappush(self._expiry, (timestamp, digest))
        if self.journal is not None:
            self.journal.record(self.scope, digest, timestamp, own=False)
        return None

    def remember_own(self, message: bytes, timestamp: float, *, now: float) -> None:
        """Our own message (an I_MSG we send, with T = ``timestamp``): from now on it is refused
        as a replay should it come back to us, so a reflected message is not taken for the
        peer's (its MAC is right: it is made with the same pre-shared key)."""
        self._load(now)
        self._expire(now)
        digest = hashlib.sha256(message).digest()
        if digest in self._own:
            return
        if len(self._own) >= self.max_entries:
            _, old_digest = heapq.heappop(self._own_expiry)
            del self._own[old_digest]
        self._own[digest] = timestamp
        heapq.heappush(self._own_expiry, (timestamp, digest))
        if self.journal is not None:
            self.journal.record(self.scope, digest, timestamp, own=True)

    def _load(self, now: float) -> None:
        """Once, at the first use after a start: what the journal kept inside the window."""
        if self._loaded or self.journal is None:
            return
        self._loaded = True
        try:
            entries, floor = self.journal.load(self.scope, since=now - self.max_skew)
        except OSError:
            # Unknown what was seen before the start: refuse every T that could be a replay.
            self._floor = now + self.max_skew
            return
        self._floor = max(self._floor, floor)
        for digest, timestamp, own in entries:
            seen, expiry = (self._own, self._own_expiry) if own else (self._seen, self._expiry)
            if digest not in seen:
                seen[digest] = timestamp
                heapq.heappush(expiry, (timestamp, digest))
        # Several runs inside one window may have kept more than the bound: as in check().
        while len(self._seen) > self.max_entries:
            oldest, old_digest = heapq.heappop(self._expiry)
            del self._seen[old_digest]
            self._floor = max(self._floor, oldest)
        while len(self._own) > self.max_entries:
            _, old_digest = heapq.heappop(self._own_expiry)
            del self._own[old_digest]

    def _expire(self, now: float) -> None:
        expired = False
        while self._expiry and self._expiry[0][0] < now - self.max_skew:
            _, digest = heapq.heappop(self._expiry)
            self._seen.pop(digest, None)
            expired = True
        while self._own_expiry and self._own_expiry[0][0] < now - self.max_skew:
            _, digest = heapq.heappop(self._own_expiry)
            self._own.pop(digest, None)
            expired = True
        if expired and self.journal is not None:
            self.journal.forget_before(self.scope, now - self.max_skew)
