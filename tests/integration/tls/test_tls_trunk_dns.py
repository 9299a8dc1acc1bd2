"""TLS to a trunk named by DNS (RFC 5922 §4), on real sockets on 127.0.0.1: the trunk
``tls:trunk.example`` has one SRV target, ``srv-target.example``, at a TLS server standing in
for the carrier (a fake resolver at the DNS boundary). The certificate must name the domain in
the trunk's address, ``trunk.example``, which is also sent as SNI; a certificate that names
only the SRV target's host is refused, as is one for another name. The same for the bare
``trunk.example``, whose NAPTR record for TLS is followed (the gateway listens on TLS alone).

Set-up as test_tls_sockets.py (tls_peers.py's trunk servers); a test CA of its own.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from gateway.core.calls.trunk_dns import NaptrRecord, SrvRecord
from gateway.core.config import from_mapping
from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.plugins import load_plugins
from gateway.plugins.transports.tls import TlsHandshakeError
from gateway.testing.fake_dns import FakeResolver
from tests.integration.tls.tls_peers import (
    LOOPBACK,
    TLS_LOG,
    failures,
    tls_transport,
    trunk_server,
)
from tests.interop.harness.pki import TestCa, TestPki
from tests.port_blocks import ModuleBlock

# The relay's ports: this process's own (tests/port_blocks.py), not the gateway's default range,
# which another test run's gateway may bind as well (tests/media_range_guard.py).
MEDIA_PORTS = ModuleBlock(20)

DOMAIN = "trunk.example"
TARGET = "srv-target.example"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestPki(tmp_path_factory.mktemp("pki")).ca("Carrier CA")


@asynccontextmanager
async def gateway_with_named_trunk(
    state: Path, ca: TestCa, port: int, address: str = f"tls:{DOMAIN}"
) -> AsyncIterator[Gateway]:
    config = from_mapping(
        {
            "gateway": {"state_dir": str(state)},
            "sip": {"listen": ["tls:127.0.0.1:0"]},
            "media": {"ports": MEDIA_PORTS.text()},
            "plugins": {
                "enable": ["udp", "tcp", "tls"],
                "tls": {"ca_bundles": [str(ca.certificate)], "system_ca_for_trunks": False},
            },
            "trunks": [{"name": "carrier", "address": address, "prefixes": ["+1"]}],
        }
    )
    resolver = FakeResolver(
        srv_records={
            f"_sips._tcp.{DOMAIN}": [SrvRecord(10, 0, port, TARGET)],
            f"_sip._tcp.{DOMAIN}": [SrvRecord(10, 0, 9, TARGET)],
        },
        hosts={TARGET: [LOOPBACK]},
        # For the bare domain (RFC 3263 §4.1): TCP preferred, but the gateway listens on TLS
        # alone (our Via and Contact need a listener), so SIPS+D2T is the record followed.
        naptr_records={
            DOMAIN: [
                NaptrRecord(10, 5, "s", "SIP+D2T", "", f"_sip._tcp.{DOMAIN}"),
                NaptrRecord(10, 10, "s", "SIPS+D2T", "", f"_sips._tcp.{DOMAIN}"),
            ]
        },
    )
    gateway = Gateway(config, load_plugins(config), ids=SeededIds(5), dns_resolver=resolver)
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve)
        yield gateway
        nursery.cancel_scope.cancel()


async def test_the_certificate_must_name_the_trunks_domain_which_goes_as_sni(
    tmp_path: Path, ca: TestCa
) -> None:
    certificate = ca.issue("trunk", hosts=[DOMAIN])
    async with (
        trunk_server(certificate) as trunk,
        gateway_with_named_trunk(tmp_path / "state", ca, trunk.port) as gateway,
    ):
        assert gateway.peer_name((LOOPBACK, trunk.port)) == DOMAIN
        flow = await tls_transport(gateway).open_flow((LOOPBACK, trunk.port), gateway)
        assert flow.peer_certificate is not None and flow.peer_certificate.verified
        assert trunk.server_names == [DOMAIN]


async def test_a_bare_domains_tls_target_must_name_the_domain_too(
    tmp_path: Path, ca: TestCa
) -> None:
    certificate = ca.issue("trunk-naptr", hosts=[DOMAIN])
    async with (
        trunk_server(certificate) as trunk,
        gateway_with_named_trunk(tmp_path / "state", ca, trunk.port, DOMAIN) as gateway,
    ):
        assert gateway.trunk_targets is not None
        assert [str(hop) for hop in gateway.trunk_targets.hops("carrier")] == [
            f"tls:{LOOPBACK}:{trunk.port}"
        ]
        # RFC 5922 §4: the domain of the address, not the NAPTR replacement nor the target.
        assert gateway.peer_name((LOOPBACK, trunk.port)) == DOMAIN
        flow = await tls_transport(gateway).open_flow((LOOPBACK, trunk.port), gateway)
        assert flow.peer_certificate is not None and flow.peer_certificate.verified
        assert trunk.server_names == [DOMAIN]


async def test_a_certificate_for_the_srv_target_alone_is_refused(
    tmp_path: Path, ca: TestCa, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=TLS_LOG)
    # RFC 5922 §4: the SRV target's name is not what the trunk is; this certificate names only
    # that (and our address, so that checking the IP address would have let it through).
    target_only = ca.issue("srv-target", hosts=[TARGET, LOOPBACK])
    async with (
        trunk_server(target_only) as trunk,
        gateway_with_named_trunk(tmp_path / "state", ca, trunk.port) as gateway,
    ):
        with pytest.raises(TlsHandshakeError, match=rf"does not name {DOMAIN}"):
            await tls_transport(gateway).open_flow((LOOPBACK, trunk.port), gateway)
    (logged,) = failures(caplog)
    assert f"DNS:{TARGET}" in logged
