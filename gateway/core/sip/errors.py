"""SIP error roots: whose fault it is, and what to answer (STYLE.md habit 4).

A :class:`RemoteSipError` is caused by the peer's bytes; it carries the response a UAS should send
(``status`` and a ``reason`` phrase that names the defect) or ``status=None`` when the offending
message is a response and must be silently discarded (RFC 3261 §18.1.2, RFC 4475 §3.1.2).
A :class:`LocalSipError` is our own misuse of the API and is a bug.
"""

from __future__ import annotations


class SipError(Exception):
    """Root of every SIP-layer error."""


class LocalSipError(SipError):
    """The caller misused the SIP layer (a bug in the gateway or a plugin)."""


class RemoteSipError(SipError):
    """The peer sent something we cannot accept.

    ``status`` is the response to send (400, 505, 416, 420, 513 ...) or None for "discard".
    ``reason`` is a reason phrase suitable for the status line; it never contains secrets.
    """

    def __init__(self, reason: str, status: int | None = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status

    @property
    def discard(self) -> bool:
        return self.status is None


class SipParseError(RemoteSipError):
    """Malformed SIP: a request gets 400 (or the status given), a response is discarded."""


class MessageTooLarge(SipParseError):
    """A configured size limit was exceeded (RFC 3261 §21.5.14: 513 Message Too Large)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, status=513)
