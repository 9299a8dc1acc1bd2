"""DTMF digits in the log (gateway/core/media/session.py, docs/operations.md): a digit pressed in
a call may be a card number's or a PIN's (PCI DSS requirement 3.3: sensitive authentication
data is not kept after authorisation, and a log is kept), so the INFO lines about an event
(``dtmf-event-ended-by-change``, the timeout line) say ``withheld`` in its place unless
``[gateway] log_dtmf_digits`` asks for digits. Each line keeps its name and fields. A real
relay binds its ports on 127.0.0.1 in RANGE; no packet is sent. Float time: the session's
clock is a list the test moves."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from gateway.core.config import GatewaySection, PortRange
from gateway.core.media.dtmf import event_payload
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import MediaRelay
from gateway.core.media.session import MediaSession
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from tests.port_blocks import ModuleBlock
from tests.unit.media.session_env import stream_of

RANGE = ModuleBlock(100, parse=PortRange.parse)
# RTP header (RFC 3550 §5.1): V=2, PT 101, sequence 1, timestamp 1000, SSRC 0xaa.
EVENT_HEADER = bytes.fromhex("80650001000003e8000000aa")
CHANGED = "m= line 1: DTMF event {} from leg a ended as its interworking changed"
TIMED_OUT = "m= line 1: DTMF event {} from leg a ended by timeout (end packets lost)"


def sdp(port: int, formats: str, *, version: int = 1) -> SessionDescription:
    lines = [
        "v=0",
        f"o=- 7 {version} IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP {formats}",
        "a=rtpmap:0 PCMU/8000",
        *(["a=rtpmap:101 telephone-event/8000"] if "101" in formats else []),
        "",
    ]
    return parse_sdp_untrusted("\r\n".join(lines).encode())


@pytest.fixture(params=[False, True], ids=["default", "log_dtmf_digits"])
def log_digits(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def now() -> list[float]:
    return [100.0]


@pytest.fixture
def session(log_digits: bool, now: list[float]) -> Iterator[MediaSession]:
    relay = MediaRelay(PortAllocator("127.0.0.1", RANGE.get()), clock=lambda: 0.0)
    kwargs = {"log_dtmf_digits": True} if log_digits else {}  # the default is the constructor's
    session = MediaSession(
        relay, media_address="127.0.0.1", dtmf_interworking=True, clock=lambda: now[0], **kwargs
    )
    session.offer_from("a", sdp(20000, "0 101"))
    session.answer_from("b", sdp(30000, "0"))
    session.settle()
    assert session.dtmf is not None
    yield session
    session.close()
    relay.close()


def begin_event_9(session: MediaSession, now: list[float]) -> None:
    take = stream_of(session).a_to_b.dtmf
    assert take is not None and take.on_event is not None
    take.on_event(EVENT_HEADER + event_payload(9, end=False, duration=400))
    now[0] += 0.05
    take.on_event(EVENT_HEADER + event_payload(9, end=False, duration=800))


def dtmf_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO and "DTMF event" in r.getMessage()
    ]


def test_the_digit_is_withheld_from_the_change_line_by_default(
    session: MediaSession, now: list[float], log_digits: bool, caplog: pytest.LogCaptureFixture
) -> None:
    begin_event_9(session, now)
    caplog.set_level(logging.INFO, logger="gateway")
    session.offer_from("b", sdp(30000, "0 101", version=2))  # both legs have it: the plan ends
    session.answer_from("a", sdp(20000, "0 101", version=2))
    session.settle()
    assert session.dtmf is None
    assert dtmf_lines(caplog) == [CHANGED.format("9" if log_digits else "withheld")]


def test_the_digit_is_withheld_from_the_timeout_line_by_default(
    session: MediaSession, now: list[float], log_digits: bool, caplog: pytest.LogCaptureFixture
) -> None:
    begin_event_9(session, now)
    caplog.set_level(logging.INFO, logger="gateway")
    timer = session.dtmf_timer()
    assert timer is not None
    session.dtmf_timeout(timer)  # all three end packets lost (RFC 4733 §2.5.2.2)
    assert session.dtmf_timeouts == 1
    assert dtmf_lines(caplog) == [TIMED_OUT.format("9" if log_digits else "withheld")]


def test_the_key_is_off_by_default() -> None:
    assert GatewaySection().log_dtmf_digits is False
