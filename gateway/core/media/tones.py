"""Call progress tones the gateway plays itself, as G.711, G.722, G.729, Opus, AMR or GSM RTP.

Sans-IO.

Theory of operation
-------------------
A transferee hears nothing of a blind transfer's target ringing: the target was called
without SDP, and the dialog the transferee is in is already confirmed, so no 180 can reach it
(RFC 3261 §13.2.2.4 ends early responses at the 2xx). What a caller hears while a call rings
is the network's *ringing tone* (ITU-T E.180 §2.2; often called ringback), and a PBX or SBC
that takes the transfer over plays it itself, as Asterisk and FreeSWITCH do. The gateway
plays it towards the transferee, in place of the transferor's media, from the target's first
provisional response until the target answers or the transfer fails
(``gateway.core.calls.transferring``, docs/transfers.md "Media").

The tone is national (E.180's Supplement 2 lists each network's): ``[media] ringback_tone``
names the plan (:data:`RINGBACK_PLANS`; ``"none"`` plays nothing). Each plan is one or two
frequencies summed, at a level per frequency, switched on and off by a cadence repeated for as
long as it plays.

It goes in the first of PCMU, PCMA, G722, G729, opus, AMR, AMR-WB and GSM that the receiving
leg's SDP in force lists, with the payload type number it gives (RFC 3264 §5.1: the numbers a
party writes are those it expects to receive); a leg that takes none of them hears nothing (the
gateway encodes no other codec). G.711 (RFC 3551 §4.5.14): 8000 samples a second, an octet a sample.
G.722 (ITU-T G.722 at 64 kbit/s, RFC 3551 §4.5.2): 16000 samples a second in 4 bits each, so
160 octets per 20 ms as well, and its RTP clock runs at 8000 Hz, as G.711's (RFC 1890's
mistake, which RFC 3551 keeps for compatibility): the timestamps step the same 160 per packet.
HD phones (G.722 first, often alone when an administrator narrowed their codec list) hear the
tone too; before session 55 they heard silence while the target rang. G.729 (RFC 3551 §4.5.6),
only where bcg729 is installed (gateway/core/media/g729.py; since session 56, before which
low-bandwidth trunks and branch lines that take G.729 alone heard silence): 8000 samples a
second in 10 ms frames of 10 octets, two a packet; the timestamps step 160 as G.711's. Without
Annex B's comfort noise: the cadence's gaps go as encoded silence, which a receiver that said
``annexb=no`` (RFC 4856 §2.1.9) takes too. Opus (RFC 7587), only where libopus is installed
(gateway/core/media/opus.py; since session 57, before which a line that takes Opus alone, as a
WebRTC client narrowed to it, heard silence): the same 8 kHz cadence encoded narrowband, one
packet of a few dozen octets per 20 ms, and the timestamps step 960 (the RTP clock of Opus is
48000 Hz at any sampling rate, RFC 7587 §4.1). The packets are an RTP stream of their own (RFC
3550 §8: a new SSRC, random sequence number and timestamp): the receiver's jitter buffer starts
afresh with it, as it does when the target's media replaces it. AMR and AMR-WB (RFC 4867),
only where their encoders are installed (gateway/core/media/amr.py: opencore-amr, vo-amrwbenc;
since session 62, before which a line that takes AMR alone, a mobile operator's trunk, heard
silence): 12.2 kbit/s (AMR, 8 kHz) or 12.65 kbit/s (AMR-WB, 16 kHz), a frame a packet, packed
bandwidth-efficient or octet-aligned as the receiver's fmtp says (a line asking for CRCs,
robust sorting, interleaving or a mode-set without that mode takes no AMR tone); the
timestamps step 160 (AMR) or 320 (AMR-WB: its RTP clock is 16000 Hz, RFC 4867 §4.1). GSM
full rate (RFC 3551 §4.5.8), only where libgsm is installed (gateway/core/media/gsm.py; since
session 63, before which a line that takes GSM alone, an older PBX or PSTN gateway, heard
silence): a 33-octet frame per 20 ms packet, the timestamps stepping 160.

Cost: nothing per packet of any other call. A plan's frames are computed once per process and
codec (:func:`tone_frames`): sums of sines whose frequencies divide into a short repeating unit
(at most a few 20 ms frames: 440 + 480 Hz repeat every 25 ms, so every 100 ms on a 20 ms grid),
so the first ringback of a process computes a few hundred samples, not seconds of them. G.722
is adaptive (its ADPCM predictors carry state from sample to sample), so its frames are a whole
cadence encoded by libg722 (the ``G722`` package: bit-exact to the ITU-T reference), after the
same cadence once before it: the encoder then starts the kept cadence in the state it ends it
in (a silence), and the cadence repeats seamlessly. G.729's encoder carries state too (its
prediction and pitch memories), and its frames are made the same way by bcg729, Opus's by
libopus, AMR's by opencore-amr and AMR-WB's by vo-amrwbenc (one encoding serves both
packings), GSM's by libgsm. That costs 5-15 ms per plan for G.722, 14-31 ms for G.729, 26-58 ms
for Opus, 17-37 ms for AMR, 45-94 ms for AMR-WB and 4-11 ms for GSM
(``"us"``, the longest cadence, the most),
which on the event loop would hold every call's media that long at the first such ringback:
so the process that plays the tones makes the configured plan's frames before it relays
anything (:func:`prepare_tone_frames`: the SIP process's relay, or each media worker from its
``--ringback-tone``; since session 56). With media workers the SIP process makes them as well,
though it plays none: a codec whose library fails there fails in the workers too, and is then
never chosen (session 63).
:class:`TonePlayer` paces a tone's packets from float time; the relay's task sends them
(:meth:`gateway.core.media.relay.MediaStream.play_tone`).
"""

