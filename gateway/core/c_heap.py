"""The C allocator's figures of this process, for leak hunting: the bytes malloc has handed out
and not had back, and the bytes it holds free, from glibc's mallinfo2(3).

Why. A process's resident memory can grow with nothing leaking: glibc keeps memory a program
freed inside its heap while a chunk still in use lies above it (fragmentation), and gives it back
to the kernel only from the heap's top or at malloc_trim(3). libsrtp's and OpenSSL's contexts
come and go with every SRTP call, so a media worker's RSS grows for an hour while what it holds
does not (docs/benchmarks.md, "Soak", session 69: each worker's bytes in use flat at 7.2-7.3 MB
for 20 minutes while an untrimmed one's free bytes went 3.7 -> 8.3 MB, and malloc_trim(0) took
a trimmed one's RSS back to the same 47,920-48,032 KiB each time). With both figures beside
the RSS an operator can tell the two apart: RSS that grows while ``malloc_in_use_bytes``,
``python_allocated_blocks`` and every table stay flat is the allocator's free memory, not a
leak.

mallinfo2 is in glibc 2.33 and later (Debian 12 has 2.36). Elsewhere (musl, an older glibc)
:func:`c_heap_figures` returns nothing and the entries are absent. It walks the free lists of
every arena under its lock: microseconds for a gateway's heap, about 90 us for a heap of 10,000
free chunks; read at a scrape, and by each media worker every 5 s, never per call or packet.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


class _Mallinfo2(ctypes.Structure):
    """``struct mallinfo2`` of glibc's malloc.h: every field a size_t."""

    _fields_ = [
        ("arena", ctypes.c_size_t),  # bytes of the heaps taken with brk/sbrk or as arenas
        ("ordblks", ctypes.c_size_t),  # free chunks
        ("smblks", ctypes.c_size_t),  # free fastbin chunks
        ("hblks", ctypes.c_size_t),  # chunks of their own mmap
        ("hblkhd", ctypes.c_size_t),  # bytes in those mmapped chunks (all in use)
        ("usmblks", ctypes.c_size_t),  # always 0
        ("fsmblks", ctypes.c_size_t),  # bytes in free fastbin chunks
        ("uordblks", ctypes.c_size_t),  # bytes in use in the heaps
        ("fordblks", ctypes.c_size_t),  # bytes free in the heaps (fastbins and the top included)
        ("keepcost", ctypes.c_size_t),  # of which the top chunk, which a trim could give back
    ]


def _load_mallinfo2() -> Callable[[], _Mallinfo2] | None:
    try:
        function = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):  # not glibc, or glibc before 2.33
        return None
    function.restype = _Mallinfo2
    function.argtypes = []
    result: Callable[[], _Mallinfo2] = function
    return result


_mallinfo2: Callable[[], _Mallinfo2] | None = _load_mallinfo2()


def c_heap_figures() -> dict[str, int]:
    """``malloc_in_use_bytes`` (handed out: in the heaps and in chunks of their own mmap) and
    ``malloc_free_bytes`` (free inside the heaps, kept for later allocations); empty where the
    C library has no mallinfo2."""
    if _mallinfo2 is None:
        return {}
    info = _mallinfo2()
    return {
        "malloc_in_use_bytes": info.uordblks + info.hblkhd,
        "malloc_free_bytes": info.fordblks,
    }
