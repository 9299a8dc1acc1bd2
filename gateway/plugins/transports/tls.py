"""The ``tls`` signalling transport: SIP over TLS 1.2/1.3 (RFC 3261 §26.2, RFC 5630).

Connections are handled exactly as for ``tcp`` (one flow per connection, reused both ways,
per-source limits, idle timeout, stream framing); this module adds the handshake, certificate
policy and what the flow learns about the peer's certificate.

Protocol settings (RFC 9325, "Recommendations for Secure Use of TLS"):

- TLS 1.2 and 1.3 only (§3.1.1: 1.0 and 1.1 must not be negotiated).
- TLS 1.2 cipher suites with forward secrecy and AEAD only: ECDHE with AES-GCM or
  ChaCha20-Poly1305 (§4.2). No CBC, no static RSA key exchange, no finite-field DHE. Every TLS 1.3
  suite qualifies (§4.2.1).
- No TLS compression (§3.3, CRIME), no renegotiation (§3.5), no session resumption: each
  connection presents and checks certificates in full, so a device certificate bound to an
  account is checked on every connection.

The three modes (issue #4), per listener and per trunk:

``encryption-only``
    Nothing is verified. A listener still asks for a client certificate and records its
    fingerprint (device binding by fingerprint works without any CA).
``server-only`` (default)
    Clients verify us. A listener asks for a client certificate without requiring one, and
    records whether it chains to ``ca_bundles``. Towards trunks we verify their chain
    (``ca_bundles`` and the system store) and that the certificate names the trunk (``peers``
    or its IP).
``mutual``
    A listener requires a client certificate that chains to ``ca_bundles`` (e.g. a phone
    vendor's factory CA); towards trunks we verify theirs and present ours.

Why pyOpenSSL rather than the stdlib ``ssl`` module (and so not ``trio.SSLStream``): a listener
must ask every client for a certificate but, outside mutual mode, accept any certificate so that
its fingerprint can be bound to an account. The stdlib can only ask and verify
(``CERT_OPTIONAL`` fails the handshake on a self-signed client certificate) because it exposes no
verify callback; OpenSSL's ``SSL_CTX_set_verify`` callback, reached through pyOpenSSL, can accept
and still tell us whether the chain verified. :class:`TlsStream` runs a pyOpenSSL connection over
memory BIOs on top of any trio stream.

Certificate, key, CA bundles and CRLs are read at start-up and again on SIGHUP
(:meth:`TlsTransport.reload_certificates`, gateway/core/reload.py): every context is rebuilt
before any is swapped in, and a connection keeps the context it was made with; but a reload
that loads CRLs checks every open connection's peer certificate against them and closes those
they revoke (:meth:`TlsTransport._close_revoked`).

Revocation (``crl_files``, revocation.py): OpenSSL checks the peer's own certificate against the
CRL of its CA (X509_V_FLAG_CRL_CHECK). A revoked certificate is refused in every mode; a CA
without a CRL is not checked; a CRL past its nextUpdate fails closed, as OpenSSL does, and is
logged loudly before and when that happens (docs/tls.md, "Certificate revocation").
``crl_urls`` and ``crl_distribution_points`` (crl_fetch.py) have the gateway fetch CRLs over
HTTP and keep them current; each new one goes through the same swap and close as a reload
(:meth:`TlsTransport._use_fetched_crl`; docs/tls.md, "Fetching CRLs").

OCSP (``ocsp``, ocsp.py): after the handshake and before the connection becomes a flow, the
responder of the peer certificate's CA (from ``ca_bundles``) is asked, through a cache, whether
it is revoked; ``soft-fail`` refuses only "revoked", ``hard-fail`` takes only "good". Open
connections are asked about again when their answer expires (:meth:`TlsTransport._ocsp_rechecks`)
and closed as a reloaded CRL closes them (docs/tls.md, "Certificate revocation (OCSP)").
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import operator
import os
import time
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import trio
from cryptography import x509
from OpenSSL import SSL, crypto

from gateway.core.config import (
    GATEWAY_STATE_DIR,
    WARN_ONLY,
    ListenSpec,
    unentered_problem,
    unreadable_here,
    user_name,
)
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import Listener, LoadedCertificate, ReloadError, TransportHost
from gateway.core.logs import log_exception
from gateway.core.plugins import Registry
from gateway.core.sip.uri import redact_password
from gateway.core.transport.flows import Address, Flow, PeerCertificate, format_address
from gateway.plugins.transports.certificates import (
    EXPIRY_CHECK_INTERVAL,
    GENERATED_CERTIFICATE,
    GENERATED_DIR,
    GENERATED_KEY,
    CertificateError,
    CertificatePaths,
    default_hosts,
    ensure_self_signed,
    expires_soon,
    expiry_report,
    fingerprint,
    key_open_to_others,
    load_certificates,
    loaded_certificate,
    matches_name,
    names_in,
    peer_identity,
    validity_problem,
)
from gateway.plugins.transports.crl_fetch import (
    SAVED_DIR,
    CrlFetcher,
    GetCrl,
    distribution_point_urls,
)
from gateway.plugins.transports.ocsp import (
    MAX_RESPONSE_SIZE,
    OCSP_MODES,
    OcspChecker,
    OcspMode,
    OcspTarget,
    OwnStaple,
    Verdict,
    find_issuer,
    parse_http_url,
)
from gateway.plugins.transports.ocsp import (
    Fetch as OcspFetch,
)
from gateway.plugins.transports.revocation import (
    CertificateId,
    LoadedCrl,
    RevokedSerials,
    cas_without_crl,
    load_crl,
    newer,
)
from gateway.plugins.transports.tcp import (
    ConnectionInfo,
    StreamTransport,
    TcpConfig,
    check_idle_timeout,
)

log = logging.getLogger(__name__)

try:  # the bindings pyOpenSSL itself calls, to share one parsed CRL between contexts (_add_crl)
    from OpenSSL._util import ffi as _openssl_ffi
    from OpenSSL._util import lib as _openssl_lib
except ImportError:  # pragma: no cover - a pyOpenSSL without them: add_crl, per context
    _openssl_ffi = _openssl_lib = None
# They are private to pyOpenSSL and cryptography, which drop functions from them between
# releases: every one _add_crl needs must be there, or it uses the public add_crl.
_CRL_FUNCTIONS = (
    "BIO_new_mem_buf",
    "BIO_free",
    "d2i_X509_CRL_bio",
    "X509_CRL_free",
    "X509_STORE_add_crl",
    "ERR_clear_error",
)
if _openssl_lib is not None and not all(
    hasattr(_openssl_lib, name) for name in _CRL_FUNCTIONS
):  # pragma: no cover - depends on the installed cryptography
    _openssl_ffi = _openssl_lib = None

Mode = Literal["encryption-only", "server-only", "mutual"]
MODES: tuple[Mode, ...] = ("encryption-only", "server-only", "mutual")

#: TLS 1.2 suites (OpenSSL names): ECDHE key exchange with an AEAD cipher, RFC 9325 §4.2.
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
#: TLS 1.3 suites: all three are AEAD with (EC)DHE (RFC 8446 §9.1).
TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

_READ_SIZE = 65536
_BIO_CHUNK = 65536
# The least handshake_timeout: a connection not through its handshake by then is closed, and
# the handshake is two round trips (RFC 8446 §2) and the signatures' time; with 1e-9 no peer
# ever got through. A TLS 1.3 handshake on the loopback took 0.77 ms at the least (P-256, the
# 2-vCPU test host): the floor is a power of ten under half that. connect_timeout (TCP's
# handshake, then TLS's) has the same floor.
MIN_HANDSHAKE_TIMEOUT = 1e-4
# Under half a second a lossy path fails handshakes (a lost segment is resent after 1 s, RFC
# 6298 §2), and a peer across a WAN or slow at its signatures may not make it: the loader
# allows it (a LAN peer takes milliseconds), check-config says so (config_warnings).
WARN_HANDSHAKE_TIMEOUT = 0.5
# Longest peer-supplied text (a certificate subject) that goes into one log line.
_LOG_TEXT_LIMIT = 200
# Revoked certificates logged at WARNING, once per (peer IP, serial) (and the other "logged
# once" sets: _first_time); beyond this many the memory starts over (a flood from many
# addresses must not grow it without bound).
_REVOKED_LOG_LIMIT = 4096
# Open connections asked about again at once when their OCSP answers expire together.
_OCSP_RECHECKS_AT_ONCE = 8


def _first_time(seen: set[Any], key: object) -> bool:
    """Whether ``key`` is new to ``seen`` (then remembered): what a "logged once" line asks.
    Past :data:`_REVOKED_LOG_LIMIT` keys ``seen`` starts over, so a flood of new keys costs a
    repeated line, never memory."""
    if key in seen:
        return False
    if len(seen) >= _REVOKED_LOG_LIMIT:
        seen.clear()
    seen.add(key)
    return True


# --------------------------------------------------------------------------------------------
# Configuration


def _address_key(text: str) -> Address:
    """``IP:PORT`` or ``[IPv6]:PORT`` as written in a config key, normalized."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        port_text = rest[1:] if bracket and rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"expected IP:PORT, got {text!r}") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected IP:PORT with a port 0-65535, got {text!r}")
    return (str(address), int(port_text))


