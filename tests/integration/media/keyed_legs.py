"""A leg whose SRTP keys a test sets directly, for the relay tests that need keys without a
negotiation (test_keying_relay.py, test_session_tones.py): moved here so that no test module
imports another."""

from __future__ import annotations

from gateway.core.interfaces import SrtpKeys
from gateway.core.media.policy import BUILTIN_POLICIES
from gateway.core.media.security import LegSecurity


class FakeLeg(LegSecurity):
    """A leg whose keys the test sets directly (the negotiation is tested elsewhere)."""

    def __init__(self, policy: str) -> None:
        super().__init__(
            side="a",
            policy=BUILTIN_POLICIES[policy],
            secure_signalling=True,
            key_exchanges={},
            signalling="tls",
        )
        self.fake_keys: SrtpKeys | None = None

    def keys(self, index: int) -> SrtpKeys | None:
        return self.fake_keys
