"""The ``recorder`` tap: G.711 decoding (known values of ITU-T G.711), RTP header reading, WAV
files placed by RTP timestamp (gaps, late packets, a new SSRC), the pcap format, the bounded
sink and its configuration. Time is passed in (``now``); no sockets."""

from __future__ import annotations

import logging
import math
import random
import stat
import struct
import subprocess
import wave
from pathlib import Path

import attrs
import pytest
import trio

from gateway.core.config import ConfigError, from_mapping
from gateway.core.interfaces import TappedCall, TappedMedia
from gateway.core.media import amr, gsm
from gateway.core.media.g729 import Bcg729Decoder
from gateway.core.plugins import load_plugins
from gateway.plugins.taps import recorder as recorder_plugin
from gateway.plugins.taps.g722 import G722Decoder
from gateway.plugins.taps.oggopus import PRE_SKIP, opus_samples_untrusted
from gateway.plugins.taps.recorder import (
    PCMA,
    PCMU,
    PcapRecording,
    Recorder,
    RecorderConfig,
    RecordingSink,
    WavRecording,
    g711_to_linear,
    rtp_fields,
)
from tests.conftest import missing
from tests.unit.taps.bcg729_encoder import bcg729_or_missing, g729_encode, power, tone
from tests.unit.taps.ogg_reader import read_ogg

CALL = TappedCall("rec-1", "sip:alice@gw", "sip:+4930@gw", "account", "alice", "trunk", "carrier")


def rtp(seq: int, ts: int, payload: bytes, *, pt: int = PCMU, ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def samples(path: Path) -> list[int]:
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        frames = wav.readframes(wav.getnframes())
    return list(struct.unpack(f"<{len(frames) // 2}h", frames))


# -- G.711 and RTP ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("law", "code", "linear"),
    [
        (PCMU, 0xFF, 0),
        (PCMU, 0x7F, 0),
        (PCMU, 0x80, 32124),
        (PCMU, 0x00, -32124),
        (PCMU, 0xFD, 16),  # segment 0: 0, 8, 16 ... 120
        (PCMU, 0xEF, 132),  # segment 1 starts at 132, steps of 16
        (PCMA, 0xD5, 8),
        (PCMA, 0x55, -8),
        (PCMA, 0xAA, 32256),
        (PCMA, 0x2A, -32256),
    ],
)
def test_g711_decodes_to_the_standards_values(law: int, code: int, linear: int) -> None:
    (value,) = struct.unpack("<h", g711_to_linear(law, bytes([code])))
    assert value == linear


def test_g711_is_monotonic_and_symmetric() -> None:
    for law in (PCMU, PCMA):
        values = struct.unpack("<256h", g711_to_linear(law, bytes(range(256))))
        positive = sorted(v for v in values if v > 0)
        negative = sorted(-v for v in values if v < 0)
        assert positive == negative  # sign-symmetric code tables
        assert max(values) <= 32767 and min(values) >= -32768


def test_rtp_fields_skip_csrcs_extensions_and_padding_and_refuse_rtcp() -> None:
    header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 2, 8, 7, 160, 0xABCD)
    csrcs = b"\x00\x00\x00\x01\x00\x00\x00\x02"
    extension = b"\xbe\xde\x00\x01" + b"\x01\x02\x03\x04"
    packet = header + csrcs + extension + b"\xd5" * 4 + b"\x00\x00\x03"  # 3 octets of padding
    fields = rtp_fields(packet)
    assert fields is not None
    assert (fields.payload_type, fields.sequence, fields.timestamp, fields.ssrc) == (
        8,
        7,
        160,
        0xABCD,
    )
    assert fields.payload == b"\xd5" * 4
    assert rtp_fields(b"\x80\xc8" + bytes(26)) is None  # RTCP sender report (PT 200)
    assert rtp_fields(b"\x80\x00\x00") is None
    assert rtp_fields(b"\x00" * 20) is None  # not version 2


# -- WAV ----------------------------------------------------------------------------------------


def test_each_speaker_gets_a_file_placed_on_the_calls_clock(tmp_path: Path) -> None:
    recording = WavRecording(tmp_path, "rec-1")
    caller, callee = b"\x00" * 160, b"\x80" * 160  # -32124 and +32124
    for i in range(50):
        now = 10.0 + 0.02 * i
        recording.add("0", "a_to_b", rtp(i, 1000 + 160 * i, caller), now)
        # The callee starts 0.5 s later: its file begins with 0.5 s of silence.
        if i >= 25:
            recording.add("0", "b_to_a", rtp(i, 555 + 160 * i, callee, ssrc=9), now)
    recording.close()
    caller_wav = samples(tmp_path / "rec-1-0-caller.wav")
    callee_wav = samples(tmp_path / "rec-1-0-callee.wav")
    assert caller_wav == [-32124] * 8000
    assert callee_wav == [0] * 4000 + [32124] * 4000
    assert stat.S_IMODE((tmp_path / "rec-1-0-caller.wav").stat().st_mode) == 0o600


def test_gaps_are_silence_and_late_packets_are_dropped_and_counted(tmp_path: Path) -> None:
    recording = WavRecording(tmp_path, "rec-2")
    order = [0, 1, 3, 2, 4, 4, 9]  # 2 comes late, 4 twice, 5-8 lost
    for seq in order:
        recording.add("0", "a_to_b", rtp(seq, 160 * seq, bytes([seq]) * 160), 0.02 * seq)
    recording.close()
    written = samples(tmp_path / "rec-2-0-caller.wav")
    assert len(written) == 10 * 160
    decoded = {seq: struct.unpack("<h", g711_to_linear(PCMU, bytes([seq])))[0] for seq in order}
    for seq in range(10):
        chunk = written[160 * seq : 160 * (seq + 1)]
        expected = decoded[seq] if seq in (0, 1, 3, 4, 9) else 0
        assert chunk == [expected] * 160, seq
    assert recording.counts.late == 2  # 2 (behind 3) and the second 4


