"""Identifiers the gateway mints: tags, branches, Call-IDs (and later SSRCs).

Sans-IO code never calls ``random``; it takes one of these (ARCHITECTURE.md "Identifiers"), so a
test can inject :class:`SeededIds` and get the same messages every run. Production uses
:class:`RandomIds`, which draws from the OS CSPRNG: tags and Call-IDs must be unguessable
(RFC 3261 §19.3, §8.1.1.4) or an off-path attacker could forge in-dialog requests.
"""

from __future__ import annotations

import os
import random
import secrets

from gateway.core.sip.headers import MAGIC_COOKIE


class IdSource:
    """Base: subclasses provide ``token_hex``; the named constructors build on it."""

    def token_hex(self, nbytes: int) -> str:
        raise NotImplementedError

    def new_tag(self) -> str:
        return self.token_hex(8)

    def new_branch(self) -> str:
        return MAGIC_COOKIE + self.token_hex(10)

    def new_call_id(self) -> str:
        return self.token_hex(16)


class _RandomPool:
    """Bytes from the OS CSPRNG, read 4 KiB at a time: a call mints about eight ids, and one
    ``getrandom`` system call each was 2 % of a call's CPU. Every byte is handed out once; a
    forked child starts with an empty pool, so it never repeats its parent's ids."""

    SIZE = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._used = 0

    def forget(self) -> None:
        self._pool = b""
        self._used = 0

    def token_hex(self, nbytes: int) -> str:
        if nbytes > self.SIZE:
            return secrets.token_hex(nbytes)
        start = self._used
        end = start + nbytes
        if end > len(self._pool):
            self._pool = os.urandom(self.SIZE)
            start, end = 0, nbytes
        self._used = end
        return self._pool[start:end].hex()


_POOL = _RandomPool()
os.register_at_fork(after_in_child=_POOL.forget)


class RandomIds(IdSource):
    def token_hex(self, nbytes: int) -> str:
        return _POOL.token_hex(nbytes)


class SeededIds(IdSource):
    """Deterministic ids for tests. Never use in production."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def token_hex(self, nbytes: int) -> str:
        return self._random.randbytes(nbytes).hex()
