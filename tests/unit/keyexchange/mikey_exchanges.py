"""The MIKEY parties, PSK and exchanges of the MIKEY negotiation tests: moved here from
test_mikey_negotiation.py so that no test module imports another."""

from __future__ import annotations

from gateway.core.interfaces import LegInfo
from gateway.plugins.keyexchange.mikey import MikeyKeyExchange
from gateway.plugins.keyexchange.mikey.engine import (
    MikeyNegotiation,
    MikeySettings,
    mikey_message_of,
)
from gateway.plugins.keyexchange.mikey.psk import PskStore
from gateway.plugins.keyexchange.mikey.replay import ReplayCache

NOW = 1_800_000_000.0
PSK = bytes(range(0x40, 0x60))
ALICE = LegInfo(call_id="c1", side="a", kind="account", name="alice", secure_signalling=False)
CARRIER = LegInfo(call_id="c1", side="b", kind="trunk", name="carrier", secure_signalling=False)


class CountingRandom:
    """A deterministic stand-in for a CSPRNG: new bytes on every call."""

    def __init__(self, seed: int) -> None:
        self.seed, self.count = seed, 0

    def __call__(self, n: int) -> bytes:
        self.count += 1
        start = (self.seed * 101 + self.count * 37) & 0xFF
        return bytes((start + 13 * i) & 0xFF for i in range(n))


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def exchange(
    seed: int,
    *,
    clock: Clock | None = None,
    psks: dict[tuple[str, str], bytes] | None = None,
    replay: ReplayCache | None = None,
    **settings: object,
) -> MikeyKeyExchange:
    return MikeyKeyExchange(
        settings=MikeySettings(**settings),  # type: ignore[arg-type]
        psks=PskStore(
            {("account", "alice"): PSK, ("trunk", "carrier"): PSK} if psks is None else psks
        ),
        clock=clock or Clock(),
        random_bytes=CountingRandom(seed),
        replay=replay,
    )


def events(negotiation: MikeyNegotiation) -> list[object]:
    out = []
    while (event := negotiation.next_event()) is not None:
        out.append(event)
    return out


def message(negotiation: MikeyNegotiation) -> bytes:
    (pair,) = negotiation.local_sdp_attributes()
    data = mikey_message_of([pair])
    assert data is not None
    return data
