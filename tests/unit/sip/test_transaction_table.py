"""TransactionTable: matching (RFC 3261 §17.1.3, §17.2.3, RFC 2543 fallback), creation, timers."""

from __future__ import annotations

import gc

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.sip.errors import LocalSipError
from gateway.core.sip.message import Request, make_response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.transaction import (
    KEY_LEGACY,
    MERGED_REASON,
    AckReceived,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    Input,
    RequestReceived,
    ResponseReceived,
    SendRequest,
    SendResponse,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    State,
    TransactionLimitReached,
    TransactionStateError,
    TransactionTable,
    TransactionTerminated,
    TransactionTimeout,
    TransactionUnanswered,
    UnmatchedResponse,
    _merged_tag,
    build_ack,
    client_key,
    server_key,
)
from gateway.core.sip.via import Hop
from tests.unit.sip.rfc4475_messages import BADBRANCH, INV2543
from tests.unit.sip.sip_builders import TCP_PEER, UDP_PEER, ack_for, request, response

SOURCE = Hop("UDP", "198.51.100.7", 5060)


def parsed(data: bytes) -> Request:
    message = parse_message_untrusted(data)
    assert isinstance(message, Request)
    return message


def new_server_txn(outputs: list[object]) -> ServerInviteTransaction | ServerNonInviteTransaction:
    [received] = [o for o in outputs if isinstance(o, RequestReceived)]
    txn = received.transaction
    assert isinstance(txn, ServerInviteTransaction | ServerNonInviteTransaction)
    return txn


# --- client side --------------------------------------------------------------------------------


def test_responses_are_matched_by_branch_and_cseq_method() -> None:
    table = TransactionTable()
    invite = request(branch="z9hG4bKinv")
    txn, out = table.send_request(invite, peer=UDP_PEER, now=0.0)
    assert isinstance(txn, ClientInviteTransaction)
    assert out == [SendRequest(txn, invite)]
    # CANCEL reuses the INVITE's branch (§9.1) but is its own transaction (§17.1.3).
    cancel = request("CANCEL", branch="z9hG4bKinv", cseq_method="CANCEL")
    cancel_txn, _ = table.send_request(cancel, peer=UDP_PEER, now=0.1)
    assert isinstance(cancel_txn, ClientNonInviteTransaction)
    assert len(table) == 2
    ringing = response(invite, 180)
    assert table.receive_response(ringing, now=0.2) == [ResponseReceived(txn, ringing)]
    cancel_ok = response(cancel, 200)
    assert table.receive_response(cancel_ok, now=0.3)[0] == ResponseReceived(cancel_txn, cancel_ok)


def test_branch_matching_ignores_case() -> None:
    table = TransactionTable()
    options = request("OPTIONS", branch="z9hG4bKAbC")
    txn, _ = table.send_request(options, peer=UDP_PEER, now=0.0)
    echoed = response(request("OPTIONS", branch="z9hG4bKabc"), 200)
    assert table.receive_response(echoed, now=0.1)[0] == ResponseReceived(txn, echoed)


def test_unmatched_response_is_reported() -> None:
    table = TransactionTable()
    table.send_request(request(branch="z9hG4bKmine"), peer=UDP_PEER, now=0.0)
    stray = response(request(branch="z9hG4bKother"), 200)
    assert table.receive_response(stray, now=0.1) == [UnmatchedResponse(stray)]
    wrong_method = response(request("BYE", branch="z9hG4bKmine"), 200)
    assert table.receive_response(wrong_method, now=0.1) == [UnmatchedResponse(wrong_method)]


def test_2xx_retransmission_is_matched_in_accepted_not_stray() -> None:
    table = TransactionTable()
    invite = request()
    txn, _ = table.send_request(invite, peer=UDP_PEER, now=0.0)
    ok = response(invite, 200)
    table.receive_response(ok, now=1.0)
    assert table.receive_response(ok, now=20.0) == [ResponseReceived(txn, ok)]
    assert table.handle_timer(now=33.0) == [TransactionTerminated(txn)]
    assert len(table) == 0
    # After Timer M the transaction is gone: RFC 6026 (amending §18.1.2) says discard.
    assert table.receive_response(ok, now=34.0) == [UnmatchedResponse(ok)]


def test_ack_and_duplicate_branches_are_refused() -> None:
    table = TransactionTable()
    invite = request()
    table.send_request(invite, peer=UDP_PEER, now=0.0)
    with pytest.raises(LocalSipError, match="ACK"):
        table.send_request(ack_for(invite, response(invite, 200)), peer=UDP_PEER, now=0.0)
    with pytest.raises(LocalSipError, match="exists"):
        table.send_request(invite, peer=UDP_PEER, now=0.0)


def test_non_2xx_ack_is_sent_to_the_invites_peer() -> None:
    table = TransactionTable()
    invite = request()
    txn, _ = table.send_request(invite, peer=UDP_PEER, now=0.0)
    out = table.receive_response(response(invite, 404), now=1.0)
    [send] = [o for o in out if isinstance(o, SendRequest)]
    assert send.request.method == "ACK"
    assert send.transaction is txn and send.transaction.peer == UDP_PEER


# --- server side --------------------------------------------------------------------------------


def test_new_request_creates_a_server_transaction() -> None:
    table = TransactionTable()
    invite = request()
    out = table.receive_request(invite, source=SOURCE, now=0.0)
    txn = new_server_txn(out)
    assert isinstance(txn, ServerInviteTransaction)
    assert txn.peer == SOURCE
    assert [r.status for r in (o.response for o in out if isinstance(o, SendResponse))] == [100]
    options = request("OPTIONS", branch="z9hG4bKopt")
    assert isinstance(
        new_server_txn(table.receive_request(options, source=SOURCE, now=0.0)),
        ServerNonInviteTransaction,
    )
    assert len(table) == 2


def test_retransmitted_request_is_answered_from_the_stored_response() -> None:
    table = TransactionTable()
    options = request("OPTIONS")
    txn = new_server_txn(table.receive_request(options, source=SOURCE, now=0.0))
    ok = response(options, 200)
    assert table.send_response(txn, ok, now=0.1) == [SendResponse(txn, ok)]
    assert table.receive_request(options, source=SOURCE, now=0.5) == [
        SendResponse(txn, ok, retransmission=True)
    ]
    assert len(table) == 1


