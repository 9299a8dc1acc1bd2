"""MediaSession.repeat_offer and answer_to_repeated_offer: a re-offer of ours on one leg that
changes nothing the session holds (a forked callee re-keyed, gateway/core/calls/fork_rekey.py;
its leg's security adds the new keys), and that leg's answer; withdraw_repeated_offer and
withdraw_offer for offers that never went. A real relay binds its ports on 127.0.0.1 in RANGE;
no packet is sent."""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import pytest

from gateway.core.config import PortRange
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.session import DtmfPlan, MediaSession
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from tests.port_blocks import ModuleBlock
from tests.unit.media import session_env
from tests.unit.media.session_env import stream_of

RANGE = ModuleBlock(100, parse=PortRange.parse)


CODECS = {
    "0": "a=rtpmap:0 PCMU/8000",
    "8": "a=rtpmap:8 PCMA/8000",
    "9": "a=rtpmap:9 G722/8000",
    "97": "a=rtpmap:97 red/8000\r\na=fmtp:97 0/0",
    "98": "a=rtpmap:98 opus/48000/2",
    "111": "a=rtpmap:111 opus/48000/2",
    "96": "a=rtpmap:96 telephone-event/8000",
    "100": "a=rtpmap:100 telephone-event/8000",
    "101": "a=rtpmap:101 telephone-event/8000",
}


