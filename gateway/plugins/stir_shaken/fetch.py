"""Fetching a PASSporT's x5u certificate: HTTPS only (ATIS-1000074 §5.3.1), h11 over trio's TLS
stream, bounded in size and time, kept by URL for as long as its Cache-Control max-age says
(at least a minute and at most ``max_cache``, the plugin's choice; ATIS-1000074 §5.3.1 asks
verifiers to cache certificates; no-store and no-cache are not looked at). The STI-PA's
CRL that a certificate names (ATIS-1000080 §6.4.1) is fetched the same way, with a larger bound.

The plugin runs each fetch as a task of its own (``StirShaken.run``'s nursery), bounded by its
``fetch_timeout``; the calls that need the URL wait for it until their own deadlines (a slow
carrier repository must not hold a call), and a failure is an outcome of the verification,
never the call's end.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import attrs
import h11
import trio

from gateway.core.ip import ip_literal
from gateway.core.logs import shown_text, system_error_text
from gateway.core.sip.uri import redact_password
from gateway.core.transport.flows import format_host_port

MAX_BODY = 65536
MAX_HEADERS = 16384
MAX_CACHED = 1000  # certificate URLs kept; an operator's peers use a few dozen
# Failed certificate URLs kept (each for the plugin's FAILED_CERTIFICATE_RETRY), apart from the
# certificates: a peer naming a new unreachable x5u in each call fills this, never pushing a
# good certificate out of the MAX_CACHED above. Past it the oldest failure is forgotten (its
# URL is fetched again at its next call, as it would be after the retry time).
MAX_FAILED_CACHED = 250
# Fetches to one host running at once (certificates and CRLs counted apart). Each fetch is one
# HTTPS connection (Connection: close); browsers keep about as many to one server (RFC 9112
# §9.4 asks a client to limit them). One carrier's slow or unreachable repository, or a peer
# naming URLs on one such host, holds no more of the plugin's fetches than this. A call that
# needs one more of that host's URLs waits for one of them to finish, within its own
# fetch_timeout, as a browser queues its requests (StirShaken._waited_for_host): a carrier's
# repository asked for many certificates at once (after a restart) fails no call.
MAX_FETCHES_PER_HOST = 6
CERTIFICATE_TYPES = "application/pem-certificate-chain, application/pkix-cert"
CRL_TYPES = "application/pkix-crl"  # RFC 5280 §4.2.1.13: a DER CRL
_MAX_AGE = re.compile(rb"max-age\s*=\s*(\d{1,10})")
# What inet_aton(3) may read as an IPv4 address: decimal, octal (leading 0) or hexadecimal (0x)
# numbers, one to four of them (lower case: urlsplit's hostname is).
_IPV4_SPELLING = re.compile(r"[0-9a-fx]+(\.[0-9a-fx]+){0,3}")
# How much of a host (RFC 1035 §2.3.4: 253 characters at most) and of a URL (a PASSporT's x5u:
# 512, passport.py) a line shows.
MAX_SHOWN_HOST = 253
MAX_SHOWN_URL = 512

Fetcher = Callable[[str], Awaitable["Fetched"]]


class FetchError(Exception):
    """The certificate could not be fetched (refused, not found, too large, not HTTPS)."""


@attrs.frozen
class Fetched:
    """A fetched resource and its Cache-Control max-age in seconds: None without one; 0 for
    ``max-age=0``, which the plugin takes as none (its certificate_cache applies: ATIS-1000074
    has the verifier cache an answer that says to cache for less than a day)."""

    body: bytes
    max_age: float | None = None


def fetch_host(url: str) -> str:
    """The host ``url`` is fetched from, as :func:`host_allowed` compares it and the fetches to
    one host are counted: a name in lower case without its trailing dot, an IP address in one
    spelling (:func:`one_spelling`)."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:  # not a URL (passport.py refuses such an x5u): no host
        return ""
    return one_spelling(host.rstrip("."))


def one_spelling(host: str) -> str:
    """``host`` once more, but an IP address written as the system's resolver reads it in any
    of its spellings (``127.1``, ``2130706433``, ``0x7f.1``, ``0177.0.0.1``: inet_aton(3)'s
    forms, which getaddrinfo(3) connects to as 127.0.0.1; an IPv6 address with zeros written
    out, or an IPv4-mapped one) in its canonical one, ``127.0.0.1``. Each spelling is the same
    server: counted as one host (MAX_FETCHES_PER_HOST), compared as one with
    ``certificate_hosts``. A DNS name comes back as it is."""
    try:
        address = ip_literal(host)
    except ValueError:
        if not _IPV4_SPELLING.fullmatch(host):
            return host
        try:
            packed = socket.inet_aton(host)
        except OSError:
            return host  # a name of hexadecimal letters, "1.2.3.4.5": not an address
        return str(ipaddress.IPv4Address(packed))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def shown_host(host: str) -> str:
    """A host an x5u or a CRL URL names, for a reason, a call's record or a log line: escaped
    as every peer's text is (:func:`~gateway.core.logs.shown_text`)."""
    return shown_text(host, MAX_SHOWN_HOST)


def shown_url(url: str) -> str:
    """An x5u or CRL URL for a log line: without the password it may hold (redact_password),
    escaped as every peer's text is (:func:`~gateway.core.logs.shown_text`). An x5u is a
    PASSporT's JSON string: it may hold CR LF, an ESC sequence, any letter."""
    return shown_text(redact_password(url), MAX_SHOWN_URL)


