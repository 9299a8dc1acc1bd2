"""The pure parts of the recording indication (RFC 7866 §6.1, §7): the record-aware option tag,
``a=recordpref`` read from SDP bytes, ``a=record`` written into our SDP."""

from __future__ import annotations

import pytest

from gateway.core.calls.leg import Leg, Side
from gateway.core.calls.recording_indication import (
    recordpref_of,
    says_record_aware,
    states_record_aware,
)
from gateway.core.cli import describe_recording_parties
from gateway.core.media.session import record_indication_of, with_record_indication
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from gateway.core.sip.message import Headers
from gateway.core.sip.transaction import State

TWO_STREAMS = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"a=record:on\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=record:paused\r\na=sendrecv\r\n"
    b"m=video 0 RTP/AVP 96\r\n"
)


def test_record_aware_is_read_from_supported_or_require_any_case() -> None:
    assert says_record_aware(Headers.of([("Supported", "timer, Record-Aware")]))
    assert says_record_aware(Headers.of([("Supported", "100rel"), ("k", "record-aware")]))
    assert says_record_aware(Headers.of([("Require", "record-aware")]))
    assert not says_record_aware(Headers.of([("Supported", "timer, siprec")]))
    assert not says_record_aware(Headers.of([]))


def test_recordpref_is_the_last_value_unknown_ones_no_preference() -> None:
    assert recordpref_of(b"v=0\r\nm=audio 1 RTP/AVP 0\r\n") is None
    assert recordpref_of(b"a=recordpref:off\r\nm=audio 1 RTP/AVP 0\r\n") == "off"
    assert recordpref_of(b"a=recordpref:on\r\na=recordpref:Pause\r\n") == "pause"
    assert recordpref_of(b"a=recordpref:\xff\xfe\r\n") == "nopreference"
    assert recordpref_of(b"a=recordpref:always\n") == "nopreference"


def test_the_indication_replaces_any_record_line_on_each_stream_in_use_only() -> None:
    sdp = parse_sdp_untrusted(TWO_STREAMS)
    told = with_record_indication(sdp, "off")
    assert told.attributes.get("record") is None  # the session level's is not ours to pass on
    assert told.media[0].attributes.get_all("record") == ("off",)
    assert told.media[0].attributes.get("sendrecv") is None  # (a flag: present, no value)
    assert "sendrecv" in told.media[0].attributes
    assert told.media[1] == sdp.media[1]  # port 0: left as it is
    assert record_indication_of(told) == "off"
    assert b"a=record:off\r\n" in serialize_sdp(told)
    assert record_indication_of(parse_sdp_untrusted(TWO_STREAMS)) == "paused"


def test_voipgw_calls_says_what_the_aware_parties_were_told_and_their_preferences() -> None:
    assert describe_recording_parties({"a": {}, "b": {}}) == ""
    security = {
        "a": {"record_aware": True},
        "b": {"recordpref": "off"},
        "recording_indication": {"a": "paused"},
    }
    assert describe_recording_parties(security) == (
        "recording-aware: caller told recording paused, callee prefers recording off"
    )


@pytest.mark.parametrize(
    ("fields", "stated"),
    [
        ([("Supported", "timer, record-aware")], True),
        ([("Supported", "timer"), ("Supported", "record-aware")], True),
        ([("Require", "record-aware")], True),
        ([("Supported", "timer")], False),
        ([("Supported", "")], False),  # RFC 3261 §20.37: empty, none supported
        ([("Require", "timer")], None),  # what it requires, not all it supports
        ([], None),
    ],
)
def test_a_later_message_states_record_aware_only_by_its_supported(
    fields: list[tuple[str, str]], stated: bool | None
) -> None:
    assert states_record_aware(Headers.of(fields)) is stated


class _Transaction:
    """A transaction's state only (Leg.exchanges reads nothing else)."""

    def __init__(self, state: State) -> None:
        self.state = state


def test_a_legs_exchanges_are_those_without_a_final_response_and_answered_ones_are_dropped() -> (
    None
):
    """RFC 3261 §17: Calling, Trying and Proceeding are before a final response; every other
    state (Completed after a failure, Accepted after a 2xx, Terminated, Given up after a CANCEL
    with no answer) ends the exchange, and the leg keeps none of them."""
    leg = Leg(Side.A, None, "udp", ("127.0.0.1", 5060), None)  # type: ignore[arg-type]
    ours, theirs = _Transaction(State.CALLING), _Transaction(State.TRYING)
    leg.exchange_started(ours)  # type: ignore[arg-type]
    leg.exchange_started(theirs)  # type: ignore[arg-type]
    assert leg.exchanges_in_progress() == (ours, theirs)
    ours.state = State.PROCEEDING
    assert leg.exchanges_in_progress() == (ours, theirs)
    for ended in (State.COMPLETED, State.ACCEPTED, State.TERMINATED, State.GIVEN_UP):
        ours.state = ended
        assert leg.exchanges_in_progress() == (theirs,), ended
        assert leg.exchanges == (theirs,)  # dropped, not kept for ever
        ours = _Transaction(State.CALLING)
        leg.exchange_started(ours)  # type: ignore[arg-type]
        assert leg.exchanges == (theirs, ours)
    theirs.state = ours.state = State.COMPLETED
    assert leg.exchanges_in_progress() == ()
    assert leg.exchanges == ()
