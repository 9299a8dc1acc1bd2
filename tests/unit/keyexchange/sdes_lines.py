"""The SDES engine tests' stand-in random source, crypto lines and event helpers, shared by
test_sdes_negotiation.py and test_sdes_mki.py so that no test module imports another."""

from __future__ import annotations

import base64

from gateway.core.interfaces import KeysReady, SrtpKeys
from gateway.core.media.srtp import SUITES
from gateway.plugins.keyexchange.sdes import SdesNegotiation


class CountingRandom:
    """A deterministic stand-in for a CSPRNG: every call returns new bytes; calls are counted."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.count = 0
        self.calls: list[int] = []

    def __call__(self, n: int) -> bytes:
        self.calls.append(n)
        self.count += 1
        start = (self.seed * 101 + self.count * 37) & 0xFF
        return bytes((start + 13 * i) & 0xFF for i in range(n))


def key_b64(suite: str, seed: int) -> str:
    n = SUITES[suite].key_salt_length
    return base64.b64encode(bytes((seed + 7 * i) & 0xFF for i in range(n))).decode()


def line(tag: int, suite: str, seed: int, tail: str = "") -> tuple[str, str | None]:
    return ("crypto", f"{tag} {suite} inline:{key_b64(suite, seed)}{tail}")


def events(negotiation: SdesNegotiation) -> list[object]:
    out = []
    while (event := negotiation.next_event()) is not None:
        out.append(event)
    return out


def keys_of(negotiation: SdesNegotiation) -> SrtpKeys:
    (event,) = events(negotiation)
    assert isinstance(event, KeysReady)
    return event.keys
