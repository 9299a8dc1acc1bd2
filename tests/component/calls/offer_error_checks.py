"""The injected plugin bug and the Warning check of the in-memory offer error tests: moved here
from test_b2bua_offer_errors.py so that no test module imports another."""

from __future__ import annotations

from gateway.core.media.security import KeyExchangeFailed
from tests.component.calls.answer_error_checks import (
    SECRET,
)

PLUGIN_BUG = "key exchange failed: the sdes key exchange raised ValueError"


def plugin_bug() -> Exception:
    """What LegSecurity raises for an SDES plugin raising ValueError with key bytes in its
    text (tests/unit/media/test_leg_security.py shows each SDP step doing so)."""
    return KeyExchangeFailed("sdes", ValueError(f"inline:{SECRET}"))


def warning_of(response: object) -> str:
    return response.headers.get("Warning") or ""  # type: ignore[attr-defined]
