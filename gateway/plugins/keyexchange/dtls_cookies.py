"""The stateless DTLS cookie exchange (RFC 6347 §4.2.1) the ``dtls`` engine asks of sources
other than the peer's SDP address before it starts a handshake for them.

A DTLS server that answers every ClientHello with its certificate flight spends a signature on
each and sends ~720 octets (resent) to an address nobody proved it can receive at: a forged
ClientHello is a denial of service and a reflection. RFC 6347 §4.2.1's answer: reply to a
ClientHello without a valid cookie with a HelloVerifyRequest carrying a cookie the server can
check later without keeping state, ``HMAC(secret, client address)``, and start a handshake only
for a ClientHello that returns it (its sender received our datagram at that address).

Here: ``cookie = HMAC-SHA256(secret, port context | host)`` (32 octets), the port context
naming our media port's handshake (the stream's a=tls-id and whether it is the RTP or the RTCP
port: :meth:`CookieSecrets.cookie`), so that a cookie asked on one port starts nothing on
another; the client's host, not its port, as RFC 6347 §4.2.1's own example (``HMAC(Secret,
Client-IP, Client-Parameters)``), so that a phone whose NAT gave it another port between its
two ClientHellos is keyed at its new port (session 42: asked again, its third ClientHello was
message_seq 2, which OpenSSL cannot continue). That proves less: that its sender, or someone
sharing its public address (a carrier-grade NAT's other subscribers), receives at that host;
one who can also forge that host's address may then start handshakes as any of its ports, our
certificate flight going there, within each port's bucket and cap (docs/media_security.md,
"Cookies for other sources"; the certificate check still keys only the phone). The
secret per process (one
per :class:`CookieSecrets`), a new one for every :data:`COOKIE_SECRET_LIFETIME` seconds
(drawn at first use); a cookie made with the previous secret is accepted too, so a cookie
lives one to two lifetimes ("change the secret periodically ... accept
cookies from the previous secret", RFC 6347 §4.2.1). The HelloVerifyRequest is written here,
not by OpenSSL: a forged ClientHello costs a parse of its first 70-odd octets, an HMAC and a
60-octet answer, no OpenSSL object (docs/media_security.md, "Cookies for other sources").

Sans-IO: no clock, no randomness of its own (``now`` and ``random_bytes`` are passed in).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable
from typing import Any

import attrs

from gateway.core.ip import source_key

__all__ = [
    "COOKIE_LENGTH",
    "COOKIE_SECRET_LIFETIME",
    "HELLO_VERIFY_REQUEST_VERSION",
    "ClientHelloCookie",
    "CookieSecrets",
    "hello_verify_request",
    "is_later_client_hello_fragment_untrusted",
    "parse_client_hello_cookie_untrusted",
]

COOKIE_LENGTH = 32
"""Octets of our cookie: a whole HMAC-SHA256 (RFC 6347 §4.2.1 allows up to 255; DTLS 1.0
clients take up to 32). Our HelloVerifyRequest is then 60 octets in all."""
COOKIE_SECRET_LIFETIME = 60.0
"""Seconds a secret makes cookies before the next replaces it; cookies of the previous one are
still accepted, so a cookie is good for 60 to 120 s: far more than the round trip a client
takes to send its ClientHello again (at once, RFC 6347 §4.2.1)."""
HELLO_VERIFY_REQUEST_VERSION = 0xFEFF
"""DTLS 1.0 in our HelloVerifyRequest's record and server_version: RFC 6347 §4.2.1 says a DTLS
1.2 server SHOULD send 1.0 there whatever version it will negotiate (OpenSSL does too)."""

_RECORD_HEADER = 13  # RFC 6347 §4.1: type, version, epoch, sequence_number (48 bits), length
_HANDSHAKE_HEADER = 12  # RFC 6347 §4.2.2: msg_type, length, message_seq, fragment offset+length
_HANDSHAKE = 22  # RFC 5246 §6.2.1 ContentType handshake
_CLIENT_HELLO, _HELLO_VERIFY_REQUEST = 1, 3  # RFC 6347 §4.3.2 HandshakeType
_RANDOM = 32  # RFC 5246 §7.4.1.2
_MAX_SESSION_ID = 32


@attrs.frozen
class ClientHelloCookie:
    """What a HelloVerifyRequest answering a ClientHello needs from it, and its cookie."""

    record_sequence: bytes
    """The ClientHello record's 48-bit sequence_number: our HelloVerifyRequest's (RFC 6347
    §4.2.1, so that several HelloVerifyRequests never repeat a sequence number)."""
    message_seq: int
    """The ClientHello's handshake message_seq: 0 for a first one, 1 for one with a cookie."""
    cookie: bytes
    """Empty in a first ClientHello (RFC 6347 §4.2.1)."""


