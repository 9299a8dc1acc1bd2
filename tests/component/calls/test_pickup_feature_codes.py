"""Call pickup by feature code (``[feature_codes]``, gateway/core/calls/pickup.py): a phone
without a BLF key dials ``*8`` (a call ringing any account it may pick up from) or ``**alice``
(a call ringing alice), and takes the call as a BLF pickup would: its INVITE answered by the
ringing call, the phone that rang CANCELled "Call completed elsewhere". Refusals: 480 with
nothing to pick up, 403 outside every group with ``pickup``; without such a group the codes
are ordinary numbers. In-memory network, virtual time; RTP on real sockets through the relay.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from gateway.core.sip.dialog import Dialog
from gateway.core.sip.message import Request, Response
from gateway.core.sip.serializer import serialize_message
from gateway.core.sip.uri import remove_param
from gateway.testing.sip_agent import SipAgent, simple_sdp
from tests.component.calls.b2bua_env import GW, T1, eventually, next_within
from tests.component.calls.dialog_event_watch import start
from tests.component.calls.pickup_calls import (
    BOB_PORT,
    PICKUP,
    assert_rtp_between_caller_and_bob,
)
from tests.component.calls.pickup_feature_calls import dial_call, ring_alice
from tests.component.calls.presence_subscriptions import BOB


async def dial(bob: SipAgent, user: str) -> Response:
    return (await dial_call(bob, user))[1]


async def test_bob_dials_the_pickup_code_and_takes_the_call_ringing_alice(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    incoming, ringing = await ring_alice(env)
    picked, to_bob = await dial_call(bob, "*8")
    assert to_bob.status == 200, to_bob.reason
    to_caller = await incoming.final()
    assert to_caller.status == 200, to_caller.reason
    cancel = (await env.alice.next_request("CANCEL")).request
    assert cancel.call_id == ringing.call_id
    assert cancel.headers.get("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    assert env.calls == 1  # the pickup is no call of its own
    assert env.gateway.calls is not None
    (call,) = env.gateway.calls.calls
    assert call.b is not None and call.b.peer_name == "bob"
    assert call.security_record()["picked_up"] == {"by": "bob", "ringing": "alice"}
    await assert_rtp_between_caller_and_bob(to_caller, to_bob)
    assert (await picked.bye()).status == 200
    assert (await env.trunk.next_request("BYE")).request.call_id == incoming.call_id
    await eventually(lambda: env.calls == 0)


async def test_the_pickup_code_takes_the_call_that_came_in_first(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    first, ringing_first = await ring_alice(env)
    await trio.sleep(1)
    second, ringing_second = await ring_alice(env)
    assert (await dial(bob, "*8")).status == 200
    assert (await first.final()).status == 200
    cancel = (await env.alice.next_request("CANCEL")).request
    assert cancel.call_id == ringing_first.call_id
    # The second call rings on; the code again takes it.
    assert all(r.status < 200 for r in second.exchange.responses)  # type: ignore[union-attr]
    assert (await dial(bob, "*8")).status == 200
    assert (await second.final()).status == 200
    cancel = (await env.alice.next_request("CANCEL")).request
    assert cancel.call_id == ringing_second.call_id
    assert env.calls == 2
    for call in (first, second):
        assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_directed_pickup_takes_a_call_ringing_the_account_named(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    assert (await dial(bob, "**alice")).status == 480  # nothing rings alice yet
    incoming, ringing = await ring_alice(env)
    # Nobody called carol (she is no account at all): the same 480, nothing learnt.
    refused = await dial(bob, "**carol")
    assert (refused.status, refused.reason) == (480, "Temporarily Unavailable (no call to pick up)")
    assert env.calls == 1
    assert (await dial(bob, "**alice")).status == 200
    assert (await incoming.final()).status == 200
    assert (await env.alice.next_request("CANCEL")).request.call_id == ringing.call_id
    assert (await incoming.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert (await dial(bob, "*8")).status == 480  # nothing rings any more


async def test_a_caller_outside_every_pickup_group_gets_403(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # alice and carol share a pickup group; bob is in none.
    groups = [{"name": "sales", "accounts": ["alice", "carol"], "pickup": True}]
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=groups)
    _, ringing = await ring_alice(env)
    refused = await dial(bob, "*8")
    assert refused.status == 403
    assert (await dial(bob, "**alice")).status == 403
    assert await next_within(env.alice, "CANCEL", 1) is None  # alice's phone rings on
    assert ringing.answered is None


async def test_codes_are_ordinary_numbers_when_turned_off_or_without_a_pickup_group(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(
        nursery,
        tmp_path,
        voipgw_seed,
        groups=[PICKUP],
        feature_codes={"pickup": "#8", "directed_pickup": ""},
    )
    incoming, ringing = await ring_alice(env)
    # "*8" and "**alice" are dial strings again, routed as any number bob dials: no account
    # and no trunk takes them (the carrier serves +1 numbers).
    assert (await dial(bob, "*8")).status == 404
    assert (await dial(bob, "**alice")).status == 404
    assert await next_within(env.alice, "CANCEL", 1) is None
    assert (await dial(bob, "%238")).status == 200  # "#8", escaped (RFC 3261 §19.1.2)
    assert (await incoming.final()).status == 200
    assert (await env.alice.next_request("CANCEL")).request.call_id == ringing.call_id


async def test_without_a_group_with_pickup_the_codes_are_routed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed)  # a watch group without pickup
    _, ringing = await ring_alice(env)
    assert (await dial(bob, "*8")).status == 404
    assert (await dial(bob, "**alice")).status == 404
    assert await next_within(env.alice, "CANCEL", 1) is None
    assert ringing.answered is None


async def test_a_pickup_invite_without_contact_gets_400_and_the_call_rings_on(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What the pickup fuzz found (test_b2bua_fuzzed_pickup.py): a picker's INVITE without
    # Contact reached the ringing call, whose dialog for the picker could not be made: the call
    # failed as an internal error (ERROR logged), the caller's call lost. RFC 3261 §8.1.1.8: 400.
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    incoming, ringing = await ring_alice(env)
    invite = bob.new_request(
        "INVITE",
        "sip:*8@127.0.0.1:5060",
        body=simple_sdp("127.0.0.1", BOB_PORT),
        content_type="application/sdp",
    )
    _, final = await bob.send_authenticated(invite.with_headers(invite.headers.remove("Contact")))
    assert final.status == 400
    assert "Contact" in final.reason
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert env.calls == 1 and ringing.answered is None  # still ringing alice
    await ringing.answer()
    assert (await incoming.final()).status == 200
    assert (await incoming.bye()).status == 200
    await eventually(lambda: env.calls == 0)


def _without_from_tag(request: Request) -> Request:
    """``request`` as an RFC 2543 UAC sends it: a From without tag."""
    untagged = request.from_.with_params(remove_param(request.from_.params, "tag"))
    return request.with_headers(request.headers.set("From", str(untagged)))


async def test_a_pickup_invite_without_from_tag_is_taken_as_a_first_invite_is(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The pickup fuzz (test_b2bua_fuzzed_pickup.py) saw such an INVITE picked up. RFC 3261
    # §8.1.1.3 wants a From tag, but an RFC 2543 UAC sends none and the gateway takes a first
    # INVITE without one (its dialog's remote tag is null, §12.1.1; dialog.py DialogId), so a
    # pickup INVITE gets the same: 200, confirmed by an ACK without From tag (the gateway finds
    # its dialog by our To tag), the picked-up call up until that UAC's BYE.
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    incoming, _ = await ring_alice(env)
    invite = bob.new_request(
        "INVITE",
        "sip:*8@127.0.0.1:5060",
        body=simple_sdp("127.0.0.1", BOB_PORT),
        content_type="application/sdp",
    )
    sent, final = await bob.send_authenticated(_without_from_tag(invite))
    assert sent.from_.tag is None
    assert final.status == 200, final.reason
    assert (await incoming.final()).status == 200
    # Bob's side of the dialog, built as if the From had a tag, sent without it.
    dialog = Dialog.create_uac(
        sent.with_headers(sent.headers.set("From", str(invite.from_))), final
    )
    ack = dialog.create_ack(final.cseq.number, via=bob.new_via())
    start_at = len(env.network.capture)
    await bob.socket.sendto(serialize_message(_without_from_tag(ack)), GW)
    await trio.sleep(64 * T1 + 1)  # past the 2xx's retransmissions (RFC 3261 §13.3.1.4)
    to_bob = [
        d.data
        for d in env.network.capture[start_at:]
        if d.src == GW and d.dst[0] == BOB[0] and d.data.startswith(b"SIP/2.0 200")
    ]
    assert to_bob == [], "the ACK without From tag did not confirm the 2xx"
    assert env.calls == 1 and incoming.dialog is not None
    assert incoming.dialog.state.value != "terminated"
    bye = _without_from_tag(dialog.create_request("BYE", via=bob.new_via()))
    assert (await (await bob.send(bye, GW)).final()).status == 200
    assert (await env.trunk.next_request("BYE")).request.call_id == incoming.call_id
    await eventually(lambda: env.calls == 0)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
