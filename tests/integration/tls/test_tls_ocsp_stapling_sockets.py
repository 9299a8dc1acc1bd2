"""OCSP stapling (RFC 6066 §8 ``status_request``) on our connections to trunks, real sockets on
127.0.0.1: a trunk-side TLS server made with pyOpenSSL staples a good, a revoked or a garbled
answer; the gateway (``ocsp`` on) asks for it and

- takes a good staple without asking the responder,
- refuses the trunk on a revoked staple (the responder, which would say good, is not asked),
- ignores a staple that fails a check (logged at INFO once per server) and asks the responder.
  (Bytes that are no DER OCSP response at all never reach us: OpenSSL's client drops them.)

and, with ``ocsp_stapling``, our listener staples its own certificate's answer (fetched by its
own task, again after a certificate reload) to a pyOpenSSL client that asks, none to one that
does not.
"""

from __future__ import annotations

import functools
import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
from cryptography.x509 import ocsp
from OpenSSL import SSL

from gateway.plugins.transports.tls import TlsHandshakeError, TlsStream
from tests.integration.tls.ocsp_responder import ocsp_lines, responder_of, tls_config
from tests.integration.tls.tls_peers import (
    LOOPBACK,
    TLS_LOG,
    running_gateway,
    tls_port,
    tls_transport,
)
from tests.interop.harness.pki import Issued, TestPki


@attrs.define(eq=False)
class StaplingTrunk:
    port: int = 0
    staple: bytes = b""
    asked: int = 0  # handshakes whose client sent status_request


@asynccontextmanager
async def stapling_trunk(certificate: Issued, staple: bytes) -> AsyncIterator[StaplingTrunk]:
    record = StaplingTrunk(staple=staple)
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.use_certificate_file(str(certificate.certificate))
    context.use_privatekey_file(str(certificate.key))

    def staple_for(_connection: SSL.Connection, _data: object) -> bytes:
        record.asked += 1
        return record.staple

    context.set_ocsp_server_callback(staple_for)

    async def handle(stream: trio.SocketStream) -> None:
        tls = TlsStream(stream, SSL.Connection(context, None), server_side=True)
        try:
            await tls.do_handshake()
            while await tls.receive_some(65536):
                pass
        except Exception:  # the gateway hangs up after refusing: nothing to test here
            pass
        finally:
            await trio.aclose_forcefully(tls)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host=LOOPBACK))
        record.port = listeners[0].socket.getsockname()[1]
        yield record
        nursery.cancel_scope.cancel()


async def test_a_good_staple_is_used_without_asking_the_responder(tmp_path: Path) -> None:
    carrier = TestPki(tmp_path / "pki").ca("Carrier CA")
    async with responder_of(carrier) as responder:
        sbc = responder.issue("sbc", hosts=["127.0.0.1"])
        tls = tls_config(carrier, "hard-fail", mode="server-only")
        async with (
            stapling_trunk(sbc, responder.answer(sbc.x509.serial_number)) as trunk,
            running_gateway(tmp_path / "state", tls) as gateway,
        ):
            transport = tls_transport(gateway)
            flow = await transport.open_flow((LOOPBACK, trunk.port), gateway)
            assert flow.peer_certificate is not None and flow.peer_certificate.verified
            assert trunk.asked == 1
            assert responder.queries == 0
            assert transport.ocsp is not None
            assert transport.ocsp.stapled == {"good": 1, "revoked": 0, "unknown": 0, "invalid": 0}
            assert transport.ocsp.queries["good"] == 0


async def test_a_revoked_staple_refuses_the_trunk(tmp_path: Path) -> None:
    carrier = TestPki(tmp_path / "pki").ca("Carrier CA")
    async with responder_of(carrier) as responder:
        sbc = responder.issue("sbc", hosts=["127.0.0.1"])
        responder.revoked.add(sbc.x509.serial_number)
        revoked = responder.answer(sbc.x509.serial_number)
        responder.revoked.clear()  # the responder would say good: it must not be asked
        tls = tls_config(carrier, "soft-fail", mode="server-only")
        async with (
            stapling_trunk(sbc, revoked) as trunk,
            running_gateway(tmp_path / "state", tls) as gateway,
        ):
            transport = tls_transport(gateway)
            with pytest.raises(TlsHandshakeError, match=r"OCSP: revoked"):
                await transport.open_flow((LOOPBACK, trunk.port), gateway)
            assert responder.queries == 0
            assert transport.handshake_failures["revoked"] == 1
            assert transport.ocsp is not None
            assert transport.ocsp.stapled["revoked"] == 1


