"""Reports to the ADMF (intercept/reports.py): the X1 documents built, read back with the
plugin's own X1 reader, checked against the TS 103 221-1 XSD's sequences (v1.23.1, as bundled by
siphon-project/siphon-sip) and what omec-project/li's reporter emits; the ADMF's answers read."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest

from gateway.plugins.taps.intercept import x1
from gateway.plugins.taps.intercept.reports import (
    Endpoint,
    Header,
    destination_issue,
    ne_issue,
    read_answer_untrusted,
    refusal,
    task_issue,
)
from tests.unit.taps.x1_structure import check

NS = "http://uri.etsi.org/03221/X1/2017/10"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XID = uuid.UUID("11111111-2222-4333-8444-555555555555")
DID = uuid.UUID("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")
TXN = uuid.UUID("0f3b7a1c-2d4e-4f60-8a91-1b2c3d4e5f60")
HEADER = Header("admf-1", "gw-1", 1_764_403_200.5, TXN)  # 2025-11-29T08:00:00.5Z
HEADER_ELEMENTS = [
    "admfIdentifier",
    "neIdentifier",
    "messageTimestamp",
    "version",
    "x1TransactionId",
]


def read_back(document: bytes) -> tuple[str, list[tuple[str, str]]]:
    """The one message of an X1Request as the X1 server reads it: its xsi:type and its
    children in order (local name, text). Every report is checked against the XSD's structure."""
    check(document)
    root = x1._parse(document)  # the plugin's own reader: UTF-8, no DTD, root X1Request
    assert root.tag == f"{{{NS}}}X1Request"
    (message,) = x1._children(root, "x1RequestMessage")
    assert message.tag == f"{{{NS}}}x1RequestMessage"
    children = [(x1._local(child.tag), child.text or "") for child in message]
    assert all(child.tag.startswith(f"{{{NS}}}") for child in message)
    return x1._message_type(message), children


def test_a_destination_fault_is_a_report_destination_issue_in_the_xsds_order() -> None:
    kind, children = read_back(
        destination_issue(HEADER, DID, "NonTerminatingFault", "connection lost: <reset> & gone")
    )
    assert kind == "ReportDestinationIssueRequest"
    assert [name for name, _ in children] == [
        *HEADER_ELEMENTS,
        "dId",
        "destinationReportType",
        "destinationIssueErrorCode",
        "destinationIssueDetails",
    ]
    values = dict(children)
    assert values["admfIdentifier"] == "admf-1" and values["neIdentifier"] == "gw-1"
    assert values["messageTimestamp"] == "2025-11-29T08:00:00.500000Z"
    assert values["version"] == "v1.23.1"
    assert values["x1TransactionId"] == str(TXN)
    assert values["dId"] == str(DID)
    # omec-project/li: <destinationReportType>NonTerminatingFault</...> for an unreachable MDF
    assert values["destinationReportType"] == "NonTerminatingFault"
    assert values["destinationIssueErrorCode"] == "9020"
    assert values["destinationIssueDetails"] == "connection lost: <reset> & gone"


def test_an_all_clear_carries_no_error_code() -> None:
    kind, children = read_back(destination_issue(HEADER, DID, "AllClear"))
    assert kind == "ReportDestinationIssueRequest"
    assert children[5:] == [("dId", str(DID)), ("destinationReportType", "AllClear")]
    _, task_children = read_back(task_issue(HEADER, XID, "AllClear", "delivering again"))
    assert task_children[5:] == [
        ("xId", str(XID)),
        ("taskReportType", "AllClear"),
        ("taskIssueDetails", "delivering again"),
    ]


def test_a_task_fault_is_a_report_task_issue() -> None:
    kind, children = read_back(task_issue(HEADER, XID, "NonTerminatingFault", "no destination"))
    assert kind == "ReportTaskIssueRequest"
    assert children[5:] == [
        ("xId", str(XID)),
        ("taskReportType", "NonTerminatingFault"),
        ("taskIssueErrorCode", "9020"),
        ("taskIssueDetails", "no destination"),
    ]


def test_ne_issues_carry_type_description_and_a_code_with_a_fault() -> None:
    kind, children = read_back(ne_issue(HEADER, "FaultReport", "nothing reachable"))
    assert kind == "ReportNEIssueRequest"
    assert children[5:] == [
        ("typeOfNeIssueMessage", "FaultReport"),
        ("description", "nothing reachable"),
        ("issueCode", "9020"),
    ]
    _, warning = read_back(ne_issue(HEADER, "Warning", "started"))
    assert warning[5:] == [("typeOfNeIssueMessage", "Warning"), ("description", "started")]


def test_the_document_declares_the_x1_and_xsi_namespaces_and_xsi_type() -> None:
    document = destination_issue(HEADER, DID, "AllClear").decode()
    assert document.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert f'xmlns="{NS}"' in document and f'xmlns:xsi="{XSI}"' in document
    message = ET.fromstring(document)[0]
    assert message.get(f"{{{XSI}}}type") == "ReportDestinationIssueRequest"


def test_only_the_xsds_enumerations_are_built() -> None:
    with pytest.raises(AssertionError):
        destination_issue(HEADER, DID, "DeliveryError")  # another implementation's invention
    with pytest.raises(AssertionError):
        ne_issue(HEADER, "Startup", "x")


