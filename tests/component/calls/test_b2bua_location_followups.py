"""Location conveyance (RFC 6442) loose ends, through the B2BUA on the in-memory network.

- a trunk that never answers our location UPDATE: the caller's UPDATE (its session refresh
  too, RFC 4028) is answered 200 after the trunk's ``response_timeout`` (else
  LOCATION_UPDATE_WAIT), not after 64*T1; the call is kept, the record notes the trunk; the
  trunk's late answer and Timer F's 408 are absorbed (no second response, the call goes on);
- the same before the answer, in the trunk's early dialog;
- a location-only body (a lone ``application/pidf+xml``, its Content-ID a SIP header field,
  RFC 8262 §3): in an UPDATE it reaches the trunk as the multipart form does; an INVITE with it
  alone is a late-offer INVITE with a location; a re-INVITE with it alone a late-offer
  re-INVITE with one; other lone types are still 415.

Set-up as b2bua_env.py (trunk "carrier" serving +1 and 112, an emergency number).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.calls.location_updates import LOCATION_UPDATE_WAIT
from gateway.core.sip.message import Response
from gateway.testing.sip_agent import Received
from tests.component.calls.b2bua_env import B2bua, eventually
from tests.component.calls.location_calls import (
    BY_VALUE,
    MIXED,
    MOVED,
    MOVED_ONLY,
    PIDF,
    located_body,
    located_call,
    started,
    update,
)
from tests.component.calls.location_followups import location_record, trunk_ignores

LONE_ID = "<moved7@alice.example.com>"
LONE = [("Geolocation", "<cid:moved7@alice.example.com>"), ("Content-ID", LONE_ID)]
MOVED_PIDF = PIDF.replace(b"<HNO>123</HNO>", b"<HNO>125</HNO>")


async def test_an_unanswered_location_update_is_answered_after_the_default_wait(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No ``response_timeout``: the caller's UPDATE gets 200 (no Geolocation-Error)
    LOCATION_UPDATE_WAIT after it, not 32 s; the trunk's late 200 and Timer F's 408 later
    change nothing: the call is up and ends with the caller's BYE."""
    env = await started(nursery, tmp_path, voipgw_seed)
    call = await located_call(env, "112")
    taken = trunk_ignores(env, "UPDATE")
    sent_at = trio.current_time()
    answered = await update(call, MOVED_ONLY, BY_VALUE)
    waited = trio.current_time() - sent_at
    assert answered.status == 200
    assert LOCATION_UPDATE_WAIT <= waited < LOCATION_UPDATE_WAIT + 1
    assert "Geolocation-Error" not in answered.headers
    [received] = taken
    assert MOVED in received.request.body
    caplog.set_level(logging.INFO, logger="gateway.core.calls.call")
    await env.trunk.respond(received, 200)  # the trunk wakes up: absorbed
    await eventually(lambda: "late answer to the location update" in caplog.text)
    await trio.sleep(40)  # past Timer F of our UPDATE (64*T1 = 32 s)
    assert env.calls == 1
    env.trunk.in_dialog = None
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: location_record(env) is not None)
    assert location_record(env)["errors"] == [
        {"from": "carrier", "unanswered_after": LOCATION_UPDATE_WAIT}
    ]
    assert "internal error" not in caplog.text


