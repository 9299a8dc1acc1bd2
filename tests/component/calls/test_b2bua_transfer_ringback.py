"""The ringing tone a transferee hears while a blind transfer's target rings (docs/transfers.md
"Media", gateway/core/media/tones.py): from the target's 180 the gateway plays ``[media]
ringback_tone`` to the transferee in place of the transferor's media, until the target answers
or the transfer fails; ``"none"`` leaves the transferor's media as it was. Before session 52
the transferee heard the transferor's media (or, once it hung up, silence) until the target
answered.

Set-up as b2bua_env.py: the trunk calls alice's DID, alice (the callee, leg B) transfers the
trunk (the transferee, leg A) to bob. The trunk's and alice's media ports are real sockets of
this process's block; alice sends RTP throughout, the trunk's socket reads what reaches it."""

from __future__ import annotations

import logging
import math
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.media import amr, tones
from gateway.core.media.g711 import ulaw2lin
from gateway.core.media.g729 import Bcg729Decoder, load_bcg729
from gateway.core.media.opus import OpusDecoder, load_libopus
from gateway.core.media.tones import ToneCodec, codec_available, tone_codecs, tone_frames
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.taps.g722 import G722Decoder
from gateway.testing.memory_transport import memory_plugins
from gateway.testing.network import MemoryNetwork
from gateway.testing.sip_agent import AutoAnswer, sdp_connection, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, gateway_config, start_b2bua
from tests.component.calls.transfer_calls import (
    BOB_URI,
    bob_phone,
    eventually_notify,
    refer,
)
from tests.conftest import missing
from tests.port_blocks import port_bases

TRUNK_PORT, ALICE_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)
ALICE_SSRC = 0x0A11CE00

INSTALLED_TONE_CODECS = [codec for codec in ToneCodec if codec_available(codec)]
"""What this install encodes a tone in (G.729 only with bcg729, Opus with libopus)."""


def alice_rtp(sequence: int) -> bytes:
    """One of alice's PCMU packets: her own SSRC, 20 ms of a quiet mu-law pattern."""
    header = struct.pack("!BBHII", 0x80, 0, sequence & 0xFFFF, 160 * sequence, ALICE_SSRC)
    return header + b"\xfe\x7e" * 80


async def alice_talks(sock: trio.socket.SocketType, to: tuple[str, int]) -> None:
    for sequence in range(1_000_000):
        await sock.sendto(alice_rtp(sequence), to)
        await trio.sleep(0.02)


class Listener:
    """What reaches one of the test's sockets, with when (virtual time)."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.received: list[tuple[float, bytes]] = []

    async def listen(self) -> None:
        while True:
            packet = await self.sock.recv(2048)
            self.received.append((trio.current_time(), packet))

    async def heard_for(self, seconds: float) -> list[bytes]:
        """What arrives in the next ``seconds``."""
        start = trio.current_time()
        await trio.sleep(seconds)
        return [packet for at, packet in self.received if at >= start]

    async def heard_after_a_change(self, seconds: float) -> list[bytes]:
        """What arrives in ``seconds`` from 0.1 s (virtual) after now: the packets sent before
        a change (a tone started or stopped) that are still on their way land first."""
        await trio.sleep(0.1)
        return await self.heard_for(seconds)


async def ringing_heard(env: B2bua, trunk: Listener, seconds: float) -> list[bytes]:
    """What the trunk hears in ``seconds`` once bob's 180 reached alice in a NOTIFY (the
    tone starts at the target's first 1xx)."""
    await eventually_notify(env.alice, "SIP/2.0 180 Ringing")
    return await trunk.heard_after_a_change(seconds)


def ssrc(packet: bytes) -> int:
    return int.from_bytes(packet[8:12], "big")


