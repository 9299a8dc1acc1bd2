"""X1 requests (TS 103 221-1) against the provisioning they change, and its persistence."""

from __future__ import annotations

import os
import stat
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gateway.core.interfaces import TappedCall
from gateway.plugins.taps.intercept.tasks import Provisioning, ProvisioningError
from gateway.plugins.taps.intercept.x1 import ERROR_CODES, X1Handler

NS = "http://uri.etsi.org/03221/X1/2017/10"
XID = uuid.UUID("11111111-2222-4333-8444-555555555555")
DID = uuid.UUID("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")
NOW = 1_764_403_200.5  # 2025-11-29T08:00:00.5Z


def message(
    kind: str, body: str = "", *, ne: str = "gw-1", admf: str = "admf-1", txn: str = "t-1"
) -> str:
    return (
        f'<x1RequestMessage xsi:type="ns1:{kind}">'
        f"<admfIdentifier>{admf}</admfIdentifier><neIdentifier>{ne}</neIdentifier>"
        "<messageTimestamp>2026-11-29T08:00:00.000000Z</messageTimestamp>"
        f"<version>v1.13.1</version><x1TransactionId>{txn}</x1TransactionId>{body}"
        "</x1RequestMessage>"
    )


def document(*messages: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<ns1:X1Request xmlns:ns1="{NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        + "".join(messages)
        .replace("<x1RequestMessage", "<ns1:x1RequestMessage")
        .replace("</x1RequestMessage>", "</ns1:x1RequestMessage>")
        + "</ns1:X1Request>"
    ).encode()


def destination(did: uuid.UUID = DID, port: int = 5500, kind: str = "X2andX3") -> str:
    return (
        f"<destinationDetails><dId>{did}</dId><friendlyName>mdf one</friendlyName>"
        f"<deliveryType>{kind}</deliveryType><deliveryAddress><ipAddressAndPort>"
        f"<address><IPv4Address>127.0.0.1</IPv4Address></address>"
        f"<port><TCPPort>{port}</TCPPort></port></ipAddressAndPort></deliveryAddress>"
        "</destinationDetails>"
    )


def task(
    xid: uuid.UUID = XID,
    targets: str = "<sipUri>sip:alice@example.com</sipUri>",
    dids: tuple[uuid.UUID, ...] = (DID,),
    kind: str = "X2andX3",
) -> str:
    identifiers = "".join(
        f"<targetIdentifier>{target}</targetIdentifier>" for target in targets.split("|")
    )
    listed = "".join(f"<dId>{did}</dId>" for did in dids)
    return (
        f"<taskDetails><xId>{xid}</xId><targetIdentifiers>{identifiers}</targetIdentifiers>"
        f"<deliveryType>{kind}</deliveryType><listOfDIDs>{listed}</listOfDIDs></taskDetails>"
    )


def responses(answer: bytes) -> list[ET.Element]:
    root = ET.fromstring(answer)
    assert root.tag == f"{{{NS}}}X1Response"
    return list(root)


def response_type(element: ET.Element) -> str:
    return element.get("{http://www.w3.org/2001/XMLSchema-instance}type") or ""


def text(element: ET.Element, path: str) -> str:
    found = element.find("/".join(f"{{{NS}}}{step}" for step in path.split("/")))
    assert found is not None, path
    return found.text or ""


def handler(provisioning: Provisioning | None = None, **kwargs: object) -> X1Handler:
    return X1Handler(
        provisioning or Provisioning(None),
        ne_identifier="gw-1",
        wall_clock=lambda: NOW,
        **kwargs,  # type: ignore[arg-type]
    )


def call(
    from_uri: str = "sip:carol@example.net", to_uri: str = "sip:alice@example.com"
) -> TappedCall:
    return TappedCall("c", from_uri, to_uri, "trunk", "carrier", "", None)


def test_a_destination_then_a_task_make_calls_to_the_target_match() -> None:
    x1 = handler()
    answer = x1.handle(
        document(
            message("CreateDestinationRequest", destination(), txn="t-1"),
            message("ActivateTaskRequest", task(), txn="t-2"),
        )
    )
    first, second = responses(answer)
    assert response_type(first) == "CreateDestinationResponse"
    assert response_type(second) == "ActivateTaskResponse"
    assert text(second, "oK") == "AcknowledgedAndCompleted"
    assert text(second, "x1TransactionId") == "t-2"
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
                message("ModifyTaskRequest", task(targets="<e164Number>+4930123456</e164Number>"))
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


