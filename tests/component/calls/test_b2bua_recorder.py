"""Recording through the B2BUA (the ``recorder`` tap): signalling on the in-memory network, RTP
on real 127.0.0.1 sockets through the gateway's relay, in virtual time.

- a plain call whose caller is a recorded trunk: each speaker's file holds what it sent, on the
  call's clock, and is complete (WAV sizes written) once the call is over; the call record names
  the tap;
- a ZRTP caller: its SRTP is decrypted by the relay before the tap, so the recording is the
  plain audio;
- a call of accounts and trunks the recorder is not told to record leaves no file;
- a wideband call: the caller sends Opus (a dynamic payload type, known from the SDP the tap is
  told), the callee G.722: an Ogg Opus file of the packets as sent and a 16 kHz WAV file of the
  decoded G.722, each on the call's clock;
- a re-INVITE from G.711 to Opus: the caller's Opus goes to a second file, on the call's clock.
"""

from __future__ import annotations

import random
import struct
import wave
from pathlib import Path

import attrs
import trio

from gateway.core.media.srtp import SrtpSession
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.taps.g722 import G722Decoder
from gateway.plugins.taps.oggopus import PRE_SKIP, opus_samples_untrusted
from gateway.testing.sip_agent import simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, eventually
from tests.component.calls.dtls_phone import Phone, bind
from tests.component.calls.recorder_calls import recording_env, recordings, rtp
from tests.component.calls.zrtp_pairs import pairs, phone_exchange, zrtp_sdp
from tests.port_blocks import port_bases
from tests.unit.taps.ogg_reader import read_ogg

CALLER_PORT, CALLEE_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)
CALLER_BYTE, CALLEE_BYTE = 0x00, 0x80  # PCMU -32124 and +32124
PACKETS = 50


@attrs.define
class Media:
    caller: trio.socket.SocketType
    callee: trio.socket.SocketType
    caller_to: tuple[str, int]
    callee_to: tuple[str, int]


async def plain_call(
    env: B2bua, formats: tuple[str, ...] = ("0", "8", "101")
) -> tuple[object, Media]:
    """The trunk calls alice, both in plain RTP on real sockets; alice answers."""
    call = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT, formats=formats)
    )
    leg_b = await env.alice.next_call()
    offered = parse_sdp_untrusted(leg_b.invite.body).media[0]
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT, formats=formats))
    final = await call.final()
    assert final.status == 200
    answered = parse_sdp_untrusted(final.body).media[0]
    media = Media(
        await bind(CALLER_PORT),
        await bind(CALLEE_PORT),
        ("127.0.0.1", answered.port),
        ("127.0.0.1", offered.port),
    )
    return call, media


async def talk(media: Media) -> None:
    """50 packets each way, 20 ms apart; the callee starts 0.5 s after the caller."""
    for seq in range(PACKETS + 25):
        if seq < PACKETS:
            await media.caller.sendto(rtp(seq, CALLER_BYTE, 0x1111), media.caller_to)
        if seq >= 25:
            await media.callee.sendto(rtp(seq - 25, CALLEE_BYTE, 0x2222), media.callee_to)
        await trio.sleep(0.02)