def test_a_new_ssrc_or_a_timestamp_jump_is_placed_by_the_clock(tmp_path: Path) -> None:
    recording = WavRecording(tmp_path, "rec-3")
    recording.add("0", "a_to_b", rtp(1, 0, b"\x00" * 160), 0.0)
    # One second later a new source (a transfer target) with unrelated timestamps.
    recording.add("0", "a_to_b", rtp(500, 987654, b"\x80" * 160, ssrc=77), 1.0)
    # Same SSRC, timestamp leaps an hour ahead: re-based on the clock too.
    recording.add("0", "a_to_b", rtp(501, 987654 + 8000 * 3600, b"\x00" * 160, ssrc=77), 2.0)
    recording.close()
    written = samples(tmp_path / "rec-3-0-caller.wav")
    assert len(written) == 16000 + 160
    assert written[8000:8160] == [32124] * 160
    assert written[16000:] == [-32124] * 160


def test_rtcp_comfort_noise_and_other_codecs_write_nothing(tmp_path: Path) -> None:
    recording = WavRecording(tmp_path, "rec-4")
    recording.add("0", "a_to_b", b"\x80\xc8" + bytes(26), 0.0)  # RTCP
    recording.add("0", "a_to_b", rtp(1, 0, b"\x40", pt=13), 0.0)  # comfort noise
    recording.add("0", "a_to_b", rtp(2, 0, b"\x01" * 40, pt=111), 0.0)  # opus
    recording.close()
    assert recording.files == [] and list(tmp_path.iterdir()) == []
    assert recording.counts.other == {"pt111": 1} and recording.counts.packets == 3


def test_pcma_is_decoded_too_and_streams_get_files_of_their_own(tmp_path: Path) -> None:
    recording = WavRecording(tmp_path, "rec-5")
    recording.add("0", "a_to_b", rtp(1, 0, b"\xd5" * 160, pt=PCMA), 0.0)
    recording.add("1", "b_to_a", rtp(1, 0, b"\x55" * 160, pt=PCMA), 0.0)
    recording.close()
    assert samples(tmp_path / "rec-5-0-caller.wav") == [8] * 160
    assert samples(tmp_path / "rec-5-1-callee.wav") == [-8] * 160


# -- pcap ---------------------------------------------------------------------------------------