from __future__ import annotations

import array
import enum
import functools
import math

import attrs
from G722 import G722

from gateway.core.media import amr, g729, gsm, opus
from gateway.core.media.g711 import lin2alaw, lin2ulaw
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import MediaDescription
from gateway.core.sdp.offer_answer import codecs_by_format

SAMPLE_RATE = 8000
"""G.711's sampling rate, and the RTP clock rate of both codecs (RFC 3551 §4.5.14, §4.5.2)."""
G722_SAMPLE_RATE = 16000
"""G.722's sampling rate (ITU-T G.722 §1)."""
G722_BIT_RATE = 64000
"""G.722's mode 1, the one RTP carries (RFC 3551 §4.5.2: 64 kbit/s)."""
FRAME_SECONDS = 0.02
"""Audio per packet: RFC 3551 §4.5.14's default packetization for G.711 (ptime 20)."""
FRAME_SAMPLES = 160
"""Samples per 20 ms packet at 8000 Hz: G.711's payload octets, and the RTP timestamp step of
every tone codec but Opus."""
OPUS_FRAME_TICKS = 960
"""Opus's RTP timestamp step per 20 ms packet (its 48000 Hz clock, RFC 7587 §4.1)."""
FULL_SCALE_DBM0 = 3.14
"""The level of a sine at the 16-bit full scale: ITU-T G.711's A-law maximum is +3.14 dBm0
(mu-law's +3.17): the reference :func:`_amplitude` converts from."""
GSM_FALL_SAMPLES = 40
"""The fall at the end of each burst of a GSM tone: 5 ms at 8000 Hz (:func:`_gsm_frames`)."""
MAX_CATCH_UP = 3
"""Most packets one :meth:`TonePlayer.due` sends for frames whose time has passed: a relay that
was held up longer skips the rest (their time goes by in the RTP timestamp, not as a burst that
would overflow the receiver's jitter buffer)."""


@attrs.frozen
class TonePlan:
    """One national tone: ``frequencies`` (Hz) summed, each at ``level_dbm0``, on and off by
    ``cadence`` (seconds, on first, then off, ... repeated; each a whole number of 20 ms
    frames)."""

    name: str
    frequencies: tuple[float, ...]
    level_dbm0: float
    cadence: tuple[float, ...]
    standard: str
    """Where the plan comes from, for the documentation."""


