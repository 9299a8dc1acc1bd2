"""MediaSession.repeat_offer and answer_to_repeated_offer: a re-offer of ours on one leg that
changes nothing the session holds (a forked callee re-keyed, gateway/core/calls/fork_rekey.py;
its leg's security adds the new keys), and that leg's answer. A real relay binds its ports on
127.0.0.1 in RANGE; no packet is sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.core.config import PortRange
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.session import MediaSession
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from tests.port_blocks import ModuleBlock
from tests.unit.media import session_env
from tests.unit.media.session_env import stream_of

RANGE = ModuleBlock(100, parse=PortRange.parse)


def sdp(
    port: int, *, version: int = 1, host: str = "127.0.0.1", extra: tuple[str, ...] = ()
) -> SessionDescription:
    text = [
        "v=0",
        f"o=- 7 {version} IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        *extra,
        "",
    ]
    return parse_sdp_untrusted("\r\n".join(text).encode())


@pytest.fixture
def session() -> Iterator[MediaSession]:
    with session_env.closed_after(RANGE.get()) as session:
        yield session


def answered(session: MediaSession) -> None:
    session.offer_from("a", sdp(20000))
    session.answer_from("b", sdp(30000))
    session.settle()


def test_the_repeated_offer_is_the_last_one_sent_with_the_next_version(
    session: MediaSession,
) -> None:
    answered(session)
    sent = session.last_sent("b")
    assert sent is not None
    repeated = session.repeat_offer("b")
    assert repeated.origin == sent.origin.bumped()  # RFC 3264 §8
    assert repeated.media == sent.media
    assert session.last_sent("b") == repeated
    before_a = session.last_sent("a")
    session.answer_to_repeated_offer("b", sdp(30000, version=2))
    assert session.last_sent("a") == before_a  # the other leg hears of nothing
    assert stream_of(session).b.rtp_destination == ("127.0.0.1", 30000)
    assert session.offerer is None


def test_an_answer_that_moves_the_phone_moves_the_relay(session: MediaSession) -> None:
    answered(session)
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30010, version=2))
    assert stream_of(session).b.rtp_destination == ("127.0.0.1", 30010)
    assert stream_of(session).a.rtp_destination == ("127.0.0.1", 20000)


def test_an_answer_rejecting_the_stream_is_refused_and_changes_nothing(
    session: MediaSession,
) -> None:
    answered(session)
    session.repeat_offer("b")
    with pytest.raises(SdpError, match="rejects the stream"):
        session.answer_to_repeated_offer("b", sdp(0, version=2))
    assert stream_of(session).b.rtp_destination == ("127.0.0.1", 30000)


def test_no_repeat_while_an_offer_is_in_progress(session: MediaSession) -> None:
    answered(session)
    session.offer_from("a", sdp(20002, version=2))
    with pytest.raises(LocalMediaError, match="in progress"):
        session.repeat_offer("b")


def test_a_repeated_offer_withdrawn_leaves_the_next_version_to_the_next_sdp(
    session: MediaSession,
) -> None:
    """A re-offer that was never sent (its keys could not be made, its leg cannot be
    reached) takes no o= version: the next SDP on the leg has the one after the last sent
    (RFC 3264 §8)."""
    answered(session)
    sent = session.last_sent("b")
    assert sent is not None
    session.repeat_offer("b")
    session.withdraw_repeated_offer("b")
    assert session.last_sent("b") == sent
    session.withdraw_repeated_offer("b")  # twice: nothing more
    assert session.last_sent("b") == sent
    held = session.offer_from("a", sdp(20000, version=2, extra=("a=sendonly",)))
    assert held.origin == sent.origin.bumped()


def test_withdrawing_changes_nothing_once_the_repeated_offer_was_answered(
    session: MediaSession,
) -> None:
    answered(session)
    repeated = session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30000, version=2))
    session.withdraw_repeated_offer("b")
    assert session.last_sent("b") == repeated
