"""A media worker makes the configured ringing tone's frames before it relays anything
(``--ringback-tone``, gateway/core/media/tones.py ``prepare_tone_frames``): made on its event
loop at the first ringback, a G.722 cadence would hold every call's media for 5-15 ms."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator

import pytest

from gateway.core.media import worker as worker_mod
from gateway.core.media.tones import ToneCodec, codec_available, tone_frames
from gateway.core.media.worker_protocol import PROTOCOL_VERSION

INSTALLED_TONE_CODECS = [codec for codec in ToneCodec if codec_available(codec)]
"""What this install encodes a tone in (G.729 only with bcg729)."""


class RecordingWorker:
    """Stands in for the worker's relay: notes which frames exist when it would start."""

    made_at_start: list[int] = []

    def __init__(self, *args: object) -> None:
        pass

    async def run(self) -> None:
        RecordingWorker.made_at_start.append(tone_frames.cache_info().currsize)


@pytest.fixture
def channel(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    # main() ignores SIGINT, SIGTERM and SIGHUP for its process: not for the test run's.
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    monkeypatch.setattr(worker_mod, "Worker", RecordingWorker)
    RecordingWorker.made_at_start.clear()
    tone_frames.cache_clear()
    ours, theirs = socket.socketpair()
    yield theirs
    ours.close()
    theirs.close()


def run_worker(channel: socket.socket, *flags: str) -> int:
    fd = channel.detach()  # main() wraps it in a socket of its own
    address = ["--address", "127.0.0.1", "--ports", "40000-40009"]
    version = ["--protocol-version", str(PROTOCOL_VERSION)]
    return worker_mod.main(["--fd", str(fd), *version, *address, *flags])


def test_the_plan_s_frames_are_made_before_the_worker_relays(channel: socket.socket) -> None:
    assert run_worker(channel, "--ringback-tone", "uk") == 0
    assert RecordingWorker.made_at_start == [len(INSTALLED_TONE_CODECS)]
    for codec in INSTALLED_TONE_CODECS:
        tone_frames("uk", codec)
    assert tone_frames.cache_info().misses == len(INSTALLED_TONE_CODECS)  # none made again


def test_no_plan_makes_no_frames(channel: socket.socket) -> None:
    assert run_worker(channel, "--ringback-tone", "none") == 0
    assert RecordingWorker.made_at_start == [0]
