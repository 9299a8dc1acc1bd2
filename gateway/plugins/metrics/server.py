"""The metrics HTTP server: Prometheus GETs the exposition over HTTP/1.1, in plain text or TLS.

HTTP framing is h11's (sans-IO). One request per connection, answered with ``Connection:
close``: a scraper asks once every few seconds, so a kept-alive connection saves nothing worth
the state. ``GET`` (and ``HEAD``) of the configured path gets 200 and the exposition; another
path 404, another method 405, a request whose head or body passes :data:`MAX_REQUEST` octets
413 (head: 431), a request h11 cannot parse 400, and so does a head with NUL, VT, FF or a bare CR,
before h11 reads it (gateway/core/transport/http_head.py). Every connection has
:data:`CONNECTION_TIMEOUT` seconds for all of it and :data:`HEAD_TIMEOUT` for its request head,
and at most :data:`MAX_CONNECTIONS` are served at once; a new one when all are taken makes the
oldest that has not finished its request head give way (a client that connects and says
nothing must not shut Prometheus out), and waits up to :data:`SLOT_WAIT` for a slot, else it
is closed. Nothing a client sends can end the gateway: a failure ends that connection, logged
when it is ours (rendering).

With an ``ssl_context`` every connection starts with the TLS handshake (``trio.SSLStream``),
inside the same slot and under the same timeouts as the request head: a client that stalls its
handshake gives way like a silent one. A failed handshake is counted and logged (OpenSSL's
reason). With ``auth`` (:mod:`.auth`) every request needs basic credentials (RFC 7617) before
anything else is looked at, so a client without them learns nothing, not even which paths
exist: 401 with ``WWW-Authenticate: Basic realm="voipgw metrics", charset="UTF-8"``. Failures
are counted by reason (missing, malformed, invalid) and logged without the password, at most
one line per :data:`AUTH_LOG_INTERVAL`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable

import attrs
import h11
import trio

from gateway.core.logs import log_exception
from gateway.core.transport.flows import format_host_port
from gateway.core.transport.http_head import head_problem_untrusted
from gateway.plugins.metrics.auth import BasicAuth, parse_basic_credentials_untrusted
from gateway.plugins.metrics.exposition import CONTENT_TYPE
from gateway.plugins.metrics.tls import describe_ssl_error

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 8  # a Prometheus pair and a few people's curl
CONNECTION_TIMEOUT = 10.0  # Prometheus' default scrape timeout
HEAD_TIMEOUT = 2.0  # a scraper sends its few hundred octets at once
SLOT_WAIT = 1.0
MAX_REQUEST = 8192  # a scrape's request head is a few hundred octets and has no body
LINGER_TIMEOUT = 2.0  # reading what a refused client still sends (_linger)
LINGER_BYTES = 65536
REALM = "voipgw metrics"
#: RFC 7617 §2.1: charset="UTF-8" tells the client to send user and password in UTF-8.
WWW_AUTHENTICATE = f'Basic realm="{REALM}", charset="UTF-8"'.encode()
AUTH_FAILURE_REASONS = ("missing", "malformed", "invalid")
AUTH_LOG_INTERVAL = 60.0  # a misconfigured Prometheus fails every scrape: one line a minute
_LOG_TEXT_LIMIT = 64


@attrs.frozen
class ServerStatistics:
    """What the server counted since it started (the exporter shows the TLS and auth counts)."""

    scrapes: int
    refused_connections: int
    tls: bool
    tls_handshake_failures: int
    auth: bool
    auth_failures: tuple[tuple[str, int], ...]  # (reason, count) for each AUTH_FAILURE_REASONS


class MetricsServer:
    """Serves ``await render()`` (the exposition, bytes) at ``path``, over TLS with an
    ``ssl_context``, to clients with valid basic credentials with an ``auth``."""

    def __init__(
        self,
        render: Callable[[], Awaitable[bytes]],
        *,
        path: str,
        server: str,
        ssl_context: ssl.SSLContext | None = None,
        auth: BasicAuth | None = None,
    ) -> None:
        self._render = render
        self._path = path.encode()
        self._server = server.encode()
        # Read at each new connection: a reload (SIGHUP) replaces it for the next ones.
        self.ssl_context = ssl_context
        self._auth = auth
        # scrypt runs in a worker thread, one at a time: a flood of wrong passwords costs one
        # core at most, and cached pairs (every scrape after the first) never wait for it.
        self._verifying = trio.CapacityLimiter(1)
        self._slots = trio.Semaphore(MAX_CONNECTIONS)
        self._reading_heads: list[trio.CancelScope] = []  # oldest first
        self.address: tuple[str, int] | None = None
        self.scrapes = 0
        self.refused_connections = 0
        self.tls_handshake_failures = 0
        self.auth_failures = dict.fromkeys(AUTH_FAILURE_REASONS, 0)
        self._auth_logged_at: float | None = None
        self._auth_unlogged = 0

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(
            scrapes=self.scrapes,
            refused_connections=self.refused_connections,
            tls=self.ssl_context is not None,
            tls_handshake_failures=self.tls_handshake_failures,
            auth=self._auth is not None,
            auth_failures=tuple(self.auth_failures.items()),
        )

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[tuple[str, int]]
    ) -> None:
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            # run_until_signal prints an OSError as the one line saying why the gateway stops.
            shown = format_host_port(host, port)
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

    async def _exchange(self, socket_stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        request: h11.Request | None = None
        refusal: tuple[int, str] | None = None
        stream: trio.abc.Stream = socket_stream
        remote = _remote(socket_stream)
        with trio.move_on_after(HEAD_TIMEOUT) as reading:
            self._reading_heads.append(reading)
            try:
                if self.ssl_context is not None:
                    tls = await self._handshake(socket_stream, self.ssl_context, remote)
                    if tls is None:
                        return
                    stream = tls
                request, refusal = await self._read_request(stream, connection, remote)
            finally:
                if reading in self._reading_heads:
                    self._reading_heads.remove(reading)
        if reading.cancelled_caught:
            return  # too slow, or made way for another: closed without an answer
        if refusal is not None:
            status, reason = refusal
            await self._send(stream, connection, status, reason.encode() + b"\n", "text/plain")
            if not _request_received(connection):
                await _linger(stream)
            return
        assert request is not None
        body = b""
        try:
            body = await self._render()
        except Exception:
            # A bug, never the client's: this scrape fails, the gateway goes on.
            log_exception(log, "metrics: rendering the exposition failed")
            await self._send(stream, connection, 500, b"Internal Server Error\n", "text/plain")
            return
        self.scrapes += 1
        await self._send(
            stream, connection, 200, body, CONTENT_TYPE, head=request.method == b"HEAD"
        )

    async def _handshake(
        self, stream: trio.SocketStream, context: ssl.SSLContext, remote: str
    ) -> trio.SSLStream[trio.SocketStream] | None:
        """The TLS stream once its handshake is done; None (counted, logged) when it fails.
        https_compatible: our answers are framed by Content-Length, so a close without
        close_notify truncates nothing, and HTTPS clients close that way (RFC 9112 §9.8)."""
        tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError as exc:
            self.tls_handshake_failures += 1
            cause = exc.__cause__
            if isinstance(cause, ssl.SSLError):
                reason = describe_ssl_error(cause)
            else:
                reason = "connection closed during the handshake"
            log.info("metrics: TLS handshake from %s failed: %s", remote, reason)
            return None
        return tls

    async def _read_request(
        self, stream: trio.abc.Stream, connection: h11.Connection, remote: str
    ) -> tuple[h11.Request | None, tuple[int, str] | None]:
        request: h11.Request | None = None
        received = 0
        head: bytearray | None = bytearray()  # the request head until its empty line
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
                if head is not None:
                    # Before h11 reads it (http_head.py), each octet once: from the last piece's
                    # final octets on (a CR there is judged with what follows).
                    start = max(len(head) - 3, 0)
                    head += data
                    end = head.find(b"\r\n\r\n", start)
                    piece = head[start : len(head) if end < 0 else end + 2]
                    problem = head_problem_untrusted(piece)
                    if problem is not None:
                        return None, (400, f"Bad Request: {problem}")
                    if end >= 0:
                        head = None
                connection.receive_data(bytes(data))
                continue
            if isinstance(event, h11.Request):
                request = event
                # Credentials before anything else: without them, a client learns no path.
                if self._auth is not None and not await self._authorized(event, remote):
                    return None, (401, "Unauthorized")
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

    async def _authorized(self, request: h11.Request, remote: str) -> bool:
        """Whether the request carries valid basic credentials; a failure is counted and
        logged (never the password, nor a user name that is not configured: people type
        passwords into the user field)."""
        assert self._auth is not None
        values = [value for name, value in request.headers if name == b"authorization"]
        if not values:
            return self._refused("missing", remote, "no credentials")
        credentials = parse_basic_credentials_untrusted(values[0]) if len(values) == 1 else None
        if credentials is None:
            return self._refused("malformed", remote, "an Authorization that is not Basic")
        user, password = credentials
        if self._auth.cached(user, password):
            return True
        try:
            ok = await trio.to_thread.run_sync(
                self._auth.matches, user, password, limiter=self._verifying
            )
        except Exception:
            # A bug (or no memory for scrypt), never the client's: refuse this request only.
            log_exception(log, "metrics: checking a password failed")
            ok = False
        if ok:
            self._auth.remember(user, password)
            return True
        if user in self._auth.users:
            return self._refused("invalid", remote, f"wrong password for user {_shown(user)}")
        return self._refused("invalid", remote, "unknown user")

    def _refused(self, reason: str, remote: str, detail: str) -> bool:
        self.auth_failures[reason] += 1
        now = trio.current_time()
        if self._auth_logged_at is not None and now - self._auth_logged_at < AUTH_LOG_INTERVAL:
            self._auth_unlogged += 1
            return False
        more = f" ({self._auth_unlogged} more since the last line)" if self._auth_unlogged else ""
        log.warning("metrics: refused a scrape from %s: %s%s", remote, detail, more)
        self._auth_logged_at, self._auth_unlogged = now, 0
        return False

    async def _send(
        self,
        stream: trio.abc.Stream,
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
        elif status == 401:
            headers.append((b"www-authenticate", WWW_AUTHENTICATE))  # RFC 9110 §11.6.1
        try:
            data = connection.send(h11.Response(status_code=status, headers=headers)) or b""
            if not head:
                data += connection.send(h11.Data(data=body)) or b""
            data += connection.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return  # the request was too broken to answer in HTTP: just close
        await stream.send_all(data)


def _remote(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "an unknown address"
    return format_host_port(host, port)


def _shown(text: str) -> str:
    """A client's text made safe for one log line."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text[:_LOG_TEXT_LIMIT])
    return repr(cleaned) + ("..." if len(text) > _LOG_TEXT_LIMIT else "")


def _request_received(connection: h11.Connection) -> bool:
    """Whether the refused request's end is in what we already read (a GET's head), so that
    closing now leaves nothing unread and needs no :func:`_linger`."""
    try:
        while True:
            event = connection.next_event()
            if isinstance(event, h11.EndOfMessage):
                return True
            if not isinstance(event, h11.Data):
                return False  # NEED_DATA, PAUSED or the connection closed
    except h11.ProtocolError:
        return False


async def _linger(stream: trio.abc.Stream) -> None:
    """After a refusal sent before the whole request was read: stop sending, then read and
    discard what the client still sends, for a while. Closing with unread data makes the
    kernel reset the connection, and the client may lose our answer with it (RFC 9112 §9.6).
    TLS has no half-close that clients wait for; there we only read."""
    with trio.move_on_after(LINGER_TIMEOUT):
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        discarded = 0
        while discarded < LINGER_BYTES and (data := await stream.receive_some(MAX_REQUEST)):
            discarded += len(data)