RINGBACK_PLANS: dict[str, TonePlan] = {
    plan.name: plan
    for plan in (
        # North America's precise tone plan (ANSI T1.401, E.180 Supplement 2): 440 + 480 Hz at
        # -19 dBm0 each, 2 s on, 4 s off.
        TonePlan("us", (440.0, 480.0), -19.0, (2.0, 4.0), "ANSI T1.401, E.180 Suppl. 2"),
        # The United Kingdom's (BT SIN 350, E.180 Supplement 2): 400 + 450 Hz, twice 0.4 s
        # with 0.2 s between, then 2 s off.
        TonePlan("uk", (400.0, 450.0), -19.0, (0.4, 0.2, 0.4, 2.0), "BT SIN 350, E.180 Suppl. 2"),
        # The European one most networks use (ETSI TR 101 041, E.180 §2.2's recommended
        # 425 Hz): 1 s on, 4 s off.
        TonePlan("eu", (425.0,), -16.0, (1.0, 4.0), "ETSI TR 101 041, E.180"),
        # France's (E.180 Supplement 2): 440 Hz, 1.5 s on, 3.5 s off.
        TonePlan("fr", (440.0,), -16.0, (1.5, 3.5), "E.180 Suppl. 2"),
    )
}
"""The ringing tones ``[media] ringback_tone`` names (besides ``"none"``). Levels per
frequency: the North American plan's for two frequencies, 3 dB more for one, so that every
plan is about as loud."""


class ToneCodec(enum.Enum):
    """What a tone is encoded as, by its RTP encoding name (RFC 3551 §6)."""

    PCMU = "PCMU"
    PCMA = "PCMA"
    G722 = "G722"
    G729 = "G729"
    OPUS = "opus"
    AMR = "AMR"
    """AMR 12.2 kbit/s, bandwidth-efficient (RFC 4867 §4.3, its default)."""
    AMR_OCTET_ALIGNED = "AMR octet-aligned"
    """AMR 12.2 kbit/s, octet-aligned (RFC 4867 §4.4: the receiver's ``octet-align=1``)."""
    AMR_WB = "AMR-WB"
    """AMR-WB 12.65 kbit/s, bandwidth-efficient."""
    AMR_WB_OCTET_ALIGNED = "AMR-WB octet-aligned"
    """AMR-WB 12.65 kbit/s, octet-aligned."""
    GSM = "GSM"
    """GSM 06.10 full rate, 13 kbit/s (RFC 3551 §4.5.8, static payload type 3)."""

    @property
    def encoding(self) -> str:
        """The RTP encoding name (RFC 3551 §6, RFC 4867 §8.1): AMR's two packings are one."""
        amr_packing = _AMR_PACKINGS.get(self)
        return self.value if amr_packing is None else amr_packing[0].name

    @property
    def frame_ticks(self) -> int:
        """The RTP timestamp step of a 20 ms packet: the codec's RTP clock rate / 50."""
        if self is ToneCodec.OPUS:
            return OPUS_FRAME_TICKS
        amr_packing = _AMR_PACKINGS.get(self)
        return FRAME_SAMPLES if amr_packing is None else amr_packing[0].frame_samples


_AMR_PACKINGS: dict[ToneCodec, tuple[amr.AmrCodec, bool]] = {
    ToneCodec.AMR: (amr.AMR, False),
    ToneCodec.AMR_OCTET_ALIGNED: (amr.AMR, True),
    ToneCodec.AMR_WB: (amr.AMR_WB, False),
    ToneCodec.AMR_WB_OCTET_ALIGNED: (amr.AMR_WB, True),
}
"""The AMR tone codecs: which of the two codecs, and whether octet-aligned."""


@attrs.frozen
class Tone:
    """What to play on one direction of a stream: the plan's name, the codec and the payload
    type number the receiving leg takes it as. Crosses to a media worker as it is
    (``worker_protocol.PlayTone``): each process computes the frames itself."""

    plan: str
    codec: ToneCodec
    payload_type: int

    def __attrs_post_init__(self) -> None:
        if self.plan not in RINGBACK_PLANS:
            raise ValueError(f"no tone plan {self.plan!r}")
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} is out of range")


_TONE_CODECS = {
    **{
        (codec.value.lower(), SAMPLE_RATE, 1): codec
        for codec in (
            ToneCodec.PCMU,
            ToneCodec.PCMA,
            ToneCodec.G722,
            ToneCodec.G729,
            ToneCodec.GSM,
        )
    },
    ("opus", opus.RTP_CLOCK_RATE, 2): ToneCodec.OPUS,
    ("opus", opus.RTP_CLOCK_RATE, 1): ToneCodec.OPUS,
    ("amr", amr.AMR.sample_rate, 1): ToneCodec.AMR,
    ("amr-wb", amr.AMR_WB.sample_rate, 1): ToneCodec.AMR_WB,
}
"""The codecs a tone goes in, by ``RtpMap.codec_key``: each at the RTP clock rate 8000, one
channel (RFC 3551 §4.5.2, §4.5.6, §4.5.8, §4.5.14), Opus at 48000 (RFC 7587 §7: ``opus/48000/2``; a
``opus/48000`` without channels taken as well), AMR at 8000 and AMR-WB at 16000 (RFC 4867
§8.1, §8.2: ``AMR/8000``, ``AMR-WB/16000``, one channel), packed as the fmtp says
(:func:`_amr_codec`)."""


