"""Session 38 (#7): an m= line's protocol and formats memoized without its port, and
Attributes' case-insensitive look-ups, which session 38 tried to index and measured (kept as a
guard for the next try). Neither may answer for other bytes: bodies that differ only in the
port, the o= version or the case of an attribute name each read as themselves, as session 36's
reader (sdp_reference_reader.py) reads them and as a lower() of every name at every look-up
answered."""

from __future__ import annotations

import pickle

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.sdp import parser
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import Attribute, Attributes, Direction
from gateway.core.sdp.parser import parse_sdp_untrusted
from tests.unit.sdp.sdp_reference_reader import reference_parse_sdp_untrusted

_HEAD = "v=0\r\no=- 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


def _body(m_line: str, version: int = 1) -> bytes:
    return (_HEAD.format(version=version) + m_line + "\r\na=sendrecv\r\n").encode()


def _outcome(parse: object, wire: bytes) -> tuple[str, object]:
    assert callable(parse)
    try:
        return ("parsed", parse(wire))
    except SdpError as exc:
        return ("error", exc.reason)


def test_m_lines_that_differ_only_in_their_port_each_read_their_own_port() -> None:
    parser._parse_media_line.cached.cache_clear()
    parser._parse_media_transport.cached.cache_clear()
    seen = []
    for port_text in ("4000", "4002", "4000/2", "0", "65535", "4002"):
        media = parse_sdp_untrusted(_body(f"m=audio {port_text} RTP/AVP 0 8 101")).media[0]
        port, _, count = port_text.partition("/")
        assert (media.port, media.port_count) == (int(port), int(count) if count else None)
        assert media.formats == ("0", "8", "101")
        seen.append(media.formats)
    # One parse of the protocol and formats for all six lines: the cache hit every time.
    assert all(formats is seen[0] for formats in seen)
    assert parser._parse_media_transport.cached.cache_info().currsize == 1


def test_an_m_line_repeated_exactly_is_one_look_up_of_its_whole_text() -> None:
    # sipp, an ATA with a fixed RTP port, a 183 and its 200 with the same answer: the whole
    # line's cache answers and the port-less one is not asked (docs/benchmarks.md, session 38).
    parser._parse_media_line.cached.cache_clear()
    parser._parse_media_transport.cached.cache_clear()
    first = parse_sdp_untrusted(_body("m=audio 6000 RTP/AVP 0")).media[0]
    transport_lookups = parser._parse_media_transport.cached.cache_info()
    second = parse_sdp_untrusted(_body("m=audio 6000 RTP/AVP 0")).media[0]
    assert second == first
    assert parser._parse_media_line.cached.cache_info().hits == 1
    assert parser._parse_media_transport.cached.cache_info() == transport_lookups


@pytest.mark.parametrize("first_port", ["0", "4000"])
def test_a_line_without_formats_is_refused_by_its_own_port_not_the_cached_one(
    first_port: str,
) -> None:
    # RFC 8866 §5.14 / RFC 3264 §6: only a rejected stream (port 0) may list no format, so that
    # check belongs to the port, read at every parse, and not to the memoized rest of the line.
    parser._parse_media_line.cached.cache_clear()
    parser._parse_media_transport.cached.cache_clear()
    for port in (first_port, "4000" if first_port == "0" else "0", first_port):
        wire = _body(f"m=audio {port} RTP/AVP")
        if port == "0":
            assert parse_sdp_untrusted(wire).media[0].is_rejected
        else:
            with pytest.raises(SdpError) as raised:
                parse_sdp_untrusted(wire)
            assert raised.value.reason == "line 6: m= line without formats"


def test_a_bad_port_is_refused_at_every_parse_after_a_good_one() -> None:
    parse_sdp_untrusted(_body("m=audio 4000 RTP/AVP 0"))
    for port, reason in (("70000", "m= port is out of range"), ("4x", "m= port is not a number")):
        with pytest.raises(SdpError) as raised:
            parse_sdp_untrusted(_body(f"m=audio {port} RTP/AVP 0"))
        assert raised.value.reason == f"line 6: {reason}"
        assert (
            raised.value.reason
            == _outcome(reference_parse_sdp_untrusted, _body(f"m=audio {port} RTP/AVP 0"))[1]
        )


def test_o_lines_that_differ_only_in_their_version_each_read_their_own() -> None:
    for version in (1, 2, 1, 3):
        sd = parse_sdp_untrusted(_body("m=audio 4000 RTP/AVP 0", version=version))
        assert sd.origin.session_version == version


_SPACE = st.sampled_from([" ", "  ", "\t", " \t"])


@settings(max_examples=300, deadline=None)
@given(
    media=st.sampled_from(["audio", "AUDIO", "image", "video", "a(b", "-"]),
    ports=st.lists(
        st.sampled_from(["0", "4000", "4002", "4000/2", "65535", "65536", "x", "4000/0", "01"]),
        min_size=1,
        max_size=4,
    ),
    proto=st.sampled_from(["RTP/AVP", "rtp/avp", "RTP/SAVPF", "udptl", "TCP", "RTP/XYZ"]),
    formats=st.lists(
        st.sampled_from(["0", "8", "101", "127", "128", "t38", "a(b", "00", "-1"]), max_size=4
    ),
    first=_SPACE,
    second=_SPACE,
    tail=st.sampled_from(["", " ", "\t"]),
)
def test_m_lines_read_with_warm_caches_as_the_reference_reads_them(
    media: str,
    ports: list[str],
    proto: str,
    formats: list[str],
    first: str,
    second: str,
    tail: str,
) -> None:
    # The same line with one port after another (the cache filled by the first), each against
    # session 36's reader, which memoized whole m= texts: the same model, or the same error
    # with the same reason and line number.
    rest = " ".join([proto, *formats]) + tail
    for port in ports:
        wire = _body(f"m={media}{first}{port}{second}{rest}")
        assert _outcome(parse_sdp_untrusted, wire) == _outcome(reference_parse_sdp_untrusted, wire)


