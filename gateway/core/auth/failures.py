"""Per-source failure counter: after too many bad attempts, answer 403 Forbidden (RFC 3261
§21.4.4: refused, "authorization will not help"); this blunts online password guessing.

Only failed attempts count (:class:`~gateway.core.auth.digest.BadCredentials` and
:class:`~gateway.core.auth.digest.UnknownUser`); a first-round challenge or a stale nonce does
not. While a source is blocked the caller answers 403 Forbidden without looking at its
credentials, and logs the source address. The block lifts by itself once fewer than
``max_failures`` failures remain inside the sliding ``window`` and, with a ``block_time``, once
``block_time`` seconds have passed since the failure that blocked the source. Without one
(``block_time`` 0) the limit is a rate: a guesser gets ``max_failures`` guesses every window,
7,200 a day at 5 a minute. With one it is a ban like Kamailio's pike + htable or fail2ban's:
``max_failures`` guesses every ``block_time``. Requests refused while blocked do not extend the
ban (they are not failures: their credentials are not looked at), so a phone behind the
guesser's NAT gets back in when it ends.

Memory is bounded: at most ``max_sources`` addresses' failures are tracked, least recently
failing first out, and at most ``max_sources`` bans, nearest to its end first out. Bans are
kept apart from failures so that a flood of single failures from many addresses (which pushes
out failures) cannot lift a ban: a ban goes early only after ``max_sources`` other addresses
have been banned after it, each with ``max_failures`` failures of its own.

A success forgets only the failures that named the same user. Forgetting every failure of the
source would let anyone who holds one account guess other accounts' passwords without limit
(four guesses, one good login, four more guesses, ...), and one phone logging in behind a shared
NAT would clear what a guesser behind the same address had run up.
"""

from __future__ import annotations

from collections import OrderedDict, deque

import attrs


@attrs.frozen
class FailurePolicy:
    """``max_failures`` failed attempts from one source within ``window`` seconds block it,
    for at least ``block_time`` seconds from the failure that blocked it (0: only while the
    failures lie within the window)."""

    max_failures: int = 5
    window: float = 60.0
    max_sources: int = 10_000
    block_time: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.max_failures < 1 or self.window <= 0 or self.max_sources < 1:
            raise ValueError("max_failures, window and max_sources must be positive")
        if not self.block_time >= 0:  # NaN too
            raise ValueError("block_time must be 0 or more")


class FailureCounter:
    """Sliding-window count of authentication failures per source address (a string such as
    ``"192.0.2.7"``; the caller decides whether the port is part of it — usually not), each
    failure remembering the user it named."""

    def __init__(self, policy: FailurePolicy | None = None) -> None:
        self.policy = policy if policy is not None else FailurePolicy()
        # Per source: (time, user) of its last max_failures failures, oldest first.
        self._failures: OrderedDict[str, deque[tuple[float, str]]] = OrderedDict()
        # Per banned source (block_time > 0): when its ban ends. Every ban lasts block_time,
        # so the order of insertion is the order of ending: the first is the next to end.
        self._banned_until: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    @property
    def banned(self) -> int:
        """Entries of the ban table, at most ``max_sources``: an ended ban stays until the next
        ban or a request from its source drops it."""
        return len(self._banned_until)

    def record_failure(self, source: str, *, user: str, now: float) -> bool:
        """Count one failed attempt from ``source`` naming ``user`` ("" if it named none);
        returns whether the source is now blocked."""
        failures = self._failures.get(source)
        if failures is None:
            failures = deque(maxlen=self.policy.max_failures)
            self._failures[source] = failures
        failures.append((now, user))
        self._failures.move_to_end(source)
        while len(self._failures) > self.policy.max_sources:
            self._failures.popitem(last=False)
        if self.policy.block_time > 0 and self._window_blocks(failures, now):
            self._ban(source, now)
        return self.is_blocked(source, now=now)

    def _ban(self, source: str, now: float) -> None:
        if self._ban_end(source, now) is not None:
            return  # a failure while banned (the caller checks first) does not extend the ban
        bans = self._banned_until
        while bans and next(iter(bans.values())) <= now:  # ended ones first
            bans.popitem(last=False)
        bans[source] = now + self.policy.block_time
        while len(bans) > self.policy.max_sources:
            bans.popitem(last=False)  # the one nearest to its end

    def record_success(self, source: str, *, user: str) -> None:
        """Forget ``source``'s failures for ``user`` (it proved it knows that password); its
        failures for other users still count."""
        failures = self._failures.get(source)
        if failures is None:
            return
        kept = [failure for failure in failures if failure[1] != user]
        if kept:
            self._failures[source] = deque(kept, maxlen=self.policy.max_failures)
        else:
            del self._failures[source]

    def is_blocked(self, source: str, *, now: float) -> bool:
        """Whether requests from ``source`` get 403 instead of a digest check."""
        failures = self._failures.get(source)
        if failures is not None and self._window_blocks(failures, now):
            return True
        return self._ban_end(source, now) is not None

    def blocked_for(self, source: str, *, now: float) -> float:
        """Seconds until requests from ``source`` are looked at again (0: now): the later of
        the end of its ban and the time its oldest counted failure leaves the window."""
        end = now
        failures = self._failures.get(source)
        if failures is not None and self._window_blocks(failures, now):
            end = failures[0][0] + self.policy.window
        ban_end = self._ban_end(source, now)
        if ban_end is not None:
            end = max(end, ban_end)
        return end - now

    def _window_blocks(self, failures: deque[tuple[float, str]], now: float) -> bool:
        if len(failures) < self.policy.max_failures:
            return False
        # The deque holds the last max_failures failures; blocked while all lie in the window.
        return now - failures[0][0] < self.policy.window

    def _ban_end(self, source: str, now: float) -> float | None:
        end = self._banned_until.get(source)
        if end is None:
            return None
        if end <= now:
            del self._banned_until[source]
            return None
        return end
