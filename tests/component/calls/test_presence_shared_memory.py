"""Presence publications shared by two nodes (docs/configuration.md ``[presence]``, "Cluster"):
two gateways on one store (here one SQLite file, as the PostgreSQL nodes of
tests/integration/test_postgresql_nodes.py share a database), each on a network of its own
in virtual time. alice's phones publish through node A or node B; bob watches her through
node B. A publication made on A reaches bob within one poll, a refresh, modification or
removal by entity tag works on the node that did not give the tag, and one that another node
superseded first is 412 (RFC 3903 §6 step 2)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.calls.presence import REGISTRATION_POLL
from gateway.core.store.errors import StoreUnavailable
from gateway.core.store.interface import StoredPublication
from tests.component.calls.b2bua_env import eventually, next_within
from tests.component.calls.presence_subscriptions import (
    basic,
    follow_virtual_time,
    next_document,
    pidf,
    publish,
    start,
    subscribe,
)


async def test_a_publication_on_node_a_reaches_a_watcher_on_node_b_and_changes_there(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env_a, _ = await start(nursery, tmp_path, voipgw_seed)
    env_b, bob = await start(nursery, tmp_path, voipgw_seed + 100)  # the same state directory
    follow_virtual_time(env_a)
    follow_virtual_time(env_b)
    await subscribe(bob)
    _, document = await next_document(bob)
    assert basic(document) == ["closed"]  # nothing published anywhere yet

    # Published on A: bob, on B, sees it within B's next look at the store.
    published = await publish(env_a.alice, pidf("open", note="desk on A"))
    assert published.status == 200
    first = published.headers.get("SIP-ETag")
    assert first is not None
    at = trio.current_time()
    notify, document = await next_document(bob, timeout=2 * REGISTRATION_POLL)
    assert trio.current_time() - at <= REGISTRATION_POLL + 1
    assert basic(document) == ["open"] and b"desk on A" in notify.body

    # Modified on B by A's tag (the phone's PUBLISH reached the other node): not 412, and
    # bob, on B, is told at once.
    modified = await publish(env_b.alice, pidf("closed", note="away on B"), etag=first)
    assert modified.status == 200, modified.reason
    second = modified.headers.get("SIP-ETag")
    assert second is not None and second != first
    at = trio.current_time()
    notify, document = await next_document(bob, timeout=2)
    assert trio.current_time() - at < 1
    assert basic(document) == ["closed"] and b"away on B" in notify.body

    # A has not polled (nobody watches alice there): the version B replaced is 412 on A all
    # the same (the store no longer has it), and the current one refreshes there.
    stale = await publish(env_a.alice, None, etag=first)
    assert stale.status == 412
    refreshed = await publish(env_a.alice, None, etag=second)
    assert refreshed.status == 200, refreshed.reason
    third = refreshed.headers.get("SIP-ETag")
    assert third is not None and third not in (first, second)
    # A refresh changes nothing bob sees: no NOTIFY through B's next polls.
    assert await next_within(bob, "NOTIFY", 2 * REGISTRATION_POLL + 1) is None

    # Removed on B by A's latest tag: bob gets the neutral document.
    removed = await publish(env_b.alice, None, etag=third, expires=0)
    assert removed.status == 200, removed.reason
    notify, document = await next_document(bob, timeout=2)
    assert basic(document) == ["closed"] and b'id="gw"' in notify.body
    assert (await publish(env_a.alice, None, etag=third)).status == 412  # gone everywhere


async def test_a_publication_made_on_another_node_expires_at_its_time_here(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env_a, _ = await start(nursery, tmp_path, voipgw_seed)
    env_b, bob = await start(nursery, tmp_path, voipgw_seed + 100)
    follow_virtual_time(env_a)
    follow_virtual_time(env_b)
    await subscribe(bob, expires=3600)
    await next_document(bob)
    assert (await publish(env_a.alice, pidf("open"), expires=60)).status == 200
    published = trio.current_time()
    _, document = await next_document(bob, timeout=2 * REGISTRATION_POLL)
    assert basic(document) == ["open"]
    # Not refreshed: B forgets it at its expiry (having asked the store whether another node
    # refreshed it), and bob is told then, not at a later poll.
    _, document = await next_document(bob, timeout=120)
    assert 59.9 <= trio.current_time() - published < 61  # the nodes' wall clocks: µs apart
    assert basic(document) == ["closed"]


async def test_a_refresh_on_node_a_keeps_the_publication_alive_on_node_b(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """B knows the publication with its first expiry; the refresh A took shortly before it,
    after B's last poll, is found at that expiry (B asks the store then): bob sees no
    flicker to closed and back."""
    env_a, _ = await start(nursery, tmp_path, voipgw_seed)
    env_b, bob = await start(nursery, tmp_path, voipgw_seed + 100)
    follow_virtual_time(env_a)
    follow_virtual_time(env_b)
    store_b = env_b.gateway.store
    assert store_b is not None
    polls: list[float] = []
    original = store_b.publications_of

    def recording(accounts: Sequence[str], *, now: float) -> dict[str, list[StoredPublication]]:
        polls.append(trio.current_time())
        return original(accounts, now=now)

    store_b.publications_of = recording  # type: ignore[method-assign]
    await subscribe(bob, expires=3600)
    await next_document(bob)
    asked = len(polls)  # the first watcher's look
    await eventually(lambda: len(polls) > asked)
    first_poll = polls[-1]  # B polls every REGISTRATION_POLL seconds from here
    await trio.sleep_until(first_poll + REGISTRATION_POLL / 2)
    published = await publish(env_a.alice, pidf("open"), expires=60)
    expiry = first_poll + REGISTRATION_POLL / 2 + 60
    etag = published.headers.get("SIP-ETag")
    assert etag is not None
    _, document = await next_document(bob, timeout=2 * REGISTRATION_POLL)
    assert basic(document) == ["open"]
    refresh_at = first_poll + 61  # after B's poll at first_poll + 60, before the expiry
    await trio.sleep_until(refresh_at)
    assert (await publish(env_a.alice, None, etag=etag, expires=600)).status == 200
    assert await next_within(bob, "NOTIFY", 30) is None
    assert [t for t in polls if refresh_at < t < expiry] == []  # no poll found it first
    assert [t for t in polls if expiry <= t < expiry + 0.1]  # B asked at the expiry


async def test_a_publication_the_store_could_not_take_is_kept_here_and_written_by_its_refresh(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store does not answer: node B still takes the PUBLISH (200) and its watcher sees
    it at once; node A's cannot. Its next refresh on B, with the store back, writes it."""
    env_a, bob_a = await start(nursery, tmp_path, voipgw_seed)
    env_b, bob = await start(nursery, tmp_path, voipgw_seed + 100)
    follow_virtual_time(env_a)
    follow_virtual_time(env_b)
    await subscribe(bob)
    await next_document(bob)
    await subscribe(bob_a)
    await next_document(bob_a)
    store_b = env_b.gateway.store
    assert store_b is not None
    original = store_b.publication_save

    def unavailable(*args: Any, **kwargs: Any) -> bool:
        raise StoreUnavailable("PostgreSQL db: not connected (reconnecting)")

    store_b.publication_save = unavailable  # type: ignore[method-assign]
    published = await publish(env_b.alice, pidf("open", note="on B"))
    assert published.status == 200
    etag = published.headers.get("SIP-ETag")
    assert etag is not None
    _, document = await next_document(bob, timeout=2)
    assert basic(document) == ["open"]
    assert "presence publication of alice kept on this node only" in caplog.text
    assert await next_within(bob_a, "NOTIFY", 2 * REGISTRATION_POLL) is None  # A cannot know
    # B's poll keeps what it could not save (the store has nothing of alice's).
    assert await next_within(bob, "NOTIFY", 2 * REGISTRATION_POLL) is None
    store_b.publication_save = original  # type: ignore[method-assign]
    refreshed = await publish(env_b.alice, None, etag=etag)
    assert refreshed.status == 200
    _, document = await next_document(bob_a, timeout=2 * REGISTRATION_POLL)
    assert basic(document) == ["open"]


