"""Stream framing for SIP over TCP and TLS (RFC 3261 §18.3).

A byte stream carries SIP messages back to back. Each message is a header block ending in an empty
line, followed by exactly ``Content-Length`` bytes of body; on a stream the Content-Length header is
mandatory (RFC 3261 §18.3, §20.14). Between messages a peer may send CRLFs: RFC 3261 §7.5 says to
ignore them, and RFC 5626 §4.4.1 gives them a meaning: a double CRLF is a keep-alive *ping* that we
answer with a single CRLF *pong*, and a single CRLF is such a pong.

:class:`StreamFramer` is sans-IO (STYLE.md habit 1): the transport feeds it whatever ``recv()``
returned with :meth:`StreamFramer.receive_data`, then calls :meth:`StreamFramer.next_frame` until
it returns None. A frame is the exact bytes of one message, ready for
``parser.parse_message_untrusted(frame)``. The framer only looks at what it needs to cut the
stream (the Content-Length header); everything else is the parser's job. (SIP over WebSocket,
RFC 7118, needs no framer: each WebSocket message is one SIP message.)

Every buffer is bounded (STYLE.md habit 5): a header block longer than ``max_header_size``, a
Content-Length above ``max_body_size`` or a message longer than ``max_message_size`` raises
:class:`MessageTooLarge`; a missing or malformed Content-Length, or bytes between messages that
cannot start a message, raise :class:`SipParseError`.

**A framing error is fatal for the connection.** Once the framer has lost track of where messages
begin it can never find it again, so after raising it stays broken: every later call raises the same
error. The transport may answer the offending request using ``error.status`` if it can, then closes
the connection. (Likewise, a frame that the parser rejects on a stream means the two ends disagree
about message boundaries, and the transport should close the connection after answering it.)
"""

from __future__ import annotations

import attrs

from gateway.core.sip.errors import LocalSipError, MessageTooLarge, SipError, SipParseError

KEEPALIVE_PING = b"\r\n\r\n"
"""RFC 5626 §4.4.1 keep-alive ping (double CRLF) a client sends on an idle flow."""

KEEPALIVE_PONG = b"\r\n"
"""RFC 5626 §4.4.1 keep-alive pong (single CRLF): the answer to a :data:`KEEPALIVE_PING`."""

DEFAULT_MAX_HEADER_SIZE = 32768
DEFAULT_MAX_BODY_SIZE = 65535
DEFAULT_MAX_MESSAGE_SIZE = 65535

_CRLF = b"\r\n"
_END_OF_HEADERS = b"\r\n\r\n"

# RFC 3261 §25.1 token characters. A message starts with a method (a token) or "SIP/2.0", so any
# other first byte means the stream is not where we think it is.
_TOKEN_BYTES = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)

# Longest Content-Length we bother converting; anything longer is certainly over every limit.
_MAX_LENGTH_DIGITS = 10


@attrs.frozen
class KeepAlivePing:
    """The peer sent a double-CRLF ping (RFC 5626 §4.4.1): write :data:`KEEPALIVE_PONG` back."""


Frame = bytes | KeepAlivePing
"""What :meth:`StreamFramer.next_frame` yields: one complete message's bytes, or a ping."""