def test_same_branch_from_another_sent_by_is_another_transaction() -> None:
    table = TransactionTable()
    first = new_server_txn(table.receive_request(request("OPTIONS"), source=SOURCE, now=0.0))
    # Another Call-ID: with the same one it would be a merged request (§8.2.2.2, tested below).
    other = request("OPTIONS", sent_by="elsewhere.example.com", call_id="call-2@elsewhere")
    second = new_server_txn(table.receive_request(other, source=SOURCE, now=0.0))
    assert first is not second
    assert server_key(request("OPTIONS")) != server_key(other)


def test_ack_for_non_2xx_matches_the_invite_transaction() -> None:
    table = TransactionTable()
    invite = request()
    txn = new_server_txn(table.receive_request(invite, source=SOURCE, now=0.0))
    busy = make_response(invite, 486, to_tag="uas")
    table.send_response(txn, busy, now=0.1)
    assert table.receive_request(ack_for(invite, busy), source=SOURCE, now=0.2) == []
    assert txn.state is State.CONFIRMED


def test_ack_for_2xx_has_its_own_branch_and_goes_to_the_tu() -> None:
    table = TransactionTable()
    invite = request()
    txn = new_server_txn(table.receive_request(invite, source=SOURCE, now=0.0))
    ok = make_response(invite, 200, to_tag="uas")
    table.send_response(txn, ok, now=0.1)
    ack = ack_for(invite, ok, branch="z9hG4bKnewack")
    assert table.receive_request(ack, source=SOURCE, now=0.2) == [AckReceived(None, ack)]
    assert txn.state is State.ACCEPTED


def test_invite_retransmission_in_accepted_is_not_a_new_request() -> None:
    # RFC 6026's reason to exist: RFC 3261 terminated the transaction on 2xx.
    table = TransactionTable()
    invite = request()
    txn = new_server_txn(table.receive_request(invite, source=SOURCE, now=0.0))
    table.send_response(txn, make_response(invite, 200, to_tag="uas"), now=0.1)
    assert table.receive_request(invite, source=SOURCE, now=0.6) == []
    assert len(table) == 1


def test_cancel_is_its_own_transaction_and_finds_its_invite() -> None:
    table = TransactionTable()
    invite = request()
    invite_txn = new_server_txn(table.receive_request(invite, source=SOURCE, now=0.0))
    cancel = request("CANCEL", cseq_method="CANCEL")
    cancel_txn = new_server_txn(table.receive_request(cancel, source=SOURCE, now=0.1))
    assert isinstance(cancel_txn, ServerNonInviteTransaction)
    assert cancel_txn is not invite_txn
    assert table.find_cancel_target(cancel) is invite_txn
    assert table.find_cancel_target(request("CANCEL", branch="z9hG4bKnone")) is None


# --- RFC 2543 fallback and RFC 4475 -------------------------------------------------------------


def test_badbranch_uses_rfc2543_matching() -> None:
    # RFC 4475 §3.2.1: the branch is exactly the magic cookie; it identifies nothing.
    table = TransactionTable()
    msg = parsed(BADBRANCH)
    assert msg.top_via.branch == "z9hG4bK"
    assert server_key(msg)[KEY_LEGACY] is not None
    txn = new_server_txn(table.receive_request(msg, source=SOURCE, now=0.0))
    # A different request with the same bare cookie is a different transaction...
    other = parsed(BADBRANCH.replace(b"CSeq: 8 OPTIONS", b"CSeq: 9 OPTIONS"))
    other_txn = new_server_txn(table.receive_request(other, source=SOURCE, now=0.0))
    assert other_txn is not txn
    # ... and a retransmission still finds its own.
    ok = make_response(msg, 200, to_tag="uas")
    table.send_response(txn, ok, now=0.1)
    assert table.receive_request(msg, source=SOURCE, now=0.2) == [SendResponse(txn, ok, True)]


def test_rfc2543_invite_without_branch() -> None:
    table = TransactionTable()
    invite = parsed(INV2543)
    assert invite.top_via.branch is None
    txn = new_server_txn(table.receive_request(invite, source=SOURCE, now=0.0))
    trying_ = txn.last_response
    assert trying_ is not None and trying_.status == 100
    assert table.receive_request(invite, source=SOURCE, now=0.3) == [
        SendResponse(txn, trying_, True)
    ]
    busy = make_response(invite, 486, to_tag="uas")
    table.send_response(txn, busy, now=0.5)
    wrong_tag_ack = ack_for(invite, make_response(invite, 486, to_tag="someone-else"))
    assert table.receive_request(wrong_tag_ack, source=SOURCE, now=0.6) == [
        AckReceived(None, wrong_tag_ack)
    ]
    assert txn.state is State.COMPLETED
    assert table.receive_request(ack_for(invite, busy), source=SOURCE, now=0.7) == []
    assert txn.state is State.CONFIRMED


def test_rfc2543_ack_before_a_final_response_matches_nothing() -> None:
    table = TransactionTable(send_trying=False)
    invite = parsed(INV2543)
    table.receive_request(invite, source=SOURCE, now=0.0)
    ack = ack_for(invite, make_response(invite, 486, to_tag="uas"))
    assert table.receive_request(ack, source=SOURCE, now=0.1) == [AckReceived(None, ack)]


def test_client_key_needs_a_branch() -> None:
    assert client_key(parsed(INV2543)) is None


# --- lifetime, timers, limits -------------------------------------------------------------------


