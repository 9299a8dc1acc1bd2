"""The X1 messages, documents and handler of the X1 intercept tests: moved here from
test_intercept_x1.py so that no test module imports another."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

from gateway.plugins.taps.intercept.tasks import Provisioning
from gateway.plugins.taps.intercept.x1 import X1Handler
from tests.unit.taps.x1_structure import check

NS = "http://uri.etsi.org/03221/X1/2017/10"
COMMON = "http://uri.etsi.org/03280/common/2017/07"
XID = uuid.UUID("11111111-2222-4333-8444-555555555555")
DID = uuid.UUID("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")
NOW = 1_764_403_200.5  # 2025-11-29T08:00:00.5Z
T1 = "0f3b7a1c-2d4e-4f60-8a91-1b2c3d4e5f60"
T2 = "5d0c3c5e-9b1e-4d0e-8f4f-3f2f1c6b7a10"


def message(
    kind: str, body: str = "", *, ne: str = "gw-1", admf: str = "admf-1", txn: str = T1
) -> str:
    return (
        f'<x1RequestMessage xsi:type="ns1:{kind}">'
        f"<admfIdentifier>{admf}</admfIdentifier><neIdentifier>{ne}</neIdentifier>"
        "<messageTimestamp>2026-11-29T08:00:00.000000Z</messageTimestamp>"
        f"<version>v1.23.1</version><x1TransactionId>{txn}</x1TransactionId>{body}"
        "</x1RequestMessage>"
    )


def document(*messages: str, valid: bool = True) -> bytes:
    """An X1Request with ``messages``; checked against the schema's structure unless the test
    sends one that breaks it on purpose (``valid=False``)."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<ns1:X1Request xmlns="{NS}" xmlns:ns1="{NS}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        + "".join(messages)
        .replace("<x1RequestMessage", "<ns1:x1RequestMessage")
        .replace("</x1RequestMessage>", "</ns1:x1RequestMessage>")
        + "</ns1:X1Request>"
    ).encode()
    if valid:
        check(body)
    return body


def destination(did: uuid.UUID = DID, port: int = 5500, kind: str = "X2andX3") -> str:
    return (
        f"<destinationDetails><dId>{did}</dId><friendlyName>mdf one</friendlyName>"
        f"<deliveryType>{kind}</deliveryType><deliveryAddress><ipAddressAndPort>"
        f'<c:address xmlns:c="{COMMON}"><c:IPv4Address>127.0.0.1</c:IPv4Address></c:address>'
        f'<c:port xmlns:c="{COMMON}"><c:TCPPort>{port}</c:TCPPort></c:port>'
        "</ipAddressAndPort></deliveryAddress></destinationDetails>"
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
    root = check(answer)  # every answer is checked against the schema's structure
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
