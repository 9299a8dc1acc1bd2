"""What the built-in plugins' own clients say when a fetch fails (the stir_shaken certificate and
CRL fetcher, the TLS transport's OCSP queries and CRL fetches, the intercept tap's reports to the
ADMF and its delivery links): what failed, in the gateway's words, and why in the words of the
operating system and OpenSSL only (logs.system_error_text: the errno's name and text, OpenSSL's
reason and verify text), never the socket error's own text (a library's may name a URL) and never
a password a URL holds.

Each socket here raises an exception whose text is a secret: none may reach what is said."""

from __future__ import annotations

import errno
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.logs import system_error_text
from gateway.plugins.stir_shaken import StirShakenConfig
from gateway.plugins.stir_shaken.fetch import FetchError, https_fetcher
from gateway.plugins.taps.intercept import delivery
from gateway.plugins.transports import ocsp
from gateway.plugins.transports.certificates import CertificateError
from gateway.plugins.transports.ocsp import OcspError, failure_text, http_get, post_ocsp

SECRET = "s3cret-in-the-socket-error"
PASSWORD = "pw-in-the-url"


def refused(*args: Any, **kwargs: Any) -> Any:
    raise ConnectionRefusedError(errno.ECONNREFUSED, SECRET)


def expired_certificate() -> trio.BrokenResourceError:
    """What trio's SSLStream raises when the server's certificate has expired."""
    cause = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {SECRET}")
    cause.reason = "CERTIFICATE_VERIFY_FAILED"
    cause.verify_code = 10
    cause.verify_message = SECRET
    try:
        raise trio.BrokenResourceError(SECRET) from cause
    except trio.BrokenResourceError as exc:
        return exc


def all_attempts_failed() -> OSError:
    """trio.open_tcp_stream's: no errno, raised from each address's OSError."""
    group = ExceptionGroup(SECRET, [ConnectionRefusedError(errno.ECONNREFUSED, SECRET)])
    try:
        raise OSError(f"all attempts to connect to {SECRET} failed") from group
    except OSError as exc:
        return exc


def test_system_error_text_says_only_what_the_system_says() -> None:
    assert system_error_text(ConnectionRefusedError(errno.ECONNREFUSED, SECRET)) == (
        "ECONNREFUSED (Connection refused)"
    )
    assert system_error_text(expired_certificate()) == (
        "trio.BrokenResourceError (SSLError CERTIFICATE_VERIFY_FAILED (certificate has expired))"
    )
    assert system_error_text(all_attempts_failed()) == "OSError (ECONNREFUSED (Connection refused))"
    assert system_error_text(OSError(SECRET)) == "OSError"
    assert system_error_text(trio.TooSlowError(SECRET)) == "trio.TooSlowError"


async def test_a_certificate_fetch_that_cannot_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trio, "open_ssl_over_tcp_stream", refused)
    fetch = https_fetcher(ssl.create_default_context())
    with pytest.raises(FetchError) as raised:
        await fetch(f"https://user:{PASSWORD}@certs.example.net:8443/sp.pem")
    assert str(raised.value) == (
        "cannot connect to certs.example.net:8443: ECONNREFUSED (Connection refused)"
    )