def sdp(
    port: int,
    *,
    version: int = 1,
    host: str = "127.0.0.1",
    extra: tuple[str, ...] = (),
    formats: tuple[str, ...] = ("0",),
) -> SessionDescription:
    text = [
        "v=0",
        f"o=- 7 {version} IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(formats)}",
        *(CODECS[f] for f in formats),
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


def test_a_repeated_offer_refused_can_no_longer_be_withdrawn(session: MediaSession) -> None:
    """Sent and refused (RFC 3261 §14.1), the re-offer took its o= version on the wire: a
    later withdrawal gives nothing back, and the next SDP has the version after it (RFC 3264
    §8)."""
    answered(session)
    repeated = session.repeat_offer("b")
    session.repeated_offer_refused("b")
    session.withdraw_repeated_offer("b")
    assert session.last_sent("b") == repeated
    held = session.offer_from("a", sdp(20000, version=2, extra=("a=sendonly",)))
    assert held.origin == repeated.origin.bumped()


def consultations_sdp(session: MediaSession) -> SessionDescription:
    """What another call (a consultation) last sent in the dialog of a carrier's leg that this
    call takes over on side B: its own o= line (another session id), a later version, its
    own relay port."""
    ours = session.last_sent("b")
    assert ours is not None
    return attrs.evolve(
        ours,
        origin=attrs.evolve(ours.origin, session_id=ours.origin.session_id + 1, session_version=41),
        media=tuple(attrs.evolve(m, port=m.port + 100) for m in ours.media),
    )


def test_a_repeated_offer_in_a_joined_dialog_goes_on_from_the_sdp_sent_there(
    session: MediaSession,
) -> None:
    """``dialog_sent``: the offer goes in the carrier's dialog, where the consultation call's
    SDP was the last of ours: its o= line, one version on (RFC 3264 §8), the call's media."""
    answered(session)
    sent = session.last_sent("b")
    consultation = consultations_sdp(session)
    assert sent is not None
    repeated = session.repeat_offer("b", dialog_sent=consultation)
    assert repeated.origin == consultation.origin.bumped()
    assert repeated.media == sent.media
    session.answer_to_repeated_offer("b", sdp(30010, version=2))
    held = session.offer_from("a", sdp(20000, version=2, extra=("a=sendonly",)))
    assert held.origin == repeated.origin.bumped()  # that dialog's SDP from then on


def test_a_repeated_offer_refused_in_a_joined_dialog_leaves_the_legs_own_version(
    session: MediaSession,
) -> None:
    """Refused there, the offer took a version of the carrier's dialog only: the next SDP on
    side B (the transferor's dialog, the transfer failed) goes on from the last one sent in
    it, its own o= line, one version on. Withdrawn, likewise."""
    answered(session)
    sent = session.last_sent("b")
    assert sent is not None
    session.repeat_offer("b", dialog_sent=consultations_sdp(session))
    session.repeated_offer_refused("b")
    assert session.last_sent("b") == sent
    session.repeat_offer("b", dialog_sent=consultations_sdp(session))
    session.withdraw_repeated_offer("b")
    assert session.last_sent("b") == sent
    held = session.offer_from("a", sdp(20000, version=2, extra=("a=sendonly",)))
    assert held.origin == sent.origin.bumped()


def with_video_line(sdp_: SessionDescription, port: int) -> SessionDescription:
    """``sdp_`` with a second m= line, video (the consultation call's, or its answer)."""
    video = parse_sdp_untrusted(
        (
            "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=video {port} RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"
        ).encode()
    ).media
    return attrs.evolve(sdp_, media=sdp_.media + video)


def test_a_repeated_offer_in_a_joined_dialog_keeps_that_dialogs_extra_lines(
    session: MediaSession,
) -> None:
    """The consultation call's SDP in the carrier's dialog had a video line this audio call
    lacks: our offer there keeps it, at port 0 (RFC 3264 §8: no fewer m= lines than the
    previous SDP in that dialog; §8.2: a removed stream keeps its line and media type), the
    carrier's answer rejecting it is taken, and the call's later offers there keep it too."""
    answered(session)
    consultation = with_video_line(consultations_sdp(session), 30102)
    repeated = session.repeat_offer("b", dialog_sent=consultation)
    assert [(m.media, m.port == 0) for m in repeated.media] == [("audio", False), ("video", True)]
    assert repeated.media[1].formats == ("96",)
    answer = with_video_line(sdp(30010, version=2), 0)
    session.answer_to_repeated_offer("b", answer)
    held = session.offer_from("a", sdp(20000, version=2, extra=("a=sendonly",)))
    assert [(m.media, m.port == 0) for m in held.media] == [("audio", False), ("video", True)]
    # The carrier's own offers there need both lines as well (RFC 3264 §8).
    session.answer_from("b", with_video_line(sdp(30010, version=3, extra=("a=recvonly",)), 0))
    session.settle()
    with pytest.raises(SdpError, match="2"):
        session.offer_from("b", sdp(30010, version=4))


def test_the_extra_lines_of_a_joined_dialog_go_when_the_offer_there_is_refused(
    session: MediaSession,
) -> None:
    """Refused or withdrawn, the offer in the carrier's dialog leaves the call as it was: the
    transferor's dialog still gets offers of the call's one line."""
    answered(session)
    for take_back in (session.repeated_offer_refused, session.withdraw_repeated_offer):
        consultation = with_video_line(consultations_sdp(session), 30102)
        assert len(session.repeat_offer("b", dialog_sent=consultation).media) == 2
        take_back("b")
        held = session.offer_from("a", sdp(20000, version=2, extra=("a=sendonly",)))
        assert len(held.media) == 1
        session.answer_from("b", sdp(30000, version=2, extra=("a=recvonly",)))
        session.settle()


def test_an_answer_in_a_joined_dialog_goes_on_from_the_sdp_sent_there(
    session: MediaSession,
) -> None:
    """A joined carrier's 2xx offers (``new_dialog`` with ``dialog_sent``): our answer to it
    has the o= line of the consultation call's SDP in that dialog, one version on; a second
    answer to the same offer goes on from the first."""
    answered(session)
    consultation = consultations_sdp(session)
    with pytest.raises(LocalMediaError, match="new_dialog"):
        session.offer_from("b", sdp(30020), dialog_sent=consultation)
    session.offer_from("b", sdp(30020), new_dialog=True, dialog_sent=consultation)
    answer = session.answer_from("a", sdp(20000, version=2))
    assert answer.origin == consultation.origin.bumped()
    again = session.answer_from("a", sdp(20000, version=3, extra=("a=sendonly",)))
    assert again.origin == answer.origin.bumped()


def answered_with(
    session: MediaSession,
    formats: tuple[str, ...],
    *,
    offered: tuple[str, ...] = ("0", "8", "101"),
) -> None:
    """A offers ``offered`` (PCMU, PCMA and telephone-event 101); B answers ``formats``."""
    session.offer_from("a", sdp(20000, formats=offered))
    session.answer_from("b", sdp(30000, formats=formats))
    session.settle()


@pytest.mark.parametrize(
    ("before", "after", "said"),
    [
        (
            ("0", "101"),
            ("8", "101"),
            "(0 PCMU/8000, 101 telephone-event/8000 -> 8 PCMA/8000, 101 telephone-event/8000),"
            " which the other leg did not agree to (the codec in use, 0 PCMU/8000, left out)",
        ),
        (("0", "8", "101"), ("8", "101"), "(the codec in use, 0 PCMU/8000, left out)"),
        (("8", "0", "101"), ("0",), "(the codec in use, 8 PCMA/8000, left out)"),
        (("101", "0", "8"), ("101", "8"), "(the codec in use, 0 PCMU/8000, left out)"),
    ],
)
def test_an_answer_changing_the_codecs_in_use_is_refused_and_changes_nothing(
    session: MediaSession, before: tuple[str, ...], after: tuple[str, ...], said: str
) -> None:
    """A re-key re-offer changes keys only: the caller's leg, and the relay's renumbering,
    transcoding and DTMF plan, agreed on the codecs the phone's answer in force gave. The
    codec in use (the first of the phone's SDP in force that is not telephone-event or CN:
    the caller sends it, RFC 3264 §7) left out, or a payload type given another codec, would
    need a new exchange on both legs: refused (the call ends, as for an answer rejecting the
    stream). Before session 42 only the addresses and keys were taken, and the relay went on
    as for the old codecs. A codec added that the caller takes is taken since session 45."""
    answered_with(session, before)
    session.repeat_offer("b")
    with pytest.raises(SdpError, match="changes the stream's codecs") as refused:
        session.answer_to_repeated_offer("b", sdp(30010, version=2, formats=after))
    assert said in refused.value.reason
    assert stream_of(session).b.rtp_destination == ("127.0.0.1", 30000)
    assert session.last_sent("b") is not None


def test_a_payload_type_given_another_codec_is_refused(session: MediaSession) -> None:
    answered_with(session, ("0", "8", "101"))
    session.repeat_offer("b")
    text = serialize_sdp(sdp(30010, version=2, formats=("0", "101")))
    other = parse_sdp_untrusted(text.replace(b"101 telephone-event/8000", b"101 G722/8000"))
    with pytest.raises(SdpError, match=r"\(payload type 101 given another codec\)"):
        session.answer_to_repeated_offer("b", other)
    assert stream_of(session).b.rtp_destination == ("127.0.0.1", 30000)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (("0", "8", "101"), ("0", "101")),  # the codec in use only, with telephone-event
        (("0", "8", "101"), ("0",)),  # the codec in use only
        (("8", "0", "101"), ("8", "101")),
        (("0", "8", "101"), ("0", "8")),  # telephone-event dropped
    ],
)
def test_an_answer_narrowed_to_keep_the_codec_in_use_is_taken(
    session: MediaSession, before: tuple[str, ...], after: tuple[str, ...]
) -> None:
    """RFC 3264 §6.1 lets an answer list any subset of the offer's formats, and phones answer
    a re-INVITE with only the codec they use, or without telephone-event: the caller still
    sends the codec in use, which the phone still takes with its number, so the call goes on
    (FreeSWITCH and Asterisk carry on too). Session 42 ended such calls (cause 488)."""
    answered_with(session, before)
    renumbered = {
        d: dict(getattr(stream_of(session), d).payload_types) for d in ("a_to_b", "b_to_a")
    }
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30010, version=2, formats=after))
    assert stream_of(session).b.rtp_destination == ("127.0.0.1", 30010)
    for direction, table in renumbered.items():
        assert getattr(stream_of(session), direction).payload_types == table
    # The narrowed SDP is the one in force: the next re-key's answer is judged against it
    # (what it left out, listed again, is a codec added, which the caller takes: taken).
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30010, version=3, formats=before))


