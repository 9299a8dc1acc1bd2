"""``[plugins.tls] crl_files`` on real sockets on 127.0.0.1, the gateway in this process (the
helpers of tls_peers.py): a CA, phones and a trunk certificate it issued, and its CRL,
all made with the cryptography library here.

- a mutual listener refuses a revoked phone (logged once per address and certificate, with
  subject and serial; counted) and takes a good one and a phone of a CA without a CRL;
- a server-only listener refuses a revoked certificate too, though it takes unverified ones;
- a trunk whose server certificate is revoked is refused when we connect;
- a reload (what SIGHUP does) swaps the CRL for new handshakes and closes the connections up
  whose certificate it revokes, a phone's and a trunk's: the phone's registrations go, its
  calls end, but an emergency call goes on and keeps the connection up until it ends; a good
  phone stays;
- an expired CRL fails closed: the good phone is refused too, counted as ``crl``.
"""

from __future__ import annotations

import datetime
import logging
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from gateway.core.cli import EXIT_USAGE, main
from gateway.core.gateway import Gateway
from gateway.core.store.interface import Binding, BindingFlow
from gateway.core.transport.flows import Flow, format_address
from gateway.plugins.transports.tls import TlsHandshakeError
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
    tls_port,
    tls_transport,
    trunk_server,
)
from tests.interop.harness.pki import Issued, TestCa, TestPki


@attrs.frozen
class Pki:
    vendor: TestCa
    good: Issued  # a phone in service
    stolen: Issued  # a phone whose certificate the operator revoked
    trunk: Issued  # revoked too: the carrier's old SBC certificate
    good_trunk: Issued
    other_vendor: TestCa  # a CA in ca_bundles without a CRL
    other_phone: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    test_pki = TestPki(tmp_path_factory.mktemp("pki"))
    vendor = test_pki.ca("Phone Vendor Factory CA")
    other = test_pki.ca("Second Vendor CA")
    return Pki(
        vendor=vendor,
        good=vendor.issue("0004f2000001", hosts=[]),
        stolen=vendor.issue("0004f2000002", hosts=[]),
        trunk=vendor.issue("old-sbc", hosts=["127.0.0.1"]),
        good_trunk=vendor.issue("new-sbc", hosts=["127.0.0.1"]),
        other_vendor=other,
        other_phone=other.issue("0004f2000003", hosts=[]),
    )


def revoked_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == TLS_LOG and "certificate revoked" in r.getMessage()
    ]


async def test_a_mutual_listener_refuses_a_revoked_phone_and_takes_the_others(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=TLS_LOG)
    crl = pki.vendor.crl(tmp_path / "vendor.crl", revoked=[pki.stolen, pki.trunk])
    bundles = [str(pki.vendor.certificate), str(pki.other_vendor.certificate)]
    tls = {"mode": "mutual", "ca_bundles": bundles, "crl_files": [str(crl)]}
    async with running_gateway(tmp_path / "state", tls) as gateway:
        port = tls_port(gateway)
        assert await refused(port, client_context(certificate=pki.stolen))
        assert await refused(port, client_context(certificate=pki.stolen))  # it retries
        assert not await refused(port, client_context(certificate=pki.good))
        # Its CA has no CRL in crl_files: not checked for revocation, as before.
        assert not await refused(port, client_context(certificate=pki.other_phone))
        await trio.testing.wait_all_tasks_blocked()
        failures = tls_transport(gateway).handshake_failures
        assert failures == {"revoked": 2, "crl": 0, "other": 0}
    first, second = revoked_lines(caplog)
    assert first.levelno == logging.WARNING and second.levelno == logging.DEBUG
    serial = f"{pki.stolen.x509.serial_number:X}"
    assert first.getMessage().startswith("tls: handshake from 127.0.0.1:")
    assert first.getMessage().endswith(
        f"refused (mutual mode): certificate revoked; peer certificate: CN=0004f2000002, "
        f"serial {serial}"
    )


