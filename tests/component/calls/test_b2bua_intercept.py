"""Lawful interception through the B2BUA (the ``intercept`` tap): X1 over real HTTPS with client
certificates on 127.0.0.1, signalling on the in-memory network, RTP on real sockets through the
relay, X2/X3 to a mediation function on 127.0.0.1, in virtual time.

- a trunk's call to a target: every SIP message of both legs as X2 (direction relative to the
  target, one correlation ID, sequence numbers without a gap), every RTP packet as X3, early
  and answered alike; the call's record and its log lines do not name the tap;
- a call attempt the target refuses is delivered too;
- a call to somebody else, and a task for X2 only, deliver what they should and nothing else;
- X1 without a client certificate is refused at the TLS handshake.
"""

from __future__ import annotations

import logging
import ssl
import uuid
from pathlib import Path

import pytest
import trio

from gateway.plugins.taps.intercept import pdu
from gateway.testing.sip_agent import simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, BOB_DID, eventually
from tests.component.calls.intercept_calls import (
    CALLEE_PORT,
    CALLER_PORT,
    DID,
    XID,
    Admf,
    activate,
    answered_with_media,
    create_destination,
    intercept_env,
    message,
    pki,  # noqa: F401 (the fixture)
)
from tests.component.calls.recorder_calls import rtp
from tests.component.calls.transfer_calls import BOB_URI, bob_phone, refer
from tests.component.taps.mediation import Mediation
from tests.interop.harness.pki import Issued, TestCa