def test_table_timer_multiplexes_transactions() -> None:
    table = TransactionTable()
    assert table.get_timer() is None
    invite = request(branch="z9hG4bKa")
    options = request("OPTIONS", branch="z9hG4bKb", transport="TCP")
    inv_txn, _ = table.send_request(invite, peer=UDP_PEER, now=0.0)
    opt_txn, _ = table.send_request(options, peer=TCP_PEER, now=0.2)
    assert table.get_timer() == 0.5
    assert table.handle_timer(now=0.5) == [SendRequest(inv_txn, invite, retransmission=True)]
    assert table.get_timer() == 1.5
    table.receive_response(response(invite, 180), now=1.0)  # Proceeding: no timers
    assert table.get_timer() == 32.2  # the OPTIONS transaction's Timer F
    assert table.handle_timer(now=32.2) == [
        TransactionTimeout(opt_txn, "F"),
        TransactionTerminated(opt_txn),
    ]
    assert table.get_timer() is None
    assert len(table) == 1


def test_an_invite_cancelled_in_proceeding_is_given_up_64_t1_after_the_cancel() -> None:
    """RFC 3261 §9.1: no final response 64*T1 after our CANCEL ends the INVITE client
    transaction (Proceeding has no timer of its own: it would otherwise stay for ever)."""
    table = TransactionTable()
    invite = request(branch="z9hG4bKinv")
    txn, _ = table.send_request(invite, peer=UDP_PEER, now=0.0)
    table.receive_response(response(invite, 180), now=1.0)
    assert table.get_timer() is None  # Proceeding: nothing would ever end it
    cancel = request("CANCEL", branch="z9hG4bKinv", cseq_method="CANCEL")
    cancel_txn, _ = table.send_request(cancel, peer=UDP_PEER, now=10.0)
    assert txn.running_timers == {Input.TIMER_CANCEL}
    # The callee is silent: just before 64*T1 the INVITE still waits (the CANCEL re-sends).
    before = table.handle_timer(now=41.9)
    assert all(isinstance(o, SendRequest) and o.transaction is cancel_txn for o in before)
    # At 64*T1 the CANCEL times out (Timer F) and the INVITE is given up with it.
    out = table.handle_timer(now=42.0)
    assert TransactionTimeout(cancel_txn, "F") in out
    assert TransactionTimeout(txn, "CANCEL") in out and TransactionTerminated(txn) not in out
    # Given up until Timer M: a 2xx coming after all still reaches the TU (ACK, BYE).
    assert txn.state is State.GIVEN_UP and txn.given_up
    assert table.handle_timer(now=74.0) == [TransactionTerminated(txn)]
    assert len(table) == 0
    assert table.get_timer() is None


def test_a_late_180_after_the_cancel_does_not_restart_the_wait() -> None:
    table = TransactionTable()
    invite = request(branch="z9hG4bKinv")
    txn, _ = table.send_request(invite, peer=UDP_PEER, now=0.0)
    table.receive_response(response(invite, 180), now=1.0)
    table.send_request(
        request("CANCEL", branch="z9hG4bKinv", cseq_method="CANCEL"), peer=UDP_PEER, now=10.0
    )
    table.receive_response(response(invite, 183), now=20.0)
    out = table.handle_timer(now=42.0)
    assert TransactionTimeout(txn, "CANCEL") in out
    table.handle_timer(now=74.0)  # Timer M
    assert len(table) == 0


def test_a_cancel_crossing_the_final_response_changes_nothing() -> None:
    table = TransactionTable()
    invite = request(branch="z9hG4bKinv")
    txn, _ = table.send_request(invite, peer=UDP_PEER, now=0.0)
    table.receive_response(response(invite, 180), now=1.0)
    table.receive_response(response(invite, 486), now=2.0)  # Completed: Timer D runs
    assert txn.state is State.COMPLETED
    deadline = txn.get_timer()
    table.send_request(
        request("CANCEL", branch="z9hG4bKinv", cseq_method="CANCEL"), peer=UDP_PEER, now=2.1
    )
    assert txn.state is State.COMPLETED and txn.running_timers == {Input.TIMER_D}
    assert txn.get_timer() == deadline


def test_handle_timer_fires_everything_due_in_order() -> None:
    table = TransactionTable()
    txns = [
        table.send_request(request("OPTIONS", branch=f"z9hG4bK{i}"), peer=UDP_PEER, now=i / 10)[0]
        for i in range(3)
    ]
    out = table.handle_timer(now=0.75)
    assert [o.transaction for o in out] == txns
    assert table.handle_timer(now=0.75) == []


def test_the_timer_heap_holds_nothing_the_collector_walks() -> None:
    # A transaction in a wait state stays scheduled for up to 64*T1 (Timers J, L, M). Its heap
    # entry is a tuple of numbers, which the cyclic collector stops tracking at its first
    # collection, not one holding the transaction (tracked as long as it is in the heap).
    table = TransactionTable()
    options = request("OPTIONS")
    server = new_server_txn(table.receive_request(options, source=SOURCE, now=0.0))
    table.send_response(server, make_response(options, 200, to_tag="t"), now=0.1)
    assert server.state is State.COMPLETED  # Timer J, 64*T1 on UDP
    client = table.send_request(request("OPTIONS", branch="z9hG4bKc"), peer=UDP_PEER, now=0.0)[0]
    table.handle_timer(now=0.5)  # Timer E fired (its entry left the heap) and was set again
    assert client.state is State.TRYING
    assert table.sizes()["sip_transaction_timers"] == 2
    assert table.sizes()["sip_transaction_timer_heap"] == 2
    gc.collect()
    assert [entry for entry in table._heap if gc.is_tracked(entry)] == []
    # Everything fires once, and ends (stale entries: the next test).
    out = table.handle_timer(now=100.0)
    assert {type(o).__name__ for o in out} >= {"TransactionTimeout", "TransactionTerminated"}
    assert len(table) == 0
    assert table.get_timer() is None
    assert table.sizes()["sip_transaction_timers"] == 0
    assert table._timer_owner == {}