def tone_codecs(media: MediaDescription) -> dict[ToneCodec, int]:
    """The codecs a tone can go in among ``media``'s formats, in the order it lists them, each
    with the first number it has (by a=rtpmap or RFC 3551 static number); empty when its
    rtpmaps cannot be read."""
    found: dict[ToneCodec, int] = {}
    for payload_type, _, taken in _tone_formats(media):
        if taken is not None and codec_available(taken):
            found.setdefault(taken, payload_type)
    return found


def amr_not_taken(media: MediaDescription) -> bool:
    """Whether ``media`` lists AMR or AMR-WB that this install could play a tone in but for its
    fmtp (:func:`_amr_codec` says None): the log's reason then says so, not only "it takes
    none"."""
    return any(taken is None and codec_available(named) for _, named, taken in _tone_formats(media))


def _tone_formats(media: MediaDescription) -> list[tuple[int, ToneCodec, ToneCodec | None]]:
    """The formats of ``media`` whose rtpmap names a tone codec, in its order: the payload
    type, the codec named, and the one the format takes (AMR's and AMR-WB's by the fmtp,
    None for a packing the tone does not make); empty when its rtpmaps cannot be read."""
    try:
        formats = codecs_by_format(media)
    except SdpError:
        return []
    listed: list[tuple[int, ToneCodec, ToneCodec | None]] = []
    for payload_type, rtpmap in formats.items():
        named = _TONE_CODECS.get(rtpmap.codec_key) if rtpmap is not None else None
        if named in (ToneCodec.AMR, ToneCodec.AMR_WB):
            listed.append((payload_type, named, _amr_codec(named, media.fmtp(payload_type))))
        elif named is not None:
            listed.append((payload_type, named, named))
    return listed


def _amr_codec(codec: ToneCodec, fmtp: str | None) -> ToneCodec | None:
    """The tone codec (``codec``, bandwidth-efficient, or its octet-aligned twin) a format of
    AMR or AMR-WB whose fmtp parameters are ``fmtp`` takes, or None (RFC 4867 §8.1 options the
    tone does not make: :func:`gateway.core.media.amr.tone_packing`)."""
    packing = amr.tone_packing(_AMR_PACKINGS[codec][0], fmtp)
    if packing == "bandwidth-efficient":
        return codec
    if packing == "octet-aligned":
        return (
            ToneCodec.AMR_OCTET_ALIGNED
            if codec is ToneCodec.AMR
            else ToneCodec.AMR_WB_OCTET_ALIGNED
        )
    return None


def codec_available(codec: ToneCodec) -> bool:
    """Whether this install can encode ``codec``: G.729 needs bcg729, Opus libopus, AMR
    opencore-amr, AMR-WB vo-amrwbenc, GSM libgsm (system libraries); none whose frames could
    not be made (:func:`prepare_tone_frames`)."""
    if codec in _UNUSABLE:
        return False
    if codec is ToneCodec.G729:
        return g729.load_bcg729() is not None
    if codec is ToneCodec.OPUS:
        return opus.load_libopus() is not None
    if codec is ToneCodec.GSM:
        return gsm.load_libgsm() is not None
    amr_packing = _AMR_PACKINGS.get(codec)
    if amr_packing is not None:
        return amr.load_encoder(amr_packing[0]) is not None
    return True


def tone_codec_names() -> str:
    """The codecs a ringing tone can go in on this install, for the log ("PCMU, PCMA, G722,
    G729, opus, AMR, AMR-WB and GSM"; G729 only where bcg729 is installed, opus where libopus
    is, AMR where opencore-amr is, AMR-WB where vo-amrwbenc is, GSM where libgsm is)."""
    names = list(dict.fromkeys(codec.encoding for codec in ToneCodec if codec_available(codec)))
    return ", ".join(names[:-1]) + " and " + names[-1]


