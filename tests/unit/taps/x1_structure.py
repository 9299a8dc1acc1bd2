"""The element structure of X1 documents (ETSI TS 103 221-1 XSD v1.23.1, TS 103 280 v2.17.1),
as a checker for the tests: every document the intercept plugin emits, and every request the
tests send it, must pass :func:`check`.

The ETSI schema files are not in this repository (the copy read, siphon-project/siphon-sip's
``schemas/etsi/``, carries no licence text: docs/lawful_intercept.md). What is here is the part
of the schema the plugin's documents use, written out from reading it: for each complex type
its ``xs:sequence`` (element, namespace, type, minOccurs, maxOccurs, in order) or
``xs:choice``, and for each simple type its enumeration or pattern. The X1 types are in the X1
namespace; ``address``, ``port`` and what they hold are declared in TS 103 280
(``elementFormDefault="qualified"``), so they are in the common namespace. Message types are
chosen by ``xsi:type``, a QName resolved against the document's namespace declarations.

What is left out (optional elements the plugin never writes, such as the TaskStatus counters
or extensions other than the task's) fails here as unexpected: this checker is stricter than
the schema, never looser, for the documents it knows.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable

X = "http://uri.etsi.org/03221/X1/2017/10"
C = "http://uri.etsi.org/03280/common/2017/07"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
UNBOUNDED = 1 << 30


def _pattern(regex: str) -> Callable[[str], bool]:
    compiled = re.compile(regex)
    return lambda text: compiled.fullmatch(text) is not None


def _enumeration(*values: str) -> Callable[[str], bool]:
    return lambda text: text in values


_URI = r"[a-zA-Z0-9!#$&-;=?-\[\]_~%]+"

# Simple types: a test of the element's text (xs:token and the patterned types are compared
# after whitespace collapsing, which for these values is stripping).
SIMPLE: dict[str, Callable[[str], bool]] = {
    "string": lambda text: True,
    "token": lambda text: True,
    "integer": _pattern(r"[+-]?[0-9]+"),
    "nonNegativeInteger": _pattern(r"\+?[0-9]+"),
    "boolean": _enumeration("true", "false", "1", "0"),
    "UUID": _pattern(r"[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}"),
    "Version": _pattern(r"v1\.\d+\.\d+"),
    "QualifiedMicrosecondDateTime": _pattern(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}(Z|[+-][0-9]{2}:[0-9]{2})"
    ),
    "InternationalE164": _pattern(r"[0-9]{1,15}"),
    "IMSI": _pattern(r"[0-9]{6,15}"),
    "SIPURI": _pattern(r"sips?:" + _URI),
    "TELURI": _pattern(r"tel:" + _URI),
    "IPv4Address": _pattern(
        r"((25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])"
    ),
    "IPv6Address": _pattern(r"([0-9a-f]{4}:){7}([0-9a-f]{4})"),
    "TCPPort": lambda text: text.isdigit() and 1 < int(text) <= 65535,
    "UDPPort": lambda text: text.isdigit() and 0 <= int(text) <= 65535,
    "DeliveryType": _enumeration("X2Only", "X3Only", "X2andX3"),
    "OK": _enumeration("AcknowledgedAndCompleted", "Acknowledged"),
    "OKAckAndComplete": _enumeration("AcknowledgedAndCompleted"),
    "ProvisioningStatus": _enumeration("awaitingProvisioning", "failed", "complete"),
    "DestinationDeliveryStatus": _enumeration("activeAndWorking", "deliveryFault"),
    "NeStatus": _enumeration("OK", "Faults"),
    "ServiceType": _enumeration("voice", "data", "messaging", "pushToTalk", "LALS", "RCS"),
    "TaskReportType": _enumeration(
        "AllClear",
        "Warning",
        "NonTerminatingFault",
        "TerminatingFault",
        "ImplicitDeactivation",
        "FullyActionedAndSuccessful",
        "FullyActionedAndUnsuccessful",
    ),
    "TypeOfNeIssueMessage": _enumeration("Warning", "FaultCleared", "FaultReport", "Alert"),
    "RequestMessageType": _enumeration(
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
        "ExtendedRequestMessageType",
    ),
}

Particle = tuple[str, str, str, int, int]  # namespace, element, type, minOccurs, maxOccurs


def _one(name: str, type_: str, ns: str = X) -> Particle:
    return (ns, name, type_, 1, 1)


def _optional(name: str, type_: str, ns: str = X) -> Particle:
    return (ns, name, type_, 0, 1)


def _many(name: str, type_: str, minimum: int = 0, ns: str = X) -> Particle:
    return (ns, name, type_, minimum, UNBOUNDED)


HEADER = [
    _one("admfIdentifier", "token"),
    _one("neIdentifier", "token"),
    _one("messageTimestamp", "QualifiedMicrosecondDateTime"),
    _one("version", "Version"),
    _one("x1TransactionId", "UUID"),
]

# Complex types with an xs:sequence content model.
SEQUENCES: dict[str, list[Particle]] = {
    "RequestContainer": [_many("x1RequestMessage", "X1RequestMessage", 1)],
    "ResponseContainer": [_many("x1ResponseMessage", "X1ResponseMessage", 1)],
    "TopLevelErrorResponse": HEADER[:4],
    "ErrorInformation": [_one("errorCode", "integer"), _one("errorDescription", "string")],
    "TaskDetails": [
        _one("xId", "UUID"),
        _one("targetIdentifiers", "ListOfTargetIdentifiers"),
        _one("deliveryType", "DeliveryType"),
        _one("listOfDIDs", "ListOfDids"),
        _optional("correlationID", "nonNegativeInteger"),
        _optional("implicitDeactivationAllowed", "boolean"),
        _optional("productID", "UUID"),
        _optional("listOfServiceTypes", "ListOfServiceTypes"),
        _many("taskDetailsExtensions", "Extension"),
        _optional("listOfTrafficPolicyReferences", "ListOfTrafficPolicyReferences"),
    ],
    "ListOfTargetIdentifiers": [_many("targetIdentifier", "TargetIdentifier", 1)],
    "ListOfDids": [_many("dId", "UUID"), _many("dSId", "UUID")],
    "ListOfXids": [_many("xId", "UUID")],
    "ListOfServiceTypes": [_many("serviceType", "ServiceType", 1)],
    "ListOfTrafficPolicyReferences": [_many("trafficPolicyReference", "UUID")],
    "Extension": [_one("Owner", "string")],  # then any elements of another namespace
    "TaskResponseDetails": [_one("taskDetails", "TaskDetails"), _one("taskStatus", "TaskStatus")],
    "TaskStatus": [
        _one("provisioningStatus", "ProvisioningStatus"),
        _one("listOfFaults", "ListOfFaults"),
    ],
    "ListOfFaults": [_many("unresolvedFault", "ErrorInformation")],
    "DestinationDetails": [
        _one("dId", "UUID"),
        _optional("friendlyName", "string"),
        _one("deliveryType", "DeliveryType"),
        _one("deliveryAddress", "DeliveryAddress"),
        _many("destinationDetailsExtensions", "Extension"),
    ],
    "IPAddressPort": [_one("address", "IPAddress", C), _one("port", "Port", C)],
    "DestinationResponseDetails": [
        _one("destinationDetails", "DestinationDetails"),
        _one("destinationStatus", "DestinationStatus"),
    ],
    "DestinationStatus": [
        _one("destinationDeliveryStatus", "DestinationDeliveryStatus"),
        _one("listOfFaults", "ListOfFaults"),
    ],
    "NeStatusDetails": [_one("neStatus", "NeStatus"), _one("listOfFaults", "ListOfFaults")],
    "ListOfTaskResponseDetails": [_many("taskResponseDetails", "TaskResponseDetails")],
    "ListOfDestinationResponseDetails": [
        _many("destinationResponseDetails", "DestinationResponseDetails")
    ],
}

# Complex types with an xs:choice content model: exactly one of these elements.
CHOICES: dict[str, list[Particle]] = {
    "TargetIdentifier": [
        _one("e164Number", "InternationalE164"),
        _one("imsi", "IMSI"),
        _one("sipUri", "SIPURI"),
        _one("telUri", "TELURI"),
        _one("nai", "string"),
    ],
    "DeliveryAddress": [
        _one("ipAddressAndPort", "IPAddressPort"),
        _one("e164Number", "InternationalE164"),
        _one("uri", "string"),
        _one("emailAddress", "string"),
    ],
    "IPAddress": [_one("IPv4Address", "IPv4Address", C), _one("IPv6Address", "IPv6Address", C)],
    "Port": [_one("TCPPort", "TCPPort", C), _one("UDPPort", "UDPPort", C)],
}

_OK = [_one("oK", "OK")]
_NOTHING: list[Particle] = []

# The message types derived from X1RequestMessage / X1ResponseMessage (xsi:type): what each
# adds to the header.
REQUESTS: dict[str, list[Particle]] = {
    "ActivateTaskRequest": [_one("taskDetails", "TaskDetails")],
    "ModifyTaskRequest": [_one("taskDetails", "TaskDetails")],
    "DeactivateTaskRequest": [_one("xId", "UUID")],
    "DeactivateAllTasksRequest": _NOTHING,
    "GetTaskDetailsRequest": [_one("xId", "UUID")],
    "CreateDestinationRequest": [_one("destinationDetails", "DestinationDetails")],
    "ModifyDestinationRequest": [_one("destinationDetails", "DestinationDetails")],
    "RemoveDestinationRequest": [_one("dId", "UUID")],
    "RemoveAllDestinationsRequest": _NOTHING,
    "GetDestinationDetailsRequest": [_one("dId", "UUID")],
    "GetNEStatusRequest": _NOTHING,
    "GetAllDetailsRequest": _NOTHING,
    "ListAllDetailsRequest": _NOTHING,
    "GetAllTaskDetailsRequest": _NOTHING,
    "GetAllDestinationDetailsRequest": _NOTHING,
    "GetAllGenericObjectDetailsRequest": [_optional("objectType", "string")],
    "PingRequest": _NOTHING,
    "KeepaliveRequest": _NOTHING,
    "DeleteAllObjectsRequest": _NOTHING,
    "ReportTaskIssueRequest": [
        _one("xId", "UUID"),
        _one("taskReportType", "TaskReportType"),
        _optional("taskIssueErrorCode", "integer"),
        _optional("taskIssueDetails", "string"),
    ],
    "ReportDestinationIssueRequest": [
        _one("dId", "UUID"),
        _one("destinationReportType", "TaskReportType"),
        _optional("destinationIssueErrorCode", "integer"),
        _optional("destinationIssueDetails", "string"),
    ],
    "ReportNEIssueRequest": [
        _one("typeOfNeIssueMessage", "TypeOfNeIssueMessage"),
        _one("description", "string"),
        _optional("issueCode", "integer"),
    ],
}
RESPONSES: dict[str, list[Particle]] = {
    **{
        f"{name}Response": _OK
        for name in (
            "ActivateTask",
            "ModifyTask",
            "DeactivateTask",
            "DeactivateAllTasks",
            "CreateDestination",
            "ModifyDestination",
            "RemoveDestination",
            "RemoveAllDestinations",
            "ReportTaskIssue",
            "ReportDestinationIssue",
            "Ping",
            "Keepalive",
        )
    },
    "ReportNEIssueResponse": [_one("oK", "OKAckAndComplete")],
    "GetTaskDetailsResponse": [_one("taskResponseDetails", "TaskResponseDetails")],
    "GetDestinationDetailsResponse": [
        _one("destinationResponseDetails", "DestinationResponseDetails")
    ],
    "GetNEStatusResponse": [_one("neStatusDetails", "NeStatusDetails")],
    "GetAllDetailsResponse": [
        _one("neStatusDetails", "NeStatusDetails"),
        _one("listOfTaskResponseDetails", "ListOfTaskResponseDetails"),
        _one("listOfDestinationResponseDetails", "ListOfDestinationResponseDetails"),
    ],
    "ListAllDetailsResponse": [_one("ListOfXIDs", "ListOfXids"), _one("ListOfDIDs", "ListOfDids")],
    "GetAllTaskDetailsResponse": [
        _optional("listOfTaskResponseDetails", "ListOfTaskResponseDetails")
    ],
    "GetAllDestinationDetailsResponse": [
        _optional("listOfDestinationResponseDetails", "ListOfDestinationResponseDetails")
    ],
    "GetAllGenericObjectDetailsResponse": _NOTHING,
    "ErrorResponse": [
        _one("requestMessageType", "RequestMessageType"),
        _one("errorInformation", "ErrorInformation"),
    ],
}

ROOTS = {
    "X1Request": "RequestContainer",
    "X1Response": "ResponseContainer",
    "X1TopLevelErrorResponse": "TopLevelErrorResponse",
}


class StructureError(AssertionError):
    """The document breaks the schema; the text says where."""


def check(document: bytes) -> ET.Element:
    """Check ``document`` against the structure above; returns its root, raises
    :class:`StructureError` naming the first violation."""
    prefixes: dict[str, str] = {}
    for _event, value in ET.iterparse(io.BytesIO(document), events=("start-ns",)):
        prefix, uri = value  # type: ignore[misc]
        if prefixes.setdefault(prefix, uri) != uri:
            raise StructureError(f"prefix {prefix!r} bound to two namespaces")
    root = ET.fromstring(document)
    ns, name = _split(root.tag)
    if ns != X or name not in ROOTS:
        raise StructureError(f"root element {root.tag} is no X1 document")
    _complex(root, ROOTS[name], name, prefixes)
    return root


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return "", tag


def _complex(element: ET.Element, type_: str, path: str, prefixes: dict[str, str]) -> None:
    if (element.text or "").strip() or any((c.tail or "").strip() for c in element):
        raise StructureError(f"{path}: text in element-only content")
    attributes = set(element.attrib) - {f"{{{XSI}}}type"}
    if attributes:
        raise StructureError(f"{path}: unexpected attributes {sorted(attributes)}")
    if type_ in ("X1RequestMessage", "X1ResponseMessage"):
        derived = _xsi_type(element, path, prefixes)
        table = REQUESTS if type_ == "X1RequestMessage" else RESPONSES
        if derived not in table:
            raise StructureError(f"{path}: xsi:type {derived!r} is not a {type_} type")
        _sequence(element, HEADER + table[derived], f"{path}[{derived}]", prefixes)
    elif type_ in CHOICES:
        children = list(element)
        options = {(ns, name): (t, ns) for ns, name, t, _, _ in CHOICES[type_]}
        if len(children) != 1 or _split(children[0].tag) not in options:
            found = [c.tag for c in children]
            raise StructureError(f"{path}: a {type_} holds one of {sorted(options)}, not {found}")
        child_type, _ = options[_split(children[0].tag)]
        _element(children[0], child_type, f"{path}/{_split(children[0].tag)[1]}", prefixes)
    else:
        _sequence(element, SEQUENCES[type_], path, prefixes)


def _xsi_type(element: ET.Element, path: str, prefixes: dict[str, str]) -> str:
    value = element.get(f"{{{XSI}}}type")
    if value is None:
        raise StructureError(f"{path}: no xsi:type")
    prefix, _, local = value.rpartition(":")
    if prefixes.get(prefix) != X:
        raise StructureError(f"{path}: xsi:type {value!r} is not in the X1 namespace")
    return local


def _sequence(
    element: ET.Element, particles: list[Particle], path: str, prefixes: dict[str, str]
) -> None:
    children = list(element)
    at = 0
    for ns, name, type_, minimum, maximum in particles:
        count = 0
        while at < len(children) and _split(children[at].tag) == (ns, name) and count < maximum:
            _element(children[at], type_, f"{path}/{name}", prefixes)
            at += 1
            count += 1
        if count < minimum:
            found = children[at].tag if at < len(children) else "the end"
            raise StructureError(f"{path}: expected {{{ns}}}{name}, found {found}")
    if particles and particles[0][1] == "Owner":
        # xs:any namespace="##other" after Owner: elements of another namespace.
        rest = children[at:]
        if any(_split(c.tag)[0] in (X, "") for c in rest):
            raise StructureError(f"{path}: an extension holds elements of another namespace")
        return
    if at < len(children):
        raise StructureError(f"{path}: unexpected {children[at].tag}")


def _element(element: ET.Element, type_: str, path: str, prefixes: dict[str, str]) -> None:
    if type_ in SIMPLE:
        if len(element):
            raise StructureError(f"{path}: a {type_} has no child elements")
        text = (element.text or "").strip() if type_ != "string" else element.text or ""
        if not SIMPLE[type_](text):
            raise StructureError(f"{path}: {text[:60]!r} is not a valid {type_}")
        return
    _complex(element, type_, path, prefixes)