def _read_only(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return types.MappingProxyType(dict(mapping))


@attrs.frozen
class TlsConfig:
    """``[plugins.tls]``. See docs/configuration.md and docs/tls.md."""

    certificate: str | None = None
    private_key: str | None = None
    mode: Mode = "server-only"
    ca_bundles: tuple[str, ...] = ()
    crl_files: tuple[str, ...] = ()
    verify_peers: bool = True
    system_ca_for_trunks: bool = True
    peers: Mapping[str, str] = attrs.field(factory=dict, converter=_read_only, hash=False)
    listener_modes: Mapping[str, str] = attrs.field(factory=dict, converter=_read_only, hash=False)
    peer_modes: Mapping[str, str] = attrs.field(factory=dict, converter=_read_only, hash=False)
    handshake_timeout: float = 10.0
    max_connections_per_source: int = 32
    idle_timeout: float = 300.0
    connect_timeout: float = 10.0
    ocsp: OcspMode = "off"
    ocsp_timeout: float = 3.0
    ocsp_responder: str | None = None
    ocsp_stapling: bool = False
    crl_urls: tuple[str, ...] = ()
    crl_distribution_points: bool = False

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of this table; say which key.
        if (self.certificate is None) != (self.private_key is None):
            missing = "certificate" if self.certificate is None else "private_key"
            raise ValueError(f"{missing}: certificate and private_key go together")
        if not self.handshake_timeout >= MIN_HANDSHAKE_TIMEOUT:
            raise ValueError(
                f"handshake_timeout: expected a positive number of seconds, "
                f"at least {MIN_HANDSHAKE_TIMEOUT:.4f} (a TLS handshake takes two round trips, "
                f"RFC 8446 §2), got {self.handshake_timeout:g}"
            )
        check_idle_timeout(self)
        if not self.connect_timeout >= MIN_HANDSHAKE_TIMEOUT:
            raise ValueError(
                f"connect_timeout: expected a positive number of seconds, at least "
                f"{MIN_HANDSHAKE_TIMEOUT:.4f} (TCP's handshake, then TLS's), "
                f"got {self.connect_timeout:g}"
            )
        if self.max_connections_per_source < 1:
            raise ValueError(
                "max_connections_per_source: expected 1 or more, "
                f"got {self.max_connections_per_source}"
            )
        for key in ("listener_modes", "peer_modes"):
            for address, mode in getattr(self, key).items():
                if mode not in MODES:
                    raise ValueError(
                        f"{key}: entry {address!r}: expected one of "
                        + ", ".join(repr(m) for m in MODES)
                        + f", got {mode!r}"
                    )
        for key in ("peers", "listener_modes", "peer_modes"):
            for address in getattr(self, key):
                try:
                    _address_key(address)
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from None
        for address, name in self.peers.items():
            if not name.strip() or name != name.strip():
                raise ValueError(f"peers: entry {address!r}: expected a host name, got {name!r}")
        modes = {self.mode, *self.listener_modes.values()}
        if "mutual" in modes and not self.ca_bundles:
            raise ValueError(
                "ca_bundles: mutual mode verifies client certificates against these CAs; "
                "list at least one PEM file"
            )
        if self.crl_files:
            self._check_crl_files()
        self._check_ocsp()
        self._check_crl_fetch()
        self._check_paths()

    def _check_paths(self) -> None:
        # A file that is not there is this table's key's fault: said here, as a config error
        # naming the key, rather than by the transport at registration (a plugin error that
        # named neither the table nor the key, and for "" the directory ".").
        named = [("certificate", self.certificate), ("private_key", self.private_key)]
        named += [("ca_bundles", bundle) for bundle in self.ca_bundles]
        unread = set()
        for key, path in named:
            if path is None:
                continue
            if not path.strip():
                raise ValueError(f"{key}: expected the path of a PEM file, got {path!r}")
            # voipgw check-config run as another user than the service's: a file in a
            # directory it may not enter, or one it may not read, is its warning (an error
            # when no user but root could), left unchecked (config.unreadable_here).
            if unreadable_here(Path(path), key):
                unread.add(path)
                continue
            # os.path.isfile: False for a name too long too (Path.is_file raises OSError then).
            if not os.path.isfile(path):
                # stat(2) failing with EACCES (a directory this user may not enter) is not
                # "does not exist": voipgw run says which directory.
                unreached = unentered_problem(Path(path))
                if unreached is not None:
                    raise ValueError(f"{key}: {unreached}")
                raise ValueError(f"{key}: {path} does not exist or is not a file")
        for bundle in self.ca_bundles:
            if bundle in unread:
                continue
            # One that is there but holds no PEM certificate failed at registration, a plugin
            # error naming the file, not the key.
            try:
                load_certificates(Path(bundle))
            except CertificateError as exc:
                raise ValueError(f"ca_bundles: {exc}") from None
        if self.certificate is not None and self.private_key is not None:
            # A file that is there but unusable (not PEM, an encrypted key, the key of another
            # certificate) failed at registration, a plugin error naming the file, not the key.
            check_certificate_files(self.certificate, self.private_key)

    def _check_crl_fetch(self) -> None:
        # Nothing is fetched here: check-config only checks the URLs' spelling.
        for url in self.crl_urls:
            try:
                parse_http_url(url)
            except ValueError as exc:
                raise ValueError(f"crl_urls: {exc}") from None
        if len(set(self.crl_urls)) != len(self.crl_urls):
            raise ValueError("crl_urls: lists a URL more than once")
        if (self.crl_urls or self.crl_distribution_points) and not self.ca_bundles:
            key = "crl_urls" if self.crl_urls else "crl_distribution_points"
            raise ValueError(
                f"{key}: each fetched CRL must be signed by a CA certificate in ca_bundles; "
                "list the CA there"
            )

    @property
    def fetches_crls(self) -> bool:
        return bool(self.crl_urls) or self.crl_distribution_points

    def written_directories(self) -> list[tuple[str, Path, str, tuple[str, ...], str]]:
        """What ``voipgw check-config`` and ``run`` check this user may write (Gateway.check):
        with fetching on, ``<state_dir>/tls/crls`` ([gateway] state_dir: this table has none),
        where each fetched CRL is saved, at any hour, for a start without network. A warning
        only: the gateway uses a CRL it could not save (crl_fetch.py logs that)."""
        if not self.fetches_crls:
            return []
        what = "the fetched CRLs (tls plugin), kept for a start without network,"
        return [(GATEWAY_STATE_DIR, SAVED_DIR, what, (), WARN_ONLY)]

    def read_files(self) -> list[tuple[str, Path, str, str]]:
        """What ``voipgw check-config`` and ``run`` check this user may read where it is
        (Gateway.check): with fetching on, each CRL saved in ``<state_dir>/tls/crls`` and the
        file naming its URL, read back at start-up. One a ``voipgw run`` as root left root's
        (mode 0600) was not used (``tls: the saved CRL ... is not used: EACCES``), and until
        the fetch replaced it, its CA's certificates were not checked for revocation. A
        warning only, as for the directory: the gateway fetches it again."""
        if not self.fetches_crls:
            return []
        return [
            (GATEWAY_STATE_DIR, SAVED_DIR / "*.crl", "a fetched CRL (tls plugin)", WARN_ONLY),
            (GATEWAY_STATE_DIR, SAVED_DIR / "*.url", "a fetched CRL's URL (tls plugin)", WARN_ONLY),
        ]

    def _check_ocsp(self) -> None:
        if self.ocsp not in OCSP_MODES:
            raise ValueError(
                "ocsp: expected one of "
                + ", ".join(repr(m) for m in OCSP_MODES)
                + f", got {self.ocsp!r}"
            )
        if not 0 < self.ocsp_timeout <= 60:
            raise ValueError(
                "ocsp_timeout: expected a number of seconds above 0, at most 60, "
                f"got {self.ocsp_timeout:g}"
            )
        if self.ocsp != "off" and self.ocsp_timeout >= self.connect_timeout:
            # An outbound connection's OCSP query runs inside connect_timeout (tcp.py
            # open_flow): a silent responder would end the connection before the query
            # fails, so even soft-fail would refuse every trunk.
            raise ValueError(
                f"ocsp_timeout: must be below connect_timeout ({self.connect_timeout:g} s), "
                "which an outbound connection's OCSP query counts towards, "
                f"got {self.ocsp_timeout:g}"
            )
        if self.ocsp_responder is not None:
            if self.ocsp == "off":
                raise ValueError('ocsp_responder: set ocsp to "soft-fail" or "hard-fail" too')
            try:
                parse_http_url(self.ocsp_responder)
            except ValueError as exc:
                raise ValueError(f"ocsp_responder: {exc}") from None
        if self.ocsp != "off" and not self.ca_bundles:
            raise ValueError(
                "ca_bundles: an OCSP request names the certificate's issuer, which must be a CA "
                "certificate in ca_bundles; list at least one PEM file"
            )

    def _check_crl_files(self) -> None:
        # At start-up and in check-config, so that a CRL nobody in ca_bundles signed is a
        # config error naming this key, not the first phone's refused handshake. The transport
        # reads the files again (and on SIGHUP, gateway/core/reload.py).
        if not self.ca_bundles:
            raise ValueError(
                "crl_files: each CRL must be signed by a CA certificate in ca_bundles; "
                "list the CA there"
            )
        if len(set(self.crl_files)) != len(self.crl_files):
            raise ValueError("crl_files: lists a file more than once")
        # voipgw check-config run as another user than the service's: a CA bundle or CRL it
        # may not read is its warning (config.unreadable_here), and the CRLs are checked
        # against the CAs only when every bundle could be read (one signed by an unread CA
        # would be refused wrongly).
        unread_bundles = [b for b in self.ca_bundles if unreadable_here(Path(b), "ca_bundles")]
        unread_crls = {p for p in self.crl_files if unreadable_here(Path(p), "crl_files")}
        if unread_bundles:
            return
        try:
            cas = [c for bundle in self.ca_bundles for c in load_certificates(Path(bundle))]
        except CertificateError as exc:
            raise ValueError(f"ca_bundles: {exc}") from None
        for path in self.crl_files:
            if path in unread_crls:
                continue
            try:
                load_crl(Path(path), cas)
            except CertificateError as exc:
                raise ValueError(f"crl_files: {exc}") from None

    def config_warnings(self) -> list[str]:
        """``"KEY: why"`` for values the gateway runs with that fail where the network is
        not a LAN: errors of ``voipgw check-config``, warnings of ``voipgw run``."""
        if self.handshake_timeout < WARN_HANDSHAKE_TIMEOUT:
            return [
                f"handshake_timeout: {self.handshake_timeout:g} s works only for peers on the "
                f"host or the LAN: under {WARN_HANDSHAKE_TIMEOUT:g} s one lost segment (resent "
                "after 1 s, RFC 6298 §2) or a peer across a WAN fails its connection"
            ]
        return []

    @property
    def tcp(self) -> TcpConfig:
        """The connection limits, as the shared stream transport code reads them."""
        return TcpConfig(
            max_connections_per_source=self.max_connections_per_source,
            idle_timeout=self.idle_timeout,
            connect_timeout=self.connect_timeout,
        )

    def check_listeners(self, listens: Sequence[ListenSpec]) -> None:
        """Every ``listener_modes`` entry names one of ``listens``, the ``tls:`` entries of
        ``[sip] listen``; ValueError otherwise. A mistyped address would leave a listener meant
        to be ``"mutual"`` in the default mode, taking clients without certificates."""
        ours = {_normalize((listen.host, listen.port)) for listen in listens}
        for key in self.listener_modes:
            if _address_key(key) not in ours:
                listed = ", ".join(str(listen) for listen in listens) or "none"
                raise ValueError(
                    f"listener_modes: entry {key!r} is no tls listener of [sip] listen "
                    f"(tls listeners: {listed})"
                )

    def listener_mode(self, listen: ListenSpec) -> Mode:
        """The mode of the listener configured as ``listen``."""
        return self._mode_for(self.listener_modes, (listen.host, listen.port))

    def peer_mode(self, remote: Address) -> Mode:
        """The mode of outbound connections to ``remote`` (a trunk)."""
        return self._mode_for(self.peer_modes, remote)

    def server_name(self, remote: Address, dns_name: str | None = None) -> str:
        """The name a peer's certificate must carry: ``peers`` entry, else ``dns_name`` (the
        domain of a trunk named by DNS, RFC 5922 §4: the domain in its address, not the SRV
        target), else its IP address."""
        for key, name in self.peers.items():
            if _address_key(key) == _normalize(remote):
                return name
        return dns_name if dns_name is not None else _normalize(remote)[0]

    def verifies(self, mode: Mode) -> bool:
        """Whether outbound connections in ``mode`` verify the trunk's certificate."""
        return mode != "encryption-only" and self.verify_peers

    def _mode_for(self, table: Mapping[str, str], address: Address) -> Mode:
        for key, mode in table.items():
            if _address_key(key) == _normalize(address):
                assert mode in MODES  # checked in __attrs_post_init__
                return mode
        return self.mode


def _normalize(address: Address) -> Address:
    # One spelling per address, so "::1" finds a "[0:0::1]:5061" key; a name (a Via sent-by
    # the core resolves itself) is kept as it is.
    try:
        return (str(ipaddress.ip_address(address[0])), address[1])
    except ValueError:
        return (address[0].lower(), address[1])


# --------------------------------------------------------------------------------------------
# Certificate verification results


# OpenSSL X509_V_ERR_* codes a SIP deployment meets, for log lines (x509_vfy.h).
_X509_ERRORS = {
    2: "unable to get issuer certificate",
    3: "unable to get certificate CRL",
    5: "unable to decrypt CRL's signature",
    7: "certificate signature failure",
    8: "CRL signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    11: "CRL is not yet valid",
    12: "CRL has expired",
    15: "format error in CRL's lastUpdate field",
    16: "format error in CRL's nextUpdate field",
    18: "self-signed certificate",
    19: "self-signed certificate in the chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    22: "certificate chain too long",
    23: "certificate revoked",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
    27: "certificate not trusted",
    28: "certificate rejected",
    33: "unable to get CRL issuer certificate",
    35: "key usage does not include CRL signing",
    36: "unhandled critical CRL extension",
    44: "different CRL scope",
    54: "CRL path validation error",
}
_UNABLE_TO_GET_CRL = 3
_CERT_REVOKED = 23
# The CRL of the certificate's CA could not be used (expired, not yet valid, bad signature, not
# covering it): the verification fails closed, as OpenSSL's does. Counted as reason "crl".
_CRL_ERRORS = frozenset({3, 5, 8, 11, 12, 15, 16, 33, 35, 36, 44, 54})

#: Why a handshake failed, as ``voipgw_tls_handshake_failures_total`` counts it.
FAILURE_REASONS = ("revoked", "crl", "other")
#: With ``ocsp`` on, one more: a hard-fail refusal for want of a "good" answer (a responder that
#: did not answer, a garbled or unverifiable answer, "unknown"). A revoked answer is "revoked".
OCSP_FAILURE_REASON = "ocsp"


@attrs.define
class _Verification:
    """What OpenSSL's verify callback saw on one connection."""

    errors: list[str] = attrs.Factory(list)
    leaf_subject: str | None = None
    called: bool = False
    revoked: bool = False  # the peer's certificate is revoked (crl_files)
    revoked_serial: int | None = None  # its serial number, for the log line
    crl_failed: bool = False  # a CRL could not be used for it (_CRL_ERRORS)
    stapled: bytes = b""  # the OCSP answer a trunk stapled (RFC 6066 §8), checked after

    @property
    def failure_reason(self) -> str:
        """The ``FAILURE_REASONS`` entry of a handshake that failed with this record."""
        if self.revoked:
            return "revoked"
        return "crl" if self.crl_failed else "other"

    @property
    def chain_verified(self) -> bool:
        return self.called and not self.errors


VerifyCallback = Callable[[SSL.Connection, crypto.X509, int, int, int], bool]


def _verify_callback(
    *, enforce: bool, crl_issuers: frozenset[bytes] = frozenset()
) -> VerifyCallback:
    """OpenSSL's per-certificate verify callback (SSL_CTX_set_verify): records every problem on
    the connection's :class:`_Verification`; returns OpenSSL's verdict when ``enforce``, else
    accepts the certificate so the handshake completes and the flow records it unverified.

    With CRLs (``crl_issuers``: the DER issuer names of the loaded ones) two exceptions: a
    revoked certificate is refused in every mode (its CA said it must not be used: a stolen
    phone's certificate must not pass as a merely unverified one), and a leaf whose CA has no
    CRL loaded is not checked for revocation (OpenSSL's "unable to get certificate CRL"), as
    without ``crl_files``: a trunk's public CA, a second phone vendor without a CRL."""

    def callback(
        connection: SSL.Connection, certificate: crypto.X509, error: int, depth: int, ok: int
    ) -> bool:
        if not ok and error == _UNABLE_TO_GET_CRL and not _covered(certificate, crl_issuers):
            return True
        record = connection.get_app_data()
        if isinstance(record, _Verification):
            record.called = True
            if depth == 0:
                # An exception here would surface from do_handshake; a peer's odd subject must
                # not be able to do that.
                try:
                    record.leaf_subject = certificate.to_cryptography().subject.rfc4514_string()
                except ValueError:
                    record.leaf_subject = "<unparseable subject>"
            if not ok:
                reason = _X509_ERRORS.get(error, f"X509 verify error {error}")
                record.errors.append(f"{reason} (depth {depth})")
                if error == _CERT_REVOKED:
                    record.revoked = True
                    record.revoked_serial = _serial(certificate)
                elif error in _CRL_ERRORS:
                    record.crl_failed = True
        if not ok and error == _CERT_REVOKED:
            return False
        return bool(ok) or not enforce

    return callback


def _covered(certificate: crypto.X509, crl_issuers: frozenset[bytes]) -> bool:
    """Whether a CRL of ``certificate``'s issuer is loaded (then OpenSSL not finding one that
    applies, e.g. a CRL scoped to CA certificates only, fails closed)."""
    if not crl_issuers:
        return False
    try:
        return certificate.to_cryptography().issuer.public_bytes() in crl_issuers
    except ValueError:
        return True  # an issuer we cannot read: fail closed


def _serial(certificate: crypto.X509) -> int | None:
    try:
        return certificate.to_cryptography().serial_number
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# TLS over a trio stream


class TlsError(Exception):
    """The TLS layer failed (handshake refused, bad record, alert from the peer)."""


def describe_ssl_error(exc: SSL.Error) -> str:
    """A one-line reason from a pyOpenSSL error (OpenSSL's reason strings; no key material)."""
    if isinstance(exc, SSL.SysCallError):
        return "connection closed by the peer" if exc.args[0] == -1 else f"socket error {exc}"
    first = exc.args[0] if exc.args else None
    if isinstance(first, list) and first:
        reasons = [str(entry[-1]) for entry in first if isinstance(entry, tuple)]
        return "; ".join(dict.fromkeys(r for r in reasons if r)) or type(exc).__name__
    return str(exc) or type(exc).__name__


class TlsStream(trio.abc.Stream):
    """A TLS connection (a pyOpenSSL ``Connection`` on memory BIOs) over ``transport_stream``,
    as the server or the client of the handshake.

    Call :meth:`do_handshake` first. ``send_all`` and ``receive_some`` may then run in two tasks
    at once (the SIP read loop and a sender); a second concurrent call of the same kind raises
    trio.BusyResourceError. Ciphertext reaches the transport in the order OpenSSL produced it:
    every write to the transport happens under one FIFO lock. An operation cancelled while
    writing ciphertext leaves the record stream broken, as with trio.SSLStream.
    """

    def __init__(
        self, transport_stream: trio.abc.Stream, connection: SSL.Connection, *, server_side: bool
    ) -> None:
        self.transport_stream = transport_stream
        self.connection = connection
        if server_side:
            connection.set_accept_state()
        else:
            connection.set_connect_state()
        self._send_lock = trio.StrictFIFOLock()
        self._sending = False
        self._receiving = False
        self._handshake_done = False
        self._closed = False
        self._eof = False
        self._broken: str | None = None
        self._server_side = server_side
        self._delayed = b""

    # -- handshake --------------------------------------------------------------------------

    async def do_handshake(self) -> None:
        """Run the handshake to its end; TlsError (with OpenSSL's reason) when it fails,
        trio.BrokenResourceError when the transport fails."""
        while True:
            try:
                self.connection.do_handshake()
            except SSL.WantReadError:
                await self._flush()
                await self._receive_ciphertext(during_handshake=True)
                continue
            except SSL.Error as exc:
                reason = describe_ssl_error(exc)
                self._broken = f"TLS handshake failed: {reason}"
                # Our alert tells the peer why (RFC 8446 §6.2); it may be gone already.
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._flush()
                raise TlsError(reason) from None
            break
        if self._server_side and self.connection.get_protocol_version_name() == "TLSv1.3":
            # An OpenSSL TLS 1.3 server writes a NewSessionTicket right after the handshake
            # (openssl/openssl#7948). The client is not reading yet, so sending it now can
            # deadlock on a full transport; it goes out in front of our first data instead.
            self._delayed = self._pending_ciphertext()
        else:
            await self._flush()
        self._handshake_done = True

    # -- trio.abc.SendStream ----------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLS stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._check_usable()
            if not data:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            try:
                self.connection.sendall(bytes(data))
            except SSL.Error as exc:
                self._broken = f"TLS error while sending: {describe_ssl_error(exc)}"
                raise trio.BrokenResourceError(self._broken) from None
            await self._flush()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLS stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._check_usable()
            async with self._send_lock:
                await self.transport_stream.wait_send_all_might_not_block()
        finally:
            self._sending = False

    # -- trio.abc.ReceiveStream -------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this TLS stream")
        self._receiving = True
        try:
            if max_bytes is None:
                max_bytes = _READ_SIZE
            else:
                max_bytes = operator.index(max_bytes)
                if max_bytes < 1:
                    raise ValueError("max_bytes must be at least 1")
            await trio.lowlevel.checkpoint_if_cancelled()
            self._check_usable()
            while not self._eof:
                try:
                    data = self.connection.recv(max_bytes)
                except SSL.WantReadError:
                    # Anything OpenSSL queued while reading (a KeyUpdate answer, RFC 8446
                    # §4.6.3) goes out before we wait for more.
                    await self._flush()
                    await self._receive_ciphertext(during_handshake=False)
                    continue
                except SSL.ZeroReturnError:
                    self._eof = True  # close_notify (RFC 8446 §6.1): a clean end of stream
                    break
                except SSL.Error as exc:
                    self._broken = f"TLS error while receiving: {describe_ssl_error(exc)}"
                    raise trio.BrokenResourceError(self._broken) from None
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            await trio.lowlevel.cancel_shielded_checkpoint()
            return b""
        finally:
            self._receiving = False

    # -- closing ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Send close_notify (best effort: not while another task is writing, not on a broken
        stream, never waiting for the peer's), then close the transport, even if cancelled."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            if self._handshake_done and self._broken is None and not self._send_lock.locked():
                with contextlib.suppress(SSL.Error):
                    self.connection.shutdown()
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._flush()
        finally:
            await self.transport_stream.aclose()

    # -- internals --------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this TLS stream was closed")
        if self._broken is not None:
            raise trio.BrokenResourceError(self._broken)

    def _pending_ciphertext(self) -> bytes:
        chunks = []
        while True:
            try:
                chunks.append(self.connection.bio_read(_BIO_CHUNK))
            except SSL.WantReadError:
                return b"".join(chunks)

    async def _flush(self) -> None:
        async with self._send_lock:
            data = self._pending_ciphertext()
            if not data:
                return
            data, self._delayed = self._delayed + data, b""
            try:
                await self.transport_stream.send_all(data)
            except BaseException as exc:
                # Part of a record may be on the wire: nothing can follow it.
                if self._broken is None:
                    self._broken = f"TLS stream broken while sending: {type(exc).__name__}"
                if self._closed and isinstance(exc, trio.BrokenResourceError):
                    raise trio.ClosedResourceError("this TLS stream was closed") from None
                raise

    async def _receive_ciphertext(self, *, during_handshake: bool) -> None:
        data = await self.transport_stream.receive_some(_READ_SIZE)
        if not data:
            where = "during the TLS handshake" if during_handshake else "without TLS close_notify"
            self._broken = f"the peer closed the connection {where}"
            raise trio.BrokenResourceError(self._broken)
        self.connection.bio_write(data)


# --------------------------------------------------------------------------------------------
# OpenSSL contexts


def _new_context(method: int) -> SSL.Context:
    context = SSL.Context(method)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)  # RFC 9325 §3.1.1
    context.set_options(
        SSL.OP_NO_COMPRESSION  # RFC 9325 §3.3
        | SSL.OP_NO_RENEGOTIATION  # RFC 9325 §3.5
        | SSL.OP_NO_TICKET
        | SSL.OP_CIPHER_SERVER_PREFERENCE
    )
    context.set_cipher_list(TLS12_CIPHERS.encode())
    context.set_tls13_ciphersuites(TLS13_SUITES.encode())
    # No resumption: a resumed session skips the certificate checks this transport relies on.
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    return context