async def test_a_recorded_trunks_call_gives_one_file_per_speaker_on_the_calls_clock(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await recording_env(nursery, tmp_path, voipgw_seed, {"trunks": ["carrier"]})
    call, media = await plain_call(env)
    with media.caller, media.callee:
        await talk(media)
        assert env.gateway.calls is not None
        (gateway_call,) = env.gateway.calls.calls
        record = gateway_call.security_record()
        assert record["taps"] == {"names": ["recorder"], "untapped_streams": []}
        await call.bye()  # type: ignore[attr-defined]
        await eventually(lambda: env.calls == 0)
    await eventually(lambda: len(recordings(tmp_path)) == 2)
    files = recordings(tmp_path)
    caller = next(samples for name, samples in files.items() if name.endswith("-0-caller.wav"))
    callee = next(samples for name, samples in files.items() if name.endswith("-0-callee.wav"))
    assert caller == [-32124] * (PACKETS * 160)
    # The callee spoke 0.5 s later: its file starts with that much silence, then its audio.
    assert callee[:4000] == [0] * 4000
    assert callee[4000:] == [32124] * (PACKETS * 160)


async def test_a_zrtp_callers_recording_is_the_decrypted_audio(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await recording_env(nursery, tmp_path, voipgw_seed, {"accounts": ["alice"]}, zrtp=True)
    negotiation = phone_exchange().offer(suites=[], secure_signalling=False)
    call = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=zrtp_sdp(negotiation, port=CALLER_PORT)
    )
    leg_b = await env.alice.next_call()
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    answer = parse_sdp_untrusted(final.body)
    negotiation.remote_sdp_attributes(pairs(answer, answer.media[0]))
    phone = Phone(negotiation, await bind(CALLER_PORT), ("127.0.0.1", answer.media[0].port))
    nursery.start_soon(phone.run)
    with trio.fail_after(10):
        await phone.keyed.wait()
    assert phone.keys is not None
    srtp = SrtpSession(phone.keys)
    wire: list[bytes] = []
    for seq in range(PACKETS):
        protected = srtp.protect_rtp(rtp(seq, CALLER_BYTE, 0x3333))
        assert protected is not None
        wire.append(protected)
        await phone.sock.sendto(protected, phone.gateway)
        await trio.sleep(0.02)
    await call.bye()
    await eventually(lambda: env.calls == 0)
    srtp.close()
    await eventually(lambda: len(recordings(tmp_path)) == 1)
    ((name, caller),) = recordings(tmp_path).items()
    assert name.endswith("-0-caller.wav")
    assert caller == [-32124] * (PACKETS * 160)
    assert all(packet[12:172] != bytes([CALLER_BYTE]) * 160 for packet in wire)  # was encrypted


async def test_calls_nobody_asked_to_record_leave_no_file(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await recording_env(nursery, tmp_path, voipgw_seed, {"accounts": ["bob"]})
    call, media = await plain_call(env)
    with media.caller, media.callee:
        await talk(media)
        assert env.gateway.calls is not None
        (gateway_call,) = env.gateway.calls.calls
        assert "taps" not in gateway_call.security_record()
        await call.bye()  # type: ignore[attr-defined]
        await eventually(lambda: env.calls == 0)
    await trio.sleep(1)
    assert not (tmp_path / "rec").exists()


async def test_an_opus_and_g722_call_is_recorded_in_ogg_opus_and_16_khz_wav(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Random G.722 octets reach full scale, where spandsp wraps: compared with our decoder.
    recorder = {"trunks": ["carrier"], "g722_decoder": "python"}
    env = await recording_env(nursery, tmp_path, voipgw_seed, recorder)
    call, media = await plain_call(env, formats=("111", "9", "101"))
    rng = random.Random(voipgw_seed)
    opus = [b"\xf8" + rng.randbytes(60) for _ in range(PACKETS)]  # CELT FB 20 ms, code 0
    g722 = [rng.randbytes(160) for _ in range(PACKETS)]
    with media.caller, media.callee:
        for seq in range(PACKETS + 25):
            if seq < PACKETS:  # Opus: a 48 kHz RTP clock (RFC 7587 §4.1)
                header = struct.pack("!BBHII", 0x80, 111, seq, 960 * seq, 0x1111)
                await media.caller.sendto(header + opus[seq], media.caller_to)
            if seq >= 25:  # G.722: 8 kHz timestamps for 16 kHz audio (RFC 3551 §4.5.2)
                header = struct.pack("!BBHII", 0x80, 9, seq - 25, 160 * (seq - 25), 0x2222)
                await media.callee.sendto(header + g722[seq - 25], media.callee_to)
            await trio.sleep(0.02)
        await call.bye()  # type: ignore[attr-defined]
        await eventually(lambda: env.calls == 0)
    await eventually(lambda: len(list((tmp_path / "rec").glob("*/*"))) == 2)
    (caller,) = (tmp_path / "rec").glob("*/*-0-caller.opus")
    (callee,) = (tmp_path / "rec").glob("*/*-0-callee.wav")
    _, packets = read_ogg(caller.read_bytes())
    assert packets[0][:8] == b"OpusHead" and packets[3:] == opus  # after the pre-skip's packet
    assert packets[2] == b"\xfb\x01" and PRE_SKIP == 960
    with wave.open(str(callee)) as wav:
        assert wav.getframerate() == 16000
        frames = wav.readframes(wav.getnframes())
    decoded = list(struct.unpack(f"<{len(frames) // 2}h", frames))
    decoder = G722Decoder()
    pcm = b"".join(decoder.decode(payload) for payload in g722)
    # The callee spoke 0.5 s later: 8000 samples of silence at 16 kHz, then its audio.
    assert decoded == [0] * 8000 + list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


async def test_a_reinvite_to_opus_moves_the_caller_to_a_second_file_on_the_calls_clock(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """PCMU first; a re-INVITE offers only Opus (a dynamic payload type the recording did not
    know: the core tells the sink, streams_changed); the caller's Opus goes to ``-2.opus``."""
    env = await recording_env(nursery, tmp_path, voipgw_seed, {"trunks": ["carrier"]})
    call, media = await plain_call(env)
    rng = random.Random(voipgw_seed)
    opus = [b"\xf8" + rng.randbytes(40) for _ in range(10)]
    with media.caller, media.callee:
        for seq in range(10):
            await media.caller.sendto(rtp(seq, CALLER_BYTE, 0x1111), media.caller_to)
            await trio.sleep(0.02)
        offer = simple_sdp("127.0.0.1", CALLER_PORT, formats=("111",), version=2)
        reinvite = call.reinvite(offer)  # type: ignore[attr-defined]
        async with trio.open_nursery() as answering:

            async def answer() -> None:
                relayed = await env.alice.next_request("INVITE", timeout=10)
                assert b"opus/48000/2" in relayed.request.body
                answer = simple_sdp("127.0.0.1", CALLEE_PORT, formats=("111",), version=2)
                await env.alice.respond(relayed, 200, body=answer, content_type="application/sdp")

            answering.start_soon(answer)
            assert (await reinvite).status == 200
        for seq in range(10):
            header = struct.pack("!BBHII", 0x80, 111, 10 + seq, 50_000 + 960 * seq, 0x1111)
            await media.caller.sendto(header + opus[seq], media.caller_to)
            await trio.sleep(0.02)
        await call.bye()  # type: ignore[attr-defined]
        await eventually(lambda: env.calls == 0)
    await eventually(lambda: len(list((tmp_path / "rec").glob("*/*"))) == 2)
    (g711,) = (tmp_path / "rec").glob("*/*-0-caller.wav")
    (second,) = (tmp_path / "rec").glob("*/*-0-caller-2.opus")
    with wave.open(str(g711)) as wav:
        assert wav.readframes(wav.getnframes()) == struct.pack("<h", -32124) * 1600
    _, packets = read_ogg(second.read_bytes())
    assert packets[-10:] == opus
    # Before them, concealment from the call's start: the pre-skip, then at least the 0.2 s of
    # PCMU (and the re-INVITE's round trip).
    lead = sum(opus_samples_untrusted(packet) or 0 for packet in packets[2:-10]) - PRE_SKIP
    assert 0.2 * 48000 <= lead <= 1.0 * 48000
