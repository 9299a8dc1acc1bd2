"""Call forwarding by redirect, sans-IO (gateway/core/calls/redirect.py): a 3xx's Contacts in q
order and bounded, the reason a phone gives, Diversion and History-Info built and read with
their bounds; best_failure for a redirection not followed; the config keys."""

from __future__ import annotations

import re

import pytest

from gateway.core.calls.redirect import (
    MAX_DIVERSION_LENGTH,
    MAX_DIVERSIONS_SENT,
    MAX_REDIRECT_CONTACTS,
    Diverted,
    carried_diversion_untrusted,
    diversion_values,
    history_info_values,
    redirect_contacts_untrusted,
    redirect_reason,
    uri_user,
)
from gateway.core.calls.targets import best_failure
from gateway.core.config import ConfigError, from_mapping
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.message import Headers, Response


def redirect(*fields: tuple[str, str], status: int = 302) -> Response:
    return Response(status, "Moved Temporarily", Headers.of(fields))


def users(response: Response) -> list[str | None]:
    return [contact.user for contact in redirect_contacts_untrusted(response)]


def test_contacts_go_highest_q_first_ties_in_their_order() -> None:
    response = redirect(
        ("Contact", "<sip:low@a.example>;q=0.1, <sip:first@a.example>"),
        ("Contact", "<sip:half@a.example>;q=0.5, <tel:+4917012345>;q=1.0"),
    )
    assert users(response) == ["first", "+4917012345", "half", "low"]


def test_bad_contacts_are_left_out() -> None:
    response = redirect(
        ("Contact", "<sip:a@x>;q=1.5, <sip:b@x>;q=abc, <sip:c@x>;q=0.3"),
        ("Contact", "not a uri <"),
        ("Contact", "*"),
    )
    assert users(response) == ["c"]


def test_contacts_are_read_up_to_the_limit() -> None:
    many = ", ".join(f"<sip:{n}@x>" for n in range(MAX_REDIRECT_CONTACTS * 3))
    response = redirect(*[("Contact", many)] * 3)
    assert len(redirect_contacts_untrusted(response)) == MAX_REDIRECT_CONTACTS


@pytest.mark.parametrize(
    ("uri", "user"),
    [
        ("sip:%2B4917012345@evil.example", "+4917012345"),  # decoded
        ("sip:+4930123;user=phone@x", "+4930123"),
        ("sip:+4930123;isub=1@x", "+4930123"),  # user parameters are not the number
        ("tel:+4930123", "+4930123"),
        ("sip:evil.example", None),  # no user part: nothing to route
        ("sip:%0D%0Ax@x", None),  # CR LF never reaches routing or a log line
        (f"sip:{'1' * 65}@x", None),  # longer than any number or account name
    ],
)
def test_the_routed_user_part(uri: str, user: str | None) -> None:
    assert uri_user(parse_uri_untrusted(uri)) == user


@pytest.mark.parametrize(
    ("fields", "contact", "reason"),
    [
        ((), "sip:x@y", "unconditional"),
        ((("Diversion", "<sip:alice@gw>;reason=user-busy"),), "sip:x@y", "user-busy"),
        ((("Diversion", "<sip:alice@gw>;reason=bogus"),), "sip:x@y", "unconditional"),
        ((("Reason", 'SIP;cause=486;text="Busy"'),), "sip:x@y", "user-busy"),
        ((("Reason", "SIP ;cause=408"),), "sip:x@y", "no-answer"),
        ((("Reason", "Q.850;cause=17"),), "sip:x@y", "unconditional"),
        ((), "sip:x@y;cause=408", "no-answer"),  # RFC 4458
    ],
)
def test_the_reason_a_phone_gives(
    fields: tuple[tuple[str, str], ...], contact: str, reason: str
) -> None:
    assert redirect_reason(redirect(*fields), parse_uri_untrusted(contact)) == reason


ALICE = ("sip:+4930123456@gw.example", Diverted("alice", "unconditional", 302, account=True))
BOB = ("sip:+4930999@gw.example", Diverted("bob", "user-busy", 302, account=True))


