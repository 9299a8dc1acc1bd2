"""Scenario tests of the four transaction machines (RFC 3261 §17, RFC 6026)."""

from __future__ import annotations

import weakref

import pytest

from gateway.core.sip.errors import LocalSipError
from gateway.core.sip.message import Request, Response
from gateway.core.sip.transaction import (
    AckReceived,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    Output,
    RequestReceived,
    ResendResponse,
    ResponseReceived,
    SendRequest,
    SendResponse,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    Transaction,
    TransactionStateError,
    TransactionTerminated,
    TransactionTimeout,
    TransactionTimers,
    TransportFailed,
)
from tests.unit.sip.sip_builders import TCP_PEER, UDP_PEER, ack_for, request, response


def run_timers(txn: Transaction, *, until: float) -> list[tuple[float, list[Output]]]:
    """Fire timers in order up to ``until``; [(time, outputs)]."""
    fired: list[tuple[float, list[Output]]] = []
    while (deadline := txn.get_timer()) is not None and deadline <= until:
        fired.append((deadline, txn.handle_timer(now=deadline)))
    return fired


def sent_requests(outputs: list[Output]) -> list[Request]:
    return [o.request for o in outputs if isinstance(o, SendRequest)]


def sent_responses(outputs: list[Output]) -> list[Response]:
    return [o.response for o in outputs if isinstance(o, SendResponse)]


# --- INVITE client ------------------------------------------------------------------------------


def test_invite_client_sends_the_request_and_arms_a_and_b() -> None:
    invite = request()
    txn, out = ClientInviteTransaction.start(invite, peer=UDP_PEER, now=10.0)
    assert out == [SendRequest(txn, invite)]
    assert txn.state is State.CALLING
    assert txn.get_timer() == 10.5  # Timer A = T1


def test_timer_a_doubles_until_timer_b_times_out() -> None:
    # RFC 3261 §17.1.1.2: A doubles after every retransmission (no T2 cap for INVITE); B = 64*T1.
    invite = request()
    txn, _ = ClientInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    fired = run_timers(txn, until=100.0)
    times = [t for t, out in fired if sent_requests(out)]
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(
        o == SendRequest(txn, invite, retransmission=True)
        for _, out in fired
        for o in out
        if isinstance(o, SendRequest)
    )
    last_time, last = fired[-1]
    assert last_time == 32.0
    assert last == [TransactionTimeout(txn, "B"), TransactionTerminated(txn)]
    assert txn.state is State.TERMINATED
    assert txn.get_timer() is None


def test_timers_follow_configured_t1() -> None:
    txn, _ = ClientInviteTransaction.start(
        request(), peer=UDP_PEER, now=0.0, timers=TransactionTimers(t1=0.1)
    )
    fired = run_timers(txn, until=100.0)
    assert [t for t, _ in fired] == pytest.approx([0.1, 0.3, 0.7, 1.5, 3.1, 6.3, 6.4])
    assert isinstance(fired[-1][1][0], TransactionTimeout)


def test_reliable_transport_never_retransmits_invite() -> None:
    txn, _ = ClientInviteTransaction.start(request(transport="TCP"), peer=TCP_PEER, now=0.0)
    assert txn.get_timer() == 32.0
    assert txn.handle_timer(now=31.9) == []
    assert txn.handle_timer(now=32.0) == [TransactionTimeout(txn, "B"), TransactionTerminated(txn)]


def test_provisional_response_stops_retransmissions() -> None:
    invite = request()
    txn, _ = ClientInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    ringing = response(invite, 180)
    assert txn.receive_response(ringing, now=0.2) == [ResponseReceived(txn, ringing)]
    assert txn.state is State.PROCEEDING
    assert txn.get_timer() is None  # neither A nor B run in Proceeding
    again = response(invite, 183)
    assert txn.receive_response(again, now=5.0) == [ResponseReceived(txn, again)]


