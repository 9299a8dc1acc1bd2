"""``voipgw run`` with ``[plugins.tls] ocsp = "hard-fail"`` against a real ``openssl ocsp``
responder on 127.0.0.1 (a delegated responder certificate with id-kp-OCSPSigning, the CA's
index file): a phone whose certificate names the responder (Authority Information Access)
connects over mutual TLS and registers (digest, 200); a revoked one is refused and logged with
its subject and serial; with the responder stopped, a phone the gateway has not asked about yet
is refused (hard-fail) while the registered phone's cached answer still lets it in again.

``openssl ocsp -port`` (OpenSSL 3.0) listens on every address, so openssl answers through
:class:`OcspFront` instead: an HTTP/1.0 front on 127.0.0.1 that runs ``openssl ocsp -reqin
-respout`` per request; "stopping the responder" closes the front."""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path

import pytest

from tests.conftest import require_peer
from tests.interop.harness.ocsp_front import OcspFront
from tests.interop.harness.pki import Issued, TestPki
from tests.interop.harness.ports import LOOPBACK
from tests.interop.harness.processes import tail
from tests.interop.harness.tls_gateway import TlsGatewayProcess
from tests.interop.harness.ws_client import digest_authorization

pytestmark = pytest.mark.interop

PASSWORD = "ocsp-phone-secret"


def register(port: int, phone: Issued, trust: Path, user: str) -> str:
    """REGISTER ``user`` over mutual TLS with ``phone``'s certificate, answering the digest
    challenge; the final status line, or ``"refused"`` when the gateway closed the connection."""
    context = ssl.create_default_context(cafile=str(trust))
    context.check_hostname = False
    context.load_cert_chain(phone.certificate, phone.key)
    try:
        with (
            socket.create_connection((LOOPBACK, port), timeout=10) as raw,
            context.wrap_socket(raw) as tls,
        ):
            local = f"{LOOPBACK}:{tls.getsockname()[1]}"

            def request(cseq: int, authorization: str | None) -> str:
                uri = f"sip:{LOOPBACK}:{port}"
                lines = [
                    f"REGISTER {uri} SIP/2.0",
                    f"Via: SIP/2.0/TLS {local};branch=z9hG4bKocsp{cseq};rport",
                    "Max-Forwards: 70",
                    f"From: <sip:{user}@{LOOPBACK}:{port}>;tag=ocsp{cseq}",
                    f"To: <sip:{user}@{LOOPBACK}:{port}>",
                    f"Call-ID: ocsp-{user}@{LOOPBACK}",
                    f"CSeq: {cseq} REGISTER",
                    f"Contact: <sip:{user}@{local};transport=tls>",
                    "Expires: 300",
                ]
                if authorization is not None:
                    lines.append(f"Authorization: {authorization}")
                tls.sendall(("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode())
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = tls.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed")
                    data += chunk
                return data.decode(errors="replace")

            first = request(1, None)
            match = re.search(r"^WWW-Authenticate: (.*)$", first, re.MULTILINE)
            assert match is not None, first
            answer = digest_authorization(
                match[1].strip(),
                method="REGISTER",
                uri=f"sip:{LOOPBACK}:{port}",
                user=user,
                password=PASSWORD,
            )
            return request(2, answer).split("\r\n", 1)[0]
    except (ConnectionError, ssl.SSLError, OSError):
        return "refused"


def test_openssl_ocsp_responder_good_revoked_and_stopped(tmp_path: Path) -> None:
    openssl = require_peer("openssl")
    pki = TestPki(tmp_path / "pki")
    ca = pki.ca("Phone Vendor Factory CA")
    signer = ca.responder("Phone Vendor OCSP")
    server = ca.issue("voipgw", hosts=["127.0.0.1"])
    index_path = tmp_path / "index.txt"
    front = OcspFront(openssl, index=index_path, ca=ca.certificate, signer=signer, workdir=tmp_path)
    url = front.url
    try:
        good = ca.issue("0004f2000001", hosts=[], ocsp_url=url)
        stolen = ca.issue("0004f2000002", hosts=[], ocsp_url=url)
        later = ca.issue("0004f2000003", hosts=[], ocsp_url=url)
        ca.ocsp_index(index_path, good=[good, later], revoked=[stolen])
        tls = {
            "mode": "mutual",
            "certificate": str(server.certificate),
            "private_key": str(server.key),
            "ca_bundles": [str(ca.certificate)],
            "ocsp": "hard-fail",
            "ocsp_timeout": 2.0,
        }
        accounts = {"alice": PASSWORD, "bob": PASSWORD, "carol": PASSWORD}
        with TlsGatewayProcess(
            tmp_path / "gw",
            tls=tls,
            accounts=accounts,
            digest_algorithms=("MD5",),
            # A revoked certificate refused, and the responder stopped, on purpose.
            allowed_warnings=[
                r"refused \(mutual mode\): certificate revoked \(OCSP\)",
                r"OCSP responder \S+ is failing",
            ],
        ) as gateway:
            port = gateway.tls_port
            assert register(port, good, ca.certificate, "alice") == "SIP/2.0 200 OK"
            assert register(port, stolen, ca.certificate, "bob") == "refused"
            gateway.wait_for_log(
                r"tls: connection from 127\.0\.0\.1:\d+ refused \(mutual mode\): certificate "
                rf"revoked \(OCSP\); peer certificate: CN=0004f2000002, serial "
                rf"{stolen.x509.serial_number:X}"
            )
            # openssl answered both (not some other responder).
            assert front.requests == 2

            front.close()
            # Not asked about before, no responder: hard-fail refuses.
            assert register(port, later, ca.certificate, "carol") == "refused"
            # Logged per responder (one line however many phones), not per connection.
            gateway.wait_for_log(
                rf"OCSP responder {re.escape(url)} is failing: "
                rf"no connection to the responder {re.escape(url)}"
            )
            # The phone registered before: its answer is cached until its nextUpdate.
            assert register(port, good, ca.certificate, "alice") == "SIP/2.0 200 OK"
    except BaseException:
        print(f"--- openssl ocsp ({front.log}) ---\n{tail(front.log, 40)}")
        raise
    finally:
        front.close()
