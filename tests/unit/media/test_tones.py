"""The ringing tones the gateway plays itself (gateway/core/media/tones.py): each plan's frames
are its frequencies at its level, on and off by its cadence, in either G.711 law or G.722, the
same as a sine computed sample by sample over the whole burst; TonePlayer paces RTP packets of a
stream of its own from float time."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

import pytest

from gateway.core.media import amr, g729, gsm, opus, tones
from gateway.core.media.g711 import alaw2lin, lin2alaw, lin2ulaw, ulaw2lin
from gateway.core.media.tones import (
    FRAME_SAMPLES,
    FRAME_SECONDS,
    G722_SAMPLE_RATE,
    MAX_CATCH_UP,
    RINGBACK_PLANS,
    SAMPLE_RATE,
    Tone,
    ToneCodec,
    TonePlan,
    TonePlayer,
    _amr_frames,
    codec_available,
    prepare_tone_frames,
    ringback_summary,
    tone_codecs,
    tone_frames,
)
from gateway.core.media.worker_protocol import TONE_CODECS, TONE_PLANS
from gateway.core.sdp.model import MediaDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.taps.g722 import G722Decoder
from tests.conftest import missing

G711 = (ToneCodec.PCMU, ToneCodec.PCMA)
DECODE = {ToneCodec.PCMU: ulaw2lin, ToneCodec.PCMA: alaw2lin}
ENCODE = {ToneCodec.PCMU: lin2ulaw, ToneCodec.PCMA: lin2alaw}


def goertzel_power(samples: list[int], frequency: float, rate: int = SAMPLE_RATE) -> float:
    """The power of ``frequency`` in ``samples`` (the Goertzel algorithm), per sample squared."""
    coefficient = 2.0 * math.cos(2.0 * math.pi * frequency / rate)
    s1 = s2 = 0.0
    for sample in samples:
        s1, s2 = sample + coefficient * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coefficient * s1 * s2) / len(samples) ** 2


def decoded(frames: tuple[bytes, ...] | list[bytes], law: ToneCodec) -> list[int]:
    return [DECODE[law](octet) for frame in frames for octet in frame]


@pytest.mark.parametrize("law", G711)
@pytest.mark.parametrize("name", sorted(RINGBACK_PLANS))
def test_a_plans_frames_follow_its_cadence_with_its_frequencies_on_and_silence_off(
    name: str, law: ToneCodec
) -> None:
    plan = RINGBACK_PLANS[name]
    frames = tone_frames(name, law)
    assert len(frames) == round(sum(plan.cadence) / FRAME_SECONDS)
    assert all(len(frame) == FRAME_SAMPLES for frame in frames)
    silence = bytes([ENCODE[law](0)]) * FRAME_SAMPLES
    start = 0
    for index, seconds in enumerate(plan.cadence):
        count = round(seconds / FRAME_SECONDS)
        part = frames[start : start + count]
        start += count
        if index % 2:
            assert set(part) == {silence}
            continue
        samples = decoded(part, law)
        heard = [goertzel_power(samples, frequency) for frequency in plan.frequencies]
        off_tone = goertzel_power(samples, 1000.0)
        assert min(heard) > 1000 * max(off_tone, 1.0)
        # Each frequency at the plan's level (dBm0; a full-scale sine is +3.14 dBm0):
        # a sine of amplitude A has Goertzel power A^2 / 4 per sample squared.
        expected = 32767.0 * 10 ** ((plan.level_dbm0 - 3.14) / 20)
        for power in heard:
            assert 2 * math.sqrt(power) == pytest.approx(expected, rel=0.06)


@pytest.mark.parametrize("name", sorted(RINGBACK_PLANS))
def test_a_burst_is_the_sine_computed_sample_by_sample_across_frames(name: str) -> None:
    # The frames repeat a short unit; that must be the same as computing every sample of the
    # burst, or the joins would click.
    plan = RINGBACK_PLANS[name]
    frames = tone_frames(name, ToneCodec.PCMU)
    burst = b"".join(frames[: round(plan.cadence[0] / FRAME_SECONDS)])
    amplitude = 32767.0 * 10 ** ((plan.level_dbm0 - 3.14) / 20)
    direct = bytes(
        lin2ulaw(
            round(
                amplitude
                * sum(math.sin(2 * math.pi * f * n / SAMPLE_RATE) for f in plan.frequencies)
            )
        )
        for n in range(len(burst))
    )
    differing = sum(1 for a, b in zip(burst, direct, strict=True) if a != b)
    assert differing <= len(burst) // 1000  # float rounding of a sample now and then


def g722_decoded(frames: tuple[bytes, ...], times: int = 1) -> list[list[int]]:
    """Each of ``times`` repetitions of the cadence ``frames``, decoded in a row by one G.722
    decoder, as linear samples at 16000 Hz. The recorder's decoder (gateway/plugins/taps/
    g722.py, pure Python, checked sample for sample against spandsp's in
    tests/unit/taps/test_g722.py): another implementation than the libg722 that encoded them."""
    decoder = G722Decoder()
    cadence = b"".join(frames)
    out = []
    for _ in range(times):
        pcm = decoder.decode(cadence)
        out.append(list(struct.unpack(f"<{len(pcm) // 2}h", pcm)))
    return out


@pytest.mark.parametrize("name", sorted(RINGBACK_PLANS))
def test_a_plans_g722_frames_decode_to_its_frequencies_on_and_silence_off(name: str) -> None:
    plan = RINGBACK_PLANS[name]
    frames = tone_frames(name, ToneCodec.G722)
    # 20 ms a frame: 320 samples at 16000 Hz in 4 bits each (ITU-T G.722 mode 1).
    assert len(frames) == round(sum(plan.cadence) / FRAME_SECONDS)
    assert all(len(frame) == FRAME_SAMPLES for frame in frames)
    _, samples = g722_decoded(frames, 2)  # the second time round: as a receiver hears it
    per_frame = G722_SAMPLE_RATE // 50
    start = 0
    expected = 32767.0 * 10 ** ((plan.level_dbm0 - 3.14) / 20)
    for index, seconds in enumerate(plan.cadence):
        count = round(seconds / FRAME_SECONDS) * per_frame
        part = samples[start : start + count]
        start += count
        if index % 2:
            # The codec's idle noise, not a tone: under -70 dBm0.
            assert max(abs(sample) for sample in part[per_frame:]) <= 16
            continue
        # From its second frame (the adaptive predictors settle within a few ms).
        part = part[per_frame:]
        heard = [goertzel_power(part, f, G722_SAMPLE_RATE) for f in plan.frequencies]
        off_tone = goertzel_power(part, 1000.0, G722_SAMPLE_RATE)
        assert min(heard) > 1000 * max(off_tone, 1.0)
        for power in heard:
            assert 2 * math.sqrt(power) == pytest.approx(expected, rel=0.1)


@pytest.mark.parametrize("name", sorted(RINGBACK_PLANS))
def test_a_g722_cadence_repeats_seamlessly(name: str) -> None:
    # The frames are the cadence encoded after the same cadence once: the encoder's state at
    # their start is the one at their end, so a receiver decoding them again and again gets
    # the same samples every time round, with no step where the cadence starts over.
    first, second, third = g722_decoded(tone_frames(name, ToneCodec.G722), 3)
    assert second == third
    # A decoder that starts with them (a fresh one, at the transferee: a new RTP stream)
    # differs from the steady one while its adaptive state catches up, as at the start of any
    # G.722 stream: over the first tens of milliseconds of the first burst only.
    differing = [n for n, (a, b) in enumerate(zip(first, second, strict=True)) if a != b]
    burst = round(RINGBACK_PLANS[name].cadence[0] * G722_SAMPLE_RATE)
    assert differing and max(differing) < burst
    settled = G722_SAMPLE_RATE // 5  # 200 ms
    peak = max(map(abs, second))
    after = zip(first[settled:], second[settled:], strict=True)
    assert max(abs(a - b) for a, b in after) < 0.01 * peak


def media_description(formats: str, *attributes: str) -> MediaDescription:
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio 4000 RTP/AVP {formats}",
        *attributes,
    ]
    return parse_sdp_untrusted(("\r\n".join(lines) + "\r\n").encode()).media[0]


def test_the_codecs_a_tone_goes_in_are_found_in_the_order_the_sdp_lists_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    media = media_description
    assert tone_codecs(media("9 0 8 101")) == {
        ToneCodec.G722: 9,
        ToneCodec.PCMU: 0,
        ToneCodec.PCMA: 8,
    }
    assert list(tone_codecs(media("8 9"))) == [ToneCodec.PCMA, ToneCodec.G722]
    assert tone_codecs(media("96 0", "a=rtpmap:96 g722/8000")) == {
        ToneCodec.G722: 96,
        ToneCodec.PCMU: 0,
    }
    # Not at RTP clock 8000 (RFC 3551 §4.5.2): not the G.722 a tone can go as.
    assert tone_codecs(media("96", "a=rtpmap:96 G722/16000")) == {}
    assert tone_codecs(media("97", "a=rtpmap:97 iLBC/8000")) == {}
    # Opus (RFC 7587 §7: opus/48000/2, any number), where libopus is installed; "opus/48000"
    # without channels as well; never at another clock, never where libopus is not.
    opus_line = media("97 111 0", "a=rtpmap:97 iLBC/8000", "a=rtpmap:111 opus/48000/2")
    with_opus = opus.load_libopus() is not None
    assert tone_codecs(opus_line) == (
        {ToneCodec.OPUS: 111, ToneCodec.PCMU: 0} if with_opus else {ToneCodec.PCMU: 0}
    )
    assert tone_codecs(media("96", "a=rtpmap:96 OPUS/48000")) == (
        {ToneCodec.OPUS: 96} if with_opus else {}
    )
    assert tone_codecs(media("96", "a=rtpmap:96 opus/8000")) == {}
    # G.729, static or dynamic, where bcg729 is installed; never where it is not.
    g729_line = media("18 96 0", "a=rtpmap:96 G729/8000")
    assert tone_codecs(g729_line) == (
        {ToneCodec.G729: 18, ToneCodec.PCMU: 0}
        if g729.load_bcg729() is not None
        else {ToneCodec.PCMU: 0}
    )
    # GSM, static 3 (RFC 3551 §4.5.8) or dynamic, where libgsm is installed.
    gsm_line = media("3 96 0", "a=rtpmap:96 GSM/8000")
    assert tone_codecs(gsm_line) == (
        {ToneCodec.GSM: 3, ToneCodec.PCMU: 0}
        if gsm.load_libgsm() is not None
        else {ToneCodec.PCMU: 0}
    )
    assert tone_codecs(media("96", "a=rtpmap:96 gsm/8000")) == (
        {ToneCodec.GSM: 96} if gsm.load_libgsm() is not None else {}
    )
    assert tone_codecs(media("96", "a=rtpmap:96 GSM-EFR/8000")) == {}  # another codec
    monkeypatch.setattr(gsm, "load_libgsm", lambda: None)
    assert tone_codecs(gsm_line) == {ToneCodec.PCMU: 0}
    monkeypatch.setattr(g729, "load_bcg729", lambda: None)
    assert tone_codecs(g729_line) == {ToneCodec.PCMU: 0}
    assert not codec_available(ToneCodec.G729) and codec_available(ToneCodec.G722)
    monkeypatch.setattr(opus, "load_libopus", lambda: None)
    assert tone_codecs(opus_line) == {ToneCodec.PCMU: 0}
    assert not codec_available(ToneCodec.OPUS)


@pytest.mark.parametrize(
    ("rtpmap", "efficient", "aligned", "tone_mode"),
    [
        ("AMR/8000", ToneCodec.AMR, ToneCodec.AMR_OCTET_ALIGNED, 7),
        ("AMR-WB/16000", ToneCodec.AMR_WB, ToneCodec.AMR_WB_OCTET_ALIGNED, 2),
    ],
    ids=["amr", "amr-wb"],
)
def test_an_amr_line_takes_the_tone_packed_as_its_fmtp_says(
    monkeypatch: pytest.MonkeyPatch,
    rtpmap: str,
    efficient: ToneCodec,
    aligned: ToneCodec,
    tone_mode: int,
) -> None:
    # RFC 4867 §8.1: bandwidth-efficient unless octet-align=1; parameter names in any case.
    amr_encoder(efficient)

    def line(*fmtp: str) -> MediaDescription:
        attributes = [f"a=rtpmap:96 {rtpmap}", *(f"a=fmtp:96 {f}" for f in fmtp)]
        return media_description("96 0", *attributes)

    assert tone_codecs(line()) == {efficient: 96, ToneCodec.PCMU: 0}
    assert tone_codecs(line("octet-align=0")) == {efficient: 96, ToneCodec.PCMU: 0}
    assert tone_codecs(line(f"OCTET-ALIGN=1; mode-set=0,{tone_mode}")) == {
        aligned: 96,
        ToneCodec.PCMU: 0,
    }
    lower = rtpmap.lower() + "/1"
    assert tone_codecs(media_description("97", f"a=rtpmap:97 {lower}")) == {efficient: 97}
    # What the tone does not make, or cannot tell: the next codec the line lists.
    for fmtp in (
        f"mode-set={tone_mode + 1}",  # not the tone's mode
        "octet-align=1; crc=1",
        "octet-align=1; robust-sorting=1",
        "octet-align=1; interleaving=4",
        "mode-set=seven",
        "octet-align=yes",
    ):
        assert tone_codecs(line(fmtp)) == {ToneCodec.PCMU: 0}, fmtp
    assert tone_codecs(media_description("96", f"a=rtpmap:96 {rtpmap}/2")) == {}  # stereo
    name, rate = rtpmap.split("/")
    other_rate = 16000 if rate == "8000" else 8000
    assert tone_codecs(media_description("96", f"a=rtpmap:96 {name}/{other_rate}")) == {}
    monkeypatch.setattr(amr, "load_encoder", lambda codec: None)
    assert tone_codecs(line()) == {ToneCodec.PCMU: 0}
    assert not codec_available(efficient) and not codec_available(aligned)


def test_every_tone_codec_crosses_to_a_media_worker() -> None:
    assert [codec.value for codec in ToneCodec] == list(TONE_CODECS[1:])
    assert TONE_CODECS[0] == ""  # no plan


def test_a_g722_player_steps_the_rtp_clock_at_8000_hz() -> None:
    # RFC 3551 §4.5.2: G.722's RTP clock rate is 8000 Hz though it samples at 16000.
    player = TonePlayer(Tone("uk", ToneCodec.G722, 9), ssrc=7, sequence=0, timestamp=0, now=0.0)
    packets = player.due(0.0) + player.due(0.02) + player.due(0.04)
    assert [header(p)[1:4] for p in packets] == [(9, 0, 0), (9, 1, 160), (9, 2, 320)]
    assert [p[12:] for p in packets] == list(tone_frames("uk", ToneCodec.G722)[:3])


def test_the_frames_are_computed_once_per_process() -> None:
    assert tone_frames("us", ToneCodec.PCMA) is tone_frames("us", ToneCodec.PCMA)


def test_every_plan_crosses_to_a_media_worker() -> None:
    assert set(RINGBACK_PLANS) <= set(TONE_PLANS)
    assert TONE_PLANS[0] == ""  # stop


@pytest.mark.parametrize(
    ("plan", "payload_type", "error"),
    [("ca", 0, "no tone plan 'ca'"), ("us", 128, "payload type 128"), ("eu", -1, "payload type")],
)
def test_a_tone_needs_a_known_plan_and_a_payload_type(
    plan: str, payload_type: int, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        Tone(plan, ToneCodec.PCMU, payload_type)


def header(packet: bytes) -> tuple[int, int, int, int, int]:
    """(marker, payload type, sequence, timestamp, SSRC)."""
    return (
        packet[1] >> 7,
        packet[1] & 0x7F,
        int.from_bytes(packet[2:4], "big"),
        int.from_bytes(packet[4:8], "big"),
        int.from_bytes(packet[8:12], "big"),
    )


def test_a_player_sends_one_packet_per_20_ms_of_a_new_stream() -> None:
    tone = Tone("eu", ToneCodec.PCMA, 8)
    player = TonePlayer(tone, ssrc=0x1234ABCD, sequence=65534, timestamp=2**32 - 160, now=10.0)
    assert player.next_due() == 10.0
    [first] = player.due(10.0)
    assert first[0] == 0x80  # RTP version 2, no padding, extension or CSRC
    assert header(first) == (1, 8, 65534, 2**32 - 160, 0x1234ABCD)
    assert first[12:] == tone_frames("eu", ToneCodec.PCMA)[0]
    assert player.due(10.019) == []
    assert player.next_due() == pytest.approx(10.02)
    [second] = player.due(10.02)
    assert header(second) == (0, 8, 65535, 0, 0x1234ABCD)  # timestamp wraps (RFC 3550 §5.1)
    now = 10.02
    packets = []
    for _ in range(300):  # float steps of 0.02 stay on time
        now += FRAME_SECONDS
        packets += player.due(now)
    assert len(packets) == 300
    assert [header(p)[2] for p in packets] == [n & 0xFFFF for n in range(65536, 65836)]
    assert [header(p)[3] for p in packets] == [160 * n for n in range(1, 301)]
    assert {header(p)[0] for p in packets} == {0}
    # The cadence repeats: 250 frames of eu's 5 s, then from its start again.
    frames = tone_frames("eu", ToneCodec.PCMA)
    assert [p[12:] for p in packets] == [frames[n % 250] for n in range(2, 302)]
    assert player.packets == 302 and player.skipped == 0


def test_a_player_held_up_skips_what_it_cannot_send_in_time() -> None:
    player = TonePlayer(Tone("us", ToneCodec.PCMU, 0), ssrc=1, sequence=0, timestamp=0, now=0.0)
    assert len(player.due(0.0)) == 1
    late = player.due(0.2)  # frames 1..10 were due: the last MAX_CATCH_UP go
    assert len(late) == MAX_CATCH_UP
    assert [header(p)[2] for p in late] == [1, 2, 3]  # no gap in the sequence (not a loss)
    assert [header(p)[3] for p in late] == [160 * 8, 160 * 9, 160 * 10]  # time went by
    assert player.skipped == 10 - MAX_CATCH_UP
    assert player.next_due() == pytest.approx(0.22)
    assert player.due(0.21) == []


@pytest.mark.parametrize("name", sorted(RINGBACK_PLANS))
def test_a_plan_prepared_has_its_frames_in_every_codec_made_once(name: str) -> None:
    tone_frames.cache_clear()
    prepare_tone_frames(name)
    made = tone_frames.cache_info().misses
    codecs = [codec for codec in ToneCodec if codec_available(codec)]
    assert made == len(codecs) >= 3
    assert all(tone_frames(name, codec) for codec in codecs)
    assert tone_frames.cache_info().misses == made


def test_without_bcg729_a_plan_prepares_every_codec_but_g729(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(g729, "load_bcg729", lambda: None)
    tone_frames.cache_clear()
    prepare_tone_frames("eu")
    others = codec_available(ToneCodec.OPUS) + AMR_TONE_CODECS_INSTALLED
    others += codec_available(ToneCodec.GSM)
    assert tone_frames.cache_info().currsize == 3 + others
    with pytest.raises(ValueError, match=r"G\.729 tone frames need bcg729"):
        tone_frames("eu", ToneCodec.G729)


def test_without_libopus_a_plan_prepares_every_codec_but_opus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(opus, "load_libopus", lambda: None)
    tone_frames.cache_clear()
    prepare_tone_frames("eu")
    others = codec_available(ToneCodec.G729) + AMR_TONE_CODECS_INSTALLED
    others += codec_available(ToneCodec.GSM)
    assert tone_frames.cache_info().currsize == 3 + others
    with pytest.raises(ValueError, match=r"Opus tone frames need libopus"):
        tone_frames("eu", ToneCodec.OPUS)


def test_without_the_amr_encoders_a_plan_prepares_every_codec_but_amr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(amr, "load_encoder", lambda codec: None)
    tone_frames.cache_clear()
    _amr_frames.cache_clear()
    prepare_tone_frames("eu")
    others = codec_available(ToneCodec.G729) + codec_available(ToneCodec.OPUS)
    others += codec_available(ToneCodec.GSM)
    assert tone_frames.cache_info().currsize == 3 + others
    for codec, package in (
        (ToneCodec.AMR, "libopencore-amrnb0"),
        (ToneCodec.AMR_OCTET_ALIGNED, "libopencore-amrnb0"),
        (ToneCodec.AMR_WB, "libvo-amrwbenc0"),
        (ToneCodec.AMR_WB_OCTET_ALIGNED, "libvo-amrwbenc0"),
    ):
        with pytest.raises(ValueError, match=f"tone frames need its encoder .*{package}"):
            tone_frames("eu", codec)


def test_without_libgsm_a_plan_prepares_every_codec_but_gsm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gsm, "load_libgsm", lambda: None)
    tone_frames.cache_clear()
    prepare_tone_frames("eu")
    others = codec_available(ToneCodec.G729) + codec_available(ToneCodec.OPUS)
    others += AMR_TONE_CODECS_INSTALLED
    assert tone_frames.cache_info().currsize == 3 + others
    assert not codec_available(ToneCodec.GSM)
    with pytest.raises(
        ValueError, match=r"GSM tone frames need libgsm \(apt-get install libgsm1\)"
    ):
        tone_frames("eu", ToneCodec.GSM)


def bcg729() -> g729.Bcg729:
    found = g729.load_bcg729()
    if found is None:
        missing("libbcg729 is not installed (apt-get install libbcg729-0)")
    return found


def decoded_in_a_row(
    decode: Callable[[bytes], bytes], frames: tuple[bytes, ...], times: int
) -> list[list[int]]:
    """Each of ``times`` repetitions of the cadence ``frames``, decoded in a row by one
    decoder's ``decode`` (16-bit little-endian PCM out), as linear samples."""
    out = []
    for _ in range(times):
        pcm = b"".join(decode(frame) for frame in frames)
        out.append(list(struct.unpack(f"<{len(pcm) // 2}h", pcm)))
    return out


