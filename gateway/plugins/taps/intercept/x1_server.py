"""The X1 HTTPS server: the ADMF POSTs X1 documents to us (TS 103 221-1 over HTTP/1.1).

Only mutually authenticated TLS is served: a client must present a certificate the configured CA
signed, or the handshake fails before a byte of X1 is read (an unauthenticated X1 would let
anyone on the network start an interception). HTTP framing is h11's (sans-IO); each request is a
POST of an ``application/xml`` document of at most ``x1.MAX_DOCUMENT`` octets, answered 200 with
the X1 response document (X1 errors are X1 documents too); anything else gets 405, 411, 413 or 400
and the connection closes. At most :data:`MAX_HANDSHAKES` TLS handshakes at once, each done within
:data:`HANDSHAKE_TIMEOUT` seconds, and apart from them :data:`MAX_CONNECTIONS` authenticated
connections, each idle for at most :data:`IDLE_TIMEOUT` seconds between requests and given
:data:`REQUEST_TIMEOUT` to send a whole request and to take its answer. Each document is handed
on with the subject of the connection's client certificate (:func:`subject_of`), which X1
matches to the ``admfIdentifier`` the messages name (``admf_certificates``).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

import h11
import trio
from cryptography import x509

from gateway.core.logs import log_exception, transport_error_text
from gateway.core.transport.flows import format_address, format_host_port
from gateway.plugins.taps.intercept.x1 import MAX_DOCUMENT

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16  # authenticated ADMF connections
MAX_HANDSHAKES = 64  # TLS handshakes in progress: anybody can start one
IDLE_TIMEOUT = 60.0  # between requests on a kept-alive connection
HANDSHAKE_TIMEOUT = 3.0
REQUEST_TIMEOUT = 30.0  # to read one whole request, and to send its answer


class X1Server:
    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        handle: Callable[[bytes, str | None], bytes],
        *,
        server: str,
    ) -> None:
        self.ssl_context = ssl_context  # read at each handshake: a SIGHUP reload swaps it
        self._handle = handle
        self._server = server.encode()
        self._slots = trio.Semaphore(MAX_CONNECTIONS)
        self._handshakes = trio.Semaphore(MAX_HANDSHAKES)
        self.address: tuple[str, int] | None = None
        self.requests = 0
        self.refused_handshakes = 0

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[tuple[str, int]]
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        address = listeners[0].socket.getsockname()
        self.address = (address[0], address[1])
        log.info(
            "intercept: X1 listening on %s (TLS, client certificates required)",
            format_address(self.address),
        )
        task_status.started(self.address)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, tcp: trio.SocketStream) -> None:
        # Handshakes and authenticated connections are counted apart: connections that never
        # finish a handshake (anybody's) must not keep the ADMF's requests out.
        if self._handshakes.value == 0:
            await trio.aclose_forcefully(tcp)
            return
        async with self._handshakes:
            tls = trio.SSLStream(tcp, self.ssl_context, server_side=True)
            try:
                with trio.fail_after(HANDSHAKE_TIMEOUT):
                    await tls.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError, OSError) as exc:
                self.refused_handshakes += 1
                log.warning(
                    "intercept: X1 TLS handshake with %s failed: %s",
                    _peer(tcp),
                    transport_error_text(exc),
                )
                await trio.aclose_forcefully(tcp)
                return
        if self._slots.value == 0:
            await trio.aclose_forcefully(tls)
            return
        # Once per connection: the handshake verified the certificate against x1_ca.
        client = subject_of(tls.getpeercert(binary_form=True))
        async with self._slots:
            try:
                await self._serve_http(tls, client)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
                pass
            finally:
                await trio.aclose_forcefully(tls)

    async def _serve_http(
        self, stream: trio.SSLStream[trio.SocketStream], client: str | None
    ) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=16_384)
        while True:
            with trio.fail_after(IDLE_TIMEOUT):  # the next request's first bytes
                await self._wait_readable(stream, connection)
            with trio.fail_after(REQUEST_TIMEOUT):  # and all of it: no byte-a-minute request
                request, body, refusal = await self._read_request(stream, connection)
            if refusal is not None:
                status, reason = refusal
                await self._send(
                    stream, connection, status, reason.encode(), "text/plain", close=True
                )
                return
            assert request is not None
            self.requests += 1
            try:
                answer = self._handle(body, client)
            except Exception:
                # A bug, not the ADMF's fault: this request fails, X1 goes on (STYLE.md habit 6).
                log_exception(log, "intercept: X1 request failed")
                await self._send(
                    stream, connection, 500, b"Internal Server Error", "text/plain", close=True
                )
                return
            await self._send(stream, connection, 200, answer, "application/xml")
            if connection.our_state is h11.MUST_CLOSE:
                return
            try:
                connection.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(
        self, stream: trio.SSLStream[trio.SocketStream], connection: h11.Connection
    ) -> tuple[h11.Request | None, bytes, tuple[int, str] | None]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as exc:
                return None, b"", (400, f"Bad Request: {exc}")
            if event is h11.NEED_DATA:
                connection.receive_data(bytes(await stream.receive_some(65_536)))
                continue
            if isinstance(event, h11.Request):
                request = event
                if event.method != b"POST":
                    return None, b"", (405, "Method Not Allowed: X1 requests are POSTed")
                length = dict(event.headers).get(b"content-length")
                if length is None and dict(event.headers).get(b"transfer-encoding") is None:
                    return None, b"", (411, "Length Required")
                if length is not None and int(length) > MAX_DOCUMENT:
                    return None, b"", (413, "Content Too Large")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_DOCUMENT:
                    return None, b"", (413, "Content Too Large")
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body), None
            elif isinstance(event, h11.ConnectionClosed):
                raise trio.ClosedResourceError("the ADMF closed the connection")

    async def _wait_readable(
        self, stream: trio.SSLStream[trio.SocketStream], connection: h11.Connection
    ) -> None:
        """Until the next request has begun: data already buffered, or some arriving."""
        if connection.trailing_data[0] or connection.their_state is not h11.IDLE:
            return
        connection.receive_data(bytes(await stream.receive_some(65_536)))

    async def _send(
        self,
        stream: trio.SSLStream[trio.SocketStream],
        connection: h11.Connection,
        status: int,
        body: bytes,
        content_type: str,
        *,
        close: bool = False,
    ) -> None:
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"server", self._server),
        ]
        if close:
            headers.append((b"connection", b"close"))
        try:
            data = connection.send(h11.Response(status_code=status, headers=headers))
            data = (data or b"") + (connection.send(h11.Data(data=body)) or b"")
            data += connection.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return  # the request was too broken to answer in HTTP: just close
        with trio.fail_after(REQUEST_TIMEOUT):
            await stream.send_all(data)


def subject_of(der: bytes | None) -> str | None:
    """The subject of a client certificate as RFC 4514 writes it (``CN=admf-1,O=Example LI``,
    most specific first, as ``openssl x509 -nameopt RFC2253`` shows it), or None without one
    or when it does not parse (cryptography reads names lazily: ValueError)."""
    if der is None:
        return None
    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return None


def _peer(tcp: trio.SocketStream) -> str:
    try:
        host, port = tcp.socket.getpeername()[:2]
    except OSError:
        return "?"
    return format_host_port(host, port)