class CertificateFileError(CertificateError):
    """A :class:`CertificateError` of the file of one key of the table: ``key`` is
    ``certificate`` or ``private_key`` (a config error names it)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _is_encrypted_key(path: Path) -> bool:
    # PEM's two ways to say it: PKCS #8 "BEGIN ENCRYPTED PRIVATE KEY" and the legacy
    # "Proc-Type: 4,ENCRYPTED" header (RFC 1421 §4.6.1.1). OpenSSL would ask for the passphrase
    # on the terminal (twice), which a gateway started as a service has not. The whole file:
    # one holding the chain and then the key (HAProxy's layout) has it past the first 4 KiB
    # with a long chain, where OpenSSL prompted.
    try:
        data = path.read_bytes()
    except OSError:
        return False  # said by OpenSSL's own error below
    return b"ENCRYPTED" in data


def _use_certificate_file(key: str, path: Path) -> None:
    """CertificateFileError when the file ``key`` names is missing, in a directory this user
    may not enter, or unreadable to it."""
    if not path.is_file():
        # stat(2) failing with EACCES (a directory this user may not enter) is not "does not
        # exist": say which directory.
        unreached = unentered_problem(path)
        raise CertificateFileError(key, unreached or f"{path} does not exist or is not a file")
    try:
        # OpenSSL says an unreadable file is "not the private key of" the certificate
        # (or no usable chain): the permission is the fault, and the user's who reads.
        with path.open("rb"):
            pass
    except OSError as exc:
        raise CertificateFileError(
            key,
            f"{path} cannot be read by this user ({user_name()}): {exc.strerror}; the "
            "gateway's user must be able to read it (a key: owner that user, mode 600)",
        ) from None


def _use_certificate(context: SSL.Context, paths: CertificatePaths) -> None:
    # Errors name the file (and, CertificateFileError, the key of the table); OpenSSL's own
    # messages never contain key bytes either.
    for key, path in (("certificate", paths.certificate), ("private_key", paths.private_key)):
        _use_certificate_file(key, path)
    try:
        context.use_certificate_chain_file(str(paths.certificate))
    except SSL.Error as exc:
        raise CertificateFileError(
            "certificate",
            f"{paths.certificate}: not a usable certificate chain ({describe_ssl_error(exc)})",
        ) from None
    if _is_encrypted_key(paths.private_key):
        raise CertificateFileError(
            "private_key",
            f"{paths.private_key}: the key is encrypted; give an unencrypted key file (mode 600)",
        )
    try:
        context.use_privatekey_file(str(paths.private_key))
        context.check_privatekey()
    except SSL.Error as exc:
        raise CertificateFileError(
            "private_key",
            f"{paths.private_key}: not the private key of {paths.certificate} "
            f"({describe_ssl_error(exc)})",
        ) from None


def _left_unchecked(paths: CertificatePaths) -> bool:
    """Whether voipgw check-config, run as another user than the service's, leaves the pair
    unread: one of its files exists that this user may not read (config.unreadable_here, its
    warning). Never under voipgw run."""
    pair = {"certificate": paths.certificate, "private_key": paths.private_key}
    return bool([key for key, path in pair.items() if unreadable_here(path, key)])


def check_certificate_files(certificate: str, private_key: str) -> None:
    """Load the pair as a listener would, for the configuration's checks: ValueError
    ``"KEY: why"`` (``certificate`` or ``private_key``) when a file exists but cannot be used
    (not PEM, an encrypted key, a key not the certificate's)."""
    pair = {"certificate": Path(certificate), "private_key": Path(private_key)}
    # voipgw check-config run as another user than the service's (a key of mode 600): a
    # warning naming the user, key and file; `voipgw run` refuses it. The other file of the
    # pair is still checked alone (a certificate that is not PEM was said only once the key
    # could be read, at the service's start).
    unread = [key for key, path in pair.items() if unreadable_here(path, key)]
    if "certificate" in unread and "private_key" in unread:
        return
    if unread == ["private_key"]:
        _check_certificate_alone(pair["certificate"])
        return
    if unread == ["certificate"]:
        _check_private_key_alone(pair["private_key"])
        return
    context = SSL.Context(SSL.TLS_METHOD)
    try:
        _use_certificate(context, CertificatePaths(pair["certificate"], pair["private_key"]))
    except CertificateFileError as exc:
        raise ValueError(f"{exc.key}: {exc}") from None


def _check_certificate_alone(certificate: Path) -> None:
    """The certificate of a pair whose key this user may not read, loaded as a listener
    would: ValueError ``"certificate: why"`` when it is missing or not a certificate chain."""
    context = SSL.Context(SSL.TLS_METHOD)
    _check_file("certificate", certificate)
    try:
        context.use_certificate_chain_file(str(certificate))
    except SSL.Error as exc:
        raise ValueError(
            f"certificate: {certificate}: not a usable certificate chain "
            f"({describe_ssl_error(exc)})"
        ) from None


def _check_private_key_alone(private_key: Path) -> None:
    """The key of a pair whose certificate this user may not read: ValueError
    ``"private_key: why"`` when it is missing, encrypted or not a key (never its bytes)."""
    _check_file("private_key", private_key)
    if _is_encrypted_key(private_key):
        raise ValueError(
            f"private_key: {private_key}: the key is encrypted; give an unencrypted key file "
            "(mode 600)"
        )
    context = SSL.Context(SSL.TLS_METHOD)
    try:
        context.use_privatekey_file(str(private_key))
    except SSL.Error as exc:
        raise ValueError(
            f"private_key: {private_key}: not a usable private key ({describe_ssl_error(exc)})"
        ) from None


def _check_file(key: str, path: Path) -> None:
    try:
        _use_certificate_file(key, path)
    except CertificateFileError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _load_ca_bundles(context: SSL.Context, bundles: tuple[Path, ...], *, name_them: bool) -> None:
    for bundle in bundles:
        certificates = load_certificates(bundle)  # a clear error for a missing or empty file
        try:
            context.load_verify_locations(str(bundle))
        except SSL.Error as exc:
            raise CertificateError(f"{bundle}: {describe_ssl_error(exc)}") from None
        if name_them:
            # The CertificateRequest lists these CAs (RFC 8446 §4.2.4), so a phone with several
            # certificates picks the one a mutual-mode listener accepts.
            for certificate in certificates:
                context.add_client_ca(certificate)


def _check_revocation(context: SSL.Context, crls: Sequence[LoadedCrl]) -> frozenset[bytes]:
    """Give the context's store the CRLs and have OpenSSL check the peer's own certificate
    against them (X509_V_FLAG_CRL_CHECK, the stdlib's VERIFY_CRL_CHECK_LEAF; docs/tls.md says
    why not the whole chain). The issuer names they cover, for the verify callback."""
    if not crls:
        return frozenset()
    store = context.get_cert_store()
    assert store is not None  # every SSL_CTX has one
    for loaded in crls:
        _add_crl(store, loaded)
    store.set_flags(crypto.X509StoreFlags.CRL_CHECK)
    return frozenset(loaded.issuer_der for loaded in crls)


def _add_crl(store: crypto.X509Store, loaded: LoadedCrl) -> None:
    """Add ``loaded`` to a context's store. pyOpenSSL's ``add_crl`` re-encodes the CRL
    (cryptography's ``public_bytes``, under the GIL) and OpenSSL parses it again, for every
    context: some 70 ms each for a CRL of 4 MiB. Instead OpenSSL's parse (an X509_CRL) is made
    once per CRL, from the DER bytes it was read from (LoadedCrl.der), kept on it, and shared
    by every store (X509_STORE_add_crl takes a reference of its own; OpenSSL only reads it, and
    sorts its entries under its own lock). Falls back to ``add_crl`` should pyOpenSSL's
    bindings change."""
    native = _native_crl(loaded)
    raw_store = getattr(store, "_store", None)
    if native is None or raw_store is None:
        store.add_crl(loaded.crl)
        return
    if not _openssl_lib.X509_STORE_add_crl(raw_store, native):
        _openssl_lib.ERR_clear_error()  # or a later handshake on this thread reads it as its own
        raise CertificateError(f"{loaded.path}: OpenSSL did not take the CRL")


def _native_crl(loaded: LoadedCrl) -> Any:
    if _openssl_lib is None:
        return None
    if not loaded.native:  # a race of two threads parses it twice: harmless, the first kept
        data = loaded.der_bytes()
        bio = _openssl_lib.BIO_new_mem_buf(data, len(data))
        if bio == _openssl_ffi.NULL:
            _openssl_lib.ERR_clear_error()
            return None
        try:
            parsed = _openssl_lib.d2i_X509_CRL_bio(bio, _openssl_ffi.NULL)
        finally:
            _openssl_lib.BIO_free(bio)
        if parsed == _openssl_ffi.NULL:
            _openssl_lib.ERR_clear_error()  # as above: the error is not a handshake's
            return None
        loaded.native.append(_openssl_ffi.gc(parsed, _openssl_lib.X509_CRL_free))
    return loaded.native[0]


def server_context(
    paths: CertificatePaths,
    mode: Mode,
    ca_bundles: tuple[Path, ...],
    *,
    request_certificate: bool = True,
    staple: Callable[[], bytes] | None = None,
    crls: Sequence[LoadedCrl] = (),
) -> SSL.Context:
    """The context of a listener in ``mode``. It asks for a client certificate (VERIFY_PEER)
    unless ``request_certificate`` is False (``wss``: a browser asked for one may prompt its
    user to pick one); only ``mutual`` requires one and fails the handshake when it does not
    chain to ``ca_bundles``. With ``crls`` a revoked client certificate is refused. With
    ``staple`` a client asking for our certificate's status (RFC 6066 §8) gets what it returns
    (b"": nothing): it must return at once, it runs inside the handshake."""
    context = _new_context(SSL.TLS_SERVER_METHOD)
    _use_certificate(context, paths)
    _load_ca_bundles(context, ca_bundles, name_them=mode == "mutual")
    context.set_session_id(b"voipgw-tls")
    if staple is not None:
        # OpenSSL calls this only for a ClientHello with status_request.
        context.set_ocsp_server_callback(lambda _connection, _data: staple())
    if not request_certificate:
        context.set_verify(SSL.VERIFY_NONE)
        return context
    covered = _check_revocation(context, crls)
    if mode == "mutual":
        context.set_verify(
            SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
            _verify_callback(enforce=True, crl_issuers=covered),
        )
    else:
        context.set_verify(SSL.VERIFY_PEER, _verify_callback(enforce=False, crl_issuers=covered))
    return context


def _keep_stapled(connection: SSL.Connection, data: bytes, _: object) -> bool:
    """OpenSSL's status_request callback (RFC 6066 §8) on our outbound connections: keep the
    trunk's stapled OCSP answer (empty: none) for the check after the handshake, which uses the
    same code as a fetched answer. Always True: a bad staple is ignored, not a failed
    handshake (the responder is asked instead), and a revoked one refuses after it."""
    record = connection.get_app_data()
    if isinstance(record, _Verification):
        record.stapled = bytes(data[: MAX_RESPONSE_SIZE + 1])
    return True


def client_context(
    mode: Mode,
    *,
    verify: bool,
    ca_bundles: tuple[Path, ...],
    system_cas: bool,
    paths: CertificatePaths | None,
    crls: Sequence[LoadedCrl] = (),
    ocsp_stapling: bool = False,
) -> SSL.Context:
    """The context of outbound connections in ``mode``: the trunk's chain is checked when
    ``verify`` (its name is checked after the handshake), our certificate (``paths``) is
    presented in ``mutual`` mode. With ``crls`` a revoked trunk certificate is refused. With
    ``ocsp_stapling`` a stapled OCSP answer is kept (connections must ask for it too)."""
    context = _new_context(SSL.TLS_CLIENT_METHOD)
    if mode == "mutual":
        if paths is None:
            raise CertificateError("mutual TLS towards a trunk needs our certificate")
        _use_certificate(context, paths)
    _load_ca_bundles(context, ca_bundles, name_them=False)
    if system_cas:
        context.set_default_verify_paths()
    covered = _check_revocation(context, crls)
    context.set_verify(SSL.VERIFY_PEER, _verify_callback(enforce=verify, crl_issuers=covered))
    if ocsp_stapling:
        context.set_ocsp_client_callback(_keep_stapled)
    return context


# --------------------------------------------------------------------------------------------
# The transport


class TlsHandshakeError(OSError):
    """A TLS connection could not be established. An OSError, so callers that handle an
    unreachable peer handle this too; the message says why. The handshake code has logged it
    already (``logged``), so the connection handler does not log it twice."""

    logged = True


def _remedy(crl: LoadedCrl) -> str:
    """What fixes a CRL out of date, for the log: a fetched one is fetched again by itself."""
    if crl.path.startswith(("http://", "HTTP://")):
        return "the gateway keeps fetching it; see the warnings about its URL"
    return "replace the file, then SIGHUP"


def _printable(text: str) -> str:
    """Peer-supplied text made safe for one log line."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned[:_LOG_TEXT_LIMIT] + ("..." if len(cleaned) > _LOG_TEXT_LIMIT else "")


class _ReportStarted:
    """Passes a listener's ``task_status.started`` on, after noting the bound address."""

    def __init__(
        self, task_status: trio.TaskStatus[Listener], on_started: Callable[[Listener], None]
    ) -> None:
        self._task_status = task_status
        self._on_started = on_started

    def started(self, value: Listener) -> None:
        self._on_started(value)
        self._task_status.started(value)


@attrs.frozen
class _OpenConnection:
    """A TLS connection whose peer presented a certificate: what a reload needs to close it
    should a new CRL revoke that certificate, and with ``ocsp``, what to ask its responder
    again at ``ocsp_until`` (Unix time). Kept from the handshake to the close."""

    certificate: CertificateId
    reading: trio.CancelScope = attrs.field(eq=False)  # cancelled: the connection closes
    host: TransportHost = attrs.field(eq=False)
    ocsp: OcspTarget | None = None
    ocsp_until: float = 0.0


@attrs.frozen
class _ListenerSide:
    address: Address
    mode: Mode
    context: SSL.Context = attrs.field(eq=False)


@attrs.frozen(eq=False)
class _Reload:
    """What a reload read, checked and built, not yet swapped in
    (:meth:`TlsTransport._prepare_reload`)."""

    file_crls: tuple[LoadedCrl, ...]
    ocsp_cas: tuple[x509.Certificate, ...]
    fetch_cas: tuple[x509.Certificate, ...]
    fetched: dict[str, LoadedCrl]  # the fetched CRLs kept (their CA is still in ca_bundles)
    crls: tuple[LoadedCrl, ...]
    loaded: tuple[LoadedCertificate, ...]
    listeners: list[_ListenerSide]
    clients: dict[Mode, SSL.Context]
    revoked: RevokedSerials | None
    now: float


class TlsTransport(StreamTransport):
    """SIP over TLS: :class:`StreamTransport` with a TLS handshake in :meth:`wrap`."""

    name = "tls"
    reliable = True
    secure = True

    def check_listeners(self, listens: Sequence[ListenSpec]) -> None:
        """``Gateway.check``: this transport's listeners as configured (TlsConfig)."""
        self.tls.check_listeners(listens)

    def generated_certificate(self, listens: Sequence[ListenSpec]) -> tuple[Path, Path] | None:
        """``Gateway.check``: the certificate and key (relative to ``[gateway] state_dir``)
        that the listeners of ``listens``, this transport's ``[sip] listen`` entries, take
        when no certificate is configured (:meth:`certificate_paths`), or None: one is, or
        there is no such listener."""
        if self._configured is not None or not listens:
            return None
        return (
            Path(GENERATED_DIR, GENERATED_CERTIFICATE),
            Path(GENERATED_DIR, GENERATED_KEY),
        )

    def __init__(
        self,
        config: TlsConfig | None = None,
        *,
        ocsp_fetch: OcspFetch | None = None,
        crl_get: GetCrl | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.tls = config or TlsConfig()
        super().__init__(self.tls.tcp)
        self._ca_bundles = tuple(Path(bundle) for bundle in self.tls.ca_bundles)
        self._crl_paths = tuple(Path(path) for path in self.tls.crl_files)
        #: Failed handshakes by FAILURE_REASONS (voipgw_tls_handshake_failures_total).
        self.handshake_failures: dict[str, int] = dict.fromkeys(FAILURE_REASONS, 0)
        #: ``[plugins.tls] ocsp`` (None when "off": then nothing below costs anything).
        #: ``ocsp_fetch`` and ``wall_clock`` are for tests (ocsp.py, OcspChecker).
        self.ocsp: OcspChecker | None = None
        if self.tls.ocsp != "off":
            self.ocsp = OcspChecker(
                mode=self.tls.ocsp,
                timeout=self.tls.ocsp_timeout,
                responder=self.tls.ocsp_responder,
                fetch=ocsp_fetch,
                wall_clock=wall_clock,
            )
            self.handshake_failures[OCSP_FAILURE_REASON] = 0
        # The CAs of ca_bundles, as OCSP requests name a certificate's issuer (with ocsp).
        self._ocsp_cas: tuple[x509.Certificate, ...] = ()
        # The task that asks responders again about open connections (_ocsp_rechecks): woken
        # when a connection comes up, ended when no checked connection is open.
        self._ocsp_wake: trio.Event | None = None
        # Issuers whose certificates carry no OCSP URL, logged once each.
        self._ocsp_unchecked_logged: set[bytes] = set()
        # Servers whose stapled OCSP answer was ignored, logged once each.
        self._bad_staple_logged: set[Address] = set()
        #: ``[plugins.tls] ocsp_stapling``: our own certificate's answer, kept by a task started
        #: with the first listener (None when off). ``ocsp_fetch`` is for tests.
        self.own_staple: OwnStaple | None = None
        self._own_staple_task = False
        self._expiry_task = False  # _warn_before_expiry, started with the first listener
        if self.tls.ocsp_stapling:
            self.own_staple = OwnStaple(fetch=ocsp_fetch, wall_clock=wall_clock, name=self.name)
        #: Connections closed because a reloaded CRL revoked the peer's certificate
        #: (voipgw_tls_connections_revoked_total).
        self.connections_revoked = 0
        # Open connections with a peer certificate (both ways), for a reload's CRL check.
        self._open: dict[Flow, _OpenConnection] = {}
        self._revoked_logged: set[tuple[str, int | None]] = set()
        # (when, "stale" or "expired", CRL): warnings still to give, earliest first; looked at
        # when a connection starts, so a CRL nobody refreshes is logged before and when it
        # starts failing handshakes, without a timer task.
        self._crl_events: list[tuple[float, str, LoadedCrl]] = []
        self._configured: CertificatePaths | None = None
        if self.tls.certificate is not None and self.tls.private_key is not None:
            self._configured = CertificatePaths(
                Path(self.tls.certificate), Path(self.tls.private_key)
            )
        # What we serve (logged, shown by the metrics); the generated one once a listener made it.
        self._loaded: tuple[LoadedCertificate, ...] = ()
        self._loaded_logged = False
        # CRLs fetched over HTTP (crl_urls, crl_distribution_points: crl_fetch.py), by URL;
        # None when neither is set (then nothing below costs anything). ``crl_get`` and
        # ``wall_clock`` are for tests. Nothing is fetched before serve() (check-config never).
        self.crl_fetcher: CrlFetcher | None = None
        # Contexts swapped in so far (reload, fetched CRL, new listener): a fetched CRL's or
        # an async reload's contexts built off the loop are built again if this moved
        # meanwhile.
        self._generation = 0
        self._applying = trio.Lock()  # fetched CRLs and async reloads: one at a time, FIFO
        #: Builds a fetched CRL's or a reload's contexts off the event loop; tests on trio's
        #: autojump clock run it inline (the clock jumps while a worker thread runs).
        self._in_thread: Callable[..., Any] = trio.to_thread.run_sync
        self._wall_clock = wall_clock
        self._fetched: dict[str, LoadedCrl] = {}
        self._crl_fetcher_started = False
        self._crl_fetch_task = False
        # The CAs of ca_bundles, for distribution points (read at start-up and on reload).
        self._fetch_cas: tuple[x509.Certificate, ...] = ()
        # Issuers (DER names) whose certificates' distribution points were looked at.
        self._distribution_points_seen: set[bytes] = set()
        unread_cas = any(unreadable_here(path, "ca_bundles") for path in self._ca_bundles) or any(
            unreadable_here(path, "crl_files") for path in self._crl_paths
        )
        if self.tls.fetches_crls:
            self.crl_fetcher = CrlFetcher(
                cas=lambda: self._fetch_cas,  # read at start-up and on reload, not per fetch
                use=self._use_fetched_crl,
                tick=self._crl_events_due,
                get=crl_get,
                wall_clock=wall_clock,
            )
            for url in self.tls.crl_urls:
                self.crl_fetcher.add(url)
            if not unread_cas:
                self._fetch_cas = self._read_cas()
        # Fail at start-up (and in check-config), not on the first connection; but a pair
        # that voipgw check-config, run as another user than the service's, may not read is
        # its warning (TlsConfig) and is not loaded here either: it never serves. So are a CA
        # bundle or CRL it may not read (unread_cas), and what needs them.
        checked = self._configured
        if checked is not None and _left_unchecked(checked):
            checked = None
        if unread_cas:
            self._file_crls: tuple[LoadedCrl, ...] = ()
            self._crls: tuple[LoadedCrl, ...] = ()
        else:
            self._file_crls = self._read_crls()
            self._crls = self._file_crls
            self._check_files(checked, self._crls)
        if self.ocsp is not None and not unread_cas:
            self._ocsp_cas = self._read_cas()
        if checked is not None and self._configured is not None:
            self._loaded = (loaded_certificate(self._configured.certificate),)
            # One out of its validity period is said when the first listener starts
            # (_warn_before_expiry), not here: voipgw check-config builds this transport too,
            # and printed this line raw above its own error saying the same.
            self._warn(self._configured, ())
            if self.tls.crl_distribution_points:
                # Our own certificate, often from the CA that issued the phones'.
                self._learn_distribution_points(load_certificates(self._configured.certificate)[0])
        self._announce_crls(now=time.time())
        self._paths = self._configured
        self._listeners: list[_ListenerSide] = []
        self._client_contexts: dict[Mode, SSL.Context] = {}
        self._opening: dict[Address, trio.Event] = {}
        # Remote -> the DNS name its connection being opened must verify (open_flow to wrap).
        self._dns_names: dict[Address, str] = {}

    def _check_files(self, paths: CertificatePaths | None, crls: Sequence[LoadedCrl]) -> None:
        """What start-up (and a reload, before it swaps anything) requires of the files: the
        certificate and key load and belong together in every mode a listener uses, and every
        CA bundle holds certificates. CertificateError names the file."""
        if paths is not None:
            for mode in MODES:
                if mode == self.tls.mode or mode in self.tls.listener_modes.values():
                    server_context(paths, mode, self._ca_bundles, crls=crls)
        else:
            for bundle in self._ca_bundles:
                load_certificates(bundle)

    def _warn(self, paths: CertificatePaths, listen_hosts: tuple[str, ...]) -> None:
        """What start-up (and a reload) warns of without refusing: a key others may read, a
        generated certificate not naming a listener. (A certificate out of its validity
        period: :meth:`_warn_before_expiry` at start-up; a reload refuses one.)"""
        if paths == self._configured:
            _warn_if_key_readable(paths.private_key, self.name)
        else:
            for listen_host in listen_hosts:
                self._check_generated_names(paths, listen_host)

    def _warn_if_invalid(self, loaded: LoadedCertificate, *, now: float) -> None:
        """The served certificate out of its validity period (at start-up, and daily)."""
        problem = validity_problem(loaded, now=now)
        if problem is not None:
            log.warning("%s: %s: peers will refuse it", self.name, problem)

    def expiry_report(self, *, now: float, listens: Sequence[ListenSpec]) -> list[tuple[bool, str]]:
        """``voipgw check-config``: (error?, ``"certificate: why"``) for the configured
        certificate outside its validity period (an error: peers refuse it; ``run`` starts
        with it, warning) or expiring within EXPIRY_WARNING_DAYS (a warning). Not for one
        this user may not read (left unchecked) nor the generated one (ten years).

        ``listens``: this transport's ``[sip] listen`` entries. Without one, nothing presents
        the certificate: no client sees it, and no trunk either (a trunk over this transport,
        ``mutual`` or not, needs a listener of it: Gateway.check, and ``open_flow`` opens
        connections in the listeners' nursery), so one out of its validity period is a
        warning, not an error (before, it failed check-config though no peer could refuse
        it)."""
        report = expiry_report("certificate", self._loaded, now=now, refusal="peers will refuse it")
        if listens:
            return report
        unpresented = []
        for is_error, text in report:
            if is_error:
                text = text.removesuffix("peers will refuse it") + (
                    f"peers will refuse it once a {self.name} listener of [sip] listen presents "
                    "it (there is none now)"
                )
            unpresented.append((False, text))
        return unpresented

    def warn_if_expiring(self, *, now: float) -> None:
        """One WARNING while the certificate served expires within EXPIRY_WARNING_DAYS
        (:meth:`_warn_before_expiry`: at start-up, then daily; and after a reload)."""
        for loaded in self._loaded:
            soon = expires_soon(loaded, now=now)
            if soon is not None:
                log.warning(
                    "%s: the certificate in %s expires on %s (in %d days): renew it",
                    self.name,
                    loaded.path,
                    *soon,
                )

    async def _warn_before_expiry(self) -> None:
        """Started with the first listener: :meth:`warn_if_expiring` then, and once a day
        (trio's clock) for as long as the listeners run. Nothing warned before our own
        certificate expired (the metric and an alert rule were the operator's to set up):
        a renewal that did not happen (a failed cron job, a reload not done) went unnoticed
        until every peer refused the gateway. The certificate looked at is the one in use,
        so a reload with the renewed one ends the warnings.

        One out of its validity period is said at start-up and daily too (``peers will
        refuse it``, the tls-certificate-invalid line): one that expired while the gateway
        ran stopped the warnings the day every verifying peer began refusing it, and only a
        restart said why."""
        while True:
            now = self._wall_clock()
            for loaded in self._loaded:
                self._warn_if_invalid(loaded, now=now)
            self.warn_if_expiring(now=now)
            await trio.sleep(EXPIRY_CHECK_INTERVAL)

    # -- revocation (crl_files) -------------------------------------------------------------

    def _read_crls(self) -> tuple[LoadedCrl, ...]:
        """The CRLs of ``crl_files``, each signed by a CA of ``ca_bundles``; CertificateError
        naming the table, key and file otherwise (revocation.py lists the checks)."""
        if not self._crl_paths:
            return ()
        cas = [c for bundle in self._ca_bundles for c in load_certificates(bundle)]
        try:
            return tuple(load_crl(path, cas) for path in self._crl_paths)
        except CertificateError as exc:
            raise CertificateError(f"[plugins.{self.name}] crl_files: {exc}") from None

    def _read_cas(self) -> tuple[x509.Certificate, ...]:
        return tuple(c for bundle in self._ca_bundles for c in load_certificates(bundle))

    def loaded_crls(self) -> tuple[LoadedCrl, ...]:
        """The CRLs new handshakes are checked against (voipgw_tls_crl_next_update_time_seconds)."""
        return self._crls

    def _announce_crls(self, *, now: float) -> None:
        """Log what start-up or a reload loaded: each CRL, loudly one that is out of date (every
        handshake with a certificate of its CA then fails: OpenSSL fails closed, and so do we)
        or in its last quarter, and the CAs no CRL covers. Schedules the warnings to come."""
        events: list[tuple[float, str, LoadedCrl]] = []
        for crl in self._crls:
            log.info("%s: revocation checked with %s", self.name, crl.describe())
            problem = crl.problem(now)
            if problem is not None:
                log.error(
                    "%s: %s: every handshake with a certificate of that CA fails until a "
                    "current CRL is in place (%s)",
                    self.name,
                    problem,
                    _remedy(crl),
                )
            elif now >= crl.stale_at:
                self._log_stale(crl)
            if now < crl.stale_at:
                events.append((crl.stale_at, "stale", crl))
            if now < crl.next_update:
                events.append((crl.next_update, "expired", crl))
        self._crl_events = sorted(events, key=operator.itemgetter(0))
        if self._crls:
            try:
                uncovered = cas_without_crl(self._crls, self._ca_bundles)
            except CertificateError:
                uncovered = []  # a bundle gone since it was read: the next reload says so
            for subject in uncovered:
                log.info(
                    "%s: no CRL in crl_files for the CA %s: its certificates are not checked "
                    "for revocation",
                    self.name,
                    _printable(subject),
                )

    def _log_stale(self, crl: LoadedCrl) -> None:
        log.warning(
            "%s: %s has not been refreshed: once its next update passes, every handshake with "
            "a certificate of that CA fails (%s)",
            self.name,
            crl.describe(),
            _remedy(crl),
        )

    def _crl_events_due(self, now: float) -> None:
        while self._crl_events and self._crl_events[0][0] <= now:
            _, kind, crl = self._crl_events.pop(0)
            if kind == "stale":
                self._log_stale(crl)
            else:
                log.error(
                    "%s: %s: every handshake with a certificate of that CA fails until a "
                    "current CRL is in place (%s)",
                    self.name,
                    crl.problem(now),
                    _remedy(crl),
                )

    # -- certificates -----------------------------------------------------------------------

    def certificate_paths(self, listen: ListenSpec, host: TransportHost) -> CertificatePaths:
        """The configured certificate, else the generated one in ``<state_dir>/tls/``
        (created on first use with the listener's address in its subjectAltName)."""
        if self._paths is not None:
            if self._configured is None:
                self._check_generated_names(self._paths, listen.host)
            elif not self._loaded_logged:
                self._loaded_logged = True
                log.info("%s: certificate %s", self.name, self._loaded[0].describe())
            return self._paths
        directory = Path(host.state_dir) / GENERATED_DIR
        try:
            paths, created = ensure_self_signed(
                directory, default_hosts(listen.host), now=datetime.datetime.now(datetime.UTC)
            )
        except CertificateError:
            raise
        except OSError as exc:
            # The listener's start stops on it: said as the directory and the key, not as
            # "cannot listen on tls:...: Permission denied", which read as the port's fault.
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            raise CertificateError(
                f"[gateway] state_dir: the generated certificate cannot be made in "
                f"{directory}: {reason} (this user: {user_name()}; or configure certificate "
                f"and private_key in [plugins.{self.name}])"
            ) from None
        log.info(
            "tls: %s self-signed certificate %s (sha256 %s)",
            "generated a" if created else "using the generated",
            paths.certificate,
            fingerprint(load_certificates(paths.certificate)[0]),
        )
        self._paths = paths
        self._loaded = (loaded_certificate(paths.certificate),)
        self._check_generated_names(paths, listen.host)
        return paths

    # -- reloading (SIGHUP, gateway/core/reload.py) -----------------------------------------

    def loaded_certificates(self) -> tuple[LoadedCertificate, ...]:
        """The certificate new handshakes present (none before a listener generated one)."""
        return self._loaded

    def reload_certificates(self) -> tuple[LoadedCertificate, ...]:
        """Read the certificate, key, CA bundles and CRL files again and use them for new
        handshakes: every listener's context and every outbound one made so far are rebuilt
        first, with the same checks as at start-up, plus the certificate's validity period;
        only when all of them succeed are they swapped in. Otherwise :class:`ReloadError` names
        the file and the reason, and everything stays as it was. Connections up keep their
        contexts, but those whose peer certificate the new CRLs revoke are closed
        (:meth:`_close_revoked`). Fetched CRLs are fetched again now
        (:meth:`CrlFetcher.refetch`), either way.

        All of it on the calling thread: a large CRL stalls the event loop for as long as the
        contexts take. SIGHUP runs :meth:`reload_certificates_async`, which builds them in a
        worker thread."""
        self._refetch_crls()
        paths = self._paths  # configured, generated (the same files, never regenerated) or None
        try:
            prepared = self._prepare_reload(
                paths,
                tuple(self._listeners),
                tuple(self._client_contexts),
                dict(self._fetched),
                time.time(),
            )
        except CertificateError as exc:
            raise ReloadError(str(exc)) from None
        return self._commit_reload(paths, prepared)

    async def reload_certificates_async(self) -> tuple[LoadedCertificate, ...]:
        """:meth:`reload_certificates` with the files read and checked and the contexts built
        in a worker thread (``_in_thread``), then swapped in on the loop, all at once: a CRL of
        some MiB takes hundreds of ms per context, during which every call's signalling would
        wait. Reloads and fetched CRLs are applied one at a time, in the order they came
        (``_applying``, a FIFO lock): of two SIGHUPs the second reads the files after the first
        swapped, and a CRL fetched meanwhile is applied after the reload, from what it left. A
        listener started (or a synchronous reload) while the contexts were built moves
        ``_generation``: they are built again. The CRLs are fetched again once it ended
        (swapped or refused), so that they are checked against the CAs it left, not those of
        before it (a CA's new key, say)."""
        try:
            return await self._reload_async()
        finally:
            self._refetch_crls()

    async def _reload_async(self) -> tuple[LoadedCertificate, ...]:
        async with self._applying:
            while True:
                generation, paths, fetched = self._generation, self._paths, dict(self._fetched)
                try:
                    prepared = await self._in_thread(
                        self._prepare_reload,
                        paths,
                        tuple(self._listeners),
                        tuple(self._client_contexts),
                        fetched,
                        time.time(),
                    )
                except CertificateError as exc:
                    raise ReloadError(str(exc)) from None
                if (generation, fetched) == (self._generation, self._fetched) and (
                    paths is self._paths
                ):
                    break
            return self._commit_reload(paths, prepared)

    def _refetch_crls(self) -> None:
        if self.crl_fetcher is not None:
            # Whatever the files: an operator who just revoked a phone at its CA and sends
            # SIGHUP expects the CRL now. Fetched later by the fetch task, from what this
            # reload leaves (CAs, contexts).
            self.crl_fetcher.refetch()

    def _prepare_reload(
        self,
        paths: CertificatePaths | None,
        sides: Sequence[_ListenerSide],
        modes: Sequence[Mode],
        fetched: Mapping[str, LoadedCrl],
        now: float,
    ) -> _Reload:
        """Everything a reload reads, checks and builds before it swaps anything: the files,
        the contexts for ``sides`` and ``modes``, and the serials open connections are checked
        against. Touches no state of the transport, so that it can run in a worker thread;
        CertificateError names the file (the table and key for a CRL file)."""
        file_crls = self._read_crls()
        for crl in file_crls:
            # Copying an old CRL over a current one would fail every handshake of its CA.
            problem = crl.problem(now)
            if problem is not None:
                raise CertificateError(f"[plugins.{self.name}] crl_files: {problem}")
        ocsp_cas = self._read_cas() if self.ocsp is not None else ()
        fetch_cas = (ocsp_cas or self._read_cas()) if self.crl_fetcher is not None else ()
        # A fetched CRL whose CA left ca_bundles is dropped, as a file of crl_files would be
        # refused: nothing here could check its signature any more.
        trusted = {ca.subject.public_bytes() for ca in fetch_cas}
        kept = {url: crl for url, crl in fetched.items() if crl.issuer_der in trusted}
        crls = self._effective_crls(file_crls, kept)
        self._check_files(paths, crls)
        loaded: tuple[LoadedCertificate, ...] = ()
        if paths is not None:
            loaded = (loaded_certificate(paths.certificate),)
            problem = validity_problem(loaded[0], now=now)
            if problem is not None:
                raise CertificateError(problem)
        listeners, clients = self._build_contexts(paths, sides, modes, crls)
        return _Reload(
            file_crls=file_crls,
            ocsp_cas=ocsp_cas,
            fetch_cas=fetch_cas,
            fetched=kept,
            crls=crls,
            loaded=loaded,
            listeners=listeners,
            clients=clients,
            # One pass over every entry: some 100 ms for 100 000 entries, in the thread too.
            revoked=RevokedSerials(crls) if crls else None,
            now=now,
        )

    def _commit_reload(
        self, paths: CertificatePaths | None, prepared: _Reload
    ) -> tuple[LoadedCertificate, ...]:
        """Swap in what :meth:`_prepare_reload` made (on the loop, all at once), then log it
        and close the connections the new CRLs revoke."""
        if paths is not None:
            self._warn(paths, tuple(side.address[0] for side in self._listeners))
        # A fetched CRL's contexts being built now are built again from these (_generation).
        self._swap_contexts(prepared.listeners, prepared.clients, prepared.crls)
        self._loaded = prepared.loaded
        if paths is not None and self._expiry_task:
            # The certificate just swapped in (not the one it replaced): renewed, nothing;
            # one that still expires soon, said now rather than at the next daily look.
            self.warn_if_expiring(now=prepared.now)
        self._file_crls = prepared.file_crls
        self._ocsp_cas = prepared.ocsp_cas
        self._fetch_cas = prepared.fetch_cas
        if self.crl_fetcher is not None:
            self._forget_untrusted(prepared.fetched)
            # An issuer looked at while its CA was not in ca_bundles (so its distribution
            # points were not fetched) is looked at again at its next handshake: the reload
            # may have added the CA. URLs known already are not added twice.
            self._distribution_points_seen.clear()
        self._revoked_logged.clear()  # a phone still refused after the reload is logged again
        self._announce_crls(now=prepared.now)
        if paths is not None and self._own_staple_task:
            self._staple_for(paths)  # a new certificate: its own answer, fetched at once
        if prepared.revoked is not None:
            self._close_revoked(prepared.revoked)
        return prepared.loaded

    # -- connections a reloaded CRL revokes -------------------------------------------------

    def _connection_up(
        self, flow: Flow, info: ConnectionInfo, reading: trio.CancelScope, host: TransportHost
    ) -> None:
        # Without crl_files (read at start-up only, like the config) and OCSP nothing is ever
        # checked.
        if info.revocation_id is not None and (
            self._crl_paths or info.ocsp is not None or self.crl_fetcher is not None
        ):
            issuer_der, serial = info.revocation_id
            certificate = CertificateId(issuer_der, serial)
            self._open[flow] = _OpenConnection(
                certificate, reading, host, info.ocsp, info.ocsp_until
            )
            if info.ocsp is not None:
                self._ocsp_schedule()

    def _connection_down(self, flow: Flow) -> None:
        self._open.pop(flow, None)

    # -- CRLs fetched over HTTP (crl_fetch.py) ---------------------------------------------

    def _effective_crls(
        self, file_crls: Sequence[LoadedCrl], fetched: Mapping[str, LoadedCrl] | None = None
    ) -> tuple[LoadedCrl, ...]:
        """What handshakes are checked against: ``crl_files``, and with fetching on, one CRL per
        CA: of a file's and a fetched one, the newer (revocation.newer: higher cRLNumber), so
        a cron job and the fetch may both run while an operator moves from one to the other,
        and neither an old file nor a stale mirror can undo a revocation."""
        if self.crl_fetcher is None:
            return tuple(file_crls)
        best: dict[bytes, LoadedCrl] = {}
        fetched = self._fetched if fetched is None else fetched
        for crl in (*file_crls, *fetched.values()):
            kept = best.get(crl.issuer_der)
            if kept is None or newer(crl, kept):
                best[crl.issuer_der] = crl
        return tuple(best.values())

    def _build_contexts(
        self,
        paths: CertificatePaths | None,
        sides: Sequence[_ListenerSide],
        modes: Sequence[Mode],
        crls: Sequence[LoadedCrl],
    ) -> tuple[list[_ListenerSide], dict[Mode, SSL.Context]]:
        """New contexts for ``sides`` (the listeners) and the outbound ``modes`` in use, with
        ``crls``: what a reload or a fetched CRL swaps in. Touches no state of the transport,
        so that it can run in a worker thread; CertificateError names the file."""
        listeners: list[_ListenerSide] = []
        if paths is not None:  # else no listener has started
            listeners = [
                attrs.evolve(side, context=self._server_context(paths, side.mode, crls))
                for side in sides
            ]
        clients = {mode: self._new_client_context(mode, crls) for mode in modes}
        return listeners, clients

    def _swap_contexts(
        self,
        listeners: list[_ListenerSide],
        clients: dict[Mode, SSL.Context],
        crls: tuple[LoadedCrl, ...],
    ) -> None:
        """Read by wrap() at each new connection: from here on they get these contexts, made
        with ``crls``. An outbound context made meanwhile (:meth:`_client_context`, with the
        CRLs these replace) is dropped and made again at its next use."""
        self._listeners, self._client_contexts, self._crls = listeners, clients, crls
        self._generation += 1

    def _build_for_fetched(
        self,
        paths: CertificatePaths | None,
        sides: Sequence[_ListenerSide],
        modes: Sequence[Mode],
        crls: Sequence[LoadedCrl],
    ) -> tuple[list[_ListenerSide], dict[Mode, SSL.Context], RevokedSerials]:
        """:meth:`_build_contexts`, and the serials the open connections are checked against
        (one pass over every entry: some 100 ms for 100 000 entries, in the thread too)."""
        return *self._build_contexts(paths, sides, modes, crls), RevokedSerials(crls)

    async def _use_fetched_crl(self, crl: LoadedCrl) -> None:
        """A fetched CRL passed its checks: used as a reloaded CRL file is (new contexts for
        new handshakes, open connections it revokes closed, logged and in the metrics). If the
        contexts cannot be rebuilt (the certificate file gone meanwhile), the CRLs in use stay
        and it is logged; the next fetch or SIGHUP tries again.

        The contexts are built in a worker thread: each gets the whole CRL (OpenSSL parses it
        again into its store), some 150 ms per context for a CRL of some MiB, during which
        the event loop (every call's signalling) would stall. They are swapped in on the loop,
        all at once. Fetched CRLs and reloads (SIGHUP, :meth:`reload_certificates_async`) are
        applied one at a time (``_applying``): a CRL fetched during a reload is applied after
        it, from what it left. A CRL whose CA that reload took out of ``ca_bundles`` is not
        used (the fetch checked it against the CAs before). A synchronous reload or a new
        listener that swapped contexts while these were built is seen by
        :attr:`_generation`: they are built again from what it left (the reload's files and
        CAs, this CRL too), so neither result is lost."""
        async with self._applying:
            if crl.issuer_der not in {ca.subject.public_bytes() for ca in self._fetch_cas}:
                log.warning(
                    "%s: the CRL fetched from %s is not used: its CA %s is no longer in "
                    "ca_bundles (a reload during the fetch)",
                    self.name,
                    crl.path,
                    crl.issuer,
                )
                # Nor kept as its URL's CRL in use (nor saved): with the CA back, the same CRL
                # fetched again would be skipped as unchanged and never applied.
                assert self.crl_fetcher is not None
                self.crl_fetcher.forget_untrusted(self._fetch_cas)
                return
            self._fetched[crl.path] = crl
            while True:
                generation = self._generation
                crls = self._effective_crls(self._file_crls)
                paths, sides, modes = (
                    self._paths,
                    tuple(self._listeners),
                    tuple(self._client_contexts),
                )
                try:
                    listeners, clients, revoked = await self._in_thread(
                        self._build_for_fetched, paths, sides, modes, crls
                    )
                except CertificateError as exc:
                    log.error(
                        "%s: the CRL fetched from %s is not used: %s", self.name, crl.path, exc
                    )
                    return
                if generation == self._generation:
                    break
            self._swap_contexts(listeners, clients, crls)
            self._revoked_logged.clear()
            self._announce_crls(now=self._wall_clock())
            if crls and self._nursery is not None:
                self._close_revoked(revoked, "a fetched CRL")

    def _forget_untrusted(self, fetched: dict[str, LoadedCrl]) -> None:
        """After a reload: the fetched CRLs ``fetched`` kept (their CA is still in ca_bundles)
        are the ones in use; the fetcher removes the others' saved files and forgets the URLs
        learned from that CA's certificates (learned again should the CA come back)."""
        assert self.crl_fetcher is not None
        gone = {url: crl for url, crl in self._fetched.items() if url not in fetched}
        self._fetched = fetched
        self.crl_fetcher.forget_untrusted(self._fetch_cas)
        for crl in gone.values():
            self._distribution_points_seen.discard(crl.issuer_der)

    def _learn_distribution_points(self, certificate: x509.Certificate) -> None:
        """With ``crl_distribution_points``: fetch the CRL where ``certificate`` says its
        issuer publishes it, once per issuer, and only for a CA of ``ca_bundles`` (a CRL of
        another CA would be refused anyway)."""
        assert self.crl_fetcher is not None
        try:
            issuer_der = certificate.issuer.public_bytes()
        except ValueError:  # a name cryptography cannot encode: no CA of ours issued it
            return
        # Bounded: unverified peers may name any issuer.
        if not _first_time(self._distribution_points_seen, issuer_der):
            return
        if find_issuer(certificate, self._fetch_cas) is None:
            return
        for url in distribution_point_urls(certificate):
            if self.crl_fetcher.add(url, learned=True):
                log.info(
                    "%s: fetching the CRL of %s from %s (its certificates' distribution point)",
                    self.name,
                    _printable(certificate.issuer.rfc4514_string()),
                    redact_password(url),
                )

    def _start_crl_fetcher(self, host: TransportHost) -> None:
        """At the first listener: CRLs saved by an earlier run are used at once (before its
        context is made), then the fetch task starts (no handshake waits for it)."""
        if self.crl_fetcher is None or self._crl_fetcher_started:
            return
        self._crl_fetcher_started = True
        self.crl_fetcher.state_dir = Path(host.state_dir)
        saved = self.crl_fetcher.load_saved(learned=self.tls.crl_distribution_points)
        if saved:
            for crl in saved:
                self._fetched[crl.path] = crl
            self._crls = self._effective_crls(self._file_crls)
            self._announce_crls(now=self._wall_clock())

    def _close_revoked(self, revoked: RevokedSerials, source: str = "a reloaded CRL") -> None:
        """Close every open connection whose peer certificate ``revoked`` lists: a phone connected
        before its certificate was listed (a stolen handset that keeps re-registering over the
        same connection) or a trunk whose CA revoked its certificate. Each is logged at WARNING
        and counted; the core is told first (``host.flow_revoked``): it removes the
        registrations made over the connection and ends the calls on it; an emergency call on
        it keeps it open until that call ends. Once per reload, one set look-up per open
        connection; nothing per message."""
        closing = [
            (flow, opened)
            for flow, opened in self._open.items()
            if revoked.revokes(opened.certificate)
        ]
        for flow, opened in closing:
            self._close_for_revocation(flow, opened, source)

    def _close_for_revocation(self, flow: Flow, opened: _OpenConnection, source: str) -> None:
        """Close ``flow``, whose peer certificate ``source`` (a reloaded CRL, the OCSP
        responder) revokes: logged, counted, and the core told first (:meth:`_close_revoked`)."""
        del self._open[flow]
        self.connections_revoked += 1
        subject = flow.peer_certificate.subject if flow.peer_certificate else "none"
        log.warning(
            "%s: closing the connection with %s: its certificate is revoked by %s; "
            "peer certificate: %s, serial %X",
            self.name,
            format_address(flow.remote),
            source,
            _printable(subject),
            opened.certificate.serial,
        )
        # Where the connection's reader runs (the listener's nursery, which exists while
        # any connection does); the reload itself cannot wait.
        assert self._nursery is not None
        self._nursery.start_soon(self._close_revoked_connection, flow, opened)

    # -- OCSP: open connections asked about again when their answer expires ----------------

    def _ocsp_schedule(self) -> None:
        """A connection checked by OCSP came up: wake the re-check task (its answer may expire
        before the others'), or start it. Once per connection."""
        if self._ocsp_wake is not None:
            self._ocsp_wake.set()
            return
        assert self._nursery is not None  # the connection's reader runs there
        self._ocsp_wake = trio.Event()
        self._nursery.start_soon(self._ocsp_rechecks)

    async def _ocsp_rechecks(self) -> None:
        """While connections checked by OCSP are open: sleep until the earliest answer about
        one of them expires (its nextUpdate), ask again about every expired one (the cache
        shares one query per certificate), and close those now revoked, as a CRL reload does
        (:meth:`_close_for_revocation`: an emergency call on it is not cut). A failed query does
        not close an open connection, in either mode: it is logged and asked again after
        ``FAILURE_CACHE`` seconds. Nothing per message; per connection only when its answer
        expires."""
        assert self.ocsp is not None
        checker = self.ocsp
        limiter = trio.CapacityLimiter(_OCSP_RECHECKS_AT_ONCE)
        try:
            while True:
                due = [o.ocsp_until for o in self._open.values() if o.ocsp is not None]
                if not due:
                    return
                wake = self._ocsp_wake = trio.Event()
                with trio.move_on_after(max(0.0, min(due) - checker.wall_clock())):
                    await wake.wait()
                now = checker.wall_clock()
                expired = [
                    (flow, opened)
                    for flow, opened in self._open.items()
                    if opened.ocsp is not None and opened.ocsp_until <= now
                ]
                if expired:
                    async with trio.open_nursery() as nursery:
                        for flow, opened in expired:
                            nursery.start_soon(self._ocsp_recheck, flow, opened, limiter)
        finally:
            self._ocsp_wake = None

    async def _ocsp_recheck(
        self, flow: Flow, opened: _OpenConnection, limiter: trio.CapacityLimiter
    ) -> None:
        assert self.ocsp is not None and opened.ocsp is not None
        async with limiter:
            if self._open.get(flow) is not opened:
                return  # closed meanwhile
            verdict = await self.ocsp.check(opened.ocsp)
        if self._open.get(flow) is not opened:
            return
        if verdict.result == "revoked":
            self._close_for_revocation(flow, opened, "its CA's OCSP responder")
            return
        if verdict.result != "good":
            # "failed": the responder is down; OcspChecker logs that once per responder, here
            # it would be once per open connection every FAILURE_CACHE seconds.
            loud = verdict.result == "unknown" and verdict.queried
            log.log(
                logging.WARNING if loud else logging.DEBUG,
                "%s: the connection with %s stays open though OCSP cannot confirm its "
                "certificate (%s); asking again in %g s",
                self.name,
                format_address(flow.remote),
                verdict.reason,
                max(0.0, verdict.valid_until - self.ocsp.wall_clock()),
            )
        self._open[flow] = attrs.evolve(opened, ocsp_until=verdict.valid_until)

    async def _close_revoked_connection(self, flow: Flow, opened: _OpenConnection) -> None:
        """Have the core end what uses ``flow`` (it returns once the calls it ended sent their
        BYEs, at most 2 s, and the emergency calls over it ended), then close it: unusable
        at once (``flow.closed``: the next request to that peer opens a new connection, which
        the new CRL refuses), and its reader cancelled, which sends close_notify and closes
        the socket."""
        try:
            await opened.host.flow_revoked(flow, "TLS certificate revoked")
        except Exception:
            # A bug in the core must not leave a revoked peer connected.
            log_exception(log, "%s: ending what used %s failed", self.name, flow.key)
        finally:
            opened.host.flows.remove(flow)
            opened.reading.cancel()

    def _check_generated_names(self, paths: CertificatePaths, listen_host: str) -> None:
        if listen_host in ("0.0.0.0", "::"):
            return
        certificate = load_certificates(paths.certificate)[0]
        if not matches_name(certificate, listen_host):
            log.warning(
                "tls: the generated certificate %s does not name %s (it names %s); clients "
                "that check names will refuse it: configure certificate and private_key",
                paths.certificate,
                listen_host,
                ", ".join(names_in(certificate)),
            )

    # -- listening --------------------------------------------------------------------------

    async def serve(
        self,
        listen: ListenSpec,
        host: TransportHost,
        *,
        task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        paths = self.certificate_paths(listen, host)
        mode = self.tls.listener_mode(listen)
        self._start_crl_fetcher(host)
        crls = self._crls
        context = self._server_context(paths, mode, crls)

        def note(listener: Listener) -> None:
            made_with = context
            if crls is not self._crls:
                # A fetched CRL was swapped in while the socket was bound: this listener too.
                made_with = self._server_context(paths, mode, self._crls)
            self._listeners.append(_ListenerSide(listener.address, mode, made_with))
            self._generation += 1  # a fetched CRL's contexts being built lack this listener
            if self.own_staple is not None and not self._own_staple_task:
                assert self._nursery is not None  # set before started() is called
                self._own_staple_task = True
                self._staple_for(paths)
                self._nursery.start_soon(self.own_staple.run)
            log.info(
                "%s: listener %s in %s mode", self.name, format_address(listener.address), mode
            )
            if not self._expiry_task:
                assert self._nursery is not None  # set before started() is called
                self._expiry_task = True
                self._nursery.start_soon(self._warn_before_expiry)
            # The fetch task lives as long as the listeners' nursery (the first listener's).
            if self.crl_fetcher is not None and not self._crl_fetch_task:
                assert self._nursery is not None  # set before started() is called
                self._crl_fetch_task = True
                self._nursery.start_soon(self.crl_fetcher.run)

        # _ReportStarted has the one started() signature serve uses, not TaskStatus's overloads.
        reporting = _ReportStarted(task_status, note)
        await super().serve(listen, host, task_status=reporting)  # type: ignore[arg-type]

    def _server_context(
        self, paths: CertificatePaths, mode: Mode, crls: Sequence[LoadedCrl]
    ) -> SSL.Context:
        """The OpenSSL context of a listener in ``mode`` (``wss`` asks for no certificate)."""
        staple = None if self.own_staple is None else self.own_staple.current
        return server_context(paths, mode, self._ca_bundles, crls=crls, staple=staple)

    def _staple_for(self, paths: CertificatePaths) -> None:
        """Have :class:`OwnStaple` fetch answers about the certificate of ``paths``, whose
        issuer is in its chain file or ``ca_bundles``."""
        assert self.own_staple is not None
        try:
            chain = load_certificates(paths.certificate)
            cas = [ca for bundle in self._ca_bundles for ca in load_certificates(bundle)]
        except CertificateError as exc:  # checked at start-up and before a reload swaps
            log.warning("%s: ocsp_stapling: %s: nothing is stapled", self.name, exc)
            return
        self.own_staple.use(chain[0], [*chain[1:], *cas])

    def _listener_for(self, local: Address) -> _ListenerSide:
        for side in self._listeners:
            if side.address == local:
                return side
        # A wildcard listener (0.0.0.0 or ::) sees the specific local address it was reached on.
        for side in self._listeners:
            if side.address[1] == local[1] and side.address[0] in ("0.0.0.0", "::"):
                return side
        raise TlsHandshakeError(f"no tls listener owns {format_address(local)}")

    # -- connecting -------------------------------------------------------------------------

    def _client_context(self, mode: Mode) -> SSL.Context:
        context = self._client_contexts.get(mode)
        if context is None:
            context = self._client_contexts[mode] = self._new_client_context(mode, self._crls)
        return context

    def _new_client_context(self, mode: Mode, crls: Sequence[LoadedCrl]) -> SSL.Context:
        return client_context(
            mode,
            verify=self.tls.verifies(mode),
            ca_bundles=self._ca_bundles,
            system_cas=self.tls.system_ca_for_trunks,
            paths=self._paths,
            crls=crls,
            ocsp_stapling=self.ocsp is not None,
        )

    async def open_flow(self, remote: Address, host: TransportHost) -> Flow:
        """An existing TLS connection to ``remote`` if there is one, else a new one verified as
        its mode says. Concurrent callers for the same peer share one attempt."""
        while True:
            existing = host.flows.find(self.name, remote)
            if existing is not None:
                return existing
            pending = self._opening.get(remote)
            if pending is None:
                break
            await pending.wait()
        done = self._opening[remote] = trio.Event()
        # A target of a trunk named by DNS: the handshake (wrap) checks the trunk's domain.
        dns_name = host.peer_name(remote)
        if dns_name is not None:
            self._dns_names[remote] = dns_name
        try:
            return await super().open_flow(remote, host)
        except trio.TooSlowError:
            reason = f"no TLS connection within {self.tls.connect_timeout:g} s"
            log.warning("tls: connecting to %s failed: %s", format_address(remote), reason)
            raise TlsHandshakeError(f"{format_address(remote)}: {reason}") from None
        finally:
            del self._opening[remote]
            self._dns_names.pop(remote, None)
            done.set()

    # -- the handshake ----------------------------------------------------------------------

    async def wrap(
        self, stream: trio.SocketStream, *, server_side: bool, remote: Address
    ) -> tuple[trio.abc.Stream, ConnectionInfo]:
        """Run the TLS handshake on a new connection; the TLS stream and what it learnt about
        the peer. Every failure is logged (reason, peer, certificate subject) and raised as
        :class:`TlsHandshakeError`."""
        name: str | None = None  # what the peer's certificate must name (trunks only)
        if self._crl_events and self._crl_events[0][0] <= time.time():
            self._crl_events_due(time.time())
        if server_side:
            side = self._listener_for(stream.socket.getsockname()[:2])
            mode, context, direction = side.mode, side.context, "from"
        else:
            mode = self.tls.peer_mode(remote)
            context, direction = self._client_context(mode), "to"
            name = self.tls.server_name(remote, self._dns_names.get(remote))
        record = _Verification()
        connection = SSL.Connection(context, None)
        connection.set_app_data(record)
        if name is not None and not _is_ip(name):
            connection.set_tlsext_host_name(name.encode("idna"))  # RFC 6066 §3: names only
        if not server_side and self.ocsp is not None:
            connection.request_ocsp()  # RFC 6066 §8: the trunk may staple its OCSP answer
        tls = TlsStream(stream, connection, server_side=server_side)

        reason: str | None = None
        try:
            with trio.fail_after(self.tls.handshake_timeout):
                await tls.do_handshake()
        except trio.TooSlowError:
            reason = f"no handshake within {self.tls.handshake_timeout:g} s"
        except TlsError as exc:
            reason = str(exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            reason = str(exc) or "connection lost during the handshake"

        peer = connection.get_peer_certificate(as_cryptography=True)
        identity: PeerCertificate | None = None
        revocation_id: CertificateId | None = None
        if reason is None and peer is not None:
            try:
                verified = record.chain_verified
                if name is not None:
                    name_ok = matches_name(peer, name)
                    verified = verified and name_ok
                    if not name_ok and self.tls.verifies(mode):
                        named = ", ".join(names_in(peer)) or "nothing"
                        reason = f"certificate does not name {name} (it names {named})"
                identity = peer_identity(peer, verified=verified, server_name=name)
                revocation_id = CertificateId.of(peer)
            except ValueError as exc:  # OpenSSL took it, cryptography cannot read it
                reason = f"unreadable certificate ({exc})"
        if reason is not None:
            if record.errors:
                reason += " [" + "; ".join(record.errors) + "]"
            self.handshake_failures[record.failure_reason] += 1
            if record.revoked:
                self._log_revoked(direction, remote, mode, record, peer)
            else:
                log.warning(
                    "%s: handshake %s %s failed (%s mode): %s; peer certificate: %s",
                    self.name,  # wss shares this handshake
                    direction,
                    format_address(remote),
                    mode,
                    reason,
                    _subject_for_log(record, peer),
                )
            await trio.aclose_forcefully(tls)
            raise TlsHandshakeError(f"TLS handshake {direction} {format_address(remote)}: {reason}")
        if self.crl_fetcher is not None and peer is not None and self.tls.crl_distribution_points:
            self._learn_distribution_points(peer)
        ocsp_target: OcspTarget | None = None
        ocsp_until = 0.0
        if self.ocsp is not None and peer is not None:
            # Before the connection becomes a flow: no SIP message from it is read, and none of
            # ours sent on it, until the responder (or the cache) answered.
            try:
                ocsp_target = self._ocsp_target(peer)
            except ValueError:  # an extension cryptography cannot read: as for no responder
                ocsp_target = None
            if ocsp_target is not None:
                if record.stapled:
                    self._use_stapled(ocsp_target, record.stapled, remote)
                verdict = await self.ocsp.check(ocsp_target)
                self._log_ocsp(verdict, direction, remote, mode, ocsp_target)
                if not verdict.accept:
                    failure = "revoked" if verdict.result == "revoked" else OCSP_FAILURE_REASON
                    self.handshake_failures[failure] += 1
                    await trio.aclose_forcefully(tls)
                    raise TlsHandshakeError(
                        f"TLS connection {direction} {format_address(remote)}: OCSP: "
                        f"{verdict.result} ({verdict.reason})"
                    )
                ocsp_until = verdict.valid_until
        log.debug(
            "%s: %s %s: %s %s, peer certificate %s",
            self.name,
            direction,
            format_address(remote),
            connection.get_protocol_version_name(),
            connection.get_cipher_name(),
            "none" if identity is None else f"sha256 {identity.sha256_fingerprint}",
        )
        return tls, ConnectionInfo(
            secure=True,
            peer_certificate=identity,
            revocation_id=(
                None if revocation_id is None else (revocation_id.issuer_der, revocation_id.serial)
            ),
            ocsp=ocsp_target,
            ocsp_until=ocsp_until,
        )

    def _ocsp_target(self, peer: x509.Certificate) -> OcspTarget | None:
        """What to ask about ``peer``: None when its issuer is not a CA of ``ca_bundles`` (a
        trunk's public CA, a self-signed phone) or it names no responder and no
        ``ocsp_responder`` is set; such certificates are not checked (logged once per issuer)."""
        assert self.ocsp is not None
        issuer = find_issuer(peer, self._ocsp_cas)
        if issuer is None:
            return None
        target = self.ocsp.target(peer, issuer)
        if target is None:
            issuer_der = issuer.subject.public_bytes()
            if _first_time(self._ocsp_unchecked_logged, issuer_der):
                log.info(
                    "%s: a certificate of the CA %s names no OCSP responder and ocsp_responder "
                    "is not set: such certificates are not checked by OCSP (logged once per CA)",
                    self.name,
                    _printable(issuer.subject.rfc4514_string()),
                )
        return target

    def _use_stapled(self, target: OcspTarget, data: bytes, remote: Address) -> None:
        """A trunk's stapled answer, checked as a fetched one and cached (then no responder is
        asked); one that fails a check is ignored (the responder is asked) and logged at INFO
        once per server address."""
        assert self.ocsp is not None
        problem = self.ocsp.use_stapled(target, data)
        if problem is None:
            return
        first = _first_time(self._bad_staple_logged, _normalize(remote))
        log.log(
            logging.INFO if first else logging.DEBUG,
            "%s: the OCSP answer %s stapled is ignored (%s); its responder %s is asked instead "
            "(logged once per server)",
            self.name,
            format_address(remote),
            problem,
            redact_password(target.url),
        )

    def _log_ocsp(
        self, verdict: Verdict, direction: str, remote: Address, mode: Mode, target: OcspTarget
    ) -> None:
        """A connection's OCSP verdict: a revoked certificate at WARNING once per peer IP and
        certificate (as for a CRL); "unknown" at WARNING when it asked the responder (answers
        from the cache, at DEBUG: a phone retrying must not flood the log); "failed" at DEBUG,
        as OcspChecker logs a failing responder once."""
        try:
            subject = _printable(target.certificate.subject.rfc4514_string())
        except ValueError:
            subject = "<unparseable subject>"
        where = f"{direction} {format_address(remote)}"
        if verdict.result == "revoked":
            first = _first_time(self._revoked_logged, (_normalize(remote)[0], target.serial))
            log.log(
                logging.WARNING if first else logging.DEBUG,
                "%s: connection %s refused (%s mode): certificate revoked (OCSP); peer "
                "certificate: %s, serial %X",
                self.name,
                where,
                mode,
                subject,
                target.serial,
            )
        elif verdict.result == "good":
            log.debug("%s: %s: OCSP good (%s)", self.name, where, verdict.reason)
        else:
            outcome = "accepted (soft-fail)" if verdict.accept else "refused (hard-fail)"
            # A responder that failed is logged once by OcspChecker (per responder, not per
            # connection: thousands of phones would flood the log); "unknown" is about this
            # certificate, at WARNING when the responder was asked.
            loud = verdict.queried and verdict.result == "unknown"
            log.log(
                logging.WARNING if loud else logging.DEBUG,
                "%s: connection %s %s: OCSP %s: %s; peer certificate: %s, serial %X",
                self.name,
                where,
                outcome,
                verdict.result,
                verdict.reason,
                subject,
                target.serial,
            )

    def _log_revoked(
        self,
        direction: str,
        remote: Address,
        mode: Mode,
        record: _Verification,
        peer: x509.Certificate | None,
    ) -> None:
        """A handshake refused because the peer's certificate is revoked: at WARNING once per
        peer IP address and certificate (a revoked phone retries every few seconds), at DEBUG
        after that, until the next reload. Subject and serial number, as ``openssl crl -text``
        shows it, say which certificate; nothing secret is in either."""
        serial = record.revoked_serial
        first = _first_time(self._revoked_logged, (_normalize(remote)[0], serial))
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "%s: handshake %s %s refused (%s mode): certificate revoked; peer certificate: %s, "
            "serial %s",
            self.name,
            direction,
            format_address(remote),
            mode,
            _subject_for_log(record, peer),
            "unknown" if serial is None else f"{serial:X}",
        )


def _subject_for_log(record: _Verification, peer: x509.Certificate | None) -> str:
    subject = record.leaf_subject
    if subject is None and peer is not None:
        try:
            subject = peer.subject.rfc4514_string()
        except ValueError:
            subject = "<unparseable subject>"
    return "none" if subject is None else _printable(subject)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _warn_if_key_readable(path: Path, transport: str) -> None:
    mode = key_open_to_others(path)
    if mode is not None:
        log.warning(
            "%s: private key %s is readable by group or others (mode %o); chmod 600 it",
            transport,
            path,
            mode,
        )


@hookimpl
def gateway_plugin_config() -> type:
    return TlsConfig


@hookimpl
def gateway_register_transports(registry: Registry[TlsTransport], config: TlsConfig) -> None:
    registry.add(TlsTransport.name, TlsTransport(config))
