"""A DTLS caller's handshake starts only once our 200 went to it (docs/architecture.md, "DTLS:
our answer before our ClientHello").

We answer a caller's ``a=setup:actpass`` with ``active`` (RFC 5763 §5): our ClientHello starts
the caller's handshake, and the caller can check our certificate only with the fingerprint of
our answer. A phone given the ClientHello first ignores it (baresip does) and the handshake
waits for our resend, 1 s (RFC 6347 §4.2.4.1), the call's media with it. The call's handshake
task runs at any checkpoint of the call's task; with media workers our 200 waits for
``MediaSession.applied()``, a Ping/Pong round trip to the worker, during which the task sent
the ClientHello first. Here the round trip is a short sleep of the virtual clock.

What the gateway sends the caller is noted in order: ``200`` as the call's ``_respond_a`` has
sent it, ``"dtls"`` for each datagram the handshake task hands to the caller leg's relay side.
In-memory signalling, virtual time; the relay's sockets and the phone's are real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

import gateway.plugins.keyexchange.dtls_srtp as dtls_plugin
from gateway.core.calls.call import Call as GatewayCall
from gateway.core.media.handshakes import CallHandshakes
from gateway.core.media.relay_api import RelaySide
from gateway.core.media.session import MediaSession
from gateway.core.sip.message import Response
from tests.component.calls.b2bua_env import start_b2bua
from tests.component.calls.dtls_callers import dtls_caller

WORKER_ROUND_TRIP = 0.002
"""Seconds of virtual time a media worker takes to confirm what the call applied."""


class NotingSide:
    """The caller leg's relay side, noting each datagram the handshake task sends out of it."""

    def __init__(self, side: RelaySide, noted: list[Any]) -> None:
        self._side = side
        self._noted = noted

    def send(self, packet: bytes, *, rtcp: bool = False, copy_to_sdp_address: bool = True) -> bool:
        self._noted.append("dtls")
        return self._side.send(packet, rtcp=rtcp, copy_to_sdp_address=copy_to_sdp_address)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._side, name)


@pytest.fixture
def noted(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    respond_a, side_of = GatewayCall._respond_a, CallHandshakes._side

    async def noting_respond_a(self: GatewayCall, response: Response) -> None:
        await respond_a(self, response)
        seen.append(response.status)

    def noting_side(self: CallHandshakes, side: str, index: int) -> RelaySide | None:
        found = side_of(self, side, index)
        if found is None or side != "a":
            return found
        return NotingSide(found, seen)

    monkeypatch.setattr(GatewayCall, "_respond_a", noting_respond_a)
    monkeypatch.setattr(CallHandshakes, "_side", noting_side)
    return seen


@pytest.mark.parametrize("worker", [False, True], ids=["in-process", "media-worker-round-trip"])
async def test_our_client_hello_to_a_dtls_caller_follows_our_200(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    noted: list[Any],
    worker: bool,
) -> None:
    if worker:
        applied = MediaSession.applied

        async def round_trip(self: MediaSession) -> None:
            await trio.sleep(WORKER_ROUND_TRIP)
            await applied(self)

        monkeypatch.setattr(MediaSession, "applied", round_trip)
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, plugins=[("dtls", dtls_plugin)])
    caller = await dtls_caller(nursery, env)
    with trio.fail_after(30):
        await caller.phone.keyed.wait()
    assert caller.phone.failure is None
    statuses = [item for item in noted if item != "dtls"]
    assert statuses[-1] == 200, noted
    assert "dtls" in noted
    # Nothing of the handshake went to the caller before our answer did.
    assert noted.index("dtls") > noted.index(200), noted
