"""The metrics server with TLS and basic auth, over real loopback sockets (port 0), scraped by
trio.SSLStream clients:

- with basic auth every request without valid credentials gets 401 and the challenge, whatever
  its path or method; failures are counted by reason and logged without the password, and a
  verified pair is not verified again (scrypt once, then the cache);
- with a client CA a client without a certificate, or with one another CA issued, fails the
  handshake, counted and logged; one the CA issued is served;
- TLS 1.1 and plain HTTP on the TLS port are refused;
- a handshake that stalls is cut off like a silent client and gives way when every
  connection is taken.

The auth tests run in real time: scrypt runs in a worker thread, which virtual time would jump
over.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
import trio

from gateway.core.logs import WITHHELD
from gateway.plugins.metrics.auth import BasicAuth, PasswordHash
from gateway.plugins.metrics.server import HEAD_TIMEOUT, MAX_CONNECTIONS, MetricsServer
from gateway.plugins.metrics.tls import server_context
from tests.interop.harness.pki import Issued, TestCa, TestPki

BODY = b"# TYPE up gauge\nup 1\n"
LOG = "gateway.plugins.metrics.server"
PASSWORD = "sc-rape!pässword"


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki")


@pytest.fixture
def ca(pki: TestPki) -> TestCa:
    return pki.ca("Metrics CA")


@pytest.fixture
def cert(ca: TestCa) -> Issued:
    return ca.issue("gateway", hosts=["127.0.0.1"])


async def start(
    nursery: trio.Nursery,
    cert: Issued,
    *,
    client_ca: Path | None = None,
    auth: BasicAuth | None = None,
) -> MetricsServer:
    context = server_context(
        str(cert.certificate), str(cert.key), None if client_ca is None else str(client_ca)
    )

    async def render() -> bytes:
        return BODY

    server = MetricsServer(
        render, path="/metrics", server="voipgw/test", ssl_context=context, auth=auth
    )
    await nursery.start(server.serve, "127.0.0.1", 0)
    return server


def client(ca: TestCa, certificate: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.certificate))
    if certificate is not None:
        context.load_cert_chain(certificate.certificate, certificate.key)
    return context


async def https(server: MetricsServer, context: ssl.SSLContext, request: bytes) -> bytes:
    """``request`` over a new TLS connection; all the server answers until it closes."""
    assert server.address is not None
    tcp = await trio.open_tcp_stream(*server.address)
    tls = trio.SSLStream(tcp, context, server_hostname="127.0.0.1", https_compatible=True)
    try:
        await tls.send_all(request)
        answer = b""
        while chunk := await tls.receive_some(65536):
            answer += chunk
        return answer
    finally:
        await trio.aclose_forcefully(tls)


async def refused(server: MetricsServer, context: ssl.SSLContext) -> bool:
    """Whether the handshake fails: at once, or (TLS 1.3, where the client finishes first) at
    the client's first read, with an alert or the connection closed and no answer."""
    try:
        answer = await https(server, context, get())
    except trio.BrokenResourceError:
        return True
    return answer == b""


def get(path: bytes = b"/metrics", *headers: bytes, method: bytes = b"GET") -> bytes:
    return b"\r\n".join([method + b" " + path + b" HTTP/1.1", b"Host: gw", *headers, b"", b""])


def basic(user: str, password: str) -> bytes:
    import base64

    return b"Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode())