@pytest.mark.parametrize(
    ("after", "refused"),
    [
        (("97", "0"), None),  # PCMA and telephone-event left out
        (("97", "0", "8", "101"), None),
        (("97", "8", "101"), "(the codec in use, 0 PCMU/8000, left out)"),
        (("0", "8", "101"), "(the codec in use, 97 red/8000, left out)"),
    ],
)
def test_red_listed_before_the_codec_in_use_is_part_of_it(
    session: MediaSession, after: tuple[str, ...], refused: str | None
) -> None:
    """The phone's SDP in force lists RED (RFC 2198) first, wrapping PCMU: the caller sends
    RED packets carrying PCMU (RFC 3264 §7). An answer to our re-key keeping both may leave
    out the rest; one leaving out PCMU (RED alone carries nothing the phone could decode) or
    RED (the phone would drop every packet the caller sends) is refused."""
    formats = ("97", "0", "8", "101")
    answered_with(session, formats, offered=formats)
    session.repeat_offer("b")
    answer = sdp(30010, version=2, formats=after)
    if refused is None:
        session.answer_to_repeated_offer("b", answer)
        assert stream_of(session).b.rtp_destination == ("127.0.0.1", 30010)
        return
    with pytest.raises(SdpError, match="changes the stream's codecs") as error:
        session.answer_to_repeated_offer("b", answer)
    assert refused in error.value.reason
    assert stream_of(session).b.rtp_destination == ("127.0.0.1", 30000)