def g729_decoded(frames: tuple[bytes, ...], times: int) -> list[list[int]]:
    """:func:`decoded_in_a_row` by one bcg729 decoder (the recorder's), at 8000 Hz."""
    return decoded_in_a_row(g729.Bcg729Decoder(bcg729()).decode, frames, times)


@pytest.mark.parametrize("name", sorted(RINGBACK_PLANS))
def test_a_plans_g729_frames_decode_to_its_frequencies_on_and_near_silence_off(
    name: str,
) -> None:
    plan = RINGBACK_PLANS[name]
    bcg729()
    frames = tone_frames(name, ToneCodec.G729)
    _, samples = g729_decoded(frames, 2)  # the second time round: as a receiver hears it
    # 20 ms a packet: two 10-octet frames (RFC 3551 §4.5.6), 160 samples at 8000 Hz.
    assert len(frames) == round(sum(plan.cadence) / FRAME_SECONDS)
    assert {len(frame) for frame in frames} == {20}
    assert len(samples) == len(frames) * FRAME_SAMPLES
    assert_a_speech_codecs_cadence(plan, samples, settle_packets=1)


def assert_a_speech_codecs_cadence(plan: TonePlan, samples: list[int], settle_packets: int) -> None:
    """``samples`` (8000 Hz, a whole cadence of ``plan`` decoded) hold each burst's
    frequencies at the plan's level within 15 % (a speech codec's tone is within a dB or so of
    it: CELP, not waveform) and nothing at 1000 Hz, and each gap at least 30 dB down (the
    synthesis filter's tail and the codec's noise, not a tone); each part from its
    ``settle_packets``-th 20 ms packet on."""
    expected = 32767.0 * 10 ** ((plan.level_dbm0 - 3.14) / 20)
    start = 0
    for index, seconds in enumerate(plan.cadence):
        count = round(seconds / FRAME_SECONDS) * FRAME_SAMPLES
        part = samples[start + settle_packets * FRAME_SAMPLES : start + count]
        start += count
        rms = math.sqrt(sum(s * s for s in part) / len(part))
        if index % 2:
            assert rms < 0.03 * expected
            continue
        heard = [goertzel_power(part, f) for f in plan.frequencies]
        off_tone = goertzel_power(part, 1000.0)
        assert min(heard) > 1000 * max(off_tone, 1e-9)
        for power in heard:
            assert 2 * math.sqrt(power) == pytest.approx(expected, rel=0.15)