def one_tone_stream(
    ringing: list[bytes], *, payload_type: int, octets: int | None = 160, step: int = 160
) -> tuple[int, list[bytes]]:
    """The ringing tone in a second of what the trunk heard: one new RTP stream (not alice's)
    of ``payload_type``, a packet of ``octets`` (None: any number) every 20 ms (no marker
    after the first), its sequence numbers and timestamps (``step`` a packet) in step. Its
    SSRC and payloads."""
    assert 49 <= len(ringing) <= 51
    [tone_ssrc] = {ssrc(p) for p in ringing}
    assert tone_ssrc != ALICE_SSRC
    assert {p[1] for p in ringing} == {payload_type}
    if octets is not None:
        assert {len(p) for p in ringing} == {12 + octets}
    sequences = [int.from_bytes(p[2:4], "big") for p in ringing]
    assert sequences == [(sequences[0] + n) & 0xFFFF for n in range(len(ringing))]
    stamps = [int.from_bytes(p[4:8], "big") for p in ringing]
    assert stamps == [(stamps[0] + step * n) & 0xFFFFFFFF for n in range(len(ringing))]
    return tone_ssrc, [p[12:] for p in ringing]


def tone_power(payloads: list[bytes], frequency: float) -> float:
    """Goertzel power of ``frequency`` in the PCMU ``payloads``, per sample squared."""
    return goertzel([ulaw2lin(octet) for payload in payloads for octet in payload], frequency)


def goertzel(samples: list[int], frequency: float, rate: int = 8000) -> float:
    """Goertzel power of ``frequency`` in ``samples`` at ``rate``, per sample squared."""
    coefficient = 2.0 * math.cos(2.0 * math.pi * frequency / rate)
    s1 = s2 = 0.0
    for sample in samples:
        s1, s2 = sample + coefficient * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coefficient * s1 * s2) / len(samples) ** 2


async def bind(port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", port))
    return sock


async def transfer_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    sockets: tuple[trio.socket.SocketType, trio.socket.SocketType],
    bob_auto: AutoAnswer,
    media_table: dict[str, Any] | None = None,
    formats: tuple[str, ...] = ("0", "8", "101"),
) -> tuple[B2bua, Listener]:
    """The trunk's call to alice, answered, alice talking from her socket (``sockets``: the
    trunk's and alice's); then alice's REFER to bob (202). Returns the set-up and what listens
    on the trunk's socket. ``formats``: what the trunk offers and alice answers."""
    env = await start_b2bua(
        nursery,
        tmp_path,
        seed,
        alice_auto=None,
        trunk_media_port=TRUNK_PORT,
        alice_media_port=ALICE_PORT,
        media_table=media_table,
    )
    await bob_phone(env, nursery, seed, auto=bob_auto)
    trunk_media, alice_media = sockets
    trunk = Listener(trunk_media)
    nursery.start_soon(trunk.listen)
    # The phones' media on this host's loopback address, where the test's sockets are.
    call = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", TRUNK_PORT, formats=formats)
    )
    alice_leg = await env.alice.next_call()
    await alice_leg.answer(200, sdp=simple_sdp("127.0.0.1", ALICE_PORT, formats=formats))
    assert (await call.final()).status == 200
    await env.alice.next_request("ACK")
    port_to_alice = sdp_connection(env.alice.requests("INVITE")[0].body)[1]
    nursery.start_soon(alice_talks, alice_media, ("127.0.0.1", port_to_alice))
    before = await trunk.heard_for(0.5)
    assert before and {ssrc(p) for p in before} == {ALICE_SSRC}  # relayed, as any call
    assert await refer(alice_leg, BOB_URI) == 202
    return env, trunk