async def test_a_server_only_listener_refuses_a_revoked_certificate_too(
    tmp_path: Path, pki: Pki
) -> None:
    # server-only takes certificates nobody vouches for (fingerprint binding), but a revoked
    # one is its CA saying it must not be used: refused.
    crl = pki.vendor.crl(tmp_path / "vendor.crl", revoked=[pki.stolen])
    tls = {"ca_bundles": [str(pki.vendor.certificate)], "crl_files": [str(crl)]}
    async with running_gateway(tmp_path / "state", tls) as gateway:
        port = tls_port(gateway)
        assert await refused(port, client_context(certificate=pki.stolen))
        assert not await refused(port, client_context(certificate=pki.good))
        assert not await refused(port, client_context())  # no certificate: fine, as before


async def test_a_trunk_with_a_revoked_server_certificate_is_refused(
    tmp_path: Path, pki: Pki
) -> None:
    crl = pki.vendor.crl(tmp_path / "vendor.crl", revoked=[pki.trunk])
    tls = {
        "ca_bundles": [str(pki.vendor.certificate)],
        "crl_files": [str(crl)],
        "system_ca_for_trunks": False,
    }
    async with (
        trunk_server(pki.trunk) as old,
        trunk_server(pki.good_trunk) as new,
        running_gateway(tmp_path / "state", tls) as gateway,
    ):
        transport = tls_transport(gateway)
        with pytest.raises(TlsHandshakeError, match=r"certificate revoked \(depth 0\)"):
            await transport.open_flow((LOOPBACK, old.port), gateway)
        flow = await transport.open_flow((LOOPBACK, new.port), gateway)
        assert flow.peer_certificate is not None and flow.peer_certificate.verified
        assert transport.handshake_failures["revoked"] == 1


def bind(gateway: Gateway, account: str, flow: Flow) -> Binding:
    """The binding a REGISTER over ``flow`` leaves in the store (RFC 5626: on that flow)."""
    assert gateway.store is not None
    gateway.store.accounts_add(account, "secret", LOOPBACK)
    binding = Binding(
        aor=f"sip:{account}@{LOOPBACK}",
        key=f"sip:{account}@{format_address(flow.remote)}",
        account=account,
        contact=f"sip:{account}@{format_address(flow.remote)};transport=tls",
        expires_at=time.time() + 3600,
        call_id=f"reg-{account}",
        cseq=1,
        flow=BindingFlow("tls", format_address(flow.local), format_address(flow.remote)),
    )
    gateway.store.upsert_binding(binding)
    return binding


