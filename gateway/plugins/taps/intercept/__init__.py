"""The ``intercept`` tap: lawful interception as a point of interception (POI) in the ETSI shape.

Theory of operation (../shared/specs/lawful-intercept.md). The operator's administration function
(ADMF) provisions us over **X1** (TS 103 221-1, :mod:`.x1`, served by :mod:`.x1_server` over
mutually authenticated HTTPS): *destinations* (a mediation function's address) and *tasks* (an
XID, target identifiers, X2 and/or X3, destination ids), kept across restarts (:mod:`.tasks`).
When a caller's INVITE becomes a call, the core asks this tap (``sink_for_call_start``) and every
task whose target the INVITE names (:mod:`.targets`: From and P-Asserted-Identity for the caller,
Request-URI and To for the callee) gets, for as long as the call lives:

- **X2** (xIRI, TS 103 221-2): one PDU per SIP message on any leg of the call, the bytes as on
  the wire, payload format 9, with timestamp, sequence number, addresses, ports, IP protocol and
  the matched target identifier; the call attempt that fails is delivered as much as the one
  that connects;
- **X3** (xCC): one PDU per RTP packet of the call, decrypted (the gateway terminates every
  leg's SRTP, so SDES, DTLS-SRTP and ZRTP legs are delivered in clear; RTCP is not delivered),
  payload format 8, early media included; and one PDU per T.38 fax datagram (UDPTL, passed
  through and never encrypted, :mod:`gateway.core.media.t38`) as the IP packet that carried it,
  with its addresses and ports: payload format 5 (IPv4) or 6 (IPv6), which TS 103 221-2 §5.2.4
  offers for content that has no format of its own (lawful-intercept.md "What a VoIP POI
  sends": "Alternatively format 5/6 (whole IP packet)"); format 8 would tell the mediation
  function it is RTP, which it is not;

with one correlation ID for every PDU of the call, the direction relative to the target (sent
by it, or to it) on each, and on each the element that sent it: ``ne_identifier``, the name X1
knows it by, as the Network Function ID (conditional attribute 6, TS 103 221-2 §5.3), and
where configured ``interception_point_id`` as the Interception Point ID (attribute 7): one
value per node, where in the element the tap sits, never per leg (docs/lawful_intercept.md:
the direction and addresses already say which leg; the Domain ID, attribute 5, is not sent, as
no source gives it a meaning here). Behind a
load balancer every node is a POI of its own, with its own X1, store and sequence numbers; the
NFID is how a mediation function fed by several tells them apart (the same XID activated on
each numbers its PDUs from 0 on each), so each node needs its own ``ne_identifier``.

A target's REGISTERs (its address of record a target) and our answers
to them, which belong to no call, are X2 too: the tap is also a SIP capture agent
(``message``). PDUs go to the task's destinations through :mod:`.delivery` links (TLS with
client certificates by default, keepalives, reconnects, a bounded queue: a slow mediation
function costs PDUs, counted, never a call's time); a sink looks its links up for each PDU, so
a destination created or changed during a call is used at once.

Confidentiality: the sinks are ``covert``: no call record, ``voipgw calls`` line or core log
line names the interception, and nothing in what the parties see changes (no header, no SDP
change, no timing: PDUs are queued, never awaited). The plugin's own log lines name XIDs and
DIDs, never targets. Deployments where even that is too much run the gateway's log at WARNING.

Reports to the ADMF (:mod:`.reports`, only with ``report_url``): a destination whose delivery
fails and recovers, a task none of whose destinations works, the element's start-up and its
delivering nothing at all, POSTed over X1 by one task of this plugin, coalesced per destination,
task and element, never waited for by a call.

Not done here (say so to the ADMF's operator): target identifier types other than SIP URI, tel
URI and E.164 number, RTCP in X3, and national handover profiles (the mediation function's
business). A task activated during calls intercepts those in progress that match from then on
(``bind_calls_in_progress``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
import ssl
import time
import types
import uuid
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio
from cryptography import x509

from gateway.core.config import unentered_problem, unreadable_here
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import LoadedCertificate, ReloadError, TappedCall
from gateway.core.sip.errors import SipError
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.transport.flows import Address
from gateway.plugins.taps.intercept import pdu
from gateway.plugins.taps.intercept.delivery import DeliveryLink
from gateway.plugins.taps.intercept.reports import Endpoint, Reporter
from gateway.plugins.taps.intercept.tasks import Destination, Match, Provisioning
from gateway.plugins.taps.intercept.x1 import X1Handler
from gateway.plugins.taps.intercept.x1_server import X1Server
from gateway.plugins.transports.certificates import (
    CertificateError,
    _utc,
    loaded_certificate,
    validity_problem,
)

if TYPE_CHECKING:
    from gateway.core.interfaces import MediaTap, TapSink
    from gateway.core.plugins import Registry

log = logging.getLogger(__name__)

DIRECTORY = "intercept"
STATE_FILE = "tasks.sqlite"
MAX_PENDING_REGISTRATIONS = 10_000  # REGISTER transactions of targets awaiting their answer
# check-config --intercept warns of a certificate expiring within this (seconds): time to have
# one issued by the LI PKI and to find someone cleared to install it.
EXPIRY_WARNING = 30 * 86_400
# The longest ne_identifier: TS 103 280's ShortString, the X1 type of neIdentifier.
MAX_NE_IDENTIFIER = 255
DEFAULT_NE_IDENTIFIER = "voipgw"  # every node's unless its table names it (check_nodes)
_CALL_ID = re.compile(rb"\r\n(?:Call-ID|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE)


@attrs.frozen
class Contexts:
    """The plugin's TLS contexts as read from its files at one moment (start-up, a reload)."""

    x1: ssl.SSLContext
    delivery: ssl.SSLContext | None  # None: delivery_tls = false
    report: ssl.SSLContext | None  # None: no report_url
    loaded: tuple[LoadedCertificate, ...]  # each certificate file once, x1's first
    # "keys: file: why" for each certificate outside its validity period. A reload refuses
    # them; start-up runs with them and says so (docs/lawful_intercept.md, "A certificate
    # out of its validity period at start-up").
    invalid: tuple[str, ...] = ()
    # The keys naming each of ``loaded``, in its order ("x1_certificate, report_certificate").
    keys: tuple[str, ...] = ()