def test_telephone_event_listed_first_is_not_the_codec_in_use(session: MediaSession) -> None:
    """A phone that lists telephone-event first still takes PCMU from the caller (RFC 4733
    events are not the stream's media): an answer to our re-key without telephone-event keeps
    the codec in use and is taken."""
    answered_with(session, ("101", "0", "8"))
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30010, version=2, formats=("0", "8")))
    assert stream_of(session).b.rtp_destination == ("127.0.0.1", 30010)


@pytest.mark.parametrize(
    ("after", "refused"),
    [
        (("98", "101"), None),  # the codec in use only, under the phone's own number
        (("98", "0", "101"), None),
        (("0", "101"), "(the codec in use, 98 opus/48000/2, left out)"),
        (("111", "0", "101"), "(the codec in use, 98 opus/48000/2, left out)"),
    ],
)
def test_the_codec_in_use_under_a_number_the_phone_gave_it(
    session: MediaSession, after: tuple[str, ...], refused: str | None
) -> None:
    """We offered Opus at 111; the phone answered it at 98 (RFC 3264 §6.1 asks it to keep the
    offer's number, SHOULD), and the relay renumbers 111 <-> 98. Opus is the codec in use
    under the phone's number: an answer to our re-key keeping it at 98 is taken, one leaving
    it out (the caller goes on sending Opus, which the phone would drop), or moving it to
    another number (the relay sends 98), is refused. Before, a format the offer lacked by
    number was not looked at: Opus left out was taken, Opus alone refused (PCMU "in use")."""
    answered_with(session, ("98", "0", "101"), offered=("111", "0", "101"))
    assert dict(stream_of(session).a_to_b.payload_types) == {111: 98}
    session.repeat_offer("b")
    answer = sdp(30010, version=2, formats=after)
    if refused is None:
        session.answer_to_repeated_offer("b", answer)
        assert stream_of(session).b.rtp_destination == ("127.0.0.1", 30010)
        assert dict(stream_of(session).a_to_b.payload_types) == {111: 98}
        return
    with pytest.raises(SdpError, match="changes the stream's codecs") as error:
        session.answer_to_repeated_offer("b", answer)
    assert refused in error.value.reason
    assert stream_of(session).b.rtp_destination == ("127.0.0.1", 30000)


