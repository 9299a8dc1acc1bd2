"""Session 37's SDP reader and writer against session 36's, kept as the reference
(sdp_reference_reader.py): on the captured samples and thousands of seeded mutations of them,
each parse gives the same model and, written, the same bytes, or the same error with the same
reason and line number (488 reasons are logged and sent to the peer); each written description
the same bytes or the same :class:`LocalSdpError`. Deterministic (``random.Random`` with fixed
seeds); a few seconds."""

from __future__ import annotations

import random

import attrs
import pytest

from gateway.core.sdp.errors import LocalSdpError, SdpError
from gateway.core.sdp.model import Attribute, Attributes, Connection, TimeDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from tests.unit.sdp.sdp_reference_reader import (
    reference_parse_sdp_untrusted,
    reference_serialize_sdp,
)
from tests.unit.sdp.sdp_samples import ALL_SAMPLES, crlf

T38 = (
    "v=0\no=- 2 2 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
    "m=image 20002 udptl t38\na=T38FaxVersion:0\na=T38MaxBitRate:14400\n"
    "a=T38FaxRateManagement:transferredTCF\na=T38FaxUdpEC:t38UDPRedundancy\n"
)
# Rejected streams without c=, a session-level a= before and after others, k= at both levels.
EDGES = (
    "v=0\no=- 7 7 IN IP4 127.0.0.1\ns=\nt=0 0\nk=clear:x\na=recvonly\na=tool:x\n"
    "m=audio 0 RTP/AVP 0\nm=video 0 RTP/AVP\nm=audio 4000 RTP/AVP 8\ni=x\nc=IN IP4 127.0.0.1\n"
    "b=AS:64\nb=TIAS:64000\nk=prompt\na=sendonly\n"
)
# No m= line: a missing o=, s= or t= is reported at the end of the description.
SESSION_ONLY = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\na=sendrecv\n"
# i=, c=, b=, k= and a= in the first of two media sections and none in the second: each m= line
# starts its section afresh (a k= carried into the next section would be a key it never had).
SECTIONS = (
    "v=0\no=- 3 3 IN IP4 127.0.0.1\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 0\ni=first\n"
    "c=IN IP4 127.0.0.1\nb=AS:64\nk=clear:first\na=sendonly\nm=audio 4002 RTP/AVP 8\n"
    "c=IN IP4 127.0.0.1\n"
)
SEEDS = tuple(crlf(text) for text in (*ALL_SAMPLES.values(), T38, EDGES, SESSION_ONLY, SECTIONS))
# Bodies at the edges the mutations rarely hit, each against the reference as well.
EXPLICIT = (
    crlf(SESSION_ONLY.replace("a=sendrecv", "a=sendrecv :x")),  # a space before the colon
    crlf(SESSION_ONLY.replace("a=sendrecv", "a=sendrecv \t")),  # trailing blanks, no colon
    crlf(SESSION_ONLY + "m=audio 4000 RTP/AVP 127\n"),  # the highest payload type
    crlf(SESSION_ONLY + "m=audio 4000 RTP/AVP 0 128\n"),  # one above it
    crlf(SESSION_ONLY + "m=audio 4000 RTP/AVP 00000000000000000008\n"),  # 20 digits
    crlf(SESSION_ONLY + "m=audio 4000 RTP/AVP 000000000000000000008\n"),  # 21 digits
    crlf(SESSION_ONLY + "m=audio 4000 RTP/AVP +8\n"),
    crlf(SESSION_ONLY + "m=audio 4000 RTP/AVP \u0668\n"),  # an Arabic-Indic eight
    crlf(SECTIONS.replace("k=clear:first\n", "")),
    crlf(SECTIONS + "k=clear:second\n"),
    crlf(SECTIONS + "i=second\n"),
)
# Pieces a mutation inserts: line types, separators, line ends, the bytes the reader refuses.
PIECES = (
    b"\r", b"\n", b"\r\n", b"\r\r\n", b"\x00", b"\xff", b" ", b"\t", b"=", b":", b"/", b"0",
    b"99999", b"IP6", b"::1", b"a=", b"m=", b"c=", b"t=", b"v=", b"o=", b"s=", b"i=", b"k=",
    b"b=", b"r=", b"z=", b"e=", b"p=", b"u=", b"x=", b"m=audio 0 RTP/AVP 0", b"t=0 0",
    b"c=IN IP4 224.2.1.1/127/3", b"r=7d 1h 0 25h", b"z=0 -1h", b"b=AS:64", b"a=sendrecv ",
    b"a=rtpmap:0 PCMU/8000", b"a=bad name", b"i=x", b"k=prompt",
)  # fmt: skip
LIMITS = (
    {},
    {},
    {},
    {"max_media": 1},
    {"max_attributes": 3},
    {"max_line": 24},
    {"max_size": 160},
)
MUTANTS_PER_SEED = 330


def _outcome(
    parse: object, write: object, wire: bytes, limits: dict[str, int]
) -> tuple[object, ...]:
    try:
        sd = parse(wire, **limits)  # type: ignore[operator]
    except SdpError as exc:
        return ("error", type(exc), exc.reason)
    try:
        written = write(sd)  # type: ignore[operator]
    except LocalSdpError as exc:
        return ("parsed, not writable", sd, str(exc))
    return ("parsed", sd, written)


