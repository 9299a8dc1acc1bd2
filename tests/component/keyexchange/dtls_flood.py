"""A phone behind a NAT keying a call's DTLS-SRTP leg through the call's handshake task while
spoofed ClientHellos flood the port (what test_dtls_queue_flood.py and
benchmarks/handshake_queue_flood.py share).

The gateway's end is the real ``dtls`` engine (we are the DTLS server, the caller's SDP
address is not where it sends from, so it is asked for a cookie, RFC 6347 §4.2.1) driven by
the real :class:`CallHandshakes`; the phone is the real engine as DTLS client. Around each
datagram the phone sends, ``spoofed`` ClientHellos from as many new sources (one each: the
flood's worst case for a fair queue) reach the port before the task runs again, and
``place(n, spoofed)`` says where in that burst the phone's ``n``-th datagram (from 0) lands.
The relay, the media session and the leg are stand-ins; time is trio's (virtual under
``autojump_clock``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import trio

from gateway.core.media.handshakes import CallHandshakes
from gateway.core.media.security import StreamSecurity
from gateway.plugins.keyexchange.dtls_srtp import DtlsNegotiation
from tests.unit.keyexchange.dtls_source_pairs import (
    NATTED,
    SDP_ADDRESS,
    ours_and_peer,
    stranger_for,
)

Address = tuple[str, int]


@attrs.define(eq=False)
class _Side:
    """The caller's relay side: the task's handler, and what goes out to the phone."""

    deliver_to_phone: Callable[[bytes], None]
    handler: Any = None
    rtcp_mux: bool = True

    def set_non_rtp_handler(self, handler: Any, *, rtcp: bool = False, **_: bool) -> None:
        if not rtcp:
            self.handler = handler

    def send(self, packet: bytes, *, rtcp: bool = False, copy_to_sdp_address: bool = True) -> bool:
        return True  # to the SDP address, where nobody is

    def send_to(self, packet: bytes, destination: Any, *, rtcp: bool = False) -> bool:
        if tuple(destination[:2]) == NATTED:
            self.deliver_to_phone(packet)
        return True  # a spoofed source's HelloVerifyRequest goes nowhere

    def latch_peer(self, source: Any, *, rtcp: bool = False, now: float) -> None:
        pass


@attrs.define(eq=False)
class _Stream:
    a: _Side
    b: _Side
    closed: bool = False


@attrs.define(eq=False)
class _Session:
    stream: _Stream
    dropped: dict[str, int] = attrs.Factory(dict)

    def peer_address(self, index: int, side: str, *, rtcp: bool = False) -> Address | None:
        return SDP_ADDRESS if side == "a" else None

    def stream_at(self, index: int) -> _Stream | None:
        return self.stream if index == 0 else None

    def count_dropped(self, side: str, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count


class _NoIce:
    def responders(self, index: int) -> tuple[None, None]:
        return None, None


@attrs.define(eq=False)
class _Leg:
    streams: dict[int, StreamSecurity]
    ice: _NoIce = attrs.Factory(_NoIce)

    def failed(self, key_exchange: str) -> None:
        pass

    def media_path_streams(self) -> dict[int, StreamSecurity]:
        return dict(self.streams)

    def offered_media_path_streams(self) -> dict[int, StreamSecurity]:
        return {}


class _Fed:
    """The gateway's engine as the task sees it, counting the phone's datagrams it is fed."""

    def __init__(self, engine: DtlsNegotiation) -> None:
        self._engine = engine
        self.from_phone = 0

    def receive_packet_from(self, packet: bytes, *, source: Any, now: float) -> None:
        if source is not None and tuple(source[:2]) == NATTED:
            self.from_phone += 1
        self._engine.receive_packet_from(packet, source=source, now=now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


@attrs.frozen
class FloodOutcome:
    keyed_at: float | None
    """When the phone's leg got keys (virtual seconds from the start), None: never."""
    failure: str | None
    phone_datagrams: int
    """Datagrams the phone sent (resends included)."""
    phone_dropped: int
    """Of those, never fed to the gateway's engine (dropped by the task's queue)."""
    spoofed: int
    """Spoofed ClientHellos sent in all."""


async def phone_under_flood(
    spoofed: int, place: Callable[[int, int], int], *, give_up: float = 30.0
) -> FloodOutcome:
    """Run one phone's handshake under the flood (module docstring) until keys, failure or
    ``give_up`` seconds; the task and the phone's timers on trio's clock."""
    ours, phone = ours_and_peer(we_serve=True)
    spoofed_hello = stranger_for(ours).packets_to_send(now=0.0)[0]
    to_phone: list[bytes] = []
    side = _Side(to_phone.append)
    session = _Session(_Stream(side, _Side(lambda packet: None)))
    fed = _Fed(ours)
    stream = StreamSecurity(negotiation=fed, key_exchange="dtls", media_path=True)  # type: ignore[arg-type]
    legs = {"a": _Leg({0: stream}), "b": None}
    keyed: list[float] = []
    failures: list[str] = []
    handshakes = CallHandshakes(
        session,  # type: ignore[arg-type]
        lambda: legs,  # type: ignore[arg-type,return-value]
        on_keys=lambda: keyed.append(trio.current_time()),
        on_failure=lambda _side, reason: failures.append(reason),
    )
    sent = flooded = 0
    next_source = 1

    def flood(count: int) -> None:
        nonlocal next_source, flooded
        for _ in range(count):
            host = f"10.{next_source >> 16 & 255}.{next_source >> 8 & 255}.{next_source & 255}"
            side.handler(spoofed_hello, (host, 5004))
            next_source += 1
        flooded += count

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handshakes.run)
        handshakes.poke()
        await trio.testing.wait_all_tasks_blocked()
        while not keyed and not failures and trio.current_time() - start < give_up:
            now = trio.current_time()
            for packet in to_phone:
                phone.receive_packet(packet, now=now)
            to_phone.clear()
            timer = phone.get_timer()
            if timer is not None and timer <= now:
                phone.handle_timer(now=now)
            for datagram in phone.packets_to_send(now=now):
                at = min(max(place(sent, spoofed), 0), spoofed)
                flood(at)
                side.handler(datagram, NATTED)
                flood(spoofed - at)
                sent += 1
            await trio.sleep(0.01)  # the task runs meanwhile; the phone looks again
        nursery.cancel_scope.cancel()
    return FloodOutcome(
        keyed_at=keyed[0] - start if keyed else None,
        failure=failures[0] if failures else None,
        phone_datagrams=sent,
        phone_dropped=sent - fed.from_phone,
        spoofed=flooded,
    )


__all__ = ["FloodOutcome", "phone_under_flood"]
