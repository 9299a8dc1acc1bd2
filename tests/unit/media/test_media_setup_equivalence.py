"""The media set-up's one-pass steps (session 40, docs/benchmarks.md "Session 40 (media
set-up)") give what the steps they replaced gave, for any attributes.

``_relayed_attributes`` is ``remove_if(is_leg_specific)``, ``with_direction`` and ``add`` in one
pass; the hypothesis tests below hold it to that composition over names drawn from every rule
(leg-specific names in any case, a=ice-* by prefix, a=group with and without BUNDLE, the four
directions, repeated and absent).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.media.session import _relayed_attributes, is_leg_specific
from gateway.core.sdp.model import Attribute, Attributes, Direction

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
    st.text(max_size=8),
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


@settings(max_examples=500)
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
