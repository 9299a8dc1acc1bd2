"""``[plugins.tls] ocsp`` on real sockets on 127.0.0.1, the gateway in this process (the helpers
of tls_peers.py), and an OCSP responder in this process too (ocsp_responder.py's): a small
HTTP/1.0 server answering with responses signed by the CA (cryptography's OCSPResponseBuilder),
which can hold its answer, never answer, or change its mind.

- the responder is asked after the handshake and before the connection's first SIP message is
  read: no flow exists while it has not answered; a revoked phone is refused (logged once with
  subject and serial, counted as ``revoked``); a phone re-connecting is answered from the cache;
- a responder that never answers: ``hard-fail`` refuses after ``ocsp_timeout`` (counted as
  ``ocsp``), ``soft-fail`` takes the phone;
- a certificate naming no responder is not checked, even in ``hard-fail``;
- a trunk whose server certificate is revoked is refused when we connect;
- an open connection is asked about again when its answer expires, and closed once its
  certificate is revoked, as a CRL reload closes it: its calls end, an emergency call is not cut;
- ``voipgw check-config`` connects to no responder.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from gateway.core.cli import main
from gateway.core.transport.flows import format_address
from gateway.plugins.transports.tls import TlsHandshakeError
from tests.integration.tls.ocsp_responder import ocsp_lines, responder_of, tls_config
from tests.integration.tls.tls_peers import (
    LOOPBACK,
    TLS_LOG,
    FakeCall,
    client_context,
    closed_by_the_gateway,
    connect,
    invite_to,
    options_over,
    refused,
    running_gateway,
    tls_flows,
    tls_port,
    tls_transport,
    trunk_server,
)
from tests.interop.harness.pki import TestPki


async def test_the_responder_is_asked_before_sip_is_read_and_a_revoked_phone_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=TLS_LOG)
    vendor = TestPki(tmp_path / "pki").ca("Phone Vendor Factory CA")
    async with responder_of(vendor) as responder:
        good = responder.issue("0004f2000001")
        stolen = responder.issue("0004f2000002")
        responder.revoked.add(stolen.x509.serial_number)
        async with running_gateway(tmp_path / "state", tls_config(vendor, "soft-fail")) as gw:
            port = tls_port(gw)
            transport = tls_transport(gw)
            responder.hold = trio.Event()
            stream = await connect(port, client_context(certificate=good))
            answered: list[int] = []

            async def ask() -> None:
                answered.append((await options_over(stream)).status)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                with trio.fail_after(5):
                    await responder.asked.wait()
                await trio.testing.wait_all_tasks_blocked()
                # The handshake is done and the OPTIONS sent, but the connection is no flow
                # yet: nothing from it is read while the responder has not answered.
                assert tls_flows(gw) == [] and answered == []
                responder.hold.set()
            assert answered == [200]
            await trio.aclose_forcefully(stream)
            responder.hold = None

            assert await refused(port, client_context(certificate=stolen))
            assert await refused(port, client_context(certificate=stolen))  # it retries
            # The good phone re-connects: answered from the cache.
            assert not await refused(port, client_context(certificate=good))
            assert responder.queries == 2
            assert transport.handshake_failures["revoked"] == 2
            assert transport.ocsp is not None
            assert transport.ocsp.queries == {"good": 1, "revoked": 1, "unknown": 0, "failed": 0}
    first, second = ocsp_lines(caplog, "certificate revoked (OCSP)")
    assert first.levelno == logging.WARNING and second.levelno == logging.DEBUG
    assert first.getMessage().startswith("tls: connection from 127.0.0.1:")
    assert first.getMessage().endswith(
        "refused (mutual mode): certificate revoked (OCSP); peer certificate: "
        f"CN=0004f2000002, serial {stolen.x509.serial_number:X}"
    )


@pytest.mark.parametrize(("mode", "accepted"), [("soft-fail", True), ("hard-fail", False)])
async def test_a_responder_that_never_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str, accepted: bool
) -> None:
    caplog.set_level(logging.DEBUG, logger=TLS_LOG)
    vendor = TestPki(tmp_path / "pki").ca("Phone Vendor Factory CA")
    async with responder_of(vendor) as responder:
        phone = responder.issue("0004f2000001")
        responder.hang = True
        tls = tls_config(vendor, mode, ocsp_timeout=0.5)
        async with running_gateway(tmp_path / "state", tls) as gateway:
            port = tls_port(gateway)
            assert await refused(port, client_context(certificate=phone)) is not accepted
            failures = tls_transport(gateway).handshake_failures
            assert failures["ocsp"] == (0 if accepted else 1)
    (line,) = ocsp_lines(caplog, "OCSP failed")
    # Per connection at DEBUG: the responder's failure is logged once, per responder.
    assert line.levelno == logging.DEBUG
    outcome = "accepted (soft-fail)" if accepted else "refused (hard-fail)"
    assert f" {outcome}: OCSP failed: no answer from {responder.url} within 0.5 s" in (
        line.getMessage()
    )
    (failing,) = [r for r in caplog.records if "is failing" in r.getMessage()]
    assert failing.levelno == logging.WARNING
    assert f"OCSP responder {responder.url} is failing: no answer" in failing.getMessage()


async def test_a_certificate_naming_no_responder_is_not_checked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=TLS_LOG)
    vendor = TestPki(tmp_path / "pki").ca("Phone Vendor Factory CA")
    phone = vendor.issue("0004f2000009", hosts=[])  # no Authority Information Access
    async with running_gateway(tmp_path / "state", tls_config(vendor, "hard-fail")) as gateway:
        port = tls_port(gateway)
        assert not await refused(port, client_context(certificate=phone))
        assert not await refused(port, client_context(certificate=phone))
        checker = tls_transport(gateway).ocsp
        assert checker is not None and sum(checker.queries.values()) == 0
    assert len(ocsp_lines(caplog, "names no OCSP responder")) == 1


async def test_a_trunk_with_a_revoked_certificate_is_refused(tmp_path: Path) -> None:
    vendor = TestPki(tmp_path / "pki").ca("Carrier CA")
    async with responder_of(vendor) as responder:
        old = responder.issue("old-sbc", hosts=["127.0.0.1"])
        new = responder.issue("new-sbc", hosts=["127.0.0.1"])
        responder.revoked.add(old.x509.serial_number)
        tls = tls_config(vendor, "hard-fail", mode="server-only")
        async with (
            trunk_server(old) as old_sbc,
            trunk_server(new) as new_sbc,
            running_gateway(tmp_path / "state", tls) as gateway,
        ):
            transport = tls_transport(gateway)
            with pytest.raises(TlsHandshakeError, match=r"OCSP: revoked"):
                await transport.open_flow((LOOPBACK, old_sbc.port), gateway)
            flow = await transport.open_flow((LOOPBACK, new_sbc.port), gateway)
            assert flow.peer_certificate is not None and flow.peer_certificate.verified
            assert transport.handshake_failures["revoked"] == 1


async def test_an_open_connection_is_asked_again_and_closed_once_revoked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    vendor = TestPki(tmp_path / "pki").ca("Phone Vendor Factory CA")
    async with responder_of(vendor) as responder:
        stolen = responder.issue("0004f2000002")
        good = responder.issue("0004f2000001")
        responder.next_update = 1.0  # answers expire a second after they are given
        async with running_gateway(tmp_path / "state", tls_config(vendor, "soft-fail")) as gw:
            port = tls_port(gw)
            transport = tls_transport(gw)
            stolen_stream = await connect(port, client_context(certificate=stolen))
            good_stream = await connect(port, client_context(certificate=good))
            try:
                assert (await options_over(stolen_stream)).status == 200
                assert (await options_over(good_stream)).status == 200
                by_subject = {
                    flow.peer_certificate.subject: flow
                    for flow in tls_flows(gw)
                    if flow.peer_certificate is not None
                }
                stolen_flow = by_subject["CN=0004f2000002"]
                good_flow = by_subject["CN=0004f2000001"]
                assert gw.calls is not None
                ordinary = FakeCall("ordinary", stolen_flow, invite_to("2001"))
                emergency = FakeCall("emergency", stolen_flow, invite_to("112"))
                fakes: list[Any] = [ordinary, emergency]
                gw.calls.calls.update(fakes)

                # The handset is reported stolen; at the next expiry the responder says so.
                responder.revoked.add(stolen.x509.serial_number)
                with trio.fail_after(10):
                    while transport.connections_revoked == 0:
                        await trio.sleep(0.05)
                await trio.testing.wait_all_tasks_blocked()
                assert ordinary.ended == ["TLS certificate revoked"]
                assert emergency.ended == []
                assert not stolen_flow.closed  # the emergency call keeps it up
                gw.calls.calls.difference_update(fakes)
                assert gw.calls._call_left is not None
                gw.calls._call_left.set()
                gw.calls._call_left = None
                assert await closed_by_the_gateway(stolen_stream)
                assert stolen_flow.closed
                assert (await options_over(good_stream)).status == 200
                assert not good_flow.closed
                assert transport.connections_revoked == 1
                assert transport.handshake_failures["revoked"] == 0
            finally:
                await trio.aclose_forcefully(stolen_stream)
                await trio.aclose_forcefully(good_stream)
    (closing,) = ocsp_lines(caplog, "revoked by its CA's OCSP responder")
    assert closing.levelno == logging.WARNING
    assert closing.getMessage() == (
        f"tls: closing the connection with {format_address(stolen_flow.remote)}: its "
        "certificate is revoked by its CA's OCSP responder; peer certificate: "
        f"CN=0004f2000002, serial {stolen.x509.serial_number:X}"
    )


def test_check_config_contacts_no_responder(tmp_path: Path) -> None:
    vendor = TestPki(tmp_path / "pki").ca("Phone Vendor Factory CA")
    with socket.socket() as responder:
        responder.bind((LOOPBACK, 0))
        responder.listen()
        responder.setblocking(False)
        url = f"http://{LOOPBACK}:{responder.getsockname()[1]}/"
        config = tmp_path / "voipgw.toml"
        config.write_text(
            f'[sip]\nlisten = ["tls:127.0.0.1:5061"]\n'
            f'[plugins]\nenable = ["udp", "tls"]\n'
            f'[plugins.tls]\nca_bundles = ["{vendor.certificate}"]\nocsp = "hard-fail"\n'
            f'ocsp_responder = "{url}"\n'
        )
        assert main(["check-config", str(config)]) == 0
        with pytest.raises(BlockingIOError):
            responder.accept()  # nobody connected
