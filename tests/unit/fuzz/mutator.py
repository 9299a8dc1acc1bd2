"""A seeded mutation fuzzer for the parsers of network bytes (``*_untrusted``).

Each parser is driven from valid seed inputs (RFC 4475 messages, the specs' vectors, what the
gateway's own encoders produce) through a fixed sequence of mutations drawn from a
``random.Random(seed)``: byte flips, truncation, splicing two seeds, duplicated and huge lines,
bad UTF-8, extreme integers, deep nesting, empty values and CR/LF/NUL variations. The same seed
always gives the same inputs, so a failure in CI reproduces on a developer's machine.

The only outcome a parser may have is its result or one of its declared error types; anything
else escaping it is a bug. :func:`fuzz` raises :class:`AssertionError` naming the input.

``VOIPGW_FUZZ_EXAMPLES`` sets the number of mutated inputs per parser (default
:data:`DEFAULT_EXAMPLES`, small enough for CI); ``VOIPGW_FUZZ_SEED`` moves the whole campaign
to other inputs. See docs/testing.md.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

DEFAULT_EXAMPLES = 1000
MAX_INPUT = 1 << 17  # octets: past any datagram (64 KiB) and the stream framer's message limit


def examples(default: int = DEFAULT_EXAMPLES) -> int:
    """Mutated inputs per parser: ``VOIPGW_FUZZ_EXAMPLES`` or ``default``."""
    return int(os.environ.get("VOIPGW_FUZZ_EXAMPLES", default))


def base_seed() -> int:
    return int(os.environ.get("VOIPGW_FUZZ_SEED", "0"))


# Octets that parsers of text protocols treat specially.
_SPECIAL = b"\x00\r\n\t :;,=<>\"'\\%/@?&[]()*.-+#\x7f\x80\xff"
_EXTREME_NUMBERS = (
    b"0",
    b"-1",
    b"00000000000000000000000000000001",
    b"4294967295",
    b"4294967296",
    b"18446744073709551616",
    b"9" * 40,
    b"1e999",
    b"NaN",
    b"-0",
    b"\xd9\xa3",  # ARABIC-INDIC DIGIT THREE: str.isdigit() is true, int() accepts it
    b"\xc2\xb2",  # SUPERSCRIPT TWO: isdigit() true, int() refuses it
)
_BAD_UTF8 = (b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf")
_NUMBER = re.compile(rb"\d+")


def _flip(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> bytearray:
    if data:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return data


def _special(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> bytearray:
    pos = rng.randrange(len(data) + 1)
    octet = _SPECIAL[rng.randrange(len(_SPECIAL))]
    if data and rng.random() < 0.5:
        data[min(pos, len(data) - 1)] = octet
    else:
        data[pos:pos] = bytes([octet])
    return data


def _random_byte(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> bytearray:
    if data:
        data[rng.randrange(len(data))] = rng.randrange(256)
    return data


def _truncate(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> bytearray:
    return data[: rng.randrange(len(data) + 1)]


def _delete(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> bytearray:
    if data:
        start = rng.randrange(len(data))
        del data[start : start + rng.randrange(1, 16)]
    return data


def _duplicate(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> bytearray:
    if data:
        start = rng.randrange(len(data))
        chunk = data[start : start + rng.randrange(1, 64)]
        data[start:start] = chunk * rng.choice((1, 2, 10, 200))
    return data


def _splice(rng: random.Random, data: bytearray, seeds: Sequence[bytes]) -> bytearray:
    other = rng.choice(seeds)
    cut = rng.randrange(len(data) + 1)
    return data[:cut] + other[rng.randrange(len(other) + 1) :]


def _lines(data: bytearray) -> list[bytes]:
    return bytes(data).split(b"\n")


def _repeat_line(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> bytearray:
    lines = _lines(data)
    index = rng.randrange(len(lines))
    lines[index:index] = [lines[index]] * rng.choice((2, 3, 50, 500))
    return bytearray(b"\n".join(lines))


def _huge_line(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> bytearray:
    lines = _lines(data)
    index = rng.randrange(len(lines))
    filler = bytes([rng.choice(b'a;,=<"% 9')]) * rng.choice((300, 5000, 70000))
    cut = rng.randrange(len(lines[index]) + 1)
    lines[index] = lines[index][:cut] + filler + lines[index][cut:]
    return bytearray(b"\n".join(lines))


def _number(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> bytearray:
    matches = list(_NUMBER.finditer(data))
    if not matches:
        return data
    match = rng.choice(matches)
    data[match.start() : match.end()] = rng.choice(_EXTREME_NUMBERS)
    return data


_UNICODE_DIGITS = (
    "\u00b2",
    "\u00b9",
    "\u0663",
    "\uff11",
    "\u2460",
)  # str.isdigit() of each is true


def _unicode_digit(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> bytearray:
    """One ASCII digit becomes a Unicode digit: ``str.isdigit()`` accepts it, ``int()`` may not."""
    digits = [i for i, octet in enumerate(data) if 0x30 <= octet <= 0x39]
    if digits:
        pos = rng.choice(digits)
        data[pos : pos + 1] = rng.choice(_UNICODE_DIGITS).encode()
    return data


def _bad_utf8(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> bytearray:
    pos = rng.randrange(len(data) + 1)
    data[pos:pos] = rng.choice(_BAD_UTF8)
    return data


def _nesting(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> bytearray:
    pos = rng.randrange(len(data) + 1)
    opener = rng.choice((b"<", b"(", b"[", b"{", b'"', b"\\", b'{"a":', b"[[", b"--"))
    data[pos:pos] = opener * rng.choice((10, 1000, 20000))
    return data


def _empty_value(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> bytearray:
    lines = _lines(data)
    index = rng.randrange(len(lines))
    line = lines[index]
    for sep in (b":", b"=", b" "):
        if sep in line:
            lines[index] = line[: line.index(sep) + 1] + (b"\r" if line.endswith(b"\r") else b"")
            break
    return bytearray(b"\n".join(lines))


def _line_ends(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> bytearray:
    old, new = rng.choice(
        (
            (b"\r\n", b"\n"),
            (b"\r\n", b"\r"),
            (b"\r\n", b"\r\r\n"),
            (b"\r\n", b"\r\n\r\n"),
            (b"\r\n", b"\r\n "),
            (b"\r\n", b"\x00\r\n"),
            (b"\n", b"\r\n"),
        )
    )
    count = data.count(old)
    if not count:
        return data
    nth = rng.randrange(count)
    pos = -1
    for _ in range(nth + 1):
        pos = data.find(old, pos + 1)
    data[pos : pos + len(old)] = new
    return data


def _swap_lines(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> bytearray:
    lines = _lines(data)
    if len(lines) > 1:
        a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[a], lines[b] = lines[b], lines[a]
    return bytearray(b"\n".join(lines))


MUTATIONS: tuple[Callable[[random.Random, bytearray, Sequence[bytes]], bytearray], ...] = (
    _flip,
    _special,
    _random_byte,
    _truncate,
    _delete,
    _duplicate,
    _splice,
    _repeat_line,
    _huge_line,
    _number,
    _unicode_digit,
    _bad_utf8,
    _nesting,
    _empty_value,
    _line_ends,
    _swap_lines,
)


def mutate(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """One mutated input: a seed put through one to four mutations."""
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        data = rng.choice(MUTATIONS)(rng, data, seeds)[:MAX_INPUT]
    return bytes(data)


def inputs(name: str, seeds: Sequence[bytes], count: int) -> list[bytes]:
    """``count`` mutated inputs for the parser ``name``, the same on every run with one seed."""
    rng = random.Random(f"{name}:{base_seed()}")
    produced = list(seeds)  # the seeds themselves first: they must parse
    while len(produced) < count:
        produced.append(mutate(rng, seeds))
    return produced[:count]


@dataclass
class Report:
    """What a campaign over one parser saw."""

    name: str
    inputs: int = 0
    accepted: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    slowest: float = 0.0
    slowest_size: int = 0

    def line(self) -> str:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items()))
        return (
            f"{self.name}: {self.inputs} inputs, {self.accepted} accepted, rejected: {errors};"
            f" slowest {self.slowest * 1000:.1f} ms ({self.slowest_size} octets)"
        )


def fuzz(
    name: str,
    parse: Callable[[bytes], object],
    seeds: Sequence[bytes],
    allowed: tuple[type[BaseException], ...],
    *,
    count: int | None = None,
    secrets: Sequence[str] = (),
) -> Report:
    """Feed ``parse`` the seeds and their mutations; any exception not in ``allowed`` fails
    with the input that raised it, and so does an allowed one whose text holds one of
    ``secrets`` (key material of the seeds: error reasons end up in logs and responses). The
    report's time is information, never asserted on."""
    report = Report(name)
    for data in inputs(name, seeds, examples() if count is None else count):
        report.inputs += 1
        started = time.perf_counter()
        try:
            parse(data)
        except allowed as err:
            text = f"{err} {err!r}"
            leaked = [secret for secret in secrets if secret in text]
            assert not leaked, f"{name}: {text!r} shows key material, input {data[:600]!r}"
            kind = type(err).__name__
            report.errors[kind] = report.errors.get(kind, 0) + 1
        except Exception as err:
            raise AssertionError(
                f"{name}: {type(err).__name__}: {err} escaped on input {data[:600]!r}"
                f" ({len(data)} octets)"
            ) from err
        else:
            report.accepted += 1
        elapsed = time.perf_counter() - started
        if elapsed > report.slowest:
            report.slowest, report.slowest_size = elapsed, len(data)
    if os.environ.get("VOIPGW_FUZZ_REPORT"):
        print(report.line())
    return report
