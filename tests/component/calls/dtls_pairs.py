"""The DTLS phone pairs of the in-memory DTLS call tests: moved here from test_b2bua_dtls.py so
that no test module imports another."""

from __future__ import annotations

from gateway.core.sdp.model import MediaDescription, SessionDescription


def pairs(sd: SessionDescription, media: MediaDescription) -> list[tuple[str, str | None]]:
    """The media-level then the session-level attributes, as key exchanges read them."""
    return [(a[0], a[1]) for a in media.attributes] + [(a[0], a[1]) for a in sd.attributes]