async def test_a_reload_closes_the_connections_its_crl_revokes(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    # A CRL is loaded from the start, the phone's certificate not in it yet: the handset is
    # reported stolen while connected, the cron job fetches the new CRL and reloads.
    caplog.set_level(logging.INFO)
    crl = pki.vendor.crl(tmp_path / "vendor.crl")
    tls = {
        "mode": "mutual",
        "ca_bundles": [str(pki.vendor.certificate)],
        "crl_files": [str(crl)],
        "system_ca_for_trunks": False,
    }
    async with (
        trunk_server(pki.trunk) as old_sbc,
        running_gateway(tmp_path / "state", tls) as gateway,
    ):
        port = tls_port(gateway)
        transport = tls_transport(gateway)
        stolen = await connect(port, client_context(certificate=pki.stolen))
        good = await connect(port, client_context(certificate=pki.good))
        try:
            assert (await options_over(stolen)).status == 200
            assert (await options_over(good)).status == 200
            by_serial = {
                flow.peer_certificate.subject: flow
                for flow in gateway.flows
                if flow.transport == "tls" and flow.peer_certificate is not None
            }
            stolen_flow, good_flow = by_serial["CN=0004f2000002"], by_serial["CN=0004f2000001"]
            trunk_flow = await transport.open_flow((LOOPBACK, old_sbc.port), gateway)
            bind(gateway, "stolen", stolen_flow)
            kept = bind(gateway, "good", good_flow)
            assert gateway.calls is not None
            ordinary = FakeCall("ordinary", stolen_flow, invite_to("2001"))
            emergency = FakeCall("emergency", stolen_flow, invite_to("112"))
            other = FakeCall("other", good_flow, invite_to("2002"))
            assert gateway.calls.calls_emergency_number(emergency.a.invite)
            fakes: list[Any] = [ordinary, emergency, other]
            gateway.calls.calls.update(fakes)

            pki.vendor.crl(crl, revoked=[pki.stolen, pki.trunk])
            (report,) = gateway.reload_certificates()
            assert report.outcome == "reloaded"
            await trio.testing.wait_all_tasks_blocked()

            assert trunk_flow.closed
            assert ordinary.ended == ["TLS certificate revoked"]
            assert emergency.ended == [] and other.ended == []
            assert gateway.store is not None
            assert gateway.store.bindings_for_account("stolen") == ()
            assert gateway.store.bindings_for_account("good") == (kept,)
            # The emergency call goes on, and with it the connection carrying its signalling.
            assert not stolen_flow.closed
            assert (await options_over(stolen)).status == 200
            # Once it ended (as CallManager.forget does), the connection closes.
            gateway.calls.calls.difference_update(fakes)
            assert gateway.calls._call_left is not None
            gateway.calls._call_left.set()
            gateway.calls._call_left = None

            assert await closed_by_the_gateway(stolen)
            assert stolen_flow.closed
            assert (await options_over(good)).status == 200  # not revoked: stays
            assert not good_flow.closed
            assert transport.connections_revoked == 2
            assert transport.handshake_failures["revoked"] == 0  # no handshake failed
            # A new connection with it is refused by the new CRL, as before.
            assert await refused(port, client_context(certificate=pki.stolen))
        finally:
            await trio.aclose_forcefully(stolen)
            await trio.aclose_forcefully(good)
    closing = [
        r
        for r in caplog.records
        if r.name == TLS_LOG and "revoked by a reloaded CRL" in r.getMessage()
    ]
    assert [r.levelno for r in closing] == [logging.WARNING, logging.WARNING]
    serial = f"{pki.stolen.x509.serial_number:X}"
    assert any(
        r.getMessage()
        == f"tls: closing the connection with {format_address(stolen_flow.remote)}: its "
        f"certificate is revoked by a reloaded CRL; peer certificate: CN=0004f2000002, "
        f"serial {serial}"
        for r in closing
    )
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("registration of sip:stolen@127.0.0.1 at ") for m in messages)
    assert any(m.startswith("emergency call(s) emergency over ") for m in messages)


async def test_an_expired_crl_fails_closed(tmp_path: Path, pki: Pki) -> None:
    now = datetime.datetime.now(datetime.UTC)
    crl = pki.vendor.crl(
        tmp_path / "vendor.crl",
        this_update=now - datetime.timedelta(days=8),
        next_update=datetime.timedelta(days=7),
    )
    tls = {"mode": "mutual", "ca_bundles": [str(pki.vendor.certificate)], "crl_files": [str(crl)]}
    async with running_gateway(tmp_path / "state", tls) as gateway:
        port = tls_port(gateway)
        assert await refused(port, client_context(certificate=pki.good))
        await trio.testing.wait_all_tasks_blocked()
        assert tls_transport(gateway).handshake_failures == {"revoked": 0, "crl": 1, "other": 0}

        pki.vendor.crl(crl)  # a current one: the cron job is back
        (report,) = gateway.reload_certificates()
        assert report.outcome == "reloaded"
        assert not await refused(port, client_context(certificate=pki.good))


def test_check_config_names_file_table_and_key_of_a_crl_no_bundle_ca_signed(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    crl = pki.other_vendor.crl(tmp_path / "other.crl")
    config = tmp_path / "voipgw.toml"
    config.write_text(
        f'[sip]\nlisten = ["tls:127.0.0.1:5061"]\n'
        f'[plugins]\nenable = ["udp", "tls"]\n'
        f'[plugins.tls]\nca_bundles = ["{pki.vendor.certificate}"]\ncrl_files = ["{crl}"]\n'
    )
    assert main(["check-config", str(config)]) == EXIT_USAGE
    assert capsys.readouterr().err == (
        f"voipgw: configuration error: {config}: [plugins.tls] crl_files: {crl}: the CRL of "
        "CN=Second Vendor CA is not signed by a CA certificate in ca_bundles\n"
    )