def test_non_2xx_is_acked_by_the_transaction() -> None:
    invite = request(routes=("<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>"))
    txn, _ = ClientInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    busy = response(invite, 486, to_tag="callee-tag")
    out = txn.receive_response(busy, now=1.0)
    ack = txn.ack
    assert ack is not None
    assert out == [ResponseReceived(txn, busy), SendRequest(txn, ack)]
    assert txn.state is State.COMPLETED
    # RFC 3261 §17.1.1.3
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.headers.get_all("Via") == (invite.headers.get("Via"),)
    assert ack.top_via.branch == "z9hG4bKtx1"
    assert ack.call_id == invite.call_id
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.to.tag == "callee-tag"
    assert ack.headers.get("To") == busy.headers.get("To")
    assert (ack.cseq.number, ack.cseq.method) == (invite.cseq.number, "ACK")
    assert ack.headers.get_all("Route") == invite.headers.get_all("Route")
    assert ack.headers.get("Max-Forwards") == "70"
    assert ack.headers.get("Contact") is None
    assert ack.body == b""


def test_completed_absorbs_retransmitted_final_and_resends_ack() -> None:
    invite = request()
    txn, _ = ClientInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    busy = response(invite, 486)
    txn.receive_response(busy, now=1.0)
    assert txn.get_timer() == 33.0  # Timer D = 32 s on UDP
    ack = txn.ack
    assert ack is not None
    assert txn.receive_response(busy, now=2.0) == [SendRequest(txn, ack, retransmission=True)]
    assert txn.receive_response(response(invite, 180), now=2.1) == []  # late 1xx: absorbed
    assert txn.handle_timer(now=33.0) == [TransactionTerminated(txn)]


def test_completed_ends_at_once_on_reliable_transport() -> None:
    invite = request(transport="TCP")
    txn, _ = ClientInviteTransaction.start(invite, peer=TCP_PEER, now=0.0)
    busy = response(invite, 603)
    out = txn.receive_response(busy, now=1.0)
    assert [type(o) for o in out] == [ResponseReceived, SendRequest, TransactionTerminated]
    assert txn.state is State.TERMINATED


def test_2xx_moves_to_accepted_and_every_2xx_is_passed_up() -> None:
    # RFC 6026: Accepted absorbs 2xx retransmissions into the transaction (no stray
    # responses) and hands each one to the TU, which ACKs it; the transaction sends no ACK.
    invite = request()
    txn, _ = ClientInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    ok = response(invite, 200, to_tag="fork-a")
    assert txn.receive_response(ok, now=1.0) == [ResponseReceived(txn, ok)]
    assert txn.state is State.ACCEPTED
    assert txn.get_timer() == 33.0  # Timer M = 64*T1
    assert txn.receive_response(ok, now=2.0) == [ResponseReceived(txn, ok)]
    other_fork = response(invite, 200, to_tag="fork-b")
    assert txn.receive_response(other_fork, now=3.0) == [ResponseReceived(txn, other_fork)]
    assert txn.receive_response(response(invite, 180), now=3.5) == []
    assert txn.receive_response(response(invite, 486), now=3.6) == []
    assert txn.ack is None
    assert txn.state is State.ACCEPTED
    assert txn.handle_timer(now=33.0) == [TransactionTerminated(txn)]


def test_accepted_lasts_64_t1_even_on_reliable_transport() -> None:
    invite = request(transport="TCP")
    txn, _ = ClientInviteTransaction.start(invite, peer=TCP_PEER, now=0.0)
    txn.receive_response(response(invite, 200), now=1.0)
    assert txn.get_timer() == 33.0


def test_2xx_racing_a_non_2xx_goes_to_the_tu() -> None:
    invite = request()
    txn, _ = ClientInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    txn.receive_response(response(invite, 487, to_tag="a"), now=1.0)
    late_ok = response(invite, 200, to_tag="b")
    assert txn.receive_response(late_ok, now=1.1) == [ResponseReceived(txn, late_ok)]
    assert txn.state is State.COMPLETED


def test_transport_error_in_calling() -> None:
    txn, _ = ClientInviteTransaction.start(request(), peer=UDP_PEER, now=0.0)
    assert txn.transport_error(now=0.1) == [TransportFailed(txn), TransactionTerminated(txn)]
    assert txn.get_timer() is None


def test_transport_error_while_proceeding_ends_the_wait() -> None:
    invite = request(transport="TCP")
    txn, _ = ClientInviteTransaction.start(invite, peer=TCP_PEER, now=0.0)
    txn.receive_response(response(invite, 180), now=1.0)
    assert txn.transport_error(now=2.0) == [TransportFailed(txn), TransactionTerminated(txn)]


def test_client_transaction_needs_a_branch() -> None:
    with pytest.raises(LocalSipError, match="branch"):
        ClientInviteTransaction.start(request(branch=None), peer=UDP_PEER, now=0.0)


