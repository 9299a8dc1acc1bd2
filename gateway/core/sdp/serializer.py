"""Write a session description as application/sdp bytes (RFC 8866 §5 order, CRLF line ends).

Values built by our own code are checked for what would corrupt the wire form: a CR, LF or NUL
inside a field would smuggle extra lines into the description, so it raises
:class:`LocalSdpError` (a bug on our side, never something to send).
"""

from __future__ import annotations

from gateway.core.sdp.errors import LocalSdpError
from gateway.core.sdp.model import Attributes, Bandwidth, MediaDescription, SessionDescription


def serialize_sdp(sd: SessionDescription) -> bytes:
    """The description as bytes, every line ended by CRLF (RFC 8866 §5)."""
    lines = [f"v={sd.version}", f"o={sd.origin}", f"s={sd.session_name}"]
    _optional(lines, "i", sd.information)
    _optional(lines, "u", sd.uri)
    lines.extend(f"e={email}" for email in sd.emails)
    lines.extend(f"p={phone}" for phone in sd.phones)
    if sd.connection is not None:
        lines.append(f"c={sd.connection}")
    _bandwidths(lines, sd.bandwidths)
    if not sd.times:
        raise LocalSdpError("a session description needs at least one t= line")
    for time in sd.times:
        lines.append(f"t={time.start} {time.stop}")
        lines.extend(f"r={repeat}" for repeat in time.repeats)
        _optional(lines, "z", time.zone)
    _optional(lines, "k", sd.key)
    _attributes(lines, sd.attributes)
    for media in sd.media:
        _media(lines, media)
    for line in lines:
        if "\r" in line or "\n" in line or "\x00" in line:
            # Never echo the line: it may hold key material.
            raise LocalSdpError(f"CR, LF or NUL inside an SDP {line[:1]}= line")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


def _media(lines: list[str], media: MediaDescription) -> None:
    if not 0 <= media.port <= 65535:
        raise LocalSdpError("m= port out of range")
    port = str(media.port) if media.port_count is None else f"{media.port}/{media.port_count}"
    lines.append(" ".join(("m=" + media.media, port, media.proto, *media.formats)))
    _optional(lines, "i", media.information)
    lines.extend(f"c={connection}" for connection in media.connections)
    _bandwidths(lines, media.bandwidths)
    _optional(lines, "k", media.key)
    _attributes(lines, media.attributes)


def _optional(lines: list[str], kind: str, value: str | None) -> None:
    if value is not None:
        lines.append(f"{kind}={value}")


def _bandwidths(lines: list[str], bandwidths: tuple[Bandwidth, ...]) -> None:
    lines.extend(f"b={bandwidth}" for bandwidth in bandwidths)


def _attributes(lines: list[str], attributes: Attributes) -> None:
    for name, value in attributes:
        lines.append(f"a={name}" if value is None else f"a={name}:{value}")