async def test_a_call_to_a_target_delivers_its_signalling_as_x2_and_its_media_as_x3(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    b2bua = env.b2bua
    call, talk = await answered_with_media(env, ring=True)
    try:
        await talk.packets(0, 20)
        assert b2bua.gateway.calls is not None
        (gateway_call,) = b2bua.gateway.calls.calls
        assert "taps" not in gateway_call.security_record()  # covert: not in the record
        await call.bye()
        await eventually(lambda: b2bua.calls == 0)
    finally:
        talk.close()
    await eventually(
        lambda: any(
            p.payload.startswith(b"SIP/2.0 200") and b"BYE" in p.payload.split(b"CSeq:")[1][:20]
            for p in env.x2()
        )
    )

    x2 = env.x2()
    starts = [p.payload.split(b"\r\n", 1)[0] for p in x2]
    # Both legs: the trunk's INVITE to us and ours to alice, her answers, the BYEs.
    assert starts[0].startswith(b"INVITE sip:+4930123456@")  # the trunk's, first of all
    invites = [p for p in x2 if p.payload.startswith(b"INVITE ")]
    assert len(invites) == 2
    assert {p.direction for p in invites} == {pdu.TO_TARGET}  # towards the callee, alice
    # Answers to the INVITEs come from the target's side: alice's, and ours relaying them.
    answers = [p for p in x2 if p.payload.startswith(b"SIP/2.0 1") or b" INVITE\r\n" in p.payload]
    answers = [p for p in answers if p.payload.startswith(b"SIP/2.0")]
    assert len(answers) >= 4 and {p.direction for p in answers} == {pdu.FROM_TARGET}
    byes = [p for p in x2 if p.payload.startswith(b"BYE ")]
    assert len(byes) == 2  # the trunk's, and ours to alice
    # One call: one correlation ID, the task's XID, the matched identifier, no gaps.
    assert len({p.correlation for p in x2 + env.x3()}) == 1
    assert {p.xid for p in x2} == {XID}
    assert {p.attribute(pdu.MATCHED_TARGET) for p in x2} == {
        ALICE_DID[1:].encode()
    }  # as provisioned: digits only
    # Which element sent them: its ne_identifier as the Network Function ID (TS 103 221-2
    # conditional attribute 6), on every PDU, X2 and X3.
    assert {p.attribute(pdu.NETWORK_FUNCTION_ID) for p in x2 + env.x3()} == {b"gw-test"}
    # No interception_point_id configured: no Interception Point ID (attribute 7).
    assert {p.attribute(pdu.INTERCEPTION_POINT_ID) for p in x2 + env.x3()} == {None}
    sequences = sorted(p.sequence for p in x2 + env.x3())  # type: ignore[type-var]
    assert sequences == list(range(len(sequences)))
    assert all(p.attribute(pdu.IP_PROTOCOL) == b"\x11" for p in x2)

    x3 = env.x3()
    from_trunk = [p.payload for p in x3 if p.direction == pdu.TO_TARGET]
    from_target = [p.payload for p in x3 if p.direction == pdu.FROM_TARGET]
    assert from_trunk == [rtp(seq, 0x00, 0x1111) for seq in range(20)]
    assert from_target == [rtp(seq, 0x80, 0x2222) for seq in range(20)]
    assert {p.payload_format for p in x3} == {pdu.FORMAT_RTP}
    # The core's log lines never name the tap (the plugin's own name XIDs only).
    core_lines = [
        r.getMessage() for r in caplog.records if not r.name.startswith("gateway.plugins.taps")
    ]
    assert core_lines and not [line for line in core_lines if "intercept" in line]
    plugin_lines = " ".join(
        r.getMessage() for r in caplog.records if r.name.startswith("gateway.plugins.taps")
    )
    assert str(XID) in plugin_lines and ALICE_DID not in plugin_lines


async def test_a_call_attempt_the_target_refuses_is_delivered_too(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    b2bua = env.b2bua
    call, leg_b = await env.trunk_calls_alice()
    await leg_b.answer(486)
    assert (await call.final()).status == 486
    await eventually(lambda: b2bua.calls == 0)
    await eventually(lambda: sum(p.payload.startswith(b"SIP/2.0 486") for p in env.x2()) == 2)
    refusals = [p for p in env.x2() if p.payload.startswith(b"SIP/2.0 486")]
    # alice's 486 to us, and ours relaying it to the trunk: both the target's answer.
    assert [p.direction for p in refusals] == [pdu.FROM_TARGET, pdu.FROM_TARGET]
    assert env.x3() == []


async def test_an_admf_that_takes_no_reports_changes_nothing_for_calls(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    closed_port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # nobody listens there: every report fails and is tried again
    table = {"report_url": f"https://127.0.0.1:{closed_port}/X1", "admf_identifiers": ["admf-1"]}
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki, table=table)
    reports = env.tap.reports
    assert reports is not None
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    call, talk = await answered_with_media(env)
    try:
        await talk.packets(0, 10)
        await call.bye()
        await eventually(lambda: env.b2bua.calls == 0)
    finally:
        talk.close()
    await eventually(lambda: len(env.x3()) == 20)
    await eventually(lambda: any(p.payload.startswith(b"BYE ") for p in env.x2()))
    await eventually(lambda: reports.attempts >= 3, timeout=30)  # at 0, 1, 3 s
    assert reports.sent == 0


async def test_calls_of_others_deliver_nothing_and_an_x2_only_task_no_media(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision(activate(f"<e164Number>{BOB_DID[1:]}</e164Number>", delivery="X2Only"))
    b2bua = env.b2bua
    # alice is no target: her call delivers nothing.
    call, leg_b = await env.trunk_calls_alice()
    await leg_b.answer(486)
    await call.final()
    await eventually(lambda: b2bua.calls == 0)
    # bob (who never registers) is: X2 of the attempt, no X3 whatever happens.
    attempt = await b2bua.trunk.invite(
        b2bua.did_uri(BOB_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT)
    )
    assert (await attempt.final()).status >= 400
    await eventually(lambda: b2bua.calls == 0)
    await trio.sleep(1)
    x2 = env.x2()
    assert x2 and all(b"+4930123456" not in p.payload.split(b"\r\n", 1)[0] for p in x2)
    assert x2[0].payload.startswith(b"INVITE sip:+4930999@")
    assert env.x3() == []


async def test_x1_without_a_client_certificate_is_refused_at_the_handshake(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    anonymous = Admf(pki[0], None)
    assert env.tap.x1_server is not None and env.tap.x1_server.address is not None
    with pytest.raises((trio.BrokenResourceError, ssl.SSLError, OSError)):
        await anonymous.post(env.tap.x1_server.address, create_destination(env.mediation.port))
    await eventually(
        lambda: env.tap.x1_server is not None and env.tap.x1_server.refused_handshakes == 1
    )
    assert env.tap.provisioning.destinations == {}


async def test_a_targets_registration_is_delivered_as_x2_with_the_answers(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision(activate("<sipUri>sip:alice@127.0.0.1</sipUri>"))
    assert (await env.b2bua.alice.register()).status == 200
    await eventually(lambda: any(p.payload.startswith(b"SIP/2.0 200") for p in env.x2()))
    x2 = env.x2()
    lines = [(p.payload.split(b"\r\n", 1)[0].split(b" ")[0:2], p.direction) for p in x2]
    # The challenged REGISTER and our 401 are not hers to report (anybody can send one naming
    # her): the REGISTER we accepted and our 200 are.
    assert lines == [
        ([b"REGISTER", b"sip:127.0.0.1:5060"], pdu.FROM_TARGET),
        ([b"SIP/2.0", b"200"], pdu.TO_TARGET),
    ]
    assert b"Authorization:" in x2[0].payload
    assert len({p.correlation for p in x2}) == 1
    assert {p.attribute(pdu.MATCHED_TARGET) for p in x2} == {b"sip:alice@127.0.0.1"}
    assert {p.attribute(pdu.NETWORK_FUNCTION_ID) for p in x2} == {b"gw-test"}
    # Once the task is gone, her registrations are not delivered.
    await env.x1(message("DeactivateTaskRequest", f"<xId>{XID}</xId>"))
    assert (await env.b2bua.alice.register()).status == 200
    await trio.sleep(1)
    assert len(env.x2()) == 2


async def test_a_destination_moved_during_a_call_gets_the_rest_of_it(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    b2bua = env.b2bua
    call, leg_b = await env.trunk_calls_alice()
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    assert (await call.final()).status == 200
    await eventually(lambda: any(p.payload.startswith(b"ACK ") for p in env.x2()))
    second = Mediation()
    await nursery.start(second.serve)
    moved = create_destination(second.port).replace("CreateDestination", "ModifyDestination")
    await env.x1(moved)
    await eventually(lambda: env.tap.links[DID].destination.address[1] == second.port)
    await call.bye()
    await eventually(lambda: b2bua.calls == 0)
    await eventually(
        lambda: sum(p.payload.startswith(b"BYE ") for p in second.of_type(pdu.X2)) == 2
    )
    assert not any(p.payload.startswith(b"BYE ") for p in env.x2())  # none went to the first
    assert {p.correlation for p in second.of_type(pdu.X2)} == {env.x2()[0].correlation}


async def test_a_bug_answering_one_x1_request_is_a_500_and_x1_goes_on(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    assert env.tap.x1_server is not None and env.tap.x1_server.address is not None
    real = env.tap.x1.handle

    def broken(body: bytes) -> bytes:
        raise RuntimeError("a bug")

    env.tap.x1.handle = broken  # type: ignore[method-assign]
    status, _ = await env.admf.post(env.tap.x1_server.address, create_destination(9))
    assert status == 500
    env.tap.x1.handle = real  # type: ignore[method-assign]
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))  # X1 still serves
    assert set(env.tap.provisioning.tasks) == {XID}


async def test_a_task_deactivated_during_a_call_delivers_nothing_more_of_it(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    call, talk = await answered_with_media(env)
    try:
        await talk.packets(0)
        await eventually(lambda: len(env.x3()) == 20)
        await env.x1(message("DeactivateTaskRequest", f"<xId>{XID}</xId>"))
        await talk.packets(10)
        await call.bye()
        await eventually(lambda: env.b2bua.calls == 0)
    finally:
        talk.close()
    await trio.sleep(1)  # virtual time: room for a PDU that should not come
    assert len(env.x3()) == 20  # nothing after the deactivation
    assert not any(p.payload.startswith(b"BYE ") for p in env.x2())


async def test_a_task_activated_during_a_call_intercepts_the_rest_of_it(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision()  # a destination, no task yet
    call, talk = await answered_with_media(env)
    try:
        await talk.packets(0)
        assert env.mediation.copies() == []  # nobody is a target yet
        await env.x1(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
        await talk.packets(10)
        await eventually(lambda: len(env.x3()) == 20)
        # A second task for the caller's number joins the same sink: its own XID from now on.
        second = uuid.UUID("22222222-2222-4333-8444-555555555555")
        await env.x1(activate("<e164Number>15550100</e164Number>", xid=second))
        await talk.packets(20)
        await eventually(lambda: len(env.x3()) == 60)
        await call.bye()
        await eventually(lambda: env.b2bua.calls == 0)
    finally:
        talk.close()
    await eventually(lambda: sum(p.payload.startswith(b"BYE ") for p in env.x2()) == 4)
    x3 = env.x3()
    assert [p.payload for p in x3[:20] if p.direction == pdu.TO_TARGET] == [
        rtp(seq, 0x00, 0x1111) for seq in range(10, 20)
    ]
    assert {p.xid for p in x3[20:]} == {XID, second}
    # The caller is the second task's target: what the trunk sent is "from" it there.
    from_trunk = [p for p in x3[20:] if p.xid == second and p.payload[8:12] == b"\x00\x00\x11\x11"]
    assert from_trunk and {p.direction for p in from_trunk} == {pdu.FROM_TARGET}
    assert len({p.correlation for p in env.x2() + x3}) == 1


async def test_another_call_reusing_a_tapped_calls_call_id_is_not_delivered_nor_untaps_it(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Call-ID is not a dialog: a proxy's fork reaching us twice, or a peer reusing one,
    makes a second call with the same Call-ID and another From tag."""
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    call, leg_b = await env.trunk_calls_alice()
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    assert (await call.final()).status == 200
    reused = call.invite.call_id  # type: ignore[attr-defined]
    monkeypatch.setattr(env.b2bua.trunk.ids, "new_call_id", lambda: reused)
    other = await env.b2bua.trunk.invite(env.b2bua.did_uri(BOB_DID))  # bob: no target
    assert (await other.final()).status >= 400
    await eventually(lambda: env.b2bua.calls == 1)
    assert not any(b"+4930999" in p.payload.split(b"\r\n", 1)[0] for p in env.x2())
    await call.bye()
    await eventually(lambda: env.b2bua.calls == 0)
    # alice's call is still tapped after the other one ended: its BYEs are delivered.
    await eventually(lambda: sum(p.payload.startswith(b"BYE ") for p in env.x2()) == 2)


async def test_a_targets_outgoing_call_is_matched_on_who_it_is_not_on_what_its_phone_says(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    """alice's account is the target by its number (the DID that reaches her); her phone
    withholds its identity and asserts somebody else's. The gateway knows it is alice."""
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    call = await env.b2bua.alice.invite(
        "sip:+15551234@127.0.0.1:5060",
        extra=[("Privacy", "id"), ("P-Asserted-Identity", "<sip:+15550199@127.0.0.1>")],
    )
    assert (await call.final()).status == 407
    await call.authenticate()
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.b2bua.calls == 0)
    await eventually(lambda: sum(p.payload.startswith(b"BYE ") for p in env.x2()) == 2)
    invites = [p for p in env.x2() if p.payload.startswith(b"INVITE ")]
    assert len(invites) == 2  # hers (authenticated) and ours to the carrier
    assert {p.direction for p in invites} == {pdu.FROM_TARGET}
    assert {p.attribute(pdu.MATCHED_TARGET) for p in invites} == {
        ALICE_DID[1:].encode()
    }  # as provisioned: digits only


async def test_connections_that_never_finish_a_handshake_do_not_keep_the_admf_out(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    assert env.tap.x1_server is not None and env.tap.x1_server.address is not None
    silent = [await trio.open_tcp_stream(*env.tap.x1_server.address) for _ in range(20)]
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))  # still served
    assert set(env.tap.provisioning.tasks) == {XID}
    for stream in silent:
        await stream.aclose()


async def test_a_target_that_transfers_its_call_away_leaves_the_rest_unintercepted(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    """alice (the target) takes a trunk's call and transfers it to bob: once bob takes her
    place, the call is between two people who are not targets and nothing more of it goes out."""
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    bob = await bob_phone(env.b2bua, nursery, voipgw_seed)
    call, leg_b = await env.trunk_calls_alice()
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    assert (await call.final()).status == 200
    assert await refer(leg_b, BOB_URI) == 202
    while True:
        notify = await env.b2bua.alice.next_request("NOTIFY")
        if notify.request.body.strip() == b"SIP/2.0 200 OK":
            break
    refers = [p for p in env.x2() if p.payload.startswith(b"REFER ")]
    assert [p.direction for p in refers] == [pdu.FROM_TARGET]  # hers, while she was in it
    delivered = len(env.x2())
    assert (await leg_b.bye()).status == 200  # alice leaves, as a transferor does
    assert (await bob.calls[0].bye()).status == 200
    await eventually(lambda: env.b2bua.calls == 0)
    await trio.sleep(1)
    assert len(env.x2()) == delivered  # trunk and bob: nobody's target
    assert not any(p.payload.startswith(b"BYE ") for p in env.x2())


async def test_a_target_named_by_its_sip_uri_is_intercepted_when_called_on_its_number(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    """The task names alice's address of record; the trunk calls her DID, which the INVITE
    carries instead. Routing reveals the account: the call is intercepted from then, the
    trunk's INVITE (kept for it) delivered first."""
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki)
    await env.provision(activate("<sipUri>sip:alice@127.0.0.1</sipUri>"))
    call, leg_b = await env.trunk_calls_alice()
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    assert (await call.final()).status == 200
    await call.bye()
    await eventually(lambda: env.b2bua.calls == 0)
    await eventually(lambda: sum(p.payload.startswith(b"BYE ") for p in env.x2()) == 2)
    x2 = env.x2()
    assert x2[0].payload.startswith(b"INVITE sip:+4930123456@")  # the trunk's, first
    assert x2[0].direction == pdu.TO_TARGET
    assert any(p.payload.startswith(b"INVITE sip:alice@") for p in x2)
    assert {p.attribute(pdu.MATCHED_TARGET) for p in x2} == {b"sip:alice@127.0.0.1"}
    assert {p.attribute(pdu.NETWORK_FUNCTION_ID) for p in x2} == {b"gw-test"}
    sequences = [p.sequence for p in x2]
    assert sequences == list(range(len(x2)))


async def test_the_interception_point_id_configured_is_on_every_pdu_of_calls_and_registrations(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    # TS 103 221-2 attribute 7, one value per element (where in it the tap sits), beside the
    # NFID; never per leg (docs/lawful_intercept.md says why).
    env = await intercept_env(
        nursery, tmp_path, voipgw_seed, pki, table={"interception_point_id": "sbc-fra-1/b2bua"}
    )
    await env.provision(
        activate("<sipUri>sip:alice@127.0.0.1</sipUri>"),
        activate(
            f"<e164Number>{ALICE_DID[1:]}</e164Number>",
            xid=uuid.UUID("22222222-2222-4333-8444-555555555555"),
        ),
    )
    assert (await env.b2bua.alice.register()).status == 200
    await eventually(lambda: any(p.payload.startswith(b"SIP/2.0 200") for p in env.x2()))
    call, talk = await answered_with_media(env)
    try:
        await talk.packets(0, 5)
        await eventually(lambda: len(env.x3()) >= 5)
        await call.bye()
        await eventually(lambda: env.b2bua.calls == 0)
    finally:
        talk.close()
    copies = env.x2() + env.x3()
    assert {p.attribute(pdu.INTERCEPTION_POINT_ID) for p in copies} == {b"sbc-fra-1/b2bua"}
    assert {p.attribute(pdu.NETWORK_FUNCTION_ID) for p in copies} == {b"gw-test"}
    assert any(p.payload.startswith(b"REGISTER ") for p in env.x2())  # registrations too
    # Keepalives carry their sequence number only.
    assert all(
        [kind for kind, _ in p.attributes] == [pdu.SEQUENCE_NUMBER]
        for p in env.mediation.of_type(pdu.KEEPALIVE)
    )
