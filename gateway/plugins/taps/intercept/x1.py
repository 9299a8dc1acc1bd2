"""X1 (ETSI TS 103 221-1): the ADMF's requests to this point of interception, and our answers.

The ADMF POSTs an ``X1Request`` document holding one or more ``x1RequestMessage`` elements, each
typed by ``xsi:type``; we answer one ``X1Response`` with one ``x1ResponseMessage`` per request,
in order. Every message carries the same header: ``admfIdentifier``, ``neIdentifier``,
``messageTimestamp``, ``version``, ``x1TransactionId`` (echoed in its response). Supported:

- ActivateTask, ModifyTask, DeactivateTask, DeactivateAllTasks, GetTaskDetails;
- CreateDestination, ModifyDestination, RemoveDestination, RemoveAllDestinations,
  GetDestinationDetails;
- GetAllDetails, GetNEStatus, Ping, Keepalive.

Status answers (GetDestinationDetails, GetTaskDetails, GetNEStatus, GetAllDetails) carry the
XSD's status elements (TS 103 221-1 XSD v1.23.1, as bundled by siphon-project/siphon-sip):
``destinationStatus`` = ``destinationDeliveryStatus`` (``activeAndWorking`` or
``deliveryFault``) and ``listOfFaults``; ``taskStatus`` = ``provisioningStatus`` and
``listOfFaults``; ``neStatusDetails`` = ``neStatus`` (``OK`` or ``Faults``) and
``listOfFaults``, each fault an ``unresolvedFault`` (``errorCode``, ``errorDescription``). The
faults come from the same state the reports to the ADMF are made of (:mod:`.reports`), so a
destination reported faulty is answered ``deliveryFault`` for as long as it is.

A request that is refused gets an ``ErrorResponse`` naming the request type, with an
``errorInformation`` (``errorCode``, ``errorDescription``); a document we cannot read at all gets
an ``X1TopLevelErrorResponse``. Nothing is half-done: a refused request changes nothing.

Sources and what is not verified: the ETSI texts were not readable here. Element names come from
../shared/specs/lawful-intercept.md (several implementations' X1 fixtures agree on them) and,
for the status elements, from the XSD copy named above; the numeric error codes
(:data:`ERROR_CODES`) and the X1TopLevelErrorResponse answer are this gateway's (that XSD gives
X1TopLevelErrorResponse the four header fields and no errorInformation), to be checked against
the XSD of the version an operator's ADMF speaks. Elements are matched by local name, in
whatever namespace the ADMF puts them.

Untrusted input (STYLE.md habit 5): the document must be UTF-8, at most :data:`MAX_DOCUMENT`
octets and carry no DTD (no ``<!DOCTYPE``: no entity can be declared, so none can be expanded or
fetched); at most :data:`MAX_MESSAGES` messages and :data:`MAX_TARGETS` targets per task.
Sans-IO: bytes in, bytes out; the clock is injected.
"""

from __future__ import annotations

import datetime
import ipaddress
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from xml.sax.saxutils import escape

from gateway.plugins.taps.intercept.targets import KINDS, TargetError, TargetIdentifier
from gateway.plugins.taps.intercept.tasks import (
    DELIVERY_TYPES,
    Destination,
    Provisioning,
    ProvisioningError,
    Task,
)

X1_NAMESPACE = "http://uri.etsi.org/03221/X1/2017/10"
XSI_NAMESPACE = "http://www.w3.org/2001/XMLSchema-instance"
MAX_DOCUMENT = 1_048_576
MAX_MESSAGES = 100
MAX_TARGETS = 100
MAX_NAME = 256  # a target identifier, a friendlyName (a PDU attribute holds at most 65535)

# errorCode values we send (ours; see the module docstring).
ERROR_CODES = {
    "syntax": 1000,  # the message cannot be read
    "not-for-us": 1001,  # another NE's message
    "unknown-admf": 1002,
    "unsupported": 1003,  # a request type or target type we do not handle
    "refused": 1004,  # the state does not allow it (no such task, in use, exists already)
}

NON_TERMINATING_FAULT = 9020  # errorCode of a fault (TS 103 221-1 table 6.7-3, omec-project/li)