async def test_a_refresh_the_store_could_not_take_outlives_the_version_it_holds(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A saved publication is refreshed while the store does not answer (200: kept on this
    node). The store's row of the version before expires at that version's time: the node's
    poll must not take that for "refreshed or removed on another node" and forget a
    publication the phone keeps refreshing (its next refresh, with the store back, is 200)."""
    env, bob = await start(nursery, tmp_path, voipgw_seed)
    follow_virtual_time(env)
    await subscribe(bob, expires=3600)
    await next_document(bob)
    published = await publish(env.alice, pidf("open"), expires=60)
    assert published.status == 200
    etag = published.headers.get("SIP-ETag")
    assert etag is not None
    _, document = await next_document(bob, timeout=2)
    assert basic(document) == ["open"]
    store = env.gateway.store
    assert store is not None
    original = store.publication_save

    def unavailable(*args: Any, **kwargs: Any) -> bool:
        raise StoreUnavailable("PostgreSQL db: not connected (reconnecting)")

    store.publication_save = unavailable  # type: ignore[method-assign]
    await trio.sleep(50)
    refreshed = await publish(env.alice, None, etag=etag, expires=600)
    assert refreshed.status == 200
    etag = refreshed.headers.get("SIP-ETag")
    assert etag is not None
    # The stored version runs out at 60 s; the publication here lasts until 650 s.
    assert await next_within(bob, "NOTIFY", 10 + 3 * REGISTRATION_POLL) is None
    store.publication_save = original  # type: ignore[method-assign]
    assert (await publish(env.alice, None, etag=etag, expires=600)).status == 200
    assert await next_within(bob, "NOTIFY", 3 * REGISTRATION_POLL) is None


async def test_a_store_that_is_down_is_logged_once_summarized_and_once_when_it_answers(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While the store does not answer, every PUBLISH is still 200 (kept on this node) and
    every poll fails: one WARNING when it starts, then one summary every 300 s (how many, the
    last reason), and one INFO when it answers again (gateway/core/failure_log.py), not a
    WARNING per PUBLISH and per poll."""
    env, bob = await start(nursery, tmp_path, voipgw_seed)
    follow_virtual_time(env)
    await subscribe(bob, expires=3600)
    await next_document(bob)
    store = env.gateway.store
    assert store is not None
    saving, reading = store.publication_save, store.publications_of

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("PostgreSQL db: not connected (reconnecting)")

    def lines() -> list[tuple[int, str]]:
        found = [
            (r.levelno, r.getMessage())
            for r in caplog.records
            if r.name.startswith("gateway.core.calls") and "store" in r.getMessage()
        ]
        caplog.clear()
        return found

    caplog.set_level(logging.INFO, logger="gateway.core.calls")
    caplog.clear()
    store.publication_save = unavailable  # type: ignore[method-assign]
    store.publications_of = unavailable  # type: ignore[method-assign]
    published = await publish(env.alice, pidf("open"), expires=3600)
    assert published.status == 200
    etag = published.headers.get("SIP-ETag")
    for _ in range(5):  # refreshes, and polls every REGISTRATION_POLL, all failing
        await trio.sleep(20)
        refreshed = await publish(env.alice, None, etag=etag, expires=3600)
        assert refreshed.status == 200
        etag = refreshed.headers.get("SIP-ETag")
    ((level, first),) = lines()
    assert level == logging.WARNING
    assert first.startswith(
        "the store (presence) is failing: presence publication of alice kept on this node "
        "only: PostgreSQL db: not connected (reconnecting)"
    )
    assert first.endswith("; further failures summarized every 300 s")
    await trio.sleep(300 - 5 * 20)
    refreshed = await publish(env.alice, None, etag=etag, expires=3600)
    etag = refreshed.headers.get("SIP-ETag")
    ((level, summary),) = lines()
    assert level == logging.WARNING
    assert summary.startswith("the store (presence) is still failing: ")
    store.publication_save = saving  # type: ignore[method-assign]
    store.publications_of = reading  # type: ignore[method-assign]
    assert (await publish(env.alice, None, etag=etag, expires=3600)).status == 200
    ((level, answered),) = lines()
    assert level == logging.INFO
    assert answered.startswith("the store (presence) answers again, after ")


async def test_a_node_that_missed_a_removal_elsewhere_does_not_drop_a_live_publication(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Nobody watches alice on node A, so A does not poll her publications: after node B
    removed one of her four, A's memory still holds its superseded tag. A fifth phone
    publishing on A must not make A drop a live one from the store for the per-account bound
    (the store, which has room, keeps the account's latest-expiring four itself); A forgets the
    superseded tag when the store says so (a PUBLISH naming it: 412), or at its expiry."""
    env_a, _ = await start(nursery, tmp_path, voipgw_seed)
    env_b, _ = await start(nursery, tmp_path, voipgw_seed + 100)
    follow_virtual_time(env_a)
    follow_virtual_time(env_b)
    tags = []
    for phone in range(4):
        published = await publish(env_a.alice, pidf("open", note=f"phone {phone}"))
        assert published.status == 200
        tags.append(published.headers.get("SIP-ETag"))
        await trio.sleep(1)  # each expires a second after the one before
    removed = await publish(env_b.alice, None, etag=tags[3], expires=0)  # the latest, on B
    assert removed.status == 200, removed.reason
    assert env_a.gateway.dialog_events is not None
    memory_a = env_a.gateway.dialog_events.publications
    now = trio.current_time()
    assert memory_a.find("alice", tags[3], now=now) is not None  # A has not heard of it
    fifth = await publish(env_a.alice, pidf("closed", note="phone 4"))
    assert fifth.status == 200
    store = env_a.gateway.store
    assert store is not None
    wall = env_a.gateway.dialog_events.wall_clock()
    stored = {p.etag for p in store.publications_of(["alice"], now=wall)["alice"]}
    assert stored == {tags[0], tags[1], tags[2], fifth.headers.get("SIP-ETag")}
    # The first phone's refresh reaching A: 200 (its publication is alive).
    assert (await publish(env_a.alice, None, etag=tags[0])).status == 200
    # The removed one's tag, named on A: 412, and A no longer holds it.
    assert (await publish(env_a.alice, None, etag=tags[3])).status == 412
    assert memory_a.find("alice", tags[3], now=trio.current_time()) is None
