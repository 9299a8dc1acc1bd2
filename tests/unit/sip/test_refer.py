"""REFER (RFC 3515) as the gateway reads it: Refer-To and the Replaces inside it (RFC 3891),
Refer-Sub (RFC 4488), and the NOTIFY bodies and states it sends back."""

from __future__ import annotations

import pytest

from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.message import Headers
from gateway.core.sip.refer import (
    Replaces,
    parse_refer,
    parse_replaces,
    sipfrag,
    subscription_state,
    wants_subscription,
)
from gateway.core.sip.uri import SipUri, TelUri


def refer_headers(*fields: tuple[str, str]) -> Headers:
    return Headers.of([("CSeq", "2 REFER"), *fields])


def test_a_blind_refer_names_the_target() -> None:
    refer = parse_refer(refer_headers(("Refer-To", '"Bob" <sip:bob@example.com;user=phone>')))
    assert refer.uri == SipUri("sip", "example.com", user="bob", params=(("user", "phone"),))
    assert refer.replaces is None
    # The addr-spec form, and the compact form "r" (RFC 3515 §2.1).
    assert parse_refer(refer_headers(("Refer-To", "sip:bob@example.com"))).uri == SipUri(
        "sip", "example.com", user="bob"
    )
    assert parse_refer(refer_headers(("r", "<sip:bob@example.com>"))).uri == SipUri(
        "sip", "example.com", user="bob"
    )
    assert parse_refer(refer_headers(("Refer-To", "<tel:+15550199>"))).uri == TelUri("+15550199")


def test_an_attended_refer_carries_the_dialog_to_replace() -> None:
    # RFC 5589 §7.1's example: the Replaces is escaped inside the URI's headers.
    value = (
        "<sips:transfertarget@chicago.example.com?Replaces=090459243588173445"
        "%3Bto-tag%3D7553452%3Bfrom-tag%3D31431>"
    )
    refer = parse_refer(refer_headers(("Refer-To", value)))
    assert refer.uri == SipUri("sips", "chicago.example.com", user="transfertarget")
    assert refer.replaces == Replaces("090459243588173445", to_tag="7553452", from_tag="31431")
    assert str(refer.replaces) == "090459243588173445;to-tag=7553452;from-tag=31431"


def test_the_method_parameter_is_dropped_for_invite_and_refused_otherwise() -> None:
    refer = parse_refer(refer_headers(("Refer-To", "<sip:bob@example.com;method=INVITE>")))
    assert refer.uri == SipUri("sip", "example.com", user="bob")
    with pytest.raises(RemoteSipError) as refused:
        parse_refer(refer_headers(("Refer-To", "<sip:bob@example.com;method=BYE>")))
    assert refused.value.status == 501


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ((), 400),  # RFC 3515 §2.4.1: exactly one Refer-To
        ((("Refer-To", "<sip:a@x>"), ("Refer-To", "<sip:b@x>")), 400),
        ((("Refer-To", "<sip:bob@"),), 400),
        ((("Refer-To", "<mailto:bob@example.com>"),), 416),
        ((("Refer-To", "<sip:bob@x?Replaces=only-a-call-id>"),), 400),
        ((("Refer-To", "<sip:bob@x?Replaces=c%3Bto-tag%3D%3Bfrom-tag%3Dy>"),), 400),
    ],
)
def test_refer_to_we_cannot_follow_is_refused(
    fields: tuple[tuple[str, str], ...], status: int
) -> None:
    with pytest.raises(RemoteSipError) as refused:
        parse_refer(refer_headers(*fields))
    assert refused.value.status == status


def test_replaces_values() -> None:
    assert parse_replaces("abc@host;from-tag=f;to-tag=t;early-only") == Replaces(
        "abc@host", to_tag="t", from_tag="f", early_only=True
    )
    assert str(Replaces("c", "t", "f", early_only=True)) == "c;to-tag=t;from-tag=f;early-only"
    with pytest.raises(RemoteSipError):
        parse_replaces(";to-tag=t;from-tag=f")


def test_refer_sub_false_asks_for_no_notifies() -> None:
    assert wants_subscription(refer_headers())
    assert wants_subscription(refer_headers(("Refer-Sub", "true")))
    assert not wants_subscription(refer_headers(("Refer-Sub", "false")))
    assert not wants_subscription(refer_headers(("Refer-Sub", " FALSE ")))


def test_notify_bodies_are_status_lines() -> None:
    # RFC 3420: a sipfrag is a partial message; ours is the Status-Line alone (RFC 3261 §7.2).
    assert sipfrag(180, "Ringing") == b"SIP/2.0 180 Ringing\r\n"
    assert sipfrag(200, "OK") == b"SIP/2.0 200 OK\r\n"
    # A reason phrase from the network never breaks the body's line.
    assert sipfrag(486, "Busy\r\nX-Injected: 1") == b"SIP/2.0 486 Busy??X-Injected: 1\r\n"


def test_subscription_state_ends_with_the_final_status() -> None:
    assert subscription_state(False) == "active;expires=60"
    assert subscription_state(True) == "terminated;reason=noresource"