@pytest.mark.parametrize("name", sorted(RINGBACK_PLANS))
def test_a_g729_cadence_repeats_seamlessly(name: str) -> None:
    # As for G.722: encoded after the same cadence once, so the encoder's state at the
    # frames' start is the one at their end, and a decoder playing them again and again hears
    # the same every time round (within a unit of rounding in the decoder's own state).
    bcg729()
    _, second, third = g729_decoded(tone_frames(name, ToneCodec.G729), 3)
    assert max(abs(a - b) for a, b in zip(second, third, strict=True)) <= 2


def test_a_g729_player_sends_two_frames_a_packet_on_the_8000_hz_clock() -> None:
    bcg729()
    player = TonePlayer(Tone("fr", ToneCodec.G729, 18), ssrc=7, sequence=5, timestamp=0, now=0.0)
    packets = player.due(0.0) + player.due(0.02) + player.due(0.04)
    assert [header(p)[1:4] for p in packets] == [(18, 5, 0), (18, 6, 160), (18, 7, 320)]
    assert [p[12:] for p in packets] == list(tone_frames("fr", ToneCodec.G729)[:3])


def libgsm() -> gsm.LibGsm:
    found = gsm.load_libgsm()
    if found is None:
        missing("libgsm is not installed (apt-get install libgsm1)")
    return found