_HEADER = ("admfIdentifier", "neIdentifier", "messageTimestamp", "version", "x1TransactionId")


class X1Error(Exception):
    def __init__(self, kind: str, description: str) -> None:
        super().__init__(description)
        self.kind = kind
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
        raise X1Error("syntax", f"{name} is missing")
    return text


def _uuid(element: ET.Element, name: str) -> uuid.UUID:
    text = _text(element, name)
    try:
        return uuid.UUID(text)
    except ValueError:
        raise X1Error("syntax", f"{name} is not a UUID: {text[:40]!r}") from None


def _message_type(element: ET.Element) -> str:
    value = element.get(f"{{{XSI_NAMESPACE}}}type") or ""
    return value.rsplit(":", 1)[-1]  # "ns1:ActivateTaskRequest" -> "ActivateTaskRequest"


class X1Handler:
    """Answers X1 documents by changing :class:`Provisioning`.

    ``ne_identifier``: our name; messages for another NE are refused. ``admf_identifiers``: the
    ADMFs we take requests from (empty: any that passed the TLS client check).
    ``destination_fault(did)``, ``task_fault(xid)``, ``ne_fault()``: why delivery fails now,
    or None while it works (for the Get*Details status elements)."""

    def __init__(
        self,
        provisioning: Provisioning,
        *,
        ne_identifier: str,
        admf_identifiers: tuple[str, ...] = (),
        wall_clock: Callable[[], float],
        destination_fault: Callable[[uuid.UUID], str | None] = lambda did: None,
        task_fault: Callable[[uuid.UUID], str | None] = lambda xid: None,
        ne_fault: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.provisioning = provisioning
        self.ne_identifier = ne_identifier
        self.admf_identifiers = admf_identifiers
        self._wall_clock = wall_clock
        self._destination_fault = destination_fault
        self._task_fault = task_fault
        self._ne_fault = ne_fault
        self.changes = 0
        """Requests that changed the provisioning (a caller reconciles its links after one)."""

    def handle(self, body: bytes) -> bytes:
        try:
            root = _parse(body)
        except X1Error as err:
            return self._top_level_error(err)
        messages = _children(root, "x1RequestMessage")
        if not messages:
            return self._top_level_error(X1Error("syntax", "no x1RequestMessage"))
        if len(messages) > MAX_MESSAGES:  # all refused, none half-done: the ADMF splits it
            return self._top_level_error(
                X1Error("syntax", f"more than {MAX_MESSAGES} x1RequestMessages in one document")
            )
        responses = [self._one(message) for message in messages]
        return _document("X1Response", "".join(responses))

    def _one(self, message: ET.Element) -> str:
        kind = _message_type(message)
        header = {name: _text(message, name, required=False) for name in _HEADER}
        try:
            if header["neIdentifier"] != self.ne_identifier:
                raise X1Error(
                    "not-for-us", f"neIdentifier {header['neIdentifier'][:80]!r} is not ours"
                )
            if self.admf_identifiers and header["admfIdentifier"] not in self.admf_identifiers:
                raise X1Error(
                    "unknown-admf", f"admfIdentifier {header['admfIdentifier'][:80]!r} unknown"
                )
            if not header["x1TransactionId"]:
                raise X1Error("syntax", "x1TransactionId is missing")
            handler = self._handlers.get(kind)
            if handler is None:
                raise X1Error("unsupported", f"request type {kind[:80]!r} is not supported")
            body = handler(self, message)
        except X1Error as err:
            return self._error(kind, header, err)
        except ProvisioningError as err:
            return self._error(kind, header, X1Error("refused", str(err)))
        except (ValueError, OSError) as err:
            # A value our checks let through and the store or a parser did not take: this
            # message fails on its own, the document's others keep their answers.
            return self._error(kind, header, X1Error("refused", f"cannot apply it: {err}"))
        response_type = kind.removesuffix("Request") + "Response"
        return self._message(response_type, header, body)

    # -- requests -------------------------------------------------------------------------------

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
            raise ProvisioningError(f"no task {xid}")
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
            raise ProvisioningError(f"no destination {did}")
        return self._destination_response(destination)

    def _all_details(self, message: ET.Element) -> str:
        tasks = "".join(self._task_response(task) for task in self.provisioning.tasks.values())
        destinations = "".join(
            self._destination_response(d) for d in self.provisioning.destinations.values()
        )
        return (
            f"{self._ne_status_details()}"
            f"<listOfTaskResponseDetails>{tasks}</listOfTaskResponseDetails>"
            f"<listOfDestinationResponseDetails>{destinations}"
            "</listOfDestinationResponseDetails>"
        )

    def _ne_status(self, message: ET.Element) -> str:
        return self._ne_status_details()

    def _ping(self, message: ET.Element) -> str:
        return _ok()

    _handlers: dict[str, Callable[[X1Handler, ET.Element], str]] = {
        "ActivateTaskRequest": _activate,
        "ModifyTaskRequest": _modify,
        "DeactivateTaskRequest": _deactivate,
        "DeactivateAllTasksRequest": _deactivate_all,
        "GetTaskDetailsRequest": _task_details,
        "CreateDestinationRequest": _create_destination,
        "ModifyDestinationRequest": _modify_destination,
        "RemoveDestinationRequest": _remove_destination,
        "RemoveAllDestinationsRequest": _remove_all_destinations,
        "GetDestinationDetailsRequest": _destination_details,
        "GetAllDetailsRequest": _all_details,
        "GetNEStatusRequest": _ne_status,
        "PingRequest": _ping,
        "KeepaliveRequest": _ping,
    }

    # -- answers --------------------------------------------------------------------------------

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
        return (
            f'<x1ResponseMessage xsi:type="{response_type}">'
            f"<admfIdentifier>{escape(header['admfIdentifier'])}</admfIdentifier>"
            f"<neIdentifier>{escape(self.ne_identifier)}</neIdentifier>"
            f"<messageTimestamp>{self._timestamp()}</messageTimestamp>"
            f"<version>{escape(header['version'] or 'v1.13.1')}</version>"
            f"<x1TransactionId>{escape(header['x1TransactionId'])}</x1TransactionId>"
            f"{body}</x1ResponseMessage>"
        )

    def _error(self, kind: str, header: dict[str, str], err: X1Error) -> str:
        return self._message(
            "ErrorResponse",
            header,
            f"<requestMessageType>{escape(kind[:80])}</requestMessageType>"
            f"{_error_information(err)}",
        )

    def _top_level_error(self, err: X1Error) -> bytes:
        return _document("X1TopLevelErrorResponse", _error_information(err))

    def _timestamp(self) -> str:
        at = datetime.datetime.fromtimestamp(self._wall_clock(), tz=datetime.UTC)
        return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(body: bytes) -> ET.Element:
    if len(body) > MAX_DOCUMENT:
        raise X1Error("syntax", f"document larger than {MAX_DOCUMENT} octets")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise X1Error("syntax", "document is not UTF-8") from None
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise X1Error("syntax", "a DTD is not accepted")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise X1Error("syntax", f"not well-formed XML: {exc}") from None
    if _local(root.tag) != "X1Request":
        raise X1Error("syntax", f"root element {_local(root.tag)[:80]!r} is not X1Request")
    return root


def _required(element: ET.Element, name: str) -> ET.Element:
    found = _child(element, name)
    if found is None:
        raise X1Error("syntax", f"{name} is missing")
    return found


def _task(details: ET.Element) -> Task:
    xid = _uuid(details, "xId")
    targets: list[TargetIdentifier] = []
    identifiers = _children(_required(details, "targetIdentifiers"), "targetIdentifier")
    if len(identifiers) > MAX_TARGETS:
        raise X1Error("syntax", f"more than {MAX_TARGETS} target identifiers")
    for identifier in identifiers:
        if len(identifier) != 1:
            raise X1Error("syntax", "a targetIdentifier must hold exactly one identifier")
        kind = _local(identifier[0].tag)
        if kind not in KINDS:
            raise X1Error(
                "unsupported",
                f"target identifier type {kind[:40]!r} is not supported "
                f"(supported: {', '.join(KINDS)})",
            )
        value = (identifier[0].text or "").strip()
        if len(value) > MAX_NAME:
            raise X1Error("syntax", f"a target identifier longer than {MAX_NAME} characters")
        target = TargetIdentifier(kind, value)
        try:
            target.key  # noqa: B018 - refuses a value we could never match
        except TargetError as err:
            raise X1Error("syntax", str(err)) from None
        targets.append(target)
    delivery_type = _delivery_type(details)
    dids_element = _required(details, "listOfDIDs")
    dids = []
    for element in _children(dids_element, "dId"):
        try:
            dids.append(uuid.UUID((element.text or "").strip()))
        except ValueError:
            raise X1Error("syntax", "a dId is not a UUID") from None
    return Task(xid, tuple(targets), delivery_type, tuple(dids))


def _destination(details: ET.Element) -> Destination:
    did = _uuid(details, "dId")
    delivery_type = _delivery_type(details)
    address_element = _required(details, "deliveryAddress")
    host = port = ""
    for element in address_element.iter():
        name = _local(element.tag)
        if name in ("IPv4Address", "IPv6Address"):
            host = (element.text or "").strip()
        elif name in ("TCPPort", "port") and (element.text or "").strip():
            port = (element.text or "").strip()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise X1Error("syntax", "deliveryAddress needs an IPv4Address or IPv6Address") from None
    if getattr(address, "scope_id", None):
        # A zone ("fe80::1%eth0") names an interface of the ADMF's choosing and can hold text
        # no socket or certificate check takes: an address is all a destination needs.
        raise X1Error("syntax", "deliveryAddress: an IPv6 address with a zone is not accepted")
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise X1Error("syntax", "deliveryAddress needs a TCPPort between 1 and 65535")
    name = _text(details, "friendlyName", required=False)
    if len(name) > MAX_NAME:
        raise X1Error("syntax", f"friendlyName longer than {MAX_NAME} characters")
    return Destination(did, (str(address), int(port)), delivery_type, name)


def _delivery_type(details: ET.Element) -> str:
    delivery_type = _text(details, "deliveryType")
    if delivery_type not in DELIVERY_TYPES:
        raise X1Error(
            "syntax", f"deliveryType {delivery_type[:40]!r} is not X2Only, X3Only or X2andX3"
        )
    return delivery_type


def _ok() -> str:
    return "<oK>AcknowledgedAndCompleted</oK>"


def _error_information(err: X1Error) -> str:
    return (
        f"<errorInformation><errorCode>{ERROR_CODES[err.kind]}</errorCode>"
        f"<errorDescription>{escape(err.description)}</errorDescription></errorInformation>"
    )


def _faults(fault: str | None) -> str:
    """A ``listOfFaults``: empty, or the one fault now (a non-terminating one: the task or
    destination stays and delivers again once the fault clears)."""
    if fault is None:
        return "<listOfFaults/>"
    return (
        f"<listOfFaults><unresolvedFault><errorCode>{NON_TERMINATING_FAULT}</errorCode>"
        f"<errorDescription>{escape(fault)}</errorDescription></unresolvedFault></listOfFaults>"
    )


def _task_response(task: Task, fault: str | None) -> str:
    targets = "".join(
        f"<targetIdentifier><{t.kind}>{escape(t.value)}</{t.kind}></targetIdentifier>"
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
    family = "IPv6Address" if ":" in host else "IPv4Address"
    return (
        "<destinationDetails>"
        f"<dId>{destination.did}</dId>"
        f"<friendlyName>{escape(destination.friendly_name)}</friendlyName>"
        f"<deliveryType>{destination.delivery_type}</deliveryType>"
        "<deliveryAddress><ipAddressAndPort>"
        f"<address><{family}>{escape(host)}</{family}></address>"
        f"<port><TCPPort>{port}</TCPPort></port>"
        "</ipAddressAndPort></deliveryAddress></destinationDetails>"
    )


def _document(root: str, body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<{root} xmlns="{X1_NAMESPACE}" xmlns:xsi="{XSI_NAMESPACE}">{body}</{root}>'
    ).encode()
