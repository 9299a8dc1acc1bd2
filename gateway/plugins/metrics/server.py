"""The metrics HTTP server: Prometheus GETs the exposition over plain HTTP/1.1.

HTTP framing is h11's (sans-IO). One request per connection, answered with ``Connection:
close``: a scraper asks once every few seconds, so a kept-alive connection saves nothing worth
the state. ``GET`` (and ``HEAD``) of the configured path gets 200 and the exposition; another
path 404, another method 405, a request whose head or body passes :data:`MAX_REQUEST` octets
413 (head: 431), a request h11 cannot parse 400. Every connection has
:data:`CONNECTION_TIMEOUT` seconds for all of it and :data:`HEAD_TIMEOUT` for its request head,
and at most :data:`MAX_CONNECTIONS` are served at once; a new one when all are taken makes the
oldest that has not finished its request head give way (a client that connects and says
nothing must not shut Prometheus out), and waits up to :data:`SLOT_WAIT` for a slot, else it
is closed. Nothing a client sends can end the gateway: a failure ends that connection, logged
when it is ours (rendering).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import h11
import trio

from gateway.plugins.metrics.exposition import CONTENT_TYPE

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 8  # a Prometheus pair and a few people's curl
CONNECTION_TIMEOUT = 10.0  # Prometheus' default scrape timeout
HEAD_TIMEOUT = 2.0  # a scraper sends its few hundred octets at once
SLOT_WAIT = 1.0
MAX_REQUEST = 8192  # a scrape's request head is a few hundred octets and has no body
LINGER_TIMEOUT = 2.0  # reading what a refused client still sends (_linger)
LINGER_BYTES = 65536


class MetricsServer:
    """Serves ``render()`` (the exposition, bytes) at ``path``."""

    def __init__(self, render: Callable[[], bytes], *, path: str, server: str) -> None:
        self._render = render
        self._path = path.encode()
        self._server = server.encode()
        self._slots = trio.Semaphore(MAX_CONNECTIONS)
        self._reading_heads: list[trio.CancelScope] = []  # oldest first
        self.address: tuple[str, int] | None = None
        self.scrapes = 0
        self.refused_connections = 0

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[tuple[str, int]]
    ) -> None:
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            # run_until_signal prints an OSError as the one line saying why the gateway stops.
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise OSError(exc.errno, f"metrics: cannot listen on {shown}: {exc.strerror}") from None
        address = listeners[0].socket.getsockname()
        self.address = (address[0], address[1])
        task_status.started(self.address)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        if self._slots.value == 0 and self._reading_heads:
            self._reading_heads.pop(0).cancel()  # it has not asked anything yet: it gives way
        acquired = False
        with trio.move_on_after(SLOT_WAIT):
            await self._slots.acquire()
            acquired = True
        if not acquired:
            self.refused_connections += 1
            await trio.aclose_forcefully(stream)
            return
        try:
            with trio.move_on_after(CONNECTION_TIMEOUT):
                await self._exchange(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        finally:
            self._slots.release()
            await trio.aclose_forcefully(stream)

    async def _exchange(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        request: h11.Request | None = None
        refusal: tuple[int, str] | None = None
        with trio.move_on_after(HEAD_TIMEOUT) as reading:
            self._reading_heads.append(reading)
            try:
                request, refusal = await self._read_request(stream, connection)
            finally:
                if reading in self._reading_heads:
                    self._reading_heads.remove(reading)
        if reading.cancelled_caught:
            return  # too slow, or made way for another: closed without an answer
        if refusal is not None:
            status, reason = refusal
            await self._send(stream, connection, status, reason.encode() + b"\n", "text/plain")
            await _linger(stream)
            return
        assert request is not None
        body = b""
        try:
            body = self._render()
        except Exception:
            # A bug, never the client's: this scrape fails, the gateway goes on.
            log.exception("metrics: rendering the exposition failed")
            await self._send(stream, connection, 500, b"Internal Server Error\n", "text/plain")
            return
        self.scrapes += 1
        await self._send(
            stream, connection, 200, body, CONTENT_TYPE, head=request.method == b"HEAD"
        )

    async def _read_request(
        self, stream: trio.SocketStream, connection: h11.Connection
    ) -> tuple[h11.Request | None, tuple[int, str] | None]:
        request: h11.Request | None = None
        received = 0
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as exc:
                # h11 says 431 for a head past max_incomplete_event_size, else 400.
                return None, (exc.error_status_hint, "Bad Request")
            if event is h11.NEED_DATA:
                data = await stream.receive_some(MAX_REQUEST)
                received += len(data)
                if received > 2 * MAX_REQUEST:
                    return None, (413, "Content Too Large")
                connection.receive_data(bytes(data))
                continue
            if isinstance(event, h11.Request):
                request = event
                if event.method not in (b"GET", b"HEAD"):
                    return None, (405, "Method Not Allowed")
                if event.target.split(b"?", 1)[0] != self._path:
                    return None, (404, "Not Found")
                length = dict(event.headers).get(b"content-length", b"0")
                if not length.isdigit() or int(length) > MAX_REQUEST:
                    return None, (413, "Content Too Large")
            elif isinstance(event, h11.Data):
                continue  # a GET's body means nothing; bounded by ``received``
            elif isinstance(event, h11.EndOfMessage):
                return request, None
            elif isinstance(event, h11.ConnectionClosed):
                raise trio.ClosedResourceError("the client closed the connection")

    async def _send(
        self,
        stream: trio.SocketStream,
        connection: h11.Connection,
        status: int,
        body: bytes,
        content_type: str,
        *,
        head: bool = False,
    ) -> None:
        """Answer; a HEAD's answer has the headers of the GET's and no body (RFC 9110 §9.3.2)."""
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"server", self._server),
            (b"connection", b"close"),
        ]
        if status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        try:
            data = connection.send(h11.Response(status_code=status, headers=headers)) or b""
            if not head:
                data += connection.send(h11.Data(data=body)) or b""
            data += connection.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return  # the request was too broken to answer in HTTP: just close
        await stream.send_all(data)


async def _linger(stream: trio.SocketStream) -> None:
    """After a refusal sent before the whole request was read: stop sending, then read and
    discard what the client still sends, for a while. Closing with unread data makes the
    kernel reset the connection, and the client may lose our answer with it (RFC 9112 §9.6)."""
    with trio.move_on_after(LINGER_TIMEOUT):
        await stream.send_eof()
        discarded = 0
        while discarded < LINGER_BYTES and (data := await stream.receive_some(MAX_REQUEST)):
            discarded += len(data)
