"""X1 (ETSI TS 103 221-1): the ADMF's requests to this point of interception, and our answers.

The ADMF POSTs an ``X1Request`` document holding one or more ``x1RequestMessage`` elements, each
typed by ``xsi:type``; we answer one ``X1Response`` with one ``x1ResponseMessage`` per request,
in order. Every message carries the same header: ``admfIdentifier``, ``neIdentifier``,
``messageTimestamp``, ``version``, ``x1TransactionId`` (echoed in its response). Supported:

- ActivateTask, ModifyTask, DeactivateTask, DeactivateAllTasks, GetTaskDetails;
- CreateDestination, ModifyDestination, RemoveDestination, RemoveAllDestinations,
  GetDestinationDetails;
- GetAllDetails, GetAllTaskDetails, GetAllDestinationDetails, ListAllDetails (the audit an
  ADMF makes after a restart of either side: every XID and DID held, or all their details),
  GetAllGenericObjectDetails (answered with its list omitted: this element holds no Generic
  Objects), GetNEStatus, Ping, Keepalive.

The documents conform to the TS 103 221-1 XSD v1.23.1 (``TS_103_221_01.xsd``, with the TS 103
280 v2.17.1 common types it imports, as siphon-project/siphon-sip bundles them under
``schemas/etsi/``); the tests check every document we emit, and the requests they send, against
that schema's element structure (tests/unit/taps/x1_structure.py). What the schema says and
this module follows:

- element order is the ``xs:sequence`` order; ``address``, ``port``, ``IPv4Address``,
  ``IPv6Address`` and ``TCPPort`` inside ``ipAddressAndPort`` are declared in the TS 103 280
  schema (``elementFormDefault="qualified"``), so they are in its namespace
  (:data:`COMMON_NAMESPACE`), not X1's; an ``IPv6Address`` is written in full, lowercase
  (``([0-9a-f]{4}:){7}[0-9a-f]{4}``), an ``e164Number`` is digits only (``[0-9]{1,15}``);
- identifiers (xId, dId, x1TransactionId) are TS 103 280 UUIDs, lowercase;
- ``ErrorResponse`` = header, ``requestMessageType`` (the request's name without "Request":
  ``ActivateTask``), ``errorInformation`` (``errorCode``, ``errorDescription``);
- ``X1TopLevelErrorResponse`` (a document we cannot read as X1 at all) carries
  ``admfIdentifier``, ``neIdentifier``, ``messageTimestamp``, ``version`` and nothing else: no
  transaction id, no reason (the reason is logged on the plugin's logger);
- status answers: ``destinationStatus`` = ``destinationDeliveryStatus`` (``activeAndWorking``
  or ``deliveryFault``) and ``listOfFaults``; ``taskStatus`` = ``provisioningStatus`` and
  ``listOfFaults``; ``neStatusDetails`` = ``neStatus`` (``OK`` or ``Faults``) and
  ``listOfFaults``, each fault an ``unresolvedFault`` (``errorCode``, ``errorDescription``).
  The faults come from the same state the reports to the ADMF are made of (:mod:`.reports`),
  so a destination reported faulty is answered ``deliveryFault`` for as long as it is.

Error codes (``errorCode``) are those of TS 103 221-1 table 6.7-3, as three independent
implementations transcribe it alike (sipgate/li-lib-x1x2x3 in Java, omec-project/li in Go, and
a Rust POI's), the most specific one that applies: 1010 a value the schema does not allow,
1030 an ADMF identifier that is not the one of the connection's client certificate
(``admf_certificates``), 1040 an ADMF not listed, 1060 a message for another NE (its
``neIdentifier`` is not our ``ne_identifier``; never 1050, which is the ADMF's code for an NE
whose own identifier its certificate does not bind: :data:`NE_NOT_CERTIFICATE`), 1080 a request
type we do not support, 2010/2020 an XID that exists already / does not exist, 2030/2040 the
same for a DID, 3010 a target identifier type we cannot match on, 3050 service types without
voice, 6020 a delivery address that is not an IP address and TCP port, 7010/8010 destinations
in use, and else the request's generic failure code (3000 ActivateTask, 3001 ModifyTask, 4000
DeactivateTask, 5000 DeactivateAllTasks, 6000 CreateDestination, 6001 ModifyDestination, 7000
RemoveDestination, 8000 RemoveAllDestinations, 1000 otherwise). The header is checked first
(1010), then whom the message is for (1060, 1040, 1030), then its type (1080), then its body.

A task field that would narrow or relabel the interception and that this element cannot
honour refuses the task rather than being dropped (``productID``, ``taskDetailsExtensions``,
traffic or IRI policy references, a destination set ``dSId``, ``listOfServiceTypes`` without
``voice``); fields addressed to a mediation function (``listOfMediationDetails``) or that only
permit something (``implicitDeactivationAllowed``), and ``correlationID``, are accepted and
disregarded. Nothing is half-done: a refused request changes nothing, and a document whose
messages are not all X1 request types is refused whole.

Untrusted input (STYLE.md habit 5): the document must be UTF-8, at most :data:`MAX_DOCUMENT`
octets and carry no DTD (no ``<!DOCTYPE``: no entity can be declared, so none can be expanded or
fetched); at most :data:`MAX_MESSAGES` messages and :data:`MAX_TARGETS` targets per task.
Elements are matched by local name, in whatever namespace the ADMF puts them. The requests are
not validated against the XSD itself at run time (docs/lawful_intercept.md says why): the
checks here are by hand. Sans-IO: bytes in, bytes out; the clock is injected.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from xml.sax.saxutils import escape

from gateway.plugins.taps.intercept.targets import KINDS, TargetError, TargetIdentifier
from gateway.plugins.taps.intercept.tasks import (
    DELIVERY_TYPES,
    DID_UNKNOWN,
    XID_UNKNOWN,
    Destination,
    Provisioning,
    ProvisioningError,
    Task,
)

log = logging.getLogger(__name__)

X1_NAMESPACE = "http://uri.etsi.org/03221/X1/2017/10"
COMMON_NAMESPACE = "http://uri.etsi.org/03280/common/2017/07"  # TS 103 280 common types
XSI_NAMESPACE = "http://www.w3.org/2001/XMLSchema-instance"
# The schema version the documents follow (module docstring), said where we do not echo the
# ADMF's: reports and top-level errors. An answer echoes the request's version instead: the
# ADMF speaks that one, and within v1 minor versions only add (TS 103 221-1 §4.5, release
# management, as sipgate/li-lib-x1x2x3 reads it: only a major version breaks compatibility).
VERSION = "v1.23.1"
MAX_DOCUMENT = 1_048_576
MAX_MESSAGES = 100
MAX_TARGETS = 100
MAX_NAME = 256  # a target identifier, a friendlyName (a PDU attribute holds at most 65535)

# TS 103 221-1 table 6.7-3 (module docstring).
GENERIC_ERROR = 1000
SYNTAX_SCHEMA_ERROR = 1010
ADMF_NOT_CERTIFICATE = 1030  # "ADMF identifier does not match certificate"
UNEXPECTED_ADMF = 1040
# 1050: by the table's pattern "NE identifier does not match certificate" (the text was not
# readable; 1030's wording is confirmed, 1050's is inferred). It is the ADMF's answer to a
# message whose neIdentifier the NE asserts (a report from us, §6.5) and that the NE's
# client certificate does not bind (§8.2.4). A request *to* an NE names whom it is for, not
# who sent it: one for another NE is 1060, whatever our certificate says.
NE_NOT_CERTIFICATE = 1050
UNEXPECTED_NE = 1060  # "Unexpected NE identifier": a message addressed to another NE
UNSUPPORTED_REQUEST = 1080
UNSUPPORTED_TARGET_TYPE = 3010
UNSUPPORTED_SERVICE_TYPE = 3050
UNSUPPORTED_DELIVERY_ADDRESS = 6020
NON_TERMINATING_FAULT = 9020  # errorCode of a fault (table 6.7-3, "Generic non-terminating fault")

# The code of a request that failed for a reason no more specific code names.
GENERIC_FAILURE = {
    "ActivateTask": 3000,
    "ModifyTask": 3001,
    "DeactivateTask": 4000,
    "DeactivateAllTasks": 5000,
    "CreateDestination": 6000,
    "ModifyDestination": 6001,
    "RemoveDestination": 7000,
    "RemoveAllDestinations": 8000,
}

# The XSD's RequestMessageType enumeration, less ExtendedRequestMessageType: the request types
# an X1 document can carry (``<name>Request``). One not listed here is not X1.
REQUEST_TYPES = (
    "ActivateTask",
    "ModifyTask",
    "DeactivateTask",
    "DeactivateAllTasks",
    "GetTaskDetails",
    "CreateDestination",
    "ModifyDestination",
    "RemoveDestination",
    "RemoveAllDestinations",
    "GetDestinationDetails",
    "GetNEStatus",
    "GetAllDetails",
    "GetAllTaskDetails",
    "GetAllDestinationDetails",
    "GetAllGenericObjectDetails",
    "ListAllDetails",
    "ReportTaskIssue",
    "ReportDestinationIssue",
    "ReportNEIssue",
    "Ping",
    "Keepalive",
    "CreateObject",
    "ModifyObject",
    "GetObject",
    "DeleteObject",
    "ListObjectsOfType",
    "DeleteAllObjects",
)

# TS 103 280 simple types (patterns of the XSD, anchored as XSD patterns are).
_UUID = re.compile(r"[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}")
_VERSION = re.compile(r"v1\.[0-9]+\.[0-9]+")
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}(Z|[+-][0-9]{2}:[0-9]{2})"
)
_E164 = re.compile(r"[0-9]{1,15}")
_URI_CHARACTERS = r"[a-zA-Z0-9!#$&-;=?-\[\]_~%]+"  # SIPURI, TELURI
_TARGET_PATTERNS = {
    "sipUri": re.compile(r"sips?:" + _URI_CHARACTERS),
    "telUri": re.compile(r"tel:" + _URI_CHARACTERS),
    "e164Number": _E164,
}
_IPV4 = re.compile(
    r"((25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])"
)
_IPV6 = re.compile(r"([0-9a-f]{4}:){7}[0-9a-f]{4}")

_HEADER = ("admfIdentifier", "neIdentifier", "messageTimestamp", "version", "x1TransactionId")


class X1Error(Exception):
    """A request refused with ``code`` (table 6.7-3; None: the request's generic failure)."""

    def __init__(self, code: int | None, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _text(element: ET.Element, name: str, *, required: bool = True) -> str:
    child = _child(element, name)
    text = (child.text or "").strip() if child is not None else ""
    if required and not text:
        raise X1Error(SYNTAX_SCHEMA_ERROR, f"{name} is missing")
    return text


def _uuid_text(text: str, name: str) -> uuid.UUID:
    """A TS 103 280 UUID: the lowercase hexadecimal 8-4-4-4-12 form, nothing else."""
    if not _UUID.fullmatch(text):
        raise X1Error(SYNTAX_SCHEMA_ERROR, f"{name} is not a UUID: {text[:40]!r}")
    return uuid.UUID(text)


def _uuid(element: ET.Element, name: str) -> uuid.UUID:
    return _uuid_text(_text(element, name), name)


def _message_type(element: ET.Element) -> str:
    value = element.get(f"{{{XSI_NAMESPACE}}}type") or ""
    return value.rsplit(":", 1)[-1]  # "ns1:ActivateTaskRequest" -> "ActivateTaskRequest"


def _request_name(kind: str) -> str | None:
    """``ActivateTask`` for an ``ActivateTaskRequest``; None for what is no X1 request type."""
    name = kind.removesuffix("Request")
    return name if kind.endswith("Request") and name in REQUEST_TYPES else None


class X1Handler:
    """Answers X1 documents by changing :class:`Provisioning`.

    ``ne_identifier``: our name; messages for another NE are refused. ``admf_identifiers``: the
    ADMFs we take requests from (empty: any that passed the TLS client check).
    ``admf_certificates``: the subject (RFC 4514) of the client certificate each ADMF presents;
    a message whose ``admfIdentifier`` is not the one of the connection's certificate is
    refused with 1030 (empty: not checked).
    ``destination_fault(did)``, ``task_fault(xid)``, ``ne_fault()``: why delivery fails now,
    or None while it works (for the Get*Details status elements)."""

    def __init__(
        self,
        provisioning: Provisioning,
        *,
        ne_identifier: str,
        admf_identifiers: tuple[str, ...] = (),
        admf_certificates: Mapping[str, str] | None = None,
        wall_clock: Callable[[], float],
        destination_fault: Callable[[uuid.UUID], str | None] = lambda did: None,
        task_fault: Callable[[uuid.UUID], str | None] = lambda xid: None,
        ne_fault: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.provisioning = provisioning
        self.ne_identifier = ne_identifier
        self.admf_identifiers = admf_identifiers
        self.admf_certificates = dict(admf_certificates or {})
        self._wall_clock = wall_clock
        self._destination_fault = destination_fault
        self._task_fault = task_fault
        self._ne_fault = ne_fault
        self.changes = 0
        """Requests that changed the provisioning (a caller reconciles its links after one)."""
        self.top_level_errors = 0

    def handle(self, body: bytes, *, client: str | None = None) -> bytes:
        """The answer to the X1 document ``body``, sent by the ADMF whose client certificate
        has the subject ``client`` (RFC 4514; None: not known)."""
        try:
            root = _parse(body)
        except X1Error as err:
            return self._top_level_error(None, err.description, client)
        messages = _children(root, "x1RequestMessage")
        if not messages:
            return self._top_level_error(root, "no x1RequestMessage", client)
        if len(messages) > MAX_MESSAGES:  # all refused, none half-done: the ADMF splits it
            return self._top_level_error(
                root, f"more than {MAX_MESSAGES} x1RequestMessages in one document", client
            )
        for message in messages:
            # Not X1 (no ErrorResponse could name its type): the document is refused whole,
            # before any of its messages changes anything.
            if _request_name(_message_type(message)) is None:
                kind = _message_type(message)[:80] or "none"
                return self._top_level_error(
                    root, f"xsi:type {kind!r} is no X1 request type", client
                )
        responses = [self._one(message, client) for message in messages]
        return _document("X1Response", "".join(responses))

    def _one(self, message: ET.Element, client: str | None) -> str:
        kind = _message_type(message)
        name = _request_name(kind)
        assert name is not None
        header = {field: _text(message, field, required=False) for field in _HEADER}
        try:
            _check_header(header)
            if header["neIdentifier"] != self.ne_identifier:
                raise X1Error(
                    UNEXPECTED_NE, f"neIdentifier {header['neIdentifier'][:80]!r} is not ours"
                )
            if self.admf_identifiers and header["admfIdentifier"] not in self.admf_identifiers:
                raise X1Error(
                    UNEXPECTED_ADMF, f"admfIdentifier {header['admfIdentifier'][:80]!r} unknown"
                )
            if self.admf_certificates:
                self._check_certificate(header["admfIdentifier"], client)
            handler = self._handlers.get(name)
            if handler is None:
                raise X1Error(UNSUPPORTED_REQUEST, f"{kind} is not supported")
            body = handler(self, message)
        except X1Error as err:
            return self._error(name, header, err.code, err.description)
        except ProvisioningError as err:
            return self._error(name, header, err.code, str(err))
        except (ValueError, OSError) as err:
            # A value our checks let through and the store or a parser did not take: this
            # message fails on its own, the document's others keep their answers.
            return self._error(name, header, None, f"cannot apply it: {err}")
        return self._message(f"{name}Response", header, body)

    # -- requests -------------------------------------------------------------------------------

    def _check_certificate(self, admf: str, client: str | None) -> None:
        """The ADMF a message names must be the one that authenticated the connection: a
        certificate the CA issued to one ADMF does not speak for another (table 6.7-3, 1030
        "ADMF identifier does not match certificate"). An ADMF without a certificate named
        is unknown (1040)."""
        expected = self.admf_certificates.get(admf)
        if expected is None:
            raise X1Error(UNEXPECTED_ADMF, f"admfIdentifier {admf[:80]!r} unknown")
        if client != expected:
            # The subject goes to the plugin's log only, in the form admf_certificates takes.
            log.warning(
                "intercept: X1 request for admfIdentifier %r refused (1030): the client "
                "certificate's subject is %s, admf_certificates names %s",
                admf[:80],
                client or "(none)",
                expected,
            )
            raise X1Error(
                ADMF_NOT_CERTIFICATE,
                f"admfIdentifier {admf[:80]!r} does not match the client certificate",
            )

    def _activate(self, message: ET.Element) -> str:
        self.provisioning.activate(_task(_required(message, "taskDetails")))
        self.changes += 1
        return _ok()

    def _modify(self, message: ET.Element) -> str:
        self.provisioning.modify(_task(_required(message, "taskDetails")))
        self.changes += 1
        return _ok()

    def _deactivate(self, message: ET.Element) -> str:
        self.provisioning.deactivate(_uuid(message, "xId"))
        self.changes += 1
        return _ok()

    def _deactivate_all(self, message: ET.Element) -> str:
        self.provisioning.deactivate_all()
        self.changes += 1
        return _ok()

    def _task_details(self, message: ET.Element) -> str:
        xid = _uuid(message, "xId")
        task = self.provisioning.tasks.get(xid)
        if task is None:
            raise ProvisioningError(f"no task {xid}", XID_UNKNOWN)
        return self._task_response(task)

    def _create_destination(self, message: ET.Element) -> str:
        self.provisioning.create_destination(_destination(_required(message, "destinationDetails")))
        self.changes += 1
        return _ok()

    def _modify_destination(self, message: ET.Element) -> str:
        self.provisioning.modify_destination(_destination(_required(message, "destinationDetails")))
        self.changes += 1
        return _ok()

    def _remove_destination(self, message: ET.Element) -> str:
        self.provisioning.remove_destination(_uuid(message, "dId"))
        self.changes += 1
        return _ok()

    def _remove_all_destinations(self, message: ET.Element) -> str:
        self.provisioning.remove_all_destinations()
        self.changes += 1
        return _ok()

    def _destination_details(self, message: ET.Element) -> str:
        did = _uuid(message, "dId")
        destination = self.provisioning.destinations.get(did)
        if destination is None:
            raise ProvisioningError(f"no destination {did}", DID_UNKNOWN)
        return self._destination_response(destination)

    def _all_details(self, message: ET.Element) -> str:
        return f"{self._ne_status_details()}{self._all_tasks()}{self._all_destinations()}"

    def _all_task_details(self, message: ET.Element) -> str:
        # §6.4.7: holding no task is an empty list, an answer the ADMF can act on.
        return self._all_tasks()

    def _all_destination_details(self, message: ET.Element) -> str:
        return self._all_destinations()  # §6.4.8

    def _list_all(self, message: ET.Element) -> str:
        # §6.4.6: the identifiers only (an ADMF compares them with its own and asks the
        # details of what differs). ListOfGenericObjectIDs is left out: no Generic Objects.
        xids = "".join(f"<xId>{xid}</xId>" for xid in self.provisioning.tasks)
        dids = "".join(f"<dId>{did}</dId>" for did in self.provisioning.destinations)
        return f"<ListOfXIDs>{xids}</ListOfXIDs><ListOfDIDs>{dids}</ListOfDIDs>"

    def _all_generic_objects(self, message: ET.Element) -> str:
        # §6.4.9: the list is optional and left out, which says Generic Objects are not
        # supported (an empty list would say they are and none is held).
        return ""

    def _ne_status(self, message: ET.Element) -> str:
        return self._ne_status_details()

    def _ping(self, message: ET.Element) -> str:
        return _ok()

    _handlers: dict[str, Callable[[X1Handler, ET.Element], str]] = {
        "ActivateTask": _activate,
        "ModifyTask": _modify,
        "DeactivateTask": _deactivate,
        "DeactivateAllTasks": _deactivate_all,
        "GetTaskDetails": _task_details,
        "CreateDestination": _create_destination,
        "ModifyDestination": _modify_destination,
        "RemoveDestination": _remove_destination,
        "RemoveAllDestinations": _remove_all_destinations,
        "GetDestinationDetails": _destination_details,
        "GetAllDetails": _all_details,
        "GetAllTaskDetails": _all_task_details,
        "GetAllDestinationDetails": _all_destination_details,
        "GetAllGenericObjectDetails": _all_generic_objects,
        "ListAllDetails": _list_all,
        "GetNEStatus": _ne_status,
        "Ping": _ping,
        "Keepalive": _ping,
    }

    # -- answers --------------------------------------------------------------------------------

    def _all_tasks(self) -> str:
        tasks = "".join(self._task_response(task) for task in self.provisioning.tasks.values())
        return f"<listOfTaskResponseDetails>{tasks}</listOfTaskResponseDetails>"

    def _all_destinations(self) -> str:
        destinations = "".join(
            self._destination_response(d) for d in self.provisioning.destinations.values()
        )
        return (
            f"<listOfDestinationResponseDetails>{destinations}</listOfDestinationResponseDetails>"
        )

    def _destination_response(self, destination: Destination) -> str:
        fault = self._destination_fault(destination.did)
        status = "activeAndWorking" if fault is None else "deliveryFault"
        return (
            "<destinationResponseDetails>"
            f"{_destination_xml(destination)}"
            f"<destinationStatus><destinationDeliveryStatus>{status}</destinationDeliveryStatus>"
            f"{_faults(fault)}</destinationStatus>"
            "</destinationResponseDetails>"
        )

    def _task_response(self, task: Task) -> str:
        return _task_response(task, self._task_fault(task.xid))

    def _ne_status_details(self) -> str:
        fault = self._ne_fault()
        status = "OK" if fault is None else "Faults"
        return f"<neStatusDetails><neStatus>{status}</neStatus>{_faults(fault)}</neStatusDetails>"

    def _message(self, response_type: str, header: dict[str, str], body: str) -> str:
        # The echoes must be what the schema allows, or our own answer would not validate: a
        # transaction id or version the ADMF got wrong is answered (with 1010) under a fresh
        # id and our version.
        transaction = header["x1TransactionId"]
        if not _UUID.fullmatch(transaction):
            transaction = str(uuid.uuid4())
        version = header["version"] if _VERSION.fullmatch(header["version"]) else VERSION
        return (
            f'<x1ResponseMessage xsi:type="{response_type}">'
            f"<admfIdentifier>{escape(header['admfIdentifier'])}</admfIdentifier>"
            f"<neIdentifier>{escape(self.ne_identifier)}</neIdentifier>"
            f"<messageTimestamp>{self._timestamp()}</messageTimestamp>"
            f"<version>{version}</version>"
            f"<x1TransactionId>{transaction}</x1TransactionId>"
            f"{body}</x1ResponseMessage>"
        )

    def _error(self, name: str, header: dict[str, str], code: int | None, text: str) -> str:
        if code is None:
            code = GENERIC_FAILURE.get(name, GENERIC_ERROR)
        return self._message(
            "ErrorResponse",
            header,
            f"<requestMessageType>{name}</requestMessageType>"
            f"<errorInformation><errorCode>{code}</errorCode>"
            f"<errorDescription>{escape(text)}</errorDescription></errorInformation>",
        )

    def _top_level_error(self, root: ET.Element | None, reason: str, client: str | None) -> bytes:
        """``X1TopLevelErrorResponse``: the four fields the XSD gives it and no reason, so the
        reason goes to our log. The ADMF named: the first message's, or the one whose client
        certificate the connection has (``admf_certificates``), or the first we take requests
        from, or none (an empty token)."""
        self.top_level_errors += 1
        log.warning("intercept: an X1 document was refused whole: %s", reason)
        admf = ""
        first = _child(root, "x1RequestMessage") if root is not None else None
        if first is not None:
            admf = _text(first, "admfIdentifier", required=False)
        if not admf and client is not None:
            owners = [name for name, subject in self.admf_certificates.items() if subject == client]
            admf = owners[0] if owners else ""
        if not admf and self.admf_identifiers:
            admf = self.admf_identifiers[0]
        return _document(
            "X1TopLevelErrorResponse",
            f"<admfIdentifier>{escape(admf)}</admfIdentifier>"
            f"<neIdentifier>{escape(self.ne_identifier)}</neIdentifier>"
            f"<messageTimestamp>{self._timestamp()}</messageTimestamp>"
            f"<version>{VERSION}</version>",
        )

    def _timestamp(self) -> str:
        return timestamp(self._wall_clock())


def timestamp(at: float) -> str:
    """A TS 103 280 QualifiedMicrosecondDateTime: six digits of fraction, ``Z``."""
    moment = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_header(header: dict[str, str]) -> None:
    if not _UUID.fullmatch(header["x1TransactionId"]):
        raise X1Error(
            SYNTAX_SCHEMA_ERROR,
            f"x1TransactionId is not a UUID: {header['x1TransactionId'][:40]!r}",
        )
    if not _VERSION.fullmatch(header["version"]):
        raise X1Error(SYNTAX_SCHEMA_ERROR, f"version {header['version'][:40]!r} is not v1.N.N")
    if not _TIMESTAMP.fullmatch(header["messageTimestamp"]):
        raise X1Error(
            SYNTAX_SCHEMA_ERROR,
            f"messageTimestamp {header['messageTimestamp'][:40]!r} is not a date and time "
            "with microseconds and a zone",
        )


def read_xml_untrusted(body: bytes, what: str) -> ET.Element:
    """The root of an X1 document from the network (``what``: "document", "answer", for the
    errors): at most :data:`MAX_DOCUMENT` octets, UTF-8, no DTD (so no entity expansion or
    external entities, XXE), well-formed. Raises :class:`X1Error` (syntax/schema error)."""
    if len(body) > MAX_DOCUMENT:
        raise X1Error(SYNTAX_SCHEMA_ERROR, f"{what} larger than {MAX_DOCUMENT} octets")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise X1Error(SYNTAX_SCHEMA_ERROR, f"{what} is not UTF-8") from None
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise X1Error(SYNTAX_SCHEMA_ERROR, "a DTD is not accepted")
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise X1Error(SYNTAX_SCHEMA_ERROR, f"{what} is not well-formed XML: {exc}") from None


def _parse(body: bytes) -> ET.Element:
    root = read_xml_untrusted(body, "document")
    if _local(root.tag) != "X1Request":
        raise X1Error(
            SYNTAX_SCHEMA_ERROR, f"root element {_local(root.tag)[:80]!r} is not X1Request"
        )
    return root


def _required(element: ET.Element, name: str) -> ET.Element:
    found = _child(element, name)
    if found is None:
        raise X1Error(SYNTAX_SCHEMA_ERROR, f"{name} is missing")
    return found


def _task(details: ET.Element) -> Task:
    xid = _uuid(details, "xId")
    targets: list[TargetIdentifier] = []
    identifiers = _children(_required(details, "targetIdentifiers"), "targetIdentifier")
    if len(identifiers) > MAX_TARGETS:
        raise X1Error(SYNTAX_SCHEMA_ERROR, f"more than {MAX_TARGETS} target identifiers")
    for identifier in identifiers:
        if len(identifier) != 1:
            raise X1Error(
                SYNTAX_SCHEMA_ERROR, "a targetIdentifier must hold exactly one identifier"
            )
        kind = _local(identifier[0].tag)
        if kind not in KINDS:
            raise X1Error(
                UNSUPPORTED_TARGET_TYPE,
                f"target identifier type {kind[:40]!r} is not supported "
                f"(supported: {', '.join(KINDS)})",
            )
        value = (identifier[0].text or "").strip()
        if len(value) > MAX_NAME:
            raise X1Error(
                SYNTAX_SCHEMA_ERROR, f"a target identifier longer than {MAX_NAME} characters"
            )
        if not _TARGET_PATTERNS[kind].fullmatch(value):
            # TS 103 280: InternationalE164 is digits only (no "+"); SIPURI and TELURI allow
            # no space, quote, angle bracket, backslash, caret, backquote, brace or bar.
            raise X1Error(SYNTAX_SCHEMA_ERROR, f"not a valid {kind}: {value[:80]!r}")
        target = TargetIdentifier(kind, value)
        try:
            target.key  # noqa: B018 - refuses a value we could never match
        except TargetError as err:
            raise X1Error(SYNTAX_SCHEMA_ERROR, str(err)) from None
        targets.append(target)
    delivery_type = _delivery_type(details)
    dids_element = _required(details, "listOfDIDs")
    if _children(dids_element, "dSId"):
        raise X1Error(None, "destination sets (dSId) are not supported: name each dId")
    dids = [
        _uuid_text((element.text or "").strip(), "dId")
        for element in _children(dids_element, "dId")
    ]
    _refuse_unhonoured(details)
    return Task(xid, tuple(targets), delivery_type, tuple(dids))


def _refuse_unhonoured(details: ET.Element) -> None:
    """Task fields that would narrow or relabel what is delivered and that we cannot honour:
    acknowledging the task would run an interception other than the one ordered."""
    services = _child(details, "listOfServiceTypes")
    if services is not None:
        kinds = [(e.text or "").strip() for e in _children(services, "serviceType")]
        if "voice" not in kinds:
            raise X1Error(
                UNSUPPORTED_SERVICE_TYPE,
                f"this element intercepts voice only, not {', '.join(k[:20] for k in kinds)}",
            )
    for name in ("productID", "taskDetailsExtensions"):
        if _child(details, name) is not None:
            raise X1Error(None, f"{name} is not supported")
    for name in ("listOfTrafficPolicyReferences", "listOfIRIPolicyReferences"):
        element = _child(details, name)
        if element is not None and len(element):
            raise X1Error(None, f"{name} is not supported")


def _destination(details: ET.Element) -> Destination:
    did = _uuid(details, "dId")
    delivery_type = _delivery_type(details)
    address_element = _required(details, "deliveryAddress")
    address_and_port = _child(address_element, "ipAddressAndPort")
    if address_and_port is None:
        raise X1Error(UNSUPPORTED_DELIVERY_ADDRESS, "deliveryAddress must be an ipAddressAndPort")
    address = _address(_required(address_and_port, "address"))
    port_element = _required(address_and_port, "port")
    if _child(port_element, "TCPPort") is None:
        # TS 103 221-2: X2 and X3 are delivered over TCP.
        raise X1Error(UNSUPPORTED_DELIVERY_ADDRESS, "deliveryAddress needs a TCPPort")
    port = _text(port_element, "TCPPort")
    # TS 103 280 TCPPort: an integer above 1 (minExclusive 1), at most 65535.
    if not (port.isascii() and port.isdigit()) or not 1 < int(port) < 65536:
        raise X1Error(SYNTAX_SCHEMA_ERROR, "deliveryAddress needs a TCPPort between 2 and 65535")
    name = _text(details, "friendlyName", required=False)
    if len(name) > MAX_NAME:
        raise X1Error(SYNTAX_SCHEMA_ERROR, f"friendlyName longer than {MAX_NAME} characters")
    if _child(details, "destinationDetailsExtensions") is not None:
        raise X1Error(None, "destinationDetailsExtensions is not supported")
    return Destination(did, (address, int(port)), delivery_type, name)


def _address(element: ET.Element) -> str:
    """The address of an ``address`` (TS 103 280 IPAddress), as ``ipaddress`` writes it (the
    form the delivery links and the certificate check use)."""
    ipv4 = _text(element, "IPv4Address", required=False)
    ipv6 = _text(element, "IPv6Address", required=False)
    if ipv4 and _IPV4.fullmatch(ipv4):
        return str(ipaddress.IPv4Address(".".join(str(int(part)) for part in ipv4.split("."))))
    if ipv6 and _IPV6.fullmatch(ipv6):
        # The full form only, so no zone ("fe80::1%eth0": an interface of the ADMF's choosing,
        # text no socket or certificate check takes) and no embedded IPv4 form.
        return str(ipaddress.IPv6Address(ipv6))
    raise X1Error(
        SYNTAX_SCHEMA_ERROR,
        "deliveryAddress needs an IPv4Address (dotted decimal) or an IPv6Address "
        "(eight groups of four lowercase hexadecimal digits)",
    )


def _delivery_type(details: ET.Element) -> str:
    delivery_type = _text(details, "deliveryType")
    if delivery_type not in DELIVERY_TYPES:
        raise X1Error(
            SYNTAX_SCHEMA_ERROR,
            f"deliveryType {delivery_type[:40]!r} is not X2Only, X3Only or X2andX3",
        )
    return delivery_type


def _ok() -> str:
    return "<oK>AcknowledgedAndCompleted</oK>"


def _faults(fault: str | None) -> str:
    """A ``listOfFaults``: empty, or the one fault now (a non-terminating one: the task or
    destination stays and delivers again once the fault clears)."""
    if fault is None:
        return "<listOfFaults/>"
    return (
        f"<listOfFaults><unresolvedFault><errorCode>{NON_TERMINATING_FAULT}</errorCode>"
        f"<errorDescription>{escape(fault)}</errorDescription></unresolvedFault></listOfFaults>"
    )


def _target_value(target: TargetIdentifier) -> str:
    if target.kind == "e164Number":
        # Digits only (InternationalE164); a task stored before this was checked may hold a
        # "+" or separators, which name the same number.
        return "".join(c for c in target.value if c.isascii() and c.isdigit())
    return target.value


def _task_response(task: Task, fault: str | None) -> str:
    targets = "".join(
        f"<targetIdentifier><{t.kind}>{escape(_target_value(t))}</{t.kind}></targetIdentifier>"
        for t in task.targets
    )
    dids = "".join(f"<dId>{did}</dId>" for did in task.dids)
    return (
        "<taskResponseDetails><taskDetails>"
        f"<xId>{task.xid}</xId><targetIdentifiers>{targets}</targetIdentifiers>"
        f"<deliveryType>{task.delivery_type}</deliveryType><listOfDIDs>{dids}</listOfDIDs>"
        "</taskDetails><taskStatus><provisioningStatus>complete</provisioningStatus>"
        f"{_faults(fault)}</taskStatus></taskResponseDetails>"
    )


def _destination_xml(destination: Destination) -> str:
    host, port = destination.address
    parsed = ipaddress.ip_address(host)
    if parsed.version == 6:
        # TS 103 280 IPv6Address: all eight groups, four lowercase digits each.
        address = f"<c:IPv6Address>{parsed.exploded}</c:IPv6Address>"
    else:
        address = f"<c:IPv4Address>{parsed}</c:IPv4Address>"
    name = destination.friendly_name
    return (
        "<destinationDetails>"
        f"<dId>{destination.did}</dId>"
        + (f"<friendlyName>{escape(name)}</friendlyName>" if name else "")
        + f"<deliveryType>{destination.delivery_type}</deliveryType>"
        "<deliveryAddress><ipAddressAndPort>"
        f"<c:address>{address}</c:address>"
        f"<c:port><c:TCPPort>{port}</c:TCPPort></c:port>"
        "</ipAddressAndPort></deliveryAddress></destinationDetails>"
    )


def _document(root: str, body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<{root} xmlns="{X1_NAMESPACE}" xmlns:c="{COMMON_NAMESPACE}" '
        f'xmlns:xsi="{XSI_NAMESPACE}">{body}</{root}>'
    ).encode()
