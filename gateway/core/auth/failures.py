"""Per-source failure counter: after too many bad attempts, answer 403 Forbidden (RFC 3261
§21.4.4: refused, "authorization will not help"); this blunts online password guessing.

Only failed attempts count (:class:`~gateway.core.auth.digest.BadCredentials` and
:class:`~gateway.core.auth.digest.UnknownUser`); a first-round challenge or a stale nonce does
not. While a source is blocked the caller answers 403 Forbidden without looking at its
credentials, and logs the source address. The block lifts by itself once fewer than
``max_failures`` failures remain inside the sliding ``window``. Memory is bounded: at most
``max_sources`` addresses are tracked, least recently failing first out.

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
    """``max_failures`` failed attempts from one source within ``window`` seconds block it."""

    max_failures: int = 5
    window: float = 60.0
    max_sources: int = 10_000

    def __attrs_post_init__(self) -> None:
        if self.max_failures < 1 or self.window <= 0 or self.max_sources < 1:
            raise ValueError("max_failures, window and max_sources must be positive")


class FailureCounter:
    """Sliding-window count of authentication failures per source address (a string such as
    ``"192.0.2.7"``; the caller decides whether the port is part of it — usually not), each
    failure remembering the user it named."""

    def __init__(self, policy: FailurePolicy | None = None) -> None:
        self.policy = policy if policy is not None else FailurePolicy()
        # Per source: (time, user) of its last max_failures failures, oldest first.
        self._failures: OrderedDict[str, deque[tuple[float, str]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

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
        return self.is_blocked(source, now=now)

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
        if failures is None:
            return False
        if len(failures) < self.policy.max_failures:
            return False
        # The deque holds the last max_failures failures; blocked while all lie in the window.
        return now - failures[0][0] < self.policy.window
