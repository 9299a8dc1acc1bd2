"""ClientRequest._first_late_answer: which 2xx after the §9.1 give-up on an INVITE is BYEd.

RFC 3261 §15: a session nobody holds is ended with one BYE per dialog; each copy of its 2xx is
ACKed again (§13.2.2.4) but not BYEd again. The number of dialogs BYEd per INVITE is bounded.
"""

from __future__ import annotations

from typing import Any, cast

from gateway.core.endpoint import MAX_LATE_ANSWERS, ClientRequest
from gateway.core.sip.message import Request
from gateway.core.sip.transaction import ClientInviteTransaction, TransactionTable
from gateway.core.transport.flows import Flow
from tests.unit.sip.sip_builders import UDP_PEER, request, response

FLOW = cast(Flow, cast(Any, object()))  # never used by the method under test


def given_up() -> tuple[ClientRequest, Request]:
    table = TransactionTable()
    invite = request(branch="z9hG4bKlateans")
    txn, _ = table.send_request(invite, peer=UDP_PEER, now=0.0)
    table.receive_response(response(invite, 180), now=0.1)
    table.send_request(
        request("CANCEL", branch="z9hG4bKlateans", cseq_method="CANCEL"), peer=UDP_PEER, now=1.0
    )
    table.handle_timer(now=1.0 + 64 * 0.5)
    assert isinstance(txn, ClientInviteTransaction) and txn.given_up
    return ClientRequest(txn, FLOW), invite


def test_each_dialog_answered_after_the_give_up_is_hung_up_once() -> None:
    client, invite = given_up()
    ok = response(invite, 200, to_tag="a")
    assert client._first_late_answer(ok, delivered=False)
    assert not client._first_late_answer(ok, delivered=False)  # a retransmission: ACK only
    assert client._first_late_answer(
        response(invite, 200, to_tag="b"), delivered=False
    )  # another fork
    assert not client._first_late_answer(
        response(invite, 486, to_tag="c"), delivered=False
    )  # ACKed below


def test_a_late_2xx_handed_over_but_never_acked_is_byed_once() -> None:
    """Handed to the owner is not held (as for _nobodys_answer): a late 2xx queued for a call
    that ended without reading it was never ACKed, and a copy finding nobody is BYEd, once.
    One the owner ACKed is its own: its copies are only ACKed again."""
    client, invite = given_up()
    unread = response(invite, 200, to_tag="a")
    assert not client._first_late_answer(unread, delivered=True)
    assert client._first_late_answer(unread, delivered=False)
    assert not client._first_late_answer(unread, delivered=False)
    taken = response(invite, 200, to_tag="b")
    assert not client._first_late_answer(taken, delivered=True)
    client._owner_acked("b")
    assert not client._first_late_answer(taken, delivered=False)  # the owner BYEd it


def test_a_callee_inventing_tags_gets_a_bounded_number_of_byes() -> None:
    client, invite = given_up()
    firsts = [
        client._first_late_answer(response(invite, 200, to_tag=f"t{n}"), delivered=False)
        for n in range(50)
    ]
    assert firsts == [True] * MAX_LATE_ANSWERS + [False] * (50 - MAX_LATE_ANSWERS)


def test_a_2xx_before_any_give_up_is_the_owners_business() -> None:
    table = TransactionTable()
    invite = request(branch="z9hG4bKanswered")
    txn, _ = table.send_request(invite, peer=UDP_PEER, now=0.0)
    client = ClientRequest(txn, FLOW)
    assert not client._first_late_answer(response(invite, 200), delivered=False)
