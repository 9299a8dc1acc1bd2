"""SIP over WebSocket (RFC 7118), the sans-IO part: the opening handshake and the framing.

:class:`SipWebSocket` is one server-side connection, in the shape of h11 (STYLE.md habit 1):
the transport feeds it whatever the socket returned with :meth:`SipWebSocket.receive_data`,
takes events with :meth:`SipWebSocket.next_event` and writes :meth:`SipWebSocket.data_to_send`.
The WebSocket protocol itself (HTTP/1.1 upgrade, frames, masking, UTF-8 checks of text frames)
is wsproto's; this module adds what SIP needs on top:

- The opening handshake (RFC 6455 §4.2) must offer the ``sip`` subprotocol (RFC 7118 §4: a
  server MUST NOT accept a connection without it) and, when ``allowed_origins`` is not empty,
  come from one of those origins (RFC 6455 §10.2: a browser says which page opened the
  connection; any web page could otherwise drive a visitor's browser to register here). A
  refusal is an HTTP 4xx, then the connection closes. The HTTP request itself is bounded by
  h11's ``max_incomplete_event_size`` (16 KiB), and a request head holding NUL, VT, FF or a bare
  CR is refused with 400 before h11 sees it (gateway/core/transport/http_head.py).
- Each WebSocket message, text or binary, is exactly one SIP message (RFC 7118 §5). A message
  longer than ``max_message_size`` closes the connection with 1009 (RFC 6455 §7.4.1): its
  fragments are counted as they arrive, so nothing larger is ever buffered. No extension is
  accepted (no permessage-deflate), so a frame's length is what it costs.
- Pings are answered (RFC 6455 §5.5.2); a message that is only CRLFs is a SIP keep-alive
  (RFC 5626 §4.4.1 carried over WebSocket, as SIP.js sends it): a double CRLF is answered with
  one CRLF, which is how SIP.js's keep-alive expects its pong.
- We send SIP as text frames when it is valid UTF-8, which is every message we make, and as
  binary otherwise (RFC 7118 §5: a message whose body is not UTF-8 MUST go as binary).

Anything the peer does wrong (a bad frame, invalid UTF-8 in a text frame, an unmasked frame)
ends in a :class:`Closed` event: the connection is closed, and nothing is raised.
"""

from __future__ import annotations

from collections import deque

import attrs
import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from gateway.core.transport.http_head import head_problem_untrusted

#: RFC 7118 §4: the WebSocket subprotocol of SIP (IANA "WebSocket Subprotocol Name Registry").
SUBPROTOCOL = "sip"

#: RFC 6455 §7.4.1 close codes we send.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009

_KEEPALIVE_PING = b"\r\n\r\n"
_KEEPALIVE_PONG = b"\r\n"
# Longest peer-supplied text (an Origin) that goes into an event for a log line.
_LOG_TEXT_LIMIT = 100


@attrs.frozen
class Opened:
    """The handshake succeeded: SIP messages may flow. ``origin`` as the client sent it (None
    for a client that is not a browser), ``path`` the request target."""

    origin: str | None
    path: str


@attrs.frozen
class Refused:
    """The handshake was refused with HTTP ``status`` (already in :meth:`data_to_send`); close
    the connection once that is written."""

    status: int
    reason: str


@attrs.frozen
class SipMessage:
    """One complete WebSocket message: one SIP message's bytes, for the SIP parser."""

    data: bytes


@attrs.frozen
class Closed:
    """The WebSocket connection is over (``code`` per RFC 6455 §7.4; the close frame, if one is
    due, is in :meth:`data_to_send`). ``by_peer``: the peer closed cleanly; else ``reason`` says
    what was wrong."""

    code: int
    reason: str
    by_peer: bool = False


WsEvent = Opened | Refused | SipMessage | Closed


def printable(text: str) -> str:
    """Peer-supplied text made safe for one log line."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned[:_LOG_TEXT_LIMIT] + ("..." if len(cleaned) > _LOG_TEXT_LIMIT else "")


def normalize_origin(origin: str) -> str:
    """An origin as compared: RFC 6454 §6.2 serializes scheme and host in lower case, and a
    configured ``https://Phone.Example.com/`` means the same as ``https://phone.example.com``."""
    return origin.strip().rstrip("/").lower()


