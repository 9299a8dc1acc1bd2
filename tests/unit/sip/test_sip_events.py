"""RFC 6665 header parsing and the relayed subscription's state table (sip/events.py)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.events import (
    FINAL_NOTIFY_WAIT,
    MAX_EXPIRES,
    MIN_EXPIRES,
    TRANSITIONS,
    EventHeader,
    Input,
    IntervalTooBrief,
    State,
    SubscriptionState,
    SubscriptionStateHeader,
    bounded_expires,
    parse_event_untrusted,
    parse_expires_untrusted,
    parse_subscription_state_untrusted,
    terminated_value,
)


def test_event_header() -> None:
    assert parse_event_untrusted("message-summary") == EventHeader("message-summary")
    assert parse_event_untrusted(" Message-Summary ;id=7") == EventHeader("message-summary", "7")
    assert parse_event_untrusted("presence.winfo") == EventHeader("presence.winfo")


@pytest.mark.parametrize("value", [None, "", "message summary", "a;=x", "x" * 600, "é"])
def test_bad_event_header_is_400(value: str | None) -> None:
    with pytest.raises(RemoteSipError) as info:
        parse_event_untrusted(value)
    assert info.value.status == 400 and "Event" in info.value.reason


def test_subscription_state_header() -> None:
    assert parse_subscription_state_untrusted("active;expires=600") == SubscriptionStateHeader(
        "active", 600
    )
    parsed = parse_subscription_state_untrusted("Terminated;reason=probation;retry-after=30")
    assert parsed == SubscriptionStateHeader("terminated", None, "probation", 30)


@pytest.mark.parametrize(
    "value", [None, "", "active;expires=-1", "active;expires=soon", "terminated;reason=a b"]
)
def test_bad_subscription_state_is_400(value: str | None) -> None:
    with pytest.raises(RemoteSipError) as info:
        parse_subscription_state_untrusted(value)
    assert info.value.status == 400


def test_expires() -> None:
    assert parse_expires_untrusted(None) == 3600
    assert parse_expires_untrusted(" 600 ") == 600
    assert parse_expires_untrusted("4294967296") == 2**32 - 1  # delta-seconds fit 32 bits
    for bad in ("", "-1", "1.5", "ten", "12345678901"):
        with pytest.raises(RemoteSipError):
            parse_expires_untrusted(bad)


def test_bounded_expires() -> None:
    assert bounded_expires(0) == 0
    assert bounded_expires(1) == IntervalTooBrief(MIN_EXPIRES)
    assert bounded_expires(MIN_EXPIRES) == MIN_EXPIRES
    assert bounded_expires(10**6) == MAX_EXPIRES
    assert terminated_value("timeout") == "terminated;reason=timeout"
    assert terminated_value("probation", 30) == "terminated;reason=probation;retry-after=30"


def test_life_of_a_subscription() -> None:
    state = SubscriptionState.started(now=0.0)
    assert state.state is State.PENDING
    assert state.handle(Input.ACCEPTED, now=1.0, expires=600) is State.ACTIVE
    assert state.get_timer() == 601.0
    # A NOTIFY may shorten it, never lengthen it.
    state.handle(Input.NOTIFY_ACTIVE, now=2.0, expires=100)
    assert state.expires_at == 102.0
    state.handle(Input.NOTIFY_ACTIVE, now=3.0, expires=5000)
    assert state.expires_at == 102.0
    state.handle(Input.ACCEPTED, now=50.0, expires=600)  # a refresh
    assert state.expires_at == 650.0
    assert not state.handle_timer(now=649.0)
    assert state.handle_timer(now=650.0) and state.ended
    assert state.get_timer() is None


def test_notify_before_the_2xx_and_unsubscribe() -> None:
    state = SubscriptionState.started(now=0.0)
    state.handle(Input.NOTIFY_ACTIVE, now=0.5, expires=3600)
    assert state.state is State.ACTIVE and state.expires_at == 3600.5
    state.handle(Input.ACCEPTED, now=1.0, expires=600)
    assert state.expires_at == 601.0
    state.handle(Input.UNSUBSCRIBED, now=10.0)
    assert state.state is State.ACTIVE and state.expires_at == 10.0 + FINAL_NOTIFY_WAIT
    assert state.handle(Input.NOTIFY_TERMINATED, now=11.0) is State.TERMINATED


def test_a_refused_subscribe_and_a_fetch() -> None:
    refused = SubscriptionState.started(now=0.0)
    assert refused.handle(Input.REFUSED, now=1.0) is State.TERMINATED
    fetch = SubscriptionState.started(now=0.0)
    fetch.handle(Input.ACCEPTED, now=1.0, expires=0)
    assert fetch.expires_at == 1.0 + FINAL_NOTIFY_WAIT  # waits for the one NOTIFY


@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, Input)))
def test_every_state_and_input(state: State, event: Input) -> None:
    """Every pair has an outcome: the table's, else terminated; terminated stays so."""
    machine = SubscriptionState(state, 100.0, granted=True)
    after = machine.handle(event, now=1.0, expires=60)
    if state is State.TERMINATED:
        assert after is State.TERMINATED
    else:
        assert after is TRANSITIONS.get((state, event), State.TERMINATED)
    if event in (Input.DIALOG_GONE, Input.EXPIRED, Input.STOPPED):
        assert after is State.TERMINATED


@given(st.lists(st.sampled_from(list(Input)), max_size=20), st.integers(0, 10_000))
def test_any_sequence_keeps_terminated_absorbing(events: list[Input], expires: int) -> None:
    machine = SubscriptionState.started(now=0.0)
    ended = False
    for now, event in enumerate(events):
        after = machine.handle(event, now=float(now), expires=expires)
        if ended:
            assert after is State.TERMINATED
        ended = after is State.TERMINATED
        assert (machine.get_timer() is None) == ended


@given(st.text(max_size=80))
def test_parsers_raise_only_remote_errors(text: str) -> None:
    for parse in (
        parse_event_untrusted,
        parse_subscription_state_untrusted,
        parse_expires_untrusted,
    ):
        try:
            parse(text)
        except RemoteSipError as err:
            assert err.status == 400
