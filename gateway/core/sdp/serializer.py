"""Write a session description as application/sdp bytes (RFC 8866 §5 order, CRLF line ends).

Values built by our own code are checked for what would corrupt the wire form: a CR, LF or NUL
inside a field would smuggle extra lines into the description, so it raises
:class:`LocalSdpError` (a bug on our side, never something to send).
"""

from __future__ import annotations

from gateway.core.sdp.errors import LocalSdpError
from gateway.core.sdp.model import Attributes, MediaDescription, SessionDescription


def serialize_sdp(sd: SessionDescription) -> bytes:
    """The description as bytes, every line ended by CRLF (RFC 8866 §5)."""
    # Plain loops and ifs, no generator or helper per line type: every call writes two or more
    # descriptions (docs/benchmarks.md, session 37).
    lines = [f"v={sd.version}", f"o={sd.origin}", f"s={sd.session_name}"]
    if sd.information is not None:
        lines.append(f"i={sd.information}")
    if sd.uri is not None:
        lines.append(f"u={sd.uri}")
    for email in sd.emails:
        lines.append(f"e={email}")
    for phone in sd.phones:
        lines.append(f"p={phone}")
    if sd.connection is not None:
        lines.append(f"c={sd.connection}")
    for bandwidth in sd.bandwidths:
        lines.append(f"b={bandwidth}")
    if not sd.times:
        raise LocalSdpError("a session description needs at least one t= line")
    for time in sd.times:
        lines.append(f"t={time.start} {time.stop}")
        for repeat in time.repeats:
            lines.append(f"r={repeat}")
        if time.zone is not None:
            lines.append(f"z={time.zone}")
    if sd.key is not None:
        lines.append(f"k={sd.key}")
    _attributes(lines, sd.attributes)
    for media in sd.media:
        _media(lines, media)
    text = "\r\n".join(lines)
    # A CR or LF inside a line shows as one more CR or LF than the joints hold.
    joints = len(lines) - 1
    if text.count("\r") != joints or text.count("\n") != joints or "\x00" in text:
        for line in lines:
            if "\r" in line or "\n" in line or "\x00" in line:
                # Never echo the line: it may hold key material.
                raise LocalSdpError(f"CR, LF or NUL inside an SDP {line[:1]}= line")
    return (text + "\r\n").encode("utf-8", "surrogateescape")


def _media(lines: list[str], media: MediaDescription) -> None:
    if not 0 <= media.port <= 65535:
        raise LocalSdpError("m= port out of range")
    port = str(media.port) if media.port_count is None else f"{media.port}/{media.port_count}"
    lines.append(" ".join(("m=" + media.media, port, media.proto, *media.formats)))
    if media.information is not None:
        lines.append(f"i={media.information}")
    for connection in media.connections:
        lines.append(f"c={connection}")
    for bandwidth in media.bandwidths:
        lines.append(f"b={bandwidth}")
    if media.key is not None:
        lines.append(f"k={media.key}")
    _attributes(lines, media.attributes)


def _attributes(lines: list[str], attributes: Attributes) -> None:
    for name, value in attributes.items:
        lines.append(f"a={name}" if value is None else f"a={name}:{value}")
