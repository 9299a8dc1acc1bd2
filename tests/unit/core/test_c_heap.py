"""The C allocator's figures (gateway.core.c_heap): what they count, and nothing where the C
library has no mallinfo2."""

from __future__ import annotations

import ctypes

import pytest

from gateway.core import c_heap
from gateway.core.c_heap import c_heap_figures
from tests.conftest import missing

MIB = 1 << 20


@pytest.fixture
def mallinfo2() -> None:
    """The tests that read real figures need glibc 2.33 or later (Debian 12 has 2.36): a skip
    on another C library locally, a failure in CI (``missing``), where it must load."""
    if c_heap._mallinfo2 is None:
        missing("the C library has no mallinfo2 (glibc 2.33 or later)")


@pytest.mark.usefixtures("mallinfo2")
def test_bytes_handed_out_count_as_in_use_until_freed() -> None:
    before = c_heap_figures()
    held = bytearray(8 * MIB)  # Python takes it from malloc (over 512 octets)
    during = c_heap_figures()
    del held
    after = c_heap_figures()
    assert during["malloc_in_use_bytes"] - before["malloc_in_use_bytes"] >= 8 * MIB
    assert during["malloc_in_use_bytes"] - after["malloc_in_use_bytes"] >= 8 * MIB


@pytest.mark.usefixtures("mallinfo2")
def test_freed_chunks_below_one_in_use_count_as_free_not_in_use() -> None:
    """Fragmentation, as in a media worker: every other chunk freed, the rest kept, so glibc
    cannot give the holes back and counts them free."""
    chunks = [bytearray(4000) for _ in range(4000)]
    before = c_heap_figures()
    del chunks[::2]
    after = c_heap_figures()
    freed = 2000 * 4000
    assert after["malloc_free_bytes"] - before["malloc_free_bytes"] >= freed * 0.9
    assert before["malloc_in_use_bytes"] - after["malloc_in_use_bytes"] >= freed * 0.9
    assert len(chunks) == 2000  # kept until here


def test_no_figures_without_mallinfo2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(c_heap, "_mallinfo2", None)
    assert c_heap_figures() == {}


def test_a_c_library_without_mallinfo2_is_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Musl:  # a C library that has no mallinfo2
        def __init__(self, name: object) -> None:
            pass

    monkeypatch.setattr(ctypes, "CDLL", Musl)
    assert c_heap._load_mallinfo2() is None


@pytest.mark.usefixtures("mallinfo2")
def test_glibc_has_it() -> None:
    assert c_heap._load_mallinfo2() is not None
    assert set(c_heap_figures()) == {"malloc_in_use_bytes", "malloc_free_bytes"}
