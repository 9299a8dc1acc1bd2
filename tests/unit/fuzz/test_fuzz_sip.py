"""Mutation fuzzing of the SIP parsers: whole messages (and what the gateway reads from an
accepted one), stream framing, and the header values parsed later (Event, Subscription-State,
Authorization, WWW-Authenticate, Geolocation, Session-Expires, Refer-To, RAck, Identity).

Seeds are the RFC 4475 torture messages and a few ordinary call messages; mutations come from
tests/unit/fuzz/mutator.py. ``VOIPGW_FUZZ_EXAMPLES`` raises the count (docs/testing.md).
"""

from __future__ import annotations

import base64
import contextlib

from gateway.core.auth.client import parse_challenge_untrusted
from gateway.core.auth.credentials import MalformedCredentials, parse_credentials_untrusted
from gateway.core.calls.location import LocationError, parse_geolocation_untrusted
from gateway.core.calls.ringing import parse_rack, parse_rseq
from gateway.core.sdp.body import read_body
from gateway.core.sdp.errors import SdpError
from gateway.core.sip.errors import RemoteSipError, SipParseError
from gateway.core.sip.events import (
    parse_event_untrusted,
    parse_expires_untrusted,
    parse_subscription_state_untrusted,
)
from gateway.core.sip.framing import KeepAlivePing, StreamFramer
from gateway.core.sip.message import Request, Response
from gateway.core.sip.parser import parse_message_untrusted, salvage_request_headers
from gateway.core.sip.refer import parse_refer
from gateway.core.sip.session_timer import parse_min_se, parse_session_expires
from gateway.plugins.stir_shaken.passport import PassportError, parse_identity_untrusted
from tests.unit.fuzz.mutator import fuzz
from tests.unit.sip.rfc4475_messages import MESSAGES

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 20000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n"
)
IDENTITY = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jZXJ0"
    "LmV4YW1wbGUub3JnL3Bhc3Nwb3J0LmNlciJ9.eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0biI6WyIxMjE1NTU1MTIx"
    "MyJdfSwiaWF0IjoxNDQzMjA4MzQ1LCJvcmlnIjp7InRuIjoiMTIxNTU1NTEyMTIifSwib3JpZ2lkIjoiMTIzIn0."
    + "A" * 86
    + ";info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken"
)
INVITE = (
    b"INVITE sip:+4930123@gw.example.com;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bK1;received=192.0.2.1;ttl=16\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=1928301774\r\n'
    b"To: <sip:+4930123@gw.example.com;user=phone>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b'Contact: <sip:alice@192.0.2.10:5060;transport=udp>;expires=3600;+sip.instance="<urn:x>"\r\n'
    b"Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"Record-Route: <sip:p1.example.com;lr>\r\n"
    b"Supported: timer, 100rel, replaces\r\nRequire: timer\r\n"
    b"Session-Expires: 1800;refresher=uac\r\nMin-SE: 90\r\n"
    b'Authorization: Digest username="alice", realm="example.com", nonce="dcd98b", '
    b'uri="sip:gw.example.com", response="6629fae49393a05397450978507c4ef1", algorithm=MD5, '
    b'qop=auth, nc=00000001, cnonce="0a4f113b", opaque="5ccc069c"\r\n'
    b"Geolocation: <cid:target123@example.com>, <https://lis.example.com/loc>;inserted-by=x\r\n"
    b"Geolocation-Routing: yes\r\n"
    b"Identity: " + IDENTITY.encode() + b"\r\n"
    b"P-Asserted-Identity: <sip:+4930999@example.com>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)
MULTIPART_BODY = (
    b"--b1\r\nContent-Type: application/sdp\r\n\r\n" + SDP + b"\r\n"
    b"--b1\r\nContent-Type: application/pidf+xml\r\nContent-ID: <target123@example.com>\r\n\r\n"
    b"<presence/>\r\n--b1--\r\n"
)
INVITE_MULTIPART = (
    INVITE.split(b"Content-Type:")[0]
    + b'Content-Type: multipart/mixed;boundary="b1"\r\n'
    + b"Content-Length: "
    + str(len(MULTIPART_BODY)).encode()
    + b"\r\n\r\n"
    + MULTIPART_BODY
)
LONE_PIDF = b"<?xml version='1.0'?><presence entity='pres:a@example.com'/>\r\n"
UPDATE_LONE_PIDF = (  # a location-only UPDATE: its Content-ID names the body (RFC 8262 §3)
    INVITE.split(b"Content-Type:")[0].replace(b"INVITE", b"UPDATE")
    + b"Content-ID: <target123@example.com>\r\n"
    + b"Content-Type: application/pidf+xml\r\n"
    + b"Content-Length: "
    + str(len(LONE_PIDF)).encode()
    + b"\r\n\r\n"
    + LONE_PIDF
)
REQUESTS = (
    b"SUBSCRIBE sip:bob@gw.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bKsub1\r\nMax-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=77\r\nTo: <sip:bob@gw.example.com>\r\n"
    b"Call-ID: sub1@192.0.2.10\r\nCSeq: 1 SUBSCRIBE\r\nEvent: dialog;id=5\r\nExpires: 3600\r\n"
    b"Accept: application/dialog-info+xml\r\nContact: <sip:alice@192.0.2.10>\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"NOTIFY sip:alice@192.0.2.10 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKn1\r\nMax-Forwards: 70\r\n"
    b"From: <sip:bob@gw.example.com>;tag=88\r\nTo: <sip:alice@example.com>;tag=77\r\n"
    b"Call-ID: sub1@192.0.2.10\r\nCSeq: 2 NOTIFY\r\nEvent: refer\r\n"
    b"Subscription-State: active;expires=60\r\nContent-Type: message/sipfrag\r\n"
    b"Content-Length: 22\r\n\r\nSIP/2.0 200 OK\r\n\r\n\r\n\r\n",
    b"REFER sip:gw.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKr1\r\nMax-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\nTo: <sip:gw.example.com>;tag=2\r\n"
    b"Call-ID: r1@192.0.2.10\r\nCSeq: 3 REFER\r\n"
    b"Refer-To: <sip:carol@example.com?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"PRACK sip:gw.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKp1\r\nMax-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\nTo: <sip:gw.example.com>;tag=2\r\n"
    b"Call-ID: r1@192.0.2.10\r\nCSeq: 4 PRACK\r\nRAck: 1 314159 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n",
)
RESPONSES = (
    b"SIP/2.0 183 Session Progress\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.1\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=1928301774\r\n'
    b"To: <sip:+4930123@gw.example.com>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\nCSeq: 314159 INVITE\r\n"
    b"Contact: <sip:trunk@203.0.113.5>\r\nRequire: 100rel\r\nRSeq: 1\r\n"
    b"Content-Type: application/sdp\r\nContent-Length: "
    + str(len(SDP)).encode()
    + b"\r\n\r\n"
    + SDP,
    b"SIP/2.0 401 Unauthorized\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKreg\r\n"
    b"From: <sip:gw@trunk.example.com>;tag=9\r\nTo: <sip:gw@trunk.example.com>;tag=3\r\n"
    b"Call-ID: reg1@192.0.2.10\r\nCSeq: 1 REGISTER\r\n"
    b'WWW-Authenticate: Digest realm="trunk", nonce="abc123", qop="auth,auth-int", '
    b'algorithm=SHA-256, opaque="xyz", stale=FALSE\r\n'
    b"Content-Length: 0\r\n\r\n",
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKreg2\r\n"
    b"From: <sip:gw@trunk.example.com>;tag=9\r\nTo: <sip:gw@trunk.example.com>;tag=3\r\n"
    b"Call-ID: reg1@192.0.2.10\r\nCSeq: 2 REGISTER\r\n"
    b"Contact: <sip:gw@192.0.2.10>;expires=120, <sip:other@192.0.2.99>;expires=60\r\n"
    b"Expires: 3600\r\nContent-Length: 0\r\n\r\n",
)
SEEDS = (
    *(raw for _, raw in MESSAGES.values()),
    INVITE,
    INVITE_MULTIPART,
    UPDATE_LONE_PIDF,
    *REQUESTS,
    *RESPONSES,
)


def _read(message: Request | Response) -> None:
    """What the gateway reads from an accepted message, each with the errors it declares."""
    read: list[object] = [message.call_id, message.cseq, message.from_, message.to]
    if isinstance(message, Request):
        read.append(message.max_forwards)
    for via in message.vias:
        read += [via.rport, via.maddr, via.branch, via.received, via.sent_by]
    read += [message.contacts, message.routes, message.record_routes, message.content_type]
    headers = message.headers
    for name in ("Supported", "Require", "Proxy-Require", "Allow"):
        headers.option_tags(name)
    with contextlib.suppress(SdpError):
        read_body(message.content_type, message.body, message.headers)
    for parse, name in (
        (parse_event_untrusted, "Event"),
        (parse_subscription_state_untrusted, "Subscription-State"),
        (parse_expires_untrusted, "Expires"),
    ):
        with contextlib.suppress(RemoteSipError):
            parse(headers.get(name))
    for name in ("Authorization", "Proxy-Authorization"):
        for value in headers.get_all(name):
            with contextlib.suppress(MalformedCredentials):
                parse_credentials_untrusted(value)
    for name in ("WWW-Authenticate", "Proxy-Authenticate"):
        for value in headers.get_all(name):
            parse_challenge_untrusted(value)
    with contextlib.suppress(LocationError):
        parse_geolocation_untrusted(headers.get_all("Geolocation"))
    for value, parse_timer in (
        (headers.get("Session-Expires"), parse_session_expires),
        (headers.get("Min-SE"), parse_min_se),
    ):
        if value is not None:
            with contextlib.suppress(RemoteSipError):
                parse_timer(value)
    if "Refer-To" in headers:
        with contextlib.suppress(RemoteSipError):
            parse_refer(headers)
    parse_rack(headers.get("RAck"))
    parse_rseq(headers.get("RSeq"))
    for value in headers.get_all("Identity"):
        with contextlib.suppress(PassportError):
            parse_identity_untrusted(value)


def test_whole_messages_and_what_is_read_from_them() -> None:
    def parse(data: bytes) -> None:
        try:
            message = parse_message_untrusted(data)
        except SipParseError as err:
            # A request's error names a status and a reason (the reason goes on the status line).
            assert err.status is None or 400 <= err.status <= 599, err
            assert err.reason and "\r" not in err.reason and "\n" not in err.reason, err
            if err.status is not None:
                salvage_request_headers(data)
            raise
        _read(message)

    fuzz("sip message", parse, SEEDS, (SipParseError,))


def test_stream_framing() -> None:
    def frames(data: bytes) -> None:
        framer = StreamFramer(max_message_size=65535)
        # Two messages back to back, fed in uneven pieces, as a TCP peer's segments arrive.
        stream = b"\r\n\r\n" + data + data
        for start in range(0, len(stream), 1400):
            framer.receive_data(stream[start : start + 1400])
            while (frame := framer.next_frame()) is not None:
                if not isinstance(frame, KeepAlivePing):
                    with contextlib.suppress(SipParseError):
                        parse_message_untrusted(frame)

    fuzz("sip stream", frames, SEEDS, (SipParseError,))


def test_identity_claims() -> None:
    # The PASSporT's JSON inside base64url, mutated before encoding (as its signer may send).
    header, claims, _ = IDENTITY.split(".", 2)
    signature = "A" * 86

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def payload(data: bytes) -> None:
        parse_identity_untrusted(f"{header}.{b64(data)}.{signature}")

    def jose(data: bytes) -> None:
        parse_identity_untrusted(f"{b64(data)}.{claims}.{signature}")

    fuzz("identity payload", payload, (base64.urlsafe_b64decode(claims + "=="),), (PassportError,))
    fuzz("identity header", jose, (base64.urlsafe_b64decode(header + "=="),), (PassportError,))
    fuzz(
        "identity",
        lambda data: parse_identity_untrusted(data.decode("utf-8", "replace")),
        (IDENTITY.encode(),),
        (PassportError,),
    )