def gsm_decoded(frames: tuple[bytes, ...], times: int) -> list[list[int]]:
    """:func:`decoded_in_a_row` by one libgsm decoder (the recorder's), at 8000 Hz."""
    return decoded_in_a_row(gsm.GsmDecoder(libgsm()).decode, frames, times)


@pytest.mark.parametrize("name", sorted(RINGBACK_PLANS))
def test_a_plans_gsm_frames_decode_to_its_frequencies_on_and_near_silence_off(
    name: str,
) -> None:
    plan = RINGBACK_PLANS[name]
    frames = tone_frames(name, ToneCodec.GSM)
    _, samples = gsm_decoded(frames, 2)  # the second time round: as a receiver hears it
    # 20 ms a packet: one 33-octet frame with the 0xD signature (RFC 3551 §4.5.8).
    assert len(frames) == round(sum(plan.cadence) / FRAME_SECONDS)
    assert {len(frame) for frame in frames} == {33}
    assert {frame[0] >> 4 for frame in frames} == {0xD}
    assert len(samples) == len(frames) * FRAME_SAMPLES
    assert_a_speech_codecs_cadence(plan, samples, settle_packets=1)


@pytest.mark.parametrize("name", sorted(RINGBACK_PLANS))
def test_a_gsm_cadence_repeats_seamlessly(name: str) -> None:
    # As for G.722 and G.729: the encoder's state at the frames' start is the one at their
    # end, so a decoder playing them again and again hears the same every time round.
    _, second, third = gsm_decoded(tone_frames(name, ToneCodec.GSM), 3)
    assert max(abs(a - b) for a, b in zip(second, third, strict=True)) <= 2


