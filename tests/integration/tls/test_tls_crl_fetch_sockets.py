"""``[plugins.tls] crl_distribution_points`` on real sockets on 127.0.0.1, the gateway in this
process: an HTTP server in a thread here serves the vendor CA's CRL (made by the test PKI) at
the URL the phones' certificates name as their CRL Distribution Point. The first phone's
handshake teaches the gateway the URL; it fetches the CRL (which revokes nothing yet) and
saves it; the operator revokes the connected phone in a newly published CRL, and at the next
refresh (3/4 of the first CRL's 4 s validity) its connection is closed, a good phone's stays,
and a new connection with the revoked certificate is refused. With `crl_urls`, a SIGHUP fetches
the CRL at once and closes the phone it revokes."""

from __future__ import annotations

import datetime
import http.server
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from gateway.core.cli import main
from gateway.core.transport.flows import format_address
from gateway.plugins.transports.crl_fetch import MAX_CRL_SIZE
from gateway.plugins.transports.ocsp import OcspError, http_get
from tests.integration.tls.tls_peers import (
    LOOPBACK,
    TLS_LOG,
    client_context,
    closed_by_the_gateway,
    connect,
    options_over,
    refused,
    running_gateway,
    tls_port,
    tls_transport,
)
from tests.interop.harness.pki import TestPki


class CrlServer:
    """Serves ``body`` at every path (HTTP/1.0, 127.0.0.1 only); counts the GETs."""

    def __init__(self) -> None:
        self.body = b""
        self.gets = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.gets += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.http = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self.http.server_address[1]}/vendor.crl"


