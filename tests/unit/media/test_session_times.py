"""Session 42 (#7): our SDP carries the peer's t= values without its r= and z= lines (SIP uses
t=0 0, RFC 3264 §5); the usual t=0 0 is passed on as it is instead of being made again. A peer
that writes r= or z= lines, on any of its time descriptions, still gets none of them in ours."""

from __future__ import annotations

from gateway.core.config import PortRange
from gateway.core.sdp.model import TimeDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from tests.port_blocks import ModuleBlock
from tests.unit.media.session_env import closed_after

RANGE = ModuleBlock(20, parse=PortRange.parse)

_HEAD = "v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
_MEDIA = "m=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"


def _offer_to_b(times: str) -> tuple[tuple[TimeDescription, ...], str]:
    with closed_after(RANGE.get()) as session:
        to_b = session.offer_to_b(parse_sdp_untrusted((_HEAD + times + _MEDIA).encode()))
        return to_b.times, serialize_sdp(to_b).decode()


def test_t_0_0_is_passed_on() -> None:
    times, text = _offer_to_b("t=0 0\r\n")
    assert times == (TimeDescription(0, 0),)
    assert "\r\nt=0 0\r\n" in text


def test_repeat_and_zone_lines_are_left_behind_on_every_time_description() -> None:
    times, text = _offer_to_b(
        "t=3034423619 3042462419\r\n"
        "t=3034423620 3042462420\r\n"
        "r=604800 3600 0 90000\r\n"
        "z=2882844526 -1h 2898848070 0\r\n"
    )
    assert times == (
        TimeDescription(3034423619, 3042462419),
        TimeDescription(3034423620, 3042462420),
    )
    assert "\r\nt=3034423619 3042462419\r\nt=3034423620 3042462420\r\n" in text
    assert "r=" not in text and "z=" not in text


def test_a_zone_line_alone_is_left_behind() -> None:
    times, text = _offer_to_b("t=0 0\r\nz=2882844526 -1h 2898848070 0\r\n")
    assert times == (TimeDescription(0, 0),)
    assert "z=" not in text