def test_a_gsm_player_sends_a_frame_a_packet_on_the_8000_hz_clock() -> None:
    libgsm()
    player = TonePlayer(Tone("us", ToneCodec.GSM, 3), ssrc=7, sequence=5, timestamp=0, now=0.0)
    packets = player.due(0.0) + player.due(0.02) + player.due(0.04)
    assert [header(p)[1:4] for p in packets] == [(3, 5, 0), (3, 6, 160), (3, 7, 320)]
    assert [p[12:] for p in packets] == list(tone_frames("us", ToneCodec.GSM)[:3])


def test_no_plan_prepares_nothing() -> None:
    tone_frames.cache_clear()
    prepare_tone_frames("none")
    assert tone_frames.cache_info().currsize == 0


def libopus() -> opus.LibOpus:
    found = opus.load_libopus()
    if found is None:
        missing("libopus is not installed (apt-get install libopus0)")
    return found


def opus_decoded(frames: tuple[bytes, ...], times: int) -> list[list[int]]:
    """:func:`decoded_in_a_row` by one libopus decoder, at 8000 Hz."""
    return decoded_in_a_row(opus.OpusDecoder(libopus(), SAMPLE_RATE).decode, frames, times)


@pytest.mark.parametrize("name", sorted(RINGBACK_PLANS))
def test_a_plans_opus_frames_decode_to_its_frequencies_on_and_near_silence_off(
    name: str,
) -> None:
    plan = RINGBACK_PLANS[name]
    frames = tone_frames(name, ToneCodec.OPUS)
    _, samples = opus_decoded(frames, 2)  # the second time round: as a receiver hears it
    # One packet per 20 ms, each a few dozen octets at most (narrowband, 12 kbit/s: 30 octets
    # on average; VBR, so the bursts take more than the gaps).
    assert len(frames) == round(sum(plan.cadence) / FRAME_SECONDS)
    assert max(map(len, frames)) <= 80
    assert len(samples) == len(frames) * FRAME_SAMPLES
    assert_a_speech_codecs_cadence(plan, samples, settle_packets=2)  # past Opus's lookahead