def test_a_superseded_timer_entry_fires_nothing_and_leaves_with_its_deadline() -> None:
    # A response moves a client transaction's deadline while its old heap entry is still in
    # the heap (Timer E at 0.5 -> Timer K, T4 on UDP: RFC 3261 §17.1.2.2). The old entry is
    # stale: it fires nothing, leaves the heap when its deadline comes, and names no
    # transaction; the metrics count one scheduled timer and the heap both entries meanwhile.
    table = TransactionTable()
    options = request("OPTIONS")
    client = table.send_request(options, peer=UDP_PEER, now=0.0)[0]
    table.receive_response(response(options, 200), now=0.1)
    assert client.state is State.COMPLETED
    sizes = table.sizes()
    assert (sizes["sip_transaction_timers"], sizes["sip_transaction_timer_heap"]) == (1, 2)
    assert list(table._timer_owner.values()) == [client]  # the live entry's only
    assert table.handle_timer(now=0.5) == []
    assert table.get_timer() == pytest.approx(5.1)
    sizes = table.sizes()
    assert (sizes["sip_transaction_timers"], sizes["sip_transaction_timer_heap"]) == (1, 1)
    out = table.handle_timer(now=5.1)
    assert [type(o).__name__ for o in out] == ["TransactionTerminated"]
    sizes = table.sizes()
    assert (sizes["sip_transaction_timers"], sizes["sip_transaction_timer_heap"]) == (0, 0)
    assert table._timer_owner == {}


def test_a_transaction_the_table_forgot_keeps_no_timer() -> None:
    # The TU's misuse ends a transaction without TransactionTerminated; its heap entry stays
    # until its deadline. Neither it nor a later transaction with the same key (the request's
    # retransmission) is confused with the other: the new one's timers fire, the old one's not.
    table = TransactionTable()
    options = request("OPTIONS")
    old = new_server_txn(table.receive_request(options, source=SOURCE, now=0.0))
    table.send_response(old, make_response(options, 200, to_tag="t"), now=0.1)  # Timer J 32.1
    with pytest.raises(TransactionStateError):
        table.send_response(old, make_response(options, 180, to_tag="t"), now=0.2)
    assert table.sizes()["sip_transaction_timers"] == 0
    new = new_server_txn(table.receive_request(options, source=SOURCE, now=0.3))
    table.send_response(new, make_response(options, 200, to_tag="t"), now=0.4)  # Timer J 32.4
    assert table.get_timer() == pytest.approx(32.4)
    assert table.handle_timer(now=32.1) == []
    assert [o.transaction for o in table.handle_timer(now=32.4)] == [new]
    sizes = table.sizes()
    assert (sizes["sip_transaction_timers"], sizes["sip_transaction_timer_heap"]) == (0, 0)
    assert table._timer_owner == {}


_LOCAL = Hop("UDP", "127.0.0.1", 5062)


def _assert_every_timer_is_a_held_transactions(table: TransactionTable) -> None:
    for txn in table._timer_owner.values():
        held = table._client if isinstance(txn, ClientTransaction) else table._server
        assert held.get(txn.key) is txn
        assert not txn.terminated
    held_deadlines = [
        deadline
        for txn in [*table._client.values(), *table._server.values()]
        if (deadline := txn.get_timer()) is not None
    ] + list(table._unanswered.values())
    assert table.get_timer() == (min(held_deadlines) if held_deadlines else None)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "invite in",
                    "options in",
                    "again",
                    "respond",
                    "give up",
                    "transport error",
                    "invite out",
                    "options out",
                    "response",
                    "cancel",
                    "time",
                ]
            ),
            st.integers(0, 7),
            st.sampled_from([100, 180, 200, 404, 486]),
        ),
        max_size=40,
    )
)
def test_every_scheduled_transaction_is_one_the_table_holds(
    steps: list[tuple[str, int, int]],
) -> None:
    # Why the timer heap needs no "does the table still hold it" check (removed in session 37):
    # a transaction is scheduled only while the table holds it and it has not terminated,
    # whatever the peers and the TU do, its misuse included (a second final response, a
    # response to a request given up, a transport error after the end). And the table's next
    # timer is always the earliest of the transactions it holds.
    table = TransactionTable()
    now = 0.0
    received: list[Request] = []
    servers: list[tuple[ServerTransaction, Request]] = []
    sent: list[Request] = []
    for action, which, status in steps:
        try:
            if action in ("invite in", "options in"):
                method = "INVITE" if action == "invite in" else "OPTIONS"
                req = request(method, branch=f"z9hG4bKin{len(received)}", call_id=f"c{which}")
                received.append(req)
                out = table.receive_request(req, source=_LOCAL, now=now)
                servers += [(o.transaction, req) for o in out if isinstance(o, RequestReceived)]
            elif action == "again" and received:
                table.receive_request(received[which % len(received)], source=_LOCAL, now=now)
            elif action == "respond" and servers:
                txn, req = servers[which % len(servers)]
                table.send_response(txn, make_response(req, status, to_tag="t"), now=now)
            elif action == "give up" and servers:
                table.give_up(servers[which % len(servers)][0], now=now)
            elif action == "transport error" and servers:
                table.transport_error(servers[which % len(servers)][0], now=now)
            elif action in ("invite out", "options out"):
                method = "INVITE" if action == "invite out" else "OPTIONS"
                req = request(method, branch=f"z9hG4bKout{len(sent)}")
                sent.append(req)
                table.send_request(req, peer=UDP_PEER, now=now)
            elif action == "response" and sent:
                table.receive_response(response(sent[which % len(sent)], status), now=now)
            elif action == "cancel" and sent:
                invite = sent[which % len(sent)]
                if invite.method == "INVITE":
                    cancel = request("CANCEL", branch=invite.top_via.branch, cseq_method="CANCEL")
                    table.send_request(cancel, peer=UDP_PEER, now=now)
            elif action == "time":
                now += (0.25, 0.5, 1.0, 4.0, 8.0, 16.0, 32.0, 64.0)[which]
                table.handle_timer(now=now)
        except LocalSipError:
            pass  # the TU's misuse (TransactionStateError among them), refused
        _assert_every_timer_is_a_held_transactions(table)


def test_tu_misuse_through_the_table_drops_the_transaction() -> None:
    table = TransactionTable()
    invite = request()
    txn = new_server_txn(table.receive_request(invite, source=SOURCE, now=0.0))
    table.send_response(txn, make_response(invite, 486, to_tag="t"), now=0.1)
    with pytest.raises(TransactionStateError):
        table.send_response(txn, make_response(invite, 180, to_tag="t"), now=0.2)
    assert len(table) == 0
    assert table.get_timer() is None
    # The next retransmission is a new transaction (the TU asked for it by misbehaving).
    assert new_server_txn(table.receive_request(invite, source=SOURCE, now=0.3)) is not txn