async def test_the_transferee_hears_the_ringing_tone_while_the_target_rings(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    sockets = await bind(TRUNK_PORT), await bind(ALICE_PORT)
    with sockets[0], sockets[1]:
        env, trunk = await transfer_call(
            nursery, tmp_path, voipgw_seed, sockets, AutoAnswer(ring=True, status=200, delay=3.0)
        )
        ringing = await ringing_heard(env, trunk, 1.0)
        # The US plan (the default): 440 + 480 Hz for 2 s, as PCMU, the trunk's first law, in
        # place of alice's packets.
        tone_ssrc, payloads = one_tone_stream(ringing, payload_type=0)
        for frequency in (440.0, 480.0):
            assert tone_power(payloads, frequency) > 1000 * tone_power(payloads, 1000.0)
        assert env.gateway.calls is not None
        [call] = env.gateway.calls.calls
        assert call.media is not None and call.media.playing_tone

        # bob answers: the tone stops before the trunk is re-INVITEd with bob's media.
        await eventually_notify(env.alice, "SIP/2.0 200 OK")
        assert not call.media.playing_tone
        after = await trunk.heard_for(1.0)
        assert tone_ssrc not in {ssrc(p) for p in after}


async def ringing_on_a_trunk_listing(
    nursery: trio.Nursery, tmp_path: Path, seed: int, formats: tuple[str, ...]
) -> list[bytes]:
    """A second of what the trunk (the transferee, its SDP listing ``formats``) hears while
    the blind transfer's target rings."""
    sockets = await bind(TRUNK_PORT), await bind(ALICE_PORT)
    with sockets[0], sockets[1]:
        env, trunk = await transfer_call(
            nursery,
            tmp_path,
            seed,
            sockets,
            AutoAnswer(ring=True, status=200, delay=3.0),
            formats=formats,
        )
        return await ringing_heard(env, trunk, 1.0)


def assert_the_us_tone(pcm: bytes, rate: int) -> None:
    """``pcm`` (16-bit little-endian at ``rate``), from its 100th millisecond, is 440 + 480
    Hz (the us plan) and not 1000 Hz."""
    samples = list(struct.unpack(f"<{len(pcm) // 2}h", pcm))[rate // 10 :]
    for frequency in (440.0, 480.0):
        assert goertzel(samples, frequency, rate) > 1000 * goertzel(samples, 1000.0, rate)


async def test_an_hd_transferee_hears_the_ringing_tone_in_g722(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The trunk lists G722 first (an HD line, RFC 3551 §4.5.2, static number 9), then PCMU:
    # the tone goes as G.722. Before session 55 it went as the first G.711 law the line
    # listed, and to a line with G722 alone not at all.
    ringing = await ringing_on_a_trunk_listing(nursery, tmp_path, voipgw_seed, ("9", "0", "101"))
    # 160 octets per 20 ms at 64 kbit/s; RFC 3551 §4.5.2: G.722's RTP clock runs at 8000 Hz,
    # 160 per 20 ms, as G.711's.
    _, payloads = one_tone_stream(ringing, payload_type=9)
    assert_the_us_tone(G722Decoder().decode(b"".join(payloads)), 16000)


async def test_a_low_bandwidth_transferee_hears_the_ringing_tone_in_g729(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The trunk lists G729 first (static number 18; a carrier saving bandwidth), then PCMU:
    # the tone goes as G.729 (session 56), two 10-octet frames a packet (RFC 3551 §4.5.6).
    # Before, it went as PCMU, and to a line with G729 alone not at all.
    bcg729 = load_bcg729()
    if bcg729 is None:
        missing("libbcg729 is not installed (apt-get install libbcg729-0)")
    ringing = await ringing_on_a_trunk_listing(nursery, tmp_path, voipgw_seed, ("18", "0", "101"))
    _, payloads = one_tone_stream(ringing, payload_type=18, octets=20)
    decoder = Bcg729Decoder(bcg729)  # the recorder's
    assert_the_us_tone(b"".join(decoder.decode(payload) for payload in payloads), 8000)


async def test_an_opus_transferee_hears_the_ringing_tone_in_opus(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The trunk lists opus alone (a WebRTC client narrowed to it, RFC 7587 §7: opus/48000/2
    # as 111) but for telephone-event: the tone goes as Opus (session 57), a packet per 20 ms
    # and 960 on the 48 kHz RTP clock (RFC 7587 §4.1). Before, that line heard nothing.
    libopus = load_libopus()
    if libopus is None:
        missing("libopus is not installed (apt-get install libopus0)")
    ringing = await ringing_on_a_trunk_listing(nursery, tmp_path, voipgw_seed, ("111", "101"))
    _, payloads = one_tone_stream(ringing, payload_type=111, octets=None, step=960)
    decoder = OpusDecoder(libopus, 8000)
    assert_the_us_tone(b"".join(decoder.decode(payload) for payload in payloads), 8000)


async def test_the_configured_plans_frames_are_made_as_the_gateway_starts(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Session 56: the relay's process makes them before it relays anything; before, the first
    # ringback of a process made them on the event loop (a G.722 cadence: 5-15 ms during which
    # every call's media waited).
    tone_frames.cache_clear()
    # Before any listener is bound (session 62): a request waiting behind them in a socket
    # buffer would be answered late.
    listeners_then: list[int] = []
    prepare = Gateway._prepare_tones

    def spy(gateway: Gateway) -> str:
        listeners_then.append(len(gateway.listeners))
        return prepare(gateway)

    monkeypatch.setattr(Gateway, "_prepare_tones", spy)
    with caplog.at_level(logging.INFO, logger="gateway.core.gateway"):
        await start_b2bua(nursery, tmp_path, voipgw_seed, media_table={"ringback_tone": "fr"})
    assert listeners_then == [0]
    # And the start says in which codecs: whether bcg729 and libopus were found (session 57).
    # AMR once for its two packings (session 62).
    names = list(dict.fromkeys(codec.encoding for codec in INSTALLED_TONE_CODECS))
    assert (
        f"transfer ringing tone: fr, in the first of {', '.join(names[:-1])} and {names[-1]}"
        " the transferee's line lists"
    ) in caplog.messages
    assert tone_frames.cache_info().currsize == len(INSTALLED_TONE_CODECS)
    for codec in INSTALLED_TONE_CODECS:
        tone_frames("fr", codec)
    assert tone_frames.cache_info().misses == len(
        INSTALLED_TONE_CODECS
    )  # each made once, at the start


async def test_a_failed_transfer_stops_the_tone_and_the_transferors_media_comes_back(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    sockets = await bind(TRUNK_PORT), await bind(ALICE_PORT)
    with sockets[0], sockets[1]:
        env, trunk = await transfer_call(
            nursery,
            tmp_path,
            voipgw_seed,
            sockets,
            AutoAnswer(ring=True, status=486, delay=2.0),
            media_table={"ringback_tone": "eu"},
        )
        ringing = await ringing_heard(env, trunk, 0.5)
        assert ringing and ALICE_SSRC not in {ssrc(p) for p in ringing}
        payloads = [p[12:] for p in ringing]
        assert tone_power(payloads, 425.0) > 100 * tone_power(payloads, 440.0)  # the eu plan

        await eventually_notify(env.alice, "SIP/2.0 486 Busy Here")
        after = await trunk.heard_after_a_change(0.5)
        assert after and {ssrc(p) for p in after} == {ALICE_SSRC}  # the call goes on
        assert env.calls == 1


async def test_no_ringing_tone_leaves_the_transferors_media_as_it_was(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    sockets = await bind(TRUNK_PORT), await bind(ALICE_PORT)
    with sockets[0], sockets[1]:
        env, trunk = await transfer_call(
            nursery,
            tmp_path,
            voipgw_seed,
            sockets,
            AutoAnswer(ring=True, status=200, delay=3.0),
            media_table={"ringback_tone": "none"},
        )
        await eventually_notify(env.alice, "SIP/2.0 180 Ringing")
        ringing = await trunk.heard_for(1.0)
        assert ringing and {ssrc(p) for p in ringing} == {ALICE_SSRC}
        await eventually_notify(env.alice, "SIP/2.0 200 OK")


async def test_a_transferee_that_holds_while_the_target_rings_hears_the_tone_when_it_resumes(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Session 54: the trunk re-INVITEs with a=inactive while bob rings (relayed to alice, the
    # transferor, still in the call): it receives nothing now (RFC 3264 §6.1), so the tone
    # stops; it resumes (a=sendrecv) while bob still rings, and the tone plays again. Before,
    # the tone played on until bob answered, whatever the trunk's SDP said.
    caplog.set_level(logging.INFO, logger="gateway")
    sockets = await bind(TRUNK_PORT), await bind(ALICE_PORT)
    with sockets[0], sockets[1]:
        env, trunk = await transfer_call(
            nursery, tmp_path, voipgw_seed, sockets, AutoAnswer(ring=True, status=200, delay=8.0)
        )
        await eventually_notify(env.alice, "SIP/2.0 180 Ringing")
        assert env.gateway.calls is not None
        [call] = env.gateway.calls.calls
        assert call.media is not None and call.media.playing_tone
        trunk_call = env.trunk.calls[0]

        async def alice_answers(direction: str, version: int) -> None:
            reinvite = await env.alice.next_request("INVITE")
            answer = simple_sdp("127.0.0.1", ALICE_PORT, direction=direction, version=version)
            await env.alice.respond(reinvite, 200, body=answer, content_type="application/sdp")

        nursery.start_soon(alice_answers, "inactive", 2)
        hold = simple_sdp("127.0.0.1", TRUNK_PORT, direction="inactive", version=2)
        assert (await trunk_call.reinvite(hold)).status == 200
        assert not call.media.playing_tone
        assert "ringing tone to the A leg stopped: its SDP says inactive" in caplog.text
        held = await trunk.heard_after_a_change(1.0)  # tone packets before the stop land first
        assert held and {ssrc(p) for p in held} == {ALICE_SSRC}  # alice's media, no tone

        nursery.start_soon(alice_answers, "sendrecv", 3)
        resume = simple_sdp("127.0.0.1", TRUNK_PORT, version=3)
        assert (await trunk_call.reinvite(resume)).status == 200
        assert call.media.playing_tone
        assert "ringing tone (us) to the A leg now: its SDP changed" in caplog.text
        ringing = await trunk.heard_after_a_change(1.0)  # alice's packets before it land first
        assert ringing and ALICE_SSRC not in {ssrc(p) for p in ringing}
        payloads = [p[12:] for p in ringing]
        assert tone_power(payloads, 440.0) > 1000 * tone_power(payloads, 1000.0)
        await eventually_notify(env.alice, "SIP/2.0 200 OK")
        assert not call.media.playing_tone


BROKEN_AMR_WARNING = (
    "transfer ringing tone: its AMR frames could not be made (AmrError: opencore-amrnb: a"
    " frame of 0 octets, not 32): never played in AMR; a line that takes no other tone"
    " codec hears nothing while a transfer's target rings"
)


@pytest.fixture
def broken_amr_encoder(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A system library found by name that fails (another build's interface): opencore-amrnb's
    encoder raising, with no codec of the process marked unusable yet."""
    if not codec_available(ToneCodec.AMR):
        missing("opencore-amr is not installed (apt-get install libopencore-amrnb0)")
    monkeypatch.setattr(tones, "_UNUSABLE", {})

    def broken(self: amr.AmrEncoder, samples: object) -> list[bytes]:
        raise amr.AmrError("opencore-amrnb: a frame of 0 octets, not 32")

    monkeypatch.setattr(amr.AmrEncoder, "encode", broken)
    tone_frames.cache_clear()
    tones._amr_frames.cache_clear()
    yield
    tone_frames.cache_clear()
    tones._amr_frames.cache_clear()


async def test_an_encoder_that_fails_at_the_start_is_left_out_with_a_warning(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    broken_amr_encoder: None,
) -> None:
    # The gateway starts all the same, says so, and does not offer that codec's tone.
    with caplog.at_level(logging.INFO, logger="gateway.core.gateway"):
        await start_b2bua(nursery, tmp_path, voipgw_seed, media_table={"ringback_tone": "eu"})
    assert [r.levelname for r in caplog.records if r.getMessage() == BROKEN_AMR_WARNING] == [
        "WARNING"
    ]
    summary = next(m for m in caplog.messages if m.startswith("transfer ringing tone: eu"))
    assert ", AMR" not in summary and " AMR " not in summary
    assert any(m.startswith("voipgw ready") for m in caplog.messages)


def test_with_media_workers_the_sip_process_leaves_a_failing_encoder_out_too(
    tmp_path: Path, voipgw_seed: int, caplog: pytest.LogCaptureFixture, broken_amr_encoder: None
) -> None:
    # With [media] workers the SIP process chooses a ringback's codec and a worker plays it.
    # Before session 63 only the workers made the frames: the SIP process still chose AMR for
    # an AMR line, the worker declined to play it, and the transferee heard the transferor's
    # media. The SIP process now makes them too and learns the same failure (the same library
    # on the same host).
    config = gateway_config(tmp_path / "state", media={"ringback_tone": "eu", "workers": 2})
    gateway = Gateway(
        config,
        memory_plugins(config, MemoryNetwork(voipgw_seed)),
        ids=SeededIds(voipgw_seed),
    )
    with caplog.at_level(logging.INFO, logger="gateway.core.gateway"):
        summary = gateway._prepare_tones()
    assert [r.levelname for r in caplog.records if r.getMessage() == BROKEN_AMR_WARNING] == [
        "WARNING"
    ]
    assert ", AMR" not in summary and " AMR " not in summary
    amr_line = parse_sdp_untrusted(
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 96\r\na=rtpmap:96 AMR/8000\r\n"
    ).media[0]
    assert tone_codecs(amr_line) == {}  # so no ringback asks a worker for AMR