def test_an_answer_with_the_same_codecs_in_another_order_or_fmtp_is_taken(
    session: MediaSession,
) -> None:
    answered_with(session, ("0", "8", "101"))
    session.repeat_offer("b")
    reordered = sdp(30010, version=2, formats=("8", "101", "0"), extra=("a=fmtp:101 0-15",))
    session.answer_to_repeated_offer("b", reordered)
    assert stream_of(session).b.rtp_destination == ("127.0.0.1", 30010)
    # Its SDP is the one in force now: the next re-key's answer is judged against it.
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30010, version=3, formats=("0", "8", "101")))


def test_a_codec_the_offer_lacks_is_not_a_change(session: MediaSession) -> None:
    """The phone's SDP in force was its own offer (its re-INVITE, which we answered with
    fewer codecs): what it listed beyond our answer, and so beyond our repeated offer, does
    not count (RFC 3264 §6.1: it sends only what both listed)."""
    answered(session)
    session.offer_from("b", sdp(30000, version=2, formats=("0", "8")))
    session.answer_from("a", sdp(20000, version=2))  # PCMU only
    session.settle()
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30000, version=3))


def test_a_relayed_offer_withdrawn_leaves_the_next_version_to_the_next_sdp(
    session: MediaSession,
) -> None:
    """A relayed offer never sent to the other leg (refused by that leg's security, or the
    leg cannot be reached: reinvites.py, transferring.py) takes no o= version there (RFC 3264
    §8); one that has an answer was sent, and keeps its version even if given up."""
    answered(session)
    sent = session.last_sent("b")
    assert sent is not None
    session.offer_from("a", sdp(20000, version=2, extra=("a=sendonly",)))
    session.withdraw_offer()
    assert session.last_sent("b") == sent
    assert session.offerer is None
    session.withdraw_offer()  # nothing in progress: nothing more
    held = session.offer_from("a", sdp(20000, version=3, extra=("a=inactive",)))
    assert held.origin == sent.origin.bumped()
    session.answer_from("b", sdp(30000, version=2, extra=("a=inactive",)))
    session.withdraw_offer()
    assert session.last_sent("b") == held


@pytest.fixture
def interworking() -> Iterator[MediaSession]:
    with session_env.closed_after(RANGE.get(), dtmf_interworking=True) as session:
        yield session


def test_telephone_event_left_out_makes_the_phone_the_info_leg(
    interworking: MediaSession,
) -> None:
    """Both legs had telephone-event (relayed as it comes); the phone's answer to our re-key
    leaves it out: from then on the caller's events go to it as SIP INFO, and its INFO to
    the caller as events, as for a phone that never had it at the first answer (FreeSWITCH
    likewise turns a leg whose answer has no telephone-event to INFO). Before: the call
    ended (session 42), or the events went on to a phone that had said it takes none."""
    session = interworking
    answered_with(session, ("0", "8", "101"))
    assert session.dtmf is None
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30000, version=2, formats=("0",)))
    assert session.dtmf == DtmfPlan(0, "a", "b", 101, 8000)
    stream = stream_of(session)
    taking = stream.a_to_b.dtmf
    assert taking is not None and taking.take_payload_type == 101
    injecting = stream.b_to_a.dtmf
    assert injecting is not None and injecting.inject_payload_type == 101