def test_tu_misuse_names_the_transaction_it_ended() -> None:
    # The table forgets it without TransactionTerminated: the TU drops its own entries.
    table = TransactionTable()
    options = request("OPTIONS")
    txn = new_server_txn(table.receive_request(options, source=SOURCE, now=0.0))
    table.send_response(txn, make_response(options, 200, to_tag="t"), now=0.1)
    with pytest.raises(TransactionStateError) as raised:
        table.send_response(txn, make_response(options, 180, to_tag="t"), now=0.2)
    assert raised.value.transaction is txn
    assert table.sizes()["sip_server_transactions"] == 0
    assert table.sizes()["sip_merged_request_index"] == 0


@pytest.mark.parametrize("provisional", [False, True])
def test_a_non_invite_request_the_tu_never_answers_is_given_up(provisional: bool) -> None:
    # Trying and Proceeding have no RFC timer: a TU that never answers (a bug) would keep the
    # transaction and its merged-request entry for ever. 3*64*T1 after the request it ends.
    table = TransactionTable()
    options = request("OPTIONS")
    txn = new_server_txn(table.receive_request(options, source=SOURCE, now=0.0))
    assert table.get_timer() == table.timers.unanswered == 3 * 64 * table.timers.t1
    assert table.sizes()["sip_unanswered_requests"] == 1
    assert table.sizes()["sip_transaction_timer_heap"] == 0  # kept apart: nothing superseded
    if provisional:
        table.send_response(txn, make_response(options, 183, to_tag="t"), now=1.0)
        assert txn.state is State.PROCEEDING
        assert table.get_timer() == table.timers.unanswered  # not restarted by a 1xx
    assert table.handle_timer(now=table.timers.unanswered - 0.1) == []
    out = table.handle_timer(now=table.timers.unanswered)
    assert out == [TransactionUnanswered(txn), TransactionTerminated(txn)]
    assert table.sizes() == dict.fromkeys(table.sizes(), 0)
    # The TU answering at last is no misuse it must hear of: the answer is discarded.
    late = make_response(options, 200, to_tag="t")
    assert table.send_response(txn, late, now=table.timers.unanswered + 1) == []
    # A retransmission now is a new request, as after any end of the transaction.
    again = table.receive_request(options, source=SOURCE, now=table.timers.unanswered + 2)
    assert new_server_txn(again) is not txn


@pytest.mark.parametrize("provisional", [False, True])
def test_a_non_invite_request_the_tu_gives_up_ends_with_no_response_and_no_report(
    provisional: bool,
) -> None:
    # RFC 4320 §4.2: a TU past its client's Timer F sends no final response (no 408) at all;
    # the transaction ends then, and no unanswered request (a TU bug) is reported later.
    table = TransactionTable()
    message = request("MESSAGE")
    txn = new_server_txn(table.receive_request(message, source=SOURCE, now=0.0))
    if provisional:
        table.send_response(txn, make_response(message, 183, to_tag="t"), now=1.0)
    now = 64 * table.timers.t1
    assert table.give_up(txn, now=now) == [TransactionTerminated(txn)]
    assert table.sizes() == dict.fromkeys(table.sizes(), 0)
    assert table.handle_timer(now=table.timers.unanswered) == []
    late = make_response(message, 200, to_tag="t")
    assert table.send_response(txn, late, now=now + 1) == []  # discarded, never sent


def test_when_an_unanswered_non_invite_request_arrived() -> None:
    # The endpoint's RFC 4320 §4.2 rule measures the sender's Timer F from here.
    table = TransactionTable()
    message = request("MESSAGE")
    txn = new_server_txn(table.receive_request(message, source=SOURCE, now=7.25))
    assert table.received_at(txn) == 7.25
    table.send_response(txn, make_response(message, 100), now=8.0)
    assert table.received_at(txn) == 7.25  # a 1xx is no final answer
    table.send_response(txn, make_response(message, 200, to_tag="t"), now=9.0)
    assert table.received_at(txn) is None
    invite = new_server_txn(table.receive_request(request(), source=SOURCE, now=1.0))
    assert table.received_at(invite) is None


def test_an_answered_non_invite_request_is_never_given_up() -> None:
    table = TransactionTable()
    options = request("OPTIONS")
    txn = new_server_txn(table.receive_request(options, source=SOURCE, now=0.0))
    table.send_response(txn, make_response(options, 200, to_tag="t"), now=1.0)
    assert txn.running_timers == {Input.TIMER_J}
    assert table.sizes()["sip_unanswered_requests"] == 0
    out = table.handle_timer(now=1.0 + 64 * table.timers.t1)
    assert out == [TransactionTerminated(txn)]


def test_an_invite_server_transaction_has_no_such_bound() -> None:
    # A call may ring as long as provisional responses come (RFC 3261 §13.3.1.1): its owner,
    # the call, answers it on every way out, not a timer.
    table = TransactionTable()
    invite = request()
    txn = new_server_txn(table.receive_request(invite, source=SOURCE, now=0.0))
    assert txn.state is State.PROCEEDING and table.get_timer() is None


def test_server_transaction_limit() -> None:
    table = TransactionTable(max_server_transactions=2)
    table.receive_request(request("OPTIONS", branch="z9hG4bK1"), source=SOURCE, now=0.0)
    table.receive_request(request("OPTIONS", branch="z9hG4bK2"), source=SOURCE, now=0.0)
    with pytest.raises(TransactionLimitReached) as info:
        table.receive_request(request("OPTIONS", branch="z9hG4bK3"), source=SOURCE, now=0.0)
    assert info.value.status == 503
    # Retransmissions and ACKs still work at the limit.
    assert (
        table.receive_request(request("OPTIONS", branch="z9hG4bK1"), source=SOURCE, now=0.1) == []
    )
    ack = ack_for(request(), response(request(), 200), branch="z9hG4bKack")
    assert table.receive_request(ack, source=SOURCE, now=0.1) == [AckReceived(None, ack)]


