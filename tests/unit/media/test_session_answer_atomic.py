"""MediaSession.answer_from is all or nothing: an answer that raises half way (a step of ours
that fails, after the checks that refuse a peer's SDP) leaves the relay's addresses, payload
type renumbering, DTMF plan and the SDP last sent on the offerer's leg as the answer before
it left them: a fork's refused 183 is ignored and the call goes on with the early media it
had (CallRinging). A real relay binds its ports on 127.0.0.1 in RANGE; no packet is sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.core.config import PortRange
from gateway.core.media import session as session_module
from gateway.core.media.session import MediaSession
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from tests.port_blocks import ModuleBlock
from tests.unit.media import session_env
from tests.unit.media.session_env import stream_of

RANGE = ModuleBlock(100, parse=PortRange.parse)

CODECS = {
    "0": "a=rtpmap:0 PCMU/8000",
    "96": "a=rtpmap:96 telephone-event/8000",
    "101": "a=rtpmap:101 telephone-event/8000",
}


def sdp(port: int, formats: tuple[str, ...]) -> SessionDescription:
    text = [
        "v=0",
        "o=- 7 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(formats)}",
        *(CODECS[f] for f in formats),
        "",
    ]
    return parse_sdp_untrusted("\r\n".join(text).encode())


@pytest.fixture
def session() -> Iterator[MediaSession]:
    with session_env.closed_after(RANGE.get(), dtmf_interworking=True) as session:
        yield session


def _raising(*args: object, **kwargs: object) -> None:
    raise RuntimeError("our bug")


@pytest.mark.parametrize("step", ["_plan_dtmf", "_rewritten_media", "_dtmf_answer"])
def test_an_answer_failing_half_way_changes_nothing(
    session: MediaSession, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """A first fork's 183 keyed the early media; another fork's answer (another address,
    telephone-event at another number, so renumbered, or none, so a DTMF plan) fails at a step
    after the peer's SDP was checked. Before session 45 the relay already pointed at the second
    fork and had its renumbering and DTMF plan when the step raised."""
    session.offer_from("a", sdp(20000, ("0", "101")))
    first = session.answer_from("b", sdp(30000, ("0", "101")))
    stream = stream_of(session)
    renumbered = (dict(stream.a_to_b.payload_types), dict(stream.b_to_a.payload_types))
    second = sdp(30010, ("0", "96") if step == "_rewritten_media" else ("0",))
    target = MediaSession if step == "_plan_dtmf" else session_module
    with monkeypatch.context() as patched:
        patched.setattr(target, step, _raising)
        with pytest.raises(RuntimeError):
            session.answer_from("b", second)
    assert stream.b.rtp_destination == ("127.0.0.1", 30000)
    assert (dict(stream.a_to_b.payload_types), dict(stream.b_to_a.payload_types)) == renumbered
    assert session.dtmf is None and stream.a_to_b.dtmf is None
    assert session.last_sent("a") == first
    # The answer taken after it (the second fork's 200) applies as ever.
    session.answer_from("b", second)
    assert stream.b.rtp_destination == ("127.0.0.1", 30010)
    session.settle()