# -- Attributes' look-ups -------------------------------------------------------------------------

_NAMES = [
    "rtpmap",
    "RTPMAP",
    "RtpMap",
    "fmtp",
    "sendrecv",
    "SENDONLY",
    "Inactive",
    "recvonly",
    "crypto",
    "ice-ufrag",
    "ICE-UFRAG",
    "x",
    "İx",  # lower() makes it two characters: "i̇x"
    "i̇x",
]


def _naive(items: tuple[Attribute, ...], name: str) -> dict[str, object]:
    # What main's look-ups gave (a lower() of every name at every look-up), written out plainly.
    key = name.lower()
    matching = [a for a in items if a.name.lower() == key]
    directions = [Direction(a.name.lower()) for a in items if a.name.lower() in _DIRECTION_NAMES]
    return {
        "has": bool(matching),
        "in": bool(matching),
        "get": matching[0].value if matching else None,
        "get_all": tuple(a.value for a in matching),
        "values": tuple(a.value for a in matching if a.value is not None),
        "direction": directions[0] if directions else None,
        "remove": tuple(a for a in items if a.name.lower() != key),
    }


_DIRECTION_NAMES = {d.value for d in Direction}


def _asked(attributes: Attributes, name: str) -> dict[str, object]:
    return {
        "has": attributes.has(name),
        "in": name in attributes,
        "get": attributes.get(name),
        "get_all": attributes.get_all(name),
        "values": attributes.values(name),
        "direction": attributes.direction(),
        "remove": attributes.remove(name).items,
    }


_ATTRIBUTES = st.lists(
    st.tuples(st.sampled_from(_NAMES), st.sampled_from([None, "", "0 PCMU/8000", "1"])),
    max_size=8,
).map(lambda pairs: tuple(Attribute(n, v) for n, v in pairs))


@settings(max_examples=300, deadline=None)
@given(items=_ATTRIBUTES, asked=st.lists(st.sampled_from(_NAMES), min_size=1, max_size=5))
def test_look_ups_answer_as_a_lower_per_attribute_did(
    items: tuple[Attribute, ...], asked: list[str]
) -> None:
    attributes = Attributes(items)
    for name in asked:  # several look-ups of one object, each on its own
        assert _asked(attributes, name) == _naive(items, name)
        assert _asked(Attributes(items), name) == _naive(items, name)


@settings(max_examples=200, deadline=None)
@given(items=_ATTRIBUTES, name=st.sampled_from(_NAMES), value=st.sampled_from([None, "v"]))
def test_edits_answer_as_a_lower_per_attribute_did(
    items: tuple[Attribute, ...], name: str, value: str | None
) -> None:
    attributes = Attributes(items)
    attributes.has("x")  # a look-up before the edits, as a call makes
    key = name.lower()
    first = next((i for i, a in enumerate(items) if a.name.lower() == key), None)
    kept = [a for a in items if a.name.lower() != key]
    new = Attribute(name, value)
    expected = [*kept, new] if first is None else [*kept[:first], new, *kept[first:]]
    assert attributes.set(name, value).items == tuple(expected)
    directionless = [a for a in items if a.name.lower() not in _DIRECTION_NAMES]
    placed = next((i for i, a in enumerate(items) if a.name.lower() in _DIRECTION_NAMES), None)
    hold = Attribute("sendonly")
    with_hold = (
        [*directionless, hold]
        if placed is None
        else [*directionless[:placed], hold, *directionless[placed:]]
    )
    assert attributes.with_direction(Direction.SENDONLY).items == tuple(with_hold)
    # An edited copy answers for its own items.
    added = attributes.add(name, value)
    assert added.has(name) and added.get_all(name)[-1] == value


def test_sections_that_differ_only_in_an_attribute_names_case_each_answer_for_themselves() -> None:
    upper = Attributes((Attribute("RTCP-MUX"), Attribute("SENDONLY")))
    other = Attributes((Attribute("rtcp-mux-x"), Attribute("sendonlyx")))
    for attributes in (upper, other, upper):
        assert attributes.has("rtcp-mux") is (attributes is upper)
        assert attributes.direction() == (Direction.SENDONLY if attributes is upper else None)


def test_the_look_up_names_are_no_part_of_the_value() -> None:
    # Plugins compare, hash, print, copy and pickle Attributes (docs/plugin_hooks.md): a
    # look-up changes none of that, and attrs sees one field as before.
    items = (Attribute("rtpmap", "0 PCMU/8000"), Attribute("Crypto", "1 AES_CM inline:KEY"))
    asked, fresh = Attributes(items), Attributes(items)
    assert asked.has("crypto")
    assert asked == fresh and hash(asked) == hash(fresh) and repr(asked) == repr(fresh)
    assert "KEY" not in repr(asked)
    assert [field.name for field in attrs.fields(Attributes)] == ["items"]
    assert attrs.asdict(asked) == attrs.asdict(fresh)
    copied = pickle.loads(pickle.dumps(asked))
    assert copied == asked and copied.get("CRYPTO") == "1 AES_CM inline:KEY"
    evolved = attrs.evolve(asked, items=(Attribute("CRYPTO", "2"),))
    assert evolved.get("crypto") == "2" and evolved.values("rtpmap") == ()