def _mutant(rng: random.Random, wire: bytes) -> bytes:
    data = bytearray(wire)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(8)
        pos = rng.randrange(len(data) + 1)
        lines = bytes(data).split(b"\r\n")
        if op == 0 and data:
            del data[pos : pos + rng.randint(1, 8)]
        elif op == 1:
            data[pos:pos] = rng.choice(PIECES)
        elif op == 2 and data:
            data[pos % len(data)] = rng.randrange(256)
        elif op == 3:  # two lines swapped
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\r\n".join(lines))
        elif op == 4:  # a line repeated
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
        elif op == 7:  # a line copied elsewhere (a duplicate out of order)
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines) + 1)
            lines.insert(j, lines[i])
            data = bytearray(b"\r\n".join(lines))
        elif op == 5:  # a line replaced by one of another sample
            other = rng.choice(SEEDS).split(b"\r\n")
            lines[rng.randrange(len(lines))] = rng.choice(other)
            data = bytearray(b"\r\n".join(lines))
        else:  # a line's type letter changed
            i = rng.randrange(len(lines))
            if lines[i]:
                lines[i] = rng.choice(b"vosiuepcbtrzkamxV").to_bytes(1, "big") + lines[i][1:]
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


@pytest.mark.parametrize("seed_index", range(len(SEEDS)))
def test_the_reader_agrees_with_the_reference_on_mutated_bodies(seed_index: int) -> None:
    rng = random.Random(37_000 + seed_index)
    seed = SEEDS[seed_index]
    bodies = [
        seed,
        seed.replace(b"\r\n", b"\n"),
        *(_mutant(rng, seed) for _ in range(MUTANTS_PER_SEED)),
    ]
    parsed = errors = 0
    for wire in bodies:
        limits = rng.choice(LIMITS)
        expected = _outcome(reference_parse_sdp_untrusted, reference_serialize_sdp, wire, limits)
        got = _outcome(parse_sdp_untrusted, serialize_sdp, wire, limits)
        assert got == expected, wire
        # Again, with the value caches holding this body's lines.
        assert _outcome(parse_sdp_untrusted, serialize_sdp, wire, limits) == expected, wire
        if got[0] != "error":
            # The real class, whose repr redacts keys (a=crypto, a=ice-pwd), not a bare tuple.
            sd = got[1]
            for section in (sd, *sd.media):  # type: ignore[attr-defined]
                assert all(type(a) is Attribute for a in section.attributes)
        parsed += expected[0] != "error"
        errors += expected[0] == "error"
    # Both paths are exercised for every sample: bodies that parse and bodies refused.
    assert parsed >= 2 and errors >= MUTANTS_PER_SEED // 4


@pytest.mark.parametrize("wire", EXPLICIT)
def test_the_reader_agrees_with_the_reference_at_the_edges(wire: bytes) -> None:
    for limits in LIMITS:
        expected = _outcome(reference_parse_sdp_untrusted, reference_serialize_sdp, wire, limits)
        assert _outcome(parse_sdp_untrusted, serialize_sdp, wire, limits) == expected
        assert _outcome(parse_sdp_untrusted, serialize_sdp, wire, limits) == expected


def test_each_media_section_holds_only_its_own_lines() -> None:
    sd = parse_sdp_untrusted(crlf(SECTIONS))
    first, second = sd.media
    assert (first.information, first.key, len(first.bandwidths)) == ("first", "clear:first", 1)
    assert (second.information, second.key, second.bandwidths) == (None, None, ())
    assert [a.name for a in first.attributes] == ["sendonly"]
    assert list(second.attributes) == []


def _bad_values(rng: random.Random, sd: object) -> list[object]:
    """Models our own code could build wrongly: a CR, LF or NUL in a field, a port out of
    range, no t= line (each must give the reference's LocalSdpError, the first line's)."""
    bad = rng.choice(["\r", "\n", "\x00", "x\r\ny"])
    media = sd.media  # type: ignore[attr-defined]
    variants: list[object] = [
        attrs.evolve(sd, session_name="a" + bad),
        attrs.evolve(sd, information=bad),
        attrs.evolve(sd, emails=("e", bad)),
        attrs.evolve(sd, times=()),
        attrs.evolve(sd, times=(TimeDescription(0, 0, ("1",), bad),)),
        attrs.evolve(sd, connection=Connection("IN", "IP4", "127.0.0.1" + bad)),
        attrs.evolve(sd, attributes=Attributes.of([("tool", "x"), ("crypto", "1 " + bad)])),
        attrs.evolve(sd, key=bad, session_name=bad),
    ]
    if media:
        first = media[0]
        variants += [
            attrs.evolve(sd, media=(attrs.evolve(first, port=70000), *media[1:])),
            attrs.evolve(sd, media=(*media[1:], attrs.evolve(first, formats=("0" + bad,)))),
            attrs.evolve(sd, media=(attrs.evolve(first, key=bad),)),
            attrs.evolve(sd, session_name=bad, media=(attrs.evolve(first, port=-1), *media[1:])),
            attrs.evolve(sd, media=(first.with_attributes([("rtpmap", "0 PCMU/8000" + bad)]),)),
        ]
    return variants


def test_the_writer_refuses_what_the_reference_refuses() -> None:
    rng = random.Random(37)
    checked = 0
    for seed in SEEDS:
        sd = parse_sdp_untrusted(seed)
        for variant in _bad_values(rng, sd):
            expected = _outcome(lambda x: x, reference_serialize_sdp, variant, {})  # type: ignore[arg-type]
            assert _outcome(lambda x: x, serialize_sdp, variant, {}) == expected  # type: ignore[arg-type]
            checked += expected[0] == "parsed, not writable"
    assert checked > 10 * len(SEEDS)
