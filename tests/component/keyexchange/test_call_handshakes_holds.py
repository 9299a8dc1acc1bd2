"""The call's handshake task holding a side (``CallHandshakes.hold``/``release``) and counting
what it drops (docs/architecture.md, "DTLS: our answer before our ClientHello"; docs/metrics.md,
"Media drops by reason").

Fakes for the engine, the legs and the relay sides, so that each rule is seen alone: a held
stream's timer does not wake the task (a DTLS engine's timer is "due at once" before it starts:
the task would spin while our answer waits), at most ``HELD_DATAGRAMS`` are kept per port, a
new association (RFC 8842 §5: a new tls-id) is held until its answer went while an association
already answered is not, and every datagram the task does not feed is counted in the media
session's drops by reason. Virtual time (autojump_clock).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import pytest
import trio

from gateway.core.interfaces import KeyNegotiationEvent, NegotiationFailed
from gateway.core.media import handshakes
from gateway.core.media.handshakes import (
    FORK_SOURCES,
    HELD_DATAGRAMS,
    HELD_PER_SOURCE,
    QUEUE,
    QUEUE_KEPT_FOR_PEERS,
    QUEUE_PER_SOURCE,
    QUEUE_VERIFIED_FIRST,
    CallHandshakes,
)
from gateway.core.media.security import StreamSecurity
from gateway.plugins.keyexchange.zrtp.packets import is_zrtp_packet

CLIENT_HELLO = b"\x16\xfe\xfd" + b"\x00" * 20
"""A DTLS handshake record's first bytes (RFC 7983: 20..63 is DTLS)."""


@attrs.define(eq=False)
class Engine:
    """A media-path negotiation: claims DTLS, notes what it was given and when its timer ran."""

    tls_id: str = "association-one-0123456789"
    timer: float | None = 0.0
    """What get_timer() says: 0.0 is a DTLS engine's "due at once" before it started."""
    received: list[bytes] = attrs.Factory(list)
    timers_handled: int = 0
    timer_reads: int = 0
    outgoing: list[bytes] = attrs.Factory(lambda: [b"\x16ours"])

    def local_sdp_attributes(self) -> Sequence[tuple[str, str | None]]:
        return []

    def remote_sdp_attributes(self, attributes: Iterable[tuple[str, str | None]]) -> None:
        pass

    def claims_packet(self, first_byte: int, packet: bytes) -> bool:
        return 20 <= first_byte <= 63

    def receive_packet(self, packet: bytes, *, now: float) -> None:
        self.received.append(packet)

    def packets_to_send(self, *, now: float) -> list[bytes]:
        sent, self.outgoing = self.outgoing, []
        return sent

    def get_timer(self) -> float | None:
        self.timer_reads += 1
        return self.timer

    def handle_timer(self, *, now: float) -> None:
        self.timers_handled += 1
        self.timer = None

    def next_event(self) -> KeyNegotiationEvent | None:
        return None


@attrs.define(eq=False)
class Side:
    """A relay side: its handlers and what it was asked to send."""

    rtcp_mux: bool = True
    handlers: dict[bool, Any] = attrs.Factory(dict)
    sdp_address_only: dict[bool, bool] = attrs.Factory(dict)
    proves_peer: dict[bool, bool] = attrs.Factory(dict)
    sent: list[bytes] = attrs.Factory(list)
    copied: list[bool] = attrs.Factory(list)  # send's copy_to_sdp_address, per datagram

    handshake_per_source: dict[bool, bool] = attrs.Factory(dict)
    addressed: list[tuple[bytes, Any]] = attrs.Factory(list)  # send_to's, per datagram

    def set_non_rtp_handler(
        self,
        handler: Any,
        *,
        rtcp: bool = False,
        sdp_address_only: bool = False,
        proves_peer: bool = False,
        handshake_per_source: bool = False,
        other_phones: bool = False,
    ) -> None:
        self.handlers[rtcp] = handler
        self.sdp_address_only[rtcp] = sdp_address_only
        self.proves_peer[rtcp] = proves_peer
        self.handshake_per_source[rtcp] = handshake_per_source

    def send_to(self, packet: bytes, destination: Any, *, rtcp: bool = False) -> bool:
        self.addressed.append((packet, destination))
        return True

    def send(self, packet: bytes, *, rtcp: bool = False, copy_to_sdp_address: bool = True) -> bool:
        self.sent.append(packet)
        self.copied.append(copy_to_sdp_address)
        return True

    def latch_peer(self, source: Any, *, rtcp: bool = False, now: float) -> None:
        self.sent.append(("latch", source, rtcp))  # type: ignore[arg-type]


@attrs.define(eq=False)
class Stream:
    a: Side = attrs.Factory(Side)
    b: Side = attrs.Factory(Side)
    closed: bool = False


@attrs.define(eq=False)
class Session:
    """The media session as the task uses it: streams by index, and the drops it counts."""

    streams: dict[int, Stream] = attrs.Factory(lambda: {0: Stream()})
    drops: list[tuple[str, str, int]] = attrs.Factory(list)
    addresses: dict[tuple[int, str, bool], tuple[str, int]] = attrs.Factory(dict)
    """What each leg's SDP gave as its peer's address, per (stream, side, RTCP port)."""

    def peer_address(self, index: int, side: str, *, rtcp: bool = False) -> tuple[str, int] | None:
        return self.addresses.get((index, side, rtcp))

    def stream_at(self, index: int) -> Stream | None:
        return self.streams.get(index)

    def count_dropped(self, side: str, reason: str, count: int = 1) -> None:
        self.drops.append((side, reason, count))

    def dropped(self, reason: str) -> int:
        return sum(count for _, why, count in self.drops if why == reason)


class NoIce:
    """A leg's ICE (LegIce) when it does none."""

    def responders(self, index: int) -> tuple[None, None]:
        return None, None


@attrs.define(eq=False)
class Leg:
    streams: dict[int, StreamSecurity] = attrs.Factory(dict)

    offered: dict[int, StreamSecurity] = attrs.Factory(dict)
    """A peer's offer waiting for our answer (re-INVITE)."""

    ice: NoIce = attrs.Factory(NoIce)
    failures: list[str] = attrs.Factory(list)

    def failed(self, key_exchange: str) -> None:
        self.failures.append(key_exchange)

    def media_path_streams(self) -> dict[int, StreamSecurity]:
        return dict(self.streams)

    def offered_media_path_streams(self) -> dict[int, StreamSecurity]:
        return dict(self.offered)


def dtls_stream(engine: Engine) -> StreamSecurity:
    return StreamSecurity(negotiation=engine, key_exchange="dtls", media_path=True)  # type: ignore[arg-type]


@attrs.define(eq=False)
class Task:
    handshakes: CallHandshakes
    session: Session
    legs: dict[str, Leg]


