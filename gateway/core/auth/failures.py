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

IPv6 sources are counted per prefix of ``ipv6_prefix_length`` bits (128, the default: per
address, as IPv4). A host or customer on IPv6 holds at least a /64 (64-bit interface
IDs, RFC 4291 §2.5.1; RFC 6177) and can send each guess from a new address of it: counted per
address, each of its 2**64 addresses gets ``max_failures`` fresh guesses, and neither the limit
nor the ban ever holds. Counted per /64 the whole subnet shares one count and one ban, as the
phones behind one IPv4 NAT address do. An IPv4-mapped IPv6 address (``::ffff:192.0.2.7``,
RFC 4291 §2.5.5.2: an IPv4 peer of a dual-stack socket) is counted as its IPv4 address whatever
the prefix length. The tables then hold prefixes instead of addresses, within the same bounds.

A success forgets only the failures that named the same user. Forgetting every failure of the
source would let anyone who holds one account guess other accounts' passwords without limit
(four guesses, one good login, four more guesses, ...), and one phone logging in behind a shared
NAT would clear what a guesser behind the same address had run up.
"""

from __future__ import annotations

import functools
import ipaddress
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
    # IPv6 sources are counted per prefix of this many bits (128: per address).
    ipv6_prefix_length: int = 128

    def __attrs_post_init__(self) -> None:
        if self.max_failures < 1 or self.window <= 0 or self.max_sources < 1:
            raise ValueError("max_failures, window and max_sources must be positive")
        if not self.block_time >= 0:  # NaN too
            raise ValueError("block_time must be 0 or more")
        if not 1 <= self.ipv6_prefix_length <= 128:
            raise ValueError("ipv6_prefix_length must be 1 to 128")


@functools.lru_cache(maxsize=4096)
def _ipv6_source(address: str, prefix_length: int) -> str:
    """The source an IPv6 ``address`` is counted as: its IPv4 address if it is IPv4-mapped
    (RFC 4291 §2.5.5.2), itself at 128 bits, else its network (``2001:db8:1:2::/64``).
    Memoized: a phone sends from the same address again and again; a guesser walking its
    prefix only evicts entries (about 3 us each to work out again)."""
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address  # not an IP literal (a test's host name): counted as it is
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if prefix_length == 128:
        return address
    host_bits = 128 - prefix_length  # an IPv6Network object costs several times this
    network = ipaddress.IPv6Address(int(ip) >> host_bits << host_bits)
    return f"{network}/{prefix_length}"


class FailureCounter:
    """Sliding-window count of authentication failures per source address (a string such as
    ``"192.0.2.7"``; the caller decides whether the port is part of it — usually not), each
    failure remembering the user it named. IPv6 addresses count per prefix of
    ``policy.ipv6_prefix_length`` bits (:meth:`source_of`); every method takes the address."""

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

    def banned_now(self, *, now: float) -> int:
        """Sources (addresses, or IPv6 prefixes) whose ban has not ended at ``now``. For a
        scrape, not for each request: it walks the ended bans still kept (at the front: every
        ban lasts block_time, so they end in the order they began) and changes nothing."""
        ended = 0
        for end in self._banned_until.values():
            if end > now:
                break
            ended += 1
        return len(self._banned_until) - ended

    def source_of(self, address: str) -> str:
        """What failures from ``address`` are counted and banned as: an IPv4 address (or an
        IPv6 one at the default prefix length 128) itself, an IPv4-mapped IPv6 address as its
        IPv4 address, another IPv6 address as its prefix (``2001:db8:1:2::/64``)."""
        if ":" not in address:  # IPv4: no parsing, as before IPv6 prefixes
            return address
        return _ipv6_source(address, self.policy.ipv6_prefix_length)

    def record_failure(self, address: str, *, user: str, now: float) -> bool:
        """Count one failed attempt from ``address`` naming ``user`` ("" if it named none);
        returns whether its source is now blocked."""
        source = self.source_of(address)
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
        return self._blocked(source, now)

    def _ban(self, source: str, now: float) -> None:
        if self._ban_end(source, now) is not None:
            return  # a failure while banned (the caller checks first) does not extend the ban
        bans = self._banned_until
        while bans and next(iter(bans.values())) <= now:  # ended ones first
            bans.popitem(last=False)
        bans[source] = now + self.policy.block_time
        while len(bans) > self.policy.max_sources:
            bans.popitem(last=False)  # the one nearest to its end

    def record_success(self, address: str, *, user: str) -> None:
        """Forget the failures for ``user`` of ``address``'s source (it proved it knows that
        password); its failures for other users still count."""
        source = self.source_of(address)
        failures = self._failures.get(source)
        if failures is None:
            return
        kept = [failure for failure in failures if failure[1] != user]
        if kept:
            self._failures[source] = deque(kept, maxlen=self.policy.max_failures)
        else:
            del self._failures[source]

    def is_blocked(self, address: str, *, now: float) -> bool:
        """Whether requests from ``address`` get 403 instead of a digest check."""
        return self._blocked(self.source_of(address), now)

    def _blocked(self, source: str, now: float) -> bool:
        failures = self._failures.get(source)
        if failures is not None and self._window_blocks(failures, now):
            return True
        return self._ban_end(source, now) is not None

    def blocked_for(self, address: str, *, now: float) -> float:
        """Seconds until requests from ``address`` are looked at again (0: now): the later of
        the end of its source's ban and the time its oldest counted failure leaves the window."""
        source = self.source_of(address)
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
