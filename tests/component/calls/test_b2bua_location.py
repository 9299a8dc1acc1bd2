"""Location conveyance (RFC 6442) through the B2BUA: a phone's Geolocation and its PIDF-LO part
reach the trunk of an emergency call (docs/configuration.md, ``[[trunks]] location``).

- by value: the trunk's INVITE has Geolocation, Geolocation-Routing and a multipart body of ours
  with our SDP and the location part byte for byte; by reference: the header alone;
- dropped where the trunk's policy says so (``never``; the default for a call that is not to an
  emergency number), header and part both;
- 424 with Geolocation-Error for a Geolocation naming no part, 400 for one that does not parse;
- a location part marked handling=required is no longer 415;
- Geolocation-Error from the trunk comes back to the phone; a call without location is as before;
- a caller's location update in a re-INVITE reaches the trunk the same way, where the policy
  passes it; a bad one is left out without refusing the re-INVITE;
- in an UPDATE too (RFC 6442 §4.1): without an offer as our UPDATE to the trunk, in the call
  and before the answer (in the trunk's early dialog), whose answer is the caller's; with an
  offer as a re-INVITE; a Geolocation-Error on a 2xx reaches the caller as well (§4.3);
- a transfer carries no location.

Set-up as b2bua_env.py: alice registered at 127.0.0.3, trunk "carrier" at 127.0.0.2 serving
+1 and 112 (an emergency number by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.sdp.body import sdp_of
from gateway.core.sip.message import Request, Response
from gateway.testing.sip_agent import Received
from tests.component.calls.b2bua_env import B2bua, eventually, start_b2bua
from tests.component.calls.location_calls import (
    BOUNDARY,
    BY_VALUE,
    LOCATION_PART,
    MIXED,
    MOVED,
    MOVED_ONLY,
    PIDF,
    located_body,
    located_call,
    started,
    update,
)

SDP_TYPE = "application/sdp"
BY_REFERENCE = [("Geolocation", "<https://lis.example.com/loc/8f3a>;inserted-by=alice")]


async def alice_dials(
    env: B2bua,
    dialled: str,
    *,
    extra: Sequence[tuple[str, str]] = (),
    part: bytes | None = LOCATION_PART,
) -> Response:
    """alice calls ``dialled`` with ``extra`` headers and, unless ``part`` is None, a
    multipart body with that location part; the final response after the digest."""
    sdp = env.alice.offer_sdp()
    body, content_type = (
        (sdp, "application/sdp") if part is None else (located_body(sdp, part), MIXED)
    )
    call = await env.alice.invite(
        f"sip:{dialled}@127.0.0.1:5060", sdp=body, content_type=content_type, extra=extra
    )
    assert (await call.final()).status == 407
    await call.authenticate()
    final = await call.final()
    if final.status == 200:
        assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    return final


def trunk_invite(env: B2bua) -> Request:
    [invite] = env.trunk.requests("INVITE")
    return invite


def location_record(env: B2bua) -> Any:
    store = env.gateway.store
    assert store is not None
    [record] = store.call_records_recent()
    return record.security.get("location")


async def test_an_emergency_call_passes_the_location_by_value_byte_for_byte(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await started(nursery, tmp_path, voipgw_seed)
    assert (await alice_dials(env, "112", extra=BY_VALUE)).status == 200
    invite = trunk_invite(env)
    assert invite.headers.get("Geolocation") == "<cid:target123@alice.example.com>"
    assert invite.headers.get("Geolocation-Routing") == "yes"
    content_type = invite.content_type or ""
    assert content_type.startswith("multipart/mixed;boundary=voipgw-")
    boundary = content_type.partition("boundary=")[2].encode()
    assert BOUNDARY.encode() not in invite.body  # our own boundary, not the phone's
    parts = invite.body.split(b"--" + boundary)
    # Our SDP first (through the gateway), then the phone's location part as it came.
    assert parts[1].startswith(b"\r\nContent-Type: application/sdp\r\n\r\nv=0")
    assert b"c=IN IP4 127.0.0.1" in parts[1]
    assert parts[2] == b"\r\n" + LOCATION_PART + b"\r\n"
    assert parts[3] == b"--\r\n"
    await eventually(lambda: location_record(env) is not None)
    assert location_record(env) == {
        "conveyed": "by value",
        "passed_to": ["carrier"],
        "dropped_for": [],
    }
    assert "civicAddress" not in str(location_record(env))


async def test_location_by_reference_passes_as_a_header_only(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await started(nursery, tmp_path, voipgw_seed)
    assert (await alice_dials(env, "112", extra=BY_REFERENCE, part=None)).status == 200
    invite = trunk_invite(env)
    assert invite.headers.get("Geolocation") == BY_REFERENCE[0][1]
    assert invite.headers.get("Geolocation-Routing") is None
    assert invite.content_type == "application/sdp"
    await eventually(lambda: location_record(env) is not None)
    assert location_record(env)["conveyed"] == "by reference"


async def test_the_location_is_dropped_where_the_trunk_policy_says_so(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """``never`` keeps it from an emergency call; the default ``emergency`` from any other."""
    for policy, dialled in (("never", "112"), ("emergency", "+15551234")):
        env = await started(nursery, tmp_path / policy, voipgw_seed, location=policy)
        assert (await alice_dials(env, dialled, extra=BY_VALUE)).status == 200
        invite = trunk_invite(env)
        assert invite.headers.get("Geolocation") is None, policy
        assert invite.headers.get("Geolocation-Routing") is None
        assert invite.content_type == "application/sdp"
        assert b"presence" not in invite.body
        await eventually(lambda env=env: location_record(env) is not None)  # type: ignore[misc]
        assert location_record(env)["dropped_for"] == ["carrier"]


async def test_all_passes_the_location_on_any_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await started(nursery, tmp_path, voipgw_seed, location="all")
    assert (await alice_dials(env, "+15551234", extra=BY_VALUE)).status == 200
    invite = trunk_invite(env)
    assert invite.headers.get("Geolocation") == BY_VALUE[0][1]
    assert PIDF in invite.body


async def test_a_dangling_cid_is_424_and_a_malformed_geolocation_400(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await started(nursery, tmp_path, voipgw_seed)
    dangling = [("Geolocation", "<cid:elsewhere@alice.example.com>")]
    final = await alice_dials(env, "112", extra=dangling)
    assert final.status == 424
    assert final.reason.startswith("Bad Location Information")
    assert final.headers.get("Geolocation-Error") == '100 ;code="Cannot Process Location"'
    final = await alice_dials(env, "112", extra=[("Geolocation", "cid:no-brackets@x")])
    assert final.status == 400
    assert "malformed Geolocation" in final.reason
    not_pidf = LOCATION_PART.replace(PIDF, b"just some text\r\n")
    final = await alice_dials(env, "112", extra=BY_VALUE, part=not_pidf)
    assert final.status == 424
    assert "not a PIDF-LO" in final.reason
    assert env.trunk.requests("INVITE") == []


async def test_a_required_location_part_is_not_415(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """handling=required (also its default, no Content-Disposition): passed where the policy
    passes it, dropped (and the call made all the same) where it does not."""
    required = LOCATION_PART.replace(b"render;handling=optional", b"render;handling=required")
    bare = LOCATION_PART.replace(b"Content-Disposition: render;handling=optional\r\n", b"")
    env = await started(nursery, tmp_path, voipgw_seed)
    assert (await alice_dials(env, "112", extra=BY_VALUE, part=required)).status == 200
    assert b"handling=required" in trunk_invite(env).body
    assert (await alice_dials(env, "+15551234", extra=BY_VALUE, part=bare)).status == 200
    assert b"presence" not in env.trunk.requests("INVITE")[1].body


async def test_geolocation_error_from_the_trunk_reaches_the_phone(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await started(nursery, tmp_path, voipgw_seed)
    env.trunk.auto = None
    sdp = env.alice.offer_sdp()
    call = await env.alice.invite(
        "sip:112@127.0.0.1:5060", sdp=located_body(sdp), content_type=MIXED, extra=BY_VALUE
    )
    assert (await call.final()).status == 407
    await call.authenticate()
    leg_b = await env.trunk.next_call()
    error = '300 ;code="Dereference Failure"'
    await env.trunk.respond(
        leg_b.incoming,  # type: ignore[arg-type]
        424,
        reason="Bad Location Information",
        extra=[("Geolocation-Error", error)],
    )
    final = await call.final()
    assert final.status == 424
    assert final.headers.get("Geolocation-Error") == error
    await eventually(lambda: env.calls == 0)


async def test_a_call_without_location_is_unchanged(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await started(nursery, tmp_path, voipgw_seed, location="all")
    assert (await alice_dials(env, "112", part=None)).status == 200
    invite = trunk_invite(env)
    assert invite.content_type == "application/sdp"
    assert "Geolocation" not in invite.headers
    await eventually(lambda: env.gateway.store.call_records_recent() != [])  # type: ignore[union-attr]
    assert location_record(env) is None


async def moves(env: B2bua, call: Any) -> Response:
    """alice, on ``call``, holds it (sendonly) with her new location (MOVED) in the re-INVITE;
    its final response."""
    exchange = await call.request(
        "INVITE",
        body=located_body(env.alice.offer_sdp(direction="sendonly"), MOVED),
        content_type=MIXED,
        extra=BY_VALUE,
    )
    return await exchange.final()


async def test_a_location_update_in_a_reinvite_reaches_the_emergency_trunk(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """An emergency caller who moves re-INVITEs with the new location (even handling=required:
    no 415): the trunk's re-INVITE has it, beside our SDP, byte for byte; a re-INVITE without
    location then carries our SDP alone; the record counts the update."""
    env = await started(nursery, tmp_path, voipgw_seed)
    call = await located_call(env, "112")
    assert (await moves(env, call)).status == 200
    moved = env.trunk.requests("INVITE")[-1]
    assert moved.headers.get("To") != trunk_invite_to(env)  # the re-INVITE, in the dialog
    assert moved.content_type is not None and moved.content_type.startswith("multipart/mixed")
    assert moved.headers.get("Geolocation") == "<cid:target123@alice.example.com>"
    assert moved.headers.get("Geolocation-Routing") == "yes"
    assert MOVED in moved.body and b"a=sendonly" in moved.body

    exchange = await call.request("INVITE", body=env.alice.offer_sdp(), content_type=SDP_TYPE)
    assert (await exchange.final()).status == 200
    plain = env.trunk.requests("INVITE")[-1]
    assert plain.content_type == SDP_TYPE and "Geolocation" not in plain.headers
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert location_record(env) == {
        "conveyed": "by value",
        "passed_to": ["carrier"],
        "dropped_for": [],
        "updates": 1,
    }


async def test_a_location_update_goes_where_the_policy_says_only(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """On a call that is not to an emergency number (the default policy keeps location from
    the trunk), and from the callee, an update is accepted and not passed on."""
    env = await started(nursery, tmp_path, voipgw_seed)
    call = await located_call(env, "+15551234")
    assert (await moves(env, call)).status == 200
    reinvite = env.trunk.requests("INVITE")[-1]
    assert reinvite.content_type == SDP_TYPE and b"a=sendonly" in reinvite.body
    assert b"presence" not in reinvite.body and "Geolocation" not in reinvite.headers
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_bad_location_update_is_left_out_and_the_reinvite_goes_on(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A Geolocation naming no part (a first INVITE's 424) does not refuse the hold it came
    with: the trunk gets the re-INVITE without location."""
    env = await started(nursery, tmp_path, voipgw_seed)
    call = await located_call(env, "112")
    exchange = await call.request(
        "INVITE",
        body=env.alice.offer_sdp(direction="sendonly"),
        content_type=SDP_TYPE,
        extra=[("Geolocation", "<cid:nowhere@alice.example.com>")],
    )
    assert (await exchange.final()).status == 200
    reinvite = env.trunk.requests("INVITE")[-1]
    assert b"a=sendonly" in reinvite.body and "Geolocation" not in reinvite.headers
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


