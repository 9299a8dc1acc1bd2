"""An HTTPS server on 127.0.0.1 serving certificate chains and CRLs, as an STI certificate
repository (the x5u URL, RFC 8224 §7.1) and a CRL distribution point do, for the STIR/SHAKEN
tests (interop and integration)."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.interop.harness.pki import TestPki


class _Certificates(http.server.BaseHTTPRequestHandler):
    chain = b""
    requests: list[str] = []
    # Paths served instead of or besides /shaken.pem (a CRL at /sti-pa.crl), read at each
    # request: a chain whose CRL URL names the server's port is known once it listens.
    files: dict[str, bytes] = {}
    # Cache-Control by path (default max-age=600), read at each request as ``files`` is.
    cache_control: dict[str, str] = {}

    def do_GET(self) -> None:
        self.requests.append(self.path)
        pem = "application/pem-certificate-chain"
        if self.path in self.files:
            body = self.files[self.path]
            kind = pem if self.path.endswith(".pem") else "application/pkix-crl"
        elif self.path == "/shaken.pem":
            body, kind = self.chain, pem
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Cache-Control", self.cache_control.get(self.path, "max-age=600"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def certificate_server(
    chain: bytes,
    workdir: Path,
    files: dict[str, bytes] | None = None,
    cache_control: dict[str, str] | None = None,
) -> Iterator[tuple[str, Path, list[str]]]:
    """An HTTPS server on 127.0.0.1 (port 0) serving ``chain`` at /shaken.pem, and ``files``
    by path (``.pem``: a certificate chain, else a CRL; the dict is read at each request, so it
    may be filled once the port is known), each with ``Cache-Control: max-age=600`` or what
    ``cache_control`` says for its path (read at each request too): (its URL, the CA file that
    trusts its TLS certificate, the paths it was asked for)."""
    tls = TestPki(workdir / "https-pki")
    ca = tls.ca("Certificate Server CA")
    issued = ca.issue("127.0.0.1", hosts=("127.0.0.1",))
    handler = type(
        "Handler",
        (_Certificates,),
        {
            "chain": chain,
            "requests": [],
            "files": {} if files is None else files,
            "cache_control": {} if cache_control is None else cache_control,
        },
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.certificate, issued.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield f"https://127.0.0.1:{port}/shaken.pem", ca.certificate, handler.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
