"""The endpoint's BYE of a session nobody holds (SipEndpoint._ack_orphan_2xx: a 2xx after the
§9.1 give-up, another fork's 2xx, a fork's 2xx after the call failed) is as good as a call's
own BYE (Call._bye): it says why in a Reason (RFC 3326), the callee, often a trunk, taking its
CDR and the PSTN's cause from it; its CSeq follows the PRACKs we sent in that dialog (RFC 3262;
RFC 3261 §12.2.1.1), or the callee answers it 500 (§12.2.2) and keeps the session; a trunk's
challenge to it is answered once with the trunk's credentials (§22.2); and its client
transactions end, whatever their answer. Signalling on the in-memory network, virtual time."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from gateway.core.auth.algorithms import DigestAlgorithm
from gateway.core.auth.digest import Authenticated, AuthKind
from gateway.core.ids import SeededIds
from gateway.core.sip.dialog import Dialog
from gateway.core.sip.message import make_response
from gateway.core.sip.serializer import serialize_message
from gateway.core.transport.flows import Address, Flow, FlowKey
from gateway.plugins.pstn import rfc3398
from gateway.testing.sip_agent import SDP, Received, SipAgent
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    GW,
    B2bua,
    answered_call,
    eventually,
    start_b2bua,
)
from tests.component.calls.cancel_give_up import GIVE_UP
from tests.component.calls.fork_answers import (
    FORK_CONTACT,
    FORK_TAG,
    assert_in_the_forks_dialog,
    fork_answers,
    to_phone,
)
from tests.component.calls.trunk_auth_calls import (
    PBX,
    PBX_PASSWORD,
    alice_calls,
    pbx_server,
    pbx_trunk,
    verify,
)

RELIABLE = [("Require", "100rel"), ("RSeq", "1")]


class HangingReconnect:
    """A ``tcp`` transport whose connects hang until ``release`` is set (a callee whose
    connection closed and that no longer answers: up to connect_timeout), then give the
    memory network's ``udp`` flow to that address, so what follows can be seen."""

    name = "tcp"
    reliable = True
    secure = False

    def __init__(self, env: B2bua) -> None:
        self.env = env
        self.release = trio.Event()
        self.connects = 0

    async def open_flow(self, remote: Address, host: object) -> Flow:
        self.connects += 1
        await self.release.wait()
        udp = self.env.gateway.plugins.transports.get("udp")
        assert udp is not None
        flow: Flow = await udp.open_flow(remote, self.env.gateway)
        return flow


def no_transactions_left(env: B2bua) -> bool:
    """The endpoint holds no client request any more, nor an INVITE's CSeq record."""
    endpoint = env.gateway.endpoint
    return not endpoint._client_requests and not getattr(endpoint, "_invites", {})


async def test_a_2xx_after_the_give_up_is_byed_saying_so_above_the_pracks_cseq(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Alice's phone rings reliably (we PRACK: CSeq 2 in its early dialog), ignores the
    trunk's CANCEL and answers once the gateway gave the INVITE up (RFC 3261 §9.1). The BYE
    continues the dialog's CSeq (3; it used to be 2, the PRACK's, which the phone answers 500
    and stays in a call with nobody) and says why."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None and leg_b.incoming.transaction is not None
    await env.alice.respond(leg_b.incoming, 180, extra=RELIABLE)
    prack = (await env.alice.next_request("PRACK")).request
    assert prack.cseq.number == leg_b.invite.cseq.number + 1
    del env.alice._by_invite[leg_b.incoming.transaction]  # no 487 on the CANCEL (§9.2)
    await call.cancel()
    assert (await call.final()).status == 487
    await env.alice.next_request("CANCEL")
    await eventually(lambda: env.calls == 0, timeout=2 * GIVE_UP)
    await trio.sleep(1)

    await leg_b.answer(200)
    await trio.sleep(1)
    (bye,) = to_phone(env, env.alice, "BYE", leg_b.local_tag)
    assert bye.cseq.number == prack.cseq.number + 1
    assert bye.headers.get_all("Reason") == (
        'SIP;cause=200;text="answered after the call was given up"',
    )
    await trio.sleep(40)  # past Timer F and K, Timer M of the INVITE
    assert no_transactions_left(env)