@pytest.mark.parametrize("name", sorted(RINGBACK_PLANS))
def test_an_opus_cadence_repeats_seamlessly(name: str) -> None:
    # As for G.722 and G.729: the encoder's state at the frames' start is the one at their
    # end, so a decoder playing them again and again hears the same every time round.
    _, second, third = opus_decoded(tone_frames(name, ToneCodec.OPUS), 3)
    peak = max(map(abs, second))
    assert max(abs(a - b) for a, b in zip(second, third, strict=True)) <= 0.01 * peak


def test_an_opus_player_steps_the_rtp_clock_at_48000_hz() -> None:
    # RFC 7587 §4.1: Opus's RTP clock is 48000 Hz at any sampling rate: 960 per 20 ms.
    libopus()
    player = TonePlayer(Tone("eu", ToneCodec.OPUS, 111), ssrc=7, sequence=9, timestamp=0, now=0.0)
    packets = player.due(0.0) + player.due(0.02) + player.due(0.04)
    assert [header(p)[1:4] for p in packets] == [(111, 9, 0), (111, 10, 960), (111, 11, 1920)]
    assert [p[12:] for p in packets] == list(tone_frames("eu", ToneCodec.OPUS)[:3])


def test_the_start_says_which_plan_plays_in_which_codecs_this_install_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ringback_summary("none") == (
        "none (a transferee hears the transferor's media until the target answers)"
    )
    monkeypatch.setattr(g729, "load_bcg729", lambda: object())
    monkeypatch.setattr(opus, "load_libopus", lambda: object())
    monkeypatch.setattr(amr, "load_encoder", lambda codec: object())
    monkeypatch.setattr(gsm, "load_libgsm", lambda: object())
    # AMR and AMR-WB once each, though each has two packings (two tone codecs).
    assert ringback_summary("uk") == (
        "uk, in the first of PCMU, PCMA, G722, G729, opus, AMR, AMR-WB and GSM the"
        " transferee's line lists"
    )
    monkeypatch.setattr(gsm, "load_libgsm", lambda: None)
    assert ringback_summary("uk") == (
        "uk, in the first of PCMU, PCMA, G722, G729, opus, AMR and AMR-WB the transferee's"
        " line lists"
    )
    monkeypatch.setattr(amr, "load_encoder", lambda codec: None)
    assert ringback_summary("eu") == (
        "eu, in the first of PCMU, PCMA, G722, G729 and opus the transferee's line lists"
    )
    monkeypatch.setattr(opus, "load_libopus", lambda: None)
    assert ringback_summary("us") == (
        "us, in the first of PCMU, PCMA, G722 and G729 the transferee's line lists"
    )
    monkeypatch.setattr(g729, "load_bcg729", lambda: None)
    assert ringback_summary("fr") == (
        "fr, in the first of PCMU, PCMA and G722 the transferee's line lists"
    )


