"""A G.722 decoder (ITU-T G.722, 64 kbit/s mode): sub-band ADPCM to 16 kHz 16-bit linear PCM.

Theory of operation. A G.722 octet carries one sample pair of two sub-bands: its low six bits
the lower band (0-4 kHz, 6-bit ADPCM), its top two bits the higher band (4-8 kHz, 2-bit ADPCM),
both at 8 kHz. Each band is an ADPCM decoder whose state adapts to what it decoded (the comments
name the Recommendation's computational blocks: INVQBL, LOGSCL, SCALEL, RECONS, UPPOL1 ...,
with an L or H for the band where it has two). The receive QMF turns the two 8 kHz bands into
two 16 kHz output samples per octet. The decoder is stateful: its state must
follow one encoder, so a new source (a new SSRC) gets a new decoder (:meth:`G722Decoder.reset`).
Any octets decode (every code is valid), so no payload can make it fail.

The arithmetic is the Recommendation's 16-bit fixed point (saturating where it says LIMIT), so
the output matches other conforming decoders sample for sample (tests compare with spandsp's).
RTP (RFC 3551 §4.5.2): payload type 9, one octet per 8 kHz RTP timestamp tick although the
audio is 16 kHz (the SDP says G722/8000 for historical reasons).

Cost: pure Python, 2 x 160 band updates per 20 ms packet: about 0.8 ms of CPU on the test
machine (AMD EPYC, Python 3.11), where G.711 takes 4 us; benchmarks/recorder_decode.py prints the
figures. The per-sample work is written for CPython: state unpacked into locals, saturation
inline, the QMF's dot products in C (``sum(map(mul, ...))``).
"""

from __future__ import annotations

import struct
from operator import mul

# Inverse quantizer of the lower band, 6-bit codes (64 kbit/s mode: what is output): G.722's
# reconstruction levels scaled by 2**15 (so det * level >> 15 is the difference).
_QM6 = (
    -136, -136, -136, -136, -24808, -21904, -19008, -16704,
    -14984, -13512, -12280, -11192, -10232, -9360, -8576, -7856,
    -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576,
    -3168, -2776, -2400, -2032, -1688, -1360, -1040, -728,
    24808, 21904, 19008, 16704, 14984, 13512, 12280, 11192,
    10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456,
    4944, 4464, 4008, 3576, 3168, 2776, 2400, 2032,
    1688, 1360, 1040, 728, 432, 136, -432, -136,
)  # fmt: skip
# The lower band's 4-bit truncated codes (INVQAL): what the predictor adapts on, in every mode,
# so an encoder and a decoder using fewer bits (56 and 48 kbit/s modes) stay in step.
_QM4 = (
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200,
    20456, 12896, 8968, 6288, 4240, 2584, 1200, 0,
)  # fmt: skip
# LOGSCL: the log scale factor multiplier of each 4-bit code, through its magnitude.
_RL42 = (0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0)
_WL = (-60, -30, 58, 172, 334, 538, 1198, 3042)
# The higher band: 2-bit codes' levels (INVQAH) and log scale factor multipliers (LOGSCH).
_QM2 = (-7408, -1616, 7408, 1616)
_RH2 = (2, 1, 2, 1)
_WH = (0, -214, 798)
# SCALEL/SCALEH: 2 ** (i / 32) in Q11, the mantissa of the log-to-linear conversion.
_ILB = tuple(round(2048 * 2 ** (i / 32)) for i in range(32))
# The receive QMF's even taps (h0, h2 ... h22 of 24). Each output sample takes every other tap:
# one the even taps on the sums of the bands, the other the odd taps on their differences, and
# as the filter is symmetric (h[i] = h[23 - i]) the odd taps are the even ones reversed.
_QMF = (3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11)
_QMF_REVERSED = _QMF[::-1]