async def test_the_trunks_response_timeout_bounds_the_wait_and_timer_f_ends_nothing(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A trunk with ``response_timeout = 1.5``: 200 to the caller after 1.5 s; a trunk that
    stays silent (our UPDATE's Timer F ends in a 408 of ours) leaves the call up; a second
    update is waited for on its own."""
    env = await started(nursery, tmp_path, voipgw_seed, response_timeout=1.5)
    call = await located_call(env, "112")
    trunk_ignores(env, "UPDATE")
    for _ in range(2):
        sent_at = trio.current_time()
        assert (await update(call, MOVED_ONLY, BY_VALUE)).status == 200
        assert 1.5 <= trio.current_time() - sent_at < 2.5
    await trio.sleep(40)
    assert env.calls == 1
    env.trunk.in_dialog = None
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: location_record(env) is not None)
    # One entry per trunk and wait, however often it stayed silent.
    assert location_record(env)["errors"] == [{"from": "carrier", "unanswered_after": 1.5}]


async def test_an_answer_within_the_wait_is_the_callers_as_before(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A trunk answering 2 s late (within the wait): its 424 and Geolocation-Error reach the
    caller, and nothing is noted as unanswered."""
    env = await started(nursery, tmp_path, voipgw_seed)
    call = await located_call(env, "112")

    async def slow(received: Received) -> bool:
        if received.request.method != "UPDATE":
            return False
        await trio.sleep(2)
        extra = [("Geolocation-Error", '300 ;code="Dereference Failure"')]
        await env.trunk.respond(received, 424, extra=extra)
        return True

    env.trunk.in_dialog = slow
    answered = await update(call, MOVED_ONLY, BY_VALUE)
    assert answered.status == 424
    assert answered.headers.get("Geolocation-Error") == '300 ;code="Dereference Failure"'
    env.trunk.in_dialog = None
    await trio.sleep(LOCATION_UPDATE_WAIT * 2)  # its (cancelled) wait posts nothing
    assert env.calls == 1
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: location_record(env) is not None)
    assert location_record(env)["errors"] == [{"from": "carrier", "status": 424, "code": "300"}]


async def test_an_unanswered_location_update_before_the_answer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The PSAP rings and ignores our UPDATE in its early dialog: the caller's early UPDATE gets
    200 after the wait (no session timer fields: no session yet); the call is then answered."""
    env = await started(nursery, tmp_path, voipgw_seed)
    env.trunk.auto = None
    call = await env.alice.invite(
        "sip:112@127.0.0.1:5060",
        sdp=located_body(env.alice.offer_sdp()),
        content_type=MIXED,
        extra=BY_VALUE,
    )
    assert (await call.final()).status == 407
    await call.authenticate()
    leg_b = await env.trunk.next_call()
    await leg_b.ring()
    assert call.exchange is not None
    await call.exchange.wait_for(lambda r: r.status == 180)
    taken = trunk_ignores(env, "UPDATE")
    sent_at = trio.current_time()
    moved = await call.early_request("UPDATE", body=MOVED_ONLY, content_type=MIXED, extra=BY_VALUE)
    answered = await moved.final()
    assert answered.status == 200 and "Session-Expires" not in answered.headers
    assert LOCATION_UPDATE_WAIT <= trio.current_time() - sent_at < LOCATION_UPDATE_WAIT + 1
    assert len(taken) == 1
    env.trunk.in_dialog = None
    await leg_b.answer()
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: location_record(env) is not None)
    assert location_record(env)["errors"] == [
        {"from": "carrier", "unanswered_after": LOCATION_UPDATE_WAIT}
    ]


# -- a lone application/pidf+xml body (RFC 8262 §3: the message's Content-ID names it) --------


def trunk_answers_update(env: B2bua) -> list[Received]:
    taken: list[Received] = []

    async def answer(received: Received) -> bool:
        if received.request.method != "UPDATE":
            return False
        taken.append(received)
        await env.trunk.respond(received, 200)
        return True

    env.trunk.in_dialog = answer
    return taken


async def lone_update(call: Any, extra: Any = LONE, body: bytes = MOVED_PIDF) -> Response:
    exchange = await call.request(
        "UPDATE", body=body, content_type="application/pidf+xml", extra=extra
    )
    return await exchange.final()


async def test_a_location_only_update_reaches_the_trunk_as_the_multipart_form_does(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """An UPDATE whose body is the PIDF-LO alone (no offer, RFC 3311 §5.1), named by the
    Geolocation cid: through its Content-ID header field: our UPDATE to the trunk carries it
    in our multipart body with that Content-ID; the record counts the update."""
    env = await started(nursery, tmp_path, voipgw_seed)
    call = await located_call(env, "112")
    taken = trunk_answers_update(env)
    assert (await lone_update(call)).status == 200
    [received] = taken
    sent = received.request
    assert sent.headers.get("Geolocation") == "<cid:moved7@alice.example.com>"
    assert (sent.content_type or "").startswith("multipart/mixed;boundary=voipgw-")
    assert b"Content-Type: application/pidf+xml\r\nContent-ID: " + LONE_ID.encode() in sent.body
    assert MOVED_PIDF in sent.body and b"application/sdp" not in sent.body
    assert "Content-ID" not in sent.headers  # the body is ours, multipart
    env.trunk.in_dialog = None
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: location_record(env) is not None)
    assert location_record(env)["updates"] == 1


async def test_a_lone_location_is_checked_as_a_part_is_and_other_lone_types_are_415(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A lone PIDF no Geolocation names, or with a dangling cid:, or one that is too big, is
    left out (the UPDATE answered 200, nothing to the trunk); a lone text/plain is 415."""
    env = await started(nursery, tmp_path, voipgw_seed)
    call = await located_call(env, "112")
    taken = trunk_answers_update(env)
    assert (await lone_update(call, extra=[("Content-ID", LONE_ID)])).status == 200
    dangling = [("Geolocation", "<cid:other@alice.example.com>"), ("Content-ID", LONE_ID)]
    assert (await lone_update(call, extra=dangling)).status == 200
    huge = MOVED_PIDF + b" " * 16384
    assert (await lone_update(call, body=huge)).status == 200
    assert taken == []
    exchange = await call.request("UPDATE", body=b"hello", content_type="text/plain")
    refused = await exchange.final()
    assert refused.status == 415
    assert "application/pidf+xml" in refused.headers.get_all("Accept")
    env.trunk.in_dialog = None
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_an_invite_with_a_lone_location_is_a_late_offer_with_it(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """An emergency INVITE whose body is the PIDF-LO alone: no offer (RFC 3261 §13.2.1, the
    trunk's 2xx makes it), the location goes on in our multipart body, the caller's ACK
    brings the answer."""
    env = await started(nursery, tmp_path, voipgw_seed)
    env.trunk.auto = None
    call = await env.alice.invite(
        "sip:112@127.0.0.1:5060",
        sdp=PIDF,
        content_type="application/pidf+xml",
        extra=[("Geolocation", "<cid:moved7@alice.example.com>"), ("Content-ID", LONE_ID)],
    )
    assert (await call.final()).status == 407
    await call.authenticate()
    leg_b = await env.trunk.next_call()
    invite = leg_b.invite
    assert invite.headers.get("Geolocation") == "<cid:moved7@alice.example.com>"
    assert (invite.content_type or "").startswith("multipart/mixed")
    assert PIDF in invite.body and b"application/sdp" not in invite.body
    assert leg_b.incoming is not None
    await env.trunk.respond(leg_b.incoming, 200, body=env.trunk.offer_sdp())
    answered = await call.final()
    assert answered.status == 200 and b"m=audio" in answered.body  # our offer to the caller
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: location_record(env) is not None)
    assert location_record(env)["conveyed"] == "by value"


async def test_a_reinvite_with_a_lone_location_is_a_late_offer_reinvite_with_it(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A re-INVITE whose body is the PIDF-LO alone: the trunk gets a re-INVITE without SDP
    (its 2xx offers) with the location; the caller answers in its ACK."""
    env = await started(nursery, tmp_path, voipgw_seed)
    call = await located_call(env, "112")
    exchange = await call.request(
        "INVITE", body=MOVED_PIDF, content_type="application/pidf+xml", extra=LONE
    )
    answered = await exchange.final()
    assert answered.status == 200 and b"m=audio" in answered.body
    reinvite = env.trunk.requests("INVITE")[-1]
    assert reinvite.headers.get("Geolocation") == "<cid:moved7@alice.example.com>"
    assert MOVED_PIDF in reinvite.body and b"application/sdp" not in reinvite.body
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_location_update_whose_wait_cannot_be_bounded_is_not_sent(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The task that bounds the wait for the trunk's answer cannot start (``start_child``
    False: the call's task is not in its states, as at its end): our UPDATE is not sent, and
    the caller's UPDATE is answered at once as one whose location was not passed on (200: it
    is the session refresh it also is), said in the log; it waited for the trunk's answer,
    which nothing bounded any more (Timer F's 32 s here)."""
    caplog.set_level(logging.INFO, logger="gateway.core.calls")
    env = await started(nursery, tmp_path, voipgw_seed)
    call = await located_call(env, "112")
    taken = trunk_ignores(env, "UPDATE")
    manager = env.gateway.calls
    assert manager is not None
    start_child = manager.start_child

    def no_location_wait(owner: Any, async_fn: Any, *args: object) -> bool:
        if getattr(async_fn, "__name__", "") == "_location_update_overdue":
            return False
        return start_child(owner, async_fn, *args)

    monkeypatch.setattr(manager, "start_child", no_location_wait)
    sent_at = trio.current_time()
    answered = await update(call, MOVED_ONLY, BY_VALUE)
    assert answered.status == 200
    assert trio.current_time() - sent_at < 1
    assert taken == []
    assert "location update not passed on to carrier: the call is ending" in caplog.text
    assert env.calls == 1
    env.trunk.in_dialog = None
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
