"""The media set-up's shortcuts (session 40, docs/benchmarks.md "Session 40 (media
set-up)") give what the steps they replaced gave, for any attributes.

``_relayed_attributes`` is ``remove_if(is_leg_specific)``, ``with_direction`` and ``add`` in one
pass; the hypothesis tests below hold it to that composition over names drawn from every rule
(leg-specific names in any case, a=ice-* by prefix, a=group with and without BUNDLE, the four
directions, repeated and absent). ``_plain`` and ``_without_session_keys`` (LegSecurity) return
their section as it is when there is nothing to take out or change: equal, and written alike, to
what rebuilding it gave. A relay stream's sides take their address family from the allocator
that bound their sockets, and a stream closed after its relay's epoll still gives its ports back.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.config import PortRange
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import MediaRelay
from gateway.core.media.security import (
    _KEY_ATTRIBUTES,
    _PLAIN_OF,
    _RTP_PROFILES,
    _SECURE_OF,
    _plain,
    _without_session_keys,
)
from gateway.core.media.session import _relayed_attributes, is_leg_specific
from gateway.core.sdp.model import (
    Attribute,
    Attributes,
    Direction,
    MediaDescription,
    Origin,
    SessionDescription,
)
from gateway.core.sdp.serializer import serialize_sdp
from tests.port_blocks import ModuleBlock

_NAMES = (
    "rtpmap",
    "fmtp",
    "ptime",
    "mid",
    "ssrc",
    "candidate",
    "ice-ufrag",
    "ICE-PWD",
    "ice-options",
    "icecream",
    "crypto",
    "Fingerprint",
    "setup",
    "rtcp",
    "rtcp-mux",
    "RTCP-MUX-ONLY",
    "group",
    "Group",
    "sendrecv",
    "SendOnly",
    "recvonly",
    "inactive",
    "sendrecvx",
    "x-unknown",
)
_VALUES = st.one_of(
    st.none(),
    st.sampled_from(["BUNDLE 0 1", "LS 0 1", "BUNDLE", " BUNDLE 0", "bundle 0", "", "0 PCMU/8000"]),
    st.text(st.characters(blacklist_characters="\r\n\x00"), max_size=8),
)
_ATTRIBUTES = st.lists(st.builds(Attribute, st.sampled_from(_NAMES), _VALUES), max_size=12).map(
    lambda items: Attributes(tuple(items))
)
_DIRECTION = st.one_of(st.none(), st.sampled_from(list(Direction)))
_LAST = st.one_of(
    st.none(), st.just(Attribute("rtcp-mux")), st.builds(Attribute, st.just("rtcp"), st.text())
)


def _as_before(attributes: Attributes, direction: Direction | None, last: Attribute | None):
    """What _rewritten_media made before session 40: three steps, three Attributes."""
    out = attributes.remove_if(is_leg_specific).with_direction(direction)
    return out if last is None else out.add(last.name, last.value)


@settings(max_examples=300)
@given(_ATTRIBUTES, _DIRECTION, _LAST)
def test_relayed_attributes_are_the_three_steps(
    attributes: Attributes, direction: Direction | None, last: Attribute | None
):
    assert _relayed_attributes(attributes, direction, last) == _as_before(
        attributes, direction, last
    )


def test_relayed_attributes_keep_the_first_directions_place():
    attributes = Attributes.of(
        [
            ("rtpmap", "0 PCMU/8000"),
            ("ice-ufrag", "u"),
            ("recvonly", None),
            ("ptime", "20"),
            ("sendonly", None),
            ("group", "BUNDLE 0"),
            ("group", "LS 0"),
        ]
    )
    assert list(_relayed_attributes(attributes, Direction.INACTIVE, Attribute("rtcp", "9"))) == [
        Attribute("rtpmap", "0 PCMU/8000"),
        Attribute("inactive"),
        Attribute("ptime", "20"),
        Attribute("group", "LS 0"),
        Attribute("rtcp", "9"),
    ]
    assert list(_relayed_attributes(attributes, None, None)) == [
        Attribute("rtpmap", "0 PCMU/8000"),
        Attribute("ptime", "20"),
        Attribute("group", "LS 0"),
    ]


# -- LegSecurity's plain sections: nothing rebuilt when nothing changes ---------------------------

_PROTOS = (
    "RTP/AVP",
    "RTP/AVPF",
    "RTP/SAVP",
    "rtp/savpf",
    "UDP/TLS/RTP/SAVPF",
    "udptl",
    "TCP/MRCPv2",
)
_KEY_NAMES = ("crypto", "Fingerprint", "setup", "TLS-ID", "zrtp-hash", "key-mgmt")
_SECTION_ATTRIBUTES = st.lists(
    st.builds(Attribute, st.sampled_from(_NAMES + _KEY_NAMES), _VALUES), max_size=10
)


def _section(proto: str, items: list[Attribute]) -> MediaDescription:
    return MediaDescription(
        media="audio", port=49170, proto=proto, formats=("0",), attributes=Attributes(tuple(items))
    )


def _sd(items: list[Attribute], media: tuple[MediaDescription, ...] = ()) -> SessionDescription:
    origin = Origin("-", 1, 1, "IN", "IP4", "127.0.0.1")
    return SessionDescription(origin, attributes=Attributes(tuple(items)), media=media)


@settings(max_examples=300)
@given(st.sampled_from(_PROTOS), _SECTION_ATTRIBUTES)
def test_plain_is_the_rebuilt_section(proto: str, items: list[Attribute]):
    media = _section(proto, items)
    rebuilt = media.with_attributes(
        [a for a in media.attributes if a.name.lower() not in _KEY_ATTRIBUTES],
        _PLAIN_OF.get(proto.upper(), proto),
    )
    plain = _plain(media)
    assert plain == rebuilt
    assert serialize_sdp(_sd([], (plain,))) == serialize_sdp(_sd([], (rebuilt,)))
    if plain is media:  # kept as it is only where nothing was to change
        assert proto.upper() not in _PLAIN_OF
        assert not [a for a in items if a.name.lower() in _KEY_ATTRIBUTES]


@settings(max_examples=300)
@given(_SECTION_ATTRIBUTES)
def test_without_session_keys_is_the_rebuilt_description(items: list[Attribute]):
    sd = _sd(items, (_section("RTP/AVP", []),))
    rebuilt = sd.with_attributes(
        [a for a in sd.attributes if a.name.lower() not in _KEY_ATTRIBUTES]
    )
    assert _without_session_keys(sd) == rebuilt
    assert serialize_sdp(_without_session_keys(sd)) == serialize_sdp(rebuilt)


def test_a_plain_phones_section_is_not_rebuilt():
    media = _section("RTP/AVP", [Attribute("rtpmap", "0 PCMU/8000"), Attribute("sendrecv")])
    assert _plain(media) is media
    sd = _sd([Attribute("tool", "x")], (media,))
    assert _without_session_keys(sd) is sd


def test_rtp_profiles_are_the_plain_and_secure_ones():
    assert frozenset(_PLAIN_OF) | frozenset(_SECURE_OF) == _RTP_PROFILES


# -- the relay's stream set-up and close ----------------------------------------------------------

PORTS = ModuleBlock(16, parse=PortRange.parse)  # this module's (tests/port_blocks.py)


@pytest.mark.parametrize(("address", "other"), [("127.0.0.1", "::1"), ("::1", "127.0.0.1")])
def test_a_streams_sides_take_the_family_their_sockets_have(address: str, other: str):
    relay = MediaRelay(PortAllocator(address, PORTS.get()), clock=float)
    try:
        stream = relay.open_stream()
        for side in (stream.a, stream.b):
            assert side._family == side.ports.rtp_socket.family
            side.set_remote((address, 40000))
            with pytest.raises(LocalMediaError, match="address family"):
                side.set_remote((other, 40000))
    finally:
        relay.close()


def test_a_stream_closed_after_its_relays_epoll_releases_its_ports():
    relay = MediaRelay(PortAllocator("127.0.0.1", PORTS.get()), clock=float)
    stream = relay.open_stream()
    fds = [ep.fd for ep in stream._all_endpoints()]
    relay._epoll.close()  # as when the relay is torn down around an open stream
    stream.close()
    assert relay.allocator.in_use == 0
    assert stream.a.ports.closed and stream.b.ports.closed
    assert all(relay._endpoints[fd] is None for fd in fds)
    assert relay.streams == frozenset()
    relay.close()
