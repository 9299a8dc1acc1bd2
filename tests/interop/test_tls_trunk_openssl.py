"""The gateway connecting to a TLS trunk played by ``openssl s_server`` (issue #4 item 6: "a trunk
in server-only mode whose certificate does not match its name is refused").

The Gateway runs in-process so the test can open the outbound connection through the tls
transport's ``open_flow``, exactly as the SIP core does when it sends a request to a trunk.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.config import from_mapping
from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.plugins import load_plugins
from gateway.core.transport.flows import Flow
from gateway.plugins.transports.tls import (
    TLS12_CIPHERS,
    TLS13_SUITES,
    TlsHandshakeError,
    TlsTransport,
)
from tests.interop.harness.openssl import SServer
from tests.interop.harness.pki import TestPki
from tests.port_blocks import PortLease

pytestmark = pytest.mark.interop


@asynccontextmanager
async def gateway_with(state: Path, tls: Mapping[str, Any]) -> AsyncIterator[Gateway]:
    lease = PortLease()  # its media ports, given back once it has stopped
    config = from_mapping(
        {
            "gateway": {"state_dir": str(state)},
            "sip": {"listen": ["tls:127.0.0.1:0"]},
            "media": {"ports": lease.text(20)},
            "plugins": {"enable": ["tls"], "tls": dict(tls)},
        }
    )
    try:
        gateway = Gateway(config, load_plugins(config), ids=SeededIds(5))
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            yield gateway
            nursery.cancel_scope.cancel()
    finally:
        lease.release()


async def open_to(gateway: Gateway, server: SServer) -> Flow:
    """What the SIP core does to send a request to a trunk at ``server``'s address."""
    transport = gateway.plugins.transports.get("tls")
    assert isinstance(transport, TlsTransport)
    return await transport.open_flow(server.address, gateway)


async def test_trunk_certificate_for_another_name_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.plugins.transports.tls")
    pki = TestPki(tmp_path / "pki")
    ca = pki.ca("Carrier CA")
    wrong = ca.issue("sbc.elsewhere.example", hosts=["sbc.elsewhere.example", "192.0.2.99"])
    right = ca.issue("sbc.carrier.example", hosts=["sbc.carrier.example", "127.0.0.1"])
    tls = {"ca_bundles": [str(ca.certificate)], "system_ca_for_trunks": False}
    with (
        SServer(wrong, workdir=tmp_path) as bad_trunk,
        SServer(right, workdir=tmp_path) as good_trunk,
    ):
        async with gateway_with(tmp_path / "state", tls) as gateway:
            with pytest.raises(TlsHandshakeError, match=r"does not name 127\.0\.0\.1"):
                await open_to(gateway, bad_trunk)
            # Positive control: same CA, same settings, a certificate that names the address.
            flow = await open_to(gateway, good_trunk)
            assert flow.peer_certificate is not None and flow.peer_certificate.verified
            assert flow.peer_certificate.subject == "CN=sbc.carrier.example"
            await flow.send(b"OPTIONS\n")
            with trio.fail_after(5):
                while "Client cipher list" not in good_trunk.output():
                    await trio.sleep(0.05)
    # What we offer a trunk: TLS 1.3 suites and the ECDHE+AEAD TLS 1.2 ones, nothing else.
    offered = good_trunk.output().split("Client cipher list: ")[1].split()[0].split(":")
    assert set(offered) == {*TLS13_SUITES.split(":"), *TLS12_CIPHERS.split(":")}
    assert "Protocol version: TLSv1.3" in good_trunk.output()
    (refusal,) = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert f"handshake to 127.0.0.1:{bad_trunk.port} failed (server-only mode)" in refusal
    assert "DNS:sbc.elsewhere.example, IP:192.0.2.99" in refusal
    assert "peer certificate: CN=sbc.elsewhere.example" in refusal


async def test_trunk_name_from_config_is_sent_as_sni_and_checked(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    ca = pki.ca("Carrier CA")
    certificate = ca.issue("sbc.carrier.example", hosts=["sbc.carrier.example"])
    # -msg makes s_server print the SNI it received ("Hostname in TLS extension").
    # s_server wants a second certificate to switch to for that name: the same one.
    second = ["-cert2", str(certificate.certificate), "-key2", str(certificate.key)]
    args = ["-servername", "sbc.carrier.example", *second, "-msg"]
    with SServer(certificate, workdir=tmp_path, args=args) as trunk:
        tls = {
            "ca_bundles": [str(ca.certificate)],
            "system_ca_for_trunks": False,
            "peers": {f"127.0.0.1:{trunk.port}": "sbc.carrier.example"},
        }
        async with gateway_with(tmp_path / "state", tls) as gateway:
            flow = await open_to(gateway, trunk)
            assert flow.peer_certificate is not None and flow.peer_certificate.verified
            await flow.send(b"\r\n\r\n")
            with trio.fail_after(5):
                while "Hostname in TLS extension" not in trunk.output():
                    await trio.sleep(0.05)
    assert 'Hostname in TLS extension: "sbc.carrier.example"' in trunk.output()


async def test_mutual_trunk_verifies_our_certificate(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    ca = pki.ca("Carrier CA")
    trunk_certificate = ca.issue("sbc", hosts=["127.0.0.1"])
    ours = ca.issue("voipgw-node-1")
    # -Verify: s_server requires a client certificate that chains to -CAfile.
    args = ["-Verify", "2", "-CAfile", str(ca.certificate), "-verify_return_error"]
    with SServer(trunk_certificate, workdir=tmp_path, args=args) as trunk:
        tls = {
            "certificate": str(ours.certificate),
            "private_key": str(ours.key),
            "ca_bundles": [str(ca.certificate)],
            "system_ca_for_trunks": False,
            "peer_modes": {f"127.0.0.1:{trunk.port}": "mutual"},
        }
        async with gateway_with(tmp_path / "state", tls) as gateway:
            flow = await open_to(gateway, trunk)
            await flow.send(b"\r\n\r\n")
            with trio.fail_after(5):
                # s_server prints the client's name: "CN = ..." (OpenSSL 3.0), "CN=..." (3.5).
                while not re.search(r"CN ?= ?voipgw-node-1\n", trunk.output()):
                    await trio.sleep(0.05)
    assert "verify return:1" in trunk.output()
