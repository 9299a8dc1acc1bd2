"""The OPTIONS request of the openssl TLS tests: moved here from test_tls_openssl.py so that no
test module imports another."""

from __future__ import annotations

from tests.interop.harness.ports import LOOPBACK


def options_request(port: int) -> bytes:
    return (
        f"OPTIONS sip:{LOOPBACK}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {LOOPBACK}:5999;branch=z9hG4bKsclient;rport\r\n"
        f"From: <sip:probe@{LOOPBACK}>;tag=s1\r\nTo: <sip:{LOOPBACK}:{port}>\r\n"
        f"Call-ID: s_client@{LOOPBACK}\r\nCSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