def parse_client_hello_cookie_untrusted(datagram: bytes) -> ClientHelloCookie | None:
    """The cookie of a datagram that begins with a ClientHello: a DTLS record of epoch 0
    (RFC 6347 §4.1) holding a ClientHello, whole or its first fragment (§4.2.2, §4.2.3: one
    longer than the path MTU), that reaches past the cookie (§4.2.1's layout: client_version,
    random, session_id, cookie, ...). None for anything else: a later fragment, whose first
    fragment carries the cookie, included. Records after the first are not read (the rest of
    a fragmented ClientHello); OpenSSL's DTLSv1_listen, which takes a verified one, reads the
    first record and its first fragment as this does. Reads only as far as the cookie; the
    rest is OpenSSL's to check."""
    if len(datagram) < _RECORD_HEADER + _HANDSHAKE_HEADER:
        return None
    if datagram[0] != _HANDSHAKE or datagram[1] != 0xFE or datagram[3:5] != b"\0\0":
        return None
    record_length = int.from_bytes(datagram[11:13], "big")
    if record_length > len(datagram) - _RECORD_HEADER:
        return None  # the first record, whole in the datagram
    message = datagram[_RECORD_HEADER : _RECORD_HEADER + record_length]
    if len(message) < _HANDSHAKE_HEADER:
        return None
    length = int.from_bytes(message[1:4], "big")
    fragment_length = int.from_bytes(message[9:12], "big")
    if (
        message[0] != _CLIENT_HELLO
        or message[6:9] != b"\0\0\0"  # fragment_offset: the whole message or its start
        or fragment_length > length
        or len(message) != _HANDSHAKE_HEADER + fragment_length  # one fragment, the record
    ):
        return None
    body = message[_HANDSHAKE_HEADER:]
    at = 2 + _RANDOM  # client_version, random
    if len(body) < at + 1 or body[at] > _MAX_SESSION_ID:
        return None
    at += 1 + body[at]  # session_id
    if len(body) < at + 1 or len(body) < at + 1 + body[at]:
        return None
    cookie = body[at + 1 : at + 1 + body[at]]
    return ClientHelloCookie(datagram[5:11], int.from_bytes(message[4:6], "big"), cookie)


def is_later_client_hello_fragment_untrusted(datagram: bytes) -> bool:
    """Whether a datagram begins with a ClientHello's fragment other than its first (RFC 6347
    §4.2.3: fragment_offset above 0, in a record of epoch 0): the rest of a ClientHello longer
    than the path MTU, which carries no cookie (its first fragment does)."""
    if len(datagram) < _RECORD_HEADER + _HANDSHAKE_HEADER:
        return False
    return (
        datagram[0] == _HANDSHAKE
        and datagram[3:5] == b"\0\0"
        and datagram[_RECORD_HEADER] == _CLIENT_HELLO
        and datagram[_RECORD_HEADER + 6 : _RECORD_HEADER + 9] != b"\0\0\0"
    )


