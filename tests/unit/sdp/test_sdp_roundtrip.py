"""Property: every description the model can hold survives serialize -> parse unchanged."""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.sdp.model import (
    KNOWN_PROTOS,
    Attribute,
    Attributes,
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    TimeDescription,
    is_rtp_proto,
)
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp

TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`{|}~"
tokens = st.text(alphabet=TOKEN_ALPHABET, min_size=1, max_size=12)
# Free text: anything but CR, LF, NUL and lone surrogates (not encodable as UTF-8).
texts = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00"),
    max_size=24,
)
nonblank_texts = texts.filter(lambda t: t.strip() != "")
numbers = st.integers(min_value=0, max_value=10**20 - 1)
hostnames = st.from_regex(r"[a-z][a-z0-9-]{0,8}(\.[a-z][a-z0-9-]{0,8}){0,2}", fullmatch=True)
# Some protos in their IANA spelling ("udp", "udptl") and upper case both.
protos = st.sampled_from(sorted(KNOWN_PROTOS | {"udp", "udptl", "RTP/AVP", "rtp/avp"}))


@st.composite
def connections(draw: st.DrawFn) -> Connection:
    kind = draw(st.sampled_from(["IP4", "IP6", "other"]))
    if kind == "IP4":
        address = draw(st.ip_addresses(v=4).map(str) | hostnames)
        ttl = draw(st.none() | st.integers(0, 255))
        count = None if ttl is None else draw(st.none() | st.integers(1, 1000))
        return Connection("IN", "IP4", address, ttl, count)
    if kind == "IP6":
        address = draw(st.ip_addresses(v=6).map(str) | hostnames)
        return Connection("IN", "IP6", address, None, draw(st.none() | st.integers(1, 1000)))
    addrtype = draw(tokens.filter(lambda t: t.upper() not in ("IP4", "IP6")))
    return Connection(draw(tokens), addrtype, draw(tokens))


attributes = st.lists(st.builds(Attribute, tokens, st.none() | texts), max_size=5).map(
    lambda items: Attributes(tuple(items))
)
bandwidths = st.lists(st.builds(Bandwidth, tokens, numbers), max_size=2).map(tuple)
times = st.builds(
    TimeDescription,
    numbers,
    numbers,
    st.lists(nonblank_texts, max_size=2).map(tuple),
    st.none() | nonblank_texts,
)


@st.composite
def media_descriptions(draw: st.DrawFn, *, needs_connection: bool) -> MediaDescription:
    proto = draw(protos)
    port = draw(st.integers(0, 65535))
    fmt = st.integers(0, 127).map(str) if is_rtp_proto(proto) else tokens
    formats = draw(st.lists(fmt, min_size=0 if port == 0 else 1, max_size=5))
    min_connections = 1 if needs_connection and port != 0 else 0
    return MediaDescription(
        media=draw(tokens),
        port=port,
        proto=proto,
        formats=tuple(formats),
        port_count=draw(st.none() | st.integers(1, 100)),
        information=draw(st.none() | texts),
        connections=tuple(draw(st.lists(connections(), min_size=min_connections, max_size=2))),
        bandwidths=draw(bandwidths),
        key=draw(st.none() | texts),
        attributes=draw(attributes),
    )


@st.composite
def session_descriptions(draw: st.DrawFn) -> SessionDescription:
    origin = Origin(
        draw(tokens),
        draw(numbers),
        draw(numbers),
        "IN",
        draw(st.sampled_from(["IP4", "IP6"])),
        draw(st.ip_addresses().map(str)),
    )
    connection = draw(st.none() | connections())
    return SessionDescription(
        origin=origin,
        session_name=draw(texts),
        information=draw(st.none() | texts),
        uri=draw(st.none() | texts),
        emails=tuple(draw(st.lists(texts, max_size=2))),
        phones=tuple(draw(st.lists(texts, max_size=2))),
        connection=connection,
        bandwidths=draw(bandwidths),
        times=tuple(draw(st.lists(times, min_size=1, max_size=3))),
        key=draw(st.none() | texts),
        attributes=draw(attributes),
        media=tuple(
            draw(st.lists(media_descriptions(needs_connection=connection is None), max_size=4))
        ),
    )


LIMITS = {"max_size": 10**6, "max_media": 100, "max_attributes": 1000, "max_line": 10**5}


@settings(max_examples=300)
@given(session_descriptions())
def test_parse_of_serialize_is_identity(sd: SessionDescription) -> None:
    wire = serialize_sdp(sd)
    assert parse_sdp_untrusted(wire, **LIMITS) == sd
    assert wire.endswith(b"\r\n") and b"\n" not in wire.replace(b"\r\n", b"")


@settings(max_examples=100)
@given(session_descriptions())
def test_serialize_of_parse_is_identity(sd: SessionDescription) -> None:
    wire = serialize_sdp(sd)
    assert serialize_sdp(parse_sdp_untrusted(wire, **LIMITS)) == wire
    # LF-only line ends read the same.
    assert parse_sdp_untrusted(wire.replace(b"\r\n", b"\n"), **LIMITS) == sd


# The copies the media security steps make per call are built field by field rather than with
# attrs.evolve (docs/benchmarks.md, session 27): each must equal evolve's.


@settings(max_examples=200)
@given(session_descriptions(), st.data())
def test_built_copies_equal_attrs_evolve(sd: SessionDescription, data: st.DataObject) -> None:
    other = data.draw(session_descriptions())
    assert sd.with_media(other.media) == attrs.evolve(sd, media=other.media)
    assert sd.with_media(list(other.media)).media == other.media
    for media in sd.media:
        proto = data.draw(protos)
        new_attributes = data.draw(attributes)
        assert media.with_proto(proto) == attrs.evolve(media, proto=proto)
        assert media.with_attributes(new_attributes, proto) == attrs.evolve(
            media, attributes=new_attributes, proto=proto
        )
        assert media.with_attributes(new_attributes) == attrs.evolve(
            media, attributes=new_attributes
        )


@settings(max_examples=200)
@given(attributes, st.data())
def test_attribute_reads_equal_the_plain_definition(
    attrs_: Attributes, data: st.DataObject
) -> None:
    # Names from the section itself (in another case) or new ones.
    names = [a.name for a in attrs_] + ["rtpmap", "crypto"]
    name = data.draw(
        st.sampled_from(names).map(lambda n: data.draw(st.sampled_from([n, n.upper()])))
    )
    key = name.lower()
    assert attrs_.get_all(name) == tuple(a.value for a in attrs_ if a.name.lower() == key)
    assert attrs_.values(name) == tuple(
        a.value for a in attrs_ if a.name.lower() == key and a.value is not None
    )
    assert attrs_.remove(name) == Attributes(tuple(a for a in attrs_ if a.name.lower() != key))