# --- non-INVITE client --------------------------------------------------------------------------


def test_timer_e_doubles_up_to_t2_then_f_times_out() -> None:
    options = request("OPTIONS")
    txn, out = ClientNonInviteTransaction.start(options, peer=UDP_PEER, now=0.0)
    assert out == [SendRequest(txn, options)]
    assert txn.state is State.TRYING
    fired = run_timers(txn, until=100.0)
    times = [t for t, out in fired if sent_requests(out)]
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert fired[-1] == (32.0, [TransactionTimeout(txn, "F"), TransactionTerminated(txn)])


def test_timer_e_is_t2_in_proceeding() -> None:
    options = request("OPTIONS")
    txn, _ = ClientNonInviteTransaction.start(options, peer=UDP_PEER, now=0.0)
    txn.handle_timer(now=0.5)  # next E at 1.5
    trying_ = response(options, 100)
    assert txn.receive_response(trying_, now=0.6) == [ResponseReceived(txn, trying_)]
    assert txn.state is State.PROCEEDING
    assert txn.get_timer() == 1.5  # E keeps running
    assert sent_requests(txn.handle_timer(now=1.5)) == [options]
    assert txn.get_timer() == 5.5  # then every T2
    assert sent_requests(txn.handle_timer(now=5.5)) == [options]
    assert txn.get_timer() == 9.5


def test_non_invite_final_response_and_timer_k() -> None:
    bye = request("BYE", to_tag="tt1")
    txn, _ = ClientNonInviteTransaction.start(bye, peer=UDP_PEER, now=0.0)
    ok = response(bye, 200)
    assert txn.receive_response(ok, now=0.3) == [ResponseReceived(txn, ok)]
    assert txn.state is State.COMPLETED
    assert txn.get_timer() == 5.3  # Timer K = T4
    assert txn.receive_response(ok, now=1.0) == []  # retransmission buffered
    assert txn.handle_timer(now=5.3) == [TransactionTerminated(txn)]


def test_non_invite_error_response_completes_too() -> None:
    bye = request("BYE", to_tag="tt1")
    txn, _ = ClientNonInviteTransaction.start(bye, peer=UDP_PEER, now=0.0)
    gone = response(bye, 481)
    assert txn.receive_response(gone, now=0.3) == [ResponseReceived(txn, gone)]
    assert txn.state is State.COMPLETED


def test_non_invite_on_reliable_transport() -> None:
    bye = request("BYE", transport="TCP", to_tag="tt1")
    txn, _ = ClientNonInviteTransaction.start(bye, peer=TCP_PEER, now=0.0)
    assert txn.get_timer() == 32.0  # F only, no E
    ok = response(bye, 200)
    assert txn.receive_response(ok, now=0.3) == [
        ResponseReceived(txn, ok),
        TransactionTerminated(txn),
    ]


# --- INVITE server ------------------------------------------------------------------------------


def test_invite_server_passes_request_up_and_sends_100() -> None:
    invite = request()
    txn, out = ServerInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    # The 100 first: a TU answering at once (a 481, a 420) must not have its final response
    # go out before it (RFC 3261 §17.2.1: no 1xx after the final).
    assert out[1] == RequestReceived(txn, invite)
    [trying_] = sent_responses(out)
    assert out[0] == SendResponse(txn, trying_)
    assert trying_.status == 100
    assert trying_.to.tag is None
    assert trying_.headers.get_all("Via") == invite.headers.get_all("Via")
    assert txn.state is State.PROCEEDING
    assert txn.get_timer() is None
    # A retransmitted INVITE gets the last provisional response again.
    assert txn.receive_request(invite, now=0.5) == [SendResponse(txn, trying_, retransmission=True)]


def test_100_trying_copies_timestamp() -> None:
    invite = request(extra=("Timestamp: 54.2 0.1",))
    _, out = ServerInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    [trying_] = sent_responses(out)
    assert trying_.headers.get("Timestamp") == "54.2 0.1"


def test_invite_server_without_automatic_100() -> None:
    invite = request()
    txn, out = ServerInviteTransaction.start(invite, peer=UDP_PEER, now=0.0, send_trying=False)
    assert out == [RequestReceived(txn, invite)]
    assert txn.receive_request(invite, now=0.5) == []  # nothing to repeat yet
    ringing = response(invite, 180)
    assert txn.send_response(ringing, now=1.0) == [SendResponse(txn, ringing)]
    assert txn.receive_request(invite, now=1.5) == [SendResponse(txn, ringing, True)]


