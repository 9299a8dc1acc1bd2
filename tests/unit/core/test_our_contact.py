"""Our Contact per transport, and the sips: one a secure dialog gets (RFC 3261 §8.1.1.8,
§12.1.1; RFC 5630 §3.1.3; RFC 7118 §5.2.2 and §9.2 for WSS)."""

from __future__ import annotations

import types

import pytest

from gateway.core.endpoint import SipEndpoint
from gateway.core.interfaces import Listener
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.message import Headers, Request
from gateway.core.transport.flows import Flow, FlowKey

LISTENERS = [
    Listener("udp", ("192.0.2.10", 5060)),
    Listener("tls", ("192.0.2.10", 5061)),
    Listener("wss", ("192.0.2.10", 8443)),
]


def endpoint() -> SipEndpoint:
    """A SipEndpoint with only what our_contact reads: the gateway's listeners."""
    ep = SipEndpoint.__new__(SipEndpoint)
    ep.gateway = types.SimpleNamespace(listeners=LISTENERS)  # type: ignore[assignment]
    return ep


@pytest.mark.parametrize(
    ("transport", "sips", "contact"),
    [
        ("udp", False, "<sip:voipgw@192.0.2.10:5060>"),
        ("tls", False, "<sip:voipgw@192.0.2.10:5061;transport=tls>"),
        ("wss", False, "<sip:voipgw@192.0.2.10:8443;transport=wss>"),
        # sips: means TLS over TCP: no transport=tls (RFC 5630 §3.1.3 deprecates it) ...
        ("tls", True, "<sips:voipgw@192.0.2.10:5061>"),
        # ... but a secure WebSocket is only told by its parameter (RFC 7118 §5.2.2).
        ("wss", True, "<sips:voipgw@192.0.2.10:8443;transport=wss>"),
    ],
)
def test_our_contact(transport: str, sips: bool, contact: str) -> None:
    assert str(endpoint().our_contact(transport, sips=sips)) == contact


def _request(uri: str) -> Request:
    fields = [
        ("Via", "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK-1"),
        ("From", "<sip:bob@192.0.2.10>;tag=1"),
        ("To", "<sip:alice@192.0.2.10>"),
        ("Call-ID", "c1"),
        ("CSeq", "1 SUBSCRIBE"),
        ("Contact", "<sip:bob@df7jal23ls0d.invalid;transport=ws>"),
    ]
    return Request("SUBSCRIBE", parse_uri_untrusted(uri), Headers.of(fields))


async def _send(data: bytes) -> None:
    return None


@pytest.mark.parametrize(
    ("transport", "secure", "uri", "contact"),
    [
        ("wss", True, "sips:alice@192.0.2.10", "<sips:voipgw@192.0.2.10:8443;transport=wss>"),
        ("wss", True, "sip:alice@192.0.2.10", "<sip:voipgw@192.0.2.10:8443;transport=wss>"),
        ("tls", True, "sips:alice@192.0.2.10", "<sips:voipgw@192.0.2.10:5061>"),
        # A browser calling sip: over WSS (JsSIP, SIP.js) keeps the Contact it always had.
        ("udp", False, "sip:alice@192.0.2.10", "<sip:voipgw@192.0.2.10:5060>"),
    ],
)
def test_contact_answering(transport: str, secure: bool, uri: str, contact: str) -> None:
    flow = Flow(
        FlowKey(transport, LISTENERS[0].address, ("192.0.2.99", 40000)),
        _send,
        reliable=transport != "udp",
        secure=secure,
    )
    assert str(endpoint().contact_answering(_request(uri), flow)) == contact