def test_telephone_event_the_phone_had_renumbered_left_out_makes_it_the_info_leg(
    interworking: MediaSession,
) -> None:
    """The phone answered our telephone-event 101 at 100 (the relay renumbers the caller's
    events); its answer to our re-key leaves it out: the caller's events go to it as SIP INFO
    from then on, as when it kept our number. Before, its telephone-event at 100 was not
    counted as one it had (100 is not in our offer), and the caller's events went on to a
    phone that had said it takes none."""
    session = interworking
    answered_with(session, ("0", "100"), offered=("0", "101"))
    assert session.dtmf is None
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30000, version=2, formats=("0",)))
    assert session.dtmf == DtmfPlan(0, "a", "b", 101, 8000)


@pytest.mark.parametrize(("answered", "red"), [(("97", "0", "101"), (97,)), (("0", "101"), ())])
def test_the_callers_events_inside_red_are_taken_only_where_red_was_agreed(
    interworking: MediaSession, answered: tuple[str, ...], red: tuple[int, ...]
) -> None:
    """The caller offered RED; the phone's answer to our re-key leaves out telephone-event.
    The caller's events are taken out of RED packets too (RFC 4733 §2.5.1.5) when the phone
    had taken RED, which our answer to the caller then kept (RFC 3264 §6.1); not when it had
    not: the caller sends no RED then."""
    session = interworking
    answered_with(session, answered, offered=("97", "0", "101"))
    session.repeat_offer("b")
    narrowed = tuple(f for f in answered if f != "101")
    session.answer_to_repeated_offer("b", sdp(30000, version=2, formats=narrowed))
    assert session.dtmf == DtmfPlan(0, "a", "b", 101, 8000, red)


def test_telephone_event_kept_changes_no_dtmf(interworking: MediaSession) -> None:
    session = interworking
    answered_with(session, ("0", "8", "101"))
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30000, version=2, formats=("0", "101")))
    assert session.dtmf is None


def test_the_added_telephone_event_left_out_ends_the_interworking(
    interworking: MediaSession,
) -> None:
    """The caller does DTMF by INFO (declared): we offered the phone a telephone-event it
    took, so the caller's INFO went to it as events. Its answer to our re-key leaves it out:
    no interworking (the caller's INFO are relayed as INFO, as when the phone declines it at
    the first answer)."""
    session = interworking
    session.offer_from("a", sdp(20000, formats=("0", "8")), dtmf_info=True)
    session.answer_from("b", sdp(30000, formats=("0", "101")))
    session.settle()
    assert session.dtmf == DtmfPlan(0, "b", "a", 101, 8000)
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30000, version=2, formats=("0",)))
    assert session.dtmf is None
    assert stream_of(session).a_to_b.dtmf is None
    assert stream_of(session).b_to_a.dtmf is None


def test_a_phone_already_the_info_leg_stays_so(interworking: MediaSession) -> None:
    session = interworking
    answered_with(session, ("0", "8"))
    plan = session.dtmf
    assert plan == DtmfPlan(0, "a", "b", 101, 8000)
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30000, version=2, formats=("0",)))
    assert session.dtmf == plan


def test_a_refused_answer_changes_no_dtmf(interworking: MediaSession) -> None:
    session = interworking
    answered_with(session, ("0", "8", "101"))
    session.repeat_offer("b")
    with pytest.raises(SdpError, match="the codec in use"):
        session.answer_to_repeated_offer("b", sdp(30000, version=2, formats=("8",)))
    assert session.dtmf is None
    assert stream_of(session).a_to_b.dtmf is None


@pytest.fixture
def transcoding() -> Iterator[MediaSession]:
    with session_env.closed_after(RANGE.get(), g711_transcoding=True) as session:
        yield session


