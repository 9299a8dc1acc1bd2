"""More of the B2BUA end to end on the in-memory network, in virtual time: parallel ringing of
two registered contacts, early media, refused SDP offers, media inactivity, media port release,
a failing routing plugin, and no transit between trunks.

The set-up is b2bua_env.py's (gateway at 127.0.0.1, trunk "carrier" at 127.0.0.2, alice at
127.0.0.3); a second phone of alice registers from 127.0.0.5 and a second trunk "pbx" (prefix
+44) sits at 127.0.0.4 where a test needs them. No RTP is sent.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from gateway.core.calls import records
from gateway.core.hookspecs import hookimpl
from gateway.core.ids import SeededIds
from gateway.core.interfaces import Caller, Directory, LegInfo, RouteDecision
from gateway.core.logs import WITHHELD
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.dialog import DialogState
from gateway.core.sip.message import Request, Response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.store.sqlite import SqliteStore
from gateway.testing.sip_agent import AutoAnswer, SipAgent, sdp_connection, simple_sdp
from tests.component.calls.b2bua_env import (
    ALICE,
    ALICE_DID,
    GW,
    T1,
    answered_call,
    assert_media_via_gateway,
    eventually,
    next_within,
    sent,
    start_b2bua,
)
from tests.component.calls.b2bua_scenarios import (
    ALICE2,
    assert_no_media_ports_held,
    relay,
    second_phone,
)
from tests.component.calls.trunk_auth_calls import PBX, PBX_TRUNK


def parsed(data: bytes) -> Request | Response:
    return parse_message_untrusted(data)


def formats(body: bytes) -> tuple[str, ...]:
    return parse_sdp_untrusted(body).media[0].formats


def sdp_version(body: bytes) -> int:
    return parse_sdp_untrusted(body).origin.session_version


# -- 1. parallel ringing ------------------------------------------------------------------------


async def test_parallel_ringing_the_first_200_wins_and_the_other_phone_is_cancelled(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    phone2 = await second_phone(env, nursery, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg1 = await env.alice.next_call(timeout=1)
    leg2 = await phone2.next_call(timeout=1)
    assert leg1.incoming is not None and leg2.incoming is not None
    # Both contacts are rung at once (RFC 3261 §16.6-style parallel forking), each on a B leg of
    # its own, both with the relay's B-side address.
    assert abs(leg1.incoming.at - leg2.incoming.at) < 0.005
    assert leg1.call_id != leg2.call_id
    assert_media_via_gateway(leg1.invite.body)
    assert sdp_connection(leg1.invite.body) == sdp_connection(leg2.invite.body)

    await leg1.ring()
    await leg2.ring()
    assert call.exchange is not None
    await call.exchange.wait_for(lambda r: r.status == 180)
    await leg2.answer()
    final = await call.final()
    assert final.status == 200
    assert_media_via_gateway(final.body)
    assert (await phone2.next_request("ACK", timeout=1)).request.call_id == leg2.call_id

    # The phone that did not answer is CANCELled (RFC 3261 §9.1) and its 487 is ACKed by the
    # gateway's INVITE client transaction (§17.1.1.3), on the INVITE's branch.
    cancel = await env.alice.next_request("CANCEL", timeout=1)
    assert cancel.request.call_id == leg1.call_id
    # RFC 3326: it says why, so that the phone shows no missed call.
    assert cancel.request.headers.get("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    assert leg1.answered == 487
    await eventually(lambda: bool(sent(env.network.capture, GW, ALICE, b"ACK ")), timeout=2)
    [ack_487] = [parsed(d.data) for d in sent(env.network.capture, GW, ALICE, b"ACK ")]
    assert isinstance(ack_487, Request)
    assert ack_487.call_id == leg1.call_id
    assert ack_487.cseq.number == leg1.invite.cseq.number
    assert ack_487.top_via.branch == leg1.invite.top_via.branch
    # Media of the call goes to the phone that answered.
    [stream] = relay(env).streams
    assert stream.b.rtp_destination == (ALICE2[0], 30010)

    assert (await call.bye()).status == 200
    bye = await phone2.next_request("BYE", timeout=1)
    assert bye.request.call_id == leg2.call_id
    await eventually(lambda: env.calls == 0)
    assert env.call_lookups == 0  # both B legs' dialogs forgotten with the call
    assert env.alice.requests("BYE") == []  # the cancelled phone never had a dialog
    assert leg1.dialog is None
    assert leg2.dialog is not None and leg2.dialog.state is DialogState.TERMINATED
    assert phone2.awaiting_ack == [] and phone2.never_acked == []


async def test_parallel_ringing_both_answer_at_once_the_late_200_is_acked_and_byed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    phone2 = await second_phone(env, nursery, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg1 = await env.alice.next_call(timeout=1)
    leg2 = await phone2.next_call(timeout=1)
    await leg1.ring()
    await leg2.ring()
    assert call.exchange is not None
    await call.exchange.wait_for(lambda r: r.status == 180)
    # Phone 2 answers 1 ms before phone 1: its 200 reaches the gateway first and wins.
    await leg2.answer()
    await trio.sleep(0.001)
    await leg1.answer()
    final = await call.final()
    assert final.status == 200

    # The loser's 200 is ACKed (RFC 3261 §13.2.2.4) and its dialog ended with BYE at once.
    ack1 = await env.alice.next_request("ACK", timeout=1)
    assert ack1.request.call_id == leg1.call_id
    bye1 = await env.alice.next_request("BYE", timeout=1)
    assert bye1.request.call_id == leg1.call_id
    assert bye1.request.headers.get("Reason") is not None
    assert leg1.dialog is not None and leg1.dialog.state is DialogState.TERMINATED
    # The winner is in the call: ACKed, not BYEd.
    assert (await phone2.next_request("ACK", timeout=1)).request.call_id == leg2.call_id
    assert phone2.requests("BYE") == []
    [stream] = relay(env).streams
    assert stream.b.rtp_destination == (ALICE2[0], 30010)

    # The caller saw exactly one 200: one dialog, one answer, never a second 2xx.
    await trio.sleep(4 * T1)
    oks = [r for r in call.exchange.responses if r.status == 200]
    assert len({(r.to.tag, r.body) for r in oks}) == 1
    ok_datagrams = sent(env.network.capture, GW, env.trunk.address, b"SIP/2.0 200 ")
    assert len({d.data for d in ok_datagrams}) == 1

    assert (await call.bye()).status == 200
    assert (await phone2.next_request("BYE", timeout=1)).request.call_id == leg2.call_id
    await eventually(lambda: env.calls == 0)
    assert len(env.alice.requests("BYE")) == 1
    assert env.alice.awaiting_ack == [] and env.alice.never_acked == []
    assert phone2.awaiting_ack == [] and phone2.never_acked == []


# -- 2. early media -----------------------------------------------------------------------------


async def test_early_media_183_with_sdp_then_200_with_a_different_answer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call(timeout=1)
    assert leg_b.incoming is not None
    early_sdp = simple_sdp(ALICE[0], 30000, version=1, formats=("0", "8", "101"))
    await env.alice.respond(leg_b.incoming, 183, body=early_sdp)
    assert call.exchange is not None
    early = await call.exchange.wait_for(lambda r: r.status == 183, timeout=1)

    # The caller's early media comes from the relay, not from alice (RFC 3261 §13.2.1 answer in a
    # provisional response; all media via us).
    assert_media_via_gateway(early.body)
    assert formats(early.body) == ("0", "8", "101")
    assert early.to.tag is not None
    [stream] = relay(env).streams
    assert stream.b.rtp_destination == (ALICE[0], 30000)

    # The 200 carries a changed answer (another port, PCMA only): it reaches the caller.
    final_sdp = simple_sdp(ALICE[0], 30002, version=2, formats=("8",))
    await leg_b.answer(200, sdp=final_sdp)
    final = await call.final()
    assert final.status == 200
    assert call.exchange.statuses == [100, 183, 200]
    assert final.to.tag == early.to.tag  # the early dialog is the one confirmed (§12.1)
    assert sdp_connection(final.body) == sdp_connection(early.body)  # the caller's relay port
    # PCMA; telephone-event stays for the caller, who offered it: alice's final answer has
    # none, so the gateway interworks DTMF (docs/architecture.md "DTMF interworking").
    assert formats(final.body) == ("8", "101")
    assert sdp_version(final.body) > sdp_version(early.body)  # changed SDP, new o= version
    assert relay(env).streams == frozenset({stream})
    assert stream.b.rtp_destination == (ALICE[0], 30002)

    await env.alice.next_request("ACK", timeout=1)
    assert (await call.bye()).status == 200
    assert (await env.alice.next_request("BYE", timeout=1)).request.call_id == leg_b.call_id
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)


# -- 3. refused offers --------------------------------------------------------------------------

MALFORMED_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
    b"m=audio forty RTP/AVP 0\r\n"
)
SRTP_ONLY_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
)


@pytest.mark.parametrize(
    ("body", "warning_says"),
    [
        (MALFORMED_SDP, ["m= port is not a number"]),
        (SRTP_ONLY_SDP, ["encrypted media", "RTP/SAVP", "sdes key exchange is not enabled"]),
    ],
    ids=["malformed-sdp", "srtp-only"],
)
async def test_an_offer_the_gateway_cannot_relay_is_488_with_a_warning(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    body: bytes,
    warning_says: list[str],
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    started = trio.current_time()
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=body)
    assert call.invite.body == body
    final = await call.final()
    assert final.status == 488
    assert trio.current_time() - started < 0.1
    # RFC 3261 §20.43: a warning in the 488 says what is wrong (399: miscellaneous, by us).
    warnings = final.headers.get_all("Warning")
    assert len(warnings) == 1
    assert warnings[0].startswith("399 ")
    for text in warning_says:
        assert text in warnings[0]

    await eventually(lambda: env.calls == 0)
    await trio.sleep(2)
    # Nothing reached the callee, and no media port was taken.
    assert env.alice.requests("INVITE") == []
    assert [d for d in env.network.capture if d.dst == ALICE and d.time >= started] == []
    assert_no_media_ports_held(env)


async def test_call_records_left_unsaved_are_saved_when_the_gateway_stops(
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No periodic save during this test: only the one at stop can keep the record.
    monkeypatch.setattr(records, "FLUSH_INTERVAL", 3600.0)
    async with trio.open_nursery() as gateway_nursery:
        env = await start_b2bua(gateway_nursery, tmp_path, voipgw_seed)
        call, _ = await answered_call(env)
        assert (await call.bye()).status == 200
        await eventually(lambda: env.calls == 0)
        assert env.gateway.calls is not None and env.gateway.calls.records is not None
        assert env.gateway.calls.records.pending == 1
        gateway_nursery.cancel_scope.cancel()

    store = SqliteStore.open(tmp_path / "state")
    try:
        [record] = store.call_records_recent()
    finally:
        store.close()
    assert record.call_id.startswith(call.call_id + ";")
    assert record.answered_at is not None and record.ended_at is not None
    assert record.end_reason == "BYE from A leg"


# -- 4. media inactivity ------------------------------------------------------------------------


async def test_a_call_without_media_is_ended_after_the_inactivity_timeout(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, inactivity_timeout=10)
    call, leg_b = await answered_call(env)
    answered_at = trio.current_time()
    assert len(relay(env).streams) == 1

    bye_b = await env.alice.next_request("BYE", timeout=20)
    bye_a = await env.trunk.next_request("BYE", timeout=20)
    assert bye_a.request.call_id == call.call_id
    assert bye_b.request.call_id == leg_b.call_id
    for bye in (bye_a, bye_b):
        assert 10 <= bye.at - answered_at <= 15
        # RFC 3326: the BYE says why the gateway ended the call.
        reason = bye.request.headers.get("Reason")
        assert reason is not None
        assert "text=" in reason and "media" in reason.lower()

    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)
    store = env.gateway.store
    assert store is not None
    # Call records reach the store in batches (gateway.core.calls.records).
    await eventually(lambda: [r.ended_at for r in store.call_records_recent()] != [None])
    [record] = store.call_records_recent()
    assert record.to_uri == env.did_uri(ALICE_DID)
    assert record.answered_at is not None and record.ended_at is not None
    assert record.end_reason is not None
    assert "no media" in record.end_reason and "10" in record.end_reason


@pytest.mark.parametrize("hold", ["inactive", "sendonly"])
async def test_a_call_on_hold_may_be_silent_for_the_hold_timeout_and_gets_it_again_on_resume(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    hold: str,
) -> None:
    # A held phone may send nothing, RTCP included: the inactivity timeout (10 s) would end
    # the call; on hold it gets hold_timeout (100 s) instead, counted from the hold.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, inactivity_timeout=10, hold_timeout=100)
    call, _ = await answered_call(env)
    await trio.sleep(4)
    held = await call.reinvite(env.trunk.offer_sdp(direction=hold))
    assert held.status == 200
    held_at = trio.current_time()
    assert await next_within(env.trunk, "BYE", 80) is None
    # Resumed 80 s into the silence: the resume starts the count again, with 10 s.
    assert (await call.reinvite(env.trunk.offer_sdp())).status == 200
    resumed_at = trio.current_time()
    assert trio.current_time() - held_at < 100
    bye = await env.trunk.next_request("BYE", timeout=20)
    assert 10 <= bye.at - resumed_at <= 15
    assert "no media for 10 s" in (bye.request.headers.get("Reason") or "")
    await eventually(lambda: env.calls == 0)


async def test_a_call_on_hold_and_silent_past_the_hold_timeout_is_ended(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, inactivity_timeout=10, hold_timeout=100)
    call, _ = await answered_call(env)
    assert (await call.reinvite(env.trunk.offer_sdp(direction="inactive"))).status == 200
    held_at = trio.current_time()
    bye = await env.trunk.next_request("BYE", timeout=120)
    assert 100 <= bye.at - held_at <= 105
    assert "no media for 100 s on hold" in (bye.request.headers.get("Reason") or "")


# -- 5. media ports are released ----------------------------------------------------------------


async def test_media_ports_are_released_after_normal_rejected_and_cancelled_calls(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    assert_no_media_ports_held(env)

    # A normal call holds one stream (a port pair facing each leg) until it ends.
    call, _ = await answered_call(env)
    assert len(relay(env).streams) == 1
    assert relay(env).allocator.in_use == 2
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)

    # Rejected by the callee.
    env.alice.auto = AutoAnswer(status=486)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 486
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)

    # Cancelled by the caller while ringing.
    env.alice.auto = AutoAnswer(status=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert call.exchange is not None
    await call.exchange.wait_for(lambda r: r.status == 180)
    assert relay(env).allocator.in_use == 2
    await call.cancel()
    assert (await call.final()).status == 487
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)
    assert len(env.alice.requests("INVITE")) == 3


# -- 6. a failing routing plugin -----------------------------------------------------------------


class FailingPolicy:
    """A plugin whose gateway_media_security_policy hook raises."""

    @hookimpl
    def gateway_media_security_policy(self, leg: LegInfo) -> None:
        raise LookupError("policy table")


async def test_a_failing_media_policy_hook_ends_the_call_naming_the_plugin(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, plugins=[("failing-policy", FailingPolicy())]
    )
    with caplog.at_level(logging.ERROR, logger="gateway.core.calls"):
        call = await env.trunk.invite(env.did_uri(ALICE_DID))
        assert (await call.final()).status == 500
        await eventually(lambda: env.calls == 0)
    assert (
        "PluginHookError: plugin 'failing-policy' raised LookupError in "
        "gateway_media_security_policy" in caplog.text
    )
    assert "policy table" not in caplog.text


class RouterFailingOnce:
    """A plugin whose gateway_route_call hook raises for the first call and defers afterwards."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def gateway_route_call(
        self, request: Request, caller: Caller, directory: Directory
    ) -> RouteDecision | None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("router bug")
        return None


