"""Every (state, input) pair and random input sequences for the four transaction machines.

The contract (transaction.py theory of operation): an input either follows the state table and
leaves the machine in one of its states, or it is not in the table, in which case the machine
raises TransactionStateError and is Terminated. Nothing else may escape.
"""

from __future__ import annotations

import gc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.sip import transaction
from gateway.core.sip.message import Request, Response
from gateway.core.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    Input,
    Output,
    SendRequest,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    Transaction,
    TransactionStateError,
    TransactionTerminated,
)
from gateway.core.sip.via import Hop
from tests.unit.sip.sip_builders import TCP_PEER, UDP_PEER, ack_for, request, response

MACHINES: list[type[Transaction]] = [
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
]
PEERS = [UDP_PEER, TCP_PEER]
RETRANSMIT_TIMERS = {Input.TIMER_A, Input.TIMER_E, Input.TIMER_G}


def first_request(machine: type[Transaction], peer: Hop) -> Request:
    invite = machine in (ClientInviteTransaction, ServerInviteTransaction)
    return request("INVITE" if invite else "OPTIONS", transport=peer.transport)


# Each transaction's request: a transaction lets its own go in the wait states.
REQUESTS: dict[Transaction, Request] = {}


def start(machine: type[Transaction], peer: Hop) -> tuple[Transaction, list[Output]]:
    req = first_request(machine, peer)
    started: tuple[Transaction, list[Output]]
    if machine is ClientInviteTransaction:
        started = ClientInviteTransaction.start(req, peer=peer, now=0.0)
    elif machine is ClientNonInviteTransaction:
        started = ClientNonInviteTransaction.start(req, peer=peer, now=0.0)
    elif machine is ServerInviteTransaction:
        started = ServerInviteTransaction.start(req, peer=peer, now=0.0)
    else:
        started = ServerNonInviteTransaction.start(req, peer=peer, now=0.0)
    REQUESTS[started[0]] = req
    return started


def message_for(txn: Transaction, event: Input) -> Request | Response | None:
    req = REQUESTS[txn]
    status = {
        Input.RESPONSE_1XX: 180,
        Input.RESPONSE_2XX: 200,
        Input.RESPONSE_3XX_6XX: 486,
        Input.SEND_1XX: 180,
        Input.SEND_2XX: 200,
        Input.SEND_3XX_6XX: 486,
    }.get(event)
    if status is not None:
        return response(req, status)
    if event is Input.REQUEST:
        return req
    if event is Input.ACK:
        return ack_for(req, response(req, 486))
    return None


def legal_states(machine: type[Transaction]) -> set[State]:
    states = {machine.INITIAL_STATE, State.TERMINATED}
    for (state, _), (next_state, _) in machine.TABLE.items():
        states |= {state, next_state}
    return states


def allowed(txn: Transaction, event: Input) -> bool:
    """In the table, and (for a timer) actually running."""
    timer = event.name.startswith("TIMER_")
    return (txn.state, event) in txn.TABLE and (not timer or event in txn.running_timers)


def apply(txn: Transaction, event: Input, now: float) -> list[Output]:
    """Feed one input; check the contract; return outputs ([] after a protocol error)."""
    expected_ok = allowed(txn, event)
    try:
        outputs = txn.process_input(event, now=now, message=message_for(txn, event))
    except TransactionStateError:
        assert not expected_ok, f"{event} in {txn.state} is allowed but raised"
        assert txn.state is State.TERMINATED
        assert txn.get_timer() is None
        return []
    assert expected_ok, f"{event} is not allowed but was accepted"
    assert txn.state in legal_states(type(txn))
    return outputs


def check_invariants(txn: Transaction) -> None:
    if txn.state is State.TERMINATED:
        assert txn.get_timer() is None
    assert txn.running_timers <= txn.STATE_TIMERS.get(txn.state, frozenset())
    if txn.reliable:
        assert not txn.running_timers & RETRANSMIT_TIMERS


def reachable_paths(machine: type[Transaction], peer: Hop) -> dict[State, list[Input]]:
    """Shortest input path from the start to every reachable state (BFS over the table)."""
    paths: dict[State, list[Input]] = {machine.INITIAL_STATE: []}
    frontier: list[list[Input]] = [[]]
    while frontier:
        path = frontier.pop(0)
        for event in Input:
            txn = replay(machine, peer, [*path, event])
            if txn is not None and txn.state not in paths:
                paths[txn.state] = [*path, event]
                frontier.append([*path, event])
    return paths


def replay(machine: type[Transaction], peer: Hop, path: list[Input]) -> Transaction | None:
    txn, _ = start(machine, peer)
    for event in path:
        if event is Input.TIMER_CANCEL and isinstance(txn, ClientInviteTransaction):
            txn.cancel_sent(now=1.0)  # the TU's CANCEL arms it (RFC 3261 §9.1), no input does
        if not allowed(txn, event):
            return None
        txn.process_input(event, now=1.0, message=message_for(txn, event))
    return txn


CASES = [(m, p) for m in MACHINES for p in PEERS]


@pytest.mark.parametrize(("machine", "peer"), CASES, ids=str)
def test_every_state_input_pair(machine: type[Transaction], peer: Hop) -> None:
    paths = reachable_paths(machine, peer)
    assert State.TERMINATED in paths
    for state, path in paths.items():
        for event in Input:
            txn = replay(machine, peer, path)
            assert txn is not None and txn.state is state
            apply(txn, event, now=2.0)
            check_invariants(txn)


