"""Reading SIP messages that peers logged or received, as text."""

from __future__ import annotations

import re


def audio_media_line(message: str) -> str:
    """The m=audio line of a SIP message's SDP."""
    match = re.search(r"^m=audio .*$", message, re.MULTILINE)
    assert match is not None, f"no m=audio in:\n{message}"
    return match[0]