def test_a_request_the_tu_must_serve_may_go_past_the_limit_by_what_it_is_allowed() -> None:
    table = TransactionTable(max_server_transactions=1)
    table.receive_request(request("OPTIONS", branch="z9hG4bK1"), source=SOURCE, now=0.0)
    with pytest.raises(TransactionLimitReached):
        table.receive_request(request("INVITE", branch="z9hG4bK2"), source=SOURCE, now=0.0)
    out = table.receive_request(
        request("INVITE", branch="z9hG4bK2"), source=SOURCE, now=0.0, beyond_limit=1
    )
    assert new_server_txn(out).method == "INVITE"
    with pytest.raises(TransactionLimitReached):  # the allowance is used up
        table.receive_request(
            request("INVITE", branch="z9hG4bK3"), source=SOURCE, now=0.0, beyond_limit=1
        )
    assert len(table) == 2


def test_reliable_final_response_ends_the_transaction_at_once() -> None:
    table = TransactionTable()
    tcp_source = attrs.evolve(SOURCE, transport="TCP")
    options = request("OPTIONS", transport="TCP")
    txn = new_server_txn(table.receive_request(options, source=tcp_source, now=0.0))
    out = table.send_response(txn, response(options, 200), now=0.1)
    assert out[-1] == TransactionTerminated(txn)
    assert len(table) == 0


def test_an_invite_whose_cancel_is_ignored_ends_64_t1_after_the_cancel() -> None:
    # What tests/component/calls/test_b2bua_fuzzed_dialogs.py found: a peer that answered our
    # re-INVITE with 183 and then ignored its CANCEL (200 for the CANCEL, never a 487) left the
    # INVITE client transaction in Proceeding, which has no timer, for ever. RFC 3261 §9.1: 64*T1
    # after the CANCEL it is considered cancelled and destroyed.
    table = TransactionTable()
    invite = request(branch="z9hG4bKstuck")
    txn, _ = table.send_request(invite, peer=UDP_PEER, now=0.0)
    table.receive_response(response(invite, 183), now=0.1)
    assert txn.state is State.PROCEEDING and table.get_timer() is None
    cancel = request("CANCEL", branch="z9hG4bKstuck", cseq_method="CANCEL")
    table.send_request(cancel, peer=UDP_PEER, now=10.0)
    table.receive_response(response(cancel, 200), now=10.1)
    outputs = table.handle_timer(now=10.0 + 64 * 0.5)
    assert TransactionTimeout(txn, "CANCEL") in outputs
    table.handle_timer(now=100.0)  # the CANCEL's own Timer K, the INVITE's Timer M
    assert txn.terminated
    assert len(table) == 0 and table.get_timer() is None


def test_a_2xx_after_the_give_up_on_a_cancelled_invite_still_reaches_the_tu() -> None:
    # RFC 3261 §13.2.2.4: the TU ACKs every 2xx, and BYEs a session it does not want (§15).
    # The callee that ignored our CANCEL answers once the §9.1 wait is over: destroyed at once,
    # the transaction would leave that 2xx to the transport, which drops it as stray (RFC 6026
    # §8.10), and the callee stays in a dialog nobody ACKs or ends.
    table = TransactionTable()
    invite = request(branch="z9hG4bKlate")
    txn, _ = table.send_request(invite, peer=UDP_PEER, now=0.0)
    table.receive_response(response(invite, 180), now=0.1)
    table.send_request(
        request("CANCEL", branch="z9hG4bKlate", cseq_method="CANCEL"), peer=UDP_PEER, now=1.0
    )
    assert TransactionTimeout(txn, "CANCEL") in table.handle_timer(now=1.0 + 64 * 0.5)
    ok = response(invite, 200)
    assert table.receive_response(ok, now=40.0) == [ResponseReceived(txn, ok)]
    # Each retransmission too (its ACK may have been lost), and another fork's answer.
    assert table.receive_response(ok, now=40.5) == [ResponseReceived(txn, ok)]
    fork = response(invite, 200, to_tag="fork2")
    assert table.receive_response(fork, now=41.0) == [ResponseReceived(txn, fork)]
    assert txn.given_up


def given_up_invite(
    table: TransactionTable, branch: str
) -> tuple[ClientInviteTransaction, Request]:
    """An INVITE rung (180), CANCELled at 1.0 and given up 64*T1 later (RFC 3261 §9.1)."""
    invite = request(branch=branch)
    txn, _ = table.send_request(invite, peer=UDP_PEER, now=0.0)
    table.receive_response(response(invite, 180), now=0.1)
    table.send_request(
        request("CANCEL", branch=branch, cseq_method="CANCEL"), peer=UDP_PEER, now=1.0
    )
    assert TransactionTimeout(txn, "CANCEL") in table.handle_timer(now=1.0 + 64 * 0.5)
    assert isinstance(txn, ClientInviteTransaction) and txn.given_up
    return txn, invite


def test_a_non_2xx_after_the_give_up_is_acked_and_not_passed_up_again() -> None:
    # RFC 3261 §17.1.1.3: the client transaction ACKs every non-2xx final response. The callee
    # that ignored our CANCEL refuses once the §9.1 wait is over: without an ACK it re-sends its
    # 486 until its Timer H (32 s) and keeps its transaction. The TU had its timeout (408) as
    # the final response: the 486 is not news for it.
    table = TransactionTable()
    txn, invite = given_up_invite(table, "z9hG4bKbusy")
    busy = response(invite, 486, to_tag="callee1")
    out = table.receive_response(busy, now=40.0)
    assert out == [SendRequest(txn, build_ack(invite, busy))]
    ack = out[0].request
    assert isinstance(ack, Request)
    assert (ack.method, ack.uri, ack.call_id) == ("ACK", invite.uri, invite.call_id)
    assert (ack.cseq.number, ack.cseq.method) == (invite.cseq.number, "ACK")
    assert ack.to.tag == "callee1" and ack.from_.tag == invite.from_.tag
    assert ack.headers.get_all("Via") == (invite.headers.get("Via"),)  # its top Via only
    # Each retransmission gets the ACK again (ours was lost), still nothing for the TU.
    again = table.receive_response(busy, now=40.5)
    assert again == [SendRequest(txn, ack, retransmission=True)]
    # A 2xx of another fork after it is still a session nobody holds: up, for ACK and BYE.
    ok = response(invite, 200, to_tag="callee2")
    assert table.receive_response(ok, now=41.0) == [ResponseReceived(txn, ok)]
    # Until Timer M, 64*T1 after the give-up.
    assert table.handle_timer(now=33.0 + 64 * 0.5) == [TransactionTerminated(txn)]
    assert len(table) == 0


