"""Location conveyance (RFC 6442, gateway/core/calls/location.py): the Geolocation header read
and bounded, cid: references matched to body parts, the policy, the multipart body we build,
and location parts read (never refused) by gateway/core/sdp/body.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import config as cfg
from gateway.core.calls.location import (
    MAX_LOCATION_SIZE,
    MAX_LOCATIONS,
    LocationError,
    carries_location,
    geolocation_errors,
    location_error_code_untrusted,
    offered_location,
    parse_geolocation_untrusted,
    passes,
    with_location,
)
from gateway.core.config import ConfigError
from gateway.core.sdp.body import BodyPart, UnsupportedBody, read_body, sdp_of
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.message import Headers, Request, Response

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
PIDF = b'<?xml version="1.0"?>\r\n<presence xmlns="urn:ietf:params:xml:ns:pidf"/>\r\n'


def part(content_id: str | None = "loc1@example.com", content: bytes = PIDF) -> BodyPart:
    head = b"Content-Type: application/pidf+xml\r\n"
    if content_id is not None:
        head += f"Content-ID: <{content_id}>\r\n".encode()
    return BodyPart("application/pidf+xml", content_id, head + b"\r\n" + content, content)


def invite(*headers: tuple[str, str], body: bytes = SDP) -> Request:
    request = Request("INVITE", parse_uri_untrusted("sip:112@192.0.2.1"), Headers.of([*headers]))
    return request.with_body(body, "application/sdp") if body else request


# -- the Geolocation header (RFC 6442 §4.1) --------------------------------------------------


def test_geolocation_values_with_parameters_and_several_locations() -> None:
    parsed = parse_geolocation_untrusted(
        ["<cid:a@b>;inserted-by=phone, <https://lis.example.com/x?y=1,2>", "<sips:loc@lis>"]
    )
    assert [uri for uri, _ in parsed] == [
        "cid:a@b",
        "https://lis.example.com/x?y=1,2",
        "sips:loc@lis",
    ]
    assert parsed[0][1] == "<cid:a@b>;inserted-by=phone"


@pytest.mark.parametrize(
    "value",
    [
        "cid:a@b",  # no angle brackets
        "<cid:a@b",
        "<>",
        "<no-scheme>",
        "<cid:a b@c>",
        "<cid:a@b> junk",
        "<cid:a@b>;=x",
        "<cid:a@b>,,<cid:c@d>",
        '<cid:a@b>;p="unterminated',
        "<cid:" + "x" * 1100 + ">",
    ],
)
def test_a_malformed_geolocation_is_400(value: str) -> None:
    with pytest.raises(LocationError) as info:
        parse_geolocation_untrusted([value])
    assert info.value.status == 400
    assert "Geolocation" in info.value.reason
    assert info.value.extra_headers() == []


def test_more_locations_than_we_carry_is_424() -> None:
    values = [", ".join(f"<cid:{n}@x>" for n in range(MAX_LOCATIONS + 1))]
    with pytest.raises(LocationError) as info:
        parse_geolocation_untrusted(values)
    assert info.value.status == 424
    assert info.value.extra_headers() == [
        ("Geolocation-Error", '100 ;code="Cannot Process Location"')
    ]


# -- what an INVITE conveys -------------------------------------------------------------------


def test_a_cid_names_its_part_percent_encoded_or_not() -> None:
    located = invite(("Geolocation", "<cid:loc1%40example.com>"), ("Geolocation-Routing", "no"))
    location = offered_location(located, [part()])
    assert location.parts == (part(),)
    assert location.routing == "no"
    assert location.conveyed == "by value"
    assert location.described() == f"by value (<loc1@example.com> {len(PIDF)} bytes)"


def test_by_reference_and_both_and_routing_alone() -> None:
    reference = offered_location(invite(("Geolocation", "<https://lis/x>")), [])
    assert (reference.conveyed, reference.parts) == ("by reference", ())
    both = invite(("Geolocation", "<https://lis/x>, <cid:loc1@example.com>"))
    assert offered_location(both, [part()]).conveyed == "by value and by reference"
    routing = offered_location(invite(("Geolocation-Routing", "yes")), [])
    assert routing.conveyed == "routing only"
    # A location part no Geolocation names is left out.
    unnamed = offered_location(invite(), [part()])
    assert (unnamed.conveyed, unnamed.parts, unnamed.unreferenced) == ("none", (), 1)


@pytest.mark.parametrize(
    ("headers", "parts", "says"),
    [
        ([("Geolocation", "<cid:other@example.com>")], [part()], "no location body part"),
        ([("Geolocation", "<cid:loc1@example.com>")], [], "no location body part"),
        (
            [("Geolocation", "<cid:loc1@example.com>")],
            [part(content=b"<presence>" + b" " * MAX_LOCATION_SIZE)],
            "larger than",
        ),
        ([("Geolocation", "<cid:loc1@example.com>")], [part(content=b"hello")], "PIDF-LO"),
        (
            [("Geolocation", "<cid:loc1@example.com>")],
            [part(content=b"<?xml version='1.0'?><html/>")],
            "PIDF-LO",
        ),
        ([], [part(f"{n}@x") for n in range(MAX_LOCATIONS + 1)], "location parts"),
    ],
)
def test_location_we_cannot_pass_on_is_424(
    headers: list[tuple[str, str]], parts: list[BodyPart], says: str
) -> None:
    with pytest.raises(LocationError) as info:
        offered_location(invite(*headers), parts)
    assert info.value.status == 424
    assert says in info.value.reason


@pytest.mark.parametrize("routing", [["maybe please"], ["yes", "no"], ["x" * 65]])
def test_a_malformed_geolocation_routing_is_400(routing: list[str]) -> None:
    with pytest.raises(LocationError) as info:
        offered_location(invite(*[("Geolocation-Routing", r) for r in routing]), [])
    assert info.value.status == 400


def test_only_invites_with_location_take_the_feature() -> None:
    assert not carries_location(invite(), ())
    assert carries_location(invite(("Geolocation", "<https://lis/x>")), ())
    assert carries_location(invite(("Geolocation-Routing", "no")), ())
    assert carries_location(invite(), (part(),))


# -- policy -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "emergency", "passed"),
    [
        ("emergency", True, True),
        ("emergency", False, False),
        ("all", True, True),
        ("all", False, True),
        ("never", True, False),
        ("never", False, False),
        (None, True, False),  # to a phone: never
        (None, False, False),
    ],
)
def test_policy(policy: str | None, emergency: bool, passed: bool) -> None:
    assert passes(policy, emergency=emergency) is passed  # type: ignore[arg-type]


def test_the_trunk_location_key_and_a_bad_value(tmp_path: Path) -> None:
    path = tmp_path / "voipgw.toml"
    table = '[[trunks]]\nname = "carrier"\naddress = "udp:192.0.2.10:5060"\n'
    path.write_text(table)
    assert cfg.from_toml(path).trunks[0].location == "emergency"
    path.write_text(table + 'location = "sometimes"\n')
    with pytest.raises(ConfigError) as info:
        cfg.from_toml(path)
    assert (info.value.file, info.value.table, info.value.key) == (
        str(path),
        "trunks.carrier",
        "location",
    )


# -- the body we send -------------------------------------------------------------------------


def tokens(*values: str) -> object:
    remaining = list(values)
    return lambda: remaining.pop(0)


def test_with_location_builds_our_multipart_body_with_the_part_as_received() -> None:
    located = invite(("Geolocation", "<cid:loc1@example.com>"), ("Geolocation-Routing", "yes"))
    location = offered_location(located, [part()])
    ours = invite(("Call-ID", "ours"))
    sent = with_location(ours, location, SDP, tokens("abc"))  # type: ignore[arg-type]
    assert sent.headers.get("Geolocation") == "<cid:loc1@example.com>"
    assert sent.headers.get("Geolocation-Routing") == "yes"
    assert sent.content_type == "multipart/mixed;boundary=voipgw-abc"
    assert sent.body == (
        b"--voipgw-abc\r\nContent-Type: application/sdp\r\n\r\n" + SDP + b"\r\n"
        b"--voipgw-abc\r\n" + part().raw + b"\r\n--voipgw-abc--\r\n"
    )
    # What we send reads back: the same SDP, the same part.
    assert read_body(sent.content_type, sent.body) == (SDP, (part(),))


def test_our_boundary_is_in_no_part() -> None:
    clash = part(content=PIDF + b"<!-- --voipgw-abc -->")
    location = offered_location(invite(("Geolocation", "<cid:loc1@example.com>")), [clash])
    sent = with_location(invite(), location, SDP, tokens("abc"))  # type: ignore[arg-type]
    assert sent.content_type == "multipart/mixed;boundary=voipgw-abc-1"
    assert read_body(sent.content_type, sent.body) == (SDP, (clash,))


def test_by_reference_or_a_late_offer() -> None:
    reference = offered_location(invite(("Geolocation", "<https://lis/x>")), [])
    sent = with_location(invite(), reference, SDP, tokens())  # type: ignore[arg-type]
    assert (sent.content_type, sent.body) == ("application/sdp", SDP)
    by_value = offered_location(invite(("Geolocation", "<cid:loc1@example.com>")), [part()])
    late = with_location(invite(body=b""), by_value, b"", tokens("t"))  # type: ignore[arg-type]
    assert read_body(late.content_type, late.body) == (b"", (part(),))


def test_geolocation_errors_of_a_response_are_bounded() -> None:
    headers = Headers.of([("Geolocation-Error", f"{n}00") for n in range(1, 6)])
    errors = geolocation_errors(Response(424, "Bad Location Information", headers))
    assert errors == [("Geolocation-Error", v) for v in ("100", "200", "300")]


# -- reading location parts (gateway/core/sdp/body.py) ----------------------------------------


@pytest.mark.parametrize(
    "disposition", ["", "Content-Disposition: render;handling=required\r\n", "x: y\r\n"]
)
def test_a_location_part_is_read_not_refused_whatever_its_handling(disposition: str) -> None:
    raw = (
        b"Content-Type: Application/PIDF+XML\r\nContent-ID: <loc1@example.com>\r\n"
        + disposition.encode()
        + b"\r\n"
        + PIDF
    )
    body = (
        b"--b1\r\nContent-Type: application/sdp\r\n\r\n"
        + SDP
        + b"\r\n--b1\r\n"
        + raw
        + b"\r\n--b1--\r\n"
    )
    sdp, parts = read_body("multipart/mixed;boundary=b1", body)
    assert sdp == SDP == sdp_of("multipart/mixed;boundary=b1", body)
    assert parts == (BodyPart("application/pidf+xml", "loc1@example.com", raw, PIDF),)
    assert read_body("application/sdp", SDP) == (SDP, ())


def test_a_lone_location_body_is_read_as_its_part_named_by_the_content_id_field() -> None:
    """RFC 8262 §3: a Content-ID header field names the whole body, so a lone PIDF-LO (a
    location-only UPDATE, a late-offer INVITE) is read as the part it becomes in our multipart
    body: no SDP, its Content-Type (parameters kept), Content-ID and Content-Disposition."""
    headers = Headers.of(
        [("Content-ID", " <loc1@example.com> "), ("Content-Disposition", "render")]
    )
    sdp, parts = read_body("application/pidf+xml;charset=UTF-8", PIDF, headers)
    raw = (
        b"Content-Type: application/pidf+xml;charset=UTF-8\r\n"
        b"Content-ID:  <loc1@example.com> \r\nContent-Disposition: render\r\n\r\n" + PIDF
    )
    assert sdp == b""
    assert parts == (BodyPart("application/pidf+xml", "loc1@example.com", raw, PIDF),)
    # Without the message's fields (a response's SDP read): no Content-ID, no SDP either.
    assert sdp_of("Application/PIDF+XML", PIDF) == b""
    assert read_body("application/pidf+xml", PIDF) == (
        b"",
        (part(None),),
    )
    # Named by the Geolocation cid:, checked and bounded as a multipart's part is.
    request = invite(("Geolocation", "<cid:loc1@example.com>"), body=b"")
    location = offered_location(request, parts)
    assert location.parts == parts and location.conveyed == "by value"
    big = read_body("application/pidf+xml", PIDF + b" " * MAX_LOCATION_SIZE, headers)[1]
    with pytest.raises(LocationError) as raised:
        offered_location(request, big)
    assert raised.value.status == 424
    # Other lone types are still refused (415).
    with pytest.raises(UnsupportedBody):
        read_body("text/plain", b"hello", headers)


def test_the_call_record_line_says_how_and_where_never_where_the_caller_is() -> None:
    from gateway.core.cli import describe_location

    record = {"conveyed": "by value", "passed_to": ["carrier"], "dropped_for": ["backup"]}
    assert describe_location(record) == (
        "caller location conveyed by value, passed to carrier, not passed to backup (policy)"
    )
    assert describe_location({"conveyed": "by reference", "passed_to": [], "dropped_for": []}) == (
        "caller location conveyed by reference"
    )
    record = {"conveyed": "by value", "passed_to": ["carrier"], "dropped_for": [], "updates": 2}
    assert describe_location(record) == (
        "caller location conveyed by value, passed to carrier, updated 2 time(s) during the call"
    )
    record["errors"] = [{"from": "carrier", "status": 424, "code": "300"}]
    assert describe_location(record).endswith(
        "during the call, Geolocation-Error 300 from carrier (424)"
    )
    record["errors"] = [{"from": "carrier", "unanswered_after": 4.0}]
    assert describe_location(record).endswith(
        "during the call, location update unanswered by carrier after 4 s (not delivered)"
    )


def test_a_geolocation_error_code_is_its_digits_only() -> None:
    """RFC 6442 §4.3: ``1*3DIGIT`` before any parameters; the text beside it is not kept."""
    assert location_error_code_untrusted('100 ;code="Cannot Process Location"') == "100"
    assert location_error_code_untrusted(" 202") == "202"
    assert location_error_code_untrusted("300;code=x;other") == "300"
    for bad in ("", ";code=100", "1000", "abc", "1 00", "\u0661\u0660\u0660", "-10"):
        assert location_error_code_untrusted(bad) is None, bad


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=60))
def test_any_geolocation_error_value_gives_a_short_code_or_none(value: str) -> None:
    code = location_error_code_untrusted(value)
    assert code is None or (0 < len(code) <= 3 and all(c in "0123456789" for c in code))


@settings(max_examples=300, deadline=None)
@given(
    geolocation=st.lists(st.text(alphabet='<>cid:@;=," ab%40x/', max_size=40), max_size=3),
    routing=st.lists(st.text(max_size=10), max_size=2),
)
def test_any_geolocation_is_read_or_refused_with_a_status(
    geolocation: list[str], routing: list[str]
) -> None:
    """Whatever a caller sends: a Location, or a LocationError saying 400 or 424."""
    headers = [("Geolocation", g) for g in geolocation]
    headers += [("Geolocation-Routing", r) for r in routing]
    try:
        location = offered_location(invite(*headers), [part("a@x"), part("ab@x")])
    except LocationError as err:
        assert err.status in (400, 424)
    else:
        assert len(location.values) <= MAX_LOCATIONS
        assert all(p.content_id in ("a@x", "ab@x") for p in location.parts)
