"""The session description in a SIP message body (RFC 3261 §20.15, RFC 5621).

A body is ``application/sdp`` itself, or ``multipart/mixed`` (RFC 2046 §5.1) with one
``application/sdp`` part beside others. PSTN gateways speaking SIP-I or SIP-T (ITU-T Q.1912.5,
RFC 3204) put the ISUP message they interwork next to the SDP, marked
``Content-Disposition: signal;handling=optional``. A B2BUA builds each leg's body anew, so such
parts are not carried to the other leg; a part marked ``handling=required`` (the default when
there is no ``handling``, RFC 3261 §20.11) that is not SDP cannot be honoured, and the request
is refused with 415 listing what we accept (RFC 3261 §21.4.13, RFC 5621 §3.2).

Location parts (``application/pidf+xml``, RFC 6442 §4.1) are the exception: the B2BUA honours
them, passing them on to the trunk or dropping them by its location policy
(``gateway.core.calls.location``), so they are never refused, whatever their ``handling``;
:func:`read_body` hands them over as received. A location may also be the whole body, without
SDP (a location-only UPDATE, RFC 3311 §5.1 needing no offer, or a late-offer INVITE): RFC 8262
§3 lets a ``Content-ID`` header field of the message name its body, so that a Geolocation
``cid:`` reaches a lone ``application/pidf+xml`` body as it reaches a multipart's part.

Bounded like everything read from the network: at most ``MAX_PARTS`` parts of at most
``MAX_PART_HEADERS`` header lines each (the SIP parser bounds the body's size).
"""

from __future__ import annotations

import re
from typing import Protocol

import attrs

from gateway.core.sdp.errors import SdpError

SDP = "application/sdp"
MULTIPART_MIXED = "multipart/mixed"
PIDF = "application/pidf+xml"
ACCEPTED_BODY_TYPES = f"{SDP}, {MULTIPART_MIXED}, {PIDF}"  # a 415's Accept (RFC 3261 §21.4.13)
MAX_PARTS = 8
MAX_PART_HEADERS = 16
# RFC 2046 §5.1.1: 1 to 70 bchars, not ending in a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


class HeaderFields(Protocol):
    """The header fields of a message (``gateway.core.sip.message.Headers``)."""

    def get(self, name: str) -> str | None: ...


class UnsupportedBody(SdpError):
    """A body we cannot take the session description from: 415 Unsupported Media Type for a
    request that must carry one (RFC 3261 §21.4.13), 488 where it arrives in a response."""


@attrs.frozen
class BodyPart:
    """A location part of a multipart body as received: ``raw`` is the part byte for byte (its
    header lines, the blank line, its content), ``content`` its content alone."""

    media_type: str
    content_id: str | None  # Content-ID without its angle brackets (RFC 2392)
    raw: bytes
    content: bytes


def sdp_of(content_type: str | None, body: bytes) -> bytes:
    """The SDP in a message with ``body`` of ``content_type``: the body itself, or the SDP part
    of a multipart/mixed body; ``b""`` when the message carries none (no body, or only
    optional parts: a late offer).

    Raises :class:`UnsupportedBody` for a body type we do not read or a required part we cannot
    honour, and :class:`SdpError` for a malformed multipart body.
    """
    return read_body(content_type, body)[0]


def read_body(
    content_type: str | None, body: bytes, headers: HeaderFields | None = None
) -> tuple[bytes, tuple[BodyPart, ...]]:
    """:func:`sdp_of`, and the location parts (``application/pidf+xml``) of a multipart body
    beside it, or the body itself when it is a lone location (no SDP; none for any other
    body). ``headers``: the message's header fields, whose Content-ID and Content-Disposition
    a lone location takes (RFC 8262 §3, RFC 3261 §20.11); read only for such a body. Raises as
    :func:`sdp_of`."""
    if not body:
        return b"", ()
    media_type, parameters = _media_type(content_type)
    if media_type == SDP:
        return body, ()
    if media_type == MULTIPART_MIXED:
        return _multipart(body, parameters.get("boundary"))
    if media_type == PIDF:
        assert content_type is not None  # (a media type was read from it)
        return b"", (_lone_location(content_type, body, headers),)
    raise UnsupportedBody(f"unsupported body type {content_type or '(none)'}")