def trunk_invite_to(env: B2bua) -> str | None:
    return env.trunk.requests("INVITE")[0].headers.get("To")


# -- location in UPDATE (RFC 6442 §4.1, RFC 3311), Geolocation-Error back (§4.3) -------------


def trunk_answers(
    env: B2bua, method: str, status: int, error: str | None, *, once: bool = False
) -> None:
    """The trunk answers ``method`` in a dialog with ``status`` and a Geolocation-Error
    ``error`` (an INVITE's 2xx with an answer to its SDP); other requests as usual."""

    async def answer(received: Received) -> bool:
        request = received.request
        if request.method != method:
            return False
        if once:
            env.trunk.in_dialog = None
        body = b""
        if method == "INVITE" and status == 200:
            body = env.trunk.answer_sdp(sdp_of(request.content_type, request.body))
        extra = [("Geolocation-Error", error)] if error is not None else []
        await env.trunk.respond(received, status, body=body, extra=extra)
        return True

    env.trunk.in_dialog = answer


async def test_a_location_update_in_an_update_reaches_the_trunk_and_its_answer_the_caller(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """An answered emergency call: the caller's UPDATE without an offer with its new location
    becomes our UPDATE to the trunk, the location part alone in our multipart body, session
    timer fields beside it; the trunk's answer is the caller's, Geolocation-Error and all,
    on a 200 as on a 424; the record notes the codes."""
    env = await started(nursery, tmp_path, voipgw_seed)
    call = await located_call(env, "112")
    trunk_answers(env, "UPDATE", 200, '100 ;code="Cannot Process Location"')
    answered = await update(call, MOVED_ONLY, BY_VALUE)
    assert answered.status == 200
    assert answered.headers.get("Geolocation-Error") == '100 ;code="Cannot Process Location"'
    [sent] = env.trunk.requests("UPDATE")
    assert sent.headers.get("Geolocation") == BY_VALUE[0][1]
    assert sent.headers.get("Geolocation-Routing") == "yes"
    assert (sent.content_type or "").startswith("multipart/mixed;boundary=voipgw-")
    assert MOVED in sent.body and b"application/sdp" not in sent.body
    assert sent.headers.get("Session-Expires") is not None  # it refreshes that leg too

    trunk_answers(env, "UPDATE", 424, '300 ;code="Dereference Failure"')
    refused = await update(call, b"", BY_REFERENCE)
    assert refused.status == 424
    assert refused.headers.get("Geolocation-Error") == '300 ;code="Dereference Failure"'
    by_reference = env.trunk.requests("UPDATE")[-1]
    assert by_reference.headers.get("Geolocation") == BY_REFERENCE[0][1]
    assert by_reference.body == b"" and by_reference.content_type is None
    env.trunk.in_dialog = None
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: location_record(env) is not None)
    record = location_record(env)
    assert record["updates"] == 2 and record["passed_to"] == ["carrier"]
    assert record["errors"] == [
        {"from": "carrier", "status": 200, "code": "100"},
        {"from": "carrier", "status": 424, "code": "300"},
    ]
    assert "civicAddress" not in str(record)