# One sub-band's ADPCM state, a list in _adapt's order: the predicted signal (PREDIC), the zero
# section's part of it (FILTEZ), the two pole and six zero coefficients, the last six quantized
# differences and the last two reconstructed signals (RECONS), the last two partially
# reconstructed signals (PARREC). The filters only ever use a difference or a reconstructed
# signal doubled and saturated (FILTEZ, FILTEP), and the adaptation only its sign, so that is
# what is kept: each is saturated once, when it enters its delay line. Plain ints in a list,
# unpacked into locals once per sample: the cheapest state CPython offers (attributes and a call
# per saturation cost twice as much).
_RESET = (0,) * 20


def _adapt(band: list[int], dq: int) -> int:
    """Update ``band``'s predictor with the quantized difference ``dq`` (G.722's block 4:
    RECONS, PARREC, UPPOL2, UPPOL1, UPZERO, DELAYA, FILTEP, FILTEZ, PREDIC); returns the next
    prediction."""
    s, sz, a1, a2, b1, b2, b3, b4, b5, b6, d1, d2, d3, d4, d5, d6, r1, r2, p1, p2 = band
    r0 = s + dq  # RECONS
    r0 = -32768 if r0 < -32768 else 32767 if r0 > 32767 else r0
    p0 = sz + dq  # PARREC
    p0 = -32768 if p0 < -32768 else 32767 if p0 > 32767 else p0
    same01 = (p0 < 0) == (p1 < 0)
    # UPPOL2: the second pole coefficient follows the signs of the last three PARRECs.
    wd1 = a1 * 4
    wd1 = -32768 if wd1 < -32768 else 32767 if wd1 > 32767 else wd1
    wd2 = -wd1 if same01 else wd1
    if wd2 > 32767:
        wd2 = 32767
    wd3 = (wd2 >> 7) + (128 if (p0 < 0) == (p2 < 0) else -128) + ((a2 * 32512) >> 15)
    a2 = -12288 if wd3 < -12288 else 12288 if wd3 > 12288 else wd3
    # UPPOL1: the first pole coefficient, bounded so that the pole section stays stable.
    wd1 = (192 if same01 else -192) + ((a1 * 32640) >> 15)
    wd1 = -32768 if wd1 < -32768 else 32767 if wd1 > 32767 else wd1
    bound = 15360 - a2  # |a2| <= 12288: no saturation needed
    a1 = -bound if wd1 < -bound else bound if wd1 > bound else wd1
    # UPZERO: each zero coefficient leaks (x 255/256) and steps 128 towards agreeing in sign
    # with dq (no step when dq is 0). b stays within 16 bits by construction: from 32767,
    # 32767 * 255/256 + 128 rounds down to 32767 (likewise -32768), so no LIMIT is needed.
    if dq:
        step = 128 if dq > 0 else -128
        b1 = ((b1 * 32640) >> 15) + (step if d1 >= 0 else -step)
        b2 = ((b2 * 32640) >> 15) + (step if d2 >= 0 else -step)
        b3 = ((b3 * 32640) >> 15) + (step if d3 >= 0 else -step)
        b4 = ((b4 * 32640) >> 15) + (step if d4 >= 0 else -step)
        b5 = ((b5 * 32640) >> 15) + (step if d5 >= 0 else -step)
        b6 = ((b6 * 32640) >> 15) + (step if d6 >= 0 else -step)
    else:
        b1, b2, b3 = (b1 * 32640) >> 15, (b2 * 32640) >> 15, (b3 * 32640) >> 15
        b4, b5, b6 = (b4 * 32640) >> 15, (b5 * 32640) >> 15, (b6 * 32640) >> 15
    # DELAYA, doubled and saturated as FILTEZ and FILTEP use them.
    dq *= 2
    dq = -32768 if dq < -32768 else 32767 if dq > 32767 else dq
    d1, d2, d3, d4, d5, d6 = dq, d1, d2, d3, d4, d5
    r0 *= 2
    r1, r2 = (-32768 if r0 < -32768 else 32767 if r0 > 32767 else r0), r1
    # FILTEP: the pole section's prediction from the last two reconstructed signals.
    sp = ((a1 * r1) >> 15) + ((a2 * r2) >> 15)
    sp = -32768 if sp < -32768 else 32767 if sp > 32767 else sp
    # FILTEZ: the zero section's from the last six differences.
    sz = (
        ((b1 * d1) >> 15)
        + ((b2 * d2) >> 15)
        + ((b3 * d3) >> 15)
        + ((b4 * d4) >> 15)
        + ((b5 * d5) >> 15)
        + ((b6 * d6) >> 15)
    )
    sz = -32768 if sz < -32768 else 32767 if sz > 32767 else sz
    s = sp + sz  # PREDIC
    s = -32768 if s < -32768 else 32767 if s > 32767 else s
    band[:] = (s, sz, a1, a2, b1, b2, b3, b4, b5, b6, d1, d2, d3, d4, d5, d6, r1, r2, p0, p1)
    return s


