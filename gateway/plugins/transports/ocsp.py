"""OCSP (RFC 6960) for the ``tls`` transport (``[plugins.tls] ocsp``): is a peer's certificate
revoked, asked of its CA's responder.

Three parts:

- :func:`certificate_status_untrusted` checks a responder's answer (sans-IO, ``now`` given):
  signed by the certificate's issuer or by a responder certificate that issuer delegated to
  with id-kp-OCSPSigning (RFC 6960 §4.2.2.2), about this certificate (the CertID: issuer name
  and key hashes and serial, §4.1.1), current (thisUpdate <= now <= nextUpdate, with
  :data:`CLOCK_SKEW`, §4.2.2.1 and §3.2 items 4-5).
- :func:`post_ocsp` sends the request as an HTTP/1.0 POST (RFC 6960 Appendix A.1) over trio,
  bounded in size (:data:`MAX_RESPONSE_SIZE`); the caller bounds it in time. A tiny client of
  our own rather than urllib in a worker thread: trio can cancel it at the timeout (a thread
  cannot be stopped, and a responder that never answers would pile threads up), it needs no
  thread per connecting phone, and its limits are explicit.
- :class:`OcspChecker` caches answers per (issuer, serial) until their nextUpdate (bounded in
  entries), shares one query among concurrent connections of the same certificate, and turns
  an answer or a failure into a verdict by mode (``soft-fail``, ``hard-fail``).

No nonce is sent (RFC 6960 §4.4.1 makes it optional): the cache reuses an answer for many
connections anyway, responders behind CDNs serve pre-produced answers without one, and the
thisUpdate/nextUpdate window is what bounds freshness.
"""

from __future__ import annotations

import collections
import datetime
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

import attrs
import trio
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from gateway.core.failure_log import SUMMARY_INTERVAL, FailureLog
from gateway.core.interfaces import ReloadError
from gateway.core.logs import log_exception, system_error_text
from gateway.core.sip.uri import redact_password

log = logging.getLogger(__name__)

OcspMode = Literal["off", "soft-fail", "hard-fail"]
OCSP_MODES: tuple[OcspMode, ...] = ("off", "soft-fail", "hard-fail")

#: Clocks of responders and ours disagree a little: thisUpdate up to this far in the future and
#: nextUpdate this far in the past are still taken (s).
CLOCK_SKEW = 300.0
#: An OCSP response is a few hundred bytes, a few KiB with a delegated responder's certificate;
#: a larger HTTP response is not one (RFC 6960 Appendix A.1 sets no limit, we do).
MAX_RESPONSE_SIZE = 65536
#: An answer without nextUpdate ("newer information is always available", RFC 6960 §4.2.2.1)
#: is reused for this long (s), so a phone re-connecting does not query each time.
NO_NEXT_UPDATE_CACHE = 3600.0
#: A failed query (no answer, a garbled or unverifiable one, "unknown") is not repeated for this
#: long (s): a phone retrying every few seconds must not hold each attempt for the timeout.
FAILURE_CACHE = 30.0
#: Answers kept at most; past that the oldest stored goes (an expired one is never used).
MAX_CACHE_ENTRIES = 20000

#: While a responder keeps failing, its failed queries are summarized in one line this often (s),
#: not logged one by one: with it down, thousands of open connections are asked about again
#: every FAILURE_CACHE seconds.
FAILING_SUMMARY_INTERVAL = SUMMARY_INTERVAL
#: Failing responders tracked at most (each CA names one or two; a bound all the same).
MAX_FAILING_RESPONDERS = 256

Status = Literal["good", "revoked", "unknown"]
#: What a check found, as ``voipgw_tls_ocsp_queries_total`` counts responder queries.
RESULTS = ("good", "revoked", "unknown", "failed")
#: What became of answers a trunk stapled to its handshake (RFC 6066 §8), as
#: ``voipgw_tls_ocsp_stapled_total`` counts them: ``invalid`` failed a check and was ignored.
STAPLED_RESULTS = ("good", "revoked", "unknown", "invalid")


class OcspError(Exception):
    """The responder gave no usable answer (unreachable, not HTTP 200, garbled, not signed by
    whom it must be, about another certificate, out of date); the message says which."""


