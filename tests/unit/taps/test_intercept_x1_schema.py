"""Every kind of X1 answer the intercept plugin gives, checked against the TS 103 221-1 XSD's
element structure (tests/unit/taps/x1_structure.py), the audit requests (ListAllDetails,
GetAllTaskDetails, GetAllDestinationDetails), and the checker itself: it refuses each shape the
plugin used to emit before it followed the schema."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest

from gateway.plugins.taps.intercept.targets import TargetIdentifier
from gateway.plugins.taps.intercept.tasks import Destination, Provisioning, Task
from gateway.plugins.taps.intercept.x1 import X1Handler
from tests.unit.taps.x1_messages import (
    COMMON,
    DID,
    NS,
    XID,
    destination,
    document,
    handler,
    message,
    response_type,
    responses,
    task,
    text,
)
from tests.unit.taps.x1_structure import StructureError, check

DID6 = uuid.UUID("bbbbbbbb-cccc-4ddd-8eee-ffffffffffff")
XID2 = uuid.UUID("22222222-3333-4444-8555-666666666666")
EVERY_QUERY = (
    "GetAllDetails",
    "GetAllTaskDetails",
    "GetAllDestinationDetails",
    "ListAllDetails",
    "GetAllGenericObjectDetails",
    "GetNEStatus",
    "Ping",
    "Keepalive",
)


def provisioned(**faults: str) -> X1Handler:
    """Two destinations (IPv4, IPv6) and two tasks naming every target kind we take."""
    x1 = handler(
        destination_fault=lambda did: faults.get("destination"),
        task_fault=lambda xid: faults.get("task"),
        ne_fault=lambda: faults.get("ne"),
    )
    ipv6 = (
        destination(did=DID6, kind="X2Only")
        .replace("<friendlyName>mdf one</friendlyName>", "")
        .replace(
            "<c:IPv4Address>127.0.0.1</c:IPv4Address>",
            "<c:IPv6Address>2001:0db8:0000:0000:0000:0000:0000:0001</c:IPv6Address>",
        )
    )
    answers = responses(
        x1.handle(
            document(
                message("CreateDestinationRequest", destination()),
                message("CreateDestinationRequest", ipv6),
                message(
                    "ActivateTaskRequest",
                    task(
                        targets="<sipUri>sip:alice@example.com</sipUri>|"
                        "<telUri>tel:+49-30-123456</telUri>|<e164Number>4930654321</e164Number>",
                        dids=(DID, DID6),
                    ),
                ),
                message("ActivateTaskRequest", task(xid=XID2, kind="X2Only")),
            )
        )
    )
    assert [response_type(a) for a in answers] == [
        "CreateDestinationResponse",
        "CreateDestinationResponse",
        "ActivateTaskResponse",
        "ActivateTaskResponse",
    ]
    return x1


@pytest.mark.parametrize("faulty", [False, True])
def test_every_query_is_answered_in_the_schemas_structure(faulty: bool) -> None:
    faults = {"destination": "refused", "task": "no MDF", "ne": "nothing"} if faulty else {}
    x1 = provisioned(**faults)
    answers = responses(  # check()ed, each message by its xsi:type
        x1.handle(
            document(
                *(message(f"{kind}Request") for kind in EVERY_QUERY),
                message("GetTaskDetailsRequest", f"<xId>{XID}</xId>"),
                message("GetDestinationDetailsRequest", f"<dId>{DID6}</dId>"),
            )
        )
    )
    assert [response_type(a) for a in answers] == [
        *(f"{kind}Response" for kind in EVERY_QUERY),
        "GetTaskDetailsResponse",
        "GetDestinationDetailsResponse",
    ]
    assert text(answers[0], "neStatusDetails/neStatus") == ("Faults" if faulty else "OK")
    status = "destinationResponseDetails/destinationStatus/destinationDeliveryStatus"
    assert text(answers[-1], status) == ("deliveryFault" if faulty else "activeAndWorking")


def test_an_ipv6_destination_is_written_in_full_in_the_common_namespace() -> None:
    (details,) = responses(
        provisioned().handle(
            document(message("GetDestinationDetailsRequest", f"<dId>{DID6}</dId>"))
        )
    )
    path = (
        f"{{{NS}}}destinationResponseDetails/{{{NS}}}destinationDetails/"
        f"{{{NS}}}deliveryAddress/{{{NS}}}ipAddressAndPort/{{{COMMON}}}address/"
        f"{{{COMMON}}}IPv6Address"
    )
    found = details.find(path)
    assert found is not None and found.text == "2001:0db8:0000:0000:0000:0000:0000:0001"
    port = details.find(path.replace("address/", "port/").replace("IPv6Address", "TCPPort"))
    assert port is not None and port.text == "5500"
    # friendlyName is optional and none was given: left out, not sent empty.
    assert details.find(f".//{{{NS}}}friendlyName") is None


def test_list_all_details_names_every_xid_and_did_held() -> None:
    (listed,) = responses(provisioned().handle(document(message("ListAllDetailsRequest"))))
    assert [e.text for e in listed.iterfind(f"{{{NS}}}ListOfXIDs/{{{NS}}}xId")] == [
        str(XID),
        str(XID2),
    ]
    assert [e.text for e in listed.iterfind(f"{{{NS}}}ListOfDIDs/{{{NS}}}dId")] == [
        str(DID),
        str(DID6),
    ]
    # No Generic Objects: ListOfGenericObjectIDs is left out, not sent empty.
    assert [e.tag.rsplit("}", 1)[-1] for e in listed][5:] == ["ListOfXIDs", "ListOfDIDs"]


def test_get_all_task_and_destination_details_give_each_ones_details() -> None:
    tasks, destinations = responses(
        provisioned(task="no MDF").handle(
            document(
                message("GetAllTaskDetailsRequest"), message("GetAllDestinationDetailsRequest")
            )
        )
    )
    details = list(tasks.iterfind(f"{{{NS}}}listOfTaskResponseDetails/{{{NS}}}taskResponseDetails"))
    assert [text(d, "taskDetails/xId") for d in details] == [str(XID), str(XID2)]
    assert [text(d, "taskDetails/deliveryType") for d in details] == ["X2andX3", "X2Only"]
    first_targets = [
        (e.tag.rsplit("}", 1)[-1], e.text)
        for e in details[0].iterfind(f".//{{{NS}}}targetIdentifier/*")
    ]
    assert first_targets == [
        ("sipUri", "sip:alice@example.com"),
        ("telUri", "tel:+49-30-123456"),
        ("e164Number", "4930654321"),
    ]
    assert [e.text for e in details[0].iterfind(f".//{{{NS}}}listOfDIDs/{{{NS}}}dId")] == [
        str(DID),
        str(DID6),
    ]
    fault = "taskStatus/listOfFaults/unresolvedFault/errorDescription"
    assert text(details[1], fault) == "no MDF"
    path = f"{{{NS}}}listOfDestinationResponseDetails/{{{NS}}}destinationResponseDetails"
    assert [text(d, "destinationDetails/dId") for d in destinations.iterfind(path)] == [
        str(DID),
        str(DID6),
    ]


def test_an_empty_element_answers_the_audit_with_empty_lists() -> None:
    # Holding nothing is an answer the ADMF acts on (it re-provisions), not an error.
    listed, tasks, destinations, everything, generic = responses(
        handler().handle(
            document(
                message("ListAllDetailsRequest"),
                message("GetAllTaskDetailsRequest"),
                message("GetAllDestinationDetailsRequest"),
                message("GetAllDetailsRequest"),
                message("GetAllGenericObjectDetailsRequest"),
            )
        )
    )
    assert [(e.tag.rsplit("}", 1)[-1], len(e)) for e in listed][5:] == [
        ("ListOfXIDs", 0),
        ("ListOfDIDs", 0),
    ]
    assert [(e.tag.rsplit("}", 1)[-1], len(e)) for e in tasks][5:] == [
        ("listOfTaskResponseDetails", 0)
    ]
    assert [(e.tag.rsplit("}", 1)[-1], len(e)) for e in destinations][5:] == [
        ("listOfDestinationResponseDetails", 0)
    ]
    assert len(everything) == 8 and len(generic) == 5  # the header only


def test_a_number_stored_with_a_plus_is_answered_as_digits() -> None:
    # Tasks stored before e164Number was checked against InternationalE164 ([0-9]{1,15}).
    provisioning = Provisioning(None)
    provisioning.create_destination(Destination(DID, ("127.0.0.1", 5500)))
    provisioning.activate(
        Task(XID, (TargetIdentifier("e164Number", "+49 30 123456"),), "X2andX3", (DID,))
    )
    (details,) = responses(
        handler(provisioning).handle(
            document(message("GetTaskDetailsRequest", f"<xId>{XID}</xId>"))
        )
    )
    found = details.find(f".//{{{NS}}}e164Number")
    assert found is not None and found.text == "4930123456"


def _answer_of(kind: str, body: str = "") -> str:
    return ET.tostring(
        responses(provisioned().handle(document(message(f"{kind}Request", body))))[0],
        encoding="unicode",
    )


def _wrap(message_xml: str) -> bytes:
    return (
        f'<X1Response xmlns="{NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xmlns:c="{COMMON}">{message_xml}</X1Response>'
    ).encode()


@pytest.mark.parametrize(
    ("what", "mangle"),
    [
        # The shapes the plugin emitted before it followed the schema, each refused.
        (
            "address and port in the X1 namespace",
            lambda xml: xml.replace("<ns2:", "<ns0:").replace("</ns2:", "</ns0:"),
        ),
        ("a compressed IPv6 address", lambda xml: xml.replace("0000:0000:0000:0000:0000:", ":")),
        (
            "an empty friendlyName",
            lambda xml: xml.replace("<ns0:deliveryType", "<ns0:friendlyName/><ns0:deliveryType", 1),
        ),
        ("an e164Number with a +", lambda xml: xml.replace(">4930654321<", ">+4930654321<")),
        ("listOfDIDs before deliveryType", lambda xml: _swap(xml, "deliveryType", "listOfDIDs")),
        ("no listOfFaults", lambda xml: xml.replace("<ns0:listOfFaults />", "")),
        ("an unknown status", lambda xml: xml.replace("activeAndWorking", "working")),
    ],
)
def test_the_checker_refuses_what_the_schema_does_not_allow(what: str, mangle: object) -> None:
    good = _answer_of("GetAllDetails")
    check(_wrap(good))
    assert callable(mangle)
    bad = mangle(good)
    assert bad != good, what
    with pytest.raises(StructureError):
        check(_wrap(bad))


def _swap(xml: str, first: str, second: str) -> str:
    root = ET.fromstring(xml)
    for parent in root.iter():
        names = [child.tag.rsplit("}", 1)[-1] for child in parent]
        if first in names and second in names:
            a, b = names.index(first), names.index(second)
            children = list(parent)
            parent.remove(children[a])
            parent.insert(b, children[a])
            return ET.tostring(root, encoding="unicode")
    raise AssertionError(f"no {first} beside {second}")


@pytest.mark.parametrize(
    "document_xml",
    [
        # ErrorResponse naming the request type with its "Request" suffix (RequestMessageType
        # has no such value).
        '<x1ResponseMessage xsi:type="ErrorResponse"><admfIdentifier>a</admfIdentifier>'
        "<neIdentifier>gw-1</neIdentifier>"
        "<messageTimestamp>2025-11-29T08:00:00.500000Z</messageTimestamp>"
        "<version>v1.23.1</version><x1TransactionId>0f3b7a1c-2d4e-4f60-8a91-1b2c3d4e5f60"
        "</x1TransactionId><requestMessageType>ActivateTaskRequest</requestMessageType>"
        "<errorInformation><errorCode>1004</errorCode><errorDescription>x</errorDescription>"
        "</errorInformation></x1ResponseMessage>",
        # A transaction id that is not a UUID.
        '<x1ResponseMessage xsi:type="PingResponse"><admfIdentifier>a</admfIdentifier>'
        "<neIdentifier>gw-1</neIdentifier>"
        "<messageTimestamp>2025-11-29T08:00:00.500000Z</messageTimestamp>"
        "<version>v1.23.1</version><x1TransactionId>t-1</x1TransactionId>"
        "<oK>AcknowledgedAndCompleted</oK></x1ResponseMessage>",
    ],
)
def test_the_checker_refuses_old_error_and_echo_shapes(document_xml: str) -> None:
    with pytest.raises(StructureError):
        check(_wrap(document_xml))


def test_the_checker_refuses_a_top_level_error_with_a_reason() -> None:
    # What the plugin sent before: errorInformation, which TopLevelErrorResponse does not have.
    with pytest.raises(StructureError):
        check(
            f'<X1TopLevelErrorResponse xmlns="{NS}"><errorInformation><errorCode>1000</errorCode>'
            "<errorDescription>x</errorDescription></errorInformation>"
            "</X1TopLevelErrorResponse>".encode()
        )
