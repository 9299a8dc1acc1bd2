"""redact_password: the password of a sip:/sips: URI's userinfo (RFC 3261 §19.1.1) never shown
in logs, ``voipgw trunks`` or metric labels; anything else left exactly as it was."""

from __future__ import annotations

import pytest

from gateway.core.sip.uri import redact_password


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("sip:srs:s3cret@rec.example;transport=tls", "sip:srs:***@rec.example;transport=tls"),
        ("SIPS:srs:p%40ss&=+$,@rec.example:5061", "SIPS:srs:***@rec.example:5061"),
        ("sip:alice;x=1:pw@h", "sip:alice;x=1:***@h"),  # user-unreserved ";" in the user
        (
            "session to <sip:a:b@x> failed; next sip:c:d@y",
            "session to <sip:a:***@x> failed; next sip:c:***@y",
        ),
        # Nothing to hide: unchanged.
        ("sip:srs@rec.example:5060", "sip:srs@rec.example:5060"),
        ("sip:rec.example:5060;transport=tcp", "sip:rec.example:5060;transport=tcp"),
        ("sip:rec.example:5060;maddr=x@y", "sip:rec.example:5060;maddr=x@y"),
        ("carrier", "carrier"),
        ("", ""),
    ],
)
def test_the_password_and_only_it_is_hidden(text: str, shown: str) -> None:
    assert redact_password(text) == shown