def test_the_transcoded_law_left_out_behind_the_codec_in_use_is_taken(
    transcoding: MediaSession,
) -> None:
    """The caller offered PCMU and G.722, we added PCMA; the phone answered G.722 first and
    PCMA (not PCMU): the stream transcodes PCMU <-> PCMA, though G.722 is in use. Its answer
    to our re-key leaves PCMA out: taken, and the transcoding stays as both legs agreed it
    (it converts only PCMU from the caller, who is not sending it)."""
    session = transcoding
    session.offer_from("a", sdp(20000, formats=("0", "9", "101")))
    session.answer_from("b", sdp(30000, formats=("9", "8", "101")))
    session.settle()
    plan = session.transcoding
    assert plan is not None
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30000, version=2, formats=("9", "101")))
    assert session.transcoding == plan
    assert stream_of(session).a_to_b.transcoding == plan.a_to_b


def test_the_transcoded_law_in_use_left_out_is_refused(transcoding: MediaSession) -> None:
    session = transcoding
    session.offer_from("a", sdp(20000, formats=("0", "9", "101")))
    session.answer_from("b", sdp(30000, formats=("8", "9", "101")))
    session.settle()
    plan = session.transcoding
    assert plan is not None
    session.repeat_offer("b")
    with pytest.raises(SdpError, match=r"the codec in use, 8 PCMA/8000, left out"):
        session.answer_to_repeated_offer("b", sdp(30000, version=2, formats=("9", "101")))
    assert session.transcoding == plan


def test_a_codec_added_that_the_caller_takes_is_taken(
    session: MediaSession, caplog: pytest.LogCaptureFixture
) -> None:
    """The phone answered the caller's PCMU, PCMA and telephone-event with PCMU and
    telephone-event; its answer to our re-key adds PCMA (RFC 3264 §6.1: an answer may list any
    of the offer's formats; §8.3.2: a re-offer's answer may change the set). The caller listed
    PCMA in its own SDP, so it takes PCMA should the phone send it: taken (INFO line), where
    session 42 and 43 ended the call (ACK, BYE cause 488)."""
    answered_with(session, ("0", "101"))
    session.repeat_offer("b")
    with caplog.at_level("INFO", logger="gateway.core.media.session"):
        session.answer_to_repeated_offer("b", sdp(30010, version=2, formats=("0", "8", "101")))
    assert stream_of(session).b.rtp_destination == ("127.0.0.1", 30010)
    assert (
        "m= line 1: the answer to our re-key re-offer on leg b adds 8 PCMA/8000, which leg a "
        "takes too: taken (the other leg's codecs stay as agreed)"
    ) in caplog.messages
    # Its SDP is the one in force now: PCMA left out again is a narrowing, taken.
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30010, version=3, formats=("0", "101")))


def test_a_codec_added_under_the_phones_own_number_is_renumbered(session: MediaSession) -> None:
    """The caller offered Opus at 111; the phone had answered PCMU only, and its answer to our
    re-key adds Opus at 98 (its own number, RFC 3264 §6.1 SHOULD keep ours): the phone sends
    Opus as 98, the caller takes it as 111 (RFC 3264 §5.1), so the relay renumbers both ways."""
    answered_with(session, ("0", "101"), offered=("111", "0", "101"))
    assert dict(stream_of(session).b_to_a.payload_types) == {}
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30000, version=2, formats=("0", "98", "101")))
    assert dict(stream_of(session).b_to_a.payload_types) == {98: 111}
    assert dict(stream_of(session).a_to_b.payload_types) == {111: 98}


def test_the_law_added_for_transcoding_added_by_the_phone_is_refused(
    transcoding: MediaSession,
) -> None:
    """The caller offered PCMU only; we added PCMA for transcoding and the phone answered
    PCMU (nothing transcoded). Its answer to our re-key adds PCMA: the phone may send PCMA
    (RFC 3264 §6.1), which the caller never listed and the relay does not convert on an
    untranscoded stream: refused, saying so (the call ends, as before session 45)."""
    session = transcoding
    session.offer_from("a", sdp(20000, formats=("0", "101")))
    session.answer_from("b", sdp(30000, formats=("0", "101")))
    session.settle()
    assert session.transcoding is None
    session.repeat_offer("b")
    with pytest.raises(SdpError, match=r"8 PCMA/8000 added, which the other leg does not take"):
        session.answer_to_repeated_offer("b", sdp(30010, version=2, formats=("0", "8", "101")))
    assert stream_of(session).b.rtp_destination == ("127.0.0.1", 30000)