async def test_another_forks_2xx_is_byed_saying_so_above_the_pracks_cseq(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A forking proxy downstream: a second target's reliable 183 is PRACKed in its early
    dialog (CSeq 2); alice answers and the call takes her; then that target answers too. Its
    BYE continues its dialog's CSeq (3, not 2 again) and says "call completed elsewhere", as
    the call's BYE of a fork answering too late does. Answered 481 (the phone does not know
    that dialog), it ends with nothing left behind."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    early = make_response(
        leg_b.invite,
        183,
        to_tag=FORK_TAG,
        extra=[("Contact", FORK_CONTACT), *RELIABLE],
        body=env.alice.answer_sdp(leg_b.invite.body),
        content_type=SDP,
    )
    await env.alice.socket.sendto(serialize_message(early), GW)
    await trio.sleep(1)
    (prack,) = {r.top_via.branch: r for r in to_phone(env, env.alice, "PRACK", FORK_TAG)}.values()
    assert prack.cseq.number == leg_b.invite.cseq.number + 1
    await leg_b.answer()
    assert (await call.final()).status == 200

    await fork_answers(env, env.alice, leg_b)
    (bye,) = to_phone(env, env.alice, "BYE", FORK_TAG)
    assert_in_the_forks_dialog(bye, leg_b)
    assert bye.cseq.number == prack.cseq.number + 1
    assert bye.headers.get_all("Reason") == ('SIP;cause=200;text="call completed elsewhere"',)
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await trio.sleep(40)
    assert no_transactions_left(env)


async def pbx_fork_answers_after_the_failure(
    nursery: trio.Nursery, tmp_path: Path, seed: int, *, password: str = PBX_PASSWORD
) -> tuple[B2bua, SipAgent, list[object]]:
    """alice -> gateway -> a PBX trunk with credentials (``password``) and a PSTN
    interworking: one target behind the PBX refuses (486) and the call fails; another's 2xx
    comes after (RFC 3261 §13.2.2.4). The PBX challenges every request in that session
    without credentials (407); one with them gets 200 if they are right, else 407 again:
    the PBX's verdicts on the credentials it got are returned, as they come."""
    pbx_config = pbx_trunk(password) | {"interworking": "rfc3398"}
    env = await start_b2bua(
        nursery, tmp_path, seed, extra_trunks=[pbx_config], plugins=[("pstn", rfc3398)]
    )
    pbx = SipAgent(
        env.network, PBX, ids=SeededIds(seed + 4), user="pbx", domain="127.0.0.4:5060",
        proxy=GW, auto=None, media_port=40010,
    )  # fmt: skip
    await nursery.start(pbx.serve)
    server = pbx_server()
    call = await alice_calls(env)
    leg = await pbx.next_call(timeout=5)
    assert leg.incoming is not None
    refusal = leg.incoming.source
    await leg.answer(486)
    assert (await call.final()).status == 486
    await eventually(lambda: env.calls == 0)

    ok = make_response(
        leg.invite,
        200,
        to_tag=FORK_TAG,
        extra=[("Contact", FORK_CONTACT)],
        body=pbx.answer_sdp(leg.invite.body),
        content_type=SDP,
    )
    pbx.add_dialog(Dialog.create_uas(leg.invite, ok))  # the PBX's side of that session

    verdicts: list[object] = []

    async def challenge_without_credentials(received: Received) -> bool:
        request = received.request
        if request.headers.get("Proxy-Authorization") is not None:
            verdicts.append(verify(server, request))
            if isinstance(verdicts[-1], Authenticated):
                return False  # 200
        challenge = server.challenge(AuthKind.PROXY, now=trio.current_time())
        await pbx.respond(received, 407, extra=challenge.response_headers())
        return True

    pbx.in_dialog = challenge_without_credentials
    await pbx.socket.sendto(serialize_message(ok), refusal)
    await trio.sleep(2)
    return env, pbx, verdicts