async def test_an_update_with_an_offer_carries_the_location_and_a_2xx_its_error(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """An UPDATE with an offer goes to the trunk as a re-INVITE, location beside our SDP; a
    Geolocation-Error on the trunk's 2xx reaches the caller on ours (RFC 6442 §4.3: a UAS
    may take the request and still say the location was no use)."""
    env = await started(nursery, tmp_path, voipgw_seed)
    call = await located_call(env, "112")
    trunk_answers(env, "INVITE", 200, '100 ;code="Cannot Process Location"', once=True)
    held = located_body(env.alice.offer_sdp(direction="sendonly"), MOVED)
    answered = await update(call, held, BY_VALUE)
    assert answered.status == 200 and b"a=recvonly" in answered.body
    assert answered.headers.get("Geolocation-Error") == '100 ;code="Cannot Process Location"'
    reinvite = env.trunk.requests("INVITE")[-1]
    assert reinvite.headers.get("Geolocation") == BY_VALUE[0][1]
    assert MOVED in reinvite.body and b"a=sendonly" in reinvite.body
    # A re-INVITE without location: a Geolocation-Error on its answer is none of ours.
    trunk_answers(env, "INVITE", 200, '100 ;code="Cannot Process Location"', once=True)
    exchange = await call.request("INVITE", body=env.alice.offer_sdp(), content_type=SDP_TYPE)
    plain = await exchange.final()
    assert plain.status == 200 and "Geolocation-Error" not in plain.headers
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: location_record(env) is not None)
    assert location_record(env)["errors"] == [{"from": "carrier", "status": 200, "code": "100"}]