@attrs.frozen
class OcspAnswer:
    """A responder's verified answer about one certificate."""

    status: Status
    this_update: float  # Unix time
    next_update: float | None  # Unix time; None: "newer information is always available"


@attrs.frozen
class OcspTarget:
    """A certificate to check, its issuer (from ``ca_bundles``: the request needs its name and
    key, RFC 6960 §4.1.1) and the responder to ask."""

    certificate: x509.Certificate = attrs.field(eq=False)
    issuer: x509.Certificate = attrs.field(eq=False)
    url: str
    issuer_der: bytes
    serial: int
    #: SHA-1 of the issuer's public key, as a CertID's issuerKeyHash (RFC 6960 §4.1.1): two
    #: CAs of one name (a CA re-keyed) are two issuers, whose serial numbers may meet.
    issuer_key_hash: bytes = b""


@attrs.frozen
class Verdict:
    """What a check decided for a connection. ``result`` is one of :data:`RESULTS`;
    ``valid_until`` (Unix time) is when an open connection's certificate is checked again;
    ``queried``: the responder was asked (else the answer came from the cache)."""

    accept: bool
    result: str
    reason: str
    valid_until: float
    queried: bool


# --------------------------------------------------------------------------------------------
# Which certificates, and where to ask


def find_issuer(
    certificate: x509.Certificate, cas: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    """The CA of ``cas`` that signed ``certificate`` (by name and signature), else None."""
    for ca in cas:
        if ca.subject != certificate.issuer:
            continue
        try:
            certificate.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return ca
    return None


def responder_url(certificate: x509.Certificate) -> str | None:
    """The first ``http:`` id-ad-ocsp URL of the certificate's Authority Information Access
    (RFC 5280 §4.2.2.1), else None."""
    try:
        access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except (x509.ExtensionNotFound, ValueError):
        return None
    for description in access.value:
        location = description.access_location
        if (
            description.access_method == AuthorityInformationAccessOID.OCSP
            and isinstance(location, x509.UniformResourceIdentifier)
            and location.value.lower().startswith("http://")
        ):
            return location.value
    return None


def parse_http_url(url: str) -> tuple[str, int, str]:
    """``http://host[:port][/path]`` as (host, port, path); ValueError otherwise. The URL comes
    from a peer's certificate: no spaces or control characters (they would end up in our
    request line), ``http`` only (RFC 6960 Appendix A.1; OCSP over HTTPS would need its own
    revocation check). The URL is quoted with its password hidden (it may come from a
    configuration's crl_urls)."""
    shown = redact_password(url)
    if not url.isascii() or not url.isprintable() or " " in url:
        raise ValueError(f"not a usable URL: {shown!r}")
    scheme, separator, rest = url.partition("://")
    if scheme.lower() != "http" or not separator:
        raise ValueError(f"expected an http:// URL, got {shown!r}")
    authority, slash, path = rest.partition("/")
    path = "/" + path if slash else "/"
    if "@" in authority:
        raise ValueError(f"expected no user name in {shown!r}")
    if authority.startswith("["):
        host, bracket, port_text = authority[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise ValueError(f"bad host in {shown!r}")
        port_text = port_text[1:]
        ipaddress.IPv6Address(host)  # ValueError names it
    else:
        host, _, port_text = authority.partition(":")
    if not host:
        raise ValueError(f"no host in {shown!r}")
    if port_text and (not port_text.isdigit() or not 0 < int(port_text) <= 65535):
        raise ValueError(f"bad port in {shown!r}")
    return host, int(port_text) if port_text else 80, path


def ocsp_request(certificate: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """The DER OCSPRequest for ``certificate``: one CertID hashed with SHA-1, which RFC 5019
    §2.1.1 has every responder support (and most CA responders still require)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


# --------------------------------------------------------------------------------------------
# Checking an answer (sans-IO)


def certificate_status_untrusted(
    data: bytes,
    *,
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    now: float,
    skew: float = CLOCK_SKEW,
) -> OcspAnswer:
    """The status a responder's DER answer ``data`` gives ``certificate`` (issued by
    ``issuer``), once the answer passed every check; OcspError saying which failed."""
    if len(data) > MAX_RESPONSE_SIZE:
        raise OcspError(f"the response is larger than {MAX_RESPONSE_SIZE} bytes")
    try:
        response = ocsp.load_der_ocsp_response(data)
    except ValueError:
        raise OcspError("the response is no OCSP response") from None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        # RFC 6960 §2.3: malformedRequest, internalError, tryLater, sigRequired, unauthorized.
        raise OcspError(f"the responder answered {response.response_status.name}")
    try:
        _check_signer(response, issuer, now=now, skew=skew)
        single = _single_response(response, certificate, issuer)
        this_update = single.this_update_utc.timestamp()
        next_update_utc = single.next_update_utc
        status = single.certificate_status
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise OcspError(f"the response cannot be read ({exc})") from None
    next_update = None if next_update_utc is None else next_update_utc.timestamp()
    # RFC 6960 §4.2.2.1 and §3.2 items 4-5: current, within a little clock skew.
    if this_update > now + skew:
        raise OcspError(f"the response's thisUpdate {_utc(this_update)} is in the future")
    if next_update is not None and next_update < now - skew:
        raise OcspError(f"the response is stale: its nextUpdate {_utc(next_update)} has passed")
    if status == ocsp.OCSPCertStatus.GOOD:
        kind: Status = "good"
    elif status == ocsp.OCSPCertStatus.REVOKED:
        kind = "revoked"
    else:
        kind = "unknown"
    return OcspAnswer(kind, this_update, next_update)


def _single_response(
    response: ocsp.OCSPResponse, certificate: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPSingleResponse:
    """The SingleResponse whose CertID is ``certificate``'s (RFC 6960 §4.1.1: serial number,
    and the hashes of its issuer's name and key, with the hash the responder chose)."""
    for single in response.responses:
        if single.serial_number != certificate.serial_number:
            continue
        expected = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(certificate, issuer, single.hash_algorithm)
            .build()
        )
        if (
            single.issuer_name_hash == expected.issuer_name_hash
            and single.issuer_key_hash == expected.issuer_key_hash
        ):
            return single
    raise OcspError("the response is not about this certificate (no matching CertID)")


def _check_signer(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, *, now: float, skew: float
) -> None:
    """RFC 6960 §4.2.2.2: the issuer signed the response, or a responder certificate in it that
    the issuer issued with id-kp-OCSPSigning in its extendedKeyUsage."""
    if _is_responder(response, issuer):
        if not _signature_valid(issuer.public_key(), response):
            raise OcspError("the response's signature does not verify with the issuer's key")
        return
    for candidate in response.certificates:
        if not _is_responder(response, candidate):
            continue
        subject = candidate.subject.rfc4514_string()
        if candidate.issuer != issuer.subject or find_issuer(candidate, [issuer]) is None:
            raise OcspError(f"the responder certificate {subject} is not issued by the issuer")
        if not _may_sign_ocsp(candidate):
            raise OcspError(
                f"the responder certificate {subject} lacks id-kp-OCSPSigning (RFC 6960 §4.2.2.2)"
            )
        not_before = candidate.not_valid_before_utc.timestamp()
        not_after = candidate.not_valid_after_utc.timestamp()
        if not not_before - skew <= now <= not_after + skew:
            raise OcspError(f"the responder certificate {subject} is outside its validity")
        if not _signature_valid(candidate.public_key(), response):
            raise OcspError("the response's signature does not verify with the responder's key")
        return
    raise OcspError("the response is signed by neither the issuer nor a responder it delegated")


def _is_responder(response: ocsp.OCSPResponse, certificate: x509.Certificate) -> bool:
    """Whether ``certificate`` is the one the ResponderID names (RFC 6960 §4.2.1: by name, or by
    the SHA-1 hash of its public key, the BIT STRING, as in a key identifier)."""
    name = response.responder_name
    if name is not None:
        return certificate.subject == name
    try:
        key = certificate.public_key()
        digest = x509.SubjectKeyIdentifier.from_public_key(key).digest
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return response.responder_key_hash == digest


def _may_sign_ocsp(certificate: x509.Certificate) -> bool:
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return ExtendedKeyUsageOID.OCSP_SIGNING in usages


def _signature_valid(key: object, response: ocsp.OCSPResponse) -> bool:
    data, signature = response.tbs_response_bytes, response.signature
    algorithm = response.signature_hash_algorithm
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            key.verify(signature, data)
        else:
            return False  # RSA-PSS, DSA or a key that cannot sign: not taken
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        return False
    return True


# --------------------------------------------------------------------------------------------
# HTTP (RFC 6960 Appendix A.1)


def parse_http_response_untrusted(
    data: bytes, *, complete: bool, peer: str = "the responder"
) -> bytes | None:
    """The body of an HTTP/1.x response to our request, once ``data`` holds all of it (by
    Content-Length, or ``complete``: ``peer`` closed the connection); None while more is
    needed. OcspError for anything but a well-formed 200. The caller bounds ``data``."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        if complete:
            raise OcspError(f"{peer}'s HTTP response ended inside its header")
        return None
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or not status[1].isdigit():
        raise OcspError(f"{peer} did not answer with HTTP")
    if status[1] != b"200":
        raise OcspError(f"{peer} answered HTTP {status[1].decode('ascii')}")
    length: int | None = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise OcspError(f"{peer}'s HTTP header is malformed")
        if name.strip().lower() == b"content-length":
            text = value.strip()
            if not text.isdigit() or len(text) > 9:
                raise OcspError(f"{peer}'s Content-Length is not a number")
            # RFC 9112 §6.3 item 5: repeated Content-Length fields that disagree make the
            # message's length unknowable: an invalid response, never "the last one wins".
            if length is not None and int(text) != length:
                raise OcspError(f"{peer} sent conflicting Content-Length values")
            length = int(text)
        elif name.strip().lower() == b"transfer-encoding":
            raise OcspError(f"{peer} used a Transfer-Encoding (not HTTP/1.0)")
    if length is not None:
        if len(body) >= length:
            return body[:length]
        if complete:
            raise OcspError(f"{peer} closed the connection before the whole body")
        return None
    return body if complete else None


async def post_ocsp(url: str, request: bytes, *, max_size: int = MAX_RESPONSE_SIZE) -> bytes:
    """POST ``request`` to the responder at ``url``; its response body (DER), or OcspError.
    Bounded in size here (``max_size`` bytes of HTTP response) and in time by the caller's
    cancel scope."""
    headers = (
        "Content-Type: application/ocsp-request\r\n"
        "Accept: application/ocsp-response\r\n"
        f"Content-Length: {len(request)}\r\n"
    )
    return await _http_exchange(url, "POST", headers, request, max_size, "the responder")


async def http_get(url: str, *, max_size: int, peer: str) -> bytes:
    """GET ``url`` (a CRL, RFC 5280 §4.2.1.13); the response body, or OcspError (its message
    calls the server ``peer``). Bounded as :func:`post_ocsp` is."""
    return await _http_exchange(url, "GET", "", b"", max_size, peer)


async def _http_exchange(
    url: str, method: str, headers: str, body: bytes, max_size: int, peer: str
) -> bytes:
    try:
        host, port, path = parse_http_url(url)
    except ValueError as exc:
        raise OcspError(str(exc)) from None
    host_header = f"[{host}]" if ":" in host else host
    if port != 80:
        host_header += f":{port}"
    head = (
        f"{method} {path} HTTP/1.0\r\nHost: {host_header}\r\n{headers}Connection: close\r\n\r\n"
    ).encode("ascii")
    received = bytearray()
    # Header and body length, once the header was read: a CRL of some MiB arrives in many
    # reads, and parsing all received so far after each would copy it over and over.
    total: int | None = None
    try:
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(head + body)
            while True:
                data = await stream.receive_some(65536)
                received += data
                if len(received) > max_size:
                    raise OcspError(f"{peer} sent more than {max_size} bytes")
                if data and total is not None and len(received) < total:
                    continue
                answer = parse_http_response_untrusted(
                    bytes(received), complete=not data, peer=peer
                )
                if answer is not None:
                    return answer
                if total is None:
                    total = _expected_total(received, peer)
    except (OSError, trio.BrokenResourceError) as exc:
        # Why in the system's words only (logs.system_error_text): a socket error's own text
        # is nobody's to show; the URL without any password (none passes parse_http_url).
        why = system_error_text(exc)
        raise OcspError(f"no connection to {peer} {redact_password(url)} ({why})") from None


def failure_text(exc: BaseException) -> str:
    """Why a fetch (an OCSP query, a CRL) failed, for its log line and verdict: our own
    errors' words (OcspError, a CRL's CertificateError), a socket's or TLS's exception in the
    system's words only (logs.system_error_text: an injected fetcher's OSError too), else the
    text of what a parser raised on the server's bytes, or its type."""
    if isinstance(exc, ReloadError):  # a CRL's CertificateError (an OSError): our words
        return str(exc)
    if isinstance(exc, OSError | trio.BrokenResourceError | trio.ClosedResourceError):
        return system_error_text(exc)
    return str(exc) or type(exc).__name__