AMR_TONE_CODECS_INSTALLED = sum(
    codec_available(codec)
    for codec in (
        ToneCodec.AMR,
        ToneCodec.AMR_OCTET_ALIGNED,
        ToneCodec.AMR_WB,
        ToneCodec.AMR_WB_OCTET_ALIGNED,
    )
)
"""The AMR tone codecs this install has: two packings for each encoder found."""

AMR_CODECS = pytest.mark.parametrize(
    ("efficient", "aligned"),
    [
        (ToneCodec.AMR, ToneCodec.AMR_OCTET_ALIGNED),
        (ToneCodec.AMR_WB, ToneCodec.AMR_WB_OCTET_ALIGNED),
    ],
    ids=["amr", "amr-wb"],
)


def amr_codec_of(codec: ToneCodec) -> amr.AmrCodec:
    return amr.AMR if codec.encoding == "AMR" else amr.AMR_WB


def amr_encoder(codec: ToneCodec) -> None:
    """Skip unless ``codec``'s encoder is installed."""
    if amr.load_encoder(amr_codec_of(codec)) is None:
        missing(f"{codec.encoding}'s encoder is not installed (libopencore-amrnb0, ...)")


def amr_decoded(
    codec: ToneCodec, frames: tuple[bytes, ...], times: int, *, octet_aligned: bool
) -> tuple[list[list[int]], int]:
    """:func:`decoded_in_a_row` of the payloads ``frames`` by one opencore-amr decoder of
    ``codec``, and the rate it decodes at."""
    amr_codec = amr_codec_of(codec)
    library = amr.load_decoder(amr_codec)
    if library is None:
        missing(f"{amr_codec.name}'s decoder is not installed (libopencore-amr*0)")
    decoder = amr.AmrDecoder(library)

    def decode(payload: bytes) -> bytes:
        return decoder.decode(amr.storage_frame(amr_codec, payload, octet_aligned=octet_aligned))

    return decoded_in_a_row(decode, frames, times), amr_codec.sample_rate


