"""Reports to the ADMF from ``voipgw run``, over real sockets on 127.0.0.1: a TLS ADMF (the
stdlib's HTTPS server demanding our client certificate) takes the gateway's X1 reports.

The gateway reports its start-up; a destination X1 creates at a port nobody listens on is
reported faulty (ReportDestinationIssue NonTerminatingFault, and its task too), and
GetDestinationDetails says deliveryFault; once a mediation function listens there, AllClear
follows and GetDestinationDetails says activeAndWorking.
"""

from __future__ import annotations

import http.client
import http.server
import re
import socket
import ssl
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from gateway.plugins.taps.intercept import pdu
from tests.integration.voipgw_process import voipgw_running
from tests.interop.harness.pki import Issued, TestCa, TestPki
from tests.interop.harness.ports import free_port
from tests.port_blocks import ModuleBlock
from tests.unit.taps.x1_structure import XSI, check
from tests.unit.taps.x1_structure import C as COMMON
from tests.unit.taps.x1_structure import X as NS

# The relay's ports: this process's own (tests/port_blocks.py), not the gateway's default range,
# which another test run's gateway may bind as well (tests/media_range_guard.py).
MEDIA_PORTS = ModuleBlock(20)

XID = uuid.UUID("11111111-2222-4333-8444-555555555555")
DID = uuid.UUID("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")


@attrs.frozen
class Received:
    kind: str
    fields: dict[str, str]
    client: str  # the commonName of the certificate the gateway presented


@attrs.define
class Admf:
    """The ADMF's X1 server: HTTPS with client certificates, answering each report oK."""

    reports: list[Received] = attrs.field(factory=list)
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def of(self, kind: str) -> list[str]:
        with self.lock:
            return [
                r.fields.get("destinationReportType")
                or r.fields.get("taskReportType")
                or r.fields.get("typeOfNeIssueMessage", "")
                for r in self.reports
                if r.kind == kind
            ]

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        admf = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                check(body)  # each report is what the TS 103 221-1 XSD allows
                (message,) = list(ET.fromstring(body))
                kind = message.get(f"{{{XSI}}}type") or ""
                fields = {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in message}
                certificate = self.connection.getpeercert() or {}  # type: ignore[attr-defined]
                subject = dict(item for rdn in certificate["subject"] for item in rdn)
                with admf.lock:
                    admf.reports.append(Received(kind, fields, subject["commonName"]))
                answer = (
                    f'<X1Response xmlns="{NS}" xmlns:xsi="{XSI}"><x1ResponseMessage '
                    f'xsi:type="{kind.removesuffix("Request")}Response">'
                    f"<admfIdentifier>admf-1</admfIdentifier><neIdentifier>gw-int</neIdentifier>"
                    "<messageTimestamp>2026-11-30T00:00:00.000000Z</messageTimestamp>"
                    f"<version>v1.23.1</version><x1TransactionId>{fields['x1TransactionId']}"
                    "</x1TransactionId><oK>AcknowledgedAndCompleted</oK></x1ResponseMessage>"
                    "</X1Response>"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def pki(tmp_path: Path) -> tuple[TestCa, Issued, Issued]:
    test_pki = TestPki(tmp_path / "pki")
    ca = test_pki.ca("LI CA")
    return ca, ca.issue("gw-int"), ca.issue("admf-1")


@pytest.fixture
def admf(pki: tuple[TestCa, Issued, Issued]) -> Iterator[tuple[Admf, int]]:
    ca, _, certificate = pki
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca.certificate)
    context.load_cert_chain(certificate.certificate, certificate.key)
    context.verify_mode = ssl.CERT_REQUIRED
    state = Admf()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), state.handler())
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def answer_keepalives(listener: socket.socket, stop: threading.Event) -> None:
    """A mediation function: takes connections one after the other, reads their PDUs and
    acknowledges keepalives (TS 103 221-2 types 3/4), until ``stop``."""
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        with connection:
            connection.settimeout(0.2)
            reader = pdu.PduReader()
            while not stop.is_set():
                try:
                    data = connection.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                for item in reader.feed(data):
                    if item.pdu_type == pdu.KEEPALIVE and item.sequence is not None:
                        ack = pdu.keepalive(
                            item.sequence, version=item.version, acknowledgement=True
                        )
                        connection.sendall(ack)


def poll(predicate: Callable[[], bool], what: str, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def x1(pki: tuple[TestCa, Issued, Issued], port: int, *messages: tuple[str, str]) -> str:
    ca, _, certificate = pki
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca.certificate)
    context.load_cert_chain(certificate.certificate, certificate.key)
    body = f'<X1Request xmlns="{NS}" xmlns:c="{COMMON}" xmlns:xsi="{XSI}">' + "".join(
        f'<x1RequestMessage xsi:type="{kind}"><admfIdentifier>admf-1</admfIdentifier>'
        "<neIdentifier>gw-int</neIdentifier>"
        "<messageTimestamp>2026-11-30T00:00:00.000000Z</messageTimestamp>"
        f"<version>v1.23.1</version><x1TransactionId>{uuid.uuid4()}</x1TransactionId>"
        f"{inner}</x1RequestMessage>"
        for kind, inner in messages
    )
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request(
            "POST", "/X1", body + "</X1Request>", {"Content-Type": "application/xml"}
        )
        answer = connection.getresponse()
        text = answer.read().decode()
    finally:
        connection.close()
    assert answer.status == 200 and "ErrorResponse" not in text, text
    check((body + "</X1Request>").encode())  # requests and answers as the XSD allows them
    check(text.encode())
    return text