async def test_a_forks_2xx_after_the_call_failed_is_byed_with_the_trunks_credentials(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The endpoint BYEs the session of the PBX's second target saying why (SIP cause, and
    Q.850 16 for the interworking, as a call's BYE), and the PBX's 407 to that BYE is
    answered once with the trunk's credentials in a new transaction (CSeq + 1), where it used
    to stay unanswered and the PBX billed a call with nobody. Both transactions end."""
    env, pbx, verdicts = await pbx_fork_answers_after_the_failure(nursery, tmp_path, voipgw_seed)
    first, second = pbx.requests("BYE")
    assert first.to.tag == FORK_TAG and first.headers.get("Proxy-Authorization") is None
    assert first.headers.get_all("Reason") == (
        'SIP;cause=200;text="call already failed"',
        "Q.850;cause=16",
    )
    # RFC 3261 §22.2: the same dialog, the next CSeq, a new branch, the same Reason.
    assert (second.call_id, second.from_.tag, second.to.tag) == (
        first.call_id,
        first.from_.tag,
        first.to.tag,
    )
    assert second.cseq.number == first.cseq.number + 1
    assert second.top_via.branch != first.top_via.branch
    assert second.headers.get_all("Reason") == first.headers.get_all("Reason")
    assert verdicts == [Authenticated("voipgw-1", "pbx.test", DigestAlgorithm.SHA_256, "auth")]
    await trio.sleep(40)  # past Timer F: nothing more is sent, nothing is left
    assert len(pbx.requests("BYE")) == 2
    assert no_transactions_left(env)


async def test_an_orphan_bye_challenged_again_is_given_up_with_a_warning(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Wrong credentials: the PBX challenges the BYE with them again. Not sent a third
    time; a warning says the trunk may still count the call as up, without the password."""
    with caplog.at_level(logging.INFO, logger="gateway.core.endpoint"):
        env, pbx, _ = await pbx_fork_answers_after_the_failure(
            nursery, tmp_path, voipgw_seed, password="not-the-pbx-password"
        )
        await trio.sleep(40)
    assert len(pbx.requests("BYE")) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("pbx refused our BYE with credentials (407" in w for w in warnings), warnings
    assert not any("not-the-pbx-password" in r.getMessage() for r in caplog.records)
    assert no_transactions_left(env)


async def test_an_orphan_bye_that_is_never_answered_leaves_nothing_behind(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The other fork's BYE gets no answer at all: its transaction times out (Timer F) and
    goes, nobody's channel filling with it."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.answer()
    assert (await call.final()).status == 200
    await env.alice.next_request("ACK")
    ok = make_response(leg_b.invite, 200, to_tag=FORK_TAG, extra=[("Contact", FORK_CONTACT)])
    env.alice.add_dialog(Dialog.create_uas(leg_b.invite, ok))  # the other target's side

    async def silent(received: Received) -> bool:
        return received.request.method == "BYE" and received.request.to.tag == FORK_TAG

    env.alice.in_dialog = silent
    await fork_answers(env, env.alice, leg_b)
    assert to_phone(env, env.alice, "BYE", FORK_TAG)
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await trio.sleep(40)
    assert no_transactions_left(env)


async def test_an_orphans_reconnect_that_hangs_holds_up_no_other_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The B leg's INVITE went over a TCP connection that has closed since; another fork's
    2xx comes, and the endpoint must connect again to ACK and BYE it, which hangs. That
    work runs beside the endpoint's task: a second call is set up meanwhile (it used to wait
    for the connect, up to connect_timeout, as did every SIP message of the gateway). Once
    connected, that session gets its ACK, then its BYE."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    hanging = HangingReconnect(env)
    env.gateway.plugins.transports.add("tcp", hanging)  # type: ignore[arg-type]
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.answer()
    assert (await call.final()).status == 200
    (client,) = (
        c
        for c in env.gateway.endpoint._client_requests.values()
        if c._dialog_of == (leg_b.call_id, leg_b.invite.from_.tag)
    )
    old = client.flow
    client.flow = Flow(
        key=FlowKey("tcp", old.local, old.remote), send=old.send, reliable=True, closed=True
    )

    await fork_answers(env, env.alice, leg_b)
    assert hanging.connects == 1
    second = None
    with trio.move_on_after(5):
        other = await env.trunk.invite(env.did_uri(ALICE_DID))
        leg = await env.alice.next_call()
        await leg.answer()
        second = (await other.final()).status
    assert second == 200
    assert not to_phone(env, env.alice, "ACK", FORK_TAG)

    hanging.release.set()
    await trio.sleep(1)
    (ack,) = to_phone(env, env.alice, "ACK", FORK_TAG)
    (bye,) = to_phone(env, env.alice, "BYE", FORK_TAG)
    deliveries = [d.data for d in env.network.deliveries if d.dst == env.alice.address]
    assert deliveries.index(serialize_message(ack)) < deliveries.index(serialize_message(bye))
    assert (await call.bye()).status == 200
    assert (await other.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_the_200_to_a_calls_own_bye_starts_no_orphan_task(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The callee's 200 to the BYE that ended a call comes once the call has stopped reading
    its responses: nobody takes it, and it is no 2xx to an INVITE, so there is nothing to ACK or
    BYE (RFC 3261 §17.1.2): the endpoint starts no task for it (it used to start one per call
    that did nothing, docs/benchmarks.md "Session 35 (ACK/BYE)")."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    endpoint = env.gateway.endpoint
    started: list[object] = []
    off_task = endpoint._off_task

    async def counted(work: Callable[[], Awaitable[None]]) -> None:
        started.append(work)
        await off_task(work)

    monkeypatch.setattr(endpoint, "_off_task", counted)
    call, _ = await answered_call(env)
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)

    def our_bye_answered() -> bool:
        return any(
            d.dst == GW and d.data.startswith(b"SIP/2.0 200 ") and b" BYE\r\n" in d.data
            for d in env.network.deliveries
        )

    await eventually(our_bye_answered)  # alice's 200 to our BYE, delivered to the gateway
    await trio.sleep(1)  # and handled
    assert started == []