def ringback_summary(plan_name: str) -> str:
    """``[media] ringback_tone`` as the gateway's start says it: the plan and the codecs this
    install can play it in, so that an operator sees whether bcg729, libopus, opencore-amr,
    vo-amrwbenc and libgsm were found."""
    if plan_name == "none":
        return "none (a transferee hears the transferor's media until the target answers)"
    return f"{plan_name}, in the first of {tone_codec_names()} the transferee's line lists"


def _amplitude(level_dbm0: float) -> float:
    return 32767.0 * math.pow(10.0, (level_dbm0 - FULL_SCALE_DBM0) / 20.0)


def _frame_samples(rate: int) -> int:
    """Samples in one 20 ms frame at ``rate`` samples a second."""
    return round(rate * FRAME_SECONDS)


def _repeating_frames(plan: TonePlan, rate: int = SAMPLE_RATE) -> int:
    """How many 20 ms frames the summed sines take to repeat exactly at ``rate`` samples a
    second: each frequency repeats every ``rate / gcd(f, rate)`` samples (whole-Hz
    frequencies), the sum every least common multiple of those, and a frame grid every
    multiple of a frame's samples."""
    frame = _frame_samples(rate)
    samples = frame
    for frequency in plan.frequencies:
        hz = round(frequency)
        samples = math.lcm(samples, rate // math.gcd(hz, rate))
    return samples // frame


def _burst_samples(plan: TonePlan, rate: int) -> list[int]:
    """The linear samples of :func:`_repeating_frames` frames of ``plan``'s burst at ``rate``,
    from phase 0."""
    amplitude = _amplitude(plan.level_dbm0)
    count = _repeating_frames(plan, rate) * _frame_samples(rate)
    return [
        round(
            amplitude
            * sum(math.sin(2.0 * math.pi * frequency * n / rate) for frequency in plan.frequencies)
        )
        for n in range(count)
    ]


@functools.cache
def tone_frames(plan_name: str, codec: ToneCodec) -> tuple[bytes, ...]:
    """One whole cadence of ``plan_name`` as ``codec`` payloads of 20 ms each, in order.
    Each burst starts at phase 0. Computed once per process. G.711: silence is the law's code
    for 0, the frames of a burst repeat every :func:`_repeating_frames` and every silent frame
    is the same object. G.722: :func:`_g722_frames`."""
    plan = RINGBACK_PLANS[plan_name]
    if codec is ToneCodec.G722:
        return _g722_frames(plan)
    if codec is ToneCodec.G729:
        return _g729_frames(plan)
    if codec is ToneCodec.OPUS:
        return _opus_frames(plan)
    if codec is ToneCodec.GSM:
        return _gsm_frames(plan)
    amr_packing = _AMR_PACKINGS.get(codec)
    if amr_packing is not None:
        amr_codec, octet_aligned = amr_packing
        stored = _amr_frames(plan_name, amr_codec)
        if octet_aligned:
            return tuple(amr.octet_aligned_payload(frame) for frame in stored)
        return tuple(amr.bandwidth_efficient_payload(amr_codec, frame) for frame in stored)
    encode = lin2ulaw if codec is ToneCodec.PCMU else lin2alaw
    unit = _repeating_frames(plan)
    samples = [encode(sample) for sample in _burst_samples(plan, SAMPLE_RATE)]
    burst = [bytes(samples[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(unit)]
    silence = bytes([encode(0)]) * FRAME_SAMPLES
    frames: list[bytes] = []
    for index, seconds in enumerate(plan.cadence):
        count = round(seconds / FRAME_SECONDS)
        if index % 2 == 0:
            frames += [burst[i % unit] for i in range(count)]
        else:
            frames += [silence] * count
    return tuple(frames)


_UNUSABLE: dict[ToneCodec, str] = {}
"""The codecs whose library is installed but failed to make a plan's frames
(:func:`prepare_tone_frames`), and why: no tone codec of this process from then on."""


def prepare_tone_frames(plan_name: str) -> dict[str, str]:
    """Make ``plan_name``'s frames in every codec now (``"none"``: nothing), so that no
    ringback computes them on the event loop, where relayed media waits for it.

    The encoders of G.729, Opus and AMR are system libraries found by name: one that fails (a
    build of another interface under the expected name, a broken install) makes its codec no
    tone codec of this process (:func:`codec_available` says so from then on) instead of
    keeping the gateway or a media worker from starting. Returns what failed, by RTP encoding
    name, with why, for the caller's start-up WARNING."""
    failed: dict[str, str] = {}
    if plan_name == "none":
        return failed
    for codec in ToneCodec:
        if not codec_available(codec):
            continue
        try:
            tone_frames(plan_name, codec)
        except Exception as exc:  # whatever a foreign library's binding raises
            _UNUSABLE[codec] = failed[codec.encoding] = f"{type(exc).__name__}: {exc}"
    return failed


def _cadence_samples(plan: TonePlan, rate: int) -> list[int]:
    """One whole cadence of ``plan`` as linear samples at ``rate``: each burst from phase 0
    (:func:`_burst_samples` repeated), each gap zeros. For the adaptive codecs, which encode it
    whole (:func:`_g722_frames`, :func:`_g729_frames`)."""
    frame = _frame_samples(rate)
    burst = _burst_samples(plan, rate)
    cadence: list[int] = []
    for index, seconds in enumerate(plan.cadence):
        count = round(seconds / FRAME_SECONDS) * frame
        if index % 2 == 0:
            cadence += [burst[n % len(burst)] for n in range(count)]
        else:
            cadence += [0] * count
    return cadence


def _g722_frames(plan: TonePlan) -> tuple[bytes, ...]:
    """One whole cadence of ``plan`` in G.722 at 64 kbit/s, 20 ms (320 samples at 16000 Hz,
    160 octets) a frame: the cadence encoded twice by one encoder, the second time kept. The
    encoder's adaptive state at the start of the kept cadence is the one it has at its end,
    after the cadence's last silence: played again and again, every repetition decodes the
    same, with no step at the joins (a receiver's fresh decoder settles within some 50 ms of
    the first burst, as at the start of any G.722 stream)."""
    cadence = array.array("h", _cadence_samples(plan, G722_SAMPLE_RATE))
    encoder = G722(G722_SAMPLE_RATE, G722_BIT_RATE)
    encoder.encode(cadence)  # the adaptive state the cadence ends in
    encoded: bytes = encoder.encode(cadence)
    return tuple(encoded[i : i + FRAME_SAMPLES] for i in range(0, len(encoded), FRAME_SAMPLES))


def _g729_frames(plan: TonePlan) -> tuple[bytes, ...]:
    """One whole cadence of ``plan`` in G.729, 20 ms (two 10-octet frames) a packet: the
    cadence encoded twice by one bcg729 encoder, the second time kept, as for G.722
    (:func:`_g722_frames`: every repetition starts in the state the cadence ends in)."""
    bcg729 = g729.load_bcg729()
    if bcg729 is None:
        raise ValueError("G.729 tone frames need bcg729 (apt-get install libbcg729-0)")
    cadence = _cadence_samples(plan, SAMPLE_RATE)
    encoder = g729.Bcg729Encoder(bcg729)
    encoder.encode(cadence)  # the state the cadence ends in
    encoded = encoder.encode(cadence)
    octets = 2 * g729.FRAME_OCTETS
    return tuple(encoded[i : i + octets] for i in range(0, len(encoded), octets))


def _opus_frames(plan: TonePlan) -> tuple[bytes, ...]:
    """One whole cadence of ``plan`` in Opus, a packet per 20 ms: the 8 kHz cadence encoded
    twice by one libopus encoder, the second time kept, as for G.722 (:func:`_g722_frames`:
    every repetition starts in the state the cadence ends in)."""
    libopus = opus.load_libopus()
    if libopus is None:
        raise ValueError("Opus tone frames need libopus (apt-get install libopus0)")
    cadence = _cadence_samples(plan, SAMPLE_RATE)
    encoder = opus.OpusEncoder(libopus, SAMPLE_RATE)
    encoder.encode(cadence)  # the state the cadence ends in
    return tuple(encoder.encode(cadence))


def _gsm_frames(plan: TonePlan) -> tuple[bytes, ...]:
    """One whole cadence of ``plan`` in GSM full rate, one 33-octet frame (20 ms) a packet: the
    cadence encoded twice by one libgsm encoder, the second time kept, as for G.722
    (:func:`_g722_frames`: every repetition starts in the state the cadence ends in)."""
    libgsm = gsm.load_libgsm()
    if libgsm is None:
        raise ValueError("GSM tone frames need libgsm (apt-get install libgsm1)")
    cadence = _cadence_samples(plan, SAMPLE_RATE)
    # Each burst fades out over its last 5 ms. Cut off mid-cycle at the plans' level, the
    # encoder's analysis of the step made frames that decoded to 100-140 ms of sound in the gap
    # up to 4 dB under the tone (a smear across the uk plan's 0.2 s gap); faded, the gap
    # decodes to the codec's noise floor from its first packet (session 63, measured).
    frame = _frame_samples(SAMPLE_RATE)
    end = 0
    for index, seconds in enumerate(plan.cadence):
        end += round(seconds / FRAME_SECONDS) * frame
        if index % 2 == 0:
            for k in range(GSM_FALL_SAMPLES):
                n = end - GSM_FALL_SAMPLES + k
                cadence[n] = round(cadence[n] * (GSM_FALL_SAMPLES - k) / GSM_FALL_SAMPLES)
    encoder = gsm.GsmEncoder(libgsm)
    encoder.encode_frames(cadence)  # the state the cadence ends in
    return tuple(encoder.encode_frames(cadence))


@functools.cache
def _amr_frames(plan_name: str, codec: amr.AmrCodec) -> tuple[bytes, ...]:
    """One whole cadence of ``plan_name`` in ``codec`` (AMR or AMR-WB, in its tone mode) as
    storage frames (RFC 4867 §5.3), one per 20 ms: the cadence encoded twice by one encoder,
    the second time kept, as for G.722 (:func:`_g722_frames`). Both packings are made from
    these, once."""
    library = amr.load_encoder(codec)
    if library is None:
        package = "libopencore-amrnb0" if codec == amr.AMR else "libvo-amrwbenc0"
        raise ValueError(f"{codec.name} tone frames need its encoder (apt-get install {package})")
    cadence = _cadence_samples(RINGBACK_PLANS[plan_name], codec.sample_rate)
    encoder = amr.AmrEncoder(library)
    encoder.encode(cadence)  # the state the cadence ends in
    return tuple(encoder.encode(cadence))


class TonePlayer:
    """The RTP packets of one :class:`Tone`, paced from float time (sans-IO): a new RTP
    stream (RFC 3550 §5.1: ``ssrc``, and a random first ``sequence`` and ``timestamp``, which
    the caller draws), one packet per 20 ms from ``now``, the first with the marker bit (RFC
    3551 §4.1: the start of a talkspurt). Unprotected: the sender protects each packet with the
    receiving leg's keys."""

    def __init__(self, tone: Tone, *, ssrc: int, sequence: int, timestamp: int, now: float) -> None:
        self.tone = tone
        self._frames = tone_frames(tone.plan, tone.codec)
        self._step = tone.codec.frame_ticks
        self._ssrc = ssrc.to_bytes(4, "big")
        self._sequence = sequence & 0xFFFF
        self._timestamp = timestamp & 0xFFFFFFFF
        self._started = now
        self._frame = 0  # frames whose time has gone, sent or skipped
        self.packets = 0
        """Packets made so far."""
        self.skipped = 0
        """Frames skipped because their time had passed (:data:`MAX_CATCH_UP`)."""

    @property
    def ssrc(self) -> int:
        return int.from_bytes(self._ssrc, "big")

    def next_due(self) -> float:
        """When the next packet is due."""
        return self._started + self._frame * FRAME_SECONDS

    def due(self, now: float) -> list[bytes]:
        """The packets due by ``now`` (at most :data:`MAX_CATCH_UP`; frames older than those
        are skipped)."""
        # A frame is due at its start; the small epsilon keeps float steps of 0.02 on time.
        due_frames = math.floor((now - self._started) / FRAME_SECONDS + 1e-6) + 1
        behind = due_frames - self._frame
        if behind <= 0:
            return []
        if behind > MAX_CATCH_UP:
            self.skipped += behind - MAX_CATCH_UP
            self._frame += behind - MAX_CATCH_UP
            behind = MAX_CATCH_UP
        packets = []
        frames = self._frames
        for _ in range(behind):
            frame = self._frame
            marker = 0x80 if self.packets == 0 else 0
            sequence = (self._sequence + self.packets) & 0xFFFF
            timestamp = (self._timestamp + frame * self._step) & 0xFFFFFFFF
            header = bytes((0x80, marker | self.tone.payload_type))
            packets.append(
                b"".join(
                    (
                        header,
                        sequence.to_bytes(2, "big"),
                        timestamp.to_bytes(4, "big"),
                        self._ssrc,
                        frames[frame % len(frames)],
                    )
                )
            )
            self._frame += 1
            self.packets += 1
        return packets
