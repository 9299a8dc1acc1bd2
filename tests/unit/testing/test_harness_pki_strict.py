"""What the test CAs issue (tests/interop/harness/pki.py) verifies under OpenSSL's X509_STRICT.

Python 3.13's ``ssl.create_default_context`` sets ``VERIFY_X509_STRICT``; 3.11's does not. A
test PKI that only 3.11 accepts made 48 tests fail on Debian 13 with CERTIFICATE_VERIFY_FAILED
(its issued certificates had no authorityKeyIdentifier, RFC 5280 §4.2.1.1). Setting the flag
here keeps the suite meaning the same on both, whichever interpreter CI runs.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from tests.interop.harness.pki import Issued, TestPki


def _client_error(client: ssl.SSLContext, server: ssl.SSLContext) -> ssl.SSLError | None:
    """What the client's side of a handshake over memory BIOs raises; None once both sides
    finished."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    ours = client.wrap_bio(to_client, to_server, server_hostname="localhost")
    theirs = server.wrap_bio(to_server, to_client, server_side=True)
    finished: set[ssl.SSLObject] = set()
    for _ in range(10):
        for side in (ours, theirs):
            try:
                side.do_handshake()
                finished.add(side)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                if side is ours:
                    return exc
        if len(finished) == 2:
            return None
    raise AssertionError("the handshake neither finished nor failed")


def _strict_client(ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def _server(issued: Issued) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.certificate, issued.key)
    return context


def test_a_certificate_the_test_ca_issued_verifies_strictly(tmp_path: Path) -> None:
    ca = TestPki(tmp_path).ca("Strict CA")
    assert _client_error(_strict_client(ca.certificate), _server(ca.issue("server"))) is None


def test_a_strict_client_still_refuses_another_cas_certificate(tmp_path: Path) -> None:
    # The check above can fail: the same handshake against a CA that did not issue it.
    pki = TestPki(tmp_path)
    ca, other = pki.ca("Strict CA"), pki.ca("Other CA")
    error = _client_error(_strict_client(other.certificate), _server(ca.issue("server")))
    assert isinstance(error, ssl.SSLCertVerificationError)
    assert error.verify_message == "unable to get local issuer certificate"
