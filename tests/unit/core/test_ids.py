"""Identifiers: RandomIds hands out CSPRNG bytes from a pool, never the same bytes twice, and a
forked child does not repeat its parent's ids."""

from __future__ import annotations

import os

import pytest

from gateway.core import ids
from gateway.core.ids import RandomIds, SeededIds
from gateway.core.sip.headers import MAGIC_COOKIE


def test_random_ids_have_their_lengths_and_do_not_repeat() -> None:
    source = RandomIds()
    tags = [source.new_tag() for _ in range(2000)]  # crosses several pool refills
    assert all(len(tag) == 16 and int(tag, 16) >= 0 for tag in tags)
    assert len(set(tags)) == len(tags)
    branch = source.new_branch()
    assert branch.startswith(MAGIC_COOKIE) and len(branch) == len(MAGIC_COOKIE) + 20
    assert len(source.new_call_id()) == 32
    assert len(source.token_hex(ids._RandomPool.SIZE + 1)) == 2 * (ids._RandomPool.SIZE + 1)


def test_the_pool_hands_out_consecutive_unused_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []

    def urandom(n: int) -> bytes:
        reads.append(n)
        return bytes(range(256)) * (n // 256)

    monkeypatch.setattr(ids.os, "urandom", urandom)
    pool = ids._RandomPool()
    assert pool.token_hex(4) == "00010203"
    assert pool.token_hex(2) == "0405"
    assert reads == [pool.SIZE]
    pool.token_hex(pool.SIZE - 6)
    assert reads == [pool.SIZE]  # exactly used up
    assert pool.token_hex(1) == "00"  # a fresh read, from its start
    assert reads == [pool.SIZE, pool.SIZE]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    source = RandomIds()
    source.new_tag()  # the pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next tag, to the parent
        try:
            os.write(write, source.new_tag().encode())
        finally:
            os._exit(0)
    os.close(write)
    child_tag = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child_tag) == 16
    assert child_tag != source.new_tag()  # the parent's next tag: the same bytes without forget


def test_seeded_ids_repeat_per_seed() -> None:
    assert SeededIds(7).new_tag() == SeededIds(7).new_tag()
    assert SeededIds(7).new_tag() != SeededIds(8).new_tag()