def test_diversion_newest_first_with_counters() -> None:
    assert diversion_values([ALICE, BOB]) == [
        "<sip:+4930999@gw.example>;reason=user-busy;counter=2",
        "<sip:+4930123456@gw.example>;reason=unconditional;counter=1",
    ]


def test_diversion_sent_is_bounded() -> None:
    assert len(diversion_values([ALICE] * (MAX_DIVERSIONS_SENT + 4))) == MAX_DIVERSIONS_SENT


def test_history_info_indexes_causes_and_mp() -> None:
    assert history_info_values([ALICE, BOB], "sip:+4917012345@carrier.example") == [
        "<sip:+4930123456@gw.example?Reason=SIP%3Bcause%3D302>;index=1",
        "<sip:+4930999@gw.example;cause=302?Reason=SIP%3Bcause%3D302>;index=1.1;mp=1",
        "<sip:+4917012345@carrier.example;cause=486>;index=1.1.1;mp=1.1",
    ]


def test_a_carried_diversion_is_its_top_entry() -> None:
    headers = Headers.of(
        [
            ("Diversion", "<sip:+4930111@c.example>;reason=no-answer;counter=2, <sip:+49302@c>"),
            ("Diversion", "<sip:+4930333@c.example>"),
        ]
    )
    assert carried_diversion_untrusted(headers) == Diverted("+4930111", "no-answer")


def test_a_carried_diversion_too_long_is_ignored() -> None:
    long = "<sip:+4930111@c.example>;reason=no-answer;x=" + "a" * MAX_DIVERSION_LENGTH
    assert carried_diversion_untrusted(Headers.of([("Diversion", long)])) is None


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        '<sip:+4930111@c>;reason="unterminated',
        "<sip:c.example>;reason=no-answer",  # no user part
    ],
)
def test_a_carried_diversion_that_does_not_parse_is_ignored(value: str) -> None:
    assert carried_diversion_untrusted(Headers.of([("Diversion", value)])) is None


def test_history_info_gives_the_entry_the_last_was_retargeted_from() -> None:
    headers = Headers.of(
        [
            (
                "History-Info",
                "<sip:+4930111@c.example>;index=1, <sip:+4930222@c.example>;index=1.1;rc=1, "
                "<sip:+4930123456@gw.example;cause=486>;index=1.2;mp=1",
            )
        ]
    )
    assert carried_diversion_untrusted(headers) == Diverted("+4930111", "user-busy")


def test_history_info_of_one_entry_is_no_diversion() -> None:
    headers = Headers.of([("History-Info", "<sip:+4930111@c.example>;index=1")])
    assert carried_diversion_untrusted(headers) is None


def test_history_info_is_read_bounded() -> None:
    entry = "<sip:+4930111@c.example>;index=1"
    assert carried_diversion_untrusted(Headers.of([("History-Info", entry * 40)])) is None


def test_a_redirection_not_followed_is_480_not_503() -> None:
    moved = Response(302, "Moved Temporarily")
    assert best_failure([moved])[0] == 480
    assert best_failure([moved, Response(503, "Service Unavailable")])[0] == 503
    assert best_failure([moved, Response(486, "Busy Here")])[0] == 486


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"sip": {"max_redirects": -1}}, "[sip] max_redirects"),
        ({"sip": {"max_redirects": 99}}, "[sip] max_redirects"),
        ({"sip": {"foreign_redirects": "send"}}, "[sip] foreign_redirects"),
        (
            {"trunks": [{"name": "t", "address": "udp:192.0.2.1:5060", "diversion": "rfc"}]},
            "[trunks.t] diversion",
        ),
        (
            {"trunks": [{"name": "t", "address": "udp:192.0.2.1:5060", "follow_redirects": 1}]},
            "[trunks.t] follow_redirects",
        ),
    ],
)
def test_bad_redirect_settings_name_their_key(data: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError, match=rf"^f\.toml: {re.escape(where)}: "):
        from_mapping(data, file="f.toml")
