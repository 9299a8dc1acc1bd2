"""G.722 decoding by libg722 (the ``G722`` package, C, public domain).

Why. The recorder decodes what it records in the SIP process (docs/configuration.md, the
recorder): the pure-Python decoder (:mod:`.g722`) costs about 0.8 ms of CPU per 20 ms packet,
some 4 % of a core per recorded G.722 direction. libg722 decodes the same packet in a few
microseconds and is installed with the gateway since session 55 (the ringing tone's G.722
encoder, gateway/core/media/tones.py), so every install has a decoder in C; spandsp
(:mod:`.g722_spandsp`) needed ``apt-get install libspandsp2``, which the README's set-up does
not do. Its samples are the Python decoder's, sample for sample, at full scale too: it
saturates where G.722 says LIMIT, where spandsp 0.0.6 wraps (tests/unit/taps/test_g722.py).
"""

from __future__ import annotations

import sys

from G722 import G722

SAMPLE_RATE = 16000
MODE_64K = 64000  # G.722's 64 kbit/s mode: what RTP carries (RFC 3551 §4.5.2)


class LibG722Decoder:
    """Decodes the G.722 octets of one source, in order, as :class:`.g722.G722Decoder` does
    (the same ``decode`` and ``reset``), in C."""

    def __init__(self) -> None:
        self._codec = G722(SAMPLE_RATE, MODE_64K)

    def reset(self) -> None:
        """Back to the initial state, for a new source (a new SSRC): a new decoder."""
        self._codec = G722(SAMPLE_RATE, MODE_64K)

    def decode(self, octets: bytes) -> bytes:
        """16-bit little-endian PCM at 16 kHz: two samples per octet."""
        if not octets:
            return b""
        samples = self._codec.decode(octets)  # array("h"), host order
        if sys.byteorder == "big":  # WAV is little-endian
            samples.byteswap()
        pcm: bytes = samples.tobytes()
        return pcm