def host_allowed(url: str, hosts: tuple[str, ...]) -> bool:
    """Whether ``url``'s host is one of ``hosts`` (``certs.example.net``) or under one of its
    domains (``.example.net``); ``()`` allows every host. The x5u of an Identity header is chosen
    by whoever signed the call: without a list, a carrier whose calls are verified can make the
    gateway connect anywhere its HTTPS client reaches (CWE-918)."""
    if not hosts:
        return True
    host = fetch_host(url)
    return any(
        host == allowed or (allowed[0] == "." and host.endswith(allowed)) for allowed in hosts
    )


def https_fetcher(
    ssl_context: ssl.SSLContext,
    *,
    user_agent: str = "voipgw",
    max_body: int = MAX_BODY,
    accept: str = CERTIFICATE_TYPES,
) -> Fetcher:
    """A fetcher that GETs an https URL with ``ssl_context`` (its trust store checks the
    server), refusing an answer of more than ``max_body`` bytes."""

    async def fetch(url: str) -> Fetched:
        try:
            parts = urlsplit(url)
            port = parts.port or 443
        except ValueError:
            raise FetchError("not a URL") from None
        if parts.scheme != "https" or not parts.hostname:
            raise FetchError("only https URLs are fetched")
        host = parts.hostname
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # The server by host and port only: the URL may hold a password (redact_password's
        # concern); why, in the system's and OpenSSL's words, never the exception's text.
        # The host as the URL's signer wrote it (any letter, CR LF): escaped (shown_host).
        where = format_host_port(shown_host(host), port)
        try:
            stream = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=ssl_context, https_compatible=True
            )
        except (OSError, trio.BrokenResourceError) as exc:
            raise FetchError(f"cannot connect to {where}: {system_error_text(exc)}") from None
        async with stream:
            try:
                return await _get(stream, host, port, target, user_agent, max_body, accept)
            except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
                why = system_error_text(exc)  # a TLS handshake's too: the first send makes it
                raise FetchError(f"connection to {where} failed: {why}") from None
            except h11.ProtocolError:
                # In our words: h11's text quotes the server's bytes (an illegal status line).
                raise FetchError(
                    f"bad HTTP answer (not HTTP/1.1, or headers over {MAX_HEADERS} bytes)"
                ) from None

    return fetch


async def _get(
    stream: trio.abc.Stream,
    host: str,
    port: int,
    target: str,
    agent: str,
    max_body: int,
    accept: str,
) -> Fetched:
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADERS)
    # RFC 9110 §7.2: the authority, an IPv6 address in brackets (urlsplit's hostname has none).
    authority = format_host_port(host, None if port == 443 else port)
    request = h11.Request(
        method="GET",
        target=target,
        headers=[
            ("Host", authority),
            ("User-Agent", agent),
            ("Accept", accept),
            ("Connection", "close"),
        ],
    )
    await stream.send_all(connection.send(request) + connection.send(h11.EndOfMessage()))
    body = bytearray()
    max_age: float | None = None
    closed = False
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError:
            if closed:
                # h11's complaint once the server closed: the answer was cut short (fewer
                # bytes than its Content-Length, an unfinished chunk), no malformed HTTP.
                raise FetchError("connection closed before the end of the answer") from None
            raise
        if event is h11.NEED_DATA:
            data = await stream.receive_some(16384)
            closed = not data
            connection.receive_data(bytes(data))
            continue
        if isinstance(event, h11.Response):
            if event.status_code != 200:
                raise FetchError(f"HTTP {event.status_code}")
            for name, value in event.headers:
                if name == b"cache-control" and (found := _MAX_AGE.search(value.lower())):
                    max_age = float(found.group(1))
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_body:
                raise FetchError(f"answer too large (over {max_body} bytes)")
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            if not isinstance(event, h11.EndOfMessage):
                raise FetchError("connection closed before the end of the answer")
            return Fetched(bytes(body), max_age)


class CertificateCache:
    """Fetched certificates (or CRLs) by URL until their max-age (capped at ``max_cache``) runs
    out; the oldest dropped past ``max_entries``. The plugin keeps failures in another one,
    smaller, each for its FAILED_CERTIFICATE_RETRY, so that a failure never pushes out a good
    certificate."""

    def __init__(self, *, max_cache: float, max_entries: int = MAX_CACHED) -> None:
        self.max_cache = max_cache
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, object]] = {}

    def get(self, url: str, now: float) -> object | None:
        entry = self._entries.get(url)
        if entry is None:
            return None
        expires, value = entry
        if now >= expires:
            del self._entries[url]
            return None
        return value

    def put(
        self, url: str, value: object, *, max_age: float, now: float, capped: bool = True
    ) -> None:
        """Keep ``value`` for ``max_age`` seconds, at most ``max_cache`` unless not ``capped``
        (a failure: its retry time is the plugin's, whatever certificates are kept for)."""
        seconds = min(max_age, self.max_cache) if capped else max_age
        if seconds <= 0:
            return
        if len(self._entries) >= self.max_entries and url not in self._entries:
            del self._entries[next(iter(self._entries))]
        self._entries[url] = (now + seconds, value)

    def __len__(self) -> int:
        return len(self._entries)