async def test_a_location_update_before_the_answer_reaches_the_ringing_trunk(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The emergency caller moves while the PSAP rings: its UPDATE in our early dialog goes to
    the trunk in its early dialog (the 180's), answered with the trunk's answer; the call is
    then answered in that same dialog."""
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
    trunk_answers(env, "UPDATE", 200, '200 ;code="Permission To Use Location Information"')
    moved = await call.early_request("UPDATE", body=MOVED_ONLY, content_type=MIXED, extra=BY_VALUE)
    answered = await moved.final()
    assert answered.status == 200
    assert (answered.headers.get("Geolocation-Error") or "").startswith("200 ;")
    [sent] = env.trunk.requests("UPDATE")
    assert sent.to.tag == leg_b.local_tag  # in the 180's early dialog
    assert sent.headers.get("Geolocation") == BY_VALUE[0][1] and MOVED in sent.body
    assert sent.headers.get("Session-Expires") is None  # no session to refresh yet
    await leg_b.answer()
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: location_record(env) is not None)
    record = location_record(env)
    assert record["updates"] == 1
    assert record["errors"] == [{"from": "carrier", "status": 200, "code": "200"}]


async def test_a_location_update_that_cannot_go_leaves_the_callers_update_answered(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A trunk that answers our location UPDATE 501 (it takes none) does not fail the caller's
    UPDATE, which is a session refresh too: 200. Where the policy keeps location from the
    trunk, nothing goes to it at all; a bad update is left out the same way."""
    env = await started(nursery, tmp_path, voipgw_seed)
    call = await located_call(env, "112")
    trunk_answers(env, "UPDATE", 501, None)
    answered = await update(call, MOVED_ONLY, BY_VALUE)
    assert answered.status == 200 and "Geolocation-Error" not in answered.headers
    assert len(env.trunk.requests("UPDATE")) == 1
    dangling = [("Geolocation", "<cid:nowhere@alice.example.com>")]
    assert (await update(call, b"", dangling)).status == 200
    assert len(env.trunk.requests("UPDATE")) == 1
    env.trunk.in_dialog = None
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)

    env = await started(nursery, tmp_path / "never", voipgw_seed, location="never")
    call = await located_call(env, "112")
    assert (await update(call, MOVED_ONLY, BY_VALUE)).status == 200
    assert env.trunk.requests("UPDATE") == []
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_late_offer_call_gets_the_geolocation_error_of_the_trunks_2xx(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A caller's INVITE without SDP, its location part alone: the trunk's 2xx (with the
    offer) says Geolocation-Error 100, and so does our 200 with the offer to the caller."""
    env = await started(nursery, tmp_path, voipgw_seed)
    env.trunk.auto = None
    call = await env.alice.invite(
        "sip:112@127.0.0.1:5060", sdp=MOVED_ONLY, content_type=MIXED, extra=BY_VALUE
    )
    assert (await call.final()).status == 407
    await call.authenticate()
    leg_b = await env.trunk.next_call()
    assert leg_b.invite.headers.get("Geolocation") == BY_VALUE[0][1] and MOVED in leg_b.invite.body
    assert leg_b.incoming is not None
    error = '100 ;code="Cannot Process Location"'
    await env.trunk.respond(
        leg_b.incoming,
        200,
        body=env.trunk.offer_sdp(),
        extra=[("Geolocation-Error", error)],
    )
    answered = await call.final()
    assert answered.status == 200 and b"m=audio" in answered.body
    assert answered.headers.get("Geolocation-Error") == error
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: location_record(env) is not None)
    assert location_record(env)["errors"] == [{"from": "carrier", "status": 200, "code": "100"}]


async def test_a_gone_dialog_ends_the_call_only_once_answered(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """481 to our location UPDATE: before the answer only that early dialog is gone (RFC 3261
    §12.2.1.2), so the caller's UPDATE gets 200 and the call rings on; in the answered call
    the trunk's dialog is gone, so the call ends, as for a re-INVITE: the caller gets 500 with
    a Warning naming the 481 (not the 481, which would end its dialog under our BYE), then a
    BYE saying why."""
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
    trunk_answers(env, "UPDATE", 481, None)
    early = await call.early_request("UPDATE", body=MOVED_ONLY, content_type=MIXED, extra=BY_VALUE)
    assert (await early.final()).status == 200
    await leg_b.answer()
    assert (await call.final()).status == 200
    lost = await update(call, MOVED_ONLY, BY_VALUE)
    assert lost.status == 500
    assert "the B leg answered 481" in (lost.headers.get("Warning") or "")
    bye = await env.alice.next_request("BYE", timeout=5)
    assert "cause=481" in (bye.request.headers.get("Reason") or "")
    await eventually(lambda: env.calls == 0)
    assert len(env.trunk.requests("UPDATE")) == 2
    assert not env.trunk.requests("BYE")  # its dialog is gone: no BYE into it


async def test_a_reinvite_with_location_whose_dialog_is_gone_carries_the_geolocation_error(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The caller's re-INVITE with its new location answered 481 by the trunk, with a
    Geolocation-Error: the call ends (RFC 3261 §12.2.1.2), and the caller's 500 carries the
    error (RFC 6442 §4.3: it concerns the location the caller sent, however the request
    ended), as a failure that keeps the call does."""
    env = await started(nursery, tmp_path, voipgw_seed)
    call = await located_call(env, "112")
    error = '300 ;code="Dereference Failure"'
    trunk_answers(env, "INVITE", 481, error, once=True)
    lost = await moves(env, call)
    assert lost.status == 500
    assert "the B leg answered 481" in (lost.headers.get("Warning") or "")
    assert lost.headers.get("Geolocation-Error") == error
    await env.alice.next_request("BYE", timeout=5)
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: "errors" in (location_record(env) or {}))
    assert location_record(env)["errors"] == [{"from": "carrier", "status": 481, "code": "300"}]


async def test_strict_a_location_update_answered_404_ends_the_call_with_the_error(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """``[sip] in_dialog_failures = "strict"``: our location UPDATE answered 404 (RFC 5057 §5.1:
    the trunk's dialog is broken) ends the call; the caller's UPDATE gets 500 with the trunk's
    Geolocation-Error, then a BYE; the trunk none (its dialog is gone). Lenient, the 404 goes
    back to the caller as it is and the call goes on. (A call that is not an emergency call:
    the trunk takes every caller's location; an emergency call keeps the lenient reading.)"""
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"prefixes": ["+1", "112"], "location": "all"},
        sip={"in_dialog_failures": "strict"},
    )
    call = await located_call(env, "+15551234567")
    error = '100 ;code="Cannot Process Location"'
    trunk_answers(env, "UPDATE", 404, error)
    lost = await update(call, MOVED_ONLY, BY_VALUE)
    assert lost.status == 500
    assert "the B leg answered 404" in (lost.headers.get("Warning") or "")
    assert lost.headers.get("Geolocation-Error") == error
    bye = await env.alice.next_request("BYE", timeout=5)
    assert "cause=404" in (bye.request.headers.get("Reason") or "")
    await eventually(lambda: env.calls == 0)
    assert not env.trunk.requests("BYE")


