"""TlsStream passes trio's generic stream conformance checks (trio.testing.check_two_way_stream),
over in-memory transports, with TLS 1.3 and with TLS 1.2."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from OpenSSL import SSL

from gateway.plugins.transports.certificates import CertificatePaths
from gateway.plugins.transports.tls import TlsStream, client_context, server_context
from tests.interop.harness.pki import TestPki

Transports = Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]
Maker = Callable[[], Awaitable[tuple[TlsStream, TlsStream]]]


@pytest.fixture(scope="module")
def pki_files(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[CertificatePaths, CertificatePaths, Path]:
    pki = TestPki(tmp_path_factory.mktemp("pki"))
    ca = pki.ca("Stream CA")
    server = ca.issue("server")
    client = ca.issue("client")
    return (
        CertificatePaths(server.certificate, server.key),
        CertificatePaths(client.certificate, client.key),
        ca.certificate,
    )


def contexts(
    files: tuple[CertificatePaths, CertificatePaths, Path], max_version: int
) -> tuple[SSL.Context, SSL.Context]:
    server, client, ca = files
    client_ctx = client_context(
        "mutual", verify=True, ca_bundles=(ca,), system_cas=False, paths=client
    )
    client_ctx.set_max_proto_version(max_version)
    return server_context(server, "mutual", (ca,)), client_ctx


def maker(pair: tuple[SSL.Context, SSL.Context], transports: Transports) -> Maker:
    async def make() -> tuple[TlsStream, TlsStream]:
        client_transport, server_transport = transports()
        client = TlsStream(client_transport, SSL.Connection(pair[1], None), server_side=False)
        server = TlsStream(server_transport, SSL.Connection(pair[0], None), server_side=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.do_handshake)
            nursery.start_soon(server.do_handshake)
        return client, server

    return make


@pytest.mark.parametrize(
    ("max_version", "version_name"),
    [(SSL.TLS1_3_VERSION, "TLSv1.3"), (SSL.TLS1_2_VERSION, "TLSv1.2")],
)
async def test_tls_stream_conformance(
    pki_files: tuple[CertificatePaths, CertificatePaths, Path], max_version: int, version_name: str
) -> None:
    pair = contexts(pki_files, max_version)
    client, server = await maker(pair, trio.testing.memory_stream_pair)()
    assert client.connection.get_protocol_version_name() == version_name
    await client.aclose()
    await server.aclose()
    await trio.testing.check_two_way_stream(
        maker(pair, trio.testing.memory_stream_pair),
        # lockstep: send_all blocks until the peer receives, the harshest transport there is.
        maker(pair, trio.testing.lockstep_stream_pair),
    )