def test_non_2xx_retransmitted_with_timer_g_until_ack() -> None:
    invite = request()
    txn, _ = ServerInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    busy = response(invite, 486)
    assert txn.send_response(busy, now=1.0) == [SendResponse(txn, busy)]
    assert txn.state is State.COMPLETED
    fired = run_timers(txn, until=12.5)
    assert [t for t, _ in fired] == [1.5, 2.5, 4.5, 8.5, 12.5]  # T1 doubling, capped at T2
    assert all(out == [SendResponse(txn, busy, True)] for _, out in fired)
    assert txn.receive_request(invite, now=13.0) == [SendResponse(txn, busy, True)]
    ack = ack_for(invite, busy)
    assert txn.receive_request(ack, now=13.1) == []
    assert txn.state is State.CONFIRMED
    assert txn.get_timer() == 18.1  # Timer I = T4; G and H are gone
    assert txn.receive_request(ack, now=14.0) == []  # absorbed
    assert txn.receive_request(invite, now=14.1) == []  # absorbed
    assert txn.handle_timer(now=18.1) == [TransactionTerminated(txn)]


def test_timer_h_reports_a_missing_ack() -> None:
    invite = request()
    txn, _ = ServerInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    txn.send_response(response(invite, 404), now=0.0)
    fired = run_timers(txn, until=100.0)
    assert fired[-1] == (32.0, [TransactionTimeout(txn, "H"), TransactionTerminated(txn)])


def test_invite_server_on_reliable_transport() -> None:
    invite = request(transport="TCP")
    txn, _ = ServerInviteTransaction.start(invite, peer=TCP_PEER, now=0.0)
    busy = response(invite, 486)
    txn.send_response(busy, now=1.0)
    assert txn.get_timer() == 33.0  # H only, no G
    ack = ack_for(invite, busy)
    assert txn.receive_request(ack, now=2.0) == [TransactionTerminated(txn)]  # I = 0


def test_2xx_moves_to_accepted_which_absorbs_invite_retransmissions() -> None:
    invite = request()
    txn, _ = ServerInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    ok = response(invite, 200)
    assert txn.send_response(ok, now=1.0) == [SendResponse(txn, ok)]
    assert txn.state is State.ACCEPTED
    assert txn.get_timer() == 33.0  # Timer L = 64*T1
    assert txn.receive_request(invite, now=1.2) == []  # RFC 6026: not a new request
    # The TU (UAS core, RFC 3261 §13.3.1.4) retransmits its 2xx through the transaction.
    assert txn.send_response(ok, now=1.5) == [SendResponse(txn, ok)]
    ack = ack_for(invite, ok)  # same branch: RFC 2543-style peer
    assert txn.receive_request(ack, now=2.0) == [AckReceived(txn, ack)]
    assert txn.transport_error(now=2.5) == [TransportFailed(txn)]
    assert txn.state is State.ACCEPTED
    assert txn.handle_timer(now=33.0) == [TransactionTerminated(txn)]


def test_provisional_after_final_is_a_protocol_error() -> None:
    invite = request()
    txn, _ = ServerInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    txn.send_response(response(invite, 486), now=0.0)
    with pytest.raises(TransactionStateError, match="1xx from TU not allowed in Completed"):
        txn.send_response(response(invite, 180), now=0.1)
    assert txn.state is State.TERMINATED
    assert txn.get_timer() is None
    with pytest.raises(TransactionStateError):
        txn.receive_request(invite, now=0.2)


def test_2xx_after_non_2xx_is_a_protocol_error() -> None:
    invite = request()
    txn, _ = ServerInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    txn.send_response(response(invite, 486), now=0.0)
    with pytest.raises(TransactionStateError):
        txn.send_response(response(invite, 200), now=0.1)


def test_response_of_another_request_is_refused_without_state_change() -> None:
    invite = request()
    txn, _ = ServerInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    with pytest.raises(LocalSipError, match="CSeq"):
        txn.send_response(response(request("BYE"), 200), now=0.1)
    assert txn.state is State.PROCEEDING


def test_invite_server_transport_error_while_proceeding() -> None:
    invite = request()
    txn, _ = ServerInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    assert txn.transport_error(now=0.1) == [TransportFailed(txn), TransactionTerminated(txn)]


