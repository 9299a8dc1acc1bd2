"""Media-layer error roots: whose fault it is, and what to answer (STYLE.md habit 4).

- :class:`LocalMediaError`: our own misuse of the media API (a bug in the gateway or a plugin).
- :class:`RemoteMediaError`: the peer's bytes are unacceptable (a malformed RTP/RTCP header).
- :class:`PortsExhausted`: no media port pair is free; the B2BUA answers ``sip_status`` (503).

Every error carries ``sip_status``, the response a B2BUA should send when the error ends call setup.
"""

from __future__ import annotations


class MediaError(Exception):
    """Root of every media-layer error."""

    sip_status: int = 500


class LocalMediaError(MediaError):
    """The caller misused the media layer (a bug, never the peer's fault)."""


class RemoteMediaError(MediaError):
    """The peer sent media we cannot accept."""


class RtpParseError(RemoteMediaError):
    """An RTP or RTCP header is malformed or exceeds a limit."""


class PortsExhausted(MediaError):
    """Every media port pair of the configured range is in use.

    Not a bug and not the peer's fault: the node is full. RFC 3261 §21.5.4: 503 Service Unavailable
    lets the upstream load balancer try another node.
    """

    sip_status = 503
