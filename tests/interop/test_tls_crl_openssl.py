"""``openssl s_client`` against ``voipgw run`` with ``[plugins.tls] crl_files``: a phone whose
certificate its CA revoked is refused with the ``certificate revoked`` alert (logged with its
subject and serial), a good one gets 200 to OPTIONS; after the cron job's new CRL and a SIGHUP,
the phone the new CRL no longer lists gets in and the one it now lists is refused. One gateway
process for the whole sequence, to keep the wall time small."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.interop.harness.openssl import s_client
from tests.interop.harness.pki import TestPki
from tests.interop.harness.tls_gateway import TlsGatewayProcess
from tests.interop.openssl_options import options_request

pytestmark = pytest.mark.interop


def test_a_revoked_client_certificate_is_refused_and_sighup_swaps_the_crl(
    tmp_path: Path,
) -> None:
    pki = TestPki(tmp_path / "pki")
    ca = pki.ca("Phone Vendor Factory CA")
    server = ca.issue("voipgw", hosts=["127.0.0.1"])
    stolen = ca.issue("0004f2000002")
    good = ca.issue("0004f2000001")
    crl = ca.crl(tmp_path / "vendor.crl", revoked=[stolen])
    tls = {
        "mode": "mutual",
        "certificate": str(server.certificate),
        "private_key": str(server.key),
        "ca_bundles": [str(ca.certificate)],
        "crl_files": [str(crl)],
        "idle_timeout": 1.0,  # s_client -ign_eof reads until the server closes
    }
    # The stolen phone's certificate, revoked, is refused on purpose.
    allowed = [r"refused \(mutual mode\): certificate revoked"]
    with TlsGatewayProcess(tmp_path / "gw", tls=tls, allowed_warnings=allowed) as gateway:

        def probe(phone_name: str) -> str:
            phone = stolen if phone_name == "stolen" else good
            result = s_client(
                gateway.tls_address,
                workdir=tmp_path,
                certificate=phone,
                trust=ca.certificate,
                send=options_request(gateway.tls_port),
            )
            if "SIP/2.0 200" in result.output:
                return "200"
            assert "certificate revoked" in result.alerts, result.describe()
            return "revoked"

        assert probe("stolen") == "revoked"
        gateway.wait_for_log(
            r"tls: handshake from 127\.0\.0\.1:\d+ refused \(mutual mode\): certificate "
            rf"revoked; peer certificate: CN=0004f2000002, serial {stolen.x509.serial_number:X}"
        )
        assert probe("good") == "200"

        # The CA un-revoked the first (found again) and revoked the second; the cron job
        # replaces the file and signals.
        ca.crl(crl, revoked=[good])
        assert gateway.process is not None
        gateway.process.send_signal(signal.SIGHUP)
        gateway.wait_for_log(r"reload: tls loaded ")
        assert probe("stolen") == "200"
        assert probe("good") == "revoked"