# --- non-INVITE server --------------------------------------------------------------------------


def test_non_invite_server_lifecycle_on_udp() -> None:
    options = request("OPTIONS")
    txn, out = ServerNonInviteTransaction.start(options, peer=UDP_PEER, now=0.0)
    assert out == [RequestReceived(txn, options)]  # no automatic 100 (RFC 4320)
    assert txn.state is State.TRYING
    assert txn.receive_request(options, now=0.5) == []  # discarded in Trying
    ok = response(options, 200)
    assert txn.send_response(ok, now=1.0) == [SendResponse(txn, ok)]
    assert txn.state is State.COMPLETED
    assert txn.get_timer() == 33.0  # Timer J = 64*T1
    assert txn.receive_request(options, now=2.0) == [SendResponse(txn, ok, True)]
    assert txn.send_response(response(options, 500), now=3.0) == []  # discarded (§17.2.2)
    assert txn.last_response == ok
    assert txn.handle_timer(now=33.0) == [TransactionTerminated(txn)]


def test_non_invite_server_provisional_then_final() -> None:
    options = request("OPTIONS")
    txn, _ = ServerNonInviteTransaction.start(options, peer=UDP_PEER, now=0.0)
    trying_ = response(options, 100)
    txn.send_response(trying_, now=0.1)
    assert txn.state is State.PROCEEDING
    assert txn.receive_request(options, now=0.5) == [SendResponse(txn, trying_, True)]
    ok = response(options, 200)
    assert txn.send_response(ok, now=1.0) == [SendResponse(txn, ok)]


def test_non_invite_server_on_reliable_transport_ends_with_the_final_response() -> None:
    options = request("OPTIONS", transport="TCP")
    txn, _ = ServerNonInviteTransaction.start(options, peer=TCP_PEER, now=0.0)
    ok = response(options, 200)
    assert txn.send_response(ok, now=1.0) == [SendResponse(txn, ok), TransactionTerminated(txn)]


def test_message_inputs_need_their_message() -> None:
    from gateway.core.sip.transaction import Input

    txn, _ = ServerNonInviteTransaction.start(request("OPTIONS"), peer=UDP_PEER, now=0.0)
    with pytest.raises(LocalSipError, match="message"):
        txn.process_input(Input.SEND_2XX, now=0.0)
    with pytest.raises(LocalSipError, match="message"):
        txn.process_input(Input.TIMER_J, now=0.0, message=request("OPTIONS"))
    assert txn.state is State.TRYING


def test_timers_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TransactionTimers(t1=0)


# -- what a transaction keeps in its wait states ------------------------------------------------
# A transaction outlives its call by up to 64*T1; in the wait states nothing re-sends the request
# (or, in Accepted and Confirmed, the last response), so it lets them go. weakref proves the
# objects are freed by reference counting, not merely unreachable from the transaction.


def test_accepted_server_invite_lets_go_of_the_request_and_its_2xx() -> None:
    invite = request()
    txn, started = ServerInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    del started  # RequestReceived(txn, invite): the TU's, not the transaction's
    ok = response(invite, 200, to_tag="ours")
    assert txn.request is invite
    txn.send_response(ok, now=1.0)
    assert txn.state is State.ACCEPTED
    assert (txn.request, txn.last_response, txn.final_status) == (None, None, 200)
    # The TU's 2xx retransmissions still go out, and are not kept either.
    assert txn.send_response(ok, now=1.5) == [SendResponse(txn, ok)]
    assert txn.last_response is None
    assert txn.receive_request(invite, now=2.0) == []  # still absorbed (RFC 6026)
    assert repr(txn) == "<ServerInviteTransaction INVITE Accepted>"
    invite_ref, ok_ref = weakref.ref(invite), weakref.ref(ok)
    del invite, ok
    assert invite_ref() is None and ok_ref() is None


def test_completed_server_keeps_the_final_response_it_re_sends_but_not_the_request() -> None:
    options = request("OPTIONS")
    txn, _ = ServerNonInviteTransaction.start(options, peer=UDP_PEER, now=0.0)
    ok = response(options, 200)
    txn.send_response(ok, now=1.0)
    assert txn.state is State.COMPLETED
    assert (txn.request, txn.last_response) == (None, ok)
    assert txn.receive_request(options, now=2.0) == [SendResponse(txn, ok, True)]