@pytest.mark.parametrize("machine", MACHINES, ids=str)
def test_every_table_state_is_reachable_on_udp(machine: type[Transaction]) -> None:
    assert set(reachable_paths(machine, UDP_PEER)) == legal_states(machine)


NETWORK_INPUTS: dict[type[Transaction], set[Input]] = {
    ClientInviteTransaction: {
        Input.RESPONSE_1XX,
        Input.RESPONSE_2XX,
        Input.RESPONSE_3XX_6XX,
        Input.TRANSPORT_ERROR,
    },
    ClientNonInviteTransaction: {
        Input.RESPONSE_1XX,
        Input.RESPONSE_2XX,
        Input.RESPONSE_3XX_6XX,
        Input.TRANSPORT_ERROR,
    },
    ServerInviteTransaction: {Input.REQUEST, Input.ACK, Input.TRANSPORT_ERROR},
    ServerNonInviteTransaction: {Input.REQUEST, Input.TRANSPORT_ERROR},
}


@pytest.mark.parametrize("machine", MACHINES, ids=str)
def test_the_network_can_never_cause_a_protocol_error(machine: type[Transaction]) -> None:
    # Whatever the peer sends (or the transport reports) in a live state is in the table, so a
    # TransactionStateError always points at the TU.
    for state in legal_states(machine) - {State.TERMINATED}:
        for event in NETWORK_INPUTS[machine]:
            assert (state, event) in machine.TABLE, (state, event)


def test_reliable_transports_skip_the_wait_states() -> None:
    # Timers D, I, J, K are zero on reliable transports: those states are left at once.
    assert State.COMPLETED not in reachable_paths(ClientInviteTransaction, TCP_PEER)
    assert State.COMPLETED not in reachable_paths(ClientNonInviteTransaction, TCP_PEER)
    assert State.CONFIRMED not in reachable_paths(ServerInviteTransaction, TCP_PEER)
    assert State.COMPLETED not in reachable_paths(ServerNonInviteTransaction, TCP_PEER)
    # ... but the INVITE server still waits for the ACK of a non-2xx in Completed (Timer H).
    assert State.COMPLETED in reachable_paths(ServerInviteTransaction, TCP_PEER)


# The states a transaction waits out (up to 64*T1) after its final response, on UDP.
WAIT_STATES = {State.COMPLETED, State.CONFIRMED, State.ACCEPTED}


@pytest.mark.parametrize("machine", MACHINES, ids=str)
def test_timer_state_is_nothing_the_collector_walks(machine: type[Transaction]) -> None:
    # Thousands of transactions sit in these states at a few hundred calls per second; the
    # cyclic collector walks every container they hold, so they keep only what they need.
    for state, path in reachable_paths(machine, UDP_PEER).items():
        txn = replay(machine, UDP_PEER, path)
        assert txn is not None
        assert not gc.is_tracked(txn._deadlines), state  # timers by name: strings and floats
        if state not in WAIT_STATES or machine.STATE_TIMERS.get(state, set()) & RETRANSMIT_TIMERS:
            continue  # (the INVITE server's Completed still retransmits its response: Timer G)
        assert txn._zero_timers == () and txn._intervals == {}, state
        assert not gc.is_tracked(txn._zero_timers) and not gc.is_tracked(txn._intervals)


def test_a_timer_that_is_not_running_cannot_fire() -> None:
    txn, _ = start(ClientInviteTransaction, TCP_PEER)
    assert (State.CALLING, Input.TIMER_A) in txn.TABLE
    with pytest.raises(TransactionStateError):
        txn.process_input(Input.TIMER_A, now=1.0)
    assert txn.state is State.TERMINATED


Step = Input | float


@settings(max_examples=400)
@given(
    case=st.sampled_from(CASES),
    steps=st.lists(
        st.one_of(st.sampled_from(list(Input)), st.floats(min_value=0.0, max_value=20.0)),
        max_size=30,
    ),
)
def test_random_sequences_keep_the_contract(
    case: tuple[type[Transaction], Hop], steps: list[Step]
) -> None:
    machine, peer = case
    txn, _ = start(machine, peer)
    now = 0.0
    terminated_events = 0
    for step in steps:
        if isinstance(step, float):
            now += step
            out = txn.handle_timer(now=now)
            deadline = txn.get_timer()
            assert deadline is None or deadline > now  # everything due has fired
        else:
            out = apply(txn, step, now)
        check_invariants(txn)
        terminated_events += sum(isinstance(o, TransactionTerminated) for o in out)
        assert terminated_events <= 1
        if txn.reliable:
            assert not any(isinstance(o, SendRequest) and o.retransmission for o in out)
    # Only the TU can keep a transaction alive for ever; every other state has a timer.
    txn.handle_timer(now=now + 1000.0)
    assert txn.state in {State.TERMINATED, State.PROCEEDING, State.TRYING}
    if txn.state is not State.TERMINATED:
        assert txn.get_timer() is None
        assert isinstance(txn, ServerInviteTransaction | ServerNonInviteTransaction) or (
            isinstance(txn, ClientInviteTransaction) and txn.state is State.PROCEEDING
        )


def test_the_members_read_at_run_time_are_the_enums_members() -> None:
    # transaction.py reads its states, inputs and effects through module names (session 44):
    # each must be the member it is named after, or a transition would take another's branch.
    names = [name for name in vars(transaction) if name[:3] in ("_S_", "_I_", "_E_")]
    assert len(names) >= 40
    enums = {"_S_": transaction.State, "_I_": transaction.Input, "_E_": transaction.Effect}
    for name in names:
        assert getattr(transaction, name) is enums[name[:3]][name[3:]], name
