"""Which DNS look-up a session target's SIP URI asks for (RFC 3263 §4.1, §4.2), as a trunk
address written the same way would: a SIPREC recorder named by DNS."""

from __future__ import annotations

import pytest

from gateway.core.calls.trunk_dns import named_uri_address
from gateway.core.config import TrunkAddress


@pytest.mark.parametrize(
    ("uri", "address"),
    [
        # No port, no transport: NAPTR chooses (§4.1).
        ("sip:srs@Recorder.Example", "recorder.example"),
        # A transport, no port: that transport's SRV records (§4.2).
        ("sip:srs@recorder.example;transport=tcp", "tcp:recorder.example"),
        # sips: TLS only (§4.1), also with transport=tcp (RFC 5630 §3.1.3).
        ("sips:srs@recorder.example", "tls:recorder.example"),
        ("sips:srs@recorder.example;transport=tcp", "tls:recorder.example"),
        # A port: the A/AAAA records only, over UDP unless the URI says otherwise (§4.2).
        ("sip:srs@recorder.example:5080", "udp:recorder.example:5080"),
        ("sip:srs@recorder.example:5081;transport=tls", "tls:recorder.example:5081"),
    ],
)
def test_a_named_uri_asks_for_what_its_form_says(uri: str, address: str) -> None:
    assert named_uri_address(uri) == TrunkAddress.parse(address)


@pytest.mark.parametrize(
    "uri",
    [
        "sip:srs@192.0.2.50:5060",  # an address: nothing to resolve
        "sip:srs@[2001:db8::50]:5060",
        "sip:srs@recorder.example;transport=ws",  # no RFC 3263 look-up of ours for WebSocket
        "tel:+15550100",
        "not a uri",
    ],
)
def test_addresses_and_other_uris_are_not_resolved(uri: str) -> None:
    assert named_uri_address(uri) is None