@contextmanager
def serving(server: CrlServer) -> Iterator[CrlServer]:
    thread = threading.Thread(target=server.http.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.http.shutdown()
        server.http.server_close()
        thread.join(timeout=5)


async def test_a_phone_revoked_in_a_newly_served_crl_is_closed_at_the_next_refresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    pki = TestPki(tmp_path / "pki")
    vendor = pki.ca("Phone Vendor Factory CA")
    server = CrlServer()
    good = vendor.issue("0004f2000001", hosts=[], crl_url=server.url)
    stolen = vendor.issue("0004f2000002", hosts=[], crl_url=server.url)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    # Valid 4 s: refreshed 3 s after its thisUpdate.
    first = vendor.crl(
        tmp_path / "v1.crl", this_update=now, next_update=datetime.timedelta(seconds=4), number=1
    )
    server.body = first.read_bytes()
    tls = {
        "mode": "mutual",
        "ca_bundles": [str(vendor.certificate)],
        "crl_distribution_points": True,
    }
    state = tmp_path / "state"
    with serving(server):
        async with running_gateway(state, tls) as gateway:
            port = tls_port(gateway)
            transport = tls_transport(gateway)
            assert transport.loaded_crls() == ()  # nothing learned yet
            phone = await connect(port, client_context(certificate=stolen))
            other = await connect(port, client_context(certificate=good))
            try:
                assert (await options_over(phone)).status == 200
                assert (await options_over(other)).status == 200
                with trio.fail_after(5):
                    while not transport.loaded_crls():
                        await trio.sleep(0.05)
                (crl,) = transport.loaded_crls()
                assert (crl.path, crl.number, crl.revoked) == (server.url, 1, 0)
                assert len(list((state / "tls" / "crls").glob("*.crl"))) == 1
                stolen_flow = next(
                    flow
                    for flow in gateway.flows
                    if flow.peer_certificate is not None
                    and flow.peer_certificate.subject == "CN=0004f2000002"
                )

                # The handset is reported stolen: the CA publishes a new CRL.
                second = vendor.crl(tmp_path / "v2.crl", revoked=[stolen], number=2)
                server.body = second.read_bytes()
                assert await closed_by_the_gateway(phone)
                assert stolen_flow.closed
                assert [c.number for c in transport.loaded_crls()] == [2]
                assert transport.connections_revoked == 1
                assert (await options_over(other)).status == 200  # not revoked: stays
                assert await refused(port, client_context(certificate=stolen))
                assert server.gets >= 2
            finally:
                await trio.aclose_forcefully(phone)
                await trio.aclose_forcefully(other)
    assert any(
        r.name == TLS_LOG
        and r.getMessage()
        == f"tls: closing the connection with {format_address(stolen_flow.remote)}: its "
        f"certificate is revoked by a fetched CRL; peer certificate: CN=0004f2000002, "
        f"serial {stolen.x509.serial_number:X}"
        for r in caplog.records
    )
    assert any(
        r.getMessage()
        == f"tls: fetching the CRL of CN=Phone Vendor Factory CA from {server.url} (its "
        "certificates' distribution point)"
        for r in caplog.records
    )


async def test_sighup_fetches_the_crl_now_and_closes_the_phone_it_revokes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A week-long CRL (next fetch in 5 days): the operator revokes a phone at the CA, the CA
    # publishes, the operator sends SIGHUP; the gateway fetches at once.
    caplog.set_level(logging.INFO)
    pki = TestPki(tmp_path / "pki")
    vendor = pki.ca("Phone Vendor Factory CA")
    server = CrlServer()
    stolen = vendor.issue("0004f2000002", hosts=[], crl_url=server.url)
    server.body = vendor.crl(tmp_path / "v1.crl", number=1).read_bytes()
    tls = {"mode": "mutual", "ca_bundles": [str(vendor.certificate)], "crl_urls": [server.url]}
    with serving(server):
        async with running_gateway(tmp_path / "state", tls) as gateway:
            port = tls_port(gateway)
            transport = tls_transport(gateway)
            with trio.fail_after(5):
                while not transport.loaded_crls():
                    await trio.sleep(0.05)
            phone = await connect(port, client_context(certificate=stolen))
            try:
                assert (await options_over(phone)).status == 200
                server.body = vendor.crl(
                    tmp_path / "v2.crl", revoked=[stolen], number=2
                ).read_bytes()
                (report,) = gateway.reload_certificates()  # what SIGHUP runs
                assert report.outcome == "reloaded"
                assert await closed_by_the_gateway(phone)
                assert [c.number for c in transport.loaded_crls()] == [2]
                assert server.gets == 2
            finally:
                await trio.aclose_forcefully(phone)
    assert "tls: reload: fetching 1 CRL(s) again now" in caplog.text


async def test_the_http_client_reads_a_large_crl_in_many_reads_within_its_bound() -> None:
    server = CrlServer()
    server.body = bytes(range(256)) * 4096 * 3  # 3 MiB: many reads
    with serving(server):
        assert await http_get(server.url, max_size=MAX_CRL_SIZE, peer="the CRL server") == (
            server.body
        )
        with pytest.raises(OcspError, match="the CRL server sent more than 1048576 bytes"):
            await http_get(server.url, max_size=1 << 20, peer="the CRL server")
    with pytest.raises(OcspError, match=r"no connection to the CRL server http://127\.0\.0\.1:"):
        await http_get(server.url, max_size=MAX_CRL_SIZE, peer="the CRL server")


def test_check_config_fetches_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = TestPki(tmp_path / "pki")
    vendor = pki.ca("Phone Vendor Factory CA")
    server = CrlServer()
    own = vendor.issue("voipgw", hosts=["127.0.0.1"], crl_url=server.url)
    server.body = vendor.crl(tmp_path / "v1.crl").read_bytes()
    config = tmp_path / "voipgw.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[sip]\nlisten = ["tls:127.0.0.1:5061"]\n'
        f'[plugins]\nenable = ["udp", "tls"]\n'
        f'[plugins.tls]\nca_bundles = ["{vendor.certificate}"]\n'
        f'certificate = "{own.certificate}"\nprivate_key = "{own.key}"\n'
        f'crl_urls = ["{server.url}"]\ncrl_distribution_points = true\n'
    )
    with serving(server):
        assert main(["check-config", str(config)]) == 0, capsys.readouterr().err
    assert server.gets == 0
    assert not (tmp_path / "state" / "tls" / "crls").exists()
