"""The ``stir_shaken`` plugin: caller identity on trunk calls as North American (and French,
Canadian) carriers require it (STIR: RFC 8224, RFC 8225; SHAKEN: RFC 8588, ATIS-1000074).

Theory of operation. The plugin registers one caller-identity service
(``gateway_register_caller_identity``, gateway/core/calls/identity.py); the core asks it only
while it is registered, so a gateway without the plugin does nothing per call for it.

- Signing (we are the originating provider): our INVITE to a trunk named in ``sign_trunks``
  gets an ``Identity`` header with a PASSporT signed with ``private_key`` (ES256), whose
  certificate is at ``certificate_url``. Attestation (RFC 8588 §4, ATIS-1000074 §5.2.3): A
  when an account presents one of its own numbers (its DID on that trunk), B when it is
  authenticated but presents another number (the trunk's ``caller_id``); calls from trunks
  passed on are not ours to vouch for: their own Identity goes on unchanged, and one without
  goes unsigned, or with C when ``sign_transit`` is set.
  ``account_attestation`` overrides A/B per account (a PBX customer whose numbers are ported).
  ``origid`` is a UUID per call, the same on every INVITE of the call (failover to another
  trunk), made from the Call-ID and a per-gateway random namespace.
- Verification (we are the terminating provider): an INVITE from a trunk named in
  ``verify_trunks`` has its Identity checked (passport.py, certificates.py, fetch.py): the
  header's form and bounds, alg ES256 and ppt shaken, iat within ``freshness``, orig the
  caller's number (From or P-Asserted-Identity), dest the number called, the x5u certificate
  (HTTPS only, within ``fetch_timeout``, cached; fetched again, at most once a minute, when a
  signature fails with the cached one: a signer's key rotation) chaining to ``trust_anchors``
  with TNAuthList, then the signature, then with ``check_revocation`` none of the chain below
  the anchor of the certificate whose key signed listed in the CRL it names (ATIS-1000080
  §6.4.1: the STI-PA's CRL, fetched like the certificate within the same ``fetch_timeout``,
  kept until its nextUpdate). A revoked certificate fails
  (437 under "reject"); a CRL that cannot be had or believed leaves the call verified but
  marked (``revocation_unavailable = "pass"``, the default: an STI-PA outage must not fail every
  call) or fails it (``"fail"``, 436 as for a certificate that cannot be fetched). The phone
  gets the verdict as ``verstat`` on the caller's number in the From (ATIS-1000074 §5.3.1); the
  call's record says it in words. With ``on_failure =
  "reject"`` a failed check refuses the call: 403 Stale Date, 436 Bad Identity Info, 437
  Unsupported Credential or 438 Invalid Identity Header (RFC 8224 §6.2.2). A call without an
  Identity header (or with none of PASSporT type shaken) goes on as No-TN-Validation, or with
  ``missing_identity = "reject"`` is refused with 428 Use Identity Header (RFC 8224 §6.2.2: a
  verifier that requires one). The two are independent: a carrier that signs every call may
  be held to it without refusing a failed check, and the other way round.
- An emergency call (``[numbering] emergency_numbers``: the core says so in
  ``TrunkCall.emergency``) is never refused by
  either: ATIS-1000074 and the FCC's call-blocking rules do not let caller authentication stand
  between a caller and the emergency services. Its verdict is recorded as for any other call.
"""

from __future__ import annotations

import logging
import math
import re
import ssl
import time
import types
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.core.config import NAMES_TRUNKS, unentered_problem, unreadable_here
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import IdentityOutcome, TrunkCall
from gateway.core.logs import log_exception, system_error_text
from gateway.core.sip.uri import redact_password
from gateway.plugins.stir_shaken.certificates import (
    MAX_CRL_FILE,
    RevocationCheck,
    RevocationList,
    RevocationUnavailable,
    SignerCertificate,
    load_pem_untrusted,
    load_trust_anchors,
    read_crl_untrusted,
    validate_chain,
)
from gateway.plugins.stir_shaken.fetch import (
    CRL_TYPES,
    MAX_CACHED,
    MAX_FAILED_CACHED,
    MAX_FETCHES_PER_HOST,
    CertificateCache,
    Fetcher,
    FetchError,
    fetch_host,
    host_allowed,
    https_fetcher,
    one_spelling,
    shown_host,
    shown_url,
)
from gateway.plugins.stir_shaken.passport import (
    ATTESTATIONS,
    MAX_IDENTITY_HEADER,
    MAX_IDENTITY_HEADERS,
    Claims,
    PassportError,
    canonical_tn,
    check_claims,
    identity_header,
    parse_identity_untrusted,
    sign_passport,
    verify_signature,
    verstat,
)

if TYPE_CHECKING:
    from cryptography import x509

    from gateway.core.interfaces import CallerIdentity
    from gateway.core.plugins import Registry
    from gateway.core.sip.message import Request

log = logging.getLogger(__name__)