class G722Decoder:
    """Decodes the G.722 octets of one source, in order (64 kbit/s mode)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Back to the initial state (G.722's reset: all zero but the scale factors): for a
        new source."""
        self._low = list(_RESET)
        self._high = list(_RESET)
        # LOGSCL/SCALEL state: the log scale factor and the quantizer's scale (32 and 8 at
        # reset) of each band.
        self._scales = [0, 32, 0, 8]
        self._sums = [0] * 12  # receive QMF delay lines: low + high, low - high
        self._differences = [0] * 12

    def decode(self, octets: bytes) -> bytes:
        """16-bit little-endian PCM at 16 kHz: two samples per octet."""
        low, high = self._low, self._high
        low_s, high_s = low[0], high[0]
        low_nb, low_det, high_nb, high_det = self._scales
        sums, differences = self._sums, self._differences
        out: list[int] = []
        for octet in octets:
            # Lower band: INVQBL (the 6-bit code's level: the output), RECONS, LIMIT.
            code = octet & 0x3F
            rl = low_s + ((low_det * _QM6[code]) >> 15)
            rl = -16384 if rl < -16384 else 16383 if rl > 16383 else rl
            # INVQAL: the predictor adapts on the 4-bit truncated code's difference.
            code >>= 2
            dq = (low_det * _QM4[code]) >> 15
            # LOGSCL, SCALEL: the next scale factor, 2 ** (nb / 2048) in steps of 1/32.
            nb = ((low_nb * 127) >> 7) + _WL[_RL42[code]]
            low_nb = nb = 0 if nb < 0 else 18432 if nb > 18432 else nb
            shift = 8 - (nb >> 11)
            mantissa = _ILB[(nb >> 6) & 31]
            low_det = (mantissa >> shift if shift >= 0 else mantissa << -shift) << 2
            low_s = _adapt(low, dq)
            # Higher band: INVQAH, RECONS, LIMIT, LOGSCH, SCALEH.
            code = octet >> 6
            dq = (high_det * _QM2[code]) >> 15
            rh = high_s + dq
            rh = -16384 if rh < -16384 else 16383 if rh > 16383 else rh
            nb = ((high_nb * 127) >> 7) + _WH[_RH2[code]]
            high_nb = nb = 0 if nb < 0 else 22528 if nb > 22528 else nb
            shift = 10 - (nb >> 11)
            mantissa = _ILB[(nb >> 6) & 31]
            high_det = (mantissa >> shift if shift >= 0 else mantissa << -shift) << 2
            high_s = _adapt(high, dq)
            # Receive QMF: two 16 kHz samples from the bands' sample pair. The
            # sum saturates (LIMIT): a wrap would be a full-scale click.
            del sums[0], differences[0]
            sums.append(rl + rh)
            differences.append(rl - rh)
            first = sum(map(mul, differences, _QMF_REVERSED)) >> 11
            second = sum(map(mul, sums, _QMF)) >> 11
            out.append(-32768 if first < -32768 else 32767 if first > 32767 else first)
            out.append(-32768 if second < -32768 else 32767 if second > 32767 else second)
        self._scales = [low_nb, low_det, high_nb, high_det]
        return struct.pack(f"<{len(out)}h", *out)