def _admf_certificates(mapping: Mapping[str, str]) -> Mapping[str, str]:
    """``admf_certificates`` read-only, each subject as the X1 server reads a client's
    (:func:`.x1_server.subject_of`), so equal names compare equal; a value that is no RFC 4514
    name is a config error of the key."""
    subjects: dict[str, str] = {}
    for admf, subject in mapping.items():
        if not admf:
            raise ValueError("admf_certificates: an empty admfIdentifier")
        try:
            subjects[admf] = x509.Name.from_rfc4514_string(subject).rfc4514_string()
        except ValueError:
            raise ValueError(
                f"admf_certificates: entry {admf!r}: expected the certificate's subject as "
                f"RFC 4514 writes it (e.g. CN=admf-1,O=Example LI), got {subject!r}"
            ) from None
    return types.MappingProxyType(subjects)


def _refuse_passphrase() -> bytes:
    # Without it OpenSSL asked for the passphrase on the terminal, which a service has not.
    raise CertificateError("the key is encrypted; give an unencrypted key file (mode 600)")


@attrs.frozen
class InterceptConfig:
    """``[plugins.intercept]``. See docs/configuration.md."""

    x1_listen: str = "127.0.0.1:8443"
    x1_certificate: str = ""
    x1_private_key: str = ""
    x1_ca: str = ""
    ne_identifier: str = DEFAULT_NE_IDENTIFIER
    # The Interception Point ID of every X2/X3 PDU (attribute 7), for a mediation function
    # whose profile names the interception points within an element; "": not sent.
    interception_point_id: str = ""
    admf_identifiers: tuple[str, ...] = ()
    # admfIdentifier -> the subject of the client certificate that ADMF presents (TS 103 221-1
    # error 1030 when they do not match); empty: not checked.
    admf_certificates: Mapping[str, str] = attrs.field(
        factory=dict, converter=_admf_certificates, hash=False
    )
    delivery_tls: bool = True
    delivery_certificate: str = ""
    delivery_private_key: str = ""
    delivery_ca: str = ""
    pdu_version: int = 5
    keepalive_interval: float = 30.0
    queue: int = 10_000
    report_url: str = ""
    report_certificate: str = ""
    report_private_key: str = ""
    report_ca: str = ""
    report_admf_identifier: str = ""
    report_interval: float = 30.0
    state_dir: str = "./voipgw-state"

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of this table; say which key.
        self.x1_address  # noqa: B018 - checks it
        for key in ("x1_certificate", "x1_private_key", "x1_ca"):
            if not getattr(self, key):
                raise ValueError(
                    f"{key}: required (X1 is served over TLS with client certificates only)"
                )
        if self.delivery_tls:
            for key in ("delivery_certificate", "delivery_private_key", "delivery_ca"):
                if not getattr(self, key):
                    raise ValueError(
                        f"{key}: required while delivery_tls is true (X2/X3 go over mutual TLS)"
                    )
        if not self.ne_identifier:
            raise ValueError("ne_identifier: must not be empty")
        if len(self.ne_identifier.encode()) > MAX_NE_IDENTIFIER:
            # It is in every X2/X3 PDU (the Network Function ID): a bound, as on the X1 side.
            raise ValueError(f"ne_identifier: at most {MAX_NE_IDENTIFIER} octets (UTF-8)")
        if len(self.interception_point_id.encode()) > MAX_NE_IDENTIFIER:
            # In every X2/X3 PDU beside the NFID: the same bound.
            raise ValueError(f"interception_point_id: at most {MAX_NE_IDENTIFIER} octets (UTF-8)")
        if self.admf_certificates and self.admf_identifiers:
            # Both name the ADMFs taken: an identifier in one only would be refused always.
            unlisted = sorted(set(self.admf_certificates) ^ set(self.admf_identifiers))
            if unlisted:
                raise ValueError(
                    f"admf_certificates: {unlisted[0]!r} is in one of admf_certificates and "
                    "admf_identifiers only: with both set they must name the same ADMFs"
                )
        if not 0 <= self.pdu_version <= 0xFFFF:
            raise ValueError(f"pdu_version: expected 0 to 65535, got {self.pdu_version}")
        if not 1.0 <= self.keepalive_interval <= 3600.0:
            raise ValueError(
                f"keepalive_interval: expected 1 to 3600 seconds, got {self.keepalive_interval:g}"
            )
        if not 10 <= self.queue <= 1_000_000:
            raise ValueError(
                f"queue: expected 10 to 1000000 PDUs per destination, got {self.queue}"
            )
        if not 1.0 <= self.report_interval <= 3600.0:
            raise ValueError(
                f"report_interval: expected 1 to 3600 seconds, got {self.report_interval:g}"
            )
        if self.report_url:
            self.report_endpoint  # noqa: B018 - checks it
            if not self.report_admf:
                raise ValueError(
                    "report_admf_identifier: required with report_url (the admfIdentifier "
                    "the reports carry) unless admf_identifiers or admf_certificates names one"
                )
        self._check_credentials()

    def _check_credentials(self) -> None:
        """Certificates, keys and CAs load now, so a mistake stops the gateway at start-up
        naming the key, instead of leaving it running without interception. A certificate
        merely outside its validity period does not stop it (``Contexts.invalid``)."""
        self.contexts(now=time.time())

    def written_directories(self) -> list[tuple[str, Path, str, tuple[str, ...]]]:
        """What ``voipgw check-config`` and ``run`` check this user may write (Gateway.check):
        ``(key, directory, what, files)``, the files those written in place if they exist."""
        files = tuple(f"{STATE_FILE}{suffix}" for suffix in ("", "-wal", "-shm", "-journal"))
        directory = Path(self.state_dir) / DIRECTORY
        return [("state_dir", directory, "the intercept plugin's task state", files)]

    def contexts(self, *, now: float) -> Contexts:
        """Every TLS context of the plugin, from the files as they are now: X1's server
        context, delivery's and the reports' client contexts; the checks of start-up and of a
        reload alike. A file that cannot be used (missing, unreadable, not PEM, a key that is
        not its certificate's) raises ValueError naming the key at fault, the file and the reason
        (never key bytes). A certificate outside its validity period at ``now`` (RFC 5280
        §4.1.2.5: peers refuse it) is in ``Contexts.invalid``: what to do about it is the
        caller's (a reload refuses it, start-up reports it)."""
        groups: list[tuple[str, str, str, Callable[[], ssl.SSLContext | None]]] = [
            ("x1_certificate", "x1_private_key", "x1_ca", self.x1_ssl_context)
        ]
        if self.delivery_tls:
            groups.append(
                (
                    "delivery_certificate",
                    "delivery_private_key",
                    "delivery_ca",
                    self.delivery_ssl_context,
                )
            )
        if self.report_url:
            groups.append(
                (
                    "report_certificate",
                    "report_private_key",
                    "report_ca",
                    self.report_ssl_context,
                )
            )
        built: dict[str, ssl.SSLContext | None] = {}
        loaded: dict[str, LoadedCertificate] = {}  # by file: report_* default to x1_*'s
        invalid: dict[str, tuple[list[str], str]] = {}  # by file: the keys naming it, why
        keys: dict[str, list[str]] = {}  # by file: the keys naming it
        for certificate, private_key, ca, load in groups:
            # voipgw check-config run as another user than the service's: a file it may not
            # read, or in a directory it may not enter, is its warning (an error when no user
            # but root could: config.unreadable_here); the group's TLS context is not built
            # (check-config serves nothing), its other files are checked alone.
            unread = {
                key
                for key in (certificate, private_key, ca)
                if unreadable_here(Path(self._file(key)), key)
            }
            for key in (certificate, private_key, ca):
                # os.path.isfile: False for a name too long (Path.is_file raised OSError).
                if key not in unread and not os.path.isfile(self._file(key)):
                    # EACCES, not ENOENT (a directory this user may not enter): say which.
                    unreached = unentered_problem(Path(self._file(key)))
                    if unreached is not None:
                        raise ValueError(f"{key}: {unreached}")
                    raise ValueError(f"{key}: no such file: {self._file(key)}")
            if unread:
                if certificate not in unread:
                    try:
                        leaf = loaded_certificate(Path(self._file(certificate)))
                    except (OSError, CertificateError) as exc:
                        raise ValueError(f"{certificate}: cannot be loaded ({exc})") from None
                    loaded.setdefault(leaf.path, leaf)
                    keys.setdefault(leaf.path, []).append(certificate)
                if ca not in unread:
                    try:
                        ssl.create_default_context(cafile=self._file(ca))
                    except (OSError, ssl.SSLError) as exc:
                        raise ValueError(
                            f"{ca}: cannot be loaded ({self._file(ca)}: {exc}; expected PEM CA "
                            "certificates)"
                        ) from None
                built[certificate] = None
                continue
            # One file at a time, so that the error names the key at fault: the certificate,
            # then the CA file alone; what fails once both load is the private key (not PEM,
            # encrypted, or not the certificate's).
            try:
                leaf = loaded_certificate(Path(self._file(certificate)))
            except (OSError, CertificateError) as exc:
                raise ValueError(f"{certificate}: cannot be loaded ({exc})") from None
            try:
                ssl.create_default_context(cafile=self._file(ca))
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"{ca}: cannot be loaded ({self._file(ca)}: {exc}; expected PEM CA "
                    "certificates)"
                ) from None
            try:
                built[certificate] = load()
            except (OSError, ssl.SSLError, CertificateError) as exc:
                raise ValueError(
                    f"{private_key}: cannot be loaded with {certificate} "
                    f"({self._file(private_key)}: {exc})"
                ) from None
            problem = validity_problem(leaf, now=now)
            if problem is not None:
                invalid.setdefault(leaf.path, ([], problem))[0].append(certificate)
            loaded.setdefault(leaf.path, leaf)
            keys.setdefault(leaf.path, []).append(certificate)
        return Contexts(
            x1=built["x1_certificate"],  # type: ignore[arg-type]  # never None
            delivery=built.get("delivery_certificate"),
            report=built.get("report_certificate"),
            loaded=tuple(loaded.values()),
            invalid=tuple(f"{', '.join(names)}: {why}" for names, why in invalid.values()),
            keys=tuple(", ".join(names) for names in keys.values()),
        )

    @property
    def x1_address(self) -> tuple[str, int]:
        host, _, port_text = self.x1_listen.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        try:
            ipaddress.ip_address(host)
            port = int(port_text)
            if not 0 <= port < 65536:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"x1_listen: expected ADDRESS:PORT (e.g. 192.0.2.10:8443), not {self.x1_listen!r}"
            ) from None
        return host, port

    def config_warnings(self) -> list[str]:
        """``"KEY: why"`` for values a gateway runs with that do not do what they should:
        errors of ``voipgw check-config``, warnings of ``voipgw run`` (Gateway.check)."""
        if self.x1_address[1] == 0:
            # The port is the system's choice, another at each start: the ADMF, configured
            # with ours, would not know where to connect (tests bind port 0 and read the log).
            return [
                f"x1_listen: expected a port 1-65535 the ADMF is configured with, got "
                f"{self.x1_listen!r} (port 0: the system chooses one at each start)"
            ]
        return []

    def _file(self, key: str) -> str:
        """A certificate, key or CA file; the ``report_*`` ones default to the ``x1_*`` ones
        (the ADMF we serve is the one we report to)."""
        value: str = getattr(self, key)
        if not value and key.startswith("report_"):
            value = getattr(self, "x1_" + key.removeprefix("report_"))
        return value

    @property
    def report_endpoint(self) -> Endpoint:
        try:
            return Endpoint.parse(self.report_url)
        except ValueError as exc:
            raise ValueError(f"report_url: {exc}") from None

    @property
    def report_admf(self) -> str:
        """The admfIdentifier our reports carry."""
        if self.report_admf_identifier:
            return self.report_admf_identifier
        return self.admfs[0] if self.admfs else ""

    @property
    def admfs(self) -> tuple[str, ...]:
        """The admfIdentifiers taken (empty: any): ``admf_identifiers``, else the ADMFs
        ``admf_certificates`` names."""
        return self.admf_identifiers or tuple(self.admf_certificates)

    def report_ssl_context(self) -> ssl.SSLContext:
        """Our client certificate towards the ADMF's X1 server, whose certificate the
        ``report_ca`` must have issued for the host in ``report_url``."""
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=self._file("report_ca")
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(
            self._file("report_certificate"),
            self._file("report_private_key"),
            password=_refuse_passphrase,
        )
        return context

    def x1_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.x1_ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(
            self.x1_certificate, self.x1_private_key, password=_refuse_passphrase
        )
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def delivery_ssl_context(self) -> ssl.SSLContext | None:
        if not self.delivery_tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.delivery_ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(
            self.delivery_certificate, self.delivery_private_key, password=_refuse_passphrase
        )
        return context