async def test_a_failing_route_call_hook_ends_only_that_call_with_500(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = RouterFailingOnce()
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, plugins=[("failing-router", router)])
    with caplog.at_level(logging.ERROR, logger="gateway.core.calls"):
        started = trio.current_time()
        call = await env.trunk.invite(env.did_uri(ALICE_DID))
        final = await call.final()
        assert final.status == 500
        assert trio.current_time() - started < 0.1
        await eventually(lambda: env.calls == 0)
    assert router.calls == 1
    assert env.alice.requests("INVITE") == []
    assert_no_media_ports_held(env)
    # The plugin's exception is logged with its traceback (STYLE.md habit 6: a failure boundary),
    # its type but not its text (gateway/core/logs.py).
    failures = [r for r in caplog.records if r.exc_text is not None]
    assert len(failures) == 1
    assert f"RuntimeError: {WITHHELD}" in caplog.text and "router bug" not in caplog.text
    # pluggy's hook call does not say whose hook raised: the core does, in the traceback's last
    # line and in the call's record.
    assert (
        "PluginHookError: plugin 'failing-router' raised RuntimeError in gateway_route_call"
        in caplog.text
    )
    records = env.gateway.calls.records if env.gateway.calls is not None else None
    assert records is not None
    records.flush()
    assert env.gateway.store is not None
    (record,) = env.gateway.store.call_records_recent()
    assert record.end_reason == (
        "internal error: plugin 'failing-router' raised RuntimeError in gateway_route_call"
    )

    # The gateway keeps serving: the next call goes through.
    call, leg_b = await answered_call(env)
    assert router.calls == 2
    assert (await call.bye()).status == 200
    assert (await env.alice.next_request("BYE", timeout=1)).request.call_id == leg_b.call_id
    await eventually(lambda: env.calls == 0)