class _Stream(trio.abc.Stream):
    """A TLS stream whose handshake (made by the first send) fails: an expired certificate."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        raise expired_certificate()

    async def wait_send_all_might_not_block(self) -> None:  # pragma: no cover
        pass

    async def receive_some(self, max_bytes: int | None = None) -> bytes:  # pragma: no cover
        return b""

    async def aclose(self) -> None:
        pass


async def test_a_certificate_fetch_whose_tls_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    async def connected(*args: Any, **kwargs: Any) -> _Stream:
        return _Stream()

    monkeypatch.setattr(trio, "open_ssl_over_tcp_stream", connected)
    fetch = https_fetcher(ssl.create_default_context())
    with pytest.raises(FetchError) as raised:
        await fetch(f"https://user:{PASSWORD}@[2001:db8::1]/sp.pem")
    assert str(raised.value) == (
        "connection to [2001:db8::1]:443 failed: trio.BrokenResourceError (SSLError "
        "CERTIFICATE_VERIFY_FAILED (certificate has expired))"
    )


@pytest.mark.parametrize("what", ["ocsp", "crl"])
async def test_an_ocsp_query_or_crl_fetch_that_cannot_connect(
    monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    async def attempts_failed(*args: Any, **kwargs: Any) -> Any:
        raise all_attempts_failed()

    monkeypatch.setattr(trio, "open_tcp_stream", attempts_failed)
    url = "http://ocsp.example.net:8080/q"
    with pytest.raises(OcspError) as raised:
        if what == "ocsp":
            await post_ocsp(url, b"request")
        else:
            await http_get(url, max_size=1000, peer="the CRL server")
    peer = "the responder" if what == "ocsp" else "the CRL server"
    assert str(raised.value) == (
        f"no connection to {peer} {url} (OSError (ECONNREFUSED (Connection refused)))"
    )


def test_a_failed_query_or_fetch_is_said_in_the_systems_words() -> None:
    # An injected fetcher's socket error, as a verdict's reason or the CRL fetcher's line.
    assert failure_text(ConnectionResetError(errno.ECONNRESET, SECRET)) == (
        "ECONNRESET (Connection reset by peer)"
    )
    assert failure_text(expired_certificate()).endswith("(certificate has expired))")
    assert failure_text(OcspError("the responder answered HTTP 503")) == (
        "the responder answered HTTP 503"
    )
    assert failure_text(ValueError("")) == "ValueError"
    # A CRL refused (CertificateError, an OSError): our own words, as they are.
    refused_crl = CertificateError("the CRL of CN=Other CA is older than the one in use")
    assert failure_text(refused_crl) == "the CRL of CN=Other CA is older than the one in use"
    assert ocsp.failure_text is failure_text


def test_an_intercept_link_says_why_in_the_systems_words() -> None:
    assert delivery._why(ConnectionRefusedError(errno.ECONNREFUSED, SECRET), "slow") == (
        "ECONNREFUSED (Connection refused)"
    )
    assert delivery._why(expired_certificate(), "slow").endswith("(certificate has expired))")
    assert delivery._why(trio.TooSlowError(SECRET), "no connection within 10 s") == (
        "no connection within 10 s"
    )
    assert delivery._why(delivery.PduError("no keepalive acknowledgement"), "slow") == (
        "no keepalive acknowledgement"
    )


class _Answering(_Stream):
    """A TLS stream whose server answers bytes that are not HTTP, with a secret in them."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        pass

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return f"SSH-2.0-{SECRET}\r\n\r\n".encode()


async def test_a_certificate_server_whose_answer_is_not_http(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def connected(*args: Any, **kwargs: Any) -> _Stream:
        return _Answering()

    monkeypatch.setattr(trio, "open_ssl_over_tcp_stream", connected)
    fetch = https_fetcher(ssl.create_default_context())
    with pytest.raises(FetchError) as raised:
        await fetch("https://certs.example.net/sp.pem")
    # Our words, not h11's ("illegal status line: bytearray(b'SSH-2.0-...')"): its text
    # quotes the server's bytes.
    assert str(raised.value) == "bad HTTP answer (not HTTP/1.1, or headers over 16384 bytes)"


class _CutShort(_Stream):
    """A TLS stream whose server closes the connection 5 bytes into a 100-byte answer."""

    def __init__(self) -> None:
        self.answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n-----", b""]

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        pass

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return self.answers.pop(0) if self.answers else b""


async def test_a_certificate_answer_cut_short_is_said_so(monkeypatch: pytest.MonkeyPatch) -> None:
    async def connected(*args: Any, **kwargs: Any) -> _Stream:
        return _CutShort()

    monkeypatch.setattr(trio, "open_ssl_over_tcp_stream", connected)
    fetch = https_fetcher(ssl.create_default_context())
    with pytest.raises(FetchError) as raised:
        await fetch("https://certs.example.net/sp.pem")
    # Not "bad HTTP answer (not HTTP/1.1, or headers over ...)": its HTTP was good, it ended.
    assert str(raised.value) == "connection closed before the end of the answer"


def test_a_fetch_ca_file_that_cannot_be_used_is_said_in_the_systems_words(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(ValueError) as raised:
        StirShakenConfig(fetch_ca_file=str(missing)).fetch_context()
    assert str(raised.value) == (
        f"fetch_ca_file: cannot use {missing}: ENOENT (No such file or directory)"
    )
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(ValueError) as raised:
        StirShakenConfig(fetch_ca_file=str(not_pem)).fetch_context()
    assert str(raised.value).endswith(": SSLError NO_CERTIFICATE_OR_CRL_FOUND")


def test_an_mdf_that_closes_its_delivery_connection_is_said_so() -> None:
    assert delivery._why(delivery._ClosedByMdf(), "slow") == "the MDF closed the connection"