def hello_verify_request(hello: ClientHelloCookie, cookie: bytes) -> bytes:
    """Our HelloVerifyRequest answering ``hello`` with ``cookie`` (RFC 6347 §4.2.1, §4.3.2):
    one record of epoch 0 with the ClientHello's record sequence number and message_seq."""
    version = HELLO_VERIFY_REQUEST_VERSION.to_bytes(2, "big")
    body = version + bytes([len(cookie)]) + cookie
    length = len(body).to_bytes(3, "big")
    handshake = (
        bytes([_HELLO_VERIFY_REQUEST])
        + length
        + hello.message_seq.to_bytes(2, "big")
        + b"\0\0\0"  # fragment_offset
        + length  # fragment_length: one fragment
        + body
    )
    header = bytes([_HANDSHAKE]) + version + b"\0\0" + hello.record_sequence
    return header + len(handshake).to_bytes(2, "big") + handshake


class CookieSecrets:
    """The process's cookie secret and the one before it (RFC 6347 §4.2.1), for every DTLS
    port. Each cookie is bound to the port that asked for it by a ``context`` (session 42):
    made for one port's handshake, it is refused on any other (before, one cookie was good on
    every port of the gateway for its 60 to 120 s, so someone who saw one HelloVerifyRequest
    to a phone could start a handshake as that phone on each port). ``random_bytes`` is a
    CSPRNG (os.urandom); ``now`` any clock that does not go back (the media task's)."""

    def __init__(
        self,
        random_bytes: Callable[[int], bytes],
        *,
        lifetime: float = COOKIE_SECRET_LIFETIME,
    ) -> None:
        self._random_bytes = random_bytes
        self.lifetime = lifetime
        self._current: bytes | None = None
        self._previous: bytes | None = None
        self._period: int | None = None

    def __repr__(self) -> str:
        return f"<CookieSecrets lifetime={self.lifetime:g}s>"  # never the secrets

    def cookie(self, source: tuple[Any, ...], now: float, *, context: bytes) -> bytes:
        """The cookie for ``source`` (host and port; the host is what it covers) now, on the
        port ``context`` names (the engine's: the stream's a=tls-id, RTP or RTCP port; any
        octets without ``|``)."""
        return _mac(self._secret(now), context, source)

    def verifies(
        self, source: tuple[Any, ...], cookie: bytes, now: float, *, context: bytes
    ) -> bool:
        """Whether ``cookie`` is ours for ``source``'s host on the port ``context`` names,
        made with this secret or the previous."""
        if len(cookie) != COOKIE_LENGTH:
            return False
        current = self._secret(now)
        if hmac.compare_digest(cookie, _mac(current, context, source)):
            return True
        previous = self._previous
        return previous is not None and hmac.compare_digest(cookie, _mac(previous, context, source))

    def _secret(self, now: float) -> bytes:
        # Secrets by period of ``lifetime`` seconds, drawn at the period's first use: a cookie
        # is accepted in its period and the next, so for one to two lifetimes. A clock that
        # went back keeps the secret in force.
        period = math.floor(now / self.lifetime)
        if self._current is None or self._period is None or period > self._period:
            follows = self._period is not None and period == self._period + 1
            self._previous = self._current if follows else None
            self._current, self._period = self._draw(), period
        return self._current

    def _draw(self) -> bytes:
        secret = self._random_bytes(32)
        if not isinstance(secret, bytes) or len(secret) != 32:
            raise ValueError("the random source did not return 32 octets")
        return secret


def _mac(secret: bytes, context: bytes, source: tuple[Any, ...]) -> bytes:
    # The port's context, then the host as the call's handshake queue keys it (ip.source_key:
    # an IPv6 host in its text form, with "%<scope id>" for a link-local one the socket gave a
    # zone, RFC 4007 §6; session 44, before without, so a source the queue keyed with its zone
    # lost the priority its cookie gives); the separator occurs in neither. Not the client's
    # port: see the module docstring (a NAT that moves a phone to another port between its
    # ClientHellos).
    message = context + f"|{source_key(source)[0]}".encode()
    return hmac.new(secret, message, hashlib.sha256).digest()
