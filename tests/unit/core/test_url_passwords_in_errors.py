"""A URL with credentials (``scheme://user:password@host``) in a plugin's table or a peer's
certificate never appears whole in an error message or a log line: the configuration errors
that quote a URL show it with the password as ``***`` (gateway.core.sip.uri.redact_password)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.plugins.stir_shaken import StirShakenConfig
from gateway.plugins.taps import siprec
from gateway.plugins.taps.intercept.reports import Endpoint
from gateway.plugins.transports.ocsp import parse_http_url

PASSWORD = "s3cret-pw"


@pytest.mark.parametrize(
    ("check", "url", "says"),
    [
        # [plugins.tls] crl_urls, an OCSP or CRL URL of a certificate: http only, no userinfo.
        (parse_http_url, f"http://crl:{PASSWORD}@crl.example/ca.crl", "expected no user name"),
        (parse_http_url, f"https://crl:{PASSWORD}@crl.example/ca.crl", "expected an http://"),
        (parse_http_url, f"http://crl:{PASSWORD}@\x00/", "not a usable URL"),
        # [plugins.intercept] report_url.
        (Endpoint.parse, f"https://admf:{PASSWORD}@li.example/x1", "no user, password"),
        (Endpoint.parse, f"http://admf:{PASSWORD}@li.example/x1", "expected https://"),
        # A password pasted with a "/" (base64) or "#" in it: the URL does not parse, and the
        # message quoting it hides the password all the same.
        (Endpoint.parse, f"https://admf:{PASSWORD}/x@li.example/x1", "expected https://"),
        (parse_http_url, f"http://crl:{PASSWORD}#1@crl.example/ca.crl", "expected no user"),
        # [plugins.siprec] a recorder named by a URL that is not SIP.
        (lambda uri: siprec._check_srs("srs", uri), f"http://srs:{PASSWORD}@rec/", "sip: or"),
        (lambda uri: siprec._check_tls("srs", uri), f"sip:srs:{PASSWORD}@rec", "sips: URI"),
        # [plugins.stir_shaken] certificate_url when signing.
        (
            lambda url: StirShakenConfig(certificate_url=url, sign_trunks=("carrier",)),
            f"http://cert:{PASSWORD}@certs.example/sp.pem",
            "needs the https URL",
        ),
    ],
)
def test_the_password_is_hidden(check: Callable[[str], object], url: str, says: str) -> None:
    with pytest.raises(ValueError) as refused:
        check(url)
    message = str(refused.value)
    assert says in message
    assert PASSWORD not in message and ":***@" in message
