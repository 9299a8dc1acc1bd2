"""Call limits: how many calls may be in progress through a trunk or from or to an account
(``max_calls``), and how fast new calls may go to a trunk (``max_cps``).

A carrier's trunk has so many channels and often a calls-per-second cap, and refuses (or bans)
what goes past them; an account's limit bounds what a compromised phone can run up, and makes a
one-line user busy while on a call. Sans-IO: the call manager asks with the time; a call is
counted once per trunk or account and given back when it ends.

Nodes sharing a PostgreSQL store count ``max_calls`` for the cluster: a key with a limit is
counted in the database (``SharedCallLimits``, one round trip per take and per release), every
other key in memory only, as on one node. ``max_cps`` is paced by each node for its own calls;
with ``[store] max_cps_scope = "cluster"`` a trunk's ``max_cps`` is the cluster's, and each node
paces its share, ``max_cps`` divided by the live nodes its last heartbeat counted (no database
work per call; the bucket follows a changing share without a burst). While the database does
not answer, the last count stands (a carrier's cap is not exceeded because the database is out:
no node can start without it, so none joins meanwhile). When the database does
not answer, this node counts its own calls against each limit (fail open: at most the limit per
node, never unlimited, and never a call outage because the database is), writes those holds
once it answers again and retries releases it missed; the heartbeat is what asks it again.
The heartbeat also writes holds for calls up that were counted in memory against a key that
has a limit now (an account's ``max_calls`` raised from 0), and reports another process
beating under this node's name.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from gateway.core.failure_log import FailureLog
from gateway.core.store.errors import StoreError

if TYPE_CHECKING:
    from gateway.core.store.interface import Hold, SharedCallLimits

log = logging.getLogger(__name__)

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

    def ready(self, now: float) -> bool:
        """Whether a call may go at ``now`` (nothing spent: see :meth:`spend`)."""
        if self.updated != -math.inf:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        return self.tokens >= 1.0

    def spend(self) -> None:
        self.tokens -= 1.0

    def allow(self, now: float) -> bool:
        if not self.ready(now):
            return False
        self.spend()
        return True

    def retune(self, per_second: float, now: float) -> None:
        """Pace at ``per_second`` from ``now`` on (this node's share of a trunk's ``max_cps``
        changed as nodes came or went): what the bucket holds at ``now`` is kept, at most
        the new burst, so a higher rate refills faster but adds no burst of its own."""
        self.ready(now)
        self.per_second = per_second
        self.tokens = min(self.tokens, self.burst)


class CallLimits:
    """The calls in progress per trunk and account, and each trunk's call rate. ``limit_of``
    reads the configured :class:`Limit` of a key (it may change while the gateway runs).
    ``shared``: the store's count for the cluster (PostgreSQL), used for keys with a
    ``max_calls``; None: every key counted here (one node). ``cluster_cps`` (``[store]
    max_cps_scope = "cluster"``): with ``shared``, a trunk's ``max_cps`` is the cluster's and
    this node paces ``max_cps`` divided by the live nodes its heartbeats count.
    ``wall_clock`` (Unix time) stamps the database outage's log lines; for tests."""

    def __init__(
        self,
        limit_of: Callable[[Key], Limit],
        shared: SharedCallLimits | None = None,
        *,
        cluster_cps: bool = False,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._limit_of = limit_of
        self.wall_clock = wall_clock
        self.shared = shared
        self.cluster_cps = cluster_cps and shared is not None
        self.live_nodes = 1
        """The nodes alive, this one included, as the last heartbeat the database answered
        counted them (``shared.start()`` the first); 1 without ``shared``."""
        self.cps_share = 1.0
        """The part of each trunk's ``max_cps`` this node paces: 1, or with ``cluster_cps``
        1 / ``live_nodes``. While the database does not answer, the last count stands."""
        if shared is not None:
            self._count_nodes(shared.live_nodes)
        # This node's calls in progress per key (with a shared store, the cluster's are in the
        # database; these are what the status view shows, and what a node counts alone while
        # the database does not answer).
        self.in_progress: collections.Counter[Key] = collections.Counter()
        # Calls refused since the start, by key and why ("call limit", "call rate"): counted
        # on refusals only, for monitoring (gateway/core/status.py).
        self.refused: collections.Counter[tuple[Key, str]] = collections.Counter()
        self._counted: dict[object, list[Key]] = {}
        self._rates: dict[Key, CallRate] = {}
        # With ``shared``: each holder's hold number and the keys it holds in the database.
        self._holds: dict[object, tuple[int, list[Key]]] = {}
        self._hold_numbers = itertools.count(1)
        # How many of ``_holds`` there are per key. Fewer than ``in_progress`` only for a key
        # counted in memory (no limit) when its calls started, which may have one now.
        self._held: collections.Counter[Key] = collections.Counter()
        # While the database does not answer (``store_failing``): holds counted here only, to
        # be written, and holds given back that it did not hear of, to be deleted, by the next
        # heartbeat it answers (:meth:`beat`).
        self.store_failures = FailureLog(
            log,
            "call limits: the database",
            "requests",
            "max_calls counted on this node only until it does",
        )
        """The shared count's outage: logged once, summarized every 300 s while the heartbeat
        keeps failing, and once more when it answers again (gateway/core/failure_log.py)."""
        self._unsynced: set[Hold] = set()
        self._unreleased: set[Hold] = set()
        # Of the unsynced, those certainly not in the database (never sent to it): given back,
        # they need no DELETE, so an outage keeps only the holds of calls still up.
        self._local_only: set[Hold] = set()
        self.counted_locally: collections.Counter[Key] = collections.Counter()
        """Calls counted against a shared limit by this node alone (the database did not
        answer), by key, since the start: for monitoring."""
        self.name_conflicts = 0
        """Heartbeats that found another process's under this node's name (``[store] node``
        given to two nodes), since the start: for monitoring."""

    def sizes(self) -> dict[str, int]:
        """Entries of the limits' per-call and per-key tables, for leak hunting."""
        return {
            "call_limit_keys": len(self.in_progress),
            "call_limit_counted": len(self._counted),
            "call_limit_rates": len(self._rates),
            "call_limit_holds": len(self._holds),
        }

    @property
    def store_failing(self) -> bool:
        """Whether the database's last answer was a failure: this node counts alone until a
        heartbeat it answers."""
        return self.store_failures.failing

    def has_room(self, key: Key) -> bool:
        """Whether one more call fits ``key``'s ``max_calls`` on this node."""
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
        counted = self._counted.get(holder)
        if counted is not None and key in counted:
            return None
        limit = self._limit_of(key)
        rate: CallRate | None = None
        if limit.max_cps and now is not None and not exempt:
            per_second = limit.max_cps * self.cps_share
            rate = self._rates.get(key)
            if rate is None:
                rate = self._rates[key] = CallRate(per_second)
            elif rate.per_second != per_second:
                # The share changed (a node came or went) or max_cps did: keep what the
                # bucket holds, so neither refills it at once (a burst the carrier refuses).
                rate.retune(per_second, now)
        why: str | None = None
        if limit.max_calls and self.shared is not None:
            if self.in_progress[key] > self._held[key]:
                # The key had no limit when calls of this node up now started: they count
                # from now on, written before the count that decides this one.
                self._hold_calls_up(key)
                if not self.store_failing:
                    self.beat()
            # The cluster's count. Paced first, so a call refused for the rate costs the
            # database nothing (with both past, the rate is the reason given).
            if rate is not None and now is not None and not rate.ready(now):
                why = "call rate"
            elif not self._take_shared(holder, key, limit.max_calls, exempt):
                why = "call limit"
            elif rate is not None:
                rate.spend()
        elif not exempt and limit.max_calls and self.in_progress[key] >= limit.max_calls:
            why = "call limit"
        elif rate is not None and now is not None and not rate.allow(now):
            why = "call rate"
        if why is not None:
            return self.refuse(key, why) if count_refusal else why
        if counted is None:
            counted = self._counted[holder] = []
        counted.append(key)
        self.in_progress[key] += 1
        return None

    def counts(self, holder: object, key: Key) -> bool:
        """Whether ``holder`` is counted against ``key``."""
        counted = self._counted.get(holder)
        return counted is not None and key in counted

    def hand_over(self, holder: object, to: object) -> None:
        """What ``holder`` counted is ``to``'s now (an INVITE's counts, taken before its call
        existed, become the call's)."""
        counted = self._counted.pop(holder, None)
        if counted is not None:
            self._counted[to] = counted
        held = self._holds.pop(holder, None)
        if held is not None:
            self._holds[to] = held

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
        held = self._holds.get(holder)
        if held is not None and key in held[1]:
            held[1].remove(key)
            self._unhold(key)
            self._release_shared([(held[0], key)])

    def release(self, holder: object) -> None:
        """``holder`` has ended: give back everything it counted against."""
        for key in self._counted.pop(holder, ()):
            self.in_progress[key] -= 1
            if not self.in_progress[key]:
                del self.in_progress[key]
        held = self._holds.pop(holder, None)
        if held is not None and held[1]:
            number, keys = held
            for key in keys:
                self._unhold(key)
            self._release_shared([(number, key) for key in keys])

    # -- counted for the cluster (``shared``) ----------------------------------------------

    def _take_shared(self, holder: object, key: Key, max_calls: int, exempt: bool) -> bool:
        assert self.shared is not None
        held = self._holds.get(holder)
        if held is None:
            held = self._holds[holder] = (next(self._hold_numbers), [])
        hold = (held[0], key)
        taken = asked = False
        if not self.store_failing:
            asked = True
            try:
                taken = self.shared.take(held[0], key, max_calls, exempt=exempt)
            except StoreError as exc:
                self._failed(exc)  # whether the row was written is not known
            else:
                self._unreleased.discard(hold)  # a row left from before is this hold again
        if self.store_failing:
            # Fail open on this node's own count: a database outage is no call outage, and the
            # calls of each node stay within the limit (docs/configuration.md, [store]).
            taken = exempt or self.in_progress[key] < max_calls
            if taken:
                if not asked and hold not in self._unreleased:
                    self._local_only.add(hold)
                self._unreleased.discard(hold)
                self._unsynced.add(hold)
                self.counted_locally[key] += 1
        if taken:
            held[1].append(key)
            self._held[key] += 1
        elif not held[1]:
            del self._holds[holder]
        return taken

    def _unhold(self, key: Key) -> None:
        self._held[key] -= 1
        if not self._held[key]:
            del self._held[key]

    def _hold_calls_up(self, only: Key | None = None) -> None:
        """Give this node's calls counted in memory against a key that has a ``max_calls``
        now (none when they started: an account's limit raised from 0 while they were up)
        holds, written by the next heartbeat (or at once, by a take): until they end they
        count for the cluster, as they would had the limit been there from their start.
        ``only``: look at that key alone; else at every key with such calls."""
        keys = [only] if only is not None else list(self.in_progress)
        gained = {
            key
            for key in keys
            if self.in_progress[key] > self._held[key] and self._limit_of(key).max_calls
        }
        if not gained:
            return
        written = 0
        for holder, counted in self._counted.items():
            for key in counted:
                if key not in gained:
                    continue
                held = self._holds.get(holder)
                if held is None:
                    held = self._holds[holder] = (next(self._hold_numbers), [])
                if key in held[1]:
                    continue
                held[1].append(key)
                self._held[key] += 1
                hold = (held[0], key)
                self._unsynced.add(hold)
                self._local_only.add(hold)  # not in the database: given back, no DELETE
                written += 1
        log.info(
            "call limits: %s gained a max_calls: %d call(s) of this node up since before now "
            "count for the cluster",
            ", ".join(f"{kind} {name}" for kind, name in sorted(gained)),
            written,
        )

    def _release_shared(self, holds: Sequence[Hold]) -> None:
        assert self.shared is not None
        self._unsynced.difference_update(holds)
        if self._local_only:
            never_sent = [hold for hold in holds if hold in self._local_only]
            if never_sent:
                self._local_only.difference_update(never_sent)
                holds = [hold for hold in holds if hold not in never_sent]
                if not holds:
                    return
        if not self.store_failing:
            try:
                self.shared.release(holds)
            except StoreError as exc:
                self._failed(exc)
            else:
                return
        # Deleted by the next heartbeat the database answers (a take whose answer was lost
        # may have written its row after all: deleting a row that is not there is harmless).
        self._unreleased.update(holds)

    def _failed(self, exc: StoreError) -> None:
        self.store_failures.failed(f"it did not answer ({exc})", now=self.wall_clock())

    def beat(self) -> None:
        """Tell the cluster this node is alive (every ``shared.heartbeat_interval``), writing
        what it counted alone and giving back what it could not while the database did not
        answer; until it answers, keep counting here."""
        if self.shared is None:
            return
        if self.shared.limits_changed():
            self._hold_calls_up()
        add, remove = sorted(self._unsynced), sorted(self._unreleased)
        try:
            other = self.shared.beat(add, remove)
        except StoreError as exc:
            self._failed(exc)
            return
        if other is not None:
            self.name_conflicts += 1
            if self.name_conflicts == 1:
                log.error(
                    "call limits: another running gateway (instance %s) writes this node's "
                    "heartbeat: two nodes have one [store] node name, and each counts the "
                    "other's calls as its own and drops its holds at start and stop. Give "
                    "each a distinct name and restart one",
                    other,
                )
        self._count_nodes(self.shared.live_nodes)
        self._unsynced.difference_update(add)
        self._local_only.difference_update(add)
        self._unreleased.difference_update(remove)
        self.store_failures.answered(
            now=self.wall_clock(),
            outcome=f"max_calls counted for the cluster ({len(add)} call(s) counted on this "
            "node alone written)",
        )

    def paced_cps(self, key: Key) -> float:
        """The new calls a second this node sends to ``key`` at most now: its ``max_cps``
        (0: none), or with ``cluster_cps`` this node's share of it."""
        return self._limit_of(key).max_cps * self.cps_share

    def _count_nodes(self, live: int) -> None:
        """The heartbeat counted ``live`` nodes (this one included): with ``cluster_cps``,
        each trunk's ``max_cps`` is shared among them from the next call on."""
        live = max(1, live)  # this node is alive, whatever a count from before its beat says
        if live == self.live_nodes:
            return
        self.live_nodes = live
        if self.cluster_cps:
            self.cps_share = 1.0 / live
            log.info(
                "call limits: %d node(s) alive: each trunk's max_cps is paced at 1/%d here",
                live,
                live,
            )
