"""Mutation fuzzing of header values on their own (a whole-message mutation rarely reaches deep
into one value): the SIP grammar (URI, Via, name-addr, CSeq, lists), Event and
Subscription-State, digest Authorization and WWW-Authenticate, Geolocation, Session-Expires,
Refer-To/Replaces, HTTP Basic credentials of the metrics exporter, X1 documents from an
ADMF (lawful intercept provisioning, XML), and PIDF documents a phone PUBLISHes (presence).
``VOIPGW_FUZZ_EXAMPLES`` raises the count (docs/testing.md).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.core.auth.client import parse_challenge_untrusted
from gateway.core.auth.credentials import MalformedCredentials, parse_credentials_untrusted
from gateway.core.calls.location import LocationError, parse_geolocation_untrusted
from gateway.core.sip import grammar
from gateway.core.sip.errors import RemoteSipError, SipParseError
from gateway.core.sip.events import (
    parse_event_untrusted,
    parse_expires_untrusted,
    parse_subscription_state_untrusted,
)
from gateway.core.sip.message import Headers
from gateway.core.sip.presence import parse_pidf_untrusted
from gateway.core.sip.refer import parse_refer, parse_replaces
from gateway.core.sip.session_timer import parse_min_se, parse_session_expires
from gateway.plugins.metrics.auth import parse_basic_credentials_untrusted
from tests.unit.fuzz.mutator import fuzz
from tests.unit.taps.x1_messages import T1, T2, destination, document, handler, message, task

VALUES: dict[str, tuple[Callable[[str], object], tuple[type[BaseException], ...], list[str]]] = {
    "uri": (
        grammar.parse_uri_untrusted,
        (SipParseError,),
        [
            "sip:alice:secret@[2001:db8::10]:5070;transport=tcp;lr?Subject=hi&Priority=urgent",
            "sips:%61lice@atlanta.example.com;maddr=239.255.255.1;ttl=15",
            "tel:+1-201-555-0123;phone-context=example.com;isub=12",
            "urn:service:sos",
        ],
    ),
    "via": (
        grammar.parse_via_untrusted,
        (SipParseError,),
        [
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK77;rport=5061;received=192.0.2.9;ttl=16",
            "SIP / 2.0 / TLS [2001:db8::9]:5061 ;maddr=host.example.com;branch=z9hG4bKx;alias",
        ],
    ),
    "name-addr": (
        grammar.parse_name_addr_untrusted,
        (SipParseError,),
        [
            '"Alice \\"A\\" Liddell" <sip:alice@example.com;lr>;tag=1928;expires=60;q=0.7',
            "sip:+1555@gw.example.com;user=phone;tag=x",
            "*",
            '<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>;+sip.instance="<urn:x>"',
        ],
    ),
    "cseq": (grammar.parse_cseq_untrusted, (SipParseError,), ["4711 INVITE", "0 ACK"]),
    "list": (
        grammar.split_list_untrusted,
        (SipParseError,),
        ['<sip:a@b;x="1,2">, "Bob, Jr" <sip:bob@c>, sip:c@d', "timer , 100rel,replaces"],
    ),
    "event": (
        parse_event_untrusted,
        (RemoteSipError,),
        ["dialog;id=5;call-id=abc@h", "refer;id=1234", "message-summary", "presence.winfo"],
    ),
    "subscription-state": (
        parse_subscription_state_untrusted,
        (RemoteSipError,),
        ["active;expires=600", "terminated;reason=timeout;retry-after=30", "pending"],
    ),
    "expires": (parse_expires_untrusted, (RemoteSipError,), ["3600", "0"]),
    "authorization": (
        parse_credentials_untrusted,
        (MalformedCredentials,),
        [
            'Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c0'
            '93", uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b", '
            'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40'
            'e41", algorithm=SHA-256-sess, userhash=false',
        ],
    ),
    "challenge": (
        parse_challenge_untrusted,
        (),
        [
            'Digest realm="atlanta.com", domain="sip:boxesbybob.com", qop="auth,auth-int", '
            'nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=FALSE, algorithm=MD5'
        ],
    ),
    "geolocation": (
        lambda value: parse_geolocation_untrusted(value.split("\r\n")),
        (LocationError,),
        [
            "<cid:target123@atlanta.example.com>, <https://lis.example.com/loc/1>;inserted-by=x"
            "\r\n<sips:3sdefrhy2jj7@lis.atlanta.example.com;transport=tls>"
        ],
    ),
    "session-expires": (
        parse_session_expires,
        (RemoteSipError,),
        ["1800;refresher=uac", "90;refresher=uas;x=y", "4294967296"],
    ),
    "min-se": (parse_min_se, (RemoteSipError,), ["90;x=1"]),
    "refer-to": (
        lambda value: parse_refer(Headers((("Refer-To", value),))),
        (RemoteSipError,),
        [
            "<sip:carol@example.com?Replaces=12345%40192.0.2.1%3Bto-tag%3D12345%3Bfrom-tag%3D5"
            "FFE-3994&Require=replaces;method=INVITE>",
            "<tel:+15550100>",
        ],
    ),
    "replaces": (parse_replaces, (RemoteSipError,), ["425928@bobster;to-tag=7743;from-tag=6472"]),
}


@pytest.mark.parametrize("name", list(VALUES))
def test_header_values(name: str) -> None:
    parse, errors, seeds = VALUES[name]

    def run(data: bytes) -> None:
        # As the message parser hands values on: decoded UTF-8, no CR or LF inside a value.
        text = data.decode("utf-8", "replace")
        if name != "geolocation":
            text = text.replace("\r", " ").replace("\n", " ")
        parse(text)

    fuzz(f"header {name}", run, [seed.encode() for seed in seeds], errors)


def test_metrics_basic_credentials() -> None:
    seeds = (b"Basic YWxpY2U6b3BlbiBzZXNhbWU=", b"basic  dXNlcjpwYTpzczp3b3Jk  ")
    fuzz("basic credentials", parse_basic_credentials_untrusted, seeds, ())


def test_x1_documents() -> None:
    # handle() declares no error: every document gets an X1 answer (errors as X1 responses).
    seeds = (
        document(message("CreateDestinationRequest", destination())),
        document(
            message("CreateDestinationRequest", destination()),
            message("ActivateTaskRequest", task(), txn=T2),
            message("GetAllDetailsRequest", txn=T1),
        ),
        document(message("PingRequest"), message("DeactivateAllTasksRequest", txn=T2)),
        document(
            message("ListAllDetailsRequest"),
            message("GetAllTaskDetailsRequest", txn=T2),
            message("GetAllDestinationDetailsRequest"),
        ),
    )
    fuzz("x1", lambda data: handler().handle(data), seeds, ())


def test_published_presence_documents() -> None:
    seeds = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        b'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@example.com">'
        b'<tuple id="t1"><status><basic>open</basic></status><contact>sip:alice@example.com'
        b"</contact><note>at my desk</note></tuple><rpid:activities><rpid:away/>"
        b"</rpid:activities></presence>",
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:alice@example.com">'
        b'<tuple id="a"><status><basic>closed</basic></status></tuple>'
        b'<tuple id="b"><status/></tuple></presence>',
    )
    fuzz(
        "pidf",
        lambda data: parse_pidf_untrusted(data, account="alice"),
        seeds,
        (RemoteSipError,),
    )