class StreamFramer:
    """Cuts a SIP byte stream into messages (RFC 3261 §18.3) and keep-alive pings (RFC 5626).

    Usage, one framer per connection::

        framer.receive_data(chunk)
        while (frame := framer.next_frame()) is not None:
            if isinstance(frame, KeepAlivePing):
                send(KEEPALIVE_PONG)
            else:
                handle(parse_message_untrusted(frame))

    A single CRLF between messages (a pong, or the leading CRLF RFC 3261 §7.5 tells us to ignore)
    is consumed without an event. A transport that sends pings itself should treat any bytes
    arriving on the flow as proof of life.

    Limits (all in bytes, all required to be positive):

    - ``max_header_size``: start line plus header fields plus the empty line;
    - ``max_body_size``: the largest Content-Length accepted;
    - ``max_message_size``: header block plus body; also bounds what stays buffered while the
      framer waits for the rest of a message.

    Exceeding one raises :class:`MessageTooLarge` (status 513); a missing, duplicated-and-different
    or non-numeric Content-Length raises :class:`SipParseError` (status 400). Both are fatal: see
    the module docstring.
    """

    def __init__(
        self,
        *,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if min(max_header_size, max_body_size, max_message_size) <= 0:
            raise ValueError("framing limits must be positive")
        # The header block is part of the message, so its own limit cannot be larger.
        self._max_header_size = min(max_header_size, max_message_size)
        self._max_body_size = max_body_size
        self._max_message_size = max_message_size
        self._buffer = bytearray()
        # Where the next search for the end of the header block starts (we never rescan).
        self._scanned = 0
        # Set once the header block of the current message is complete.
        self._header_size: int | None = None
        self._body_size = 0
        self._error: SipError | None = None

    @property
    def broken(self) -> bool:
        """True after a framing error: the connection must be closed."""
        return self._error is not None

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the connection.

        Call :meth:`next_frame` until it returns None before feeding more data: the framer never
        holds more than ``max_message_size`` bytes between calls, and raises
        :class:`LocalSipError` if asked to (that is a bug in the caller, not the peer).
        """
        if self._error is not None:
            raise self._error
        if len(self._buffer) >= self._max_message_size:
            raise LocalSipError("receive_data() called before next_frame() was drained")
        self._buffer += data

    def next_frame(self) -> Frame | None:
        """The next complete message (its exact bytes) or :class:`KeepAlivePing`; None if more
        bytes are needed. Raises :class:`SipParseError` / :class:`MessageTooLarge` (fatal)."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_frame()
        except SipError as exc:
            self._error = exc
            self._buffer.clear()
            raise

    def _next_frame(self) -> Frame | None:
        if self._header_size is None:
            if self._scanned == 0:
                # At a message boundary: RFC 5626 keep-alives and RFC 3261 §7.5 leading CRLFs.
                ping = self._consume_crlfs()
                if ping is not None:
                    return ping
                if not self._buffer or self._buffer.startswith(b"\r"):
                    return None  # nothing yet, or CRLFs we cannot classify until more arrive
                if self._buffer[0] not in _TOKEN_BYTES:
                    raise SipParseError("stream out of step: bytes between messages")
            if not self._find_header_end():
                return None
        assert self._header_size is not None
        total = self._header_size + self._body_size
        if len(self._buffer) < total:
            return None
        frame = bytes(self._buffer[:total])
        del self._buffer[:total]
        self._header_size = None
        self._body_size = 0
        self._scanned = 0
        return frame

    def _consume_crlfs(self) -> KeepAlivePing | None:
        """Eat CRLFs at a message boundary; return a ping if one is complete.

        Stops (returning None) at the first byte that starts a message, or at a run of CR/LF that
        could still become either a ping or a pong.
        """
        buf = self._buffer
        while buf.startswith(b"\r"):
            if buf.startswith(KEEPALIVE_PING):
                del buf[: len(KEEPALIVE_PING)]
                return KeepAlivePing()
            if KEEPALIVE_PING.startswith(buf):
                return None  # "\r", "\r\n" or "\r\n\r": ping or pong, cannot tell yet
            if not buf.startswith(_CRLF):
                raise SipParseError("stream out of step: bare CR between messages")
            # A single CRLF followed by something else: a pong or a leading CRLF. Ignore it.
            del buf[: len(_CRLF)]
        return None

    def _find_header_end(self) -> bool:
        """Look for the empty line ending the header block; on success record the frame size."""
        buf = self._buffer
        # The terminator may straddle the previous scan's end, so back up three bytes.
        end = buf.find(_END_OF_HEADERS, max(0, self._scanned - 3))
        if end < 0:
            if len(buf) >= self._max_header_size:
                raise MessageTooLarge(f"header block longer than {self._max_header_size} bytes")
            self._scanned = len(buf)
            return False
        header_size = end + len(_END_OF_HEADERS)
        if header_size > self._max_header_size:
            raise MessageTooLarge(f"header block longer than {self._max_header_size} bytes")
        body_size = _content_length(bytes(buf[:end]))
        if body_size > self._max_body_size:
            raise MessageTooLarge(f"Content-Length larger than {self._max_body_size}")
        if header_size + body_size > self._max_message_size:
            raise MessageTooLarge(f"message longer than {self._max_message_size} bytes")
        self._header_size = header_size
        self._body_size = body_size
        self._scanned = header_size
        return True


def _content_length(header_block: bytes) -> int:
    """The Content-Length of a header block (start line and fields, without the empty line).

    Only what framing needs is checked: header names are matched case-insensitively, including the
    compact form ``l`` (RFC 3261 §7.3.3); folded values (§7.3.1) are unfolded; the value must be
    1*DIGIT (§20.14). Several Content-Length fields are accepted only if they agree, since anything
    else leaves the message boundary ambiguous.
    """
    lines = header_block.split(_CRLF)[1:]  # the start line has no Content-Length
    fields: list[bytes] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1] += b" " + line.strip(b" \t")
            continue
        fields.append(line)
    values: set[int] = set()
    for field in fields:
        name, colon, value = field.partition(b":")
        if not colon:
            continue  # not our business: the parser will reject it
        if name.rstrip(b" \t").lower() not in (b"content-length", b"l"):
            continue
        digits = value.strip(b" \t")
        if not digits or not digits.isdigit():
            raise SipParseError("malformed Content-Length")
        digits = digits.lstrip(b"0") or b"0"
        if len(digits) > _MAX_LENGTH_DIGITS:
            raise MessageTooLarge("Content-Length out of range")
        values.add(int(digits))
    if not values:
        # RFC 3261 §18.3: on a stream the body's length is only known from Content-Length.
        raise SipParseError("missing Content-Length on a stream transport")
    if len(values) > 1:
        raise SipParseError("conflicting Content-Length values")
    return values.pop()
