"""Call limits: how many calls may be in progress through a trunk or from or to an account
(``max_calls``), and how fast new calls may go to a trunk (``max_cps``).

A carrier's trunk has so many channels and often a calls-per-second cap, and refuses (or bans)
what goes past them; an account's limit bounds what a compromised phone can run up, and makes a
one-line user busy while on a call. Sans-IO: the call manager asks with the time; a call is
counted once per trunk or account and given back when it ends.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

import attrs

Key = tuple[str, str]  # ("trunk" | "account", name)


@attrs.frozen
class Limit:
    """``max_calls`` in progress (0: none) and ``max_cps`` new calls per second (0: none)."""

    max_calls: int = 0
    max_cps: float = 0.0


NO_LIMIT = Limit()


@attrs.define
class CallRate:
    """A token bucket: ``per_second`` new calls a second, in bursts of at most a second's worth
    (at least one call)."""

    per_second: float
    tokens: float = attrs.field()
    updated: float = -math.inf

    @tokens.default
    def _full(self) -> float:
        return self.burst

    @property
    def burst(self) -> float:
        return max(1.0, self.per_second)

    def allow(self, now: float) -> bool:
        if self.updated != -math.inf:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class CallLimits:
    """The calls in progress per trunk and account, and each trunk's call rate. ``limit_of``
    reads the configured :class:`Limit` of a key (it may change while the gateway runs)."""

    def __init__(self, limit_of: Callable[[Key], Limit]) -> None:
        self._limit_of = limit_of
        self.in_progress: collections.Counter[Key] = collections.Counter()
        # Calls refused since the start, by key and why ("call limit", "call rate"): counted
        # on refusals only, for monitoring (gateway/core/status.py).
        self.refused: collections.Counter[tuple[Key, str]] = collections.Counter()
        self._counted: dict[object, list[Key]] = {}
        self._rates: dict[Key, CallRate] = {}

    def has_room(self, key: Key) -> bool:
        """Whether one more call fits ``key``'s ``max_calls``."""
        limit = self._limit_of(key).max_calls
        return not limit or self.in_progress[key] < limit

    def refuse(self, key: Key, why: str) -> str:
        """Count a call refused for ``key`` (``why``: "call limit" or "call rate"); ``why``."""
        self.refused[(key, why)] += 1
        return why

    def take(
        self,
        holder: object,
        key: Key,
        *,
        now: float | None = None,
        exempt: bool = False,
        count_refusal: bool = True,
    ) -> str | None:
        """Count ``holder`` (a call) against ``key``, once; None when it fits, else why not
        ("call limit" or "call rate"), with nothing counted. ``now`` is given for a call we
        send to a trunk, which its ``max_cps`` paces; calls from it are not paced here (the
        gateway's overload control is what guards against a flood). An ``exempt`` call (an
        emergency call) is counted whatever the limits say: it takes a channel, never waits
        for one. ``count_refusal`` False: a refusal is not counted yet (the caller may still
        take it as exempt, or count it with :meth:`refuse`)."""
        counted = self._counted.setdefault(holder, [])
        if key in counted:
            return None
        if not exempt and not self.has_room(key):
            return self.refuse(key, "call limit") if count_refusal else "call limit"
        per_second = self._limit_of(key).max_cps
        if per_second and now is not None and not exempt:
            rate = self._rates.get(key)
            if rate is None or rate.per_second != per_second:
                rate = self._rates[key] = CallRate(per_second)
            if not rate.allow(now):
                return self.refuse(key, "call rate") if count_refusal else "call rate"
        counted.append(key)
        self.in_progress[key] += 1
        return None

    def release_one(self, holder: object, key: Key) -> None:
        """``holder`` no longer occupies ``key`` (a trunk that failed, which the call left for
        another): give that one back, if it was counted."""
        counted = self._counted.get(holder)
        if counted is None or key not in counted:
            return
        counted.remove(key)
        self.in_progress[key] -= 1
        if not self.in_progress[key]:
            del self.in_progress[key]

    def release(self, holder: object) -> None:
        """``holder`` has ended: give back everything it counted against."""
        for key in self._counted.pop(holder, ()):
            self.in_progress[key] -= 1
            if not self.in_progress[key]:
                del self.in_progress[key]