def test_a_non_2xx_after_the_give_up_over_tcp_is_acked_once() -> None:
    # Reliable transports: no retransmissions come, but the ACK is still owed (§17.1.1.3).
    table = TransactionTable()
    invite = request(branch="z9hG4bKtcp", transport="TCP")
    txn, _ = table.send_request(invite, peer=TCP_PEER, now=0.0)
    table.receive_response(response(invite, 180), now=0.1)
    table.send_request(
        request("CANCEL", branch="z9hG4bKtcp", cseq_method="CANCEL", transport="TCP"),
        peer=TCP_PEER,
        now=1.0,
    )
    assert TransactionTimeout(txn, "CANCEL") in table.handle_timer(now=33.0)
    busy = response(invite, 603)
    out = table.receive_response(busy, now=40.0)
    assert out == [SendRequest(txn, build_ack(invite, busy))]


def test_a_final_response_after_the_cancel_ends_the_invite_as_usual() -> None:
    table = TransactionTable()
    invite = request(branch="z9hG4bKanswered")
    txn, _ = table.send_request(invite, peer=UDP_PEER, now=0.0)
    table.receive_response(response(invite, 180), now=0.1)
    table.send_request(
        request("CANCEL", branch="z9hG4bKanswered", cseq_method="CANCEL"), peer=UDP_PEER, now=1.0
    )
    outputs = table.receive_response(response(invite, 487), now=2.0)
    assert txn.state is State.COMPLETED
    assert [o for o in outputs if isinstance(o, TransactionTimeout)] == []
    assert TransactionTimeout(txn, "CANCEL") not in table.handle_timer(now=2.0 + 64 * 0.5)
    assert txn.terminated  # by Timer D, as always


# --- merged requests (RFC 3261 §8.2.2.2) --------------------------------------------------------


def test_transaction_keys_are_tuples_the_collector_stops_walking() -> None:
    # A transaction's key lives as long as it does (up to 64*T1 in a wait state), and a table
    # holds four per plain call: a named tuple stayed tracked by the cyclic collector all that
    # time; a tuple of strings is untracked at its first collection (one holding the tuple of
    # RFC 2543 fields at the collection after its inner tuple's).
    keys = [server_key(request()), client_key(request("BYE", branch="z9hG4bKbye"))]
    legacy = server_key(parsed(INV2543))
    assert all(type(key) is tuple for key in [*keys, legacy])
    gc.collect()
    assert [key for key in keys if gc.is_tracked(key)] == []
    gc.collect()
    assert not gc.is_tracked(legacy)


def test_a_merged_requests_to_tag_is_the_one_earlier_versions_gave() -> None:
    # The 482's To tag is derived from the transaction key's text (a named tuple's repr before
    # session 37): the same key gives the same tag as before, across an upgrade. Known answer
    # from main at aa3a3c86.
    assert _merged_tag(("INVITE", "z9hg4bk-merged-1", "127.0.0.1:5062", None)) == (
        "8059d32e33908bfe"
    )


def _merged_482(outputs: list[object]) -> SendResponse:
    """The only output for a merged request: its 482, never the request passed up."""
    [sent] = outputs
    assert isinstance(sent, SendResponse)
    assert sent.response.status == 482 and sent.response.reason == MERGED_REASON
    assert sent.response.to.tag is not None  # a final response has one (§8.2.6.2)
    return sent


@pytest.mark.parametrize("method", ["INVITE", "OPTIONS", "REGISTER", "MESSAGE", "SUBSCRIBE"])
def test_one_request_along_two_paths_is_answered_482_the_second_time(method: str) -> None:
    # A forking proxy delivered one request twice: another top Via branch, same Call-ID, From
    # tag and CSeq. The second is not passed up (it would make a second call).
    table = TransactionTable()
    first = new_server_txn(table.receive_request(request(method), source=SOURCE, now=0.0))
    again = request(method, branch="z9hG4bKpath2")
    sent = _merged_482(table.receive_request(again, source=SOURCE, now=0.1))
    assert sent.transaction is not first and first.state is first.INITIAL_STATE
    assert table.merged_requests == 1
    # Its own transaction absorbs the merged request's retransmissions, re-sending the 482.
    resent = table.receive_request(again, source=SOURCE, now=0.2)
    assert resent == [SendResponse(sent.transaction, sent.response, retransmission=True)]
    assert table.merged_requests == 1


def test_an_rfc2543_invite_then_its_rfc3261_copy_is_a_merged_request() -> None:
    # What the call-flow fuzz found: a corrupted branch (legacy matching), then the intact one.
    table = TransactionTable()
    legacy = request(branch=None)
    first = new_server_txn(table.receive_request(legacy, source=SOURCE, now=0.0))
    assert first.key[KEY_LEGACY] is not None
    _merged_482(table.receive_request(request(), source=SOURCE, now=0.5))


def test_a_retransmission_of_the_same_transaction_is_not_a_merged_request() -> None:
    table = TransactionTable()
    invite = request()
    txn = new_server_txn(table.receive_request(invite, source=SOURCE, now=0.0))
    out = table.receive_request(invite, source=SOURCE, now=0.5)
    assert [o for o in out if isinstance(o, SendResponse) and o.response.status == 482] == []
    assert table.merged_requests == 0 and len(table) == 1 and txn.state is State.PROCEEDING


