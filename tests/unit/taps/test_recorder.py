"""The ``recorder`` tap: G.711 decoding (known values of ITU-T G.711), RTP header reading, WAV
files placed by RTP timestamp (gaps, late packets, a new SSRC), the pcap format, the bounded
sink and its configuration. Time is passed in (``now``); no sockets."""

from __future__ import annotations

import logging
import random
import stat
import struct
import subprocess
import wave
from pathlib import Path

import pytest

from gateway.core.config import ConfigError, from_mapping
from gateway.core.interfaces import TappedCall
from gateway.core.plugins import load_plugins
from gateway.plugins.taps import recorder as recorder_plugin
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
