"""What a MESSAGE's sender is answered when no target accepted (calls/messages.py
best_answer), and how an account is known on a trunk (routing.account_number_on_trunk), which
calls, MESSAGEs and voicemail subscriptions share."""

from __future__ import annotations

from gateway.core.calls.messages import best_answer
from gateway.core.calls.numbering import NumberingPlan
from gateway.core.calls.routing import account_number_on_trunk, trunk_uri
from gateway.core.config import TrunkConfig
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.message import Headers, Request, Response, make_response


def _final(status: int) -> Response:
    request = Request(
        "MESSAGE",
        parse_uri_untrusted("sip:bob@example.test"),
        Headers.of(
            [
                ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1"),
                ("From", str(NameAddr(parse_uri_untrusted("sip:a@example.test")).with_tag("1"))),
                ("To", "<sip:bob@example.test>"),
                ("Call-ID", "c1"),
                ("CSeq", "1 MESSAGE"),
            ]
        ),
    )
    return make_response(request, status)


def test_513_only_when_the_message_fitted_no_target() -> None:
    assert best_answer([_final(513), _final(513)])[0] == 513
    assert best_answer([_final(513), _final(486)])[0] == 486
    assert best_answer([_final(513), _final(503)])[0] == 503
    assert best_answer([])[0] == 480


def test_no_408_to_a_message_sender() -> None:
    # RFC 4320 §4.2: a timeout (a target's 408, or ours) is never the answer; any other
    # failure wins over it (408 is not the lowest 4xx here), timeouts alone give 504.
    assert best_answer([_final(408), _final(408)]) == (504, "Server Time-out (no response in time)")
    assert best_answer([_final(408), _final(415)])[0] == 415
    assert best_answer([_final(408), _final(503)])[0] == 503
    assert best_answer([_final(408), _final(401)])[0] == 503  # a challenge is our trouble
    assert best_answer([_final(408), _final(603)])[0] == 603
    assert best_answer([_final(513), _final(408)])[0] == 504


def test_account_number_on_trunk() -> None:
    plan = NumberingPlan(country_code="49", area_code="30")
    trunk = TrunkConfig(
        name="vm",
        address="udp:192.0.2.20:5070",
        dids={"030123456": "alice"},
        caller_id="+4930999",
        number_format="national",
    )
    assert account_number_on_trunk(trunk, "alice", plan) == "030123456"
    assert account_number_on_trunk(trunk, "bob", plan) == "030999"  # caller_id, national
    assert account_number_on_trunk(trunk, "bob", plan, caller_id=False) is None
    assert trunk_uri(trunk, "0301#") == "sip:0301%23@192.0.2.20:5070;transport=udp"
