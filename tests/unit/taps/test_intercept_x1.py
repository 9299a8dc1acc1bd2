"""X1 requests (TS 103 221-1) against the provisioning they change, and its persistence."""

from __future__ import annotations

import os
import stat
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.core.interfaces import TappedCall
from gateway.plugins.taps.intercept.tasks import Provisioning, ProvisioningError
from gateway.plugins.taps.intercept.x1_server import subject_of
from tests.interop.harness.pki import TestPki
from tests.unit.taps.x1_messages import (
    DID,
    NS,
    T1,
    T2,
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
from tests.unit.taps.x1_structure import check


def call(
    from_uri: str = "sip:carol@example.net", to_uri: str = "sip:alice@example.com"
) -> TappedCall:
    return TappedCall("c", from_uri, to_uri, "trunk", "carrier", "", None)


def test_a_destination_then_a_task_make_calls_to_the_target_match() -> None:
    x1 = handler()
    answer = x1.handle(
        document(
            message("CreateDestinationRequest", destination(), txn=T1),
            message("ActivateTaskRequest", task(), txn=T2),
        )
    )
    first, second = responses(answer)
    assert response_type(first) == "CreateDestinationResponse"
    assert response_type(second) == "ActivateTaskResponse"
    assert text(second, "oK") == "AcknowledgedAndCompleted"
    assert text(second, "x1TransactionId") == T2
    assert text(second, "version") == "v1.23.1"
    assert text(second, "neIdentifier") == "gw-1"
    assert text(second, "admfIdentifier") == "admf-1"
    assert text(second, "messageTimestamp") == "2025-11-29T08:00:00.500000Z"
    (match,) = x1.provisioning.matches(call())
    assert (match.task.xid, match.side, match.target.value) == (XID, "b", "sip:alice@example.com")
    assert x1.provisioning.destinations[DID].address == ("127.0.0.1", 5500)
    assert x1.provisioning.matches(call(to_uri="sip:bob@example.com")) == []
    (caller_match,) = x1.provisioning.matches(
        call(from_uri="sip:alice@example.com", to_uri="sip:x@y")
    )
    assert caller_match.side == "a"


def test_modify_and_deactivate_change_what_matches() -> None:
    x1 = handler()
    x1.handle(
        document(
            message("CreateDestinationRequest", destination()),
            message("ActivateTaskRequest", task()),
        )
    )
    (modified,) = responses(
        x1.handle(
            document(
                message("ModifyTaskRequest", task(targets="<e164Number>4930123456</e164Number>"))
            )
        )
    )
    assert response_type(modified) == "ModifyTaskResponse"
    assert x1.provisioning.matches(call()) == []
    assert len(x1.provisioning.matches(call(to_uri="sip:+4930123456@gw;user=phone"))) == 1
    (deactivated,) = responses(
        x1.handle(document(message("DeactivateTaskRequest", f"<xId>{XID}</xId>")))
    )
    assert response_type(deactivated) == "DeactivateTaskResponse"
    assert x1.provisioning.tasks == {}
    assert x1.provisioning.matches(call(to_uri="sip:+4930123456@gw")) == []


def ipv6_destination(address: str) -> str:
    return destination().replace(
        "<c:IPv4Address>127.0.0.1</c:IPv4Address>", f"<c:IPv6Address>{address}</c:IPv6Address>"
    )


# The codes are TS 103 221-1 table 6.7-3's (x1.py says whose transcriptions agree on them); a
# request the schema does not allow is 1010 and is sent as it is (valid=False).
@pytest.mark.parametrize(
    ("request_xml", "code", "request_type", "description", "valid"),
    [
        (
            message("ActivateTaskRequest", task()),
            2040,
            "ActivateTask",
            f"no destination {DID}",
            True,
        ),
        (
            message("DeactivateTaskRequest", f"<xId>{XID}</xId>"),
            2020,
            "DeactivateTask",
            f"no task {XID}",
            True,
        ),
        (
            message("GetTaskDetailsRequest", f"<xId>{XID}</xId>"),
            2020,
            "GetTaskDetails",
            f"no task {XID}",
            True,
        ),
        (
            message("ModifyDestinationRequest", destination()),
            2040,
            "ModifyDestination",
            f"no destination {DID}",
            True,
        ),
        (
            message("ActivateTaskRequest", task(targets="<imsi>262011234567890</imsi>")),
            3010,
            "ActivateTask",
            "'imsi' is not supported",
            True,
        ),
        (
            message("ActivateTaskRequest", task(targets="<sipUri>sip:example.com</sipUri>")),
            1010,
            "ActivateTask",
            "user part",
            True,
        ),
        (
            message("ActivateTaskRequest", task(targets="<e164Number>+4930123456</e164Number>")),
            1010,
            "ActivateTask",
            "not a valid e164Number",
            False,
        ),
        (
            message("ActivateTaskRequest", task(targets="<sipUri>sip:a b@example.com</sipUri>")),
            1010,
            "ActivateTask",
            "not a valid sipUri",
            False,
        ),
        (
            message("ActivateTaskRequest", "<taskDetails><xId>not-a-uuid</xId></taskDetails>"),
            1010,
            "ActivateTask",
            "xId is not a UUID",
            False,
        ),
        (
            message("DeactivateTaskRequest", f"<xId>{str(DID).upper()}</xId>"),
            1010,
            "DeactivateTask",
            "xId is not a UUID",
            False,
        ),
        (
            message("ActivateTaskRequest", task(kind="X9Only")),
            1010,
            "ActivateTask",
            "deliveryType 'X9Only'",
            False,
        ),
        (
            message("ActivateTaskRequest", task(), ne="gw-2"),
            1060,
            "ActivateTask",
            "'gw-2' is not ours",
            True,
        ),
        (
            message("CreateObjectRequest"),
            1080,
            "CreateObject",
            "CreateObjectRequest is not supported",
            False,
        ),
        (
            message("ReportTaskIssueRequest"),
            1080,
            "ReportTaskIssue",
            "ReportTaskIssueRequest is not supported",
            False,
        ),
        (
            message("RemoveDestinationRequest", f"<dId>{DID}</dId>"),
            2040,
            "RemoveDestination",
            f"no destination {DID}",
            True,
        ),
        (
            message("CreateDestinationRequest", destination(port=1)),
            1010,
            "CreateDestination",
            "TCPPort between 2 and 65535",
            False,
        ),
        (
            message("CreateDestinationRequest", destination().replace("TCPPort", "UDPPort")),
            6020,
            "CreateDestination",
            "needs a TCPPort",
            True,
        ),
        (
            message(
                "CreateDestinationRequest",
                destination().replace(
                    destination().split("<deliveryAddress>")[1].split("</deliveryAddress>")[0],
                    "<uri>https://mdf.example/x2</uri>",
                ),
            ),
            6020,
            "CreateDestination",
            "must be an ipAddressAndPort",
            True,
        ),
        (message("PingRequest", txn=""), 1010, "Ping", "x1TransactionId is not a UUID", False),
        (message("PingRequest", txn="t-1"), 1010, "Ping", "x1TransactionId is not a UUID", False),
        (
            message("PingRequest").replace("v1.23.1", "1.23"),
            1010,
            "Ping",
            "version '1.23' is not v1.N.N",
            False,
        ),
        (
            message("PingRequest").replace(".000000Z", "Z"),
            1010,
            "Ping",
            "messageTimestamp",
            False,
        ),
        (
            message("CreateDestinationRequest", ipv6_destination("fe80::1%eth0")),
            1010,
            "CreateDestination",
            "eight groups of four lowercase hexadecimal digits",
            False,
        ),
        (
            message("CreateDestinationRequest", ipv6_destination("2001:db8::1")),
            1010,
            "CreateDestination",
            "eight groups of four lowercase hexadecimal digits",
            False,
        ),
        (
            message("CreateDestinationRequest", destination().replace("5500", "\u00b2")),
            1010,
            "CreateDestination",
            "TCPPort between 2 and 65535",
            False,
        ),
        (
            message("ActivateTaskRequest", task(targets=f"<sipUri>sip:{'a' * 300}@x</sipUri>")),
            1010,
            "ActivateTask",
            "longer than 256 characters",
            True,
        ),
        (
            message(
                "ActivateTaskRequest",
                task().replace("</listOfDIDs>", f"<dSId>{XID}</dSId></listOfDIDs>"),
            ),
            3000,
            "ActivateTask",
            "destination sets (dSId) are not supported",
            True,
        ),
        (
            message(
                "ModifyTaskRequest",
                task().replace("</listOfDIDs>", f"</listOfDIDs><productID>{XID}</productID>"),
            ),
            3001,
            "ModifyTask",
            "productID is not supported",
            True,
        ),
        (
            message(
                "ActivateTaskRequest",
                task().replace(
                    "</listOfDIDs>",
                    "</listOfDIDs><listOfServiceTypes><serviceType>data</serviceType>"
                    "</listOfServiceTypes>",
                ),
            ),
            3050,
            "ActivateTask",
            "voice only, not data",
            True,
        ),
    ],
)
def test_a_refused_request_gets_an_error_response_and_changes_nothing(
    request_xml: str, code: int, request_type: str, description: str, valid: bool
) -> None:
    x1 = handler()
    (answer,) = responses(x1.handle(document(request_xml, valid=valid)))
    assert response_type(answer) == "ErrorResponse"
    assert text(answer, "requestMessageType") == request_type
    assert text(answer, "errorInformation/errorCode") == str(code)
    assert description in text(answer, "errorInformation/errorDescription")
    assert x1.provisioning.tasks == {} and x1.provisioning.destinations == {}
    assert x1.changes == 0


def test_a_task_naming_voice_among_its_service_types_is_taken() -> None:
    x1 = handler()
    voice = task().replace(
        "</listOfDIDs>",
        "</listOfDIDs><correlationID>7</correlationID><listOfServiceTypes>"
        "<serviceType>voice</serviceType><serviceType>messaging</serviceType>"
        "</listOfServiceTypes>",
    )
    _, activated = responses(
        x1.handle(
            document(
                message("CreateDestinationRequest", destination()),
                message("ActivateTaskRequest", voice),
            )
        )
    )
    assert response_type(activated) == "ActivateTaskResponse"
    assert set(x1.provisioning.tasks) == {XID}


def test_a_store_failure_is_the_requests_generic_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    x1 = handler()

    def full_disk(*args: object) -> None:
        raise ProvisioningError("cannot store it: database or disk is full")

    monkeypatch.setattr(x1.provisioning, "_save", full_disk)
    (answer,) = responses(x1.handle(document(message("CreateDestinationRequest", destination()))))
    assert text(answer, "requestMessageType") == "CreateDestination"
    assert text(answer, "errorInformation/errorCode") == "6000"


def test_a_mangled_transaction_id_is_answered_under_a_fresh_one() -> None:
    # Echoing it would make our own answer break the schema (x1TransactionId is a UUID).
    (answer,) = responses(
        handler().handle(document(message("PingRequest", txn="t-1"), valid=False))
    )
    assert text(answer, "x1TransactionId") != "t-1"
    assert uuid.UUID(text(answer, "x1TransactionId")).version == 4


def test_an_existing_xid_or_did_is_refused_with_its_own_code() -> None:
    x1 = handler()
    x1.handle(
        document(
            message("CreateDestinationRequest", destination()),
            message("ActivateTaskRequest", task()),
        )
    )
    again_destination, again_task, in_use, all_in_use = responses(
        x1.handle(
            document(
                message("CreateDestinationRequest", destination()),
                message("ActivateTaskRequest", task()),
                message("RemoveDestinationRequest", f"<dId>{DID}</dId>"),
                message("RemoveAllDestinationsRequest"),
            )
        )
    )
    assert text(again_destination, "errorInformation/errorCode") == "2030"
    assert text(again_task, "errorInformation/errorCode") == "2010"
    assert text(in_use, "errorInformation/errorCode") == "7010"
    assert text(all_in_use, "errorInformation/errorCode") == "8010"


def test_an_admf_not_listed_is_refused_when_a_list_is_configured() -> None:
    x1 = handler(admf_identifiers=("admf-1",))
    (ok,) = responses(x1.handle(document(message("PingRequest"))))
    (refused,) = responses(x1.handle(document(message("PingRequest", admf="intruder"))))
    assert response_type(ok) == "PingResponse"
    assert text(refused, "errorInformation/errorCode") == "1040"


CERTIFICATES = {"admf-1": "CN=admf-1,O=LI", "admf-2": "CN=admf-2,O=LI"}


def test_an_admf_speaks_only_for_the_identifier_of_its_certificate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """TS 103 221-1 table 6.7-3, 1030: a message whose admfIdentifier is not the ADMF of the
    connection's client certificate is refused and changes nothing; the certificate's subject
    goes to the plugin's log only."""
    x1 = handler(admf_identifiers=("admf-1", "admf-2"), admf_certificates=CERTIFICATES)
    own = x1.handle(document(message("PingRequest")), client="CN=admf-1,O=LI")
    (ok,) = responses(own)
    assert response_type(ok) == "PingResponse"

    posing = document(
        message("CreateDestinationRequest", destination(), admf="admf-2", txn=T1),
        message("PingRequest", admf="admf-2", txn=T2),
    )
    for client in ("CN=admf-1,O=LI", "CN=intruder,O=LI", None):
        create, ping = responses(x1.handle(posing, client=client))
        for refused, name in ((create, "CreateDestination"), (ping, "Ping")):
            assert response_type(refused) == "ErrorResponse"
            assert text(refused, "requestMessageType") == name
            assert text(refused, "errorInformation/errorCode") == "1030"
            assert text(refused, "errorInformation/errorDescription") == (
                "admfIdentifier 'admf-2' does not match the client certificate"
            )
            assert "CN=" not in text(refused, "errorInformation/errorDescription")
    assert x1.provisioning.destinations == {} and x1.changes == 0
    assert (
        "X1 request for admfIdentifier 'admf-2' refused (1030): the client certificate's "
        "subject is CN=admf-1,O=LI, admf_certificates names CN=admf-2,O=LI" in caplog.text
    )
    (create, ping) = responses(x1.handle(posing, client="CN=admf-2,O=LI"))
    assert response_type(create) == "CreateDestinationResponse" and DID in (
        x1.provisioning.destinations
    )


def test_with_certificates_an_admf_without_one_is_unknown_and_without_them_any_is_taken() -> None:
    x1 = handler(admf_certificates={"admf-1": "CN=admf-1,O=LI"})
    (unknown,) = responses(
        x1.handle(document(message("PingRequest", admf="admf-2")), client="CN=admf-2,O=LI")
    )
    assert text(unknown, "errorInformation/errorCode") == "1040"
    unchecked = handler()  # no admf_certificates: the CA's word is enough, as before
    (ping,) = responses(unchecked.handle(document(message("PingRequest")), client="CN=other"))
    assert response_type(ping) == "PingResponse"


def test_a_message_is_checked_header_first_then_whom_it_is_for_then_its_type() -> None:
    """The order x1.py documents: the header (1010), then whom the message is for: another
    NE (1060), an ADMF not taken (1040), an ADMF its certificate does not name (1030); then its
    type (1080), then its body. Each message below fails every check from its code on, and is
    answered with the first; none changes anything."""
    x1 = handler(admf_identifiers=("admf-1", "admf-2"), admf_certificates=CERTIFICATES)
    bad_body = destination(port=1)  # 1010 of the body, last
    late = ".000000Z"
    cases = [
        (message("CreateDestinationRequest", bad_body, ne="gw-2", admf="x"), late, "1010"),
        (message("CreateDestinationRequest", bad_body, ne="gw-2", admf="x"), "", "1060"),
        (message("CreateObjectRequest", bad_body, ne="gw-2", admf="admf-2"), "", "1060"),
        (message("CreateObjectRequest", bad_body, admf="intruder"), "", "1040"),
        (message("CreateObjectRequest", bad_body, admf="admf-2"), "", "1030"),
        (message("CreateObjectRequest", bad_body), "", "1080"),
        (message("CreateDestinationRequest", bad_body), "", "1010"),
    ]
    for request, broken, code in cases:
        if broken:
            request = request.replace(broken, "Z")  # a timestamp without microseconds
        (refused,) = responses(x1.handle(document(request, valid=False), client="CN=admf-1,O=LI"))
        assert response_type(refused) == "ErrorResponse"
        assert text(refused, "errorInformation/errorCode") == code, request
        # Our answer names us, whichever NE the request named.
        assert text(refused, "neIdentifier") == "gw-1"
    assert x1.provisioning.destinations == {} and x1.changes == 0
    last = text(refused, "errorInformation/errorDescription")
    assert "TCPPort between 2 and 65535" in last  # the body was read only then


def test_a_top_level_error_names_the_admf_of_the_connections_certificate() -> None:
    """A document too broken to name its ADMF is answered to the ADMF whose certificate the
    connection has (TS 103 221-1: the requester's identifier from its X.509 certificate)."""
    x1 = handler(admf_identifiers=("admf-1", "admf-2"), admf_certificates=CERTIFICATES)
    root = check(x1.handle(b"<X1Request", client="CN=admf-2,O=LI"))
    assert text(root, "admfIdentifier") == "admf-2"
    root = check(x1.handle(b"<X1Request", client="CN=stranger"))
    assert text(root, "admfIdentifier") == "admf-1"  # the first taken, as without certificates


def test_a_destination_in_use_cannot_be_removed() -> None:
    x1 = handler()
    x1.handle(
        document(
            message("CreateDestinationRequest", destination()),
            message("ActivateTaskRequest", task()),
        )
    )
    (refused,) = responses(
        x1.handle(document(message("RemoveDestinationRequest", f"<dId>{DID}</dId>")))
    )
    assert "in use by task" in text(refused, "errorInformation/errorDescription")
    (all_refused,) = responses(x1.handle(document(message("RemoveAllDestinationsRequest"))))
    assert response_type(all_refused) == "ErrorResponse"
    x1.handle(document(message("DeactivateAllTasksRequest")))
    (removed,) = responses(
        x1.handle(document(message("RemoveDestinationRequest", f"<dId>{DID}</dId>")))
    )
    assert response_type(removed) == "RemoveDestinationResponse"
    assert x1.provisioning.destinations == {}


def test_details_list_what_was_provisioned_and_each_links_state() -> None:
    faults: dict[str, str | None] = {"destination": None, "task": None, "ne": None}
    x1 = handler(
        destination_fault=lambda did: faults["destination"],
        task_fault=lambda xid: faults["task"],
        ne_fault=lambda: faults["ne"],
    )
    x1.handle(
        document(
            message("CreateDestinationRequest", destination()),
            message(
                "ActivateTaskRequest",
                task(
                    targets="<sipUri>sip:alice@example.com</sipUri>|<telUri>tel:+4930123456</telUri>"
                ),
            ),
        )
    )
    (details,) = responses(
        x1.handle(document(message("GetTaskDetailsRequest", f"<xId>{XID}</xId>")))
    )
    assert response_type(details) == "GetTaskDetailsResponse"
    identifiers = [
        e.text for e in details.iter() if e.tag in (f"{{{NS}}}sipUri", f"{{{NS}}}telUri")
    ]
    assert identifiers == ["sip:alice@example.com", "tel:+4930123456"]
    assert text(details, "taskResponseDetails/taskStatus/provisioningStatus") == "complete"
    # The XSD's sequences (TS 103 221-1 v1.23.1): DestinationStatus = destinationDeliveryStatus,
    # listOfFaults; NeStatusDetails = neStatus, listOfFaults; GetAllDetailsResponse starts
    # with neStatusDetails.
    (everything,) = responses(x1.handle(document(message("GetAllDetailsRequest"))))
    assert str(DID) in ET.tostring(everything, encoding="unicode")
    status = "listOfDestinationResponseDetails/destinationResponseDetails/destinationStatus"
    assert text(everything, status + "/destinationDeliveryStatus") == "activeAndWorking"
    assert [_local(e.tag) for e in list(everything)[5:]] == [
        "neStatusDetails",
        "listOfTaskResponseDetails",
        "listOfDestinationResponseDetails",
    ]
    (ne,) = responses(x1.handle(document(message("GetNEStatusRequest"))))
    assert response_type(ne) == "GetNEStatusResponse"
    assert text(ne, "neStatusDetails/neStatus") == "OK"
    assert list(element_at(ne, "neStatusDetails/listOfFaults")) == []

    faults.update(destination="connection lost: reset", task="no destination", ne="nothing")
    (destination_details,) = responses(
        x1.handle(document(message("GetDestinationDetailsRequest", f"<dId>{DID}</dId>")))
    )
    status = "destinationResponseDetails/destinationStatus"
    assert text(destination_details, status + "/destinationDeliveryStatus") == "deliveryFault"
    fault = status + "/listOfFaults/unresolvedFault"
    assert text(destination_details, fault + "/errorCode") == "9020"
    assert text(destination_details, fault + "/errorDescription") == "connection lost: reset"
    (everything,) = responses(x1.handle(document(message("GetAllDetailsRequest"))))
    assert text(everything, "neStatusDetails/neStatus") == "Faults"
    assert (
        text(
            everything,
            "listOfTaskResponseDetails/taskResponseDetails/taskStatus/listOfFaults/"
            "unresolvedFault/errorDescription",
        )
        == "no destination"
    )
    assert (
        text(
            everything,
            "listOfDestinationResponseDetails/destinationResponseDetails/destinationStatus/"
            "destinationDeliveryStatus",
        )
        == "deliveryFault"
    )


def element_at(element: ET.Element, path: str) -> ET.Element:
    found = element.find("/".join(f"{{{NS}}}{step}" for step in path.split("/")))
    assert found is not None, path
    return found


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


@pytest.mark.parametrize(
    ("body", "description"),
    [
        (b"<X1Request", "not well-formed"),
        (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><X1Request>&a;</X1Request>',
            "DTD",
        ),
        ("<X1Request>é</X1Request>".encode("latin-1"), "not UTF-8"),
        (b"<Other/>", "'Other' is not X1Request"),
        (b"<X1Request/>", "no x1RequestMessage"),
        (document(message("FrobnicateRequest"), valid=False), "'FrobnicateRequest' is no X1"),
        # One message that is not X1 refuses the others with it: nothing is half-done.
        (
            document(
                message("CreateDestinationRequest", destination()),
                message("PingRequest").replace(' xsi:type="ns1:PingRequest"', ""),
                valid=False,
            ),
            "xsi:type 'none' is no X1 request type",
        ),
        (
            b"<X1Request>" + b"<x1RequestMessage/>" * 101 + b"</X1Request>",
            "more than 100 x1RequestMessages",
        ),
        (b"<X1Request>" + b" " * 1_048_577 + b"</X1Request>", "larger than"),
    ],
)
def test_a_document_we_cannot_read_gets_a_top_level_error(
    body: bytes, description: str, caplog: pytest.LogCaptureFixture
) -> None:
    x1 = handler(admf_identifiers=("admf-1",))
    root = check(x1.handle(body))
    # The XSD's TopLevelErrorResponse: the four header fields and no more (no transaction id,
    # no errorInformation), so the reason is only in our log.
    assert root.tag == f"{{{NS}}}X1TopLevelErrorResponse"
    assert [_local(e.tag) for e in root] == [
        "admfIdentifier",
        "neIdentifier",
        "messageTimestamp",
        "version",
    ]
    assert (text(root, "admfIdentifier"), text(root, "neIdentifier")) == ("admf-1", "gw-1")
    assert text(root, "messageTimestamp") == "2025-11-29T08:00:00.500000Z"
    assert text(root, "version") == "v1.23.1"  # the schema version the documents follow
    assert description in caplog.text
    assert x1.top_level_errors == 1
    assert x1.provisioning.destinations == {} and x1.changes == 0


def test_an_answer_echoes_the_version_of_its_request_and_a_bad_one_gets_ours() -> None:
    """An ADMF on an earlier v1 schema is answered in its version (TS 103 221-1 §4.5: minor
    versions only add); a version that is not v1.N.N is answered (1010) in ours."""
    older = message("PingRequest").replace("v1.23.1", "v1.13.1")
    (ping,) = responses(handler().handle(document(older)))
    assert response_type(ping) == "PingResponse" and text(ping, "version") == "v1.13.1"
    broken = message("PingRequest").replace("v1.23.1", "v2")
    (refused,) = responses(handler().handle(document(broken, valid=False)))
    assert text(refused, "errorInformation/errorCode") == "1010"
    assert text(refused, "version") == "v1.23.1"


def test_a_top_level_error_names_the_admf_of_the_document_it_refuses() -> None:
    body = document(message("PingRequest", admf="admf-7"), message("Bogus"), valid=False)
    root = check(handler().handle(body))
    assert text(root, "admfIdentifier") == "admf-7"
    assert text(check(handler().handle(b"<X1Request")), "admfIdentifier") == ""


def test_tasks_and_destinations_survive_a_restart_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "intercept" / "tasks.sqlite"
    first = Provisioning(path)
    assert not path.parent.exists()  # nothing written before the first change (check-config)
    x1 = handler(first)
    x1.handle(
        document(
            message("CreateDestinationRequest", destination()),
            message("ActivateTaskRequest", task()),
        )
    )
    first.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    again = Provisioning(path)
    assert set(again.tasks) == {XID}
    assert again.destinations[DID].friendly_name == "mdf one"
    assert len(again.matches(call())) == 1
    handler(again).handle(document(message("DeactivateTaskRequest", f"<xId>{XID}</xId>")))
    again.close()
    assert Provisioning(path).tasks == {}


def test_a_change_the_store_refuses_is_refused_and_the_old_task_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x1 = handler()
    x1.handle(
        document(
            message("CreateDestinationRequest", destination()),
            message("ActivateTaskRequest", task()),
        )
    )

    def full_disk(*args: object) -> None:
        raise ProvisioningError("cannot store it: database or disk is full")

    monkeypatch.setattr(x1.provisioning, "_save", full_disk)
    modified = task(targets="<e164Number>4930123456</e164Number>")
    (answer,) = responses(x1.handle(document(message("ModifyTaskRequest", modified))))
    assert response_type(answer) == "ErrorResponse"
    assert "disk is full" in text(answer, "errorInformation/errorDescription")
    assert len(x1.provisioning.matches(call())) == 1  # still the task as it was


def test_the_x1_server_reads_a_client_certificates_subject_as_admf_certificates_has_it(
    tmp_path: Path,
) -> None:
    issued = TestPki(tmp_path).ca("LI CA").issue("admf-1")
    der = issued.x509.public_bytes(serialization.Encoding.DER)
    assert subject_of(der) == "CN=admf-1"
    assert subject_of(None) is None  # no certificate (never past our handshake, but safe)
    assert subject_of(b"\x30\x03garbage") is None
