"""Periodic work over every watched account or binding, done in chunks with checkpoints so it
never holds the event loop (which relays media) long at scale (docs/benchmarks.md, "Periodic
work at scale"): presence from registration's poll looks the watched accounts up in the store a
chunk (:data:`POLL_CHUNK`) per query; the housekeeping expires registrations
:data:`EXPIRE_CHUNK` per statement, and call records past ``[store] call_record_days``
:data:`CALL_RECORD_CHUNK` per statement. Other tasks run between two chunks."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from gateway.core import gateway as gateway_module
from gateway.core.calls.presence import POLL_CHUNK, REGISTRATION_POLL
from gateway.core.store.errors import StoreUnavailable
from gateway.core.store.interface import CALL_RECORD_CHUNK, Binding, BindingFlow, CallRecord
from tests.component.calls.b2bua_env import next_within, start_b2bua
from tests.component.calls.presence_subscriptions import basic, next_document, start, subscribe

ALICE_AOR = "sip:alice@127.0.0.1:5060"


async def test_a_poll_asks_the_store_a_chunk_at_a_time_and_lets_others_run_between(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed, from_registration=None)
    store = env.gateway.store
    notifier = env.gateway.dialog_events
    assert store is not None and notifier is not None and notifier.registrations is not None
    await subscribe(bob)
    _, document = await next_document(bob)
    assert basic(document) == ["open"]  # alice is registered (b2bua_env)
    # As many watched accounts again as two and a half chunks (names nobody has: looked up
    # all the same), as if thousands of phones watched each other.
    extra = 2 * POLL_CHUNK + POLL_CHUNK // 2
    for index in range(extra):
        notifier.registrations.watch(f"watched{index}", (), now=notifier.wall_clock())

    asked: list[int] = []
    others_ran: list[bool] = []
    state = {"ran": True, "chunk": trio.Event()}
    original = store.binding_expiries

    def recording(accounts: Sequence[str], *, now: float) -> dict[str, list[float]]:
        asked.append(len(accounts))
        others_ran.append(bool(state["ran"]))
        state["ran"] = False
        chunk = state["chunk"]
        assert isinstance(chunk, trio.Event)
        chunk.set()
        return original(accounts, now=now)

    async def another_task() -> None:
        while True:
            chunk = state["chunk"]
            assert isinstance(chunk, trio.Event)
            await chunk.wait()
            state["chunk"] = trio.Event()
            state["ran"] = True

    nursery.start_soon(another_task)
    store.binding_expiries = recording  # type: ignore[method-assign]
    # Another node registers alice elsewhere and her phone's binding goes: still open. Then
    # the other one goes too: the next poll closes her, although she is in its last chunk.
    (binding,) = store.bindings_for_account("alice", now=time.time())
    elsewhere = Binding(
        aor=ALICE_AOR,
        key="sip:alice@192.0.2.7:5060",
        account="alice",
        contact="sip:alice@192.0.2.7:5060",
        expires_at=time.time() + 600,
        call_id="other-node",
        cseq=1,
        flow=BindingFlow("udp", "192.0.2.1:5060", "192.0.2.7:5060"),
    )
    store.upsert_binding(elsewhere)
    store.remove_binding(binding.aor, binding.key)
    await trio.sleep(REGISTRATION_POLL + 0.5)
    store.remove_binding(elsewhere.aor, elsewhere.key)
    written = trio.current_time()
    _, document = await next_document(bob, timeout=2 * REGISTRATION_POLL)
    assert trio.current_time() - written <= REGISTRATION_POLL + 1
    assert basic(document) == ["closed"]

    watched = len(notifier.registrations)
    assert watched == extra + 1  # alice and the extra names
    per_poll = [POLL_CHUNK, POLL_CHUNK, watched - 2 * POLL_CHUNK]
    assert asked[:3] == per_poll and asked[3:6] == per_poll  # two polls, three queries each
    # The other task, woken at each query, ran while each poll was under way: trio runs every
    # task woken before a checkpoint by the poll's next-but-one chunk (a batch of runnable
    # tasks runs in random order). Without the checkpoints it would run only after the poll.
    for poll in (others_ran[0:3], others_ran[3:6]):
        assert True in poll[1:]


async def test_a_poll_the_store_does_not_answer_keeps_the_state_until_it_does(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed, from_registration=None)
    store = env.gateway.store
    assert store is not None
    await subscribe(bob)
    _, document = await next_document(bob)
    assert basic(document) == ["open"]
    original = store.binding_expiries

    def unavailable(accounts: Sequence[str], *, now: float) -> dict[str, list[float]]:
        raise StoreUnavailable("PostgreSQL 127.0.0.1: not connected (reconnecting)")

    store.binding_expiries = unavailable  # type: ignore[method-assign]
    (binding,) = store.bindings_for_account("alice", now=time.time())
    store.remove_binding(binding.aor, binding.key)  # as another node would: not told here
    # Polls the store does not answer leave alice as she was: no NOTIFY, logged.
    assert await next_within(bob, "NOTIFY", 3 * REGISTRATION_POLL) is None
    assert "for their presence not read" in caplog.text
    store.binding_expiries = original  # type: ignore[method-assign]
    _, document = await next_document(bob, timeout=2 * REGISTRATION_POLL)
    assert basic(document) == ["closed"]


async def test_housekeeping_expires_registrations_a_chunk_at_a_time(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateway_module, "EXPIRE_CHUNK", 3)
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    store = env.gateway.store
    assert store is not None
    (live,) = store.bindings_for_account("alice", now=time.time())
    for index in range(7):  # phones gone while the gateway was down
        key = f"sip:alice@192.0.2.{index + 10}:5060"
        store.upsert_binding(
            Binding(
                aor=ALICE_AOR,
                key=key,
                account="alice",
                contact=key,
                expires_at=time.time() - 60,
                call_id=f"gone-{index}",
                cseq=1,
                flow=BindingFlow("udp", "127.0.0.1:5060", f"192.0.2.{index + 10}:5060"),
            )
        )
    removed: list[int] = []
    others_ran: list[bool] = []
    state = {"ran": True, "chunk": trio.Event()}
    original = store.expire_bindings

    def recording(now: float, *, most: int | None = None) -> tuple[Binding, ...]:
        assert most == 3
        others_ran.append(bool(state["ran"]))
        state["ran"] = False
        chunk = state["chunk"]
        assert isinstance(chunk, trio.Event)
        chunk.set()
        expired = original(now, most=most)
        removed.append(len(expired))
        return expired

    async def another_task() -> None:
        while True:
            chunk = state["chunk"]
            assert isinstance(chunk, trio.Event)
            await chunk.wait()
            state["chunk"] = trio.Event()
            state["ran"] = True

    nursery.start_soon(another_task)
    await trio.sleep(0.1)  # it waits for the first chunk
    store.expire_bindings = recording  # type: ignore[method-assign]
    assert await env.gateway._expire_bindings() == 7
    assert removed == [3, 3, 1]  # a short chunk is the last
    assert True in others_ran[1:]  # the other task ran between two chunks (see above)
    assert store.bindings_for_account("alice", now=time.time()) == (live,)
    assert await env.gateway._expire_bindings() == 0 and removed[-1] == 0


async def test_housekeeping_deletes_call_records_past_the_retention_in_slices(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``[store] call_record_days`` (here 90): the housekeeping deletes older records,
    :data:`CALL_RECORD_CHUNK` per statement, and keeps newer ones."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, store_table={"call_record_days": 90})
    store = env.gateway.store
    assert store is not None and env.gateway.config.store.call_record_days == 90
    now, day = time.time(), 86400.0
    old = 2 * CALL_RECORD_CHUNK + 7
    store.call_records_save(
        [CallRecord(f"old{i}", "a", "b", now - 95 * day, None, now - 91 * day) for i in range(old)]
        + [CallRecord("recent", "a", "b", now - 95 * day, None, now - 89 * day)]
    )
    slices: list[int] = []
    original = store.expire_call_records

    def recording(before: float, *, most: int) -> int:
        count = original(before, most=most)
        slices.append(count)
        return count

    store.expire_call_records = recording  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="gateway.core.calls.records")
    await trio.sleep(gateway_module.HOUSEKEEPING_INTERVAL + 1)
    assert slices[:3] == [CALL_RECORD_CHUNK, CALL_RECORD_CHUNK, 7]
    assert [record.call_id for record in store.call_records_recent(10)] == ["recent"]
    assert f"{old} call record(s) older than 90 day(s) deleted" in caplog.text
