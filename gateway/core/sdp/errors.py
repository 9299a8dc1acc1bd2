"""SDP error roots: whose fault it is, and what to answer (STYLE.md habit 4).

:class:`SdpError` is the peer's fault: its session description is malformed, exceeds a limit, or
cannot be negotiated. A UAS answers the INVITE (or UPDATE) carrying it with ``sip_status`` 488 Not
Acceptable Here (RFC 3261 §21.4.26); when the bad SDP arrived in a response (an answer to our offer)
there is nothing to answer, and the caller ends the dialog instead.

:class:`LocalSdpError` is our own misuse of the SDP API (a bug in the gateway or a plugin), for
example a value that would put a line break into a serialized line. It is deliberately not an
:class:`SdpError`, so a bug is never answered as if the peer were at fault.

Reasons never contain secrets: they name the line and the defect, not the line's content.
"""

from __future__ import annotations


class SdpError(Exception):
    """The peer's session description is not acceptable; answer ``sip_status`` (488)."""

    sip_status: int = 488

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LocalSdpError(Exception):
    """The caller built or edited a session description wrongly (a bug, never the peer's fault)."""
