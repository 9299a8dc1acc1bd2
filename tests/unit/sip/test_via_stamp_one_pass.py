"""stamp_received in one pass over the Via's parameters (docs/benchmarks.md, session 43) against
the steps it replaced (``has_param``, then ``set_param`` for rport and received, or
``remove_param``), copied here: the same Via, the same Via text, and the same request bytes
from stamp_request, for parameters in any case, repeated, as flags or with values, and hosts
and sources of every kind stamp_received tells apart (RFC 3261 §18.2.1, RFC 3581 §4)."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.core.sip.errors import SipParseError
from gateway.core.sip.grammar import parse_via_untrusted
from gateway.core.sip.headers import Via
from gateway.core.sip.serializer import serialize_message
from gateway.core.sip.uri import Params, has_param, remove_param, set_param
from gateway.core.sip.via import Hop, _plain, _same_ip, stamp_received, stamp_request
from tests.unit.sip.sip_builders import request


def _stamped_by_steps(via: Via, source: Hop) -> Via:
    # What stamp_received did before session 43, written out as it was.
    params = via.params
    if has_param(params, "rport"):
        params = set_param(params, "rport", str(source.port))
        params = set_param(params, "received", _plain(source.host))
    elif not _same_ip(via.host, source.host):
        params = set_param(params, "received", _plain(source.host))
    else:
        params = remove_param(params, "received")
    return via.with_params(params)


_NAMES = ["rport", "RPort", "RPORT", "received", "Received", "branch", "maddr", "ttl", "x-rport"]
_VALUES = [None, "5060", "1", "10.0.0.9", "[2001:db8::9]", "z9hG4bKa"]
_PARAMS = st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(_VALUES)), max_size=6)
# Sent-by hosts: the source's address in two spellings, other addresses, a domain name.
_HOSTS = [
    "198.51.100.7",
    "10.0.0.5",
    "[2001:db8::1]",
    "[2001:0db8:0:0:0:0:0:1]",
    "[2001:db8::2]",
    "pc33.example.com",
]
_SOURCES = [
    Hop("UDP", "198.51.100.7", 41000),
    Hop("UDP", "2001:db8::1", 5062),
    Hop("TCP", "10.0.0.5", 5060),
]


@settings(max_examples=500, deadline=None)
@given(
    host=st.sampled_from(_HOSTS),
    port=st.sampled_from([None, 5060, 41000]),
    params=_PARAMS,
    source=st.sampled_from(_SOURCES),
)
def test_one_pass_stamps_as_the_steps_did(
    host: str, port: int | None, params: list[tuple[str, str | None]], source: Hop
) -> None:
    via = Via(transport="UDP", host=host, port=port, params=tuple(params))
    expected = _stamped_by_steps(via, source)
    stamped = stamp_received(via, source)
    assert stamped == expected
    assert str(stamped) == str(expected)


@settings(max_examples=200, deadline=None)
@given(params=_PARAMS, source=st.sampled_from(_SOURCES), sent_by=st.sampled_from(_HOSTS))
def test_stamp_request_writes_the_bytes_the_steps_wrote(
    params: list[tuple[str, str | None]], source: Hop, sent_by: str
) -> None:
    top = Via(transport="UDP", host=sent_by, port=5060, params=(("branch", "z9hG4bKx"), *params))
    try:
        parse_via_untrusted(str(top))
    except SipParseError:
        assume(False)  # a Via the parser refuses never reaches the stamp (400 first)
    req = request(sent_by="10.0.0.5:5060", extra=("Via: SIP/2.0/UDP proxy.example.org",))
    req = req.with_headers(req.headers.replace_first("Via", str(top)))
    by_steps = req.with_headers(
        req.headers.replace_first(
            "Via", str(_stamped_by_steps(parse_via_untrusted(str(top)), source))
        )
    )
    assert serialize_message(stamp_request(req, source)) == serialize_message(by_steps)


def test_the_cases_of_rfc_3261_and_3581() -> None:
    source = Hop("UDP", "198.51.100.7", 41000)

    def stamped(params: Params, host: str = "198.51.100.7") -> str:
        return str(stamp_received(Via("UDP", host, 5060, params), source))

    # rport flag: filled in where it stands, received added last even for the same address.
    assert stamped((("RPort", None), ("branch", "z9hG4bKa"))) == (
        "SIP/2.0/UDP 198.51.100.7:5060;RPort=41000;branch=z9hG4bKa;received=198.51.100.7"
    )
    # A received the sender wrote is replaced where it stands (the first one only) ...
    assert stamped((("Received", "10.9.9.9"), ("rport", None), ("received", "1")), "10.0.0.5") == (
        "SIP/2.0/UDP 10.0.0.5:5060;Received=198.51.100.7;rport=41000;received=1"
    )
    # ... or, without rport from the address it names, dropped, every one of them.
    assert stamped((("received", "10.9.9.9"), ("x", None), ("RECEIVED", None))) == (
        "SIP/2.0/UDP 198.51.100.7:5060;x"
    )
    # Another address without rport: received set, no rport added.
    assert stamped((("branch", "z9hG4bKa"),), "10.0.0.5") == (
        "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;received=198.51.100.7"
    )
    # Nothing to change: the Via itself.
    via = Via("UDP", "198.51.100.7", 5060, (("branch", "z9hG4bKa"),))
    assert stamp_received(via, source) is via