@AMR_CODECS
@pytest.mark.parametrize("name", sorted(RINGBACK_PLANS))
def test_a_plans_amr_frames_decode_to_its_frequencies_on_and_near_silence_off(
    name: str, efficient: ToneCodec, aligned: ToneCodec
) -> None:
    plan = RINGBACK_PLANS[name]
    amr_encoder(efficient)
    frames = tone_frames(name, efficient)
    (_, samples), rate = amr_decoded(efficient, frames, 2, octet_aligned=False)
    # One frame a packet: 4 + 6 + 244 bits (AMR at 12.2 kbit/s), 32 octets, or 4 + 6 + 253
    # (AMR-WB at 12.65), 33 (RFC 4867 §4.3).
    assert len(frames) == round(sum(plan.cadence) / FRAME_SECONDS)
    assert {len(frame) for frame in frames} == ({32} if efficient is ToneCodec.AMR else {33})
    assert len(samples) == len(frames) * rate // 50
    # The cadence checked at 8 kHz: every other sample of AMR-WB's 16 kHz.
    assert_a_speech_codecs_cadence(plan, samples[:: rate // SAMPLE_RATE], settle_packets=1)
    # Octet-aligned (§4.4): the same speech bits, one octet more, decoding to the same.
    packed = tone_frames(name, aligned)
    assert {len(frame) for frame in packed} == {len(frames[0]) + 1}
    assert (
        amr_decoded(aligned, packed, 1, octet_aligned=True)[0]
        == amr_decoded(efficient, frames, 1, octet_aligned=False)[0]
    )


@AMR_CODECS
@pytest.mark.parametrize("name", sorted(RINGBACK_PLANS))
def test_an_amr_cadence_repeats_seamlessly(
    name: str, efficient: ToneCodec, aligned: ToneCodec
) -> None:
    # As for G.722, G.729 and Opus: the encoder's state at the frames' start is the one at
    # their end, so a decoder playing them again and again hears the same every time round.
    amr_encoder(efficient)
    (_, second, third), _ = amr_decoded(
        efficient, tone_frames(name, efficient), 3, octet_aligned=False
    )
    peak = max(map(abs, second))
    assert max(abs(a - b) for a, b in zip(second, third, strict=True)) <= 0.01 * peak


@pytest.mark.parametrize(
    ("codec", "step"), [(ToneCodec.AMR, 160), (ToneCodec.AMR_WB_OCTET_ALIGNED, 320)]
)
def test_an_amr_player_steps_the_rtp_clock_at_the_sampling_rate(
    codec: ToneCodec, step: int
) -> None:
    # RFC 4867 §4.1: the RTP clock is AMR's 8000 Hz or AMR-WB's 16000 Hz: 160 or 320 per
    # 20 ms frame.
    amr_encoder(codec)
    player = TonePlayer(Tone("us", codec, 96), ssrc=7, sequence=3, timestamp=0, now=0.0)
    packets = player.due(0.0) + player.due(0.02) + player.due(0.04)
    assert [header(p)[1:4] for p in packets] == [(96, 3, 0), (96, 4, step), (96, 5, 2 * step)]
    assert [p[12:] for p in packets] == list(tone_frames("us", codec)[:3])


def test_a_codec_whose_library_fails_at_the_start_is_no_tone_codec_of_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An encoder found by name that fails (another build's interface, a broken install): the
    # start goes on without that codec, and says why, rather than stopping the gateway or
    # restarting a media worker over and over.
    amr_encoder(ToneCodec.AMR)
    monkeypatch.setattr(tones, "_UNUSABLE", {})

    def broken(self: amr.AmrEncoder, samples: object) -> list[bytes]:
        raise amr.AmrError("opencore-amrnb: a frame of 0 octets, not 32")

    monkeypatch.setattr(amr.AmrEncoder, "encode", broken)
    tone_frames.cache_clear()
    _amr_frames.cache_clear()
    failed = prepare_tone_frames("eu")
    assert "AMR" in failed and failed["AMR"] == (
        "AmrError: opencore-amrnb: a frame of 0 octets, not 32"
    )
    assert set(failed) <= {"AMR", "AMR-WB"}  # the two packings of each, said once
    assert not codec_available(ToneCodec.AMR) and not codec_available(ToneCodec.AMR_OCTET_ALIGNED)
    assert codec_available(ToneCodec.PCMU) and codec_available(ToneCodec.G722)
    line = media_description("96 0", "a=rtpmap:96 AMR/8000")
    assert tone_codecs(line) == {ToneCodec.PCMU: 0}
    assert ", AMR" not in ringback_summary("eu")
    assert prepare_tone_frames("eu") == {}  # not tried again
    tone_frames.cache_clear()
    _amr_frames.cache_clear()