MAX_KEY_FILE = 16384
# The least fetch_timeout (s): with 1e-9 no certificate was ever fetched and every verified
# call failed. A fetch is TCP's, TLS's and HTTP's round trips; a TLS handshake alone took
# 0.77 ms at the least on the loopback (the 2-vCPU test host): the floor is a power of ten
# under half that. Under a second an STI-CR across a WAN may not answer in time: allowed (a
# repository on the LAN answers in milliseconds), said by check-config (config_warnings).
MIN_FETCH_TIMEOUT = 1e-4
WARN_FETCH_TIMEOUT = 1.0
# The least freshness (s): iat is whole seconds (RFC 8225 §5.1.1; signers, ours too, drop the
# fraction), so |now - iat| is the transit plus up to a second for a signer that truncates, up
# to half a second for one that rounds. Under half a second a share of every signer's calls
# (whatever its rounding) fails at random as stale; under a second a share of a truncating
# signer's: that is allowed and said by check-config (config_warnings).
MIN_FRESHNESS = 0.5
WARN_FRESHNESS = 1.0
# certificate_cache has no warned band: a tiny one is how an operator says "keep no
# certificate" (there is no 0 for it), a deliberate choice that works (every verified call
# fetches its signer's certificate again), not a mistake for check-config to fail a deployment
# pipeline on.
# Seconds a certificate URL that failed (no answer within fetch_timeout, not fetched, not
# chaining to the anchors) is not fetched again: its calls are marked failed at once meanwhile.
FAILED_CERTIFICATE_RETRY = 60.0
# A signer that rotates its key under the same x5u URL (the URL names "the current
# certificate") makes its new PASSporTs fail against the certificate cached before: a
# signature that does not verify with a cached certificate has the URL fetched again, at most
# once a URL in this many seconds (trio's monotonic clock), so that a forger's calls cannot
# make the gateway fetch on every call. A constant, as FAILED_CERTIFICATE_RETRY: a rotated
# certificate is taken at the first failing call past it, nothing an operator needs to tune.
REFETCH_INTERVAL = 60.0
# The least time a fetched certificate is kept, whatever a max-age above 0 says (seconds):
# ATIS-1000074 §5.3.1 has verifiers cache what a repository asks to cache for less (a day
# there); a max-age=1 made the gateway fetch on nearly every call. The re-fetch interval: a
# repository cannot make the gateway fetch a URL more often than a forger can.
MIN_CERTIFICATE_KEEP = REFETCH_INTERVAL
# What a re-fetch after a failed signature came to (the metric
# voipgw_caller_identity_certificate_refetches_total): a new certificate that chains replaced
# the cached one; the URL served the cached certificate again (a forgery, or a signer that
# signed with another key than its certificate's); or it was not had (no answer by the call's
# deadline, an HTTP or TLS error, not chaining to the anchors).
REFETCH_RESULTS = ("replaced", "unchanged", "failed")
# CRL URLs kept: SHAKEN has one CRL (the STI-PA's, ATIS-1000080 §6.4.1); room for a few more.
MAX_CRLS = 16
# Certificate fetches (first fetches and re-fetches, one per URL) running at once, at most. A
# fetch outlives the call that started it, up to fetch_timeout: a peer whose calls each name a
# new x5u and are CANCELled at once must not pile up HTTPS connections. Carriers' repositories
# are a few dozen URLs. A call past it fails as for a certificate not fetched (436), nothing
# cached; CRL fetches are bounded by MAX_CRLS the same way. Within it, one host has at most
# MAX_FETCHES_PER_HOST (fetch.py): a peer naming new x5u URLs on one unreachable host, or one
# carrier's slow repository, leaves the other hosts' certificates their slots. Host names cost a
# forger nothing (a wildcard DNS name: a.evil.example, b.evil.example ...; an IP address's
# spellings are counted as one host, fetch.one_spelling), so each trunk in verify_trunks also
# has a share of them (StirShaken.trunk_share): one trunk's forged Identity headers hold at most
# its share, never another trunk's. certificate_hosts is what bounds where fetches go, and run
# and check-config warn when verification runs without it.
MAX_FETCHES = 100
# RFC 8224 §6.2.2 and §13: the reason phrase of each status a failed check may refuse with.
REFUSALS = {
    403: "Stale Date",
    436: "Bad Identity Info",
    437: "Unsupported Credential",
    438: "Invalid Identity Header",
}