async def test_only_valid_credentials_get_the_exposition_and_scrypt_runs_once(
    nursery: trio.Nursery, ca: TestCa, cert: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    auth = BasicAuth({"prometheus": PasswordHash.make(PASSWORD, n=2**10, r=1)})
    verified: list[str] = []
    slow_check = auth.matches

    def counting(user: str, password: str) -> bool:
        verified.append(user)
        return slow_check(user, password)

    auth.matches = counting  # type: ignore[method-assign]
    server = await start(nursery, cert, auth=auth)
    context = client(ca)

    refusals = [
        get(),  # no credentials
        get(b"/other"),  # not even a 404 without credentials
        get(method=b"POST"),  # nor a 405
        get(b"/metrics", b"Authorization: Basic !!!"),  # malformed
        get(b"/metrics", b"Authorization: Bearer abc"),  # malformed: not Basic
        get(b"/metrics", basic("prometheus", "wrong-password")),  # invalid
        get(b"/metrics", basic("mallory", PASSWORD)),  # invalid: unknown user
    ]
    for request in refusals:
        answer = await https(server, context, request)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401 "), answer
        assert b'\r\nwww-authenticate: Basic realm="voipgw metrics", charset="UTF-8"' in head
        assert body == b"Unauthorized\n"
    assert dict(server.auth_failures) == {"missing": 3, "malformed": 2, "invalid": 2}
    assert verified == ["prometheus", "mallory"]  # an unknown user pays scrypt too

    for _ in range(3):
        answer = await https(server, context, get(b"/metrics", basic("prometheus", PASSWORD)))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), answer
        assert body == BODY
    assert verified == ["prometheus", "mallory", "prometheus"]  # then the cache
    assert server.scrapes == 3
    answer = await https(server, context, get(b"/other", basic("prometheus", PASSWORD)))
    assert answer.startswith(b"HTTP/1.1 404 ")  # with credentials, paths are answered

    # One line for the burst (a minute apart at most), and never a password.
    lines = [r.getMessage() for r in caplog.records if "refused a scrape" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("metrics: refused a scrape from 127.0.0.1:")
    assert lines[0].endswith(": no credentials")
    text = caplog.text
    assert PASSWORD not in text and "wrong-password" not in text and "mallory" not in text


async def test_a_wrong_password_is_logged_with_its_user_and_without_the_password(
    nursery: trio.Nursery, ca: TestCa, cert: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    auth = BasicAuth({"prometheus": PasswordHash.make(PASSWORD, n=2**10, r=1)})
    server = await start(nursery, cert, auth=auth)
    answer = await https(server, client(ca), get(b"/metrics", basic("prometheus", "guess")))
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert "wrong password for user 'prometheus'" in caplog.text
    assert "guess" not in caplog.text and auth.users["prometheus"].encode() not in caplog.text


async def test_a_failed_password_check_is_logged_without_the_exceptions_text(
    nursery: trio.Nursery, ca: TestCa, cert: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    # A bug in the check whose exception quotes what it was checking: its type and frames are
    # logged (log_exception), not its text, which here is the password tried.
    caplog.set_level(logging.INFO, logger=LOG)
    auth = BasicAuth({"prometheus": PasswordHash.make(PASSWORD, n=2**10, r=1)})

    def broken(user: str, password: str) -> bool:
        raise ValueError(f"cannot check {password!r}")

    auth.matches = broken  # type: ignore[method-assign]
    server = await start(nursery, cert, auth=auth)
    answer = await https(server, client(ca), get(b"/metrics", basic("prometheus", PASSWORD)))
    assert answer.startswith(b"HTTP/1.1 401 ")
    (record,) = [
        r for r in caplog.records if r.getMessage() == "metrics: checking a password failed"
    ]
    assert record.exc_info is None and f"ValueError: {WITHHELD}" in (record.exc_text or "")
    assert ", in broken" in (record.exc_text or "")
    assert PASSWORD not in caplog.text


async def test_mutual_tls_serves_only_certificates_the_client_ca_issued(
    nursery: trio.Nursery,
    pki: TestPki,
    ca: TestCa,
    cert: Issued,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    clients = pki.ca("Prometheus clients CA")
    server = await start(nursery, cert, client_ca=clients.certificate)

    answer = await https(server, client(ca, clients.issue("prometheus")), get())
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(BODY)

    for certificate in (None, ca.issue("not-a-client"), pki.self_signed("rogue")):
        assert await refused(server, client(ca, certificate))
    assert server.tls_handshake_failures == 3
    assert server.scrapes == 1
    reasons = [r.getMessage() for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert len(reasons) == 3
    assert "peer did not return a certificate" in reasons[0]
    assert "certificate verify failed" in reasons[1] and "certificate verify failed" in reasons[2]


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tls_1_1_and_plain_http_are_refused(
    nursery: trio.Nursery, ca: TestCa, cert: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    server = await start(nursery, cert)
    old = client(ca)
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client really offer TLS 1.1
    assert await refused(server, old)

    assert server.address is not None
    plain = await trio.open_tcp_stream(*server.address)
    async with plain:
        await plain.send_all(get())
        answer = b""
        while chunk := await plain.receive_some(65536):
            answer += chunk
    assert b"HTTP/1.1" not in answer and BODY not in answer

    assert server.tls_handshake_failures == 2
    assert "failed: unsupported protocol" in caplog.text
    assert "failed: http request" in caplog.text
    # A modern client is still served.
    assert (await https(server, client(ca), get())).startswith(b"HTTP/1.1 200 ")


async def test_a_stalled_handshake_is_cut_off_like_a_silent_client(
    nursery: trio.Nursery, ca: TestCa, cert: Issued, autojump_clock: trio.abc.Clock
) -> None:
    server = await start(nursery, cert)
    assert server.address is not None
    silent = await trio.open_tcp_stream(*server.address)
    async with silent:
        await silent.send_all(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        started = trio.current_time()
        with trio.fail_after(10):
            assert await silent.receive_some(100) == b""
        assert HEAD_TIMEOUT - 0.1 <= trio.current_time() - started <= HEAD_TIMEOUT + 0.1
    assert server.scrapes == 0


async def test_handshakes_that_stall_give_way_to_a_scrape(
    nursery: trio.Nursery, ca: TestCa, cert: Issued
) -> None:
    server = await start(nursery, cert)
    assert server.address is not None
    held = [await trio.open_tcp_stream(*server.address) for _ in range(MAX_CONNECTIONS)]
    with trio.fail_after(HEAD_TIMEOUT / 2):  # not by waiting for their head timeouts
        while len(server._reading_heads) < MAX_CONNECTIONS:
            await trio.sleep(0.01)
        answer = await https(server, client(ca), get())
    assert answer.startswith(b"HTTP/1.1 200 ")
    with trio.fail_after(HEAD_TIMEOUT / 2):
        assert await held[0].receive_some(100) == b""  # the oldest gave way: closed
    for stream in held:
        await stream.aclose()