@pytest.mark.parametrize(("method", "status"), [("UPDATE", 404), ("UPDATE", 502), ("INVITE", 480)])
async def test_strict_never_ends_an_emergency_call_for_more_than_a_gone_dialog(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    method: str,
    status: int,
) -> None:
    """An emergency call is read leniently whatever ``[sip] in_dialog_failures`` says, as a
    drain or a revoked certificate does not cut one: an emergency network's 404, 502 or 480 to
    the caller's location update (an ESRP whose location server failed) goes back to the
    caller with its Geolocation-Error and the call goes on; only a 481 or 408 (the trunk's
    dialog gone, RFC 3261 §12.2.1.2) still ends it."""
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"prefixes": ["+1", "112"]},
        sip={"in_dialog_failures": "strict"},
    )
    call = await located_call(env, "112")
    error = '100 ;code="Cannot Process Location"'
    trunk_answers(env, method, status, error, once=True)
    if method == "UPDATE":
        refused = await update(call, MOVED_ONLY, BY_VALUE)
    else:
        refused = await moves(env, call)
    assert refused.status == status and refused.headers.get("Geolocation-Error") == error
    await trio.sleep(5)
    assert env.calls == 1 and not env.alice.requests("BYE") and not env.trunk.requests("BYE")
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_lenient_a_location_update_answered_404_goes_back_and_the_call_goes_on(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await started(nursery, tmp_path, voipgw_seed)
    call = await located_call(env, "112")
    error = '100 ;code="Cannot Process Location"'
    trunk_answers(env, "UPDATE", 404, error)
    refused = await update(call, MOVED_ONLY, BY_VALUE)
    assert refused.status == 404 and refused.headers.get("Geolocation-Error") == error
    await trio.sleep(5)
    assert env.calls == 1 and not env.alice.requests("BYE")
    env.trunk.in_dialog = None
    assert (await call.bye()).status == 200


async def test_a_transfer_carries_no_location(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The emergency caller transfers the PSAP (a trunk policy of "all", which would pass a
    location to any trunk call): the target's INVITE has no Geolocation and no location part
    (the transferor's location is not the transferee's), nor has the transferee's re-INVITE.
    The PSAP's own REFER is 403, as any trunk's."""
    env = await started(nursery, tmp_path, voipgw_seed, location="all")
    call = await located_call(env, "112")
    [leg_b] = env.trunk.calls
    refer = await leg_b.request("REFER", extra=[("Refer-To", "<sip:+15550123@127.0.0.1>")])
    assert (await refer.final()).status == 403
    exchange = await call.request("REFER", extra=[("Refer-To", "<sip:+15550123@127.0.0.1>")])
    assert (await exchange.final()).status == 202
    while True:
        notify = await env.alice.next_request("NOTIFY")
        if b"SIP/2.0 1" not in notify.request.body:
            break
    assert notify.request.body.startswith(b"SIP/2.0 200")
    first, *later = env.trunk.requests("INVITE")
    assert first.headers.get("Geolocation") == BY_VALUE[0][1]
    assert len(later) == 2  # the target's INVITE, the transferee's re-INVITE
    for invite in later:
        assert "Geolocation" not in invite.headers and b"presence" not in invite.body