# A DNS name or an IP address, optionally with a leading dot (the domain's hosts): no scheme,
# port, path or wildcard.
_HOST_NAME = re.compile(r"\.?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def _read_only(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return types.MappingProxyType(dict(mapping))


def _host_names(hosts: tuple[str, ...]) -> tuple[str, ...]:
    """``certificate_hosts`` entries, lower case: a host name or ``.domain`` (its hosts); an IP
    address in the one spelling a URL's is compared in (fetch.one_spelling: ``0x7f.1`` is
    127.0.0.1)."""
    names = tuple(host.lower().rstrip(".") for host in hosts)
    for name in names:
        if not _HOST_NAME.fullmatch(name):
            raise ValueError(
                f"certificate_hosts: expected a host name (certs.example.net) or a domain "
                f"(.example.net), not {name!r}"
            )
    return tuple(name if name.startswith(".") else one_spelling(name) for name in names)


@attrs.frozen
class StirShakenConfig:
    """``[plugins.stir_shaken]``. See docs/configuration.md."""

    certificate_url: str = ""
    private_key: str = ""
    sign_trunks: tuple[str, ...] = attrs.field(default=(), metadata=NAMES_TRUNKS)
    account_attestation: Mapping[str, str] = attrs.field(
        factory=dict, converter=_read_only, hash=False
    )
    sign_transit: bool = False
    verify_trunks: tuple[str, ...] = attrs.field(default=(), metadata=NAMES_TRUNKS)
    trust_anchors: str = ""
    fetch_ca_file: str = ""
    certificate_hosts: tuple[str, ...] = attrs.field(default=(), converter=_host_names)
    fetch_timeout: float = 2.0
    freshness: float = 60.0
    certificate_cache: float = 3600.0
    require_tn_auth_list: bool = True
    on_failure: Literal["mark", "reject"] = "mark"
    missing_identity: Literal["mark", "reject"] = "mark"
    check_revocation: bool = True
    revocation_unavailable: Literal["pass", "fail"] = "pass"

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of this table; each names its key.
        if self.sign_trunks:
            if not self.certificate_url.startswith("https://"):
                raise ValueError(
                    "certificate_url: signing (sign_trunks) needs the https URL of the "
                    f"certificate, not {redact_password(self.certificate_url)!r}"
                )
            # Read now, not at the first call; but by voipgw check-config run as another user
            # than the service's (a key of mode 600): a warning, the key left unchecked.
            if not unreadable_here(Path(self.private_key), "private_key"):
                self.signing_key()
        for account, level in self.account_attestation.items():
            if level not in ATTESTATIONS:
                raise ValueError(
                    f"account_attestation: account {account!r}: expected A, B or C, not {level!r}"
                )
        if self.verify_trunks:
            self.anchors()
            self.fetch_context()
        if not self.certificate_cache > 0:
            raise ValueError(
                f"certificate_cache: expected a positive number of seconds, "
                f"got {self.certificate_cache:g}"
            )
        if not self.fetch_timeout >= MIN_FETCH_TIMEOUT:
            raise ValueError(
                f"fetch_timeout: expected a positive number of seconds, "
                f"at least {MIN_FETCH_TIMEOUT:.4f} (an https "
                f"fetch is TCP's, TLS's and HTTP's round trips), got {self.fetch_timeout:g}"
            )
        if not self.freshness >= MIN_FRESHNESS:
            raise ValueError(
                f"freshness: expected a positive number of seconds, "
                f"at least {MIN_FRESHNESS:g} (iat is whole "
                f"seconds, RFC 8225 §5.1.1), got {self.freshness:g}"
            )

    def config_warnings(self) -> list[str]:
        """``"KEY: why"`` for values the gateway runs with that fail some calls, or work only
        where the network is a LAN: errors of ``voipgw check-config``, warnings of ``voipgw
        run``."""
        warnings = []
        if self.fetch_timeout < WARN_FETCH_TIMEOUT:
            warnings.append(
                f"fetch_timeout: {self.fetch_timeout:g} s works only with a certificate "
                f"repository on the host or the LAN: under {WARN_FETCH_TIMEOUT:g} s one across "
                "a WAN (TCP's, TLS's and HTTP's round trips) fails the verification of its calls"
            )
        if self.freshness < WARN_FRESHNESS:
            warnings.append(
                f"freshness: {self.freshness:g} s refuses a share of the calls at random as "
                "stale: iat is whole seconds (RFC 8225 §5.1.1), and a signer that drops the "
                f"fraction (most do) makes it up to a second old at once; {WARN_FRESHNESS:g} s "
                "or more"
            )
        return warnings

    def config_notes(self) -> list[str]:
        """``"KEY: why"`` for a choice the gateway runs with that an operator should know the
        cost of: warnings of ``voipgw check-config`` and of ``voipgw run``, never errors (the
        default that was always allowed stays allowed)."""
        notes = []
        if not (self.sign_trunks or self.verify_trunks):
            # Said at run by the register hook too, in its own line (kept for log watchers).
            notes.append(
                "sign_trunks: empty, and so is verify_trunks: the plugin is enabled but signs "
                "and verifies no call; list the trunks whose INVITEs it signs (sign_trunks) and "
                'those whose Identity it verifies (verify_trunks), or take "stir_shaken" out '
                "of [plugins] enable"
            )
        if self.verify_trunks and not self.certificate_hosts:
            notes.append(
                "certificate_hosts: empty, so a trunk in verify_trunks chooses where the gateway "
                "fetches certificates: each Identity's x5u may name any host, internal ones "
                f"too, and a peer naming a new unreachable URL in each call holds its trunk's "
                f"share of the {MAX_FETCHES} certificate fetches that may run at once (all of "
                "them for the only trunk in verify_trunks; a call from that trunk whose "
                'certificate is not cached then fails, 436 under on_failure = "reject"); list '
                "the STI-CR hosts of your peers' certificates and the STI-PA's CRL host, e.g. "
                'certificate_hosts = [".carrier.example", "crl.sti-pa.example"]'
            )
        return notes

    def signing_key(self) -> ec.EllipticCurvePrivateKey:
        """``private_key`` loaded; a ValueError names the key and the file, never its bytes."""
        path = Path(self.private_key)
        if not self.private_key:
            raise ValueError("private_key: signing (sign_trunks) needs a P-256 key file")
        unreached = unentered_problem(path)
        if unreached is not None:
            # stat(2) failing with EACCES: the directory is the fault, not the file.
            raise ValueError(f"private_key: {unreached}")
        try:
            data = path.read_bytes()[: MAX_KEY_FILE + 1]
        except OSError as exc:
            raise ValueError(f"private_key: cannot read {path}: {exc.strerror}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise ValueError(f"private_key: {path}: the key is encrypted") from None
        except ValueError:
            raise ValueError(f"private_key: {path}: not a PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError(f"private_key: {path}: not a P-256 (prime256v1) EC key")
        return key

    def anchors(self) -> list[x509.Certificate]:
        """The STI-PA trust anchors of ``trust_anchors``."""
        path = Path(self.trust_anchors)
        if not self.trust_anchors:
            raise ValueError("trust_anchors: verification (verify_trunks) needs the STI-PA roots")
        try:
            return load_trust_anchors(path.read_bytes())
        except OSError as exc:
            raise ValueError(f"trust_anchors: cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ValueError(f"trust_anchors: {path}: not a PEM bundle ({exc})") from None

    def fetch_context(self) -> ssl.SSLContext:
        """How the HTTPS server of a certificate is checked: the system's trust store, or
        ``fetch_ca_file``."""
        try:
            return ssl.create_default_context(cafile=self.fetch_ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            # In the system's and OpenSSL's words (ENOENT, SSLError NO_CERTIFICATE_OR_CRL_FOUND),
            # not Python's text, which names the file again.
            why = system_error_text(exc)
            raise ValueError(f"fetch_ca_file: cannot use {self.fetch_ca_file}: {why}") from None


class StirShaken:
    """The ``stir_shaken`` caller-identity service (``interfaces.CallerIdentity``)."""

    def __init__(
        self,
        config: StirShakenConfig,
        *,
        fetcher: Fetcher | None = None,
        crl_fetcher: Fetcher | None = None,
        clock: Callable[[], float] = time.time,
        namespace: uuid.UUID | None = None,
    ) -> None:
        self.config = config
        # A key voipgw check-config, run as another user than the service's, may not read is
        # its warning (StirShakenConfig), not read here either: check-config never signs.
        self._key = (
            config.signing_key()
            if config.sign_trunks and not unreadable_here(Path(config.private_key), "private_key")
            else None
        )
        self._sign_trunks = frozenset(config.sign_trunks)
        self._verify_trunks = frozenset(config.verify_trunks)
        self._anchors = config.anchors() if config.verify_trunks else []
        if fetcher is None and config.verify_trunks:
            context = config.fetch_context()
            fetcher = https_fetcher(context)
            crl_fetcher = crl_fetcher or https_fetcher(
                context, max_body=MAX_CRL_FILE, accept=CRL_TYPES
            )
        self._fetch = fetcher
        self._fetch_crl = crl_fetcher or fetcher  # a test's fetcher serves both
        self.clock = clock
        self._namespace = namespace or uuid.uuid4()
        self.cache = CertificateCache(max_cache=config.certificate_cache)
        # Certificate URLs that failed, apart from the certificates: a failure never pushes a
        # good certificate out of the cache (MAX_FAILED_CACHED, fewer, each FAILED_CERTIFICATE_
        # RETRY long, whatever certificate_cache is).
        self.failures = CertificateCache(max_cache=math.inf, max_entries=MAX_FAILED_CACHED)
        # The nursery of run(): every certificate and CRL fetch is a task of it, never of the
        # call that asked first (the calls only wait), so that a call's end does not end it.
        self._nursery: trio.Nursery | None = None
        # A trunk's share of the MAX_FETCHES certificate fetches: all of them when one trunk is
        # verified; with several, each trunk's forged Identity headers (a new x5u on a new
        # host in each call) hold no more than its part, and the others keep theirs. At least
        # a host's MAX_FETCHES_PER_HOST, as a carrier's repository has.
        self.trunk_share = max(
            MAX_FETCHES_PER_HOST, MAX_FETCHES // max(1, len(self._verify_trunks))
        )
        self._fetching = _Fetches("certificate", MAX_FETCHES, self.trunk_share)  # x5u URLs
        # x5u URLs fetched again after a signature failed, and when that fetch finished (trio
        # time), oldest first: entries leave once REFETCH_INTERVAL has passed.
        self._refetched: dict[str, float] = {}
        self.certificate_refetches: dict[str, int] = dict.fromkeys(REFETCH_RESULTS, 0)
        """Those fetches since the start, by result (:data:`REFETCH_RESULTS`; the metric
        ``voipgw_caller_identity_certificate_refetches_total``)."""
        # CRLs by URL until their nextUpdate (no other ceiling: RFC 5280 §5.1.2.5).
        self.crls = CertificateCache(max_cache=math.inf, max_entries=MAX_CRLS)
        # CRL URLs that failed, apart from the CRLs, as certificates' failures are: a CRL URL
        # that failed never pushes a good CRL out of the MAX_CRLS (each one pushed out is
        # fetched again at its next call).
        self.crl_failures = CertificateCache(max_cache=math.inf, max_entries=MAX_FAILED_CACHED)
        # CRL URLs come from certificates that chain to the trust anchors (a CA chose them, not
        # a caller): bounded by host and in all, with no trunk's share.
        self._crl_fetching = _Fetches("CRL", MAX_CRLS, MAX_CRLS)
        # Set (and replaced) whenever a fetch finishes: the calls waiting for a slot of a host
        # or of a trunk look again (_waited_for_slot).
        self._fetch_finished = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The service's task, from the gateway's start to its stop (the core starts it, as it
        starts a media tap's or a monitoring service's): the nursery the certificate and CRL
        fetches run in. A fetch belongs to its URL, not to the call that asked first: a call
        that goes away while it runs (CANCEL, the gateway ending it) leaves it running for the
        other calls that wait for the same URL, and its certificate for the cache."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def _waited_for_slot(self, deadline: float) -> bool:
        """After :meth:`_Fetches.no_room` said a host's or a trunk's share is full: False when
        ``deadline`` (trio time) passed; else True once a fetch finished or the deadline came,
        for the caller to look again (the cache, a fetch of the URL started meanwhile, a slot).
        A share full is waited out, as a browser queues its requests past its connections to
        one server: a carrier's repository asked for more certificates at once than its share
        (a burst of calls after a restart, the cache empty) has the calls past it wait within
        their own fetch_timeout, not fail. (The fetches' limit in all is refused at once.)"""
        if trio.current_time() >= deadline:
            return False
        with trio.move_on_at(deadline):
            await self._fetch_finished.wait()
        return True

    def _start_fetch(
        self,
        fetches: _Fetches,
        url: str,
        trunk: str,
        work: Callable[..., Awaitable[SignerCertificate | RevocationList]],
        *args: object,
    ) -> _Fetch:
        """``work(*args)``, the fetch of ``url`` a call from ``trunk`` asked for, started in
        :meth:`run`'s nursery and listed (and counted by host and trunk) in ``fetches`` until
        it finished, for the calls that wait for it."""
        if self._nursery is None:
            raise RuntimeError("stir_shaken: the service's run() is not running (it holds fetches)")
        fetch = _Fetch(host=fetch_host(url), trunk=trunk)
        # Listed and counted once its task exists (start_soon raises for a nursery closed as
        # the gateway stops): a fetch counted with no task to end it would hold its host's and
        # trunk's slots, and have every call needing its URL wait for it, until the restart.
        # The task cannot end before it is listed: it runs at the next checkpoint, not here.
        self._nursery.start_soon(self._run_fetch, fetches, url, fetch, work, args)
        fetches.add(url, fetch)
        return fetch

    async def _run_fetch(
        self,
        fetches: _Fetches,
        url: str,
        fetch: _Fetch,
        work: Callable[..., Awaitable[SignerCertificate | RevocationList]],
        args: tuple[object, ...],
    ) -> None:
        """One fetch, to its end whatever becomes of the calls waiting for it (each waits until
        its own deadline): its checked result or its failure for all of them; neither when the
        gateway stopped it, or when it raised what no fetch should (a bug: logged here, once,
        and not the end of the other fetches)."""
        try:
            fetch.result = await work(*args)
        except (PassportError, RevocationUnavailable) as err:
            fetch.error = err
        except Exception:
            log_exception(log, "stir_shaken: the fetch of %s failed", shown_url(url))
        finally:
            fetches.remove(url, fetch)
            fetch.done.set()
            self._fetch_finished.set()  # a slot free: the calls waiting for one look again
            self._fetch_finished = trio.Event()

    # -- signing ----------------------------------------------------------------------------

    def sign(self, call: TrunkCall) -> IdentityOutcome | None:
        if call.trunk not in self._sign_trunks or self._key is None:
            return None
        if call.caller_kind == "trunk" and call.received_identity:
            # A transit call (ATIS-1000074 §5.3.1): the originating provider's PASSporT goes
            # on unchanged; its orig and dest are canonical numbers, whatever format the next
            # trunk is sent them in.
            return IdentityOutcome(
                outcome="passed_on",
                described=f"caller's Identity passed on to trunk {call.trunk}",
                headers=tuple(
                    ("Identity", value)
                    for value in call.received_identity[:MAX_IDENTITY_HEADERS]
                    if len(value) <= MAX_IDENTITY_HEADER
                ),
            )
        attest = self.attestation(call)
        orig = canonical_tn(call.calling[0]) if call.calling else ""
        dest = canonical_tn(call.called or "")
        if attest is None or not orig or not dest:
            return None  # a transit call, or no number to vouch for (anonymous, a user name)
        claims = Claims(
            attest=attest,
            orig=orig,
            dest=(dest,),
            iat=int(call.at),
            origid=str(uuid.uuid5(self._namespace, call.call_id)),
        )
        url = self.config.certificate_url
        header = identity_header(sign_passport(claims, url, self._key), url)
        return IdentityOutcome(
            outcome="signed",
            described=f"caller number signed for trunk {call.trunk} (attestation {attest})",
            headers=(("Identity", header),),
        )

    def attestation(self, call: TrunkCall) -> str | None:
        """RFC 8588 §4: A for an account's own number, B for an account's other number, C
        for a call passed on from a trunk (only with ``sign_transit``; else None: unsigned)."""
        if call.caller_kind == "account":
            override = self.config.account_attestation.get(call.caller_name or "")
            return override or ("A" if call.own_number else "B")
        return "C" if self.config.sign_transit else None

    # -- verification -----------------------------------------------------------------------

    def check(self, call: TrunkCall, request: Request) -> Verification | None:
        if call.trunk not in self._verify_trunks:
            return None
        return Verification(self, call, request.headers.get_all("Identity"))

    async def signer(
        self, url: str, deadline: float | None = None, *, trunk: str = ""
    ) -> tuple[ec.EllipticCurvePublicKey, str | None]:
        """The public key of the certificate at ``url`` once it chains to a trust anchor and,
        with ``check_revocation``, none of its chain is in the CRLs it names; with it, None, or
        why revocation could not be checked (``revocation_unavailable = "pass"``). Certificate
        and CRLs are fetched unless cached, all by ``deadline`` (trio time; default: one
        ``fetch_timeout`` from now): a call never waits longer for them; a certificate fetch it
        starts counts in ``trunk``'s share (:attr:`trunk_share`). PassportError for a
        certificate that fails (revoked: 437)."""
        if deadline is None:
            deadline = trio.current_time() + self.config.fetch_timeout
        signer, _ = await self._signer_certificate(url, deadline, trunk)
        return signer.key, await self.revocation_status(signer, deadline)

    async def revocation_status(self, signer: SignerCertificate, deadline: float) -> str | None:
        """:meth:`revocation` when ``check_revocation`` has anything to look up, else None."""
        if not (self.config.check_revocation and (signer.revocation or signer.no_crl)):
            return None
        return await self.revocation(signer, deadline)

    async def signer_certificate(
        self, url: str, deadline: float, *, trunk: str = ""
    ) -> SignerCertificate:
        """The certificate at ``url`` once it chains to a trust anchor, unless cached fetched
        (a task of :meth:`run`, shared by the calls that need it meanwhile) and waited for
        until ``deadline`` (trio time). What is cached is the checked certificate, kept for the
        answer's max-age and never past the chain's first expiry, so a call with a cached signer
        costs one ECDSA verification. A failure (no answer, not fetched, not chaining) is kept
        for :data:`FAILED_CERTIFICATE_RETRY`: while a carrier's certificate server is down, each
        of its calls would otherwise wait ``fetch_timeout`` to ring. A fetch it starts counts
        in the share of ``trunk`` (the trunk whose call asks: :attr:`trunk_share`)."""
        signer, _ = await self._signer_certificate(url, deadline, trunk)
        return signer

    async def _signer_certificate(
        self, url: str, deadline: float, trunk: str = ""
    ) -> tuple[SignerCertificate, bool]:
        """:meth:`signer_certificate`, and whether it came from the cache (True), not from a
        fetch for this call or one it waited for."""
        if not host_allowed(url, self.config.certificate_hosts):
            raise PassportError(
                "certificate URL's host not in certificate_hosts", outcome="bad_info", status=436
            )
        while True:
            now = self.clock()
            cached = self.cache.get(url, now)
            if isinstance(cached, SignerCertificate):
                return cached, True
            failed = self.failures.get(url, now)
            if isinstance(failed, PassportError):
                raise PassportError(
                    f"{failed.reason} (less than {FAILED_CERTIFICATE_RETRY:g} s ago)",
                    outcome=failed.outcome,
                    status=failed.status,
                )
            # One fetch for every call that needs it meanwhile (a burst of calls after a
            # carrier's new certificate), which each waits for until its own deadline.
            fetch = self._fetching.running.get(url)
            if fetch is not None:
                break
            full = self._fetching.no_room(url, trunk)
            if full is None:
                fetch = self._start_fetch(self._fetching, url, trunk, self._fetch_certificate, url)
                break
            why, may_wait = full
            if not (may_wait and await self._waited_for_slot(deadline)):
                raise PassportError(
                    f"certificate not fetched: {why}", outcome="bad_info", status=436
                )
        with trio.move_on_at(deadline):
            await fetch.done.wait()
        if isinstance(fetch.result, SignerCertificate):
            return fetch.result, False
        if isinstance(fetch.error, PassportError):
            error = fetch.error  # raised anew: one exception raised in every waiting call's task
            raise PassportError(error.reason, outcome=error.outcome, status=error.status)
        if fetch.done.is_set():
            raise PassportError("certificate fetch did not finish", outcome="bad_info", status=436)
        raise PassportError("certificate fetch timed out", outcome="bad_info", status=436)

    async def _fetch_certificate(self, url: str) -> SignerCertificate:
        """The first fetch of ``url`` (:meth:`_signer_certificate`), within one fetch_timeout
        of its own; a failure is kept for :data:`FAILED_CERTIFICATE_RETRY`."""
        now = self.clock()
        try:
            return await self._fetch_signer(
                url, now, trio.current_time() + self.config.fetch_timeout
            )
        except PassportError as err:
            # Not capped by certificate_cache: a tiny one (keep no certificate) would otherwise
            # make each call wait fetch_timeout again while the server is down. Kept apart
            # from the certificates (self.failures): a stranger's failed URLs, one a call,
            # must not push good certificates out.
            self.failures.put(url, err, max_age=FAILED_CERTIFICATE_RETRY, now=now)
            raise

    async def renewed_signer(
        self, url: str, stale: SignerCertificate, deadline: float, *, trunk: str = ""
    ) -> SignerCertificate | None:
        """The certificate at ``url`` fetched again, bypassing the cache, when a signature did
        not verify with the cached ``stale`` one: a signer that rotated its key under the same
        URL. None when it is the same certificate (a forgery, or a signer's mistake), when the
        URL was fetched again less than :data:`REFETCH_INTERVAL` ago (a forger's calls must not
        make the gateway fetch on every call), when the fetch fails (the cached certificate
        stays: calls signed before the rotation still verify with it), or when ``deadline``
        comes first. Calls that fail at once share one fetch, each waiting until its own
        ``deadline``; the fetch itself has one fetch_timeout and goes on when the call that
        started it ends. A new certificate that chains to the anchors replaces the cached one,
        said at INFO (URL, subject, serial). Each re-fetch is counted in
        :attr:`certificate_refetches` and uses up the URL's interval once it finished (a
        certificate, or a failure: not fetched, timed out, not chaining); one the gateway's
        stop cut short does neither. It counts in ``trunk``'s share (:attr:`trunk_share`)."""
        # Another call fetched it again meanwhile (between this call's cache look-up and now).
        while True:
            cached = self.cache.get(url, self.clock())
            if isinstance(cached, SignerCertificate) and not _same_certificate(cached, stale):
                return cached
            fetch = self._fetching.running.get(url)
            if fetch is not None:
                break
            now = trio.current_time()
            self._forget_refetches(now)
            if url in self._refetched:
                return None  # the URL was fetched again less than a minute ago
            full = self._fetching.no_room(url, trunk)
            if full is not None:
                why, may_wait = full
                if may_wait and await self._waited_for_slot(deadline):
                    continue  # a slot of the host or trunk may be free: looked at again
                # Not a re-fetch (neither counted nor spending the URL's minute): the next call
                # that fails with the cached certificate asks again. Said, or a rotated key's
                # calls would fail for no reason the log gives.
                log.info(
                    "stir_shaken: certificate %s not fetched again after a signature failed: %s",
                    shown_url(url),
                    why,
                )
                return None
            if now >= deadline:
                # The call's time is up (the minute's fetch kept for a call that has some).
                return None
            fetch = self._start_fetch(
                self._fetching, url, trunk, self._refetch_certificate, url, stale
            )
            break
        with trio.move_on_at(deadline):
            await fetch.done.wait()
        renewed = fetch.result
        if isinstance(renewed, SignerCertificate) and not _same_certificate(renewed, stale):
            return renewed
        return None

    async def _refetch_certificate(self, url: str, stale: SignerCertificate) -> SignerCertificate:
        """A re-fetch of ``url`` (:meth:`renewed_signer`), within one fetch_timeout of its own:
        counted and said once it finished. What the URL serves is kept in the cache (the same
        certificate kept again from now; a new one in place of the old); a failure is not
        (the cached certificate stays: its own calls still verify)."""
        try:
            renewed = await self._fetch_signer(
                url, self.clock(), trio.current_time() + self.config.fetch_timeout
            )
        except PassportError as err:
            self._refetch_finished(url, "failed")
            log.info(
                "stir_shaken: certificate %s not fetched again after a signature failed: %s",
                shown_url(url),
                err.reason,
            )
            raise
        if _same_certificate(renewed, stale):
            self._refetch_finished(url, "unchanged")
            return renewed
        self._refetch_finished(url, "replaced")
        log.info(
            "stir_shaken: certificate %s changed: now %s, serial %x",
            shown_url(url),
            renewed.subject,
            renewed.serial,
        )
        return renewed

    def _refetch_finished(self, url: str, result: str) -> None:
        """A re-fetch of ``url`` finished with ``result``: counted, and the URL not fetched
        again for :data:`REFETCH_INTERVAL` from now."""
        self.certificate_refetches[result] += 1
        self._refetched.pop(url, None)  # kept in the order of the times, oldest first
        self._refetched[url] = trio.current_time()
        if len(self._refetched) > MAX_CACHED:
            # Bounded as the cache: URLs a forger names by the thousand within a minute lose
            # their interval, the oldest first (each was a fetch, as each new one would be).
            del self._refetched[next(iter(self._refetched))]

    def _forget_refetches(self, now: float) -> None:
        """Drop the URLs whose :data:`REFETCH_INTERVAL` has passed (from the oldest on)."""
        refetched = self._refetched
        while refetched:
            url, at = next(iter(refetched.items()))
            if now - at < REFETCH_INTERVAL:
                break
            del refetched[url]

    async def _fetch_signer(self, url: str, now: float, deadline: float) -> SignerCertificate:
        assert self._fetch is not None
        fetched = None
        with trio.move_on_at(deadline):
            try:
                fetched = await self._fetch(url)
            except FetchError as exc:
                raise PassportError(
                    f"certificate not fetched: {exc}", outcome="bad_info", status=436
                ) from None
        if fetched is None:
            raise PassportError("certificate fetch timed out", outcome="bad_info", status=436)
        signer = validate_chain(
            load_pem_untrusted(fetched.body),
            self._anchors,
            now=now,
            require_tn_auth_list=self.config.require_tn_auth_list,
        )
        if signer.no_crl and self.config.check_revocation:
            # Once a fetch. The URL is a peer's x5u: shown without any password it holds.
            log.warning("stir_shaken: certificate %s: %s", shown_url(url), signer.no_crl)
        # ATIS-1000074 §5.3.1: an answer without caching directives, or that says to cache
        # for less than a day, is cached by the verifier all the same (a day there;
        # certificate_cache, an hour by default, here, as Asterisk's max_cache_entry_age).
        # max-age=0 is such an answer: not kept at all, every verified call would wait for the
        # repository (up to fetch_timeout) and one slow or down would fail calls an earlier
        # release verified from its cache. A max-age above 0 is kept at least
        # MIN_CERTIFICATE_KEEP (max-age=1 had the gateway fetch on nearly every call): a
        # rotated certificate is taken at the first signature that fails (renewed_signer).
        # no-store and no-cache are not looked at: RFC 9111 §5.2.2.4-5 bind HTTP caches,
        # and this is a verifier's store of checked keys, which ATIS-1000074 asks it to keep.
        # certificate_cache bounds it all (a tiny one keeps nothing: the operator's choice),
        # and the chain's first notAfter (RFC 5280 §4.1.2.5) comes before any of it.
        if fetched.max_age:
            fresh = max(fetched.max_age, MIN_CERTIFICATE_KEEP)
        else:
            fresh = self.config.certificate_cache
        max_age = min(fresh, signer.valid_until - now)
        self.cache.put(url, signer, max_age=max_age, now=now)
        return signer

    async def revocation(self, signer: SignerCertificate, deadline: float) -> str | None:
        """ATIS-1000080 §6.4.1: each certificate of the chain below the anchor looked up in the
        CRL it names. PassportError 437 for a listed one (RFC 8224 §6.2.2: the credential is
        what fails, not the header); None when none is; else why a CRL was unavailable, or the
        end entity named none (or PassportError 436 under ``revocation_unavailable =
        "fail"``)."""
        unavailable = None
        for check in signer.revocation:
            try:
                crl = self._issued_for(
                    await self.revocation_list(check.crl_url, signer, deadline), check
                )
            except RevocationUnavailable as exc:
                unavailable = unavailable or self.revocation_unknown(exc.reason)
                continue
            if crl.lists(check):
                raise PassportError(
                    f"certificate revoked ({check.subject})", outcome="revoked", status=437
                )
        # Asked after the CRLs the chain does name: a revoked intermediate says more.
        if signer.no_crl:
            unavailable = unavailable or self.revocation_unknown(signer.no_crl)
        return unavailable

    def revocation_unknown(self, reason: str) -> str:
        """What a certificate whose revocation cannot be looked up gets: words for the call's
        record (``revocation_unavailable = "pass"``), or PassportError 436 (``"fail"``)."""
        if self.config.revocation_unavailable == "fail":
            raise PassportError(
                f"revocation not checked: {reason}", outcome="revocation_unknown", status=436
            )
        return f"revocation not checked: {reason}"

    async def revocation_list(
        self, url: str, signer: SignerCertificate, deadline: float
    ) -> RevocationList:
        """The CRL at ``url``, signed by a trust anchor or a CA of ``signer``'s chain, fetched by
        ``deadline`` unless cached; kept until its nextUpdate, or a failure for
        :data:`FAILED_CERTIFICATE_RETRY`, and fetched once for a burst of calls, as a
        certificate is. The URL comes from a certificate, so ``certificate_hosts`` bounds it
        too (CWE-918)."""
        if not host_allowed(url, self.config.certificate_hosts):
            raise RevocationUnavailable("CRL URL's host not in certificate_hosts")
        while True:
            now = self.clock()
            cached = self.crls.get(url, now)
            if isinstance(cached, RevocationList):
                return self._signed_for(cached, signer)
            failed = self.crl_failures.get(url, now)
            if isinstance(failed, RevocationUnavailable):
                raise RevocationUnavailable(
                    f"{failed.reason} (less than {FAILED_CERTIFICATE_RETRY:g} s ago)"
                )
            fetch = self._crl_fetching.running.get(url)
            if fetch is not None:
                break
            full = self._crl_fetching.no_room(url, "")
            if full is None:
                fetch = self._start_fetch(
                    self._crl_fetching, url, "", self._fetch_crl_kept, url, signer
                )
                break
            why, may_wait = full
            if not (may_wait and await self._waited_for_slot(deadline)):
                raise RevocationUnavailable(why)
        with trio.move_on_at(deadline):
            await fetch.done.wait()
        if isinstance(fetch.result, RevocationList):
            return self._signed_for(fetch.result, signer)
        if isinstance(fetch.error, RevocationUnavailable):
            raise RevocationUnavailable(fetch.error.reason)
        if fetch.done.is_set():
            raise RevocationUnavailable("CRL fetch did not finish")
        raise RevocationUnavailable("CRL fetch timed out")

    @staticmethod
    def _signed_for(crl: RevocationList, signer: SignerCertificate) -> RevocationList:
        """``crl`` once a trust anchor or a CA of ``signer``'s chain signed it: the CRL of a
        URL is fetched and kept once for every chain that names it, but whether it may speak
        for a chain is that chain's question (an intermediate's CRL says nothing of another
        intermediate's certificates), asked of each."""
        if not crl.signed_by(signer.crl_signers):
            raise RevocationUnavailable("CRL not signed by the trust anchors")
        return crl

    @staticmethod
    def _issued_for(crl: RevocationList, check: RevocationCheck) -> RevocationList:
        """``crl`` once it may say whether the certificate of ``check`` is revoked: RFC 5280
        §6.3.3 (b) takes a CRL for a certificate only from the certificate's own issuer (a
        complete CRL) or from a CRL issuer the certificate names in its distribution point
        (cRLIssuer: the STI-PA's, ATIS-1000080 §6.4.1, an indirect CRL). Which CA of the
        chain, or which trust anchor, signed it is :meth:`_signed_for`'s question; this one is
        whether that signature speaks for this certificate: a CRL an intermediate signed
        covers the certificates that intermediate issued, not the intermediate itself."""
        judged = crl.judged(check)
        if not crl.issued_for(check):
            reason = (
                f"CRL of {crl.issuer} does not cover {check.subject} (RFC 5280 §6.3.3: "
                "neither its issuer nor a CRL issuer it names)"
            )
            if not judged:
                # Said once a CRL and a fetch of the certificate (the verdict is kept with the
                # CRL), as every other reason a CRL cannot be used is: at upgrade from before
                # session 40 such chains went from passed to passed_revocation_unknown, and the
                # metric alone does not say why.
                log.warning("stir_shaken: CRL %s unavailable: %s", shown_url(check.crl_url), reason)
            raise RevocationUnavailable(reason)
        return crl

    async def _fetch_crl_kept(self, url: str, signer: SignerCertificate) -> RevocationList:
        """The fetch of the CRL at ``url`` (:meth:`revocation_list`) that ``signer``'s chain
        asked for first, within one fetch_timeout of its own; a failure is said once and kept
        for :data:`FAILED_CERTIFICATE_RETRY`."""
        now = self.clock()
        try:
            return await self._fetch_revocation_list(
                url, signer, now, trio.current_time() + self.config.fetch_timeout
            )
        except RevocationUnavailable as err:
            log.warning("stir_shaken: CRL %s unavailable: %s", shown_url(url), err.reason)
            # Apart from the CRLs (self.crl_failures), as a certificate URL's failure is.
            self.crl_failures.put(url, err, max_age=FAILED_CERTIFICATE_RETRY, now=now)
            raise

    async def _fetch_revocation_list(
        self, url: str, signer: SignerCertificate, now: float, deadline: float
    ) -> RevocationList:
        assert self._fetch_crl is not None
        fetched = None
        with trio.move_on_at(deadline):
            try:
                fetched = await self._fetch_crl(url)
            except FetchError as exc:
                raise RevocationUnavailable(f"CRL not fetched: {exc}") from None
        if fetched is None:
            raise RevocationUnavailable("CRL fetch timed out")
        # Read and dated once; its signature is each chain's to check (_signed_for), but for
        # a trust anchor's, checked here once.
        crl = read_crl_untrusted(fetched.body, self._anchors, now=now)
        keep = crl.next_update - now
        if not crl.anchor_signed:
            # Its nextUpdate is a claim no trust anchor signed (an intermediate's CRL, or one
            # nobody's chain will believe): kept no longer than a certificate, so that a bad
            # answer does not stand until whatever date it names.
            keep = min(keep, self.config.certificate_cache)
            if not crl.signed_by(signer.crl_signers):
                # Neither a trust anchor nor the CAs of the chain that asked for it signed it:
                # said, and fetched again after FAILED_CERTIFICATE_RETRY, as an unverifiable
                # CRL always was (a repository that served a wrong one is asked again a minute
                # later, not at certificate_cache). Kept that minute all the same, for a chain
                # whose intermediate did sign it: whichever chain asks first must not decide
                # for the others (_signed_for).
                log.warning(
                    "stir_shaken: CRL %s unavailable: CRL not signed by the trust anchors",
                    shown_url(url),
                )
                keep = min(keep, FAILED_CERTIFICATE_RETRY)
        self.crls.put(url, crl, max_age=keep, now=now)
        return crl

    def outcome(
        self,
        outcome: str,
        described: str,
        status: int | None = None,
        *,
        emergency: bool = False,
    ) -> IdentityOutcome:
        """The verdict on a trunk's call; a failure (``status``) refuses it under ``on_failure =
        "reject"``, but never an emergency call."""
        reject = None
        if status is not None and self.config.on_failure == "reject":
            if emergency:
                described += "; an emergency call is not refused"
            else:
                reject = (status, REFUSALS.get(status, "Invalid Identity Header"))
        return IdentityOutcome(
            outcome=outcome,
            described=described,
            caller_parameters=(("verstat", verstat(outcome)),),
            reject=reject,
        )

    def not_validated(self, outcome: str, why: str, *, emergency: bool) -> IdentityOutcome:
        """A trunk's call with nothing to verify (``outcome`` "no_identity", or "unsupported":
        no PASSporT of type shaken): No-TN-Validation, or under ``missing_identity = "reject"``
        refused with 428 Use Identity Header (RFC 8224 §6.2.2), but never an emergency call."""
        if self.config.missing_identity != "reject":
            return self.outcome(outcome, f"caller number not verified ({why})")
        if emergency:
            return self.outcome(
                outcome, f"caller number not verified ({why}; an emergency call is not refused)"
            )
        return IdentityOutcome(
            outcome="no_identity_refused",
            described=f"call refused: no Identity to verify ({why})",
            caller_parameters=(("verstat", verstat(outcome)),),
            reject=(428, "Use Identity Header"),
        )


def _same_certificate(one: SignerCertificate, other: SignerCertificate) -> bool:
    return one.serial == other.serial and one.key == other.key


@attrs.define
class _Fetch:
    """One x5u certificate or CRL fetch, a task of :meth:`StirShaken.run`, which the calls
    that need the URL meanwhile wait for: its checked result or its failure once ``done``
    (neither: the gateway stopped it, or it failed unexpectedly)."""

    host: str  # the URL's (fetch_host), whose MAX_FETCHES_PER_HOST it counts in
    trunk: str  # the trunk whose call started it, whose share (trunk_share) it counts in
    done: trio.Event = attrs.Factory(trio.Event)
    result: SignerCertificate | RevocationList | None = None
    error: PassportError | RevocationUnavailable | None = None


@attrs.define
class _Fetches:
    """The certificate (or CRL) fetches running, by URL (the calls needing one wait for it),
    counted by host and by the trunk whose call started each: at most ``limit`` in all, each
    host :data:`MAX_FETCHES_PER_HOST`, each trunk ``per_trunk``."""

    kind: str  # "certificate" or "CRL", as the reasons say
    limit: int
    per_trunk: int
    running: dict[str, _Fetch] = attrs.Factory(dict)
    hosts: Counter[str] = attrs.Factory(Counter)
    trunks: Counter[str] = attrs.Factory(Counter)

    def no_room(self, url: str, trunk: str) -> tuple[str, bool] | None:
        """Why one more fetch, of ``url`` for a call from ``trunk``, may not start now, and
        whether a call may wait for a slot (a host's or a trunk's share: a fetch of theirs
        ends within fetch_timeout) or not (every slot: a stranger naming a new URL in each
        call, refused at once); None when it may start."""
        if len(self.running) >= self.limit:
            return f"{self.limit} {self.kind} fetches running already", False
        host = fetch_host(url)
        if self.hosts[host] >= MAX_FETCHES_PER_HOST:
            shown = shown_host(host)
            return f"{MAX_FETCHES_PER_HOST} {self.kind} fetches to {shown} running already", True
        if self.trunks[trunk] >= self.per_trunk:
            return f"{self.per_trunk} {self.kind} fetches for trunk {trunk} running already", True
        return None

    def add(self, url: str, fetch: _Fetch) -> None:
        self.running[url] = fetch
        self.hosts[fetch.host] += 1
        self.trunks[fetch.trunk] += 1

    def remove(self, url: str, fetch: _Fetch) -> None:
        del self.running[url]
        for counts, key in ((self.hosts, fetch.host), (self.trunks, fetch.trunk)):
            counts[key] -= 1
            if not counts[key]:
                del counts[key]  # a host's or trunk's count goes with its last fetch


class Verification:
    """The check of one trunk's INVITE (``interfaces.IdentityCheck``)."""

    def __init__(self, service: StirShaken, call: TrunkCall, values: Sequence[str]) -> None:
        self.service = service
        self.call = call
        self.values = values

    async def run(self) -> IdentityOutcome:
        service, call = self.service, self.call
        emergency = call.emergency
        if not self.values:
            return service.not_validated("no_identity", "no Identity", emergency=emergency)
        failure: PassportError | None = None
        # One fetch_timeout for the call, whatever its headers' certificates and CRLs need.
        deadline = trio.current_time() + service.config.fetch_timeout
        # RFC 8224 §6.2: a request may carry several; one that verifies is enough.
        for value in self.values[:MAX_IDENTITY_HEADERS]:
            try:
                passport = parse_identity_untrusted(value)
                check_claims(
                    passport,
                    calling=call.calling,
                    called=call.called,
                    now=service.clock(),
                    freshness=service.config.freshness,
                )
                signer, cached = await service._signer_certificate(
                    passport.x5u, deadline, call.trunk
                )
                try:
                    verify_signature(passport, signer.key)
                except PassportError as err:
                    # A signer that rotated its key under the same URL: its new certificate
                    # (fetched once for every call that fails now, within this call's
                    # deadline), not the one cached before.
                    if not cached or err.outcome != "bad_signature":
                        raise
                    renewed = await service.renewed_signer(
                        passport.x5u, signer, deadline, trunk=call.trunk
                    )
                    if renewed is None:
                        raise
                    verify_signature(passport, renewed.key)
                    signer = renewed
                # Then the CRL, for the certificate whose key signed: a carrier whose key was
                # compromised has the old certificate revoked and a new one at the same URL,
                # and the old one, still cached and now listed, must not fail the new key's
                # calls as revoked before the new certificate is fetched.
                unchecked = await service.revocation_status(signer, deadline)
            except PassportError as err:
                if failure is None or failure.outcome == "unsupported":
                    failure = err
                continue
            attest = passport.claims.attest
            if unchecked:
                # Verified but for revocation (its CRL could not be had): passed, and counted
                # apart so that an STI-PA outage shows in the metrics.
                return service.outcome(
                    "passed_revocation_unknown",
                    f"caller number verified (attestation {attest}; {unchecked})",
                )
            return service.outcome("passed", f"caller number verified (attestation {attest})")
        assert failure is not None
        if failure.outcome == "unsupported":
            return service.not_validated("unsupported", failure.reason, emergency=emergency)
        log.info("call %s: caller identity failed: %s", call.call_id, failure.reason)
        return service.outcome(
            failure.outcome,
            f"caller number verification failed: {failure.reason}",
            failure.status,
            emergency=emergency,
        )


# -- hooks ------------------------------------------------------------------------------------


@hookimpl
def gateway_plugin_config() -> type:
    return StirShakenConfig


@hookimpl
def gateway_register_caller_identity(
    registry: Registry[Any], config: StirShakenConfig | None
) -> None:
    service = StirShaken(config or StirShakenConfig())
    registry.add("stir_shaken", service)
    if not config or not (config.sign_trunks or config.verify_trunks):
        log.warning("stir_shaken: enabled, but neither sign_trunks nor verify_trunks is set")


def _conforms(service: StirShaken) -> CallerIdentity:
    return service  # mypy checks that the service is a CallerIdentity