def check_upgrade_untrusted(
    request: Request, *, allowed_origins: frozenset[str]
) -> Refused | Opened:
    """Whether to accept a WebSocket opening handshake that wsproto found well-formed.

    RFC 7118 §4: the client must offer the ``sip`` subprotocol (400 otherwise). RFC 6455 §10.2:
    with ``allowed_origins`` (normalized by :func:`normalize_origin`) a browser's ``Origin``
    must be one of them (403 otherwise); a request without ``Origin`` comes from a client that
    is not a browser, which could send any Origin it liked, so the check does not apply to it.
    """
    if SUBPROTOCOL not in request.subprotocols:
        offered = ", ".join(request.subprotocols) or "none"
        return Refused(400, f"no 'sip' WebSocket subprotocol offered ({printable(offered)})")
    origin: str | None = None
    for name, value in request.extra_headers:
        if bytes(name).lower() == b"origin":
            origin = bytes(value).decode("latin-1")
            break
    if allowed_origins and origin is not None and normalize_origin(origin) not in allowed_origins:
        return Refused(403, f"origin {printable(origin)} is not allowed")
    return Opened(origin=origin, path=request.target)


class SipWebSocket:
    """One server-side SIP WebSocket connection (sans-IO): handshake, then SIP messages.

    Usage::

        ws.receive_data(chunk)          # b"" or None: the peer closed the TCP connection
        while (event := ws.next_event()) is not None:
            ...                          # Opened, Refused, SipMessage or Closed
        send_all(ws.data_to_send())

    :meth:`send_message` and :meth:`ping` queue frames once :class:`Opened` was returned;
    :meth:`close` queues a close frame. After :class:`Refused` or :class:`Closed` nothing more
    comes and the connection should be closed once :meth:`data_to_send` is written.
    """

    def __init__(self, *, allowed_origins: frozenset[str], max_message_size: int) -> None:
        if max_message_size <= 0:
            raise ValueError("max_message_size must be positive")
        self._ws = WSConnection(ConnectionType.SERVER)
        self._allowed_origins = allowed_origins
        self._max_message_size = max_message_size
        self._events: deque[WsEvent] = deque()
        self._outgoing = bytearray()
        self._message = bytearray()  # the fragments of the message being received
        self._opened = False
        self._done = False
        # The opening handshake's bytes until its empty line, for head_problem_untrusted (then
        # emptied; never more than h11's limit, which refuses a longer head).
        self._head: bytearray | None = bytearray()
        self._head_checked = 0  # octets of _head already found clean

    @property
    def opened(self) -> bool:
        """True once the handshake was accepted."""
        return self._opened

    @property
    def done(self) -> bool:
        """True after :class:`Refused` or :class:`Closed`: only closing the connection is left."""
        return self._done

    def receive_data(self, data: bytes | bytearray | None) -> None:
        """Bytes from the peer; ``b""`` or None when it closed its side of the connection."""
        if self._done:
            return
        if not data:
            self._finish(Closed(1006, "connection closed without a WebSocket close"))
            return
        if self._head is not None and self._bad_head(data):
            return
        try:
            self._ws.receive_data(bytes(data))
            for event in self._ws.events():
                self._handle(event)
                if self._done:
                    return
        except RemoteProtocolError as exc:
            # A malformed opening handshake: wsproto says which HTTP answer fits.
            hint = exc.event_hint
            status = hint.status_code if isinstance(hint, RejectConnection) else 400
            reason = printable(str(exc))
            self._refuse(status, reason, hint if isinstance(hint, RejectConnection) else None)
        except (ValueError, LocalProtocolError, h11.ProtocolError) as exc:
            # Bytes wsproto or h11 could not even decode (a Host that is not IDNA, a target
            # that is not ASCII ...): the peer's fault all the same.
            if self._opened:
                self.close(1002, "protocol error")
                self._finish(Closed(1002, f"protocol error: {printable(str(exc))}"))
            else:
                self._refuse(400, f"bad HTTP request: {printable(str(exc))}", None)

    def next_event(self) -> WsEvent | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        """Everything queued for the peer, in order; the queue is emptied."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def send_message(self, data: bytes) -> None:
        """Queue one SIP message as one WebSocket message (RFC 7118 §5). Ignored once the
        connection is closing (the caller learns that from :attr:`done`)."""
        if not self._opened or self._ws.state is not ConnectionState.OPEN:
            return
        try:
            self._outgoing += self._ws.send(TextMessage(data=data.decode("utf-8")))
        except UnicodeDecodeError:
            self._outgoing += self._ws.send(BytesMessage(data=data))  # RFC 7118 §5: binary

    def ping(self) -> None:
        """Queue a WebSocket ping (RFC 6455 §5.5.2): the peer's pong, like anything it sends,
        shows it is still there."""
        if self._opened and self._ws.state is ConnectionState.OPEN:
            self._outgoing += self._ws.send(Ping(payload=b"voipgw"))

    def close(self, code: int = CLOSE_GOING_AWAY, reason: str = "") -> None:
        """Queue our close frame (RFC 6455 §5.5.1), if one can still be sent."""
        if self._opened and self._ws.state in (
            ConnectionState.OPEN,
            ConnectionState.REMOTE_CLOSING,
        ):
            self._outgoing += self._ws.send(CloseConnection(code=code, reason=reason or None))

    # -- internals ------------------------------------------------------------------------

    def _bad_head(self, data: bytes | bytearray) -> bool:
        """Check the request head's new octets (each octet once); refuse a bad head (True)."""
        head = self._head
        assert head is not None
        start = max(self._head_checked - 1, 0)  # a CR that ended the last piece
        head += data
        end = head.find(b"\r\n\r\n", max(start - 2, 0))
        problem = head_problem_untrusted(head[start : len(head) if end < 0 else end + 2])
        if problem is not None:
            self._refuse(400, f"bad HTTP request: {problem}", None)
            return True
        if end < 0:
            self._head_checked = len(head)
        else:
            self._head = None  # the head is complete and clean: frames follow
        return False

    def _handle(self, event: object) -> None:
        if isinstance(event, Request):
            self._upgrade(event)
        elif isinstance(event, TextMessage | BytesMessage):
            self._fragment(event)
        elif isinstance(event, Ping):
            self._outgoing += self._ws.send(event.response())
        elif isinstance(event, CloseConnection):
            # The peer's close (echoed, RFC 6455 §5.5.1), or wsproto's verdict on a bad frame
            # (a ParseFailed: 1002, or 1007 for invalid UTF-8), which we send as our close.
            by_peer = self._ws.state is ConnectionState.REMOTE_CLOSING
            self._outgoing += self._ws.send(event.response())
            reason = (
                "closed by the peer" if by_peer else f"bad frame: {printable(event.reason or '')}"
            )
            self._finish(Closed(event.code, reason, by_peer=by_peer))
        # Pong: nothing to do; the transport counts every received byte as life.

    def _upgrade(self, request: Request) -> None:
        verdict = check_upgrade_untrusted(request, allowed_origins=self._allowed_origins)
        if isinstance(verdict, Refused):
            self._refuse(verdict.status, verdict.reason, None)
            return
        # No extensions: permessage-deflate would let a small frame inflate past our bounds.
        self._outgoing += self._ws.send(AcceptConnection(subprotocol=SUBPROTOCOL))
        self._opened = True
        self._events.append(verdict)

    def _fragment(self, event: TextMessage | BytesMessage) -> None:
        if isinstance(event, TextMessage):
            # wsproto has checked the UTF-8 already (RFC 6455 §8.1); SIP is parsed as bytes.
            self._message += event.data.encode("utf-8")
        else:
            self._message += event.data
        if len(self._message) > self._max_message_size:
            self.close(CLOSE_TOO_BIG, "SIP message too large")
            self._finish(
                Closed(
                    CLOSE_TOO_BIG,
                    f"a message longer than {self._max_message_size} bytes",
                )
            )
            return
        if not event.message_finished:
            return
        data = bytes(self._message)
        self._message.clear()
        if not data.strip(b"\r\n"):
            # Only CRLFs: a keep-alive, not a SIP message (RFC 5626 §4.4.1).
            if data == _KEEPALIVE_PING:
                self.send_message(_KEEPALIVE_PONG)
            return
        self._events.append(SipMessage(data))

    def _refuse(self, status: int, reason: str, hint: RejectConnection | None) -> None:
        reject = hint or RejectConnection(
            status_code=status,
            # The body quotes the client's request (made printable): plain text, never sniffed.
            headers=[
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"x-content-type-options", b"nosniff"),
            ],
            has_body=True,
        )
        try:
            self._outgoing += self._ws.send(reject)
            if reject.has_body:
                body = f"{status} {reason}\r\n".encode()
                self._outgoing += self._ws.send(RejectData(data=body))
        except (LocalProtocolError, h11.ProtocolError):
            pass  # the HTTP exchange is too broken for any answer: just close
        self._finish(Refused(status, reason))

    def _finish(self, event: Refused | Closed) -> None:
        self._done = True
        self._message.clear()
        self._events.append(event)