@pytest.mark.parametrize(
    ("request_xml", "kind", "description"),
    [
        (message("ActivateTaskRequest", task()), "refused", f"no destination {DID}"),
        (message("DeactivateTaskRequest", f"<xId>{XID}</xId>"), "refused", f"no task {XID}"),
        (
            message("ActivateTaskRequest", task(targets="<imsi>262011234567890</imsi>")),
            "unsupported",
            "'imsi' is not supported",
        ),
        (
            message("ActivateTaskRequest", task(targets="<sipUri>sip:example.com</sipUri>")),
            "syntax",
            "user part",
        ),
        (
            message("ActivateTaskRequest", "<taskDetails><xId>not-a-uuid</xId></taskDetails>"),
            "syntax",
            "xId is not a UUID",
        ),
        (message("ActivateTaskRequest", task(kind="X9Only")), "syntax", "deliveryType 'X9Only'"),
        (message("ActivateTaskRequest", task(), ne="gw-2"), "not-for-us", "'gw-2' is not ours"),
        (message("FrobnicateRequest"), "unsupported", "'FrobnicateRequest' is not supported"),
        (
            message("RemoveDestinationRequest", f"<dId>{DID}</dId>"),
            "refused",
            f"no destination {DID}",
        ),
        (
            message("CreateDestinationRequest", destination(port=0)),
            "syntax",
            "TCPPort between 1 and 65535",
        ),
        (message("PingRequest", txn=""), "syntax", "x1TransactionId is missing"),
        (
            message("CreateDestinationRequest", destination().replace("127.0.0.1", "fe80::1%eth0")),
            "syntax",
            "with a zone is not accepted",
        ),
        (
            message("CreateDestinationRequest", destination().replace("5500", "\u00b2")),
            "syntax",
            "TCPPort between 1 and 65535",
        ),
        (
            message("ActivateTaskRequest", task(targets=f"<sipUri>sip:{'a' * 300}@x</sipUri>")),
            "syntax",
            "longer than 256 characters",
        ),
    ],
)
def test_a_refused_request_gets_an_error_response_and_changes_nothing(
    request_xml: str, kind: str, description: str
) -> None:
    x1 = handler()
    (answer,) = responses(x1.handle(document(request_xml)))
    assert response_type(answer) == "ErrorResponse"
    assert text(answer, "errorInformation/errorCode") == str(ERROR_CODES[kind])
    assert description in text(answer, "errorInformation/errorDescription")
    assert x1.provisioning.tasks == {} and x1.provisioning.destinations == {}
    assert x1.changes == 0


def test_an_admf_not_listed_is_refused_when_a_list_is_configured() -> None:
    x1 = handler(admf_identifiers=("admf-1",))
    (ok,) = responses(x1.handle(document(message("PingRequest"))))
    (refused,) = responses(x1.handle(document(message("PingRequest", admf="intruder"))))
    assert response_type(ok) == "PingResponse"
    assert text(refused, "errorInformation/errorCode") == str(ERROR_CODES["unknown-admf"])


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
        (
            b"<X1Request>" + b"<x1RequestMessage/>" * 101 + b"</X1Request>",
            "more than 100 x1RequestMessages",
        ),
        (b"<X1Request>" + b" " * 1_048_577 + b"</X1Request>", "larger than"),
    ],
)
def test_a_document_we_cannot_read_gets_a_top_level_error(body: bytes, description: str) -> None:
    root = ET.fromstring(handler().handle(body))
    assert root.tag == f"{{{NS}}}X1TopLevelErrorResponse"
    assert text(root, "errorInformation/errorCode") == str(ERROR_CODES["syntax"])
    assert description in text(root, "errorInformation/errorDescription")


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
    modified = task(targets="<e164Number>+4930123456</e164Number>")
    (answer,) = responses(x1.handle(document(message("ModifyTaskRequest", modified))))
    assert response_type(answer) == "ErrorResponse"
    assert "disk is full" in text(answer, "errorInformation/errorDescription")
    assert len(x1.provisioning.matches(call())) == 1  # still the task as it was
