"""A large CRL (20,000 entries, as a big CA's) revoking a phone, put in place of the
``crl_files`` file and sent SIGHUP, in a real ``voipgw run`` (the reload reads it and builds
its contexts in a worker thread): ``openssl s_client`` with that phone's certificate connects
before the reload and is refused after it, a phone not revoked still connects, and the log
says why. (tests/interop/test_tls_crl_openssl.py swaps a small CRL the other way round.)

TLS 1.2 (``-tls1_2``): its server checks the client's certificate inside the handshake, so
s_client's exit status says whether it was refused (with TLS 1.3 the client's handshake ends
before the server's verdict, which comes as an alert afterwards).
"""

from __future__ import annotations

import datetime
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.integration.voipgw_process import voipgw_running
from tests.interop.harness.pki import Issued, TestCa, TestPki
from tests.port_blocks import PortLease

READY = re.compile(r"voipgw ready: tls:127\.0\.0\.1:(\d+)")
RELOADED = "reload: tls loaded "

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def s_client(port: int, ca: Path, phone: Issued) -> subprocess.CompletedProcess[str]:
    """One TLS 1.2 handshake with ``phone``'s certificate, then EOF on stdin (s_client ends)."""
    return subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-tls1_2",
            "-CAfile",
            str(ca),
            "-verify_return_error",
            "-cert",
            str(phone.certificate),
            "-key",
            str(phone.key),
            "-brief",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
    )


def large_crl(ca: TestCa, path: Path, revoked: Issued, *, entries: int) -> None:
    """``ca``'s CRL number 2 listing ``revoked`` among ``entries`` others, DER, over ``path``."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    serials = [revoked.x509.serial_number, *((n << 100) | 0xC0FFEE for n in range(entries))]
    builder = (
        x509.CertificateRevocationListBuilder(
            revoked_certificates=[
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - datetime.timedelta(days=1))
                .build()
                for serial in serials
            ]
        )
        .issuer_name(ca.issued.x509.subject)
        .last_update(now - datetime.timedelta(hours=1))
        .next_update(now + datetime.timedelta(days=7))
        .add_extension(x509.CRLNumber(2), critical=False)
    )
    crl = builder.sign(ca.private_key, hashes.SHA256())
    path.write_bytes(crl.public_bytes(serialization.Encoding.DER))


def test_a_phone_revoked_by_a_crl_file_sighup_put_in_place_is_refused_and_another_connects(
    tmp_path: Path,
    port_lease: PortLease,
) -> None:
    pki = TestPki(tmp_path / "pki")
    vendor = pki.ca("Phone Vendor Factory CA")
    gateway = vendor.issue("gateway", hosts=["127.0.0.1"])
    good, stolen = vendor.issue("0004f2000001", hosts=[]), vendor.issue("0004f2000002", hosts=[])
    crl = vendor.crl(tmp_path / "vendor.crl", number=1)  # nobody revoked yet
    state = tmp_path / "state"
    config = tmp_path / "voipgw.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{state}"\n'
        '[sip]\nlisten = ["tls:127.0.0.1:0"]\n'
        f'[media]\naddress = "127.0.0.1"\nports = "{port_lease.text(20)}"\n'
        '[plugins]\nenable = ["tls"]\n'
        f'[plugins.tls]\ncertificate = "{gateway.certificate}"\n'
        f'private_key = "{gateway.key}"\nmode = "mutual"\n'
        f'ca_bundles = ["{vendor.certificate}"]\ncrl_files = ["{crl}"]\n'
    )
    log = tmp_path / "voipgw.log"
    with voipgw_running(config, log, [READY]) as (process, (ready,)):
        port = int(ready[1])
        before = s_client(port, vendor.certificate, stolen)
        assert before.returncode == 0, before.stderr  # not revoked yet

        # What the operator's cron job does: the CA's new CRL over the file, then SIGHUP.
        large_crl(vendor, crl, stolen, entries=20_000)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while RELOADED not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no reload logged:\n{log.read_text()}"
            time.sleep(0.05)

        after = s_client(port, vendor.certificate, stolen)
        assert after.returncode != 0
        assert "certificate revoked" in after.stderr
        still = s_client(port, vendor.certificate, good)
        assert still.returncode == 0, still.stderr
    text = log.read_text()
    assert (
        f"revocation checked with {crl}: CRL of CN=Phone Vendor Factory CA, 20001 revoked" in text
    )
    assert "refused (mutual mode): certificate revoked; peer certificate: CN=0004f2000002" in text
