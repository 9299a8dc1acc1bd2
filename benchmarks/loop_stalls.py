"""How long periodic work over every watched account, live call or binding holds the event loop
(which relays media without ``[media] workers``): presence from registration's poll, a metrics
scrape's walk over the live calls, and the registrations' housekeeping.

Run from the repository root (a few minutes; PostgreSQL figures need Debian's ``postgresql``
and psycopg, as the store tests do, and are skipped without them)::

    python benchmarks/loop_stalls.py
    python benchmarks/loop_stalls.py --accounts 1000 10000 20000 --calls 1000 5000 10000

Figures (wall-clock, ``time.perf_counter``; the best of ``--rounds``):

- **presence poll, before**: what ``Presence.follow_registrations`` did every 5 s until
  session 25: ``bindings_for_account`` per watched account, the store's cache empty (past
  4096 accounts the cache is cleared before a poll comes round again), with a checkpoint every
  100 accounts: the whole poll and its longest slice between two checkpoints.
- **presence poll, now**: ``Store.binding_expiries`` for each chunk of ``POLL_CHUNK`` accounts
  and the sans-IO update of each (``Registrations.update``): the whole poll and its longest
  slice. Every account has one live binding; half the watched accounts exist
  (a watched name nobody has costs a look-up all the same).
- **scrape**: ``StatusView.media()`` (the walk over the live calls, all at once) and
  ``media_in_steps()`` (what a scrape runs now), with N live calls: 45 real answered calls of
  the component tests' in-memory B2BUA (tests/component/calls/b2bua_env.py), each stood in for
  by N/45 call objects sharing its media session and keying (the walk reads nothing else), so
  the figures are the walk's CPU time with warm caches. The longest slice is the longest time
  between the walk's start, its checkpoints and its end.
- **housekeeping**: ``expire_bindings`` when N bindings expired at once (a gateway back after
  an outage longer than the registrations): in one statement (until session 25) and
  ``EXPIRE_CHUNK`` at a time (now; the longest statement), and ``count_bindings`` (each scrape)
  with N.
- **other**: the sans-IO walks of other loops over every item at N items: presence's
  ``Registrations.due()`` and ``get_timer()`` (each time its task wakes), the message-summary
  subscriptions' expiry walk (``Subscriptions.run``, each time it wakes; at most 10 000), the
  start of a NAT keepalive round; and ``DialogEvents._find_calls`` (a SUBSCRIBE to an account
  nobody watched yet walks the live calls) with the scrape's live calls.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
)

from gateway.core.calls.presence import POLL_CHUNK
from gateway.core.sip.presence import Registrations
from gateway.core.store.interface import EXPIRE_CHUNK, Store

OLD_YIELD_EVERY = 100
SEED = 4242


def populate_sqlite(store: Any, accounts: int, now: float) -> None:
    """``accounts`` accounts, one live binding each (straight SQL: accounts_add hashes)."""
    db = store._db
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO accounts (name, created_at, updated_at) VALUES (?, ?, ?)",
        [(f"user{i}", now, now) for i in range(accounts)],
    )
    db.execute(
        "INSERT INTO registrations (account_id, aor, binding_key, contact, expires_at, call_id,"
        " cseq, transport, local_addr, remote_addr, updated_at)"
        " SELECT id, 'sip:' || name || '@gw', 'sip:' || name || '@192.0.2.1',"
        " 'sip:' || name || '@192.0.2.1', ?, 'c', 1, 'udp', '127.0.0.1:5060',"
        " '192.0.2.1:5060', ? FROM accounts",
        (now + 3600, now),
    )
    db.execute("COMMIT")
    db.execute("ANALYZE")  # as a running database would have its statistics
    store._forget_cached()


def populate_postgresql(store: Any, accounts: int, now: float) -> None:
    with store._session(transaction=True) as db:
        with db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO accounts (name, created_at, updated_at) VALUES (%s, %s, %s)",
                [(f"user{i}", now, now) for i in range(accounts)],
            )
        db.execute(
            "INSERT INTO registrations (account_id, aor, binding_key, contact, expires_at,"
            " call_id, cseq, transport, local_addr, remote_addr, updated_at)"
            " SELECT id, 'sip:' || name || '@gw', 'sip:' || name || '@192.0.2.1',"
            " 'sip:' || name || '@192.0.2.1', %s, 'c', 1, 'udp', '127.0.0.1:5060',"
            " '192.0.2.1:5060', %s FROM accounts",
            (now + 3600, now),
        )
    with store._session() as db:
        db.execute("ANALYZE")  # as autovacuum would have by then


def poll_before(
    store: Store, names: Sequence[str], now: float, forget: Callable[[], None]
) -> tuple[float, float]:
    """(whole poll, longest slice) of the per-account poll, cache empty at its start."""
    forget()
    longest = 0.0
    start = slice_start = time.perf_counter()
    for index, name in enumerate(names):
        if index and index % OLD_YIELD_EVERY == 0:
            split = time.perf_counter()
            longest = max(longest, split - slice_start)
            slice_start = split
        [binding.expires_at for binding in store.bindings_for_account(name, now=now)]
    end = time.perf_counter()
    return end - start, max(longest, end - slice_start)


def poll_now(store: Store, names: Sequence[str], now: float) -> tuple[float, float]:
    """(whole poll, longest slice) of the chunked bulk poll, the sans-IO update included."""
    registrations = Registrations()
    for name in names:
        registrations.watch(name, (), now=now)
    longest = 0.0
    start = time.perf_counter()
    for first in range(0, len(names), POLL_CHUNK):
        slice_start = time.perf_counter()
        chunk = [name for name in names[first : first + POLL_CHUNK] if name in registrations]
        found = store.binding_expiries(chunk, now=now)
        for name in chunk:
            registrations.update(name, found[name], now=now)
        longest = max(longest, time.perf_counter() - slice_start)
    return time.perf_counter() - start, longest


def housekeeping(
    store: Store, accounts: int, now: float, populate: Callable[[int, float], None]
) -> tuple[float, float, float, float]:
    """(count_bindings, expire_bindings of every binding at once, the median and the longest
    of the housekeeping's EXPIRE_CHUNK-at-a-time statements) in seconds."""
    start = time.perf_counter()
    store.count_bindings(now)
    counted = time.perf_counter() - start
    start = time.perf_counter()
    removed = store.expire_bindings(now + 7200)
    at_once = time.perf_counter() - start
    assert len(removed) == accounts, len(removed)
    populate_bindings_again(store, now)
    times, total = [], 0
    while True:
        start = time.perf_counter()
        expired = store.expire_bindings(now + 7200, most=EXPIRE_CHUNK)
        times.append(time.perf_counter() - start)
        total += len(expired)
        if len(expired) < EXPIRE_CHUNK:
            break
    assert total == accounts, total
    return counted, at_once, statistics.median(times), max(times)


def populate_bindings_again(store: Any, now: float) -> None:
    statement = (
        "INSERT INTO registrations (account_id, aor, binding_key, contact, expires_at, call_id,"
        " cseq, transport, local_addr, remote_addr, updated_at)"
        " SELECT id, 'sip:' || name || '@gw', 'sip:' || name || '@192.0.2.1',"
        " 'sip:' || name || '@192.0.2.1', {0}, 'c', 1, 'udp', '127.0.0.1:5060',"
        " '192.0.2.1:5060', {0} FROM accounts"
    )
    if hasattr(store, "_db") and hasattr(store, "_forget_cached"):  # SQLite
        store._db.execute(statement.format("?"), (now + 3600, now))
        store._forget_cached()
    else:
        with store._session(transaction=True) as db:
            db.execute(statement.format("%s"), (now + 3600, now))


def presence_figures(
    label: str,
    opener: Callable[[], Iterator[tuple[Store, Callable[[], None], Callable[[int, float], None]]]],
    sizes: Sequence[int],
    rounds: int,
) -> None:
    for accounts in sizes:
        with opener() as (store, forget, populate):
            now = time.time()
            populate(accounts, now)
            # Watched: every other existing account and as many names nobody has.
            names = [f"user{i}" for i in range(0, accounts, 2)]
            names += [f"nobody{i}" for i in range(accounts - len(names))]
            before = min(poll_before(store, names, now, forget) for _ in range(rounds))
            after = min(poll_now(store, names, now) for _ in range(rounds))
            counted, expired, median, chunked = housekeeping(store, accounts, now, populate)
        print(
            f"{label:10} {accounts:6} watched: before {before[0] * 1e3:8.1f} ms a poll, "
            f"longest slice {before[1] * 1e3:6.2f} ms | now {after[0] * 1e3:7.1f} ms, longest "
            f"slice {after[1] * 1e3:5.2f} ms ({POLL_CHUNK} a chunk)"
        )
        print(
            f"{'':10} {accounts:6} bindings: count_bindings {counted * 1e3:6.2f} ms, "
            f"expire_bindings all at once {expired * 1e3:7.1f} ms, {EXPIRE_CHUNK} at a time: "
            f"median {median * 1e3:5.2f} ms, longest {chunked * 1e3:5.2f} ms"
        )


@contextmanager
def sqlite_opener() -> Iterator[tuple[Store, Callable[[], None], Callable[[int, float], None]]]:
    from gateway.core.store.sqlite import SqliteStore

    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore.open(tmp, busy_timeout=0.05, checkpoint_interval=1.0)  # as the gateway
        try:
            yield store, store._forget_cached, lambda n, now: populate_sqlite(store, n, now)
        finally:
            store.close()


def postgresql_opener(cluster: Any) -> Callable[[], Any]:
    from gateway.core.store.postgresql import PostgresStore

    @contextmanager
    def opener() -> Iterator[tuple[Store, Callable[[], None], Callable[[int, float], None]]]:
        database = cluster.create_database()
        store = PostgresStore.open(cluster.dsn(database), listen=True)
        deadline = time.monotonic() + 10
        while not store.listening and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            yield store, store._forget_all, lambda n, now: populate_postgresql(store, n, now)
        finally:
            store.close()
            cluster.drop_database(database)

    return opener


@contextmanager
def postgres_cluster() -> Iterator[Any]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        print("PostgreSQL: skipped (psycopg is not installed)")
        yield None
        return
    import pgcluster

    bindir = pgcluster.postgres_bindir()
    if bindir is None:
        print("PostgreSQL: skipped (Debian's postgresql is not installed)")
        yield None
        return
    cluster = pgcluster.Cluster(bindir)
    try:
        cluster.initdb()
        cluster.start()
        cluster.create_role()
        yield cluster
    finally:
        cluster.destroy()


async def scrape_figures(sizes: Sequence[int], rounds: int) -> None:
    import gateway.plugins.metrics as metrics_plugin
    from gateway.core.calls.dialog_events import DialogEvents
    from tests.component.calls.b2bua_env import ALICE_DID, start_b2bua

    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            env = await start_b2bua(
                nursery,
                Path(tmp),
                SEED,
                plugins=[("metrics", metrics_plugin)],
                plugin_tables={"enable": ["metrics"], "metrics": {"listen": "127.0.0.1:0"}},
            )
            status = env.gateway.status
            manager = env.gateway.calls
            assert status is not None and manager is not None
            for _ in range(45):
                call = await env.trunk.invite(env.did_uri(ALICE_DID))
                assert (await call.final()).status == 200
                await env.alice.next_request("ACK")
            real = manager.calls
            for live in sizes:
                originals = list(real)
                stand_ins = [
                    _StandIn(
                        originals[index % len(originals)].media,
                        originals[index % len(originals)].keying,
                    )
                    for index in range(live)
                ]
                manager.calls = set(stand_ins)  # type: ignore[arg-type]
                whole = min(_timed(status.media) for _ in range(rounds))
                longest_gaps = []
                for _ in range(rounds):
                    longest_gaps.append(await _longest_slice(status.media_in_steps))
                manager.calls = [  # type: ignore[assignment]
                    originals[index % len(originals)] for index in range(live)
                ]
                nobody = types.SimpleNamespace(gateway=env.gateway)
                find = min(
                    _timed(functools.partial(DialogEvents._find_calls, nobody, "nobody", None))  # type: ignore[arg-type]
                    for _ in range(rounds)
                )
                print(
                    f"subscribe  {live:6} live calls: DialogEvents._find_calls (a SUBSCRIBE to an "
                    f"account nobody watched yet) {find * 1e3:6.1f} ms"
                )
                print(
                    f"scrape     {live:6} live calls: media() {whole * 1e3:7.1f} ms at once "
                    f"({whole / live * 1e6:.1f} us a call) | media_in_steps() longest slice "
                    f"{min(longest_gaps) * 1e3:5.2f} ms"
                )
            manager.calls = real
            nursery.cancel_scope.cancel()


class _StandIn:
    """What the walk reads of a call (hashed by identity, as Call)."""

    def __init__(self, media: Any, keying: Any) -> None:
        self.media = media
        self.keying = keying


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


async def _longest_slice(walk: Callable[[], Any]) -> float:
    """The longest stretch ``walk`` ran without a checkpoint (from its start, between two of
    its checkpoints, to its end): the module's ``trio`` is replaced by one whose
    ``lowlevel.checkpoint`` notes the time."""
    import gateway.core.status as status_module

    slices: list[float] = []
    last = time.perf_counter()

    async def checkpoint() -> None:
        nonlocal last
        slices.append(time.perf_counter() - last)
        await trio.lowlevel.checkpoint()
        last = time.perf_counter()

    noting = types.SimpleNamespace(lowlevel=types.SimpleNamespace(checkpoint=checkpoint))
    status_module.trio = noting  # type: ignore[attr-defined]
    try:
        last = time.perf_counter()
        await walk()
        slices.append(time.perf_counter() - last)
    finally:
        status_module.trio = trio  # type: ignore[attr-defined]
    return max(slices)


def other_loops(sizes: Sequence[int], rounds: int) -> None:
    """The sans-IO walks of other periodic loops over every item, at ``sizes`` items."""
    for count in sizes:
        other_loops_at(count, rounds)


def other_loops_at(count: int, rounds: int) -> None:
    from gateway.core.sip.events import Input, SubscriptionState

    now = 1000.0
    registrations = Registrations()
    for index in range(count):
        registrations.watch(f"user{index}", (now + 60 + index,), now=now)

    def timers() -> None:
        registrations.due(now=now)
        registrations.get_timer()

    subscriptions = []
    for index in range(count):
        state = SubscriptionState.started(now=now)
        state.handle(Input.ACCEPTED, now=now, expires=3600 + index)
        subscriptions.append(types.SimpleNamespace(state=state))

    def subscriptions_wake() -> None:
        # Subscriptions.run, each time it wakes (gateway/core/calls/subscriptions.py).
        for subscription in list(subscriptions):
            subscription.state.handle_timer(now=now)
        min(
            (d for s in subscriptions if (d := s.state.get_timer()) is not None),
            default=None,
        )

    contacts = {
        (f"sip:user{index}@gw", "k"): types.SimpleNamespace(expires_at=now + 60)
        for index in range(count)
    }

    def keepalive_round() -> None:
        # NatKeepalive.run's start of a round (gateway/core/nat_keepalive.py).
        due = list(contacts.items())
        [(key, binding) for key, binding in due if binding.expires_at > now]

    print(
        f"other      {count:6} items: presence due()+get_timer() "
        f"{min(_timed(timers) for _ in range(rounds)) * 1e3:5.2f} ms a wake | "
        f"message-summary Subscriptions.run "
        f"{min(_timed(subscriptions_wake) for _ in range(rounds)) * 1e3:5.2f} ms a wake | "
        f"NAT keepalive round start "
        f"{min(_timed(keepalive_round) for _ in range(rounds)) * 1e3:5.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[1000, 10000, 20000])
    parser.add_argument("--calls", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-postgresql", action="store_true")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}")
    presence_figures("SQLite", sqlite_opener, args.accounts, args.rounds)
    if not args.no_postgresql:
        with postgres_cluster() as cluster:
            if cluster is not None:
                presence_figures(
                    "PostgreSQL", postgresql_opener(cluster), args.accounts, args.rounds
                )
    other_loops(args.accounts, args.rounds)
    trio.run(
        scrape_figures,
        args.calls,
        args.rounds,
        clock=trio.testing.MockClock(autojump_threshold=0),
    )


if __name__ == "__main__":
    main()
