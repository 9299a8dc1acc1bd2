"""Call pickup's decision (gateway/core/calls/pickup.py) on stand-in calls: who may pick up
which ringing phone's dialog, and what every other INVITE with Replaces is answered (RFC 3891
§3); and the SDP join of two offers (offer_answer.answer_with)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from gateway.core.calls.leg import Side
from gateway.core.calls.pickup import (
    ANSWERED,
    ANY_ACCOUNT,
    NO_CALL_TO_PICK_UP,
    NO_SUCH_DIALOG,
    NOT_ALLOWED,
    dialled_pickup,
    parse_pickup_replaces_untrusted,
    ringing_call_to_pick_up,
    ringing_leg_to_pick_up,
)
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.offer_answer import answer_with
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.dialog_info import WatchRules
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.refer import Replaces


@attrs.frozen
class Tagged:
    tag: str | None


@attrs.frozen
class FakeInvite:
    call_id: str
    from_: Tagged


@attrs.frozen
class FakeResponse:
    to: Tagged


@attrs.define
class FakeDialog:
    remote_tag: str


@attrs.define(eq=False)
class FakeLeg:
    peer_name: str | None = "alice"
    peer_kind: str = "account"
    invite: Any = FakeInvite("leg-call-id", Tagged("our-tag"))
    last_provisional: Any = FakeResponse(Tagged("phone-tag"))
    finished: bool = False
    dialog: Any = None


@attrs.define
class FakeA:
    peer_name: str | None = "+15550100"
    peer_kind: str = "trunk"


@attrs.define(eq=False)
class FakeCall:
    b_legs: list[FakeLeg]
    a: FakeA = attrs.field(factory=FakeA)
    state: str = "ringing"
    b: FakeLeg | None = None
    started_at: float = 0.0


RULES = WatchRules.of(
    [(("alice", "bob", "carol"), False)], pickup=[("alice", "bob"), ("carol", "dave")]
)
REPLACES = Replaces("leg-call-id", to_tag="our-tag", from_tag="phone-tag", early_only=True)


def decide(call: FakeCall, picker: str = "bob", replaces: Replaces = REPLACES) -> object:
    return ringing_leg_to_pick_up(RULES, picker, replaces, (call, Side.B))  # type: ignore[arg-type]


def test_a_group_member_picks_up_the_ringing_phone() -> None:
    leg = FakeLeg()
    call = FakeCall([FakeLeg(invite=FakeInvite("other-fork", Tagged("t2"))), leg])
    assert decide(call) is leg
    # Without early-only too: we initiated that early dialog (RFC 3891 §3).
    assert decide(call, replaces=attrs.evolve(REPLACES, early_only=False)) is leg
    assert decide(call, picker="alice") is leg  # her own call, on another of her phones


def test_403_before_any_lookup_for_an_account_in_no_pickup_group() -> None:
    assert ringing_leg_to_pick_up(RULES, "erin", REPLACES, None) == NOT_ALLOWED
    assert decide(FakeCall([FakeLeg()]), picker="erin") == NOT_ALLOWED


@pytest.mark.parametrize(
    "change",
    [
        {"picker": "carol"},  # may watch alice, may pick up dave's calls, not alice's
        {"replaces": attrs.evolve(REPLACES, from_tag="stale")},
        {"replaces": attrs.evolve(REPLACES, to_tag="not-ours")},
        {"replaces": attrs.evolve(REPLACES, call_id="another")},
    ],
)
def test_481_for_what_the_picker_may_not_pick_up_or_what_is_not_there(
    change: dict[str, Any],
) -> None:
    assert decide(FakeCall([FakeLeg()]), **change) == NO_SUCH_DIALOG


def test_481_when_no_longer_ringing_and_486_once_answered() -> None:
    assert ringing_leg_to_pick_up(RULES, "bob", REPLACES, None) == NO_SUCH_DIALOG
    assert decide(FakeCall([FakeLeg(finished=True)])) == NO_SUCH_DIALOG  # CANCELled, refused
    assert decide(FakeCall([FakeLeg()], state="ended")) == NO_SUCH_DIALOG
    assert decide(FakeCall([FakeLeg(peer_kind="trunk")])) == NO_SUCH_DIALOG
    assert decide(FakeCall([FakeLeg(last_provisional=None)])) == NO_SUCH_DIALOG  # not ringing
    caller_is_bob = FakeCall([FakeLeg()], a=FakeA("bob", "account"))
    assert decide(caller_is_bob) == NO_SUCH_DIALOG  # its own call to alice
    answered = FakeLeg(dialog=FakeDialog("phone-tag"))
    assert decide(FakeCall([answered], state="answered", b=answered)) == ANSWERED
    elsewhere = FakeLeg()  # another phone of alice answered: this one's dialog is gone
    other = FakeLeg(invite=FakeInvite("x", Tagged("y")), dialog=FakeDialog("z"))
    assert decide(FakeCall([elsewhere, other], state="answered", b=other)) == NO_SUCH_DIALOG
    ringing_but_a_side = (FakeCall([FakeLeg()]), Side.A)
    assert ringing_leg_to_pick_up(RULES, "bob", REPLACES, ringing_but_a_side) == NO_SUCH_DIALOG  # type: ignore[arg-type]


def test_replaces_is_parsed_and_bounded() -> None:
    parsed = parse_pickup_replaces_untrusted("abc@h;to-tag=1;from-tag=2;early-only")
    assert parsed == Replaces("abc@h", "1", "2", early_only=True)
    for bad in ("abc@h", "abc@h;to-tag=1", ";to-tag=1;from-tag=2", "x;to-tag=1;from-tag=2" * 60):
        with pytest.raises(RemoteSipError) as caught:
            parse_pickup_replaces_untrusted(bad)
        assert caught.value.status == 400


CALLER_OFFER_TO_B = b"""v=0\r
o=voipgw 1 1 IN IP4 192.0.2.1\r
s=-\r
c=IN IP4 192.0.2.1\r
t=0 0\r
m=audio 20000 RTP/AVP 8 0 101\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:101 telephone-event/8000\r
a=sendrecv\r
"""
PICKER_OFFER = b"""v=0\r
o=bob 7 7 IN IP4 198.51.100.4\r
s=call\r
c=IN IP4 198.51.100.4\r
t=0 0\r
m=audio 30000 RTP/AVP 0 9 96\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:9 G722/8000\r
a=rtpmap:96 telephone-event/8000\r
m=video 30002 RTP/AVP 97\r
a=rtpmap:97 H264/90000\r
"""


def test_two_offers_are_each_answered_with_the_other() -> None:
    caller, picker = parse_sdp_untrusted(CALLER_OFFER_TO_B), parse_sdp_untrusted(PICKER_OFFER)
    # As if bob had answered the offer that went to alice's phone: his address and port,
    # the codecs both have, with that offer's payload type numbers.
    as_answer = answer_with(caller, picker)
    assert str(as_answer.connection) == "IN IP4 198.51.100.4"
    (audio,) = as_answer.media
    assert audio.port == 30000 and audio.formats == ("0", "101")
    # Bob's offer answered with the relay's side: its address, the codecs both have, bob's
    # numbers; his video line, which the call has not, rejected.
    to_picker = answer_with(picker, caller)
    assert str(to_picker.connection) == "IN IP4 192.0.2.1"
    audio, video = to_picker.media
    assert audio.port == 20000 and audio.formats == ("0", "96")
    assert video.port == 0


def test_two_offers_without_a_common_codec_are_refused() -> None:
    caller = parse_sdp_untrusted(CALLER_OFFER_TO_B.replace(b"8 0 101", b"8"))
    with pytest.raises(SdpError, match="no common codec"):
        answer_with(caller, parse_sdp_untrusted(PICKER_OFFER))


def test_a_phone_that_stopped_ringing_hands_over_to_one_that_rings() -> None:
    # Alice's softphone (named in the NOTIFY) refused, her desk phone rings on: picked there.
    refused = FakeLeg(finished=True)
    desk = FakeLeg(invite=FakeInvite("desk", Tagged("t2")))
    assert decide(FakeCall([refused, desk])) is desk
    silent = FakeLeg(invite=FakeInvite("desk", Tagged("t2")), last_provisional=None)
    assert decide(FakeCall([refused, silent])) == NO_SUCH_DIALOG  # not ringing yet
    bobs = FakeLeg(peer_name="bob", invite=FakeInvite("b", Tagged("t3")))
    assert decide(FakeCall([refused, bobs])) == NO_SUCH_DIALOG  # another account's phone


# -- dialled pickup ([feature_codes]) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "asked"),
    [
        ("*8", ANY_ACCOUNT),
        ("**alice", "alice"),
        ("**201", "201"),
        ("**", None),  # the prefix alone names nobody
        ("*82", None),  # a longer code (NANP's caller-ID unblock) is a number to route
        ("8", None),
        ("+15550100", None),
    ],
)
def test_what_a_dialled_user_part_asks_to_pick_up(user: str, asked: str | None) -> None:
    assert dialled_pickup("*8", "**", user) == asked


def test_codes_turned_off_ask_nothing() -> None:
    assert dialled_pickup("", "**", "*8") is None
    assert dialled_pickup("*8", "", "**alice") is None
    assert dialled_pickup("", "", "") is None


def pick(calls: list[FakeCall], picker: str = "bob", account: str = ANY_ACCOUNT) -> object:
    return ringing_call_to_pick_up(RULES, picker, account, calls)  # type: ignore[arg-type]


def test_the_call_that_came_in_first_of_those_the_picker_may_take() -> None:
    later = FakeCall([FakeLeg()], started_at=20.0)
    first = FakeCall([FakeLeg()], started_at=10.0)
    dave = FakeCall([FakeLeg(peer_name="dave")], started_at=5.0)  # not bob's to take
    assert pick([later, dave, first]) == (first, first.b_legs[0])
    assert pick([later, dave, first], account="alice") == (first, first.b_legs[0])
    assert pick([later, dave, first], picker="carol") == (dave, dave.b_legs[0])


def test_the_ringing_leg_of_the_account_named_is_taken() -> None:
    to_bob = FakeLeg(peer_name="bob")
    to_alice = FakeLeg()
    call = FakeCall([to_bob, to_alice])
    assert pick([call], account="alice") == (call, to_alice)
    assert pick([call], picker="alice", account="bob") == (call, to_bob)


@pytest.mark.parametrize(
    "call",
    [
        FakeCall([FakeLeg()], state="answered"),
        FakeCall([FakeLeg()], b=FakeLeg()),
        FakeCall([FakeLeg(last_provisional=None)]),  # not ringing yet
        FakeCall([FakeLeg(finished=True)]),  # its user refused it
        FakeCall([FakeLeg(invite=None)]),
        FakeCall([FakeLeg(peer_kind="trunk")]),
        FakeCall([FakeLeg()], a=FakeA(peer_name="bob", peer_kind="account")),  # bob's own call
    ],
)
def test_480_when_nothing_the_picker_may_take_rings(call: FakeCall) -> None:
    assert pick([call]) == NO_CALL_TO_PICK_UP


def test_480_for_an_account_ringing_that_the_picker_may_not_pick_up_from() -> None:
    # Not told apart from nothing ringing: nothing is learnt about other accounts' calls.
    assert pick([FakeCall([FakeLeg(peer_name="dave")])], account="dave") == NO_CALL_TO_PICK_UP
    assert pick([], account="nobody") == NO_CALL_TO_PICK_UP


def test_403_for_a_picker_in_no_group_with_pickup() -> None:
    assert pick([FakeCall([FakeLeg()])], picker="erin") == NOT_ALLOWED
