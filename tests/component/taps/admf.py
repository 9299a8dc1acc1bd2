"""An ADMF for tests: an HTTPS server (mutual TLS) on 127.0.0.1 taking the POI's X1 reports
(TS 103 221-1 §6.5), keeping each one read, and answering it ``oK`` (or ``ErrorResponse`` when
told to refuse)."""

from __future__ import annotations

import ssl
import xml.etree.ElementTree as ET

import attrs
import h11
import trio

from tests.unit.taps.x1_structure import check

NS = "http://uri.etsi.org/03221/X1/2017/10"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


@attrs.frozen
class Report:
    """One report as received: its xsi:type and its elements (local name -> text)."""

    kind: str
    fields: dict[str, str]
    body: bytes = attrs.field(repr=False)

    @property
    def report_type(self) -> str:
        """destinationReportType, taskReportType or typeOfNeIssueMessage."""
        for name in ("destinationReportType", "taskReportType", "typeOfNeIssueMessage"):
            if name in self.fields:
                return self.fields[name]
        return ""


@attrs.define
class FakeAdmf:
    ssl_context: ssl.SSLContext
    port: int = 0
    reports: list[Report] = attrs.field(factory=list)
    refuse: bool = False
    error_code: int = 1080  # what a refusal answers
    peer_certificates: list[dict[str, object]] = attrs.field(factory=list)
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started(self.port)
            await trio.serve_listeners(self._connection, listeners)

    def stop(self) -> None:
        self.scope.cancel()

    def of(self, kind: str, ident: str | None = None) -> list[str]:
        """The report types of the reports of ``kind`` (about ``ident``, a DID or XID), in
        the order received."""
        return [
            r.report_type
            for r in self.reports
            if r.kind == kind
            and (ident is None or ident in (r.fields.get("dId"), r.fields.get("xId")))
        ]

    async def _connection(self, tcp: trio.SocketStream) -> None:
        tls = trio.SSLStream(tcp, self.ssl_context, server_side=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError:
            await trio.aclose_forcefully(tcp)
            return
        self.peer_certificates.append(tls.getpeercert() or {})
        connection = h11.Connection(h11.SERVER)
        body = b""
        async with tls:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(bytes(await tls.receive_some(65536)))
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            answer = self._answer(body)
            data = connection.send(
                h11.Response(
                    status_code=200,
                    headers=[
                        ("content-type", "application/xml"),
                        ("content-length", str(len(answer))),
                    ],
                )
            )
            data = (data or b"") + (connection.send(h11.Data(data=answer)) or b"")
            data += connection.send(h11.EndOfMessage()) or b""
            await tls.send_all(data)

    def _answer(self, body: bytes) -> bytes:
        check(body)  # every report the gateway sends is what the TS 103 221-1 XSD allows
        root = ET.fromstring(body)
        assert root.tag == f"{{{NS}}}X1Request"
        (message,) = list(root)
        kind = (message.get(XSI_TYPE) or "").rsplit(":", 1)[-1]
        fields = {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in message}
        self.reports.append(Report(kind, fields, body))
        header = (
            f"<admfIdentifier>{fields['admfIdentifier']}</admfIdentifier>"
            f"<neIdentifier>{fields['neIdentifier']}</neIdentifier>"
            "<messageTimestamp>2026-11-29T10:00:00.000000Z</messageTimestamp>"
            f"<version>v1.23.1</version><x1TransactionId>{fields['x1TransactionId']}"
            "</x1TransactionId>"
        )
        if self.refuse:
            inner = (
                f'<x1ResponseMessage xsi:type="ErrorResponse">{header}'
                f"<requestMessageType>{kind.removesuffix('Request')}</requestMessageType>"
                f"<errorInformation><errorCode>{self.error_code}</errorCode>"
                "<errorDescription>not now</errorDescription></errorInformation>"
                "</x1ResponseMessage>"
            )
        else:
            inner = (
                f'<x1ResponseMessage xsi:type="{kind.removesuffix("Request")}Response">'
                f"{header}<oK>AcknowledgedAndCompleted</oK></x1ResponseMessage>"
            )
        return (
            f'<X1Response xmlns="{NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            f"{inner}</X1Response>"
        ).encode()
