"""The x5u fetcher of the stir_shaken plugin (h11 over trio's TLS stream) against a real HTTPS
server on 127.0.0.1: a certificate chain and its max-age, and the refusals: an HTTP error, a
body past the bound, a server certificate the trust store does not vouch for, a URL that is
not https."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.plugins.stir_shaken.fetch import MAX_BODY, FetchError, https_fetcher
from gateway.testing.sti_pki import make_pki
from tests.interop.harness.certificate_server import certificate_server


async def test_fetches_the_chain_with_its_max_age(tmp_path: Path) -> None:
    chain = make_pki().chain_pem()
    with certificate_server(chain, tmp_path) as (url, https_ca, requests):
        fetch = https_fetcher(ssl.create_default_context(cafile=str(https_ca)))
        fetched = await fetch(url)
        with pytest.raises(FetchError, match="HTTP 404"):
            await fetch(url.replace("/shaken.pem", "/missing.pem"))
    assert fetched.body == chain
    assert fetched.max_age == 600
    assert requests == ["/shaken.pem", "/missing.pem"]


async def test_refuses_large_bodies_unknown_servers_and_plain_http(tmp_path: Path) -> None:
    with certificate_server(b"x" * (MAX_BODY + 1), tmp_path) as (url, https_ca, _):
        trusting = https_fetcher(ssl.create_default_context(cafile=str(https_ca)))
        with pytest.raises(FetchError, match="too large"):
            await trusting(url)
        # The system's trust store knows nothing of the test CA: said in OpenSSL's words.
        with pytest.raises(FetchError) as refused:
            await https_fetcher(ssl.create_default_context())(url)
        where = urlsplit(url).netloc
        assert str(refused.value) == (
            f"connection to {where} failed: trio.BrokenResourceError (SSLError "
            "CERTIFICATE_VERIFY_FAILED (unable to get local issuer certificate))"
        )
        with pytest.raises(FetchError, match="only https"):
            await trusting(url.replace("https://", "http://"))


async def test_a_server_nobody_listens_at_is_said_in_the_systems_words() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    fetch = https_fetcher(ssl.create_default_context())
    with pytest.raises(FetchError) as refused:
        await fetch(f"https://user:pw-in-the-url@127.0.0.1:{port}/sp.pem")
    assert str(refused.value) == (
        f"cannot connect to 127.0.0.1:{port}: OSError (ECONNREFUSED (Connection refused))"
    )
