"""redact_password: the password of a sip:/sips: URI's userinfo (RFC 3261 §19.1.1), or of a
URL's (RFC 3986 §3.2.1), never shown in logs, errors, ``voipgw trunks`` or metric labels;
anything else left exactly as it was."""

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
        # A password its grammar refuses (the URI does not parse: the one a log line quotes).
        ("sip:carrier:pa/ss@host", "sip:carrier:***@host"),
        ("<sip:carrier:pa#ss@host;lr>", "<sip:carrier:***@host;lr>"),
        ("sip:carrier:p@ss@host:5060", "sip:carrier:***@host:5060"),
        ("sip:1234:5678@host", "sip:1234:***@host"),
        # URLs (RFC 3986 §3.2.1 userinfo), as plugin tables and certificates carry them.
        ("https://admf:s3cret@li.example/x1", "https://admf:***@li.example/x1"),
        ("'http://u:p@ss@ocsp.example:80/'", "'http://u:***@ocsp.example:80/'"),
        ("postgresql://voipgw:pw@db/voipgw", "postgresql://voipgw:***@db/voipgw"),
        ("HTTP://u:@h/a@b", "HTTP://u:***@h/a@b"),
        # A password pasted unencoded (RFC 3986 wants "/", "?" and "#" escaped in userinfo):
        # base64's "/", a generated "#" or "?". Such a URL is the malformed one an error
        # message quotes, so its password is hidden up to its "@" all the same.
        ("no https://u:a/b@c here", "no https://u:***@c here"),
        ("'https://admf:ab/cd+ef==@li.example/x1'", "'https://admf:***@li.example/x1'"),
        ("http://crl:pa#ss@crl.example/ca.crl", "http://crl:***@crl.example/ca.crl"),
        ("https://u:p?w@h/x", "https://u:***@h/x"),
        ("https://u:1234@h/x", "https://u:***@h/x"),
        # Nothing to hide: unchanged.
        ("https://admf@li.example/x1?to=a@b", "https://admf@li.example/x1?to=a@b"),
        ("https://li.example:8443/x1#a:b@c", "https://li.example:8443/x1#a:b@c"),
        ("https://li.example:8443/x1?to=a:b@c", "https://li.example:8443/x1?to=a:b@c"),
        ("https://li.example:8443?to=a@b", "https://li.example:8443?to=a@b"),
        ("ws://[::1]:8080/a@b", "ws://[::1]:8080/a@b"),
        ("sip:srs@rec.example:5060", "sip:srs@rec.example:5060"),
        ("sip:rec.example:5060;transport=tcp", "sip:rec.example:5060;transport=tcp"),
        ("sip:rec.example:5060;maddr=x@y", "sip:rec.example:5060;maddr=x@y"),
        ("<sip:rec.example:5060>;tag=a@b", "<sip:rec.example:5060>;tag=a@b"),
        ("sip:rec.example:5060, sip:bob@x", "sip:rec.example:5060, sip:bob@x"),
        # A peer's line of many URIs and no password: each scan stops at the next URI.
        ("sip:a:" * 2000 + " x@y", "sip:a:" * 2000 + " x@y"),
        ("http://a:" * 2000 + " x@y", "http://a:" * 2000 + " x@y"),
        ("carrier", "carrier"),
        ("", ""),
    ],
)
def test_the_password_and_only_it_is_hidden(text: str, shown: str) -> None:
    assert redact_password(text) == shown
