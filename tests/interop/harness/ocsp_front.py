"""An OCSP responder for interop tests: ``openssl ocsp`` answers, an HTTP/1.0 front on 127.0.0.1
carries its requests and answers.

``openssl ocsp -port`` (OpenSSL 3.0) takes a port number only and listens on every address
([::]:PORT); tests bind and talk on 127.0.0.1 only. So the front listens on 127.0.0.1 (port 0)
and, per POST (RFC 6960 Appendix A.1), writes the request to a file and runs openssl in
responder mode on it (``-reqin``/``-respout``: the CA's index file, its certificate, the
responder's certificate and key), then returns the DER with
``Content-Type: application/ocsp-response``. openssl still decides every answer; it never
opens a socket.

    with OcspFront(openssl, index=..., ca=..., signer=..., workdir=tmp_path) as front:
        phone = ca.issue("0004f2000001", hosts=[], ocsp_url=front.url)
        ...
        front.close()   # "the responder stopped": connections are refused from then on

The index file may be written after the front started (it is read per request).
"""

from __future__ import annotations

import http.server
import itertools
import subprocess
import threading
from pathlib import Path
from types import TracebackType

from tests.interop.harness.pki import Issued
from tests.interop.harness.ports import LOOPBACK

#: An OCSP request is a few hundred bytes; a larger body is not one.
_MAX_REQUEST = 65536


class OcspFront:
    def __init__(
        self, openssl: str, *, index: Path, ca: Path, signer: Issued, workdir: Path
    ) -> None:
        self._workdir = workdir
        self._command = [
            *(openssl, "ocsp", "-index", str(index), "-CA", str(ca)),
            *("-rsigner", str(signer.certificate), "-rkey", str(signer.key), "-nmin", "10"),
        ]
        self.log = workdir / "ocsp-front.log"
        self.requests = 0
        self._runs = itertools.count(1)
        self._lock = threading.Lock()
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_POST(self) -> None:
                length = self.headers.get("Content-Length", "")
                if not length.isdigit() or int(length) > _MAX_REQUEST:
                    self.send_error(400, "Content-Length missing or too large")
                    return
                answer = front._answer(self.rfile.read(int(length)))
                if answer is None:
                    self.send_error(500, "openssl ocsp failed")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/ocsp-response")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                with front.log.open("a") as out:
                    out.write(f"front: {format % args}\n")

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://{LOOPBACK}:{self.port}/"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._closed = False

    def _answer(self, request: bytes) -> bytes | None:
        with self._lock:
            run = next(self._runs)
            self.requests += 1
        request_file = self._workdir / f"ocsp-request-{run}.der"
        response_file = self._workdir / f"ocsp-response-{run}.der"
        request_file.write_bytes(request)
        command = [*self._command, "-reqin", str(request_file), "-respout", str(response_file)]
        with self.log.open("ab") as out:
            out.write(f"front: {' '.join(command)}\n".encode())
            out.flush()
            result = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=10
            )
        if result.returncode != 0 or not response_file.exists():
            return None
        return response_file.read_bytes()

    def close(self) -> None:
        """Stop answering: the listening socket is closed, so connections are refused."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OcspFront:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
