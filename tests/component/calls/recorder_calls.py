"""The recording environment, recordings and RTP of the in-memory recorder tests: moved here from
test_b2bua_recorder.py so that no test module imports another."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import trio

import gateway.plugins.keyexchange.zrtp as zrtp_plugin
import gateway.plugins.taps.recorder as recorder_plugin
from tests.component.calls.b2bua_env import B2bua, start_b2bua


def rtp(seq: int, byte: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, ssrc) + bytes([byte]) * 160


async def recording_env(
    nursery: trio.Nursery, tmp_path: Path, seed: int, table: dict[str, object], **kwargs: object
) -> B2bua:
    plugins: list[tuple[str, object]] = [("recorder", recorder_plugin)]
    if kwargs.pop("zrtp", False):
        plugins.append(("zrtp", zrtp_plugin))
    return await start_b2bua(
        nursery,
        tmp_path,
        seed,
        plugins=plugins,
        plugin_tables={
            "enable": ["recorder"],
            # min_free_mb = 0: whatever the test machine's free disk (unit-tested apart).
            "recorder": {"directory": str(tmp_path / "rec"), "min_free_mb": 0, **table},
        },
        alice_auto=None,
        **kwargs,  # type: ignore[arg-type]
    )


def recordings(tmp_path: Path) -> dict[str, list[int]]:
    """Every WAV file under the recording directory, by name: its samples."""
    found = {}
    for path in sorted((tmp_path / "rec").glob("*/*.wav")):
        with wave.open(str(path)) as wav:
            frames = wav.readframes(wav.getnframes())
        found[path.name] = list(struct.unpack(f"<{len(frames) // 2}h", frames))
    return found