def delivery_status(pki: tuple[TestCa, Issued, Issued], port: int) -> str:
    answer = x1(pki, port, ("GetDestinationDetailsRequest", f"<dId>{DID}</dId>"))
    found = re.search(r"<destinationDeliveryStatus>(\w+)<", answer)
    assert found is not None, answer
    return found.group(1)


def test_a_destination_that_cannot_be_reached_is_reported_and_so_is_its_recovery(
    tmp_path: Path, pki: tuple[TestCa, Issued, Issued], admf: tuple[Admf, int]
) -> None:
    ca, gateway, _ = pki
    reports, admf_port = admf
    mdf_port = free_port("tcp")  # bound below, once the gateway has found it unreachable
    config = tmp_path / "voipgw.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\nlog_level = "info"\n'
        '[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        f'[media]\nports = "{MEDIA_PORTS.text()}"\n'
        '[plugins]\nenable = ["udp", "intercept"]\n'
        "[plugins.intercept]\n"
        'x1_listen = "127.0.0.1:0"\n'
        f'x1_certificate = "{gateway.certificate}"\n'
        f'x1_private_key = "{gateway.key}"\n'
        f'x1_ca = "{ca.certificate}"\n'
        'ne_identifier = "gw-int"\n'
        "delivery_tls = false\n"
        f'report_url = "https://127.0.0.1:{admf_port}/X1"\n'
        'report_admf_identifier = "admf-1"\n'
        "report_interval = 1\n"
    )
    ready = [re.compile(r"intercept: X1 listening on 127\.0\.0\.1:(\d+)")]
    with voipgw_running(config, tmp_path / "voipgw.log", ready) as (_, (listening,)):
        x1_port = int(listening.group(1))
        poll(lambda: reports.of("ReportNEIssueRequest") == ["Warning"], "the start-up report")
        x1(
            pki,
            x1_port,
            (
                "CreateDestinationRequest",
                f"<destinationDetails><dId>{DID}</dId><deliveryType>X2andX3</deliveryType>"
                "<deliveryAddress><ipAddressAndPort><c:address><c:IPv4Address>127.0.0.1"
                f"</c:IPv4Address></c:address><c:port><c:TCPPort>{mdf_port}</c:TCPPort></c:port>"
                "</ipAddressAndPort></deliveryAddress></destinationDetails>",
            ),
            (
                "ActivateTaskRequest",
                f"<taskDetails><xId>{XID}</xId><targetIdentifiers><targetIdentifier>"
                "<sipUri>sip:alice@example.com</sipUri></targetIdentifier></targetIdentifiers>"
                f"<deliveryType>X2andX3</deliveryType><listOfDIDs><dId>{DID}</dId>"
                "</listOfDIDs></taskDetails>",
            ),
        )
        poll(
            lambda: reports.of("ReportDestinationIssueRequest") == ["NonTerminatingFault"],
            "the destination's fault",
        )
        poll(
            lambda: reports.of("ReportTaskIssueRequest") == ["NonTerminatingFault"],
            "the task's fault",
        )
        assert delivery_status(pki, x1_port) == "deliveryFault"
        with reports.lock:
            fault = next(r for r in reports.reports if r.kind == "ReportDestinationIssueRequest")
        assert fault.fields["dId"] == str(DID)
        assert fault.fields["admfIdentifier"] == "admf-1"
        assert fault.fields["neIdentifier"] == "gw-int"
        assert f"127.0.0.1:{mdf_port}" in fault.fields["destinationIssueDetails"]
        assert fault.client == "gw-int"  # mutual TLS: the gateway's certificate

        stop = threading.Event()
        with socket.socket() as mdf:  # a mediation function starts listening
            mdf.bind(("127.0.0.1", mdf_port))
            mdf.listen()
            # It must read and answer: a connection made during a failure ends it once it
            # answers a keepalive and has held 10 s (a socket that only listens never would).
            answering = threading.Thread(target=answer_keepalives, args=(mdf, stop), daemon=True)
            answering.start()
            poll(
                lambda: (
                    reports.of("ReportDestinationIssueRequest")
                    == ["NonTerminatingFault", "AllClear"]
                ),
                "the destination's all-clear",
            )
            poll(
                lambda: reports.of("ReportTaskIssueRequest") == ["NonTerminatingFault", "AllClear"],
                "the task's all-clear",
            )
            assert delivery_status(pki, x1_port) == "activeAndWorking"
            stop.set()
            answering.join(timeout=5)
    log = (tmp_path / "voipgw.log").read_text()
    assert "ReportDestinationIssue" not in log  # reports are not named in the ordinary log
