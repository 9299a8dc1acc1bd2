"""A reload (what SIGHUP does: ``Gateway.reload_certificates``) re-reads the CA bundles the
``tls`` transport verifies peers with, on real sockets on 127.0.0.1, the gateway in this
process:

- towards a trunk: a carrier that moved to a new CA is refused until its CA is in
  ``ca_bundles`` and the gateway reloads, then verified; an emptied bundle is refused by the
  reload and the working one kept;
- a ``mutual`` listener: a phone of a second vendor is refused until that vendor's CA is added
  and the gateway reloads; a phone connected before the reload stays connected and answered.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from gateway.plugins.transports.tls import TlsHandshakeError
from tests.integration.tls.tls_peers import (
    LOOPBACK,
    client_context,
    connect,
    options_over,
    refused,
    running_gateway,
    tls_port,
    tls_transport,
    trunk_server,
)
from tests.interop.harness.pki import TestPki


async def test_a_trunk_moved_to_a_new_ca_is_verified_after_its_ca_is_added_and_reloaded(
    tmp_path: Path,
) -> None:
    pki = TestPki(tmp_path / "pki")
    old_ca, new_ca = pki.ca("Carrier CA 2025"), pki.ca("Carrier CA 2026")
    bundle = tmp_path / "carrier-ca.pem"
    shutil.copyfile(old_ca.certificate, bundle)
    async with trunk_server(new_ca.issue("carrier", hosts=["127.0.0.1"])) as trunk:
        tls = {"ca_bundles": [str(bundle)], "system_ca_for_trunks": False}
        async with running_gateway(tmp_path / "state", tls) as gateway:
            remote = (LOOPBACK, trunk.port)
            with pytest.raises(TlsHandshakeError, match="unable to get local issuer"):
                await tls_transport(gateway).open_flow(remote, gateway)

            bundle.write_text("")  # a deploy half done: refused, nothing changes
            (report,) = gateway.reload_certificates()
            assert (report.plugin, report.outcome) == ("tls", "failed")
            assert report.error == f"{bundle} holds no PEM certificate"

            bundle.write_bytes(old_ca.certificate.read_bytes() + new_ca.certificate.read_bytes())
            (report,) = gateway.reload_certificates()
            assert (report.plugin, report.outcome) == ("tls", "reloaded")
            flow = await tls_transport(gateway).open_flow(remote, gateway)
            assert flow.peer_certificate is not None and flow.peer_certificate.verified
            assert gateway.certificate_reloads.statistics() == (
                ("tls", "reloaded", 1),
                ("tls", "failed", 1),
            )


async def test_a_mutual_listener_takes_a_second_vendor_after_a_reload_and_keeps_the_first(
    tmp_path: Path,
) -> None:
    pki = TestPki(tmp_path / "pki")
    vendor_a, vendor_b = pki.ca("Vendor A Factory CA"), pki.ca("Vendor B Factory CA")
    phone_a, phone_b = vendor_a.issue("phone-a", hosts=[]), vendor_b.issue("phone-b", hosts=[])
    bundle = tmp_path / "vendors.pem"
    shutil.copyfile(vendor_a.certificate, bundle)
    tls = {"mode": "mutual", "ca_bundles": [str(bundle)]}
    async with running_gateway(tmp_path / "state", tls) as gateway:
        port = tls_port(gateway)
        assert await refused(port, client_context(certificate=phone_b))
        early = await connect(port, client_context(certificate=phone_a))
        try:
            assert (await options_over(early)).status == 200

            bundle.write_bytes(
                vendor_a.certificate.read_bytes() + vendor_b.certificate.read_bytes()
            )
            (report,) = gateway.reload_certificates()
            assert report.outcome == "reloaded"

            assert not await refused(port, client_context(certificate=phone_b))
            # Connected before the reload, on the old context: still answered.
            assert (await options_over(early)).status == 200

            bundle.write_bytes(vendor_b.certificate.read_bytes())  # vendor A dropped
            gateway.reload_certificates()
            assert await refused(port, client_context(certificate=phone_a))
            assert (await options_over(early)).status == 200  # up before: left alone
        finally:
            await trio.aclose_forcefully(early)