#: An HTTP response header longer than this is not one of a responder or CRL server.
MAX_HEADER_SIZE = 16384


def _expected_total(received: bytearray, peer: str) -> int | None:
    """Header plus body size of a response whose header :func:`parse_http_response_untrusted`
    accepted (200, a numeric Content-Length); without Content-Length the body ends when the
    server closes (a size never reached); None while the header is incomplete."""
    end = received.find(b"\r\n\r\n")
    if end < 0:
        if len(received) > MAX_HEADER_SIZE:
            raise OcspError(f"{peer}'s HTTP header is longer than {MAX_HEADER_SIZE} bytes")
        return None
    # parse_http_response_untrusted accepted the header: every Content-Length is the same
    # number (RFC 9112 §6.3; it refuses conflicting ones), so the first one is the length.
    for line in bytes(received[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return end + 4 + int(value.strip())
    return 1 << 62


# --------------------------------------------------------------------------------------------
# Checking with a cache


Fetch = Callable[[str, bytes], Awaitable[bytes]]


@attrs.frozen
class _Cached:
    until: float  # Unix time
    answer: OcspAnswer | None  # None: the query failed
    reason: str


class OcspChecker:
    """Checks certificates with their responders, per ``mode`` (not ``"off"``).

    ``fetch(url, request)`` returns the responder's DER answer (default :func:`post_ocsp`); it
    is given ``timeout`` seconds. ``wall_clock`` is Unix time (nextUpdate is calendar time);
    tests pass a clock that follows trio's.
    """

    def __init__(
        self,
        *,
        mode: OcspMode,
        timeout: float,
        responder: str | None = None,
        fetch: Fetch | None = None,
        wall_clock: Callable[[], float] = time.time,
        max_entries: int = MAX_CACHE_ENTRIES,
    ) -> None:
        assert mode != "off"
        self.mode = mode
        self.timeout = timeout
        self.responder = responder
        self._fetch: Fetch = fetch or post_ocsp
        self.wall_clock = wall_clock
        self._max_entries = max_entries
        # By (issuer name, issuer key hash, serial): a CertID's parts (RFC 6960 §4.1.1).
        # Oldest stored first (an OrderedDict: popping the oldest is O(1), where a dict's first
        # key is found by skipping the slots of the keys deleted before it).
        self._cache: collections.OrderedDict[tuple[bytes, bytes, int], _Cached] = (
            collections.OrderedDict()
        )
        self._pending: dict[tuple[bytes, bytes, int], trio.Event] = {}
        #: Responder queries by :data:`RESULTS` (voipgw_tls_ocsp_queries_total); cache hits
        #: are not queries.
        self.queries: dict[str, int] = dict.fromkeys(RESULTS, 0)
        #: Stapled answers by :data:`STAPLED_RESULTS` (voipgw_tls_ocsp_stapled_total).
        self.stapled: dict[str, int] = dict.fromkeys(STAPLED_RESULTS, 0)
        # Responders (by URL) whose last query failed: logged once when they start failing,
        # summarized every FAILING_SUMMARY_INTERVAL, once more when they answer again.
        self._failing: dict[str, FailureLog] = {}

    def target(self, certificate: x509.Certificate, issuer: x509.Certificate) -> OcspTarget | None:
        """What to check for ``certificate``, or None when it names no responder (and no
        ``ocsp_responder`` overrides): then it is not checked, as a CA without a CRL is not."""
        url = self.responder or responder_url(certificate)
        if url is None:
            return None
        return OcspTarget(
            certificate=certificate,
            issuer=issuer,
            url=url,
            issuer_der=certificate.issuer.public_bytes(),
            serial=certificate.serial_number,
            issuer_key_hash=x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest,
        )

    def use_stapled(self, target: OcspTarget, data: bytes) -> str | None:
        """Take ``data``, an answer the peer stapled to its handshake (RFC 6066 §8), as if the
        responder had sent it: the same checks (signer, CertID, times), then cached, so the
        :meth:`check` that follows asks nobody. None when taken, else why it was not (then
        :meth:`check` asks the responder as without a staple)."""
        try:
            now = self.wall_clock()
            answer = certificate_status_untrusted(
                data, certificate=target.certificate, issuer=target.issuer, now=now
            )
        except Exception as exc:
            # The peer's bytes: whatever they make the parser raise is an ignored staple.
            if not isinstance(exc, OcspError):
                log_exception(log, "a stapled OCSP answer could not be checked")
            self.stapled["invalid"] += 1
            return str(exc) or type(exc).__name__
        self.stapled[answer.status] += 1
        self._store(_key(target), self._answered(target, answer, now))
        return None

    async def check(self, target: OcspTarget) -> Verdict:
        """The verdict on ``target``: from the cache while its answer is current, else from one
        query (shared by concurrent callers), which takes at most ``timeout`` seconds."""
        key = _key(target)
        queried = False
        while True:
            cached = self._cache.get(key)
            if cached is not None and cached.until > self.wall_clock():
                return self._verdict(cached, queried=queried)
            pending = self._pending.get(key)
            if pending is None:
                break
            await pending.wait()
        done = self._pending[key] = trio.Event()
        started = self.wall_clock()
        result: _Cached | None = None
        try:
            result = await self._query(target)
        finally:
            if result is None:
                # The caller gave up first (an outbound connection's connect_timeout): cached
                # as a failure like a timeout, so the next attempt does not wait all over again.
                self.queries["failed"] += 1
                waited = self.wall_clock() - started
                reason = f"no answer from {target.url} within {waited:g} s (cancelled)"
                self._responder_failed(target.url, reason)
                result = _Cached(self.wall_clock() + FAILURE_CACHE, None, reason)
            self._store(key, result)
            del self._pending[key]
            done.set()
        return self._verdict(result, queried=True)

    async def _query(self, target: OcspTarget) -> _Cached:
        try:
            request = ocsp_request(target.certificate, target.issuer)
            with trio.move_on_after(self.timeout) as scope:
                data = await self._fetch(target.url, request)
            if scope.cancelled_caught:
                shown = redact_password(target.url)
                raise OcspError(f"no answer from {shown} within {self.timeout:g} s")
            now = self.wall_clock()
            answer = certificate_status_untrusted(
                data, certificate=target.certificate, issuer=target.issuer, now=now
            )
        except Exception as exc:
            # The certificate and the answer are a peer's and a responder's bytes: whatever
            # they make the parsers raise is a failed query, never a crashed listener.
            if not isinstance(exc, OcspError):
                log_exception(
                    log, "OCSP query to %s failed unexpectedly", redact_password(target.url)
                )
            self.queries["failed"] += 1
            reason = failure_text(exc)
            self._responder_failed(target.url, reason)
            return _Cached(self.wall_clock() + FAILURE_CACHE, None, reason)
        self.queries[answer.status] += 1
        self._responder_answered(target.url)
        return self._answered(target, answer, now)

    @staticmethod
    def _answered(target: OcspTarget, answer: OcspAnswer, now: float) -> _Cached:
        """How long a verified answer (fetched or stapled) is kept, and why."""
        if answer.status == "unknown":
            reason = f"the responder {target.url} does not know the certificate"
            return _Cached(now + FAILURE_CACHE, answer, reason)
        until = answer.next_update if answer.next_update is not None else now + NO_NEXT_UPDATE_CACHE
        # A nextUpdate already past (within the clock skew): a responder serving an answer it
        # has not renewed yet. Keep it as long as a failure, rather than asking again at once
        # for every connection (and every open one) until the skew runs out.
        if until <= now:
            until = now + FAILURE_CACHE
        return _Cached(until, answer, f"{answer.status} until {_utc(until)}")

    def _responder_failed(self, url: str, reason: str) -> None:
        """Log per responder, not per query (the metric counts each query): one WARNING when
        it starts failing, then a summary every FAILING_SUMMARY_INTERVAL while it fails
        (gateway/core/failure_log.py)."""
        failing = self._failing.get(url)
        if failing is None:
            if len(self._failing) >= MAX_FAILING_RESPONDERS:
                self._failing.clear()  # logged again at their next failure: still bounded
            failing = self._failing[url] = FailureLog(
                log,
                f"OCSP responder {url}",
                "queries",
                "its failed queries are counted (voipgw_tls_ocsp_queries_total)",
                FAILING_SUMMARY_INTERVAL,
            )
        failing.failed(reason, now=self.wall_clock())

    def _responder_answered(self, url: str) -> None:
        failing = self._failing.pop(url, None)
        if failing is not None:
            failing.answered(now=self.wall_clock())

    def failing_responders(self) -> tuple[str, ...]:
        """URLs of the responders whose last query failed (for tests and the status page)."""
        return tuple(self._failing)

    def _store(self, key: tuple[bytes, bytes, int], cached: _Cached) -> None:
        # O(1) per insert, also when full: the oldest stored goes (an expired entry is never
        # used, check() asks again, so it only waits its turn). A scan for expired entries
        # would cost the whole cache (20,000) per new connection once it is full.
        self._cache.pop(key, None)
        while len(self._cache) >= self._max_entries:
            self._cache.popitem(last=False)
        self._cache[key] = cached

    def _verdict(self, cached: _Cached, *, queried: bool) -> Verdict:
        answer = cached.answer
        if answer is not None and answer.status in ("good", "revoked"):
            good = answer.status == "good"
            return Verdict(good, answer.status, cached.reason, cached.until, queried)
        result = "failed" if answer is None else "unknown"
        # soft-fail: only "revoked" refuses; hard-fail: only "good" accepts.
        return Verdict(self.mode == "soft-fail", result, cached.reason, cached.until, queried)

    def cached_entries(self) -> int:
        """Answers in the cache (for tests and the status page)."""
        return len(self._cache)


def _key(target: OcspTarget) -> tuple[bytes, bytes, int]:
    return (target.issuer_der, target.issuer_key_hash, target.serial)


def _utc(timestamp: float) -> str:
    return f"{datetime.datetime.fromtimestamp(timestamp, datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"


# --------------------------------------------------------------------------------------------
# Stapling our own certificate's status (RFC 6066 §8, server side)

#: A fetch of our own certificate's answer may take this long (s): it runs in its own task,
#: never on a handshake, so it can wait for a slow responder.
STAPLE_FETCH_TIMEOUT = 30.0
#: A failed fetch of our own answer is retried after this long (s), doubling up to
#: :data:`STAPLE_RETRY_MAX`.
STAPLE_RETRY_MIN = 60.0
STAPLE_RETRY_MAX = 3600.0


class OwnStaple:
    """The OCSP answer about the gateway's own certificate that listeners staple when a client
    asks (RFC 6066 §8 ``status_request``), kept by :meth:`run`, a task of its own: fetched from
    the responder of the certificate's AIA, checked as a peer's answer is, refreshed at 3/4 of
    its validity, a failed fetch retried with backoff. :meth:`current` is what the handshake
    callback returns: the cached DER, or nothing; it never waits.

    ``fetch`` (default :func:`post_ocsp`) and ``wall_clock`` are for tests."""

    def __init__(
        self,
        *,
        fetch: Fetch | None = None,
        wall_clock: Callable[[], float] = time.time,
        name: str = "tls",
    ) -> None:
        self._fetch: Fetch = fetch or post_ocsp
        self.wall_clock = wall_clock
        self._name = name
        self._target: OcspTarget | None = None
        self._changed = trio.Event()
        self._der = b""
        self._valid_until = 0.0
        self.outage = FailureLog(
            log,
            f"{name}: ocsp_stapling: the OCSP responder of our certificate",
            "fetches",
            f"retried with backoff from {STAPLE_RETRY_MIN:g} s, nothing new is stapled meanwhile",
        )
        """Failed fetches of our own answer: logged once, summarized every 300 s while they go
        on, once more when one succeeds (gateway/core/failure_log.py)."""
        #: Fetches of our own answer (for tests and the log): successful, failed.
        self.fetched = 0
        self.failed = 0

    def use(self, certificate: x509.Certificate, candidates: Sequence[x509.Certificate]) -> None:
        """Staple for ``certificate`` from now on (start-up, a reload): its issuer is found
        among ``candidates`` (its chain file, ``ca_bundles``). The answer about the previous
        certificate is dropped at once (it would be about another certificate)."""
        issuer = find_issuer(certificate, candidates)
        url = responder_url(certificate)
        target = None
        if issuer is not None and url is not None:
            target = OcspTarget(
                certificate=certificate,
                issuer=issuer,
                url=url,
                issuer_der=certificate.issuer.public_bytes(),
                serial=certificate.serial_number,
            )
        else:
            log.warning(
                "%s: ocsp_stapling: our certificate %s %s: nothing is stapled",
                self._name,
                certificate.subject.rfc4514_string(),
                "names no http:// OCSP responder"
                if url is None
                else "has no issuer in its chain file or ca_bundles",
            )
        if self._target is not None and target is not None and _key(self._target) == _key(target):
            return  # the same certificate (a reload that changed something else): keep it
        self._target = target
        self._der, self._valid_until = b"", 0.0
        self._changed.set()

    def current(self) -> bytes:
        """The answer to staple now: the cached DER while it is current, else nothing."""
        if self._der and self.wall_clock() < self._valid_until:
            return self._der
        return b""

    async def run(self) -> None:
        """Keep the answer fresh, for as long as the listeners' nursery runs."""
        retry = STAPLE_RETRY_MIN
        while True:
            self._changed = trio.Event()
            target = self._target
            if target is None:
                await self._changed.wait()
                continue
            wait = await self._refresh(target, retry)
            retry = (
                STAPLE_RETRY_MIN if not self.outage.failing else min(retry * 2, STAPLE_RETRY_MAX)
            )
            with trio.move_on_after(wait):
                await self._changed.wait()  # a reload: fetch for the new certificate at once

    async def _refresh(self, target: OcspTarget, retry: float) -> float:
        """Fetch and check an answer; seconds until the next fetch."""
        try:
            with trio.fail_after(STAPLE_FETCH_TIMEOUT):
                data = await self._fetch(
                    target.url, ocsp_request(target.certificate, target.issuer)
                )
            now = self.wall_clock()
            answer = certificate_status_untrusted(
                data, certificate=target.certificate, issuer=target.issuer, now=now
            )
            if answer.status != "good":
                raise OcspError(f"the responder says {answer.status}")
        except Exception as exc:  # the responder's bytes: anything is a failed fetch
            self.failed += 1
            reason = "no answer" if isinstance(exc, trio.TooSlowError) else failure_text(exc)
            self.outage.failed(
                f"no OCSP answer about our certificate from {redact_password(target.url)} "
                f"({reason})",
                now=self.wall_clock(),
            )
            # A still-current answer stays stapled (current() stops at its nextUpdate).
            self._der = self._der if self.wall_clock() < self._valid_until else b""
            return retry
        if target is not self._target:
            return 0.0  # the certificate changed while fetching: fetch for the new one
        self.fetched += 1
        self.outage.answered(now=self.wall_clock(), outcome=f"from {target.url}")
        until = answer.next_update if answer.next_update is not None else now + NO_NEXT_UPDATE_CACHE
        self._der, self._valid_until = data, until
        # Refreshed at 3/4 of its validity, which leaves the last quarter for retries.
        refresh_at = answer.this_update + 0.75 * (until - answer.this_update)
        return max(refresh_at - now, STAPLE_RETRY_MIN)
