"""A G.729 payload's frames (RFC 3551 §4.5.6: 10-octet frames, then at most one 2-octet Annex B
SID frame) read from its length alone; any other length refused before anything is decoded."""

from __future__ import annotations

import pytest

from gateway.core.media.g729 import G729PayloadError, g729_frames_untrusted


def test_voice_frames_then_one_sid_frame() -> None:
    payload = bytes(range(22))
    assert g729_frames_untrusted(payload) == [
        (payload[:10], False),
        (payload[10:20], False),
        (payload[20:], True),
    ]
    assert g729_frames_untrusted(b"\x01\x02") == [(b"\x01\x02", True)]
    assert g729_frames_untrusted(b"") == []


@pytest.mark.parametrize("length", [1, 3, 9, 11, 15, 21, 24])
def test_any_other_length_is_not_g729(length: int) -> None:
    with pytest.raises(G729PayloadError, match=f"a G.729 payload of {length} octets"):
        g729_frames_untrusted(bytes(length))
