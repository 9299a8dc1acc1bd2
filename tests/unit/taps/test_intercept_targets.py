"""Target identifiers and the identities of a call they match (intercept/targets.py)."""

from __future__ import annotations

import pytest

from gateway.core.interfaces import TappedCall
from gateway.plugins.taps.intercept.targets import (
    TargetError,
    TargetIdentifier,
    match_key,
    party_keys,
    uri_keys,
)


@pytest.mark.parametrize(
    ("kind", "value", "key"),
    [
        ("sipUri", "sip:alice@Example.COM", "sip:alice@example.com"),
        ("sipUri", "sips:alice@example.com:5061;transport=tls", "sip:alice@example.com"),
        ("sipUri", "sip:+4930123456;npdi@gw.example.com", "sip:+4930123456@gw.example.com"),
        ("sipUri", "sip:bob@[2001:db8::1]:5060", "sip:bob@[2001:db8::1]"),
        ("telUri", "tel:+49-30-123456", "tel:4930123456"),
        ("telUri", "tel:+49(30)123 456;phone-context=example.com", "tel:4930123456"),
        ("e164Number", "4930123456", "tel:4930123456"),
        ("e164Number", "+49 30 123.456", "tel:4930123456"),
    ],
)
def test_identifiers_reduce_to_the_key_calls_are_matched_by(
    kind: str, value: str, key: str
) -> None:
    assert match_key(kind, value) == key
    assert TargetIdentifier(kind, value).key == key


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("sipUri", "sip:example.com", "user part"),
        ("sipUri", "mailto:alice@example.com", "user part"),
        ("telUri", "+4930123456", "not a tel URI"),
        ("e164Number", "alice", "not a number"),
        ("e164Number", "12", "not a number"),
        ("imsi", "262011234567890", "not supported"),
    ],
)
def test_identifiers_we_could_never_match_are_refused(kind: str, value: str, reason: str) -> None:
    with pytest.raises(TargetError, match=reason):
        match_key(kind, value)


def test_a_sip_uri_whose_user_is_a_number_also_matches_that_number() -> None:
    assert uri_keys("sip:+4930123456@gw.example.com;user=phone") == {
        "sip:+4930123456@gw.example.com",
        "tel:4930123456",
    }
    assert uri_keys("sip:alice@example.com") == {"sip:alice@example.com"}
    assert uri_keys("tel:+4930123456") == {"tel:4930123456"}
    assert uri_keys("urn:service:sos") == set()


def test_a_trunks_caller_is_its_from_and_asserted_identity_the_callee_request_uri_and_to() -> None:
    call = TappedCall(
        call_id="c1",
        from_uri="sip:alice@example.com",
        to_uri="sip:+4989555@gw.example.com",
        caller_kind="trunk",
        caller_name="carrier",
        callee_kind="",
        callee_name=None,
        to_header_uri="sip:bob@example.com",
        asserted_uris=("tel:+4930123456",),
    )
    caller, callee = party_keys(call)
    assert caller == {"sip:alice@example.com", "tel:4930123456"}
    assert callee == {"sip:+4989555@gw.example.com", "tel:4989555", "sip:bob@example.com"}


def test_an_accounts_caller_is_who_the_gateway_authenticated_not_what_its_phone_wrote() -> None:
    call = TappedCall(
        call_id="c2",
        from_uri="sip:anonymous@anonymous.invalid",  # Privacy: id
        to_uri="sip:+4989555@gw.example.com",
        caller_kind="account",
        caller_name="alice",
        callee_kind="",
        callee_name=None,
        asserted_uris=("sip:bob@example.com",),  # an untrusted phone's claim: ignored
        caller_uris=("sip:alice@example.com", "tel:+4930123456"),
    )
    caller, _ = party_keys(call)
    assert caller == {"sip:alice@example.com", "tel:4930123456"}