# -- 7. no transit between trunks ---------------------------------------------------------------


async def test_a_trunk_cannot_call_another_trunks_prefix(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, extra_trunks=[PBX_TRUNK])
    pbx = SipAgent(
        env.network,
        PBX,
        ids=SeededIds(voipgw_seed + 4),
        user="+442071230000",
        domain="127.0.0.4:5060",
        proxy=GW,
        media_port=40010,
    )
    await nursery.start(pbx.serve)

    # carrier -> a +44 number (the pbx's prefix), and pbx -> a +1 number (the carrier's).
    for caller, number, other in (
        (env.trunk, "+447700900123", PBX),
        (pbx, "+15551234", env.trunk.address),
    ):
        call = await caller.invite(env.did_uri(number))
        final = await call.final()
        assert final.status == 404
        assert final.reason == f"Not Found: no account or DID for {number}"
        assert sent(env.network.capture, GW, other, b"INVITE ") == []
    await eventually(lambda: env.calls == 0)
    assert pbx.requests("INVITE") == [] and env.trunk.requests("INVITE") == []

    # The prefix does route: alice (an account) reaches the pbx with the same number.
    call = await env.alice.invite(env.did_uri("+447700900123"))
    assert (await call.final()).status == 407
    await call.authenticate()
    final = await call.final()
    assert final.status == 200
    leg_b = await pbx.next_call(timeout=1)
    assert str(leg_b.invite.uri) == "sip:+447700900123@127.0.0.4:5060;transport=udp"
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)


async def test_an_invite_past_the_call_limit_is_refused_503_and_the_next_call_goes_through(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    manager = env.gateway.calls
    assert manager is not None
    manager.max_calls = 0
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    final = await call.final()
    assert (final.status, final.reason) == (503, "Service Unavailable (call limit reached)")
    assert env.alice.requests("INVITE") == [] and env.calls == 0
    manager.max_calls = 1
    call, _ = await answered_call(env)
    assert (await call.bye()).status == 200