def test_telephone_event_added_for_an_info_caller_starts_the_interworking(
    interworking: MediaSession,
) -> None:
    """The caller does DTMF by INFO (declared): we offered the phone telephone-event, which
    its first answer declined (the caller's INFO relayed as INFO). Its answer to our re-key
    adds it: the phone becomes the RFC 4733 leg of the caller's digits, as if its first answer
    had taken it (its events go to the caller as INFO, the caller's INFO to it as events)."""
    session = interworking
    session.offer_from("a", sdp(20000, formats=("0", "8")), dtmf_info=True)
    session.answer_from("b", sdp(30000, formats=("0",)))
    session.settle()
    assert session.dtmf is None
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30000, version=2, formats=("0", "101")))
    assert session.dtmf == DtmfPlan(0, "b", "a", 101, 8000)
    taking = stream_of(session).b_to_a.dtmf
    assert taking is not None and taking.take_payload_type == 101


def test_telephone_event_added_by_the_info_phone_ends_the_interworking(
    interworking: MediaSession,
) -> None:
    """The phone had answered without telephone-event (the caller's events went to it as
    INFO); its answer to our re-key adds it: both legs have it, events relayed as they come."""
    session = interworking
    answered_with(session, ("0", "8"))
    assert session.dtmf == DtmfPlan(0, "a", "b", 101, 8000)
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30000, version=2, formats=("0", "101")))
    assert session.dtmf is None
    assert stream_of(session).a_to_b.dtmf is None


def test_telephone_event_under_a_number_our_offer_gave_opus_is_refused(
    interworking: MediaSession,
) -> None:
    """Our re-key re-offer lists PCMU and Opus at 98 and no telephone-event (the caller has
    none and does not do INFO). The phone's answer lists 98 as telephone-event: not a format
    of our offer (RFC 3264 §6.1: an answer lists the offer's formats, a number keeping its
    codec). Session 45 took it (a payload type of the offer, and on the DTMF line every
    telephone-event of the answer counted as one the caller takes), making the phone the RFC
    4733 leg under Opus's number; refused now, saying so, the session as it was."""
    session = interworking
    session.offer_from("a", sdp(20000, formats=("0", "98")))
    session.answer_from("b", sdp(30000, formats=("0",)))
    session.settle()
    offered = session.repeat_offer("b")
    assert [m.payload_types for m in offered.media] == [(0, 98)]
    assert session.dtmf is None
    answer = sdp(30000, version=2, formats=("0", "98"))
    text = serialize_sdp(answer).decode().replace("98 opus/48000/2", "98 telephone-event/8000")
    with pytest.raises(SdpError, match=r"98 telephone-event/8000 added, which our offer did not"):
        session.answer_to_repeated_offer("b", parse_sdp_untrusted(text.encode()))
    assert session.dtmf is None


def test_a_repeated_offer_can_list_only_the_codec_in_use(session: MediaSession) -> None:
    """``keep_codec_in_use`` (a joined carrier's offer): each relayed line lists only the codec
    the leg's SDP in force uses, so an answer cannot pick another; without it, as sent."""
    session.offer_from("a", sdp(20000, formats=("0", "8")))
    session.answer_from("b", sdp(30000, formats=("8",)))
    session.settle()
    narrowed = session.repeat_offer("b", keep_codec_in_use=True)
    assert narrowed.media[0].formats == ("8",)
    session.withdraw_repeated_offer("b")
    assert session.repeat_offer("b").media[0].formats == ("0", "8")