class Interception:
    """``interfaces.MediaTap`` with ``sink_for_call_start`` and ``run`` (X1 and the links)."""

    name = "intercept"
    # Its certificate reloads (SIGHUP) are neither counted in the metrics nor in the core's log
    # lines; they are logged on this module's logger (gateway/core/reload.py).
    covert = True

    def __init__(
        self,
        config: InterceptConfig,
        *,
        provisioning: Provisioning | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.provisioning = provisioning or Provisioning(
            Path(config.state_dir) / DIRECTORY / STATE_FILE
        )
        self.links: dict[uuid.UUID, DeliveryLink] = {}
        self._wall_clock = wall_clock
        # What new connections use; swapped by a reload. A certificate out of its validity
        # period is used all the same and reported when the tap starts (run()).
        self.contexts = config.contexts(now=time.time())
        self.x1 = X1Handler(
            self.provisioning,
            ne_identifier=config.ne_identifier,
            admf_identifiers=config.admfs,
            admf_certificates=config.admf_certificates,
            wall_clock=wall_clock,
            destination_fault=self.destination_fault,
            # A link still confirming its first connection is no fault of a task, as it is no
            # fault of the element: an ADMF auditing the tasks right after a start must not
            # read faults that are none (its destinations' own status says "not confirmed").
            task_fault=lambda xid: self.task_fault(xid, reporting=True),
            ne_fault=self.ne_fault,  # a link still confirming is no fault of the element
        )
        self.reports: Reporter | None = None
        if self.contexts.report is not None:  # None: no report_url
            # The context read with the others (not the files read once more): what
            # loaded_certificates() describes is what the reports present, and a reload
            # swaps it with the X1 server's (report_* default to the x1_* files).
            self.reports = Reporter(
                config.report_endpoint,
                self.contexts.report,
                admf_identifier=config.report_admf,
                ne_identifier=config.ne_identifier,
                interval=config.report_interval,
                # A link still confirming its first connection is not reported (delivery.py,
                # "Health"); the X1 status answers say it is not confirmed yet.
                destination_faults=lambda: {
                    did: self.destination_fault(did, reporting=True)
                    for did in self.provisioning.destinations
                },
                task_faults=lambda: {
                    xid: self.task_fault(xid, reporting=True) for xid in self.provisioning.tasks
                },
                ne_fault=self.ne_fault,
                wall_clock=wall_clock,
            )
        self._link_generation = -1
        self._nursery: trio.Nursery | None = None
        self._delivery_context: ssl.SSLContext | None = None
        self.x1_server: X1Server | None = None
        self.intercepted_calls = 0
        self._registrations: dict[str, tuple[list[Match], _Copy]] = {}
        self._sinks: dict[str, InterceptSink] = {}  # the calls intercepted now, by call id
        self._ask_again: Callable[[], None] | None = None
        # Every X2/X3 PDU names the element that sent it (the module docstring) and, where
        # configured, the interception point within it: encoded once.
        identity = [(pdu.NETWORK_FUNCTION_ID, config.ne_identifier.encode())]
        if config.interception_point_id:
            identity.append((pdu.INTERCEPTION_POINT_ID, config.interception_point_id.encode()))
        self._network_function = pdu.encode_attributes(tuple(identity))

    def check_nodes(self, *, shared_store: bool, written: Collection[str]) -> list[str]:
        """At start-up and in ``voipgw check-config --intercept``: warnings about this node's
        place among others. A node sharing its store with others (PostgreSQL: several nodes
        behind a load balancer) is one point of interception among several and should name
        itself: ``ne_identifier`` written in its table, not left to the default every node has.
        Two nodes under one name look like one element to the ADMF and the mediation function,
        whose records of the two the authority cannot tell apart (docs/lawful_intercept.md,
        "Several nodes"). A warning, not a refusal: a cluster upgraded from a release without
        this check must keep carrying calls while its operator names the nodes."""
        if shared_store and "ne_identifier" not in written:
            return [
                'ne_identifier: not written, with [store] backend = "postgresql": each node of '
                "a cluster is a point of interception of its own and needs its own name (the "
                f"default, {DEFAULT_NE_IDENTIFIER!r}, is every node's; the mediation function "
                "tells the nodes' PDUs apart by it); write it, e.g. ne_identifier = "
                '"sbc-fra-1", and tell the ADMF'
            ]
        return []

    # -- MediaTap -------------------------------------------------------------------------------

    def sink_for_call(self, call: TappedCall) -> TapSink | None:
        return None  # decided at the start (sink_for_call_start)

    @property
    def wants_calls(self) -> bool:
        """Whether any task is active: without one the core builds nothing per call for us."""
        return bool(self.provisioning.tasks)

    def sink_for_call_start(self, call: TappedCall) -> InterceptSink | None:
        """A sink for a call whose INVITE names a target. Asked again about a call that has
        one already (a task activated during the call), the tasks it matches now are added to
        that sink and no second one is made."""
        matches = self.provisioning.matches(call)
        if not matches:
            return None
        live = self._sinks.get(call.call_id)
        if live is not None:
            live.add_matches(matches)
            return None
        self.intercepted_calls += 1
        log.debug(  # not at INFO: beside the core's line for the call, it would name the call
            "intercept: call matched task(s) %s",
            ", ".join(str(match.task.xid) for match in matches),
        )
        correlation = correlation_id(call.call_id)
        sink = InterceptSink(
            matches,
            self.links_for,
            correlation,
            self._wall_clock,
            on_close=lambda: self._sinks.pop(call.call_id, None),
            network_function=self._network_function,
        )
        self._sinks[call.call_id] = sink
        return sink

    def links_for(self, match: Match, kind: str) -> list[DeliveryLink]:
        """Where ``match``'s PDUs of ``kind`` ("X2", "X3") go now, looked up per PDU: the task
        as X1 last left it. A task deactivated, or modified so that its targets no longer
        include the one this call matched, delivers nothing more from that moment (a warrant
        that ended must not go on being served); a changed delivery type or list of
        destinations applies at once, and so does a destination created or moved a moment ago
        (its link is made when X1 answers)."""
        task = self.provisioning.tasks.get(match.task.xid)
        if task is None or not task.delivers(kind):
            return []
        if task is not match.task and match.target not in task.targets:
            return []
        links = self.links
        return [
            link
            for did in task.dids
            if (link := links.get(did)) is not None and link.destination.carries(kind)
        ]

    # -- SipCapture: a target's REGISTERs ------------------------------------------------------

    def message(
        self, data: bytes, *, transport: str, source: Address, destination: Address, at: float
    ) -> None:
        """Every SIP message the gateway sends or receives: a REGISTER whose address of record
        is a target, with our 2xx accepting it, goes out as X2 (it belongs to no call, so no
        call's sink sees it: the target's location is in it). A REGISTER is held until it is
        answered: one we refuse (a challenge, a wrong password, anybody's REGISTER naming the
        target) says nothing about the target and is not delivered."""
        if not self.provisioning.tasks:
            return
        where = _Copy(data, transport, source, destination, at)
        if data.startswith(b"REGISTER "):
            try:
                request = parse_message_untrusted(data)
            except SipError:
                return  # the endpoint answers it 400; nothing registered
            matches = self.provisioning.matches_uri(str(request.to.uri))
            if not matches:
                return
            self._registrations[request.call_id] = (matches, where)
            while len(self._registrations) > MAX_PENDING_REGISTRATIONS:
                del self._registrations[next(iter(self._registrations))]
        elif self._registrations and data.startswith(b"SIP/2.0 "):
            found = _CALL_ID.search(data)
            call_id = found.group(1).strip().decode(errors="replace") if found else ""
            pending = self._registrations.get(call_id)
            if pending is None or data.startswith(b"SIP/2.0 1"):
                return
            del self._registrations[call_id]  # a final answer ends the transaction
            if data.startswith(b"SIP/2.0 2"):
                matches, register = pending
                self._report(matches, call_id, register, pdu.FROM_TARGET)
                self._report(matches, call_id, where, pdu.TO_TARGET)

    def _report(self, matches: list[Match], call_id: str, copy: _Copy, direction: int) -> None:
        correlation = correlation_id("REGISTER " + call_id)
        addresses = _addresses(copy.source, copy.destination, copy.transport)
        for match in matches:
            more = addresses + self._network_function + _matched_target(match)
            for link in self.links_for(match, "X2"):
                link.send(_x2(link, match, correlation, direction, copy.data, more, copy.at))

    # -- the tap's task -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve X1 and keep a delivery link per destination. Started once X1 listens: the
        gateway does not start without it (an interception the ADMF cannot reach is none)."""
        if self.config.delivery_tls is False:
            log.warning(
                "intercept: X2/X3 go to mediation functions over plain TCP (delivery_tls = "
                "false): for a lab only"
            )
        self._report_invalid_certificates()
        self._delivery_context = self.contexts.delivery
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._reconcile()  # the destinations kept from before the restart
            if self.reports is not None:
                self.reports.started(
                    len(self.provisioning.tasks), len(self.provisioning.destinations)
                )
                nursery.start_soon(self.reports.run)
            server = X1Server(self.contexts.x1, self._handle_x1, server="voipgw")
            self.x1_server = server
            host, port = self.config.x1_address
            await nursery.start(server.serve, host, port)
            task_status.started()

    # -- certificates (SIGHUP, gateway/core/reload.py) -----------------------------------------

    def _report_invalid_certificates(self) -> None:
        """Start-up with a certificate out of its validity period: said on this plugin's
        logger only (covert), as the config error it would be if it stopped the gateway. It
        does not: an interception's certificate must not take every call down with it, and a
        renewed file takes effect on SIGHUP (docs/lawful_intercept.md says why)."""
        for problem in self.contexts.invalid:
            log.error(
                "intercept: [plugins.intercept] %s: started with it all the same (calls are "
                "not stopped for it); its peers refuse it until a valid one is loaded: renew "
                "the file and send SIGHUP",
                problem,
            )

    def certificate_report(
        self, *, now: float, within: float = EXPIRY_WARNING
    ) -> list[tuple[bool, str]]:
        """``voipgw check-config --intercept``: one line per certificate file the table names
        (keys, file, until when, subject), each with whether it is a warning: out of its
        validity period, or expiring within ``within`` seconds. Only asked for explicitly
        (docs/lawful_intercept.md, "Checking the certificates"): a plain check-config says
        nothing of them, as the metrics and the core's log lines do not."""
        lines: list[tuple[bool, str]] = []
        for keys, certificate in zip(self.contexts.keys, self.contexts.loaded, strict=True):
            problem = validity_problem(certificate, now=now)
            until = _utc(certificate.not_after)
            days = (certificate.not_after - now) / 86_400
            if problem is not None:
                # Start-up runs with it (its peers refuse it); a reload refuses it.
                text, warn = f"{problem}: renew it, then SIGHUP", True
            elif days * 86_400 < within:
                text = (
                    f"{certificate.path}: expires on {until}, in {days:.0f} day(s) (subject "
                    f"{certificate.subject}): renew it, then SIGHUP"
                )
                warn = True
            else:
                text = (
                    f"{certificate.path}: valid until {until}, {days:.0f} days left (subject "
                    f"{certificate.subject})"
                )
                warn = False
            lines.append((warn, f"[plugins.intercept] {keys}: {text}"))
        return lines

    def loaded_certificates(self) -> tuple[LoadedCertificate, ...]:
        """The certificates new X1, delivery and report connections present now."""
        return self.contexts.loaded

    def reload_certificates(self) -> tuple[LoadedCertificate, ...]:
        """Read every ``x1_*``, ``delivery_*`` and ``report_*`` file again, with the start-up
        checks and the certificates' validity periods; only when all load are the new contexts
        used, by new connections only: an X1 handshake, a delivery link's next connection to a
        mediation function, the next report. Connections up keep theirs (a delivery link is not
        reconnected: that would cost PDUs in flight, and nothing asks for it). Otherwise
        :class:`ReloadError` names the keys, the file and the reason, and nothing changes."""
        try:
            contexts = self.config.contexts(now=time.time())
        except ValueError as exc:
            raise ReloadError(str(exc)) from None
        if contexts.invalid:
            # What we have works, or at least is no worse: copying an old file over a renewed
            # one is the usual mistake (certificates.validity_problem).
            raise ReloadError("; ".join(contexts.invalid))
        self.contexts = contexts
        if self.x1_server is not None:
            self.x1_server.ssl_context = contexts.x1
        self._delivery_context = contexts.delivery  # links started from now on
        for link in self.links.values():
            link.ssl_context = contexts.delivery  # at its next (re)connection
        if self.reports is not None and contexts.report is not None:
            self.reports.ssl_context = contexts.report
        return contexts.loaded

    def _handle_x1(self, body: bytes, client: str | None = None) -> bytes:
        """An X1 document from the ADMF whose client certificate has subject ``client``."""
        tasks_before = self.provisioning.task_generation
        try:
            return self.x1.handle(body, client=client)
        finally:
            # Whatever the document did, even half of it before a bug: the links follow the
            # destinations now, before any call's next PDU looks for them.
            if self.provisioning.generation != self._link_generation:
                self._reconcile()
            if self.reports is not None:
                self.reports.notify()  # tasks and destinations may have come or gone
            if self.provisioning.task_generation != tasks_before and self._ask_again is not None:
                # A task activated or modified: calls already in progress to or from a new
                # target are intercepted from now on (they were not when they started).
                self._ask_again()

    def bind_calls_in_progress(self, ask_again: Callable[[], None]) -> None:
        """The core's way to have this tap asked again about every call in progress
        (``sink_for_call_start`` for each): used when X1 activates or modifies a task."""
        self._ask_again = ask_again

    def _reconcile(self) -> None:
        """One link per provisioned destination: new ones started, removed ones closed (they
        send what they hold first); one whose address changed is replaced, its sequence
        numbers carried over; any other change (its name, its delivery type) applies to the
        link in place, without a new connection."""
        nursery = self._nursery
        if nursery is None:
            return  # before run(): it reconciles when it starts
        self._link_generation = self.provisioning.generation
        wanted = self.provisioning.destinations
        for did, link in list(self.links.items()):
            destination = wanted.get(did)
            if destination is None or destination.address != link.destination.address:
                link.close()
                del self.links[did]
                if destination is not None:
                    self._start_link(nursery, destination, sequences=link.sequences)
            else:
                link.destination = destination
        for did, destination in wanted.items():
            if did not in self.links:
                self._start_link(nursery, destination)

    def _start_link(
        self,
        nursery: trio.Nursery,
        destination: Destination,
        *,
        sequences: dict[uuid.UUID, int] | None = None,
    ) -> None:
        link = DeliveryLink(
            destination,
            ssl_context=self._delivery_context,
            queue=self.config.queue,
            keepalive_interval=self.config.keepalive_interval,
            version=self.config.pdu_version,
            wall_clock=self._wall_clock,  # the plugin's one clock: X1, X3 times, the log
        )
        if sequences is not None:
            link.sequences.update(sequences)
        if self.reports is not None:
            reports = self.reports
            link.on_fault = lambda link: reports.notify()
        self.links[destination.did] = link
        nursery.start_soon(link.run)

    # -- health: what GetDestinationDetails / GetNEStatus answer and the reports say ----------

    def destination_fault(self, did: uuid.UUID, *, reporting: bool = False) -> str | None:
        """Why delivery to destination ``did`` does not work now, or None while it works. For
        the reports to the ADMF (``reporting``), a link whose first connection is not
        confirmed yet, with no failure so far, has nothing to report (delivery.py, "Health")."""
        link = self.links.get(did)
        if link is None:
            return None if self._nursery is None else "no delivery link"
        return link.reported_fault if reporting else link.fault

    def task_fault(self, xid: uuid.UUID, *, reporting: bool = False) -> str | None:
        """A task can be honoured while one of its destinations works; with none working its
        PDUs reach no mediation function (they wait in the queues, or are dropped)."""
        task = self.provisioning.tasks.get(xid)
        if task is None or not task.dids:
            return None
        faults = [self.destination_fault(did, reporting=reporting) for did in task.dids]
        if any(fault is None for fault in faults):
            return None
        return "no destination of the task is delivering: " + "; ".join(
            f"{did}: {fault}" for did, fault in zip(task.dids, faults, strict=True)
        )

    def ne_fault(self) -> str | None:
        """The element delivers nothing at all: every destination a task uses is faulty.

        A destination whose first connection is still being confirmed (delivery.py, "Health":
        one keepalive round trip, at most ``keepalive_interval`` or the connection timeout)
        counts as no fault here, for GetNEStatus as for the reports: right after a start every
        link is confirming, and an ADMF polling then must not read a fault that is not one. The
        XSD's ``NeStatus`` has only ``OK`` and ``Faults``, and ``listOfFaults`` holds only
        ``unresolvedFault`` entries, so no "starting" can be said: ``OK`` (nothing has failed)
        until a destination fails its confirmation or its deadline; the destinations' own
        status (GetDestinationDetails) says ``deliveryFault``, "not confirmed yet", meanwhile."""
        used = {did for task in self.provisioning.tasks.values() for did in task.dids}
        if not used or any(self.destination_fault(did, reporting=True) is None for did in used):
            return None
        return f"no mediation function is reachable: all {len(used)} destination(s) in use fail"


def correlation_id(call_id: str) -> int:
    """One 64-bit value for every PDU of a call: from the gateway's call id, which reveals
    nothing of either leg's Call-ID."""
    return int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big")


@attrs.frozen
class _Copy:
    """A SIP message as the capture seam gave it: bytes, transport, addresses, time."""

    data: bytes = attrs.field(repr=False)
    transport: str
    source: Address
    destination: Address
    at: float


class InterceptSink:
    """``interfaces.TapSink`` of one intercepted call: X2 from its SIP, X3 from its media."""

    covert = True

    def __init__(
        self,
        matches: list[Match],
        links_for: Callable[[Match, str], list[DeliveryLink]],
        correlation: int,
        wall_clock: Callable[[], float],
        *,
        on_close: Callable[[], object] = lambda: None,
        network_function: bytes = b"",
    ) -> None:
        # The Network Function ID attribute (encoded), then each match's Matched Target
        # Identifier: the attributes every PDU of the match carries, encoded once per call.
        self._network_function = network_function
        self._matches = [(match, self._attributes_of(match)) for match in matches]
        self._on_close = on_close
        self._links_for = links_for
        self._correlation = correlation
        self._wall_clock = wall_clock
        self._closed = trio.Event()

    def sip_message(
        self,
        data: bytes,
        *,
        leg: str,
        inbound: bool,
        transport: str,
        source: Address,
        destination: Address,
        at: float,
    ) -> None:
        if self._closed.is_set():
            return
        addresses = _addresses(source, destination, transport)
        for match, attributes in self._matches:
            # On the target's own leg, what it sent arrives; on the other leg, what we send on
            # is what the target sent (and what arrives is on its way to the target).
            sent_by_target = inbound if leg == match.side else not inbound
            direction = pdu.FROM_TARGET if sent_by_target else pdu.TO_TARGET
            for link in self._links_for(match, "X2"):
                link.send(
                    _x2(link, match, self._correlation, direction, data, addresses + attributes, at)
                )

    def packet(self, stream_id: str, direction: str, rtp: bytes, *, now: float) -> None:
        if self._closed.is_set() or _is_rtcp(rtp):
            return
        at = self._wall_clock()
        for match, attributes in self._matches:
            sent_by_target = (direction == "a_to_b") == (match.side == "a")
            pdu_direction = pdu.FROM_TARGET if sent_by_target else pdu.TO_TARGET
            xid = match.task.xid
            for link in self._links_for(match, "X3"):
                link.send(
                    pdu.encode_copy(
                        pdu.X3,
                        pdu.FORMAT_RTP,
                        pdu_direction,
                        xid.bytes,
                        self._correlation,
                        link.next_sequence(xid),
                        at,
                        attributes,
                        rtp,
                        link.version,
                    )
                )

    def datagram(
        self,
        stream_id: str,
        direction: str,
        data: bytes,
        *,
        now: float,
        source: Address | None,
        destination: Address,
    ) -> None:
        """A T.38 fax datagram (UDPTL): X3 with payload format 5/6, the IP packet as it arrived
        at the gateway (see the module docstring)."""
        if self._closed.is_set() or source is None:
            return
        try:
            payload_format, packet = pdu.udp_packet(source, destination, data)
        except ValueError:
            return  # not IP literals (an in-memory network): nothing to build a packet from
        at = self._wall_clock()
        for match, attributes in self._matches:
            sent_by_target = (direction == "a_to_b") == (match.side == "a")
            pdu_direction = pdu.FROM_TARGET if sent_by_target else pdu.TO_TARGET
            xid = match.task.xid
            for link in self._links_for(match, "X3"):
                link.send(
                    pdu.encode_copy(
                        pdu.X3,
                        payload_format,
                        pdu_direction,
                        xid.bytes,
                        self._correlation,
                        link.next_sequence(xid),
                        at,
                        attributes,
                        packet,
                        link.version,
                    )
                )

    async def run(self) -> None:
        await self._closed.wait()

    def leg_replaced(self, side: str) -> None:
        """The party on ``side`` left the call (a transfer): a target that was there is no
        longer in it, so its tasks deliver nothing more of this call (the people now talking
        are not its targets); a task whose target is on the other side goes on."""
        self._matches = [
            (match, attributes) for match, attributes in self._matches if match.side != side
        ]

    def add_matches(self, matches: list[Match]) -> None:
        """Tasks activated during the call that it matches too (their PDUs from now on)."""
        known = {(match.task.xid, match.side) for match, _ in self._matches}
        for match in matches:
            if (match.task.xid, match.side) not in known:
                self._matches.append((match, self._attributes_of(match)))

    def _attributes_of(self, match: Match) -> bytes:
        return self._network_function + _matched_target(match)

    def close(self) -> None:
        self._closed.set()
        self._on_close()


def _addresses(source: Address, destination: Address, transport: str) -> bytes:
    """The address, port and protocol attributes of a SIP message, encoded."""
    try:
        attributes = pdu.address_attributes(source, destination, 17 if transport == "udp" else 6)
    except ValueError:
        return b""  # not IP literals (an in-memory test network): no address attributes
    return pdu.encode_attributes(attributes)


def _matched_target(match: Match) -> bytes:
    """The Matched Target Identifier attribute of ``match``, encoded."""
    return pdu.encode_attributes(((pdu.MATCHED_TARGET, match.target.value.encode()),))


def _x2(
    link: DeliveryLink,
    match: Match,
    correlation: int,
    direction: int,
    data: bytes,
    more_attributes: bytes,
    at: float,
) -> bytes:
    """An X2 PDU carrying the SIP message ``data`` for ``match``'s task on ``link``, its
    attributes after the sequence number and timestamp ``more_attributes`` (addresses,
    network function, target)."""
    xid = match.task.xid
    return pdu.encode_copy(
        pdu.X2,
        pdu.FORMAT_SIP,
        direction,
        xid.bytes,
        correlation,
        link.next_sequence(xid),
        at,
        more_attributes,
        data,
        link.version,
    )


def _is_rtcp(packet: bytes) -> bool:
    """RFC 5761 §4: RTCP packet types 192-223 sit where RTP has marker and payload type."""
    return len(packet) > 1 and 192 <= packet[1] <= 223


# -- plugin configuration and registration (entry point ``intercept``) ---------------------------


@hookimpl
def gateway_plugin_config() -> type:
    return InterceptConfig


@hookimpl
def gateway_register_media_taps(registry: Registry[Any], config: InterceptConfig) -> None:
    """Register the ``intercept`` tap. Its table always exists once the plugin is enabled (the
    core structures it, and a missing certificate is a config error naming the key)."""
    registry.add(Interception.name, Interception(config))


if TYPE_CHECKING:

    def _conforms(tap: Interception, sink: InterceptSink) -> None:
        _tap: MediaTap = tap
        _sink: TapSink = sink