def test_completed_server_keeps_the_bytes_sent_instead_of_the_response() -> None:
    # RFC 3261 §17.2.2: a retransmitted request is answered with the response already sent, so
    # once the transport hands back the bytes it sent, those are what Timer J keeps.
    options = request("OPTIONS")
    txn, _ = ServerNonInviteTransaction.start(options, peer=UDP_PEER, now=0.0)
    ok = response(options, 200)
    txn.send_response(ok, now=1.0)
    assert txn.sent_as(ok, b"SIP/2.0 200 OK...") is True
    assert txn.last_response is None
    assert txn.receive_request(options, now=2.0) == [ResendResponse(txn, b"SIP/2.0 200 OK...")]
    assert txn.send_response(response(options, 500), now=3.0) == []  # still discarded
    assert txn.receive_request(options, now=4.0) == [ResendResponse(txn, b"SIP/2.0 200 OK...")]
    ok_ref = weakref.ref(ok)
    del ok
    assert ok_ref() is None
    assert txn.handle_timer(now=33.0) == [TransactionTerminated(txn)]


def test_only_the_final_response_kept_is_replaced_by_its_bytes() -> None:
    options = request("OPTIONS")
    txn, _ = ServerNonInviteTransaction.start(options, peer=UDP_PEER, now=0.0)
    trying_ = response(options, 100)
    txn.send_response(trying_, now=0.1)
    assert txn.sent_as(trying_, b"100") is False  # Proceeding: a provisional one
    assert txn.receive_request(options, now=0.5) == [SendResponse(txn, trying_, True)]
    ok = response(options, 200)
    txn.send_response(ok, now=1.0)
    assert txn.sent_as(response(options, 200), b"another") is False  # not the one kept
    assert txn.last_response is ok
    invite = request()
    accepted, _ = ServerInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    answer = response(invite, 200, to_tag="ours")
    accepted.send_response(answer, now=1.0)
    assert accepted.sent_as(answer, b"200") is False  # a 2xx to an INVITE: the TU re-sends it
    assert accepted.receive_request(invite, now=2.0) == []


def test_timer_g_re_sends_the_bytes_until_the_ack_lets_them_go() -> None:
    invite = request()
    txn, _ = ServerInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    busy = response(invite, 486, to_tag="ours")
    txn.send_response(busy, now=1.0)
    assert txn.sent_as(busy, b"486") is True
    assert txn.handle_timer(now=1.5) == [ResendResponse(txn, b"486")]
    assert txn.receive_request(invite, now=1.6) == [ResendResponse(txn, b"486")]
    txn.receive_request(ack_for(invite, busy), now=1.7)
    assert txn.state is State.CONFIRMED
    assert txn.receive_request(invite, now=1.8) == []  # absorbed, nothing kept to re-send
    assert txn._last_sent is None


def test_confirmed_server_invite_lets_go_of_its_non_2xx() -> None:
    invite = request()
    txn, _ = ServerInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    busy = response(invite, 486, to_tag="ours")
    txn.send_response(busy, now=1.0)
    assert (txn.state, txn.last_response) == (State.COMPLETED, busy)  # Timer G re-sends it
    txn.receive_request(ack_for(invite, busy), now=1.2)
    assert txn.state is State.CONFIRMED
    assert (txn.request, txn.last_response, txn.final_status) == (None, None, 486)


def test_client_invite_lets_go_of_the_request_once_final() -> None:
    invite = request()
    txn, _ = ClientInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    busy = response(invite, 486)
    txn.receive_response(busy, now=1.0)
    assert (txn.state, txn.request) == (State.COMPLETED, None)
    ack = txn.ack
    assert ack is not None  # built on the way into Completed, and re-sent from there
    assert txn.receive_response(busy, now=2.0) == [SendRequest(txn, ack, retransmission=True)]
    accepted, _ = ClientInviteTransaction.start(request(), peer=UDP_PEER, now=0.0)
    accepted.receive_response(response(invite, 200), now=1.0)
    assert (accepted.state, accepted.request) == (State.ACCEPTED, None)


def test_client_transaction_keeps_the_request_for_timer_b_and_f() -> None:
    # The TU's 408 is built from the request (RFC 3261 §8.1.3.1), after the machine ends.
    invite = request()
    txn, _ = ClientInviteTransaction.start(invite, peer=UDP_PEER, now=0.0)
    run_timers(txn, until=40.0)
    assert (txn.state, txn.request) == (State.TERMINATED, invite)
