"""An OCSP responder in the test's process for the tls transport's OCSP tests: a small HTTP/1.0
server answering with responses signed by the CA (cryptography's OCSPResponseBuilder, RFC 6960),
which can hold its answer, never answer, or change its mind; and the listener settings and log
lines those tests share. Helpers only: no test is collected from this module."""

from __future__ import annotations

import datetime
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from tests.integration.tls.tls_peers import LOOPBACK, TLS_LOG
from tests.interop.harness.pki import Issued, TestCa


@attrs.define(eq=False)
class Responder:
    """The CA's OCSP responder: ``revoked`` serial numbers are revoked, the others good; each
    answer's nextUpdate is ``next_update`` seconds ahead. ``hang``: never answers; ``hold``:
    answers once it is set."""

    ca: TestCa
    url: str = ""
    known: dict[int, Issued] = attrs.Factory(dict)
    revoked: set[int] = attrs.Factory(set)
    next_update: float = 600.0
    hang: bool = False
    hold: trio.Event | None = None
    asked: trio.Event = attrs.Factory(trio.Event)
    queries: int = 0

    def issue(self, name: str, *, hosts: list[str] | None = None) -> Issued:
        issued = self.ca.issue(name, hosts=hosts or [], ocsp_url=self.url)
        self.known[issued.x509.serial_number] = issued
        return issued

    def answer(self, serial: int) -> bytes:
        now = datetime.datetime.now(datetime.UTC)
        revoked = serial in self.revoked
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response(
                cert=self.known[serial].x509,
                issuer=self.ca.issued.x509,
                algorithm=hashes.SHA1(),
                cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
                this_update=now,
                next_update=now + datetime.timedelta(seconds=self.next_update),
                revocation_time=now if revoked else None,
                revocation_reason=None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.NAME, self.ca.issued.x509)
        )
        signed = builder.sign(self.ca.private_key, hashes.SHA256())
        return signed.public_bytes(serialization.Encoding.DER)

    async def handle(self, stream: trio.SocketStream) -> None:
        buffer = b""
        with trio.move_on_after(10):
            while b"\r\n\r\n" not in buffer:
                buffer += await stream.receive_some(4096)
            head, _, body = buffer.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += await stream.receive_some(4096)
            serial = ocsp.load_der_ocsp_request(body).serial_number
            self.queries += 1
            self.asked.set()
            if self.hang:
                await trio.sleep_forever()
            if self.hold is not None:
                await self.hold.wait()
            der = self.answer(serial)
            await stream.send_all(
                b"HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\n"
                + f"Content-Length: {len(der)}\r\n\r\n".encode()
                + der
            )
        await stream.aclose()


@asynccontextmanager
async def responder_of(ca: TestCa) -> AsyncIterator[Responder]:
    responder = Responder(ca)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, responder.handle, 0, host=LOOPBACK)
        )
        port = listeners[0].socket.getsockname()[1]
        responder.url = f"http://{LOOPBACK}:{port}/ocsp"
        yield responder
        nursery.cancel_scope.cancel()


def tls_config(ca: TestCa, ocsp_mode: str, **more: Any) -> dict[str, Any]:
    return {
        "mode": "mutual",
        "ca_bundles": [str(ca.certificate)],
        "ocsp": ocsp_mode,
        "system_ca_for_trunks": False,
        **more,
    }


def ocsp_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == TLS_LOG and text in r.getMessage()]