def test_the_pcap_holds_every_packet_as_rtp_tshark_can_read(tmp_path: Path) -> None:
    recording = PcapRecording(tmp_path, "rec-6")
    for seq in range(5):
        recording.add("0", "a_to_b", rtp(seq, 160 * seq, b"\x01" * 160, pt=111), 0.02 * seq)
        recording.add("0", "b_to_a", rtp(seq, 160 * seq, b"\x02" * 160, ssrc=5), 0.02 * seq)
    recording.close()
    path = tmp_path / "rec-6.pcap"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    out = subprocess.run(
        [
            "tshark", "-n", "-r", str(path), "-d", "udp.port==40000,rtp",
            "-o", "ip.check_checksum:TRUE",
            "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "rtp.seq", "-e", "rtp.p_type",
            "-e", "ip.checksum.status",
        ],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split("\n")  # fmt: skip
    rows = [line.split("\t") for line in out if line]
    assert len(rows) == 10
    assert rows[0] == ["192.0.2.1", "192.0.2.2", "0", "111", "1"]  # 1: IP checksum good
    assert rows[1] == ["192.0.2.2", "192.0.2.1", "0", "0", "1"]


# -- the sink and the tap ---------------------------------------------------------------------


async def test_the_sink_drops_and_counts_when_full_and_finishes_on_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = RecordingSink(CALL, tmp_path / "day", "wav", queue=10)
    for seq in range(15):  # its task has not run yet: 10 fit, 5 are dropped
        sink.packet("0", "a_to_b", rtp(seq, 160 * seq, b"\x00" * 160), now=0.02 * seq)
    sink.close()
    sink.packet("0", "a_to_b", rtp(99, 0, b"\x00"), now=1.0)  # after close: dropped, no error
    with caplog.at_level(logging.INFO):
        await sink.run()
    assert sink.dropped == 6
    assert len(samples(tmp_path / "day" / "rec-1-0-caller.wav")) == 10 * 160
    assert "recording of call rec-1" in caplog.text and "6 dropped" in caplog.text


async def test_a_paused_sink_writes_nothing_until_resumed(tmp_path: Path) -> None:
    """``voipgw recording pause`` (``set_paused``): the packets meanwhile are not written,
    counted; those before and after are (PCI DSS: the card digits are never on disk)."""
    sink = RecordingSink(CALL, tmp_path / "day", "pcap", queue=100)
    for seq in range(10):
        if seq == 3:
            sink.set_paused(True, by="agent 7")
        if seq == 7:
            sink.set_paused(False, by="agent 7")
        sink.packet("0", "a_to_b", rtp(seq, 160 * seq, b"\x00" * 160), now=0.02 * seq)
    sink.close()
    await sink.run()
    assert sink.paused_packets == 4
    assert sink.recording is not None and sink.recording.counts.packets == 6


async def test_a_paused_wav_recording_stays_on_the_calls_clock_the_pause_silence(
    tmp_path: Path,
) -> None:
    """The paused stretch of a WAV file is silence of its length (the resumed packets are
    placed by their RTP timestamps, ``_Track.place``): the file stays playable and its
    speakers' files overlay as they are, the card digits not in it."""
    sink = RecordingSink(CALL, tmp_path / "day", "wav", queue=100)
    for seq in range(10):
        if seq == 3:
            sink.set_paused(True, by="agent 7")
        if seq == 7:
            sink.set_paused(False, by="agent 7")
        sink.packet("0", "a_to_b", rtp(seq, 160 * seq, b"\x80" * 160), now=0.02 * seq)
    sink.close()
    await sink.run()
    (path,) = (tmp_path / "day").rglob("*-0-caller.wav")
    written = samples(path)
    assert len(written) == 10 * 160
    assert written[3 * 160 : 7 * 160] == [0] * 4 * 160
    assert 0 not in written[: 3 * 160] + written[7 * 160 :]


async def test_a_disk_that_fails_ends_the_recording_not_the_gateway(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    sink = RecordingSink(CALL, blocked / "day", "wav", queue=10)
    sink.packet("0", "a_to_b", rtp(1, 0, b"\x00" * 160), now=0.0)
    sink.close()
    with caplog.at_level(logging.ERROR):
        await sink.run()
    assert "recording of call rec-1 stopped" in caplog.text


def test_the_tap_records_the_configured_accounts_and_trunks() -> None:
    def recorder(**keys: object) -> Recorder:
        return Recorder(RecorderConfig(state_dir="/s", **keys))  # type: ignore[arg-type]

    assert recorder(all_calls=True).sink_for_call(CALL) is not None
    assert recorder(accounts=("alice",)).sink_for_call(CALL) is not None
    assert recorder(trunks=("carrier",)).sink_for_call(CALL) is not None
    assert recorder(accounts=("bob",), trunks=("other",)).sink_for_call(CALL) is None
    sink = recorder(all_calls=True).sink_for_call(CALL)
    assert sink is not None and sink._directory.parent == Path("/s/recordings")


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    def load(table: dict[str, object]) -> None:
        config = from_mapping({"plugins": {"enable": ["recorder"], "recorder": table}})
        load_plugins(config, extra=[("recorder", recorder_plugin)], installed={})

    with pytest.raises(ConfigError, match=r"plugins.recorder.*all_calls, accounts, trunks"):
        load({})
    with pytest.raises(ConfigError, match=r"plugins.recorder.*format"):
        load({"all_calls": True, "format": "mp3"})
    with pytest.raises(ConfigError, match=r"plugins.recorder.*queue"):
        load({"all_calls": True, "queue": 1})
    with pytest.raises(ConfigError, match=r"plugins.recorder.*min_free_mb"):
        load({"all_calls": True, "min_free_mb": -1})
    with pytest.raises(ConfigError, match=r"plugins.recorder.*g722_decoder"):
        load({"all_calls": True, "g722_decoder": "ffmpeg"})
    load({"accounts": ["alice"], "directory": str(tmp_path / "rec")})


def test_random_packets_never_raise(tmp_path: Path) -> None:
    """Whatever the relay forwards (it is what the peers sent) is recorded or counted."""
    rng = random.Random(7)
    recording = WavRecording(tmp_path, "rec-7")
    for i in range(2000):
        packet = rng.randbytes(rng.randrange(0, 200))
        if rng.random() < 0.5 and len(packet) > 2:
            packet = (
                bytes([0x80 | (packet[0] & 0x3F), rng.choice([0, 8, 13, 96, 200])]) + packet[2:]
            )
        recording.add(str(rng.randrange(2)), rng.choice(["a_to_b", "b_to_a"]), packet, i * 0.02)
    recording.close()
    assert recording.counts.packets == 2000


async def test_a_nearly_full_disk_stops_the_recording_and_later_copies_are_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    looks: list[int] = []

    def free_space(path: Path) -> int:
        # Plenty when the recording starts; the disk has filled up by the next look.
        looks.append(1)
        return 2 * 2**30 if len(looks) == 1 else 512 * 2**20

    sink = RecordingSink(
        CALL, tmp_path / "day", "wav", queue=2000, min_free=2**30, free_space=free_space
    )
    for seq in range(600):
        sink.packet("0", "a_to_b", rtp(seq, 160 * seq, b"\x00" * 160), now=0.02 * seq)
    sink.close()
    with caplog.at_level(logging.ERROR):
        await sink.run()
    assert "512 MiB free" in caplog.text and "min_free_mb (1024)" in caplog.text
    # What was written before the check at packet 500 is kept, in a well-formed file.
    assert len(samples(tmp_path / "day" / "rec-1-0-caller.wav")) == 500 * 160
    sink.packet("0", "a_to_b", rtp(999, 0, b"\x00" * 160), now=20.0)  # no error: counted
    assert sink.dropped == 1


async def test_no_recording_starts_on_a_nearly_full_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = RecordingSink(
        CALL, tmp_path / "day", "wav", queue=10, min_free=2**30, free_space=lambda _: 0
    )
    sink.packet("0", "a_to_b", rtp(1, 0, b"\x00" * 160), now=0.0)
    sink.close()
    with caplog.at_level(logging.ERROR):
        await sink.run()
    assert "recording of call rec-1 stopped: 0 MiB free" in caplog.text
    assert list((tmp_path / "day").iterdir()) == []


# -- G.722, Opus, codec switches ----------------------------------------------------------------


def wav_rate(path: Path) -> int:
    with wave.open(str(path)) as wav:
        return wav.getframerate()


def samples16(path: Path) -> list[int]:
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        frames = wav.readframes(wav.getnframes())
    return list(struct.unpack(f"<{len(frames) // 2}h", frames))


def test_g722_is_decoded_into_a_16_khz_file_placed_by_its_8_khz_timestamps(
    tmp_path: Path,
) -> None:
    rng = random.Random(9)
    payloads = [rng.randbytes(160) for _ in range(6)]
    recording = WavRecording(tmp_path, "rec-8")
    for seq in (0, 1, 2, 4, 5):  # 3 lost: 20 ms of silence, 320 samples at 16 kHz
        # RFC 3551 §4.5.2: the timestamp advances 160 per 20 ms although the audio is 16 kHz.
        recording.add("0", "a_to_b", rtp(seq, 3000 + 160 * seq, payloads[seq], pt=9), 0.02 * seq)
    recording.close()
    decoder = G722Decoder()
    expected: list[int] = []
    for seq in range(6):
        if seq == 3:
            expected += [0] * 320
            continue
        pcm = decoder.decode(payloads[seq])  # one decoder: its state runs across the gap
        expected += struct.unpack(f"<{len(pcm) // 2}h", pcm)
    assert samples16(tmp_path / "rec-8-0-caller.wav") == expected


def test_a_new_g722_source_gets_a_fresh_decoder(tmp_path: Path) -> None:
    payload = random.Random(3).randbytes(160)
    recording = WavRecording(tmp_path, "rec-9")
    recording.add("0", "a_to_b", rtp(0, 0, payload, pt=9), 0.0)
    recording.add("0", "a_to_b", rtp(7, 5555, payload, pt=9, ssrc=99), 0.02)  # a transfer
    recording.close()
    written = samples16(tmp_path / "rec-9-0-caller.wav")
    assert written[:320] == written[320:]  # the same octets from a reset decoder
    assert written[:320] != samples16_of(G722Decoder(), payload, payload)[320:]


def samples16_of(decoder: G722Decoder, *payloads: bytes) -> list[int]:
    pcm = b"".join(decoder.decode(payload) for payload in payloads)
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def opus_packet(rng: random.Random) -> bytes:
    """A 20 ms CELT fullband packet (TOC 0xF8, code 0) of arbitrary bits: well framed."""
    return b"\xf8" + rng.randbytes(60)


def test_opus_packets_go_into_an_ogg_opus_file_with_gaps_concealed(tmp_path: Path) -> None:
    rng = random.Random(11)
    codecs = {"0": {111: "opus", 101: "telephone-event"}}
    recording = WavRecording(tmp_path, "rec-10", codecs)
    sent = []
    for seq in (0, 1, 2, 5, 6):  # 3 and 4 missing: 40 ms concealed
        packet = opus_packet(rng)
        sent.append(packet)
        # RFC 7587 §4.1: a 48 kHz RTP clock: 960 per 20 ms.
        recording.add("0", "b_to_a", rtp(seq, 960 * seq, packet, pt=111), 0.02 * seq)
    recording.add("0", "b_to_a", rtp(7, 960 * 7, b"\x01\x00\x00\xa0", pt=101), 0.14)  # DTMF
    recording.add("0", "b_to_a", rtp(8, 960 * 8, b"\xfb\x00", pt=111), 0.16)  # 0 frames: R5
    recording.close()
    path = tmp_path / "rec-10-0-callee.opus"
    assert recording.files == [path]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pages, packets = read_ogg(path.read_bytes())
    audio = packets[3:]  # OpusHead, OpusTags, the pre-skip's concealment
    assert audio == [*sent[:3], b"\xfb\x02", *sent[3:]]  # two empty 20 ms frames of the same mode
    assert pages[-1].granule == PRE_SKIP + 7 * 960
    assert recording.counts.malformed == 1
    assert recording.counts.other == {}  # telephone-event is not audio, not another codec


def test_a_codec_switch_moves_to_the_speakers_file_of_that_kind_on_the_calls_clock(
    tmp_path: Path,
) -> None:
    """PCMU for 0.2 s, a re-INVITE to G.722 for 0.2 s, then PCMA (G.711 again: the first
    file goes on), then Opus: three files, each on the call's clock."""
    rng = random.Random(5)
    recording = WavRecording(tmp_path, "rec-11", {"0": {111: "opus"}})
    now, seq = 0.0, 0
    for pt, clock in ((PCMU, 160), (9, 160), (PCMA, 160), (111, 960)):
        for i in range(10):
            payload = opus_packet(rng) if pt == 111 else bytes([0x55]) * 160
            # The source keeps its SSRC; timestamps jump at each switch, as phones do.
            recording.add("0", "a_to_b", rtp(seq, 1000 * pt + clock * i, payload, pt=pt), now)
            now, seq = now + 0.02, seq + 1
    recording.close()
    assert [path.name for path in recording.files] == [
        "rec-11-0-caller.wav",
        "rec-11-0-caller-2.wav",
        "rec-11-0-caller-3.opus",
    ]
    g711 = samples(tmp_path / "rec-11-0-caller.wav")
    ulaw = struct.unpack("<h", g711_to_linear(PCMU, b"\x55"))[0]
    alaw = struct.unpack("<h", g711_to_linear(PCMA, b"\x55"))[0]
    # 0-0.2 s PCMU, 0.2-0.4 s silence (G.722 went to the other file), 0.4-0.6 s PCMA.
    assert g711 == [ulaw] * 1600 + [0] * 1600 + [alaw] * 1600
    g722 = samples16(tmp_path / "rec-11-0-caller-2.wav")
    assert wav_rate(tmp_path / "rec-11-0-caller-2.wav") == 16000
    assert len(g722) == 6400 and g722[:3200] == [0] * 3200  # from 0.2 s on the call's clock
    _, packets = read_ogg((tmp_path / "rec-11-0-caller-3.opus").read_bytes())
    # From 0.6 s: concealment (the pre-skip's 20 ms and 600 ms of gap), then 10 packets.
    assert len(packets[-10:]) == 10 and all(packet[0] == 0xF8 for packet in packets[-10:])
    assert sum(opus_samples_untrusted(packet) or 0 for packet in packets[2:-10]) == (
        PRE_SKIP + 28800
    )


def test_other_codecs_are_counted_by_name_and_named_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    call = attrs.evolve(
        CALL,
        media=(
            TappedMedia(
                0, "audio", ("18", "96", "101"), ("96 iLBC/8000", "101 telephone-event/8000")
            ),
        ),
    )
    sink = RecordingSink(call, tmp_path / "day", "wav", queue=20)
    for seq in range(3):
        sink.packet("0", "a_to_b", rtp(seq, 160 * seq, b"\x01" * 20, pt=18), now=0.02 * seq)
    sink.packet("0", "a_to_b", rtp(3, 480, b"\x01" * 38, pt=96), now=0.06)
    sink.packet("0", "a_to_b", rtp(4, 480, b"\x01\x00\x00\xa0", pt=101), now=0.06)
    sink.packet("0", "a_to_b", rtp(5, 480, b"\x01" * 20, pt=122), now=0.06)
    sink.close()
    with caplog.at_level(logging.INFO):
        trio.run(sink.run)
    assert "not written, other codecs: 3 g729, 1 ilbc, 1 pt122" in caplog.text


def test_a_reinvite_teaches_the_sink_a_new_dynamic_payload_type(tmp_path: Path) -> None:
    sink = RecordingSink(CALL, tmp_path / "day", "wav", queue=20)  # told no streams at first
    sink.streams_changed((TappedMedia(0, "audio", ("107",), ("107 opus/48000/2",)),))
    sink.packet("0", "b_to_a", rtp(0, 0, opus_packet(random.Random(1)), pt=107), now=0.0)
    sink.close()
    trio.run(sink.run)
    assert [path.name for path in (tmp_path / "day").iterdir()] == ["rec-1-0-callee.opus"]


def test_random_packets_of_every_codec_never_raise(tmp_path: Path) -> None:
    rng = random.Random(17)
    bcg729_or_missing()  # G.729 decoded, not only counted
    dynamic = {111: "opus", 97: "amr", 98: "amr-wb octet-aligned"}
    recording = WavRecording(
        tmp_path,
        "rec-12",
        {"0": dynamic, "1": dynamic},
        new_framed=recorder_plugin.framed_decoder_factories(),
        new_amr=recorder_plugin.amr_decoder_factories(),
    )
    for i in range(3000):
        payload = rng.randbytes(rng.randrange(0, 300))
        if rng.random() < 0.1:  # GSM's signature, so some are decoded, not only refused
            payload = b"".join(b"\xd0" + rng.randbytes(32) for _ in range(2))
        pt = rng.choice([0, 8, 9, 13, 111, 18, 97, 98, 3])
        ts = rng.choice([160 * i, rng.randrange(2**32)])
        packet = rtp(i, ts, payload, pt=pt, ssrc=rng.choice([1, 2]))
        recording.add(str(rng.randrange(2)), rng.choice(["a_to_b", "b_to_a"]), packet, i * 0.02)
    recording.close()
    assert recording.counts.packets == 3000
    for path in recording.files:
        if path.suffix == ".opus":
            read_ogg(path.read_bytes())  # well-formed pages, CRCs right
        else:
            with wave.open(str(path)) as wav:
                assert wav.getnframes() * 2 == path.stat().st_size - 44


def test_a_source_faster_than_real_time_is_not_written_beyond_the_clock(tmp_path: Path) -> None:
    """A new SSRC in every packet re-bases each onto the end of the file: without a bound a
    flood would be decoded (G.722 costs CPU) and written as fast as it comes."""
    recording = WavRecording(tmp_path, "rec-13")
    for i in range(2000):  # 40 s of G.722 in 0.2 s
        recording.add("0", "a_to_b", rtp(i, 0, b"\x11" * 160, pt=9, ssrc=i), i * 0.0001)
    recording.close()
    written = len(samples16(tmp_path / "rec-13-0-caller.wav"))
    assert written <= (5.0 + 0.2 + 0.02) * 16000  # REBASE_AFTER ahead of the clock at most
    assert recording.counts.late == 2000 - written // 320


def test_g722_is_decoded_by_libg722_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # libg722 is installed with the gateway (session 55): "auto" no longer depends on
    # libspandsp2 being there, and never falls back to the Python decoder's 0.8 ms a packet.
    from gateway.plugins.taps import recorder
    from gateway.plugins.taps.g722 import G722Decoder
    from gateway.plugins.taps.g722_libg722 import LibG722Decoder
    from gateway.plugins.taps.g722_spandsp import SpandspG722Decoder

    assert recorder.g722_decoder_factory("python") is G722Decoder
    assert recorder.g722_decoder_factory("libg722") is LibG722Decoder
    assert RecorderConfig(all_calls=True, g722_decoder="libg722").g722_decoder == "libg722"
    monkeypatch.setattr(recorder, "load_spandsp", lambda: None)
    assert recorder.g722_decoder_factory("auto") is LibG722Decoder
    with pytest.raises(ValueError, match='g722_decoder: "spandsp", but libspandsp cannot'):
        RecorderConfig(all_calls=True, g722_decoder="spandsp")
    monkeypatch.undo()
    if recorder.load_spandsp() is None:
        missing("libspandsp is not installed (apt-get install libspandsp2)")
    assert recorder.g722_decoder_factory("auto") is LibG722Decoder
    assert isinstance(recorder.g722_decoder_factory("spandsp")(), SpandspG722Decoder)


# -- G.729 (bcg729) -------------------------------------------------------------------------------


def g729_packets(frames: list[bytes], per_packet: int = 2) -> list[bytes]:
    """20 ms payloads (RFC 3551 §4.5.6: frames back to back, a SID frame last)."""
    return [b"".join(frames[i : i + per_packet]) for i in range(0, len(frames), per_packet)]


def test_g729_is_decoded_into_an_8_khz_file_placed_by_its_timestamps(tmp_path: Path) -> None:
    bcg729 = bcg729_or_missing()
    payloads = g729_packets(g729_encode(bcg729, tone(425.0, 1.0)))
    assert len(payloads) == 50 and {len(p) for p in payloads} == {20}  # 8 kbit/s
    recording = WavRecording(tmp_path, "rec-20", new_framed={"g729": lambda: Bcg729Decoder(bcg729)})
    for seq, payload in enumerate(payloads):
        if seq != 10:  # lost: 20 ms of silence
            recording.add("0", "a_to_b", rtp(seq, 800 + 160 * seq, payload, pt=18), 0.02 * seq)
    recording.close()
    decoder = Bcg729Decoder(bcg729)  # one decoder: its state runs across the gap
    expected: list[int] = []
    for seq, payload in enumerate(payloads):
        pcm = bytes(320) if seq == 10 else decoder.decode(payload)
        expected += struct.unpack("<160h", pcm)
    written = samples(tmp_path / "rec-20-0-caller.wav")
    assert written == expected
    heard = written[1760:]  # after the gap and the decoder's first frames
    assert power(heard, 425.0) > 1000 * power(heard, 1000.0)
    assert recording.counts.other == {}


def test_a_dynamic_g729_and_annex_b_comfort_noise_are_decoded_too(tmp_path: Path) -> None:
    bcg729 = bcg729_or_missing()
    # Annex B (VAD): the tone, then silence the encoder sends as a SID frame and then nothing.
    frames = g729_encode(bcg729, tone(425.0, 0.4) + [0] * 3200, vad=True)
    sid = [frame for frame in frames if len(frame) == 2]
    assert sid and frames.count(b"") > len(sid)  # SID frames, and frames not sent at all
    voice = [frame for frame in frames if len(frame) == 10]
    recording = WavRecording(
        tmp_path, "rec-21", {"0": {97: "g729"}}, new_framed={"g729": lambda: Bcg729Decoder(bcg729)}
    )
    payloads = [voice[0] + voice[1], voice[2] + sid[0], sid[0]]  # RFC 3551 §4.5.6
    for seq, payload in enumerate(payloads):
        recording.add("0", "b_to_a", rtp(seq, 160 * seq, payload, pt=97), 0.02 * seq)
    recording.close()
    written = samples(tmp_path / "rec-21-0-callee.wav")
    # 2 voice frames; a voice frame and a SID frame; a SID frame, then the file ends.
    assert len(written) == 160 + 160 + 80
    assert any(written[240:320])  # comfort noise, not silence


def test_a_g729_payload_of_another_length_is_counted_malformed_and_its_time_is_silent(
    tmp_path: Path,
) -> None:
    bcg729 = bcg729_or_missing()
    payloads = g729_packets(g729_encode(bcg729, tone(425.0, 0.1)))
    recording = WavRecording(tmp_path, "rec-22", new_framed={"g729": lambda: Bcg729Decoder(bcg729)})
    recording.add("0", "a_to_b", rtp(0, 0, payloads[0], pt=18), 0.0)
    recording.add("0", "a_to_b", rtp(1, 160, payloads[1][:15], pt=18), 0.02)  # not G.729
    recording.add("0", "a_to_b", rtp(2, 320, payloads[2], pt=18), 0.04)
    recording.close()
    assert recording.counts.malformed == 1
    written = samples(tmp_path / "rec-22-0-caller.wav")
    assert len(written) == 480 and not any(written[160:320])


def test_a_new_g729_source_gets_a_fresh_decoder(tmp_path: Path) -> None:
    bcg729 = bcg729_or_missing()
    payload = g729_packets(g729_encode(bcg729, tone(425.0, 0.02)))[0]
    recording = WavRecording(tmp_path, "rec-23", new_framed={"g729": lambda: Bcg729Decoder(bcg729)})
    recording.add("0", "a_to_b", rtp(0, 0, payload, pt=18), 0.0)
    recording.add("0", "a_to_b", rtp(7, 5555, payload, pt=18, ssrc=99), 0.02)  # a transfer
    recording.close()
    written = samples(tmp_path / "rec-23-0-caller.wav")
    assert written[:160] == written[160:]  # the same octets from a reset decoder
    again = Bcg729Decoder(bcg729)
    again.decode(payload)
    assert written[:160] != list(struct.unpack("<160h", again.decode(payload)))


def test_without_bcg729_g729_is_counted_and_the_recorder_says_so_as_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(recorder_plugin, "load_bcg729", lambda: None)
    with caplog.at_level(logging.INFO):
        tap = Recorder(RecorderConfig(all_calls=True, directory=str(tmp_path)))
    assert "g729" not in tap.new_framed
    assert "recorder: G.729 is not decoded (libbcg729 not found" in caplog.text
    sink = tap.sink_for_call(CALL)
    assert sink is not None
    sink.packet("0", "a_to_b", rtp(0, 0, bytes(20), pt=18), now=0.0)
    sink.close()
    with caplog.at_level(logging.INFO):
        trio.run(sink.run)
    assert "not written, other codecs: 1 g729" in caplog.text


def test_with_bcg729_the_recorder_decodes_g729_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bcg729_or_missing()
    with caplog.at_level(logging.INFO):
        tap = Recorder(RecorderConfig(all_calls=True, directory=str(tmp_path)))
    assert isinstance(tap.new_framed["g729"](), Bcg729Decoder)
    assert "recorder: G.729 decoded by bcg729 (libbcg729" in caplog.text
    pcap = Recorder(RecorderConfig(all_calls=True, directory=str(tmp_path), format="pcap"))
    assert pcap.new_framed == {}  # every packet as it came: nothing to decode


# -- GSM (libgsm) ---------------------------------------------------------------------------------


def libgsm_or_missing() -> gsm.LibGsm:
    libgsm = gsm.load_libgsm()
    if libgsm is None:
        missing("libgsm is not installed (apt-get install libgsm1)")
    return libgsm


def gsm_payloads(libgsm: gsm.LibGsm, signal: list[int]) -> list[bytes]:
    """20 ms payloads, one 33-octet frame each (RFC 3551 §4.5.8), as a GSM phone sends them."""
    return gsm.GsmEncoder(libgsm).encode_frames(signal)


def test_gsm_is_decoded_into_an_8_khz_file_placed_by_its_timestamps(tmp_path: Path) -> None:
    libgsm = libgsm_or_missing()
    payloads = gsm_payloads(libgsm, tone(425.0, 1.0))
    assert len(payloads) == 50 and {len(p) for p in payloads} == {33}  # 13.2 kbit/s
    recording = WavRecording(tmp_path, "rec-60", new_framed={"gsm": lambda: gsm.GsmDecoder(libgsm)})
    for seq, payload in enumerate(payloads):
        if seq != 10:  # lost: 20 ms of silence
            recording.add("0", "a_to_b", rtp(seq, 800 + 160 * seq, payload, pt=3), 0.02 * seq)
    recording.close()
    decoder = gsm.GsmDecoder(libgsm)  # one decoder: its state runs across the gap
    expected: list[int] = []
    for seq, payload in enumerate(payloads):
        pcm = bytes(320) if seq == 10 else decoder.decode(payload)
        expected += struct.unpack("<160h", pcm)
    written = samples(tmp_path / "rec-60-0-caller.wav")
    assert written == expected
    with wave.open(str(tmp_path / "rec-60-0-caller.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
    heard = written[1760:]  # after the gap and the decoder's first frames
    assert power(heard, 425.0) > 1000 * power(heard, 1000.0)
    assert recording.counts.other == {}


def test_a_dynamic_gsm_with_two_frames_a_packet_is_decoded_too(tmp_path: Path) -> None:
    libgsm = libgsm_or_missing()
    frames = gsm_payloads(libgsm, tone(425.0, 0.12))
    recording = WavRecording(
        tmp_path, "rec-61", {"0": {97: "gsm"}}, new_framed={"gsm": lambda: gsm.GsmDecoder(libgsm)}
    )
    for seq in range(3):  # 40 ms a packet: the timestamps step 320
        payload = frames[2 * seq] + frames[2 * seq + 1]
        recording.add("0", "b_to_a", rtp(seq, 320 * seq, payload, pt=97), 0.04 * seq)
    recording.close()
    decoder = gsm.GsmDecoder(libgsm)
    expected = list(struct.unpack("<960h", decoder.decode(b"".join(frames))))
    assert samples(tmp_path / "rec-61-0-callee.wav") == expected


def test_a_payload_that_is_not_gsm_is_counted_malformed_and_its_time_is_silent(
    tmp_path: Path,
) -> None:
    libgsm = libgsm_or_missing()
    payloads = gsm_payloads(libgsm, tone(425.0, 0.06))
    recording = WavRecording(tmp_path, "rec-62", new_framed={"gsm": lambda: gsm.GsmDecoder(libgsm)})
    recording.add("0", "a_to_b", rtp(0, 0, payloads[0], pt=3), 0.0)
    recording.add("0", "a_to_b", rtp(1, 160, payloads[1][:32], pt=3), 0.02)  # a frame cut short
    recording.add("0", "a_to_b", rtp(2, 320, b"\x00" + payloads[2][1:], pt=3), 0.04)  # no 0xD
    recording.add("0", "a_to_b", rtp(3, 480, payloads[2], pt=3), 0.06)
    recording.close()
    assert recording.counts.malformed == 2
    written = samples(tmp_path / "rec-62-0-caller.wav")
    assert len(written) == 640 and not any(written[160:480])


def test_a_new_gsm_source_gets_a_fresh_decoder(tmp_path: Path) -> None:
    libgsm = libgsm_or_missing()
    payload = gsm_payloads(libgsm, tone(425.0, 0.02))[0]
    recording = WavRecording(tmp_path, "rec-63", new_framed={"gsm": lambda: gsm.GsmDecoder(libgsm)})
    recording.add("0", "a_to_b", rtp(0, 0, payload, pt=3), 0.0)
    recording.add("0", "a_to_b", rtp(7, 5555, payload, pt=3, ssrc=99), 0.02)  # a transfer
    recording.close()
    written = samples(tmp_path / "rec-63-0-caller.wav")
    assert written[:160] == written[160:]  # the same octets from a reset decoder
    again = gsm.GsmDecoder(libgsm)
    again.decode(payload)
    assert written[:160] != list(struct.unpack("<160h", again.decode(payload)))


def test_without_libgsm_gsm_is_counted_and_the_recorder_says_so_as_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(recorder_plugin, "load_libgsm", lambda: None)
    with caplog.at_level(logging.INFO):
        tap = Recorder(RecorderConfig(all_calls=True, directory=str(tmp_path)))
    assert "gsm" not in tap.new_framed
    assert "recorder: GSM is not decoded (libgsm not found; Debian: apt-get install" in caplog.text
    sink = tap.sink_for_call(CALL)
    assert sink is not None
    sink.packet("0", "a_to_b", rtp(0, 0, b"\xd8" + bytes(32), pt=3), now=0.0)
    sink.close()
    with caplog.at_level(logging.INFO):
        trio.run(sink.run)
    assert "not written, other codecs: 1 gsm" in caplog.text


def test_with_libgsm_the_recorder_decodes_gsm_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    libgsm_or_missing()
    with caplog.at_level(logging.INFO):
        tap = Recorder(RecorderConfig(all_calls=True, directory=str(tmp_path)))
    assert isinstance(tap.new_framed["gsm"](), gsm.GsmDecoder)
    assert "recorder: GSM decoded by libgsm (libgsm" in caplog.text
    sink = tap.sink_for_call(CALL)
    assert sink is not None
    sink.packet("0", "a_to_b", rtp(0, 0, b"\xd8" + bytes(32), pt=3), now=0.0)
    sink.close()
    with caplog.at_level(logging.INFO):
        trio.run(sink.run)
    assert "other codecs" not in caplog.text
    assert [p.name for p in tmp_path.rglob("*.wav")] == ["rec-1-0-caller.wav"]
    pcap = Recorder(RecorderConfig(all_calls=True, directory=str(tmp_path), format="pcap"))
    assert pcap.new_framed == {}  # every packet as it came: nothing to decode


# -- AMR and AMR-WB (opencore-amr) ----------------------------------------------------------------


def amr_libraries(codec: amr.AmrCodec) -> tuple[amr.AmrEncoderLibrary, amr.AmrDecoderLibrary]:
    encoder, decoder = amr.load_encoder(codec), amr.load_decoder(codec)
    if encoder is None or decoder is None:
        missing(f"{codec.name} is not installed (libopencore-amrnb0, libvo-amrwbenc0, ...)")
    return encoder, decoder


def amr_frames(codec: amr.AmrCodec, seconds: float) -> list[bytes]:
    """A 425 Hz tone as ``codec``'s storage frames, 20 ms each, by the tone's encoder."""
    encoder, _ = amr_libraries(codec)
    rate = codec.sample_rate
    samples = [
        round(8000 * math.sin(2 * math.pi * 425.0 * n / rate)) for n in range(int(rate * seconds))
    ]
    return amr.AmrEncoder(encoder).encode(samples)


def wav_of(path: Path, rate: int) -> list[int]:
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, rate)
        frames = wav.readframes(wav.getnframes())
    return list(struct.unpack(f"<{len(frames) // 2}h", frames))


@pytest.mark.parametrize(
    ("codec", "name", "octet_aligned"),
    [
        (amr.AMR, "amr", False),
        (amr.AMR, "amr octet-aligned", True),
        (amr.AMR_WB, "amr-wb", False),
        (amr.AMR_WB, "amr-wb octet-aligned", True),
    ],
)
def test_amr_is_decoded_into_a_file_at_its_rate_placed_by_its_timestamps(
    tmp_path: Path, codec: amr.AmrCodec, name: str, octet_aligned: bool
) -> None:
    _, decoder_library = amr_libraries(codec)
    frames = amr_frames(codec, 1.0)
    if octet_aligned:
        payloads = [amr.octet_aligned_payload(frame) for frame in frames]
    else:
        payloads = [amr.bandwidth_efficient_payload(codec, frame) for frame in frames]
    step = codec.frame_samples  # RFC 4867 §4.1: the RTP clock is the sampling rate
    recording = WavRecording(
        tmp_path,
        "rec-30",
        {"0": {97: name}},
        new_amr=recorder_plugin.amr_decoder_factories(),
    )
    for seq, payload in enumerate(payloads):
        if seq != 10:  # lost: 20 ms of silence
            recording.add("0", "a_to_b", rtp(seq, 900 + step * seq, payload, pt=97), 0.02 * seq)
    recording.close()
    decoder = amr.AmrDecoder(decoder_library)  # one decoder: its state runs across the gap
    expected: list[int] = []
    for seq, frame in enumerate(frames):
        pcm = bytes(2 * step) if seq == 10 else decoder.decode(frame)
        expected += struct.unpack(f"<{step}h", pcm)
    written = wav_of(tmp_path / "rec-30-0-caller.wav", codec.sample_rate)
    assert written == expected
    heard = written[12 * step :: codec.sample_rate // 8000]  # at 8 kHz, after the gap
    assert power(heard, 425.0) > 1000 * power(heard, 1000.0)
    assert recording.counts.other == {} and recording.counts.malformed == 0


def test_an_amr_payload_of_several_frames_comfort_noise_and_no_data_fills_its_time(
    tmp_path: Path,
) -> None:
    # A phone sending 40 ms a packet (two frames, RFC 4867 §4.3.2), then a SID frame (DTX's
    # comfort noise), then NO_DATA: each frame is 20 ms of the file.
    frames = amr_frames(amr.AMR, 0.04)
    sid = bytes((8 << 3 | amr.QUALITY_BIT,)) + bytes(5)
    two = b"\xf0" + bytes((0x80 | frames[0][0], frames[1][0])) + frames[0][1:] + frames[1][1:]
    recording = WavRecording(
        tmp_path,
        "rec-31",
        {"0": {98: "amr octet-aligned"}},
        new_amr=recorder_plugin.amr_decoder_factories(),
    )
    recording.add("0", "b_to_a", rtp(0, 0, two, pt=98), 0.0)
    recording.add("0", "b_to_a", rtp(1, 320, amr.octet_aligned_payload(sid), pt=98), 0.04)
    recording.add("0", "b_to_a", rtp(2, 480, b"\xf0\x7c", pt=98), 0.06)  # NO_DATA
    recording.add("0", "b_to_a", rtp(3, 640, b"\xf0\x7c\x00", pt=98), 0.08)  # one octet more
    recording.close()
    assert len(wav_of(tmp_path / "rec-31-0-callee.wav", 8000)) == 4 * 160
    assert recording.counts.malformed == 1


def test_amr_a_recorder_cannot_read_or_decode_is_counted_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    media = TappedMedia(
        0,
        "audio",
        ("96", "97", "98"),
        ("96 AMR/8000", "97 AMR-WB/16000", "98 AMR/8000"),
        ("96 octet-align=1", "98 octet-align=1; crc=1"),
    )
    assert recorder_plugin.codecs_of((media,)) == {
        "0": {
            96: "amr octet-aligned",
            97: "amr-wb",
            98: "amr with crc, robust sorting or interleaving",
        }
    }
    amr_libraries(amr.AMR)
    load = amr.load_decoder
    monkeypatch.setattr(
        amr, "load_decoder", lambda codec: None if codec == amr.AMR_WB else load(codec)
    )
    factories = recorder_plugin.amr_decoder_factories()
    assert set(factories) == {"amr"}
    recording = WavRecording(tmp_path, "rec-32", recorder_plugin.codecs_of((media,)), new_amr={})
    for pt in (96, 97, 98):
        recording.add("0", "a_to_b", rtp(pt, 0, b"\xf0\x3c" + bytes(31), pt=pt), 0.0)
    recording.close()
    assert recording.counts.other == {
        "amr octet-aligned": 1,
        "amr-wb": 1,
        "amr with crc, robust sorting or interleaving": 1,
    }
    assert recording.files == []


def test_a_new_amr_source_gets_a_fresh_decoder(tmp_path: Path) -> None:
    payload = amr.bandwidth_efficient_payload(amr.AMR, amr_frames(amr.AMR, 0.02)[0])
    recording = WavRecording(
        tmp_path, "rec-33", {"0": {96: "amr"}}, new_amr=recorder_plugin.amr_decoder_factories()
    )
    recording.add("0", "a_to_b", rtp(0, 0, payload, pt=96), 0.0)
    recording.add("0", "a_to_b", rtp(7, 5555, payload, pt=96, ssrc=99), 0.02)  # a transfer
    recording.close()
    written = wav_of(tmp_path / "rec-33-0-caller.wav", 8000)
    assert written[:160] == written[160:]  # the same frame from a reset decoder