def _lone_location(content_type: str, body: bytes, headers: HeaderFields | None) -> BodyPart:
    """A body that is a location alone (RFC 6442 §4.1, by value), as the part it becomes in a
    multipart body of ours: its header lines (Content-Type, and the message's Content-ID and
    Content-Disposition, RFC 8262 §3: they describe the body) and its content. Its size is
    bounded as a multipart's location part is, where it is named (``location.py``)."""
    content_id = headers.get("Content-ID") if headers is not None else None
    disposition = headers.get("Content-Disposition") if headers is not None else None
    lines = [f"Content-Type: {content_type}"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    if disposition is not None:
        lines.append(f"Content-Disposition: {disposition}")
    raw = "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + body
    if content_id is not None:
        content_id = content_id.strip()
        if content_id[:1] == "<" and content_id[-1:] == ">":
            content_id = content_id[1:-1]
    return BodyPart(PIDF, content_id or None, raw, body)


def _media_type(value: str | None) -> tuple[str, dict[str, str]]:
    """Type/subtype in lower case and the parameters (names lower-cased, quotes removed)."""
    if value is None:
        return "", {}
    media_type, *pieces = value.split(";")
    parameters: dict[str, str] = {}
    for piece in pieces:
        name, sep, parameter = piece.partition("=")
        if sep:
            parameter = parameter.strip()
            if len(parameter) >= 2 and parameter[0] == parameter[-1] == '"':
                parameter = parameter[1:-1]
            parameters[name.strip().lower()] = parameter
    return media_type.strip().lower(), parameters


def _multipart(body: bytes, boundary: str | None) -> tuple[bytes, tuple[BodyPart, ...]]:
    if boundary is None or _BOUNDARY.fullmatch(boundary) is None:
        raise SdpError("multipart body without a valid boundary parameter (RFC 2046 §5.1.1)")
    # The CRLF before a delimiter line belongs to the delimiter (RFC 2046 §5.1.1); the first
    # delimiter may open the body.
    pieces = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("ascii"))
    if len(pieces) < 2:
        raise SdpError("multipart body without its boundary delimiter (RFC 2046 §5.1.1)")
    sdp: bytes | None = None
    locations: list[BodyPart] = []
    closed = False
    for count, piece in enumerate(pieces[1:], start=1):
        if piece.startswith(b"--"):
            closed = True  # the close delimiter: what follows is the epilogue
            break
        if count > MAX_PARTS:
            raise SdpError(f"multipart body with more than {MAX_PARTS} parts")
        line_end = piece.find(b"\r\n")
        if line_end < 0 or piece[:line_end].strip(b" \t"):
            raise SdpError("multipart delimiter line followed by other text (RFC 2046 §5.1.1)")
        raw = piece[line_end + 2 :]
        content_type, disposition, content_id, content = _part(raw)
        media_type, _ = _media_type(content_type or "text/plain")  # RFC 2046 §5.1 default
        if media_type == SDP:
            if sdp is not None:
                raise SdpError("multipart body with more than one application/sdp part")
            sdp = content
            continue
        if media_type == PIDF:
            # RFC 6442 §4.1: a location by value; honoured (passed on or dropped by policy) by
            # the B2BUA, whatever its handling.
            if content_id is not None and content_id[:1] == "<" and content_id[-1:] == ">":
                content_id = content_id[1:-1]
            locations.append(BodyPart(media_type, content_id or None, raw, content))
            continue
        _, disposition_parameters = _media_type(disposition or "")
        if disposition_parameters.get("handling", "required").lower() != "optional":
            raise UnsupportedBody(
                f"body part {media_type} is required (Content-Disposition handling) and "
                "not supported"
            )
    if not closed:
        raise SdpError("multipart body without its close delimiter (RFC 2046 §5.1.1)")
    return sdp or b"", tuple(locations)


def _part(part: bytes) -> tuple[str | None, str | None, str | None, bytes]:
    """A body part's Content-Type, Content-Disposition, Content-ID and content (RFC 2045 §3
    headers, folded lines joined)."""
    if part.startswith(b"\r\n"):
        return None, None, None, part[2:]  # no headers
    head, sep, content = part.partition(b"\r\n\r\n")
    if not sep:
        raise SdpError("multipart body part without the blank line after its headers")
    lines: list[str] = []
    for raw in head.decode("utf-8", "replace").split("\r\n"):
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] += " " + raw.strip()
        else:
            lines.append(raw)
    if len(lines) > MAX_PART_HEADERS:
        raise SdpError(f"multipart body part with more than {MAX_PART_HEADERS} header lines")
    fields: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise SdpError("multipart body part with a malformed header line")
        fields.setdefault(name.strip().lower(), value.strip())
    return (
        fields.get("content-type"),
        fields.get("content-disposition"),
        fields.get("content-id"),
        content,
    )


def body_parts_untrusted(content_type: str | None, body: bytes) -> tuple[tuple[str, bytes], ...]:
    """Every part of a body as (media type in lower case, content): a multipart/mixed body's
    parts (RFC 2046 §5.1; at most ``MAX_PARTS`` of at most ``MAX_PART_HEADERS`` header lines,
    a part without Content-Type being text/plain), any other body as its one part; none for
    no body. For a plugin that reads parts the B2BUA does not (an SRS's metadata request, RFC
    7866 §9). Raises :class:`SdpError` for a malformed multipart body."""
    if not body:
        return ()
    media_type, parameters = _media_type(content_type)
    if media_type != MULTIPART_MIXED:
        return ((media_type, body),)
    boundary = parameters.get("boundary")
    if boundary is None or _BOUNDARY.fullmatch(boundary) is None:
        raise SdpError("multipart body without a valid boundary parameter (RFC 2046 §5.1.1)")
    pieces = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("ascii"), MAX_PARTS + 1)
    parts: list[tuple[str, bytes]] = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            return tuple(parts)  # the close delimiter
        if len(parts) == MAX_PARTS:
            raise SdpError(f"multipart body with more than {MAX_PARTS} parts")
        line_end = piece.find(b"\r\n")
        if line_end < 0 or piece[:line_end].strip(b" \t"):
            raise SdpError("multipart delimiter line followed by other text (RFC 2046 §5.1.1)")
        part_type, _, _, content = _part(piece[line_end + 2 :])
        parts.append((_media_type(part_type or "text/plain")[0], content))
    raise SdpError("multipart body without its close delimiter (RFC 2046 §5.1.1)")