def answer(body: str, *, root: str = "X1Response") -> bytes:
    document = f'<?xml version="1.0"?><{root} xmlns="{NS}" xmlns:xsi="{XSI}">{body}</{root}>'
    return document.encode()


def response(kind: str, inner: str, *, txn: uuid.UUID = TXN) -> str:
    return (
        f'<x1ResponseMessage xsi:type="{kind}"><admfIdentifier>admf-1</admfIdentifier>'
        "<neIdentifier>gw-1</neIdentifier><messageTimestamp>2025-11-29T08:00:01.000000Z"
        f"</messageTimestamp><version>v1.23.1</version><x1TransactionId>{txn}"
        f"</x1TransactionId>{inner}</x1ResponseMessage>"
    )


def test_the_admfs_ok_is_read() -> None:
    body = answer(response("ReportDestinationIssueResponse", "<oK>AcknowledgedAndCompleted</oK>"))
    check(body)
    result = read_answer_untrusted(body, "ReportDestinationIssue", TXN)
    assert result.ok and result.description == "AcknowledgedAndCompleted"


@pytest.mark.parametrize(
    ("body", "description"),
    [
        (
            answer(
                response(
                    "ErrorResponse",
                    "<requestMessageType>ReportDestinationIssue</requestMessageType>"
                    "<errorInformation><errorCode>1080</errorCode>"
                    "<errorDescription>unknown DID</errorDescription></errorInformation>",
                )
            ),
            "1080 'unknown DID'",
        ),
        (
            answer(
                response("ReportDestinationIssueResponse", "<oK>Acknowledged</oK>", txn=XID),
            ),
            "answers transaction",
        ),
        (answer(response("ReportTaskIssueResponse", "<oK>Acknowledged</oK>")), "unexpected"),
        (
            # The XSD's TopLevelErrorResponse: four header fields, no reason.
            answer(
                "<admfIdentifier>admf-1</admfIdentifier><neIdentifier>gw-1</neIdentifier>"
                "<messageTimestamp>2025-11-29T08:00:01.000000Z</messageTimestamp>"
                "<version>v1.23.1</version>",
                root="X1TopLevelErrorResponse",
            ),
            "top-level error (X1TopLevelErrorResponse): the ADMF could not read it",
        ),
    ],
)
def test_a_refusal_is_an_answer_that_is_not_ok(body: bytes, description: str) -> None:
    check(body)  # what a conformant ADMF answers
    result = read_answer_untrusted(body, "ReportDestinationIssue", TXN)
    assert not result.ok and description in result.description


def refused_with(code: str) -> bytes:
    return answer(
        response(
            "ErrorResponse",
            "<requestMessageType>ReportNEIssue</requestMessageType>"
            f"<errorInformation><errorCode>{code}</errorCode>"
            "<errorDescription>no</errorDescription></errorInformation>",
        )
    )


@pytest.mark.parametrize("code", ["1050", "1060"])
def test_an_admf_that_does_not_take_our_ne_identifier_says_which_keys_to_compare(
    code: str,
) -> None:
    """1050 (the NE identifier is not the one the ADMF binds to our client certificate) and
    1060 (an NE it does not know): every report would be refused alike."""
    result = read_answer_untrusted(refused_with(code), "ReportNEIssue", TXN)
    assert not result.ok and result.code == int(code)
    line = refusal(result, "ReportNEIssue", "gw-1")
    assert line.startswith(f"intercept: the ADMF refused a ReportNEIssue: {code} 'no' (")
    assert "neIdentifier 'gw-1'" in line and "ne_identifier" in line
    assert "report_certificate" in line


@pytest.mark.parametrize("code", ["1030", "2040", "x", "99999999999"])
def test_other_refusals_are_logged_as_the_admf_gave_them(code: str) -> None:
    result = read_answer_untrusted(refused_with(code), "ReportNEIssue", TXN)
    assert result.code == (int(code) if code.isdigit() and len(code) < 10 else None)
    line = refusal(result, "ReportNEIssue", "gw-1")
    assert line == f"intercept: the ADMF refused a ReportNEIssue: {code} 'no'"


@pytest.mark.parametrize(
    "body",
    [
        b"<X1Response",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "a">]><X1Response>&a;</X1Response>',
        b"<html>502</html>",
        answer(""),  # no message
        b"\xff\xfe",
        b"<X1Response>" + b" " * x1.MAX_DOCUMENT + b"</X1Response>",
    ],
)
def test_what_is_not_an_x1_answer_raises(body: bytes) -> None:
    with pytest.raises(x1.X1Error):
        read_answer_untrusted(body, "ReportDestinationIssue", TXN)


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("https://10.0.9.2:8444/X1", Endpoint("10.0.9.2", 8444, "/X1")),
        ("https://admf.example.net", Endpoint("admf.example.net", 443, "/")),
        ("https://[2001:db8::2]:8444/", Endpoint("2001:db8::2", 8444, "/")),
    ],
)
def test_report_urls(url: str, endpoint: Endpoint) -> None:
    assert Endpoint.parse(url) == endpoint