async def test_a_garbled_staple_is_ignored_and_the_responder_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=TLS_LOG)
    carrier = TestPki(tmp_path / "pki").ca("Carrier CA")
    async with responder_of(carrier) as responder:
        sbc = responder.issue("sbc", hosts=["127.0.0.1"])
        responder.next_update = 1.0  # expired by the second connection: asked again
        tls = tls_config(carrier, "hard-fail", mode="server-only")
        good = responder.answer(sbc.x509.serial_number)
        forged = good[:-1] + bytes([good[-1] ^ 1])  # the signature's last byte changed
        async with (
            stapling_trunk(sbc, forged) as trunk,
            running_gateway(tmp_path / "state", tls) as gateway,
        ):
            transport = tls_transport(gateway)
            flow = await transport.open_flow((LOOPBACK, trunk.port), gateway)
            assert flow.peer_certificate is not None
            assert responder.queries == 1
            assert transport.ocsp is not None
            assert transport.ocsp.stapled["invalid"] == 1
            assert transport.ocsp.queries["good"] == 1
    ignored = ocsp_lines(caplog, "stapled is ignored")
    assert len(ignored) == 1 and ignored[0].levelno == logging.INFO
    assert "signature does not verify" in ignored[0].getMessage()


async def handshake_asking_for_status(port: int, ca: Path, *, ask: bool = True) -> list[bytes]:
    """A pyOpenSSL client's handshake with our listener; the stapled answers it got (one entry,
    b"" for none; no entry when it did not ask)."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.load_verify_locations(str(ca))
    got: list[bytes] = []

    def keep(_connection: SSL.Connection, data: bytes, _: object) -> bool:
        got.append(data)
        return True

    context.set_ocsp_client_callback(keep)
    connection = SSL.Connection(context, None)
    if ask:
        connection.request_ocsp()
    stream = await trio.open_tcp_stream(LOOPBACK, port)
    tls = TlsStream(stream, connection, server_side=False)
    try:
        await tls.do_handshake()
    finally:
        await trio.aclose_forcefully(tls)
    return got


async def test_our_listener_staples_its_certificates_answer_for_a_client_that_asks(
    tmp_path: Path,
) -> None:
    pki = TestPki(tmp_path / "pki")
    carrier = pki.ca("Gateway CA")
    async with responder_of(carrier) as responder:
        ours = responder.issue("gw", hosts=["127.0.0.1"])
        tls = {
            "certificate": str(ours.certificate),
            "private_key": str(ours.key),
            "ca_bundles": [str(carrier.certificate)],
            "ocsp_stapling": True,
        }
        async with running_gateway(tmp_path / "state", tls) as gateway:
            transport = tls_transport(gateway)
            staple = transport.own_staple
            assert staple is not None
            with trio.fail_after(5):
                while not staple.current():  # fetched by its own task, not by a handshake
                    await trio.sleep(0.01)
            assert responder.queries == 1
            port = tls_port(gateway)
            (stapled,) = await handshake_asking_for_status(port, carrier.certificate)
            answer = ocsp.load_der_ocsp_response(stapled)
            assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
            assert answer.serial_number == ours.x509.serial_number
            assert await handshake_asking_for_status(port, carrier.certificate, ask=False) == []
            assert responder.queries == 1  # handshakes never ask the responder

            # A reload (SIGHUP) with a renewed certificate: its own answer, fetched at once.
            renewed = responder.issue("gw-renewed", hosts=["127.0.0.1"])
            shutil.copyfile(renewed.certificate, ours.certificate)
            shutil.copyfile(renewed.key, ours.key)
            transport.reload_certificates()
            assert staple.current() == b""  # the old answer is about another certificate
            with trio.fail_after(5):
                while not staple.current():
                    await trio.sleep(0.01)
            (stapled,) = await handshake_asking_for_status(port, carrier.certificate)
            assert ocsp.load_der_ocsp_response(stapled).serial_number == renewed.x509.serial_number
            assert responder.queries == 2
