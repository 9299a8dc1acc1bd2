"""The ADMF context, PKI and X1 messages of the intercept ADMF report tests: moved here from
test_intercept_admf_reports.py so that no test module imports another."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.plugins.taps.intercept import Interception
from tests.interop.harness.pki import Issued, TestCa, TestPki
from tests.unit.taps.x1_structure import check

NS = "http://uri.etsi.org/03221/X1/2017/10"
XID = uuid.UUID("11111111-2222-4333-8444-555555555555")
DID = uuid.UUID("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")
DESTINATION, TASK, NE = (
    "ReportDestinationIssueRequest",
    "ReportTaskIssueRequest",
    "ReportNEIssueRequest",
)


def message(kind: str, body: str) -> str:
    return (
        f'<x1RequestMessage xsi:type="{kind}"><admfIdentifier>admf-1</admfIdentifier>'
        "<neIdentifier>gw-test</neIdentifier><messageTimestamp>2026-11-29T10:00:00.000000Z"
        "</messageTimestamp><version>v1.23.1</version>"
        f"<x1TransactionId>{uuid.uuid4()}</x1TransactionId>{body}</x1RequestMessage>"
    )


def provision(port: int) -> list[str]:
    return [
        message(
            "CreateDestinationRequest",
            f"<destinationDetails><dId>{DID}</dId><deliveryType>X2andX3</deliveryType>"
            "<deliveryAddress><ipAddressAndPort><c:address><c:IPv4Address>127.0.0.1"
            f"</c:IPv4Address></c:address><c:port><c:TCPPort>{port}</c:TCPPort></c:port>"
            "</ipAddressAndPort>"
            "</deliveryAddress></destinationDetails>",
        ),
        message(
            "ActivateTaskRequest",
            f"<taskDetails><xId>{XID}</xId><targetIdentifiers><targetIdentifier><sipUri>"
            "sip:alice@example.com</sipUri></targetIdentifier></targetIdentifiers>"
            f"<deliveryType>X2andX3</deliveryType><listOfDIDs><dId>{DID}</dId></listOfDIDs>"
            "</taskDetails>",
        ),
    ]


def x1(tap: Interception, *messages: str) -> str:
    """An X1 document through the tap, as its X1 server hands it over."""
    body = (
        f'<X1Request xmlns="{NS}" xmlns:c="http://uri.etsi.org/03280/common/2017/07" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        + "".join(messages)
        + "</X1Request>"
    ).encode()
    check(body)  # the request and the answer are what the TS 103 221-1 XSD allows
    answer = tap._handle_x1(body).decode()
    assert "ErrorResponse" not in answer, answer
    check(answer.encode())
    return answer


@pytest.fixture
def pki(tmp_path: Path) -> tuple[TestCa, Issued, Issued]:
    test_pki = TestPki(tmp_path / "pki")
    ca = test_pki.ca("LI CA")
    return ca, ca.issue("gw-test"), ca.issue("admf-1")


def admf_context(pki: tuple[TestCa, Issued, Issued]) -> ssl.SSLContext:
    ca, _, admf = pki
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca.certificate)
    context.load_cert_chain(admf.certificate, admf.key)
    context.verify_mode = ssl.CERT_REQUIRED  # the POI must present its certificate
    return context


async def until(predicate: Any, seconds: float = 60.0) -> None:
    """Wait in virtual time until ``predicate()`` holds."""
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.5)