def test_a_cancel_and_an_ack_are_not_merged_requests() -> None:
    table = TransactionTable()
    invite = request()
    txn = new_server_txn(table.receive_request(invite, source=SOURCE, now=0.0))
    # CANCEL: same Call-ID, From tag and CSeq number as its INVITE by design (§9.1).
    cancel = request("CANCEL", cseq_method="CANCEL")
    cancel_txn = new_server_txn(table.receive_request(cancel, source=SOURCE, now=0.1))
    assert isinstance(cancel_txn, ServerNonInviteTransaction)
    # A forking proxy that sent the INVITE along two paths cancels both: each CANCEL is
    # answered by the TU (200 or 481, §9.2), the second is no merged copy of the first.
    cancel2 = request("CANCEL", branch="z9hG4bKpath2", cseq_method="CANCEL")
    new_server_txn(table.receive_request(cancel2, source=SOURCE, now=0.1))
    busy = make_response(invite, 486, to_tag="uas")
    table.send_response(txn, busy, now=0.2)
    assert table.receive_request(ack_for(invite, busy), source=SOURCE, now=0.3) == []
    # The ACK of a 2xx has a branch of its own: up to the TU, still not a merged request.
    ack = ack_for(invite, busy, branch="z9hG4bKother")
    assert table.receive_request(ack, source=SOURCE, now=0.4) == [AckReceived(None, ack)]
    assert table.merged_requests == 0


def test_an_in_dialog_request_is_not_a_merged_request() -> None:
    table = TransactionTable()
    bye = request("BYE", to_tag="uas")
    new_server_txn(table.receive_request(bye, source=SOURCE, now=0.0))
    other = request("BYE", to_tag="uas", branch="z9hG4bKpath2")
    new_server_txn(table.receive_request(other, source=SOURCE, now=0.1))
    assert table.merged_requests == 0


def test_another_cseq_or_from_tag_is_another_request() -> None:
    table = TransactionTable()
    new_server_txn(table.receive_request(request("OPTIONS"), source=SOURCE, now=0.0))
    for other in (
        request("OPTIONS", branch="z9hG4bK2", cseq=2),
        request("OPTIONS", branch="z9hG4bK3", from_tag="ft2"),
        request("OPTIONS", branch="z9hG4bK4", call_id="call-2@client.example.com"),
        request("REGISTER", branch="z9hG4bK5"),
    ):
        new_server_txn(table.receive_request(other, source=SOURCE, now=0.1))
    assert table.merged_requests == 0


def test_merged_request_entries_end_with_their_transaction() -> None:
    table = TransactionTable()
    options = request("OPTIONS")
    txn = new_server_txn(table.receive_request(options, source=SOURCE, now=0.0))
    assert table.sizes()["sip_merged_request_index"] == 1
    table.send_response(txn, make_response(options, 200, to_tag="uas"), now=0.1)
    # Completed: still the transaction of that request, so a copy is still merged (Timer J).
    copy = request("OPTIONS", branch="z9hG4bK2")
    _merged_482(table.receive_request(copy, source=SOURCE, now=1.0))
    table.handle_timer(now=0.1 + 64 * table.timers.t1)  # Timer J ends the first
    assert len(table) == 1 and table.sizes()["sip_merged_request_index"] == 0
    table.handle_timer(now=1.0 + 64 * table.timers.t1)  # and the merged copy's
    assert len(table) == 0
    # The request is no longer being served: a late copy is a new request.
    late = request("OPTIONS", branch="z9hG4bK3")
    new_server_txn(table.receive_request(late, source=SOURCE, now=100.0))
    assert table.merged_requests == 1


def test_the_merged_482_of_an_invite_takes_its_ack_and_ends() -> None:
    table = TransactionTable()
    invite = request()
    first = new_server_txn(table.receive_request(invite, source=SOURCE, now=0.0))
    again = request(branch="z9hG4bKpath2")
    sent = _merged_482(table.receive_request(again, source=SOURCE, now=0.1))
    assert table.receive_request(ack_for(again, sent.response), source=SOURCE, now=0.2) == []
    assert sent.transaction.state is State.CONFIRMED
    table.handle_timer(now=10.0)  # Timer I
    assert len(table) == 1 and table.sizes()["sip_merged_request_index"] == 1
    assert first.state is State.PROCEEDING


def test_an_invite_copy_after_our_2xx_is_still_merged() -> None:
    # RFC 6026 Accepted: the INVITE server transaction lives 64*T1 after its 2xx (Timer L), so
    # a copy along another path after the answer (a proxy re-forwarding a retransmission with
    # a new branch, as pjsip issue #378 describes) is answered 482, not made a second call.
    table = TransactionTable()
    invite = request()
    txn = new_server_txn(table.receive_request(invite, source=SOURCE, now=0.0))
    table.send_response(txn, make_response(invite, 200, to_tag="uas"), now=0.1)
    assert txn.state is State.ACCEPTED
    _merged_482(table.receive_request(request(branch="z9hG4bKpath2"), source=SOURCE, now=5.0))
    table.handle_timer(now=0.1 + 64 * table.timers.t1)  # Timer L
    assert txn.terminated and table.sizes()["sip_merged_request_index"] == 0


@pytest.mark.parametrize(("source", "merged"), [(SOURCE, True), (TCP_PEER, False)])
def test_a_register_sent_again_after_its_401_with_the_same_cseq(source: Hop, merged: bool) -> None:
    # RFC 3261 §22.2: the request with credentials has a higher CSeq. A client that keeps the
    # number sends what §8.2.2.2 calls a merged request while the first transaction lives:
    # over UDP it does for 64*T1 after the 401 (Timer J), so the client gets 482 (as from
    # FreeSWITCH); over TCP or TLS the first transaction ended with its 401 (Timer J is 0).
    # What README.md tells operators.
    table = TransactionTable()
    register = request("REGISTER", transport=source.transport)
    txn = new_server_txn(table.receive_request(register, source=source, now=0.0))
    table.send_response(txn, make_response(register, 401, to_tag="uas"), now=0.1)
    again = request("REGISTER", branch="z9hG4bKtx2", transport=source.transport)
    outputs = table.receive_request(again, source=source, now=0.2)
    if merged:
        _merged_482(outputs)
    else:
        new_server_txn(outputs)
    assert table.merged_requests == int(merged)