async def start(
    nursery: trio.Nursery,
    forks: Sequence[Leg] = (),
    ringing: list[Leg] | None = None,
    unnamed_engines: set[type] | None = None,
    **legs: Leg,
) -> Task:
    """The task over legs ``a`` and ``b`` and, while B has none (set to None), the ringing
    ``forks``; or the forks in ``ringing`` (a list the test empties at the final answer),
    also once B has a leg (a fork's early answer, a 183 with SDP); ``unnamed_engines``: the
    gateway's (its CallManager's), else the call's own."""
    session = Session()
    found = {"a": legs.get("a", Leg()), "b": legs.get("b", Leg())}

    def still_ringing() -> Sequence[Leg]:
        if ringing is not None:
            return ringing
        return forks if found["b"] is None else ()

    handshakes = CallHandshakes(
        session,  # type: ignore[arg-type]
        lambda: found,  # type: ignore[arg-type,return-value]
        on_keys=lambda: None,
        on_failure=lambda side, reason: None,
        forks=still_ringing,  # type: ignore[arg-type]
        unnamed_engines=set() if unnamed_engines is None else unnamed_engines,
    )
    nursery.start_soon(handshakes.run)
    await trio.testing.wait_all_tasks_blocked()
    return Task(handshakes, session, found)


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def test_a_held_stream_does_not_wake_the_task_for_its_timer(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A DTLS engine's timer is due at once until it starts: while its side is held the task
    waits for a datagram or a release, not for that timer (which would wake it every
    millisecond for as long as our answer takes to go: a busy loop)."""
    engine = Engine()
    task = await start(nursery)
    task.legs["a"].streams[0] = dtls_stream(engine)  # our answer to A is made ...
    task.handshakes.hold("a")  # ... and not sent yet
    task.handshakes.poke()
    await settle()
    reads = engine.timer_reads
    await trio.sleep(1.0)  # a second of virtual time waiting for our answer to go
    assert engine.timer_reads - reads < 5, engine.timer_reads - reads
    assert engine.timers_handled == 0  # never while held
    task.handshakes.release("a")
    await settle()
    assert engine.timers_handled == 1


async def test_a_held_port_keeps_at_most_held_datagrams_and_counts_the_rest(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    engine = Engine()
    task = await start(nursery)
    task.legs["a"].streams[0] = dtls_stream(engine)
    task.handshakes.hold("a")
    task.handshakes.poke()
    await settle()
    extra = 3
    for n in range(HELD_DATAGRAMS + extra):
        task.handshakes.deliver("a", 0, CLIENT_HELLO + bytes([n]))
        await settle()
    assert task.handshakes.held_datagrams == HELD_DATAGRAMS
    assert task.handshakes.dropped == extra
    assert task.session.drops == [("a", "blocked", 1)] * extra
    task.handshakes.release("a")
    await settle()
    # The kept ones, in the order they came, then nothing more.
    assert engine.received == [CLIENT_HELLO + bytes([n]) for n in range(HELD_DATAGRAMS)]
    assert task.handshakes.held_datagrams == 0


async def test_datagrams_still_kept_when_the_call_ends_are_counted_dropped(
    autojump_clock: trio.abc.Clock,
) -> None:
    engine = Engine()
    async with trio.open_nursery() as nursery:
        task = await start(nursery)
        task.legs["a"].streams[0] = dtls_stream(engine)
        task.handshakes.hold("a")
        for _ in range(3):
            task.handshakes.deliver("a", 0, CLIENT_HELLO)
        await settle()
        assert task.handshakes.held_datagrams == 3
        nursery.cancel_scope.cancel()  # the call ended before our answer to A went
    assert task.handshakes.held_datagrams == 0
    assert task.session.drops == [("a", "blocked", 3)]
    assert task.handshakes.dropped == 3


async def test_datagrams_waiting_for_the_task_when_the_call_ends_are_counted_dropped(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A burst the task had not taken yet when the call ended is dropped, and counted so
    (``blocked``), as what a held port kept is; a datagram handed on after the task ended is
    dropped and counted too, never queued (review-d6: the queue's datagrams vanished
    uncounted with it)."""
    engine = Engine()
    async with trio.open_nursery() as nursery:
        task = await start(nursery)
        task.legs["a"].streams[0] = dtls_stream(engine)
        task.handshakes.poke()
        await settle()
        for _ in range(3):
            task.handshakes.deliver("a", 0, CLIENT_HELLO)
        task.handshakes.deliver("b", 0, CLIENT_HELLO)
        nursery.cancel_scope.cancel()  # before the task ran again
    # The first datagram woke the task before the cancel came: that round was its own.
    assert engine.received == [CLIENT_HELLO]
    assert sorted(task.session.drops) == [("a", "blocked", 2), ("b", "blocked", 1)]
    task.handshakes.deliver("a", 0, CLIENT_HELLO)
    assert task.session.drops[-1] == ("a", "blocked", 1)
    assert task.handshakes.dropped == 4


async def test_early_rtcp_of_a_stream_a_reinvite_removed_is_dropped_and_counted(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A callee's ClientHello on its RTCP port before its answer is kept for that port's
    handshake; a re-INVITE that removes the stream means it will never be fed: dropped, not
    kept until the call ends."""

    @attrs.define(eq=False)
    class NoRtcpYet(Engine):
        def rtcp_component(self) -> Engine | None:
            return None  # our role is not known before the answer

    task = await start(nursery)
    task.session.streams[0].b.rtcp_mux = False
    task.legs["b"].streams[0] = dtls_stream(NoRtcpYet())
    task.handshakes.poke()
    await settle()
    task.handshakes.deliver("b", 0, CLIENT_HELLO, rtcp=True)
    await settle()
    assert task.session.drops == []
    del task.legs["b"].streams[0]  # the re-INVITE's answer took the stream away
    task.handshakes.poke()
    await settle()
    assert task.session.drops == [("b", "blocked", 1)]


async def test_a_datagram_for_no_stream_is_counted(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A datagram a hooked socket handed on for a stream and port no handshake is driven on is
    counted: ``malformed`` on a leg that has no such stream (a re-INVITE removed it),
    ``blocked`` on a side with no leg settled yet (two forks ring: a fork's, as its media)."""
    task = await start(nursery, a=Leg({0: dtls_stream(Engine())}))
    task.legs["b"] = None  # type: ignore[assignment]
    task.handshakes.deliver("a", 1, CLIENT_HELLO)
    task.handshakes.deliver("b", 0, CLIENT_HELLO)
    await settle()
    assert task.session.drops == [("a", "malformed", 1), ("b", "blocked", 1)]
    assert task.handshakes.unclaimed == 1


async def test_a_datagram_no_engine_claims_is_counted_malformed(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    task = await start(nursery, a=Leg({0: dtls_stream(Engine())}))
    task.handshakes.deliver("a", 0, b"\x10zrtp?")  # RFC 7983: 16..19 is ZRTP, not DTLS
    await settle()
    assert task.session.drops == [("a", "malformed", 1)]


@pytest.mark.parametrize("new_association", [True, False], ids=["new-tls-id", "same-tls-id"])
async def test_a_new_association_is_held_again_until_its_answer_went(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, new_association: bool
) -> None:
    """Our first answer to A went (released). A re-INVITE's answer with a new tls-id starts a
    new handshake (RFC 8842 §5): our ClientHello of it must follow that answer too. One that
    keeps the tls-id keeps the association, and is not held (a handshake under way would
    pause until the answer goes)."""
    first = Engine(outgoing=[])
    task = await start(nursery)
    task.legs["a"].streams[0] = dtls_stream(first)
    task.handshakes.hold("a")
    task.handshakes.release("a")
    await settle()
    side = task.session.streams[0].a
    assert side.sent == []
    tls_id = "association-two-0123456789" if new_association else first.tls_id
    second = Engine(tls_id=tls_id, outgoing=[b"\x16second ClientHello"])
    task.legs["a"].streams[0] = dtls_stream(second)
    task.handshakes.hold("a")  # the re-INVITE's 200 is made, not sent yet
    task.handshakes.poke()
    await settle()
    if new_association:
        assert side.sent == []
        task.handshakes.release("a")
        await settle()
    assert side.sent == [b"\x16second ClientHello"]


async def test_an_association_driven_before_is_not_held_by_a_later_answer(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A leg we offered to (a callee) has our fingerprint from our offer: its association runs
    unheld, and our answer to its re-INVITE keeping the tls-id (RFC 8842 §5) does not pause it."""
    engine = Engine(timer=None)
    task = await start(nursery, b=Leg({0: dtls_stream(engine)}))
    task.handshakes.hold("b")
    task.handshakes.deliver("b", 0, CLIENT_HELLO)
    await settle()
    assert engine.received == [CLIENT_HELLO]
    assert task.handshakes.held_datagrams == 0


async def test_a_pending_offers_new_association_keeps_its_new_handshake_records(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """The peer re-offers with a new tls-id, our answer not made yet: an epoch-0 handshake
    record (its ClientHello, RFC 6347 §4.1) is kept for the new association; the one in force
    keeps its other records (an alert, epoch 1)."""
    in_force, new = Engine(timer=None, outgoing=[]), Engine(tls_id="association-two-0123456789")
    task = await start(nursery, a=Leg({0: dtls_stream(in_force)}))
    task.legs["a"].offered[0] = dtls_stream(new)
    task.handshakes.poke()
    alert = b"\x15\xfe\xfd\x00\x01" + b"\x00" * 20
    task.handshakes.deliver("a", 0, CLIENT_HELLO)
    task.handshakes.deliver("a", 0, alert)
    await settle()
    assert in_force.received == [alert]
    assert task.handshakes.held_datagrams == 1
    # Our answer is made (the new association in force) and held, then sent.
    task.legs["a"].streams[0] = task.legs["a"].offered.pop(0)
    task.handshakes.hold("a")
    task.handshakes.poke()
    await settle()
    assert new.received == []
    task.handshakes.release("a")
    await settle()
    assert new.received == [CLIENT_HELLO]
    assert task.session.drops == []


async def test_after_the_handshakes_a_dtls_record_is_no_drop_and_anything_else_malformed(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The call ended its handshakes; its streams close just after. A phone's close_notify as
    it hangs up (RFC 7983: 20..63 is DTLS) is the key exchange's own end, not malformed media
    (an operator alerting on ``malformed`` got one per port of every DTLS-SRTP hang-up);
    anything else there is counted ``malformed``."""
    async with trio.open_nursery() as nursery:
        task = await start(nursery, a=Leg({0: dtls_stream(Engine(timer=None))}))
        nursery.cancel_scope.cancel()
    handler = task.session.streams[0].a.handlers[False]
    assert handler is not None
    close_notify = b"\x15\xfe\xfd\x00\x01" + b"\x00" * 20  # an alert record, epoch 1
    handler(close_notify, ("127.0.0.1", 4000))
    assert task.session.drops == []
    handler(b"\x00\x01stun?", ("127.0.0.1", 4000))
    assert task.session.drops == [("a", "malformed", 1)]


class NoTlsId:
    """A third-party media-path engine written without ``tls_id`` (the Engine above, without
    that attribute)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        if name == "tls_id":
            raise AttributeError(name)
        return getattr(self.engine, name)


async def test_an_engine_without_tls_id_is_held_again_when_a_new_engine_answers(
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An engine that names no association (docs/plugin_hooks.md, "Media-path engines") may
    start a new one at any re-offer: a new engine object is held until our answer goes, as the
    first was; the same engine (our 200 after a 183 with the same answer) is not held again;
    said once in the log, not per call or stream. It was held only until the side's first
    answer."""
    first = Engine(outgoing=[])
    task = await start(nursery)
    with caplog.at_level(logging.WARNING, logger="gateway.core.media.handshakes"):
        task.legs["a"].streams[0] = dtls_stream(NoTlsId(first))  # type: ignore[arg-type]
        task.handshakes.hold("a")
        task.handshakes.release("a")
        await settle()
        side = task.session.streams[0].a
        first.outgoing = [b"\x16first, still"]
        task.handshakes.hold("a")  # the 200 after the 183: the same engine, not held
        task.handshakes.poke()
        await settle()
        assert side.sent == [b"\x16first, still"]
        second = Engine(outgoing=[b"\x16second ClientHello"])
        task.legs["a"].streams[0] = dtls_stream(NoTlsId(second))  # type: ignore[arg-type]
        task.handshakes.hold("a")  # a re-INVITE's 200 with a new engine, not sent yet
        task.handshakes.poke()
        await settle()
        assert side.sent == [b"\x16first, still"]
        task.handshakes.release("a")
        await settle()
        assert side.sent == [b"\x16first, still", b"\x16second ClientHello"]
    warned = [r.getMessage() for r in caplog.records if "has no tls_id" in r.getMessage()]
    assert len(warned) == 1, warned  # two engines, many rounds: once per engine type
    assert "test_call_handshakes_holds.NoTlsId has no tls_id" in warned[0]


async def drive_one(nursery: trio.Nursery, engine: Any, unnamed_engines: set[type]) -> None:
    task = await start(nursery, unnamed_engines=unnamed_engines)
    task.legs["a"].streams[0] = dtls_stream(engine)
    task.handshakes.hold("a")
    task.handshakes.release("a")
    await settle()


async def test_the_no_tls_id_warning_is_the_gateways_once_per_engine_type(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Said once per engine type by each gateway (its calls share its CallManager's set), not
    once per process: a module-level set, never emptied, kept a second gateway (a test) from
    saying it."""
    assert not hasattr(handshakes, "_UNNAMED_ENGINES")
    one_gateway: set[type] = set()
    with caplog.at_level(logging.WARNING, logger="gateway.core.media.handshakes"):
        await drive_one(nursery, NoTlsId(Engine(outgoing=[])), one_gateway)
        await drive_one(nursery, NoTlsId(Engine(outgoing=[])), one_gateway)  # another call
        assert one_gateway == {NoTlsId}
        await drive_one(nursery, NoTlsId(Engine(outgoing=[])), set())  # another gateway
    warned = [r.getMessage() for r in caplog.records if "has no tls_id" in r.getMessage()]
    assert len(warned) == 2, warned


class BytesTlsId(NoTlsId):
    """A media-path engine whose ``tls_id`` is no str: its plugin's bug."""

    tls_id = b"association-one"


async def test_a_tls_id_that_is_no_str_is_said_to_be_the_plugins_bug(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Taken as an engine without one (a new engine object, a new association), and the log
    says what it is: not "has no tls_id", which sent its author looking for a missing
    attribute."""
    with caplog.at_level(logging.WARNING, logger="gateway.core.media.handshakes"):
        await drive_one(nursery, BytesTlsId(Engine(outgoing=[])), set())
    (record,) = [r for r in caplog.records if "media-path key exchange engine" in r.getMessage()]
    message = record.getMessage()
    assert "test_call_handshakes_holds.BytesTlsId has a tls_id of type bytes" in message
    assert "a bug of its plugin" in message and "has no tls_id" not in message
    assert record.levelno == logging.ERROR


def zrtp_packet(message: bytes) -> bytes:
    """A ZRTP packet (RFC 6189 §5): 0x10, a flag octet, the sequence number, the magic cookie,
    the SSRC, then the message (its preamble, length and type block); CRC left out."""
    return b"\x10\x00\x00\x07ZRTP" + b"\x00\x00\x00\x01" + b"\x50\x5a\x00\x03" + message


@attrs.define(eq=False)
class ZrtpEngine(Engine):
    """Claims what the ``zrtp`` engine claims: ZRTP packets (RFC 6189 §5)."""

    def claims_packet(self, first_byte: int, packet: bytes) -> bool:
        return is_zrtp_packet(packet)


@attrs.define(eq=False)
class PluginEngine(Engine):
    """A third-party media-path engine (not one of ours): claims 16..19 with its own marker."""

    def claims_packet(self, first_byte: int, packet: bytes) -> bool:
        return 16 <= first_byte <= 19 and packet[4:8] == b"EXKX"


async def test_after_the_handshakes_a_zrtp_streams_zrtp_packet_is_no_drop(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A ZRTP peer's last packets of an exchange that was over (a Conf2ACK or Confirm2 sent
    again, RFC 6189 §5.8; a GoClear, §5.14) reaching a ZRTP stream's socket after the call
    ended its handshakes are the key exchange's own traffic, as a DTLS close_notify is: no
    drop (they were counted ``malformed``). On a DTLS-SRTP stream a ZRTP packet is nobody's
    there, as it was while the call was up: ``malformed``; and garbage in ZRTP's first-octet
    range without the magic cookie is ``malformed`` on the ZRTP stream too."""
    zrtp = StreamSecurity(negotiation=ZrtpEngine(timer=None), key_exchange="zrtp", media_path=True)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        task = await start(nursery, a=Leg({0: zrtp}), b=Leg({0: dtls_stream(Engine(timer=None))}))
        nursery.cancel_scope.cancel()
    on_zrtp = task.session.streams[0].a.handlers[False]
    on_dtls = task.session.streams[0].b.handlers[False]
    conf2ack = zrtp_packet(b"Conf2ACK")
    go_clear = zrtp_packet(b"GoClear ")
    on_zrtp(conf2ack, ("127.0.0.1", 4000))
    on_zrtp(go_clear, ("127.0.0.1", 4000))
    assert task.session.drops == []
    on_zrtp(b"\x10\x00\x00\x07XXXX" + b"\x00" * 12, ("127.0.0.1", 4000))
    assert task.session.drops == [("a", "malformed", 1)]
    on_dtls(conf2ack, ("127.0.0.1", 4002))
    assert task.session.drops == [("a", "malformed", 1), ("b", "malformed", 1)]


async def test_after_the_handshakes_a_plugin_engines_own_packet_is_no_drop(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The engines' ``claims_packet`` says what is their own after the handshakes too
    (docs/plugin_hooks.md "Media-path engines"), not the key exchange's name: a plugin
    engine's last packet is no drop, as ZRTP's; what it does not claim is ``malformed``."""
    engine = PluginEngine(timer=None)
    stream = StreamSecurity(negotiation=engine, key_exchange="example-kx", media_path=True)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        task = await start(nursery, a=Leg({0: stream}))
        nursery.cancel_scope.cancel()
    handler = task.session.streams[0].a.handlers[False]
    handler(b"\x10\x00\x00\x01EXKX" + b"\x00" * 8, ("127.0.0.1", 4000))
    assert task.session.drops == []
    assert engine.received == []  # asked, never fed: it has ended
    handler(zrtp_packet(b"Conf2ACK"), ("127.0.0.1", 4000))
    assert task.session.drops == [("a", "malformed", 1)]


@attrs.define(eq=False)
class FailingEngine(Engine):
    """A plugin engine with a bug: its ``claims_packet`` raises on what it does not know."""

    def claims_packet(self, first_byte: int, packet: bytes) -> bool:
        raise ValueError("no such packet")


async def test_after_the_handshakes_an_engine_whose_claims_packet_raises_claims_nothing(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A plugin engine's ``claims_packet`` raising on a datagram from the network after the
    handshakes (its bug) is no claim: ``malformed``, the engine after it still asked, logged
    once. Raised, it left the handler: with media workers every such datagram was logged
    with its traceback (remote_relay), a log flood anyone could set off."""
    engine = FailingEngine(timer=None)
    failing = StreamSecurity(negotiation=engine, key_exchange="example-kx", media_path=True)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        task = await start(nursery, a=Leg({0: failing}))
        nursery.cancel_scope.cancel()
    handler = task.session.streams[0].a.handlers[False]
    with caplog.at_level(logging.ERROR, logger=handshakes.__name__):
        handler(b"\x10\x00\x00\x01EXKX" + b"\x00" * 8, ("127.0.0.1", 4000))
        handler(b"\x11\x00\x00\x01EXKX" + b"\x00" * 8, ("127.0.0.1", 4000))
    assert task.session.drops == [("a", "malformed", 1), ("a", "malformed", 1)]
    assert len([r for r in caplog.records if "claims_packet" in r.getMessage()]) == 1
    handshakes._after_handshakes(
        task.session,  # type: ignore[arg-type]
        "a",
        (FailingEngine(timer=None), PluginEngine(timer=None)),  # type: ignore[arg-type]
    )(b"\x10\x00\x00\x01EXKX" + b"\x00" * 8, ("127.0.0.1", 4000))
    assert len(task.session.drops) == 2  # the second engine claimed it


PEER = ("192.0.2.10", 4000)
"""A callee's media address, as its answer's SDP gives it."""
STRANGER = ("198.51.100.7", 5000)


def hello(n: int) -> bytes:
    return CLIENT_HELLO + bytes([n])


async def test_before_a_lone_callees_answer_its_sdp_address_wins_over_a_stranger(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Before our offer's answer no address is known to tell the callee's handshake from a
    forged one: each source's datagrams are kept apart. The answer's address decides; a
    stranger's ClientHello, first to come, never reaches the callee's engine (it would have
    taken its place: the fingerprint check fails and the call ends, RFC 5763 §5)."""
    engine = Engine(timer=None)
    task = await start(nursery, b=Leg({0: dtls_stream(engine)}))
    handler = task.session.streams[0].b.handlers[False]
    handler(hello(1), STRANGER)
    handler(hello(2), PEER)
    handler(hello(3), STRANGER)
    handler(hello(4), PEER)
    await settle()
    assert engine.received == [] and task.session.drops == []
    task.session.addresses[(0, "b", False)] = PEER  # its answer came
    task.handshakes.poke()
    await settle()
    assert engine.received == [hello(2), hello(4)]
    assert task.session.drops == [("b", "blocked", 2)]
    handler(hello(5), STRANGER)  # after the answer: as before, the relay's latch decides
    await settle()
    assert engine.received == [hello(2), hello(4), hello(5)]


async def test_a_callee_that_answered_is_fed_while_its_sdp_holds_with_no_address(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Once the callee's answer gave its address, its datagrams are its handshake's, also while
    a later offer/answer holds the call with no address (c=0.0.0.0, RFC 3264 §8.4): that is no
    callee our offer waits for, and the relay's latch decides as before (its ``_addressed``
    stays set). They were kept apart until the hold ended, a new handshake or the association's
    alert with them, when no datagram had come before the answer."""
    engine = Engine(timer=None)
    task = await start(nursery, b=Leg({0: dtls_stream(engine)}))
    handler = task.session.streams[0].b.handlers[False]
    task.session.addresses[(0, "b", False)] = PEER  # its answer came
    task.handshakes.poke()
    await settle()
    del task.session.addresses[(0, "b", False)]  # a re-INVITE: on hold, c=0.0.0.0
    task.handshakes.poke()
    await settle()
    handler(hello(1), PEER)
    await settle()
    assert engine.received == [hello(1)]
    assert task.session.drops == []


async def test_a_lone_callee_behind_a_nat_keeps_its_first_sources_handshake(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """No source is the answer's address (a NAT rewrote it): a lone callee's first source is
    fed, as the first source latched the socket before."""
    engine = Engine(timer=None)
    task = await start(nursery, b=Leg({0: dtls_stream(engine)}))
    handler = task.session.streams[0].b.handlers[False]
    handler(hello(1), STRANGER)
    handler(hello(2), ("203.0.113.9", 6000))
    await settle()
    task.session.addresses[(0, "b", False)] = PEER
    task.handshakes.poke()
    await settle()
    assert engine.received == [hello(1)]
    assert task.session.drops == [("b", "blocked", 1)]


@pytest.mark.parametrize("behind_a_nat", [False, True], ids=["sdp-address", "nat"])
async def test_forks_datagrams_are_kept_per_source_and_the_answering_forks_fed(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, behind_a_nat: bool
) -> None:
    """Two forks ring and start their handshakes (RFC 3261 §16.7, RFC 5763 §5): B's sockets
    take both; when one answers, the datagrams from its answer's address go to its engine in
    the order they came, the other fork's are dropped (``blocked``, a fork's media) and never
    fed later. Behind a NAT (no source is the answer's address) neither is fed: which fork
    sent is not known, and the answering fork's handshake begins at its retransmission."""
    first, second = Engine(timer=None), Engine(timer=None)
    forks = [Leg({0: dtls_stream(first)}), Leg({0: dtls_stream(second)})]
    task = await start(nursery, forks=forks, b=None)  # type: ignore[arg-type]
    task.handshakes.poke()
    await settle()
    handler = task.session.streams[0].b.handlers[False]
    handler(hello(1), STRANGER)  # the first fork's
    handler(hello(2), PEER)  # the second fork's
    handler(hello(3), STRANGER)
    await settle()
    assert task.session.drops == []
    task.legs["b"] = forks[1]  # the second fork answered
    task.session.addresses[(0, "b", False)] = ("10.0.0.2", 4000) if behind_a_nat else PEER
    task.handshakes.poke()
    await settle()
    assert first.received == []
    if behind_a_nat:
        assert second.received == []
        assert task.session.drops == [("b", "blocked", 2), ("b", "blocked", 1)]
    else:
        assert second.received == [hello(2)]
        assert task.session.drops == [("b", "blocked", 2)]
    task.session.drops.clear()
    if behind_a_nat:
        # Which source was which fork is not known: none is kept out, the answering fork's
        # resend starts its handshake (it was dropped as a losing fork's, every resend, and
        # the handshake timed out: the call ended).
        handler(hello(4), PEER)
        await settle()
        assert second.received == [hello(4)]
        assert task.session.drops == []
        return
    handler(hello(4), STRANGER)  # the first fork resends before its CANCEL reached it
    await settle()
    assert hello(4) not in second.received
    assert task.session.drops == [("b", "blocked", 1)]


async def test_at_most_fork_sources_per_port_and_held_datagrams_per_source_are_kept(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Memory is bounded per port: ``FORK_SOURCES`` sources, ``HELD_DATAGRAMS`` each; the
    rest is dropped and counted (``blocked``), also what is still kept when the call ends."""
    forks = [Leg({0: dtls_stream(Engine(timer=None))}) for _ in range(2)]
    async with trio.open_nursery() as inner:
        task = await start(inner, forks=forks, b=None)  # type: ignore[arg-type]
        task.handshakes.poke()
        await settle()
        handler = task.session.streams[0].b.handlers[False]
        for n in range(FORK_SOURCES + 1):
            handler(hello(n), ("198.51.100.7", 5000 + n))
            await settle()
        assert task.session.drops == [("b", "blocked", 1)]
        for _ in range(HELD_DATAGRAMS + 2):
            handler(hello(0), ("198.51.100.7", 5000))
            await settle()
        assert task.session.drops == [("b", "blocked", 1)] * 4
        inner.cancel_scope.cancel()
    kept = FORK_SOURCES - 1 + HELD_DATAGRAMS
    assert task.session.drops[-1] == ("b", "blocked", kept)


async def test_the_forks_that_lost_to_an_early_answer_are_fed_when_one_of_them_is_b(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A fork answered early (a 183 with SDP): the other's sources lost. That fork then failed
    and the other answered: its datagrams go to its own handshake, not dropped as a loser's."""
    first, second = Engine(timer=None), Engine(timer=None)
    forks = [Leg({0: dtls_stream(first)}), Leg({0: dtls_stream(second)})]
    task = await start(nursery, forks=forks, b=None)  # type: ignore[arg-type]
    task.handshakes.poke()
    await settle()
    handler = task.session.streams[0].b.handlers[False]
    handler(hello(1), PEER)  # the first fork's
    handler(hello(2), STRANGER)  # the second fork's
    await settle()
    task.legs["b"] = forks[0]  # the first fork's 183 with SDP
    task.session.addresses[(0, "b", False)] = PEER
    task.handshakes.poke()
    await settle()
    assert first.received == [hello(1)]
    task.legs["b"] = forks[1]  # it failed; the second fork answered
    task.session.addresses[(0, "b", False)] = STRANGER
    task.handshakes.poke()
    await settle()
    handler(hello(3), STRANGER)
    await settle()
    assert second.received == [hello(3)]


@pytest.mark.parametrize("final", [1, 0], ids=["other-fork-answers", "early-fork-answers"])
async def test_forks_datagrams_are_kept_after_an_early_answer_until_the_final_one(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, final: int
) -> None:
    """The first fork answers early (a 183 with SDP) while the second still rings, then one
    answers with its 200 (RFC 3261 §12.1.2: several early dialogs). The second fork's
    ClientHellos, sent as it rang, are kept (not fed to the first fork's engine, whose
    fingerprint they would fail) until the final answer: if it is the second fork's, they are
    its handshake's start, in the order they came (they were dropped, and its handshake waited
    for its resend: 1 s, doubling); if the early fork's, they are dropped and counted
    ``blocked``. Bounded as before the answer: ``HELD_DATAGRAMS`` per source."""
    first, second = Engine(timer=None), Engine(timer=None)
    forks = [Leg({0: dtls_stream(first)}), Leg({0: dtls_stream(second)})]
    ringing = list(forks)
    task = await start(nursery, forks=forks, ringing=ringing, b=None)  # type: ignore[arg-type]
    task.handshakes.poke()
    await settle()
    handler = task.session.streams[0].b.handlers[False]
    handler(hello(1), PEER)  # the first fork's
    handler(hello(2), STRANGER)  # the second fork's
    await settle()
    task.legs["b"] = forks[0]  # the first fork's 183 with SDP
    task.session.addresses[(0, "b", False)] = PEER
    task.handshakes.poke()
    await settle()
    assert first.received == [hello(1)] and second.received == []
    assert task.session.drops == []
    for n in range(HELD_DATAGRAMS):  # the second fork resends while the first one rings
        handler(hello(3 + n), STRANGER)
        await settle()
    assert first.received == [hello(1)]
    assert task.session.drops == [("b", "blocked", 1)]  # one beyond HELD_DATAGRAMS
    task.session.drops.clear()
    ringing.clear()  # a 200: the final answer
    task.legs["b"] = forks[final]
    task.session.addresses[(0, "b", False)] = (PEER, STRANGER)[final]
    task.handshakes.poke()
    await settle()
    kept = [hello(n) for n in range(2, 2 + HELD_DATAGRAMS)]
    if final == 1:
        assert second.received == kept
        assert first.received == [hello(1)]
        assert task.session.drops == []
    else:
        assert second.received == []
        assert first.received == [hello(1)]
        assert task.session.drops == [("b", "blocked", HELD_DATAGRAMS)]


# -- the SDP address first (docs/media_security.md, "Forged handshakes") ------------------------


@attrs.define(eq=False)
class RestartingEngine(Engine):
    """An engine with the optional ``restart_handshake`` (the ``dtls`` engine's)."""

    log: list[object] = attrs.Factory(list)
    sdp_address_only: bool = False
    events: list[KeyNegotiationEvent] = attrs.Factory(list)

    def receive_packet(self, packet: bytes, *, now: float) -> None:
        super().receive_packet(packet, now=now)
        self.log.append(packet)

    def restart_handshake(self, *, now: float) -> None:
        self.log.append("restart")

    def next_event(self) -> KeyNegotiationEvent | None:
        return self.events.pop(0) if self.events else None


async def caller_task(
    nursery: trio.Nursery, engine: Engine, failures: list[tuple[str, str]] | None = None
) -> tuple[Task, Any]:
    """The task over a caller (side A) whose SDP gave PEER, and the handler of its RTP port."""
    session = Session()
    session.addresses[(0, "a", False)] = PEER
    legs = {"a": Leg({0: dtls_stream(engine)}), "b": Leg()}
    handshakes = CallHandshakes(
        session,  # type: ignore[arg-type]
        lambda: legs,  # type: ignore[arg-type,return-value]
        on_keys=lambda: None,
        on_failure=lambda side, reason: (failures if failures is not None else []).append(
            (side, reason)
        ),
    )
    nursery.start_soon(handshakes.run)
    handshakes.poke()
    await settle()
    return Task(handshakes, session, legs), session.streams[0].a.handlers[False]  # type: ignore[arg-type]


async def test_the_sdp_address_after_a_stranger_restarts_the_handshake_before_keys(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A stranger's ClientHello reached the caller's port first (the relay latched it, not
    connected) and was fed: OpenSSL's state holds it. When the caller's SDP address speaks,
    the handshake starts afresh before its datagram is fed; once, not for each datagram."""
    engine = RestartingEngine(timer=None)
    task, handler = await caller_task(nursery, engine)
    assert task.session.streams[0].a.sdp_address_only == {False: False}
    handler(hello(1), STRANGER)
    await settle()
    handler(hello(2), PEER)
    await settle()
    handler(hello(3), PEER)
    await settle()
    assert engine.log == [hello(1), "restart", hello(2), hello(3)]
    assert task.session.drops == []


async def test_the_sdp_address_first_restarts_nothing(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    engine = RestartingEngine(timer=None)
    _, handler = await caller_task(nursery, engine)
    handler(hello(1), PEER)
    await settle()
    handler(hello(2), PEER)
    await settle()
    assert engine.log == [hello(1), hello(2)]


async def test_an_engine_without_restart_handshake_is_fed_as_before(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The method is optional (docs/plugin_hooks.md, "Media-path engines"): a plugin engine
    written before it is fed both sources' datagrams, in order, as it was."""
    engine = Engine(timer=None)
    _, handler = await caller_task(nursery, engine)
    handler(hello(1), STRANGER)
    await settle()
    handler(hello(2), PEER)
    await settle()
    assert engine.received == [hello(1), hello(2)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_sdp_address_only_refuses_another_source_and_says_so(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """``[plugins.dtls] sdp_address_only``: the relay is told (no other source latches), and
    what another source sends (a peer behind a NAT) is refused here, counted
    ``unlatched_source``, said in a WARNING once per port and in the call's end reason."""
    failures: list[tuple[str, str]] = []
    engine = RestartingEngine(timer=None, sdp_address_only=True)
    task, handler = await caller_task(nursery, engine, failures)
    assert task.session.streams[0].a.sdp_address_only == {False: True}
    handler(hello(1), STRANGER)
    handler(hello(2), STRANGER)
    await settle()
    assert engine.log == []
    assert task.session.drops == [("a", "unlatched_source", 1), ("a", "unlatched_source", 1)]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "198.51.100.7:5000" in warning and "192.0.2.10:4000" in warning
    assert "sdp_address_only" in warning
    engine.events.append(NegotiationFailed("DTLS handshake timed out", 488))
    handler(hello(3), PEER)
    await settle()
    assert engine.log == [hello(3)]
    assert failures == [
        (
            "a",
            "DTLS handshake timed out (datagrams from a source other than the SDP address "
            "refused: sdp_address_only)",
        )
    ]


async def test_a_strangers_kept_datagrams_are_dropped_when_the_sdp_address_speaks_before_our_answer(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Our answer to the caller is made, not sent yet (held): a stranger's datagrams are kept
    as anyone's (the caller might be behind a NAT). The caller's SDP address then speaks:
    what the stranger sent is dropped there (counted ``unlatched_source``), and at the release
    the engine gets the caller's datagram alone, with no restart (nothing else was fed)."""
    engine = RestartingEngine(timer=None)
    session = Session()
    session.addresses[(0, "a", False)] = PEER
    legs = {"a": Leg({0: dtls_stream(engine)}), "b": Leg()}
    handshakes = CallHandshakes(
        session,  # type: ignore[arg-type]
        lambda: legs,  # type: ignore[arg-type,return-value]
        on_keys=lambda: None,
        on_failure=lambda side, reason: None,
    )
    handshakes.hold("a")
    nursery.start_soon(handshakes.run)
    handshakes.poke()
    await settle()
    handler = session.streams[0].a.handlers[False]
    handler(hello(1), STRANGER)
    handler(hello(2), STRANGER)
    await settle()
    assert handshakes.held_datagrams == 2 and session.drops == []
    handler(hello(3), PEER)
    await settle()
    assert session.drops == [("a", "unlatched_source", 2)]
    assert handshakes.held_datagrams == 1
    handshakes.release("a")
    await settle()
    assert engine.log == [hello(3)]


@attrs.define(eq=False)
class ServerEngine(Engine):
    """The ``dtls`` engine as DTLS server: what it sends answers its peer's ClientHello."""

    answers_only: bool = True


@pytest.mark.parametrize(
    ("make_engine", "copied"),
    [(ServerEngine, False), (Engine, True)],
    ids=["answers-only", "without-the-attribute"],
)
async def test_what_only_answers_the_peer_is_never_copied_to_the_sdp_address(
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    make_engine: type[Engine],
    copied: bool,
) -> None:
    """docs/media_security.md, "Forged handshakes": while another source holds the port
    before keys the relay copies our datagrams to the SDP address, for a peer waiting for our
    ClientHello; our DTLS server flight (``answers_only``, docs/plugin_hooks.md) answers the
    source that holds the port and is not copied. An engine without the attribute is copied,
    as before."""
    task, handler = await caller_task(nursery, make_engine())
    handler(hello(1), STRANGER)
    await settle()
    side = task.session.streams[0].a
    assert side.sent == [b"\x16ours"] and side.copied == [copied]


# -- the datagram's source to the engine (docs/plugin_hooks.md, "Media-path engines") ------------


@attrs.define(eq=False)
class SourcedEngine(Engine):
    """An engine with the optional ``receive_packet_from`` (the ``zrtp`` engine's: it tells its
    peer from a stranger by the source of the Hello that matched a=zrtp-hash)."""

    sources: list[tuple[bytes, object]] = attrs.Factory(list)

    def receive_packet_from(self, packet: bytes, *, source: object, now: float) -> None:
        self.sources.append((packet, source))


async def test_an_engine_that_takes_sources_gets_each_datagram_with_its_source(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    engine = SourcedEngine(timer=None)
    _, handler = await caller_task(nursery, engine)
    handler(hello(1), STRANGER)
    await settle()
    handler(hello(2), PEER)
    await settle()
    assert engine.sources == [(hello(1), STRANGER), (hello(2), PEER)]
    assert engine.received == []  # receive_packet is for engines without it


async def test_datagrams_kept_while_held_reach_the_engine_with_their_sources(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Kept until our answer went (a held side), they are fed with the source each came from:
    a stranger's Error kept so must not pass for the peer's at the release."""
    engine = SourcedEngine(timer=None)
    task = await start(nursery)
    task.legs["a"].streams[0] = dtls_stream(engine)
    task.handshakes.hold("a")
    task.handshakes.poke()
    await settle()
    task.handshakes.deliver("a", 0, hello(1), source=STRANGER)
    task.handshakes.deliver("a", 0, hello(2), source=PEER)
    await settle()
    assert engine.sources == []
    task.handshakes.release("a")
    await settle()
    assert engine.sources == [(hello(1), STRANGER), (hello(2), PEER)]


async def test_a_callees_datagrams_kept_before_its_answer_reach_the_engine_with_their_source(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    engine = SourcedEngine(timer=None)
    task = await start(nursery, b=Leg({0: dtls_stream(engine)}))
    handler = task.session.streams[0].b.handlers[False]
    handler(hello(1), STRANGER)
    handler(hello(2), PEER)
    await settle()
    task.session.addresses[(0, "b", False)] = PEER  # its answer came
    task.handshakes.poke()
    await settle()
    assert engine.sources == [(hello(2), PEER)]


@attrs.define(eq=False)
class ProvingEngine(SourcedEngine):
    """The ``zrtp`` engine as far as the task sees it: once a datagram from a source proves it
    the peer (its Hello matched a=zrtp-hash), ``peer_source`` says so, and it answers."""

    proving: bytes = b""
    peer_source: object = None
    proves_peer: bool = False

    def receive_packet_from(self, packet: bytes, *, source: object, now: float) -> None:
        super().receive_packet_from(packet, source=source, now=now)
        if packet == self.proving:
            self.peer_source = source
            self.outgoing.append(b"\x16answer")


async def test_the_source_an_engine_proved_gets_the_latch_before_the_answer_goes(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """docs/media_security.md, "Forged handshakes": a stranger held the port; the engine
    proved another source the peer (a phone behind a NAT). The relay is told once, before our
    answer to it is sent, so that the answer goes there."""
    engine = ProvingEngine(timer=None, outgoing=[], proving=hello(2))
    task, handler = await caller_task(nursery, engine)
    nat = ("127.0.0.1", 6000)  # a fake relay side's: never bound
    handler(hello(1), STRANGER)
    await settle()
    handler(hello(2), nat)
    await settle()
    handler(hello(3), nat)
    await settle()
    side = task.session.streams[0].a
    assert side.sent == [("latch", nat, False), b"\x16answer"]


@attrs.define(eq=False)
class NothingToRestartEngine(RestartingEngine):
    """The ``zrtp`` engine with the peer's Hello bound: it never took the other source's."""

    def restart_handshake(self, *, now: float) -> bool:
        self.log.append("restart")
        return False


async def test_an_engine_with_nothing_to_restart_is_not_said_to_have_restarted(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.core.media.handshakes")
    engine = NothingToRestartEngine(timer=None)
    _, handler = await caller_task(nursery, engine)
    handler(hello(1), STRANGER)
    await settle()
    handler(hello(2), PEER)
    await settle()
    assert engine.log == [hello(1), "restart", hello(2)]
    assert not [r for r in caplog.records if "started afresh" in r.getMessage()]
    restarting = RestartingEngine(timer=None)
    _, handler = await caller_task(nursery, restarting)
    handler(hello(1), STRANGER)
    await settle()
    handler(hello(2), PEER)
    await settle()
    assert [r for r in caplog.records if "started afresh" in r.getMessage()]


# -- proves_peer: which relay sockets hand on other sources' ZRTP (session 40) ----------------


async def test_the_relay_is_told_whether_the_engine_proves_its_peer(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """docs/media_security.md, "Forged handshakes": the relay hands a port's engine ZRTP from
    sources other than the latched one only when the engine tells its peer from a stranger
    (its optional ``proves_peer``: the zrtp engine whose peer's SDP binds its Hello). An
    engine without it, or False, gets the latch rule; when it changes (the callee's answer
    binds its Hello) the relay is told again."""
    engine = ProvingEngine(timer=None)
    task, _ = await caller_task(nursery, engine)
    side = task.session.streams[0].a
    assert side.proves_peer == {False: False}
    engine.proves_peer = True
    task.handshakes.poke()
    await settle()
    assert side.proves_peer == {False: True}


# -- the task's queue (session 40) ------------------------------------------------------------


async def test_a_strangers_burst_leaves_room_for_the_sdp_address(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A stranger's burst (forged ZRTP Hellos, ClientHellos) before the task runs again no
    longer fills the queue the call shares: at most QUEUE_PER_SOURCE of its datagrams wait,
    the rest are dropped (``blocked``), and the peer's datagram from its SDP address is fed.
    Before, the stranger's datagrams filled it (QUEUE, and one handed to the waiting task) and
    the peer's was dropped."""
    engine = RestartingEngine(timer=None)
    task, handler = await caller_task(nursery, engine)
    burst = QUEUE + 1
    for n in range(burst):
        handler(hello(n), STRANGER)  # the task does not run in between
    handler(b"\x16peer", PEER)
    await settle()
    assert engine.received[:QUEUE_PER_SOURCE] == [hello(n) for n in range(QUEUE_PER_SOURCE)]
    assert engine.received[-1] == b"\x16peer"
    assert task.session.dropped("blocked") == burst - QUEUE_PER_SOURCE
    # Counted afresh as the task takes them: the stranger's next ones wait again.
    for n in range(3):
        handler(hello(n), STRANGER)
    await settle()
    assert engine.received[-3:] == [hello(n) for n in range(3)]
    assert task.session.dropped("blocked") == burst - QUEUE_PER_SOURCE


async def test_strangers_on_many_ports_leave_room_for_the_proven_peer(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Other sources together (a stranger sending from many ports) take at most QUEUE minus
    QUEUE_KEPT_FOR_PEERS; the rest is the SDP address's and the proven peer's (a phone behind a
    NAT whose ZRTP Hello matched its a=zrtp-hash)."""
    engine = ProvingEngine(timer=None, outgoing=[], proving=hello(200))
    task, handler = await caller_task(nursery, engine)
    nat = ("127.0.0.1", 6000)  # a fake relay side's: never bound
    handler(hello(200), nat)
    await settle()
    assert engine.peer_source == nat
    ports = range(5001, 5001 + QUEUE // QUEUE_PER_SOURCE + 1)
    for port in ports:
        for n in range(QUEUE_PER_SOURCE):
            handler(hello(n), (STRANGER[0], port))
    for n in range(QUEUE_KEPT_FOR_PEERS):
        handler(hello(100 + n), nat)
    await settle()
    others = QUEUE - QUEUE_KEPT_FOR_PEERS
    assert task.session.dropped("blocked") == len(ports) * QUEUE_PER_SOURCE - others
    assert engine.sources[-QUEUE_KEPT_FOR_PEERS:] == [
        (hello(100 + n), nat) for n in range(QUEUE_KEPT_FOR_PEERS)
    ]


async def test_strangers_on_many_ports_leave_room_for_the_sdp_address(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """The SDP address's datagrams are never counted with other sources': once strangers on
    many ports took their QUEUE minus QUEUE_KEPT_FOR_PEERS, the peer's from its SDP address
    still wait and are fed (counted with them, they were dropped: the phone waited for its
    resend)."""
    engine = RestartingEngine(timer=None)
    task, handler = await caller_task(nursery, engine)
    ports = range(5001, 5001 + QUEUE // QUEUE_PER_SOURCE)
    for port in ports:
        for n in range(QUEUE_PER_SOURCE):
            handler(hello(n), (STRANGER[0], port))
    for n in range(QUEUE_KEPT_FOR_PEERS):
        handler(hello(100 + n), PEER)
    await settle()
    others = QUEUE - QUEUE_KEPT_FOR_PEERS
    assert task.session.dropped("blocked") == len(ports) * QUEUE_PER_SOURCE - others
    assert engine.received[-QUEUE_KEPT_FOR_PEERS:] == [
        hello(100 + n) for n in range(QUEUE_KEPT_FOR_PEERS)
    ]


async def test_a_flood_from_a_few_sources_leaves_room_for_a_natted_phone(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Session 42: the room of sources that are neither the SDP address nor a proven peer is
    shared fairly. A flood from three ports (spoofed or not) filled all of it before the task
    ran again, 16 each, and the ClientHello of a phone behind a NAT, one more such source, was
    dropped until its resend (1 s, RFC 6347 §4.2.4.1); now it takes the place of the newest
    datagram of the source with the most waiting."""
    engine = SourcedEngine(timer=None, outgoing=[])
    task, handler = await caller_task(nursery, engine)
    natted = ("127.0.0.1", 6000)
    others = QUEUE - QUEUE_KEPT_FOR_PEERS
    flood = [("127.0.0.1", 5001 + n) for n in range(others // QUEUE_PER_SOURCE)]
    for source in flood:
        for n in range(QUEUE_PER_SOURCE):
            handler(hello(n), source)
    assert task.session.dropped("blocked") == 0  # just fits
    handler(hello(200), natted)
    handler(hello(201), natted)
    await settle()
    fed = engine.sources
    assert (hello(200), natted) in fed and (hello(201), natted) in fed
    # Each took the place of the newest datagram of a flooding source with the most waiting:
    # the last of the third port's 16, then of the second's (review-d7: of tied sources, the
    # one whose datagram is newest); nothing else dropped, the order kept.
    assert task.session.dropped("blocked") == 2
    assert len(fed) == others
    by_source = {source: [d for d, s in fed if s == source] for source in flood}
    assert [len(by_source[source]) for source in flood] == [16, 15, 15]
    # The newest went (a tail drop: what waited longest still goes first, review-d6).
    last = QUEUE_PER_SOURCE - 1
    assert by_source[flood[1]] == by_source[flood[2]] == [hello(n) for n in range(last)]
    assert fed[-2:] == [(hello(200), natted), (hello(201), natted)]


async def test_a_flood_from_as_many_sources_as_the_room_keeps_its_order(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Where every such source has one datagram waiting (a flood from ever new spoofed
    addresses), a newcomer has no more right than each of them: it is dropped, none of theirs
    swapped for it (a swap would only churn), and the SDP address's room is still its own."""
    engine = SourcedEngine(timer=None, outgoing=[])
    task, handler = await caller_task(nursery, engine)
    others = QUEUE - QUEUE_KEPT_FOR_PEERS
    for n in range(others):
        handler(hello(n), ("127.0.0.1", 5001 + n))
    handler(hello(200), ("127.0.0.1", 6000))
    handler(b"\x16peer", PEER)
    await settle()
    assert task.session.dropped("blocked") == 1
    assert [d for d, _ in engine.sources] == [hello(n) for n in range(others)] + [b"\x16peer"]


@attrs.define(eq=False)
class VerifyingEngine(SourcedEngine):
    """An engine with the optional ``verified_sources`` (the ``dtls`` engine's: the sources
    whose ClientHello returned its cookie, RFC 6347 §4.2.1)."""

    verified_sources: tuple[object, ...] = ()


async def test_a_verified_sources_datagrams_go_first_up_to_their_share(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Session 43: while fewer than QUEUE_VERIFIED_FIRST datagrams of sources that returned
    a cookie wait, theirs are never dropped for another's and take any other's place (the
    newest of the unverified source with the most waiting); past it, every source shares
    the room fairly as before. Before, a verified source was one like any other: its 16th
    datagram gave way to the first of a new source, and it waited behind 48 others."""
    verified = ("127.0.0.1", 6000)
    engine = VerifyingEngine(timer=None, outgoing=[], verified_sources=(verified,))
    task, handler = await caller_task(nursery, engine)
    others = QUEUE - QUEUE_KEPT_FOR_PEERS
    for n in range(QUEUE_PER_SOURCE):
        handler(hello(n), verified)
    strangers = [("127.0.0.1", 5001 + n) for n in range(others - QUEUE_PER_SOURCE)]
    for source in strangers:
        handler(hello(100), source)
    # The room is full: a new source's datagram does not take the verified one's place.
    handler(hello(101), ("127.0.0.1", 7000))
    assert task.session.dropped("blocked") == 1
    await settle()
    fed = engine.sources
    assert [d for d, s in fed if s == verified] == [hello(n) for n in range(QUEUE_PER_SOURCE)]
    assert (hello(101), ("127.0.0.1", 7000)) not in fed
    # Full again, with one each from new sources: a verified datagram takes a place.
    engine.sources.clear()
    for n in range(others):
        handler(hello(100), ("127.0.0.1", 8001 + n))
    handler(hello(200), verified)
    await settle()
    assert (hello(200), verified) in engine.sources
    assert task.session.dropped("blocked") == 2
    # Past their share, verified sources share the room fairly: three verified sources with
    # 16 each, and a new source's first datagram takes the place of the newest of one.
    many = [("127.0.0.1", 6000 + n) for n in range(others // QUEUE_PER_SOURCE)]
    assert len(many) * QUEUE_PER_SOURCE > QUEUE_VERIFIED_FIRST
    engine.verified_sources = tuple(many)
    task.handshakes.poke()
    await settle()
    engine.sources.clear()
    for source in many:
        for n in range(QUEUE_PER_SOURCE):
            handler(hello(n), source)
    handler(hello(101), ("127.0.0.1", 7000))
    await settle()
    assert (hello(101), ("127.0.0.1", 7000)) in engine.sources
    assert task.session.dropped("blocked") == 3


@attrs.define(eq=False)
class CookieEngine(SourcedEngine):
    """An engine with the optional ``returns_cookie_untrusted`` (the ``dtls`` engine's)."""

    returning: bytes = b""
    raises: bool = False
    asked: int = 0

    def returns_cookie_untrusted(self, packet: bytes, source: object, *, now: float) -> bool:
        self.asked += 1
        if self.raises:
            raise ValueError("a plugin's bug")
        return packet == self.returning


async def test_a_datagram_returning_a_cookie_takes_a_place_in_a_full_room(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Session 43: a handshake datagram the full room would drop is shown to the port's
    engine first; one that returns its cookie (the phone's second ClientHello) takes the
    newest place of an unverified source, whatever its count. Nothing else is asked: not
    while there is room, not a datagram that is no handshake record. An engine whose check
    raises (a plugin's bug) is logged once and not asked again; the datagram is dropped."""
    engine = CookieEngine(timer=None, outgoing=[], returning=hello(200))
    task, handler = await caller_task(nursery, engine)
    others = QUEUE - QUEUE_KEPT_FOR_PEERS
    for n in range(others):
        handler(hello(100), ("127.0.0.1", 5001 + n))
    assert engine.asked == 0
    handler(hello(201), ("127.0.0.1", 6000))
    handler(b"\x17" + hello(200)[1:], ("127.0.0.1", 6000))  # not a handshake record
    handler(hello(200), ("127.0.0.1", 6000))
    assert engine.asked == 2
    await settle()
    assert (hello(200), ("127.0.0.1", 6000)) in engine.sources
    assert (hello(201), ("127.0.0.1", 6000)) not in engine.sources
    assert task.session.dropped("blocked") == 3
    engine.raises = True
    for n in range(others):
        handler(hello(100), ("127.0.0.1", 7001 + n))
    handler(hello(200), ("127.0.0.1", 6000))
    handler(hello(200), ("127.0.0.1", 6000))
    await settle()
    assert engine.asked == 3
    assert len([r for r in caplog.records if "returns_cookie_untrusted" in r.getMessage()]) == 1
    assert task.session.dropped("blocked") == 5
    handler(hello(1), PEER)
    await settle()
    assert engine.sources[-1] == (hello(1), PEER)  # the task goes on


async def test_datagrams_returning_a_cookie_from_many_ports_take_only_the_verified_share(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Review of session 43: a datagram the engine's ``returns_cookie_untrusted`` vouches for
    counts in QUEUE_VERIFIED_FIRST's share as a named verified source's does. The dtls
    engine's cookie is bound to the host, not the port: a sender that received one cookie at
    its host can return it from as many ports as it likes, none of them named by the engine
    yet (its bucket starts no handshake for them). Before, those datagrams were counted as
    no verified source's, so each took the place of another source's and the share never
    applied: the whole room (48) went to that one host, and a phone's first ClientHello
    waiting in it was dropped for them."""
    engine = CookieEngine(timer=None, outgoing=[], returning=hello(200))
    task, handler = await caller_task(nursery, engine)
    others = QUEUE - QUEUE_KEPT_FOR_PEERS
    unverified = [("127.0.0.1", 5001 + n) for n in range(others)]
    for source in unverified:
        handler(hello(100), source)
    returning = [("127.0.0.1", 6001 + n) for n in range(others)]
    for source in returning:
        handler(hello(200), source)
    assert engine.asked == others
    await settle()
    fed = engine.sources
    assert len([s for _, s in fed if s in returning]) == QUEUE_VERIFIED_FIRST
    assert len([s for _, s in fed if s in unverified]) == others - QUEUE_VERIFIED_FIRST
    assert task.session.dropped("blocked") == others


async def test_a_verified_datagram_takes_the_newest_place_not_the_longest_waiting(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """Review of session 43: when every unverified source has one datagram waiting, the one a
    verified datagram takes the place of is the newest (the burst's last), as the docs say.
    Before, it was the datagram of the source first in the count's order: the oldest in the
    queue, next for the task, such as a phone's first ClientHello that came before the
    flood; a verified sender's datagrams (up to 24) dropped the head of the queue, one each."""
    engine = CookieEngine(timer=None, outgoing=[], returning=hello(200))
    task, handler = await caller_task(nursery, engine)
    others = QUEUE - QUEUE_KEPT_FOR_PEERS
    phone = ("127.0.0.1", 5000)
    handler(hello(1), phone)
    spoofed = [("127.0.0.1", 5001 + n) for n in range(others - 1)]
    for source in spoofed:
        handler(hello(100), source)
    handler(hello(200), ("127.0.0.1", 6000))
    await settle()
    assert (hello(1), phone) in engine.sources
    assert (hello(100), spoofed[-1]) not in engine.sources
    assert task.session.dropped("blocked") == 1


async def test_a_burst_takes_one_round_per_datagram_and_no_empty_round_after_it(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Session 43: a burst is taken one datagram per round, and the queue's emptying is not
    followed by a round with nothing to do. Before, a datagram queued while the task worked
    through the queue (between its rounds a checkpoint, not a wait on the Event) left the
    Event set, and it woke the task once more after the last datagram: one spurious empty
    round per burst (every stream's engines driven again for nothing)."""
    engine = RestartingEngine(timer=None)
    task, handler = await caller_task(nursery, engine)
    rounds: list[bool] = []
    take_round = task.handshakes._round

    def counted(item: Any, now: float) -> None:
        rounds.append(item is not None)
        if item is not None and item[3] == hello(0):
            handler(hello(9), PEER)  # comes while the task works through the burst
        take_round(item, now)

    monkeypatch.setattr(task.handshakes, "_round", counted)
    for n in range(3):
        handler(hello(n), PEER)  # the task does not run in between
    await settle()
    assert engine.received == [hello(0), hello(1), hello(2), hello(9)]
    assert rounds == [True, True, True, True]
    task.handshakes.poke()  # a poke still gets its round
    await settle()
    assert rounds == [True, True, True, True, False]


# -- a handshake per source (the dtls engine, session 40) ----------------------------------------

LOOP_PEER = ("127.0.0.1", 4000)
"""The caller's SDP address in the tests below (a fake relay side's: never bound)."""
LOOP_NATTED = ("127.0.0.1", 6000)
LOOP_STRANGER = ("127.0.0.1", 5000)


@attrs.define(eq=False)
class PerSourceEngine(SourcedEngine):
    """The ``dtls`` engine as far as the task sees it: a handshake per source, each answered
    at its own address (``addressed_packets_to_send``), told which source is the SDP
    address's (``note_sdp_address``)."""

    handshake_per_source: bool = True
    noted: list[object] = attrs.Factory(list)
    addressed: list[tuple[bytes, object]] = attrs.Factory(list)

    def receive_packet_from(self, packet: bytes, *, source: object, now: float) -> None:
        super().receive_packet_from(packet, source=source, now=now)
        if source is not None:
            self.addressed.append((b"\x16answer" + packet[-1:], source))

    def note_sdp_address(self, source: object) -> None:
        self.noted.append(source)

    def addressed_packets_to_send(self, *, now: float) -> list[tuple[bytes, object]]:
        out, self.addressed = self.addressed, []
        return out


async def test_a_handshake_per_source_is_asked_of_the_relay_and_each_source_answered_alone(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    engine = PerSourceEngine(timer=None, outgoing=[])
    task, handler = await caller_task(nursery, engine)
    task.session.addresses[(0, "a", False)] = LOOP_PEER
    side = task.session.streams[0].a
    assert side.handshake_per_source == {False: True} and side.sdp_address_only == {False: False}
    handler(hello(1), LOOP_STRANGER)
    await settle()
    handler(hello(2), LOOP_NATTED)
    await settle()
    handler(hello(3), LOOP_PEER)
    await settle()
    assert engine.sources == [
        (hello(1), LOOP_STRANGER),
        (hello(2), LOOP_NATTED),
        (hello(3), LOOP_PEER),
    ]
    assert engine.noted == [LOOP_PEER]  # told before its datagram is fed
    assert side.addressed == [
        (b"\x16answer\x01", LOOP_STRANGER),
        (b"\x16answer\x02", LOOP_NATTED),
        (b"\x16answer\x03", LOOP_PEER),
    ]
    assert side.sent == []  # nothing by the usual way (latched source and SDP address)


@attrs.define(eq=False)
class IceOf:
    """A leg's ICE (LegIce) when it does ICE: checks select the peer's address."""

    def responders(self, index: int) -> tuple[object, None]:
        return object(), None


async def test_on_an_ice_leg_a_handshake_per_source_engine_gets_no_source(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    # The nominated pair may change while the handshake runs (RFC 8445 §8): the one
    # handshake goes on wherever the checks say, as before.
    engine = PerSourceEngine(timer=None)
    task, handler = await caller_task(nursery, engine)
    task.legs["a"].ice = IceOf()  # type: ignore[assignment]
    handler(hello(1), LOOP_PEER)
    await settle()
    handler(hello(2), LOOP_NATTED)
    await settle()
    assert engine.sources == [(hello(1), None), (hello(2), None)]
    assert engine.noted == []


def zrtp_hello(n: int) -> bytes:
    """A ZRTP Hello (RFC 6189 §5.2), told apart by its sequence number ``n``."""
    return b"\x10\x00\x00" + bytes([n]) + zrtp_packet(b"Hello   ")[4:]


@attrs.define(eq=False)
class SourcedZrtpEngine(SourcedEngine):
    """The ``zrtp`` engine as far as a held port sees it: claims ZRTP, takes sources."""

    def claims_packet(self, first_byte: int, packet: bytes) -> bool:
        return is_zrtp_packet(packet)


async def held_caller(nursery: trio.Nursery, engine: Engine, sdp_address: Any) -> Task:
    """The task over a caller whose SDP gave ``sdp_address``, our answer to it held."""
    task = await start(nursery)
    task.session.addresses[(0, "a", False)] = sdp_address
    task.legs["a"].streams[0] = dtls_stream(engine)
    task.handshakes.hold("a")
    task.handshakes.poke()
    await settle()
    return task


async def test_a_strangers_datagrams_do_not_push_a_natd_peers_hello_out_of_a_held_port(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """While our answer to the caller is held, a stranger's burst of HELD_DATAGRAMS forged
    Hellos keeps at most HELD_PER_SOURCE of them: the caller behind a NAT (a source other than
    its SDP address) still has its Hello kept, and fed at the release. Before, the stranger's
    filled the port's HELD_DATAGRAMS and the phone's Hello was dropped until its resend."""
    engine = SourcedZrtpEngine(timer=None, outgoing=[])
    sdp_address = ("127.0.0.1", 40000)  # the caller's private address (fakes: never bound)
    nat, stranger = ("127.0.0.1", 40100), ("127.0.0.1", 40200)
    task = await held_caller(nursery, engine, sdp_address)
    for n in range(HELD_DATAGRAMS):
        task.handshakes.deliver("a", 0, zrtp_hello(n), source=stranger)
        await settle()
    task.handshakes.deliver("a", 0, zrtp_hello(99), source=nat)
    await settle()
    assert task.session.dropped("blocked") == HELD_DATAGRAMS - HELD_PER_SOURCE
    task.handshakes.release("a")
    await settle()
    assert engine.sources == [
        *((zrtp_hello(n), stranger) for n in range(HELD_PER_SOURCE)),
        (zrtp_hello(99), nat),
    ]


async def test_a_held_port_keeps_held_datagrams_from_several_sources_and_the_sdp_address_uncounted(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """The per-source bound is per source: two others fill the port's HELD_DATAGRAMS between
    them; the SDP address's datagrams are never counted against it (they drop the others'
    when it speaks, as before)."""
    engine = SourcedZrtpEngine(timer=None, outgoing=[])
    sdp_address = ("127.0.0.1", 40000)
    task = await held_caller(nursery, engine, sdp_address)
    for n in range(HELD_DATAGRAMS):
        task.handshakes.deliver("a", 0, zrtp_hello(n), source=sdp_address)
        await settle()
    assert task.handshakes.held_datagrams == HELD_DATAGRAMS
    assert task.session.drops == []
    task.handshakes.release("a")
    await settle()
    assert len(engine.sources) == HELD_DATAGRAMS

    engine = SourcedZrtpEngine(timer=None, outgoing=[])
    task = await held_caller(nursery, engine, sdp_address)
    for port in (40100, 40200, 40300):
        for n in range(HELD_PER_SOURCE):
            task.handshakes.deliver("a", 0, zrtp_hello(n), source=("127.0.0.1", port))
            await settle()
    assert task.handshakes.held_datagrams == HELD_DATAGRAMS
    assert task.session.dropped("blocked") == HELD_PER_SOURCE


def client_hello(n: int) -> bytes:
    """An epoch-0 DTLS handshake record (RFC 6347 §4.1), told apart by its sequence number."""
    return CLIENT_HELLO[:5] + bytes(5) + bytes([n]) + CLIENT_HELLO[11:]


async def test_a_strangers_client_hellos_leave_room_in_a_pending_offers_held_port(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """The peer re-offers a new association (a new tls-id), our answer not made yet: what
    starts its handshake is kept for it within HELD_PER_SOURCE from any one source too, so
    that a stranger's burst of ClientHellos leaves room for the peer's from behind its NAT."""
    in_force, new = Engine(timer=None, outgoing=[]), Engine(tls_id="association-two-0123456789")
    task = await start(nursery, a=Leg({0: dtls_stream(in_force)}))
    task.legs["a"].offered[0] = dtls_stream(new)
    task.handshakes.poke()
    stranger, nat = ("127.0.0.1", 40200), ("127.0.0.1", 40100)
    for n in range(HELD_DATAGRAMS):
        task.handshakes.deliver("a", 0, client_hello(n), source=stranger)
    task.handshakes.deliver("a", 0, client_hello(99), source=nat)
    await settle()
    assert in_force.received == []
    assert task.handshakes.held_datagrams == HELD_PER_SOURCE + 1
    assert task.session.dropped("blocked") == HELD_DATAGRAMS - HELD_PER_SOURCE
