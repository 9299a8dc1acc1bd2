"""A re-INVITE's answer is in the relay before the ACK (or 2xx) that lets a peer send under it,
as the first answer is (test_b2bua_first_packets.py): a phone that moved, re-keyed or changed
codecs may send its first packet under the new SDP the moment our ACK reaches it (RFC 3261
§13.2.2.4, RFC 3264 §8), and a packet that met the old state would go to the old address or
fail SRTP authentication with the old keys. The call awaits ``MediaSession.applied()`` before
that ACK: a no-op in process, the round trip that makes a media worker apply the answer first
(tests/integration/media/test_media_workers_first_packets.py sends the packets).

The endpoint's ``send_ack`` is wrapped to note, as each ACK goes, where the call's stream sends
then. In-memory signalling, virtual time; the relay's sockets are real."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.calls.call import Call as GatewayCall
from gateway.core.endpoint import SipEndpoint
from gateway.core.media.session import MediaSession
from gateway.core.sip.message import Request
from gateway.testing.sip_agent import simple_sdp
from tests.component.calls.b2bua_env import B2bua, answered_call, start_b2bua
from tests.component.calls.transfer_calls import BOB_URI, bob_phone, refer

MOVED_PORT = 31000  # SDP only: where a phone says it moved


@pytest.fixture
def noted(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What happened, in order: ``"applied"`` for each ``MediaSession.applied()``, and for
    each ACK the gateway sends, its CSeq and where the call's stream sends to each side then."""
    seen: list[Any] = []
    send_ack, applied = SipEndpoint.send_ack, MediaSession.applied
    calls: list[GatewayCall] = []
    init = GatewayCall.__init__

    def noting_init(self: GatewayCall, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        calls.append(self)

    async def noting_send_ack(self: SipEndpoint, ack: Request, *args: Any, **kwargs: Any) -> None:
        (call,) = calls
        assert call.media is not None
        (stream,) = call.media.streams
        seen.append(
            {
                "cseq": ack.cseq.number,
                "to_caller": stream.a.rtp_destination,  # type: ignore[attr-defined]
                "to_callee": stream.b.rtp_destination,  # type: ignore[attr-defined]
            }
        )
        await send_ack(self, ack, *args, **kwargs)

    async def noting_applied(self: MediaSession) -> None:
        seen.append("applied")
        await applied(self)

    monkeypatch.setattr(GatewayCall, "__init__", noting_init)
    monkeypatch.setattr(SipEndpoint, "send_ack", noting_send_ack)
    monkeypatch.setattr(MediaSession, "applied", noting_applied)
    return seen


async def env_and_call(nursery: trio.Nursery, tmp_path: Path, seed: int) -> tuple[B2bua, Any]:
    env = await start_b2bua(nursery, tmp_path, seed)  # alice answers by herself
    call, _ = await answered_call(env)
    return env, call


async def test_the_answerer_of_a_relayed_reinvite_is_acked_once_the_relay_sends_where_it_moved(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    noted: list[Any],
) -> None:
    env, call = await env_and_call(nursery, tmp_path, voipgw_seed)
    env.alice.media_port = MOVED_PORT  # alice answers the re-INVITE from elsewhere
    ok = await call.reinvite(simple_sdp("127.0.0.2", 40000, version=2))
    assert ok.status == 200
    ack = (await env.alice.next_request("ACK")).request
    state = noted[-1]
    assert state["cseq"] == ack.cseq.number
    assert state["to_callee"] == ("127.0.0.3", MOVED_PORT), state
    assert noted[-2] == "applied"  # and the trunk's 2xx comes after the ACK


async def test_the_offerer_of_a_late_reinvite_is_acked_once_the_relay_carries_the_answer(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    noted: list[Any],
) -> None:
    # A re-INVITE without SDP: alice's 2xx offers, the trunk's ACK answers from where it
    # moved, and our ACK brings alice that answer: she may send under it at once (§8).
    env, call = await env_and_call(nursery, tmp_path, voipgw_seed)
    call.ack_answer = simple_sdp("127.0.0.2", MOVED_PORT, version=2, formats=("0", "101"))
    assert (await call.reinvite(b"")).status == 200
    reinvite = (await env.alice.next_request("INVITE")).request
    ack = (await env.alice.next_request("ACK")).request
    assert ack.cseq.number == reinvite.cseq.number and ack.body
    state = noted[-1]
    assert state["cseq"] == ack.cseq.number
    assert state["to_caller"] == ("127.0.0.2", MOVED_PORT), state
    assert noted[-2] == "applied"


async def test_a_transfers_reinvite_is_acked_once_the_relay_carries_the_transferees_answer(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    noted: list[Any],
) -> None:
    # alice transfers the trunk to bob: the trunk is re-INVITEd with bob's offer and answers
    # from where it moved; that answer reaches bob in our ACK of his 2xx (which offered).
    env, _ = await env_and_call(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)
    (alice_leg,) = env.alice.calls
    env.trunk.media_port = MOVED_PORT
    assert await refer(alice_leg, BOB_URI) == 202
    reinvite = (await env.trunk.next_request("INVITE")).request
    trunk_ack = (await env.trunk.next_request("ACK")).request
    await bob.next_request("ACK")
    assert trunk_ack.cseq.number == reinvite.cseq.number
    applied, at_trunk_ack, at_bob_ack = noted[-3:]  # the transferee's ACK, then bob's
    assert applied == "applied"
    assert at_trunk_ack["cseq"] == reinvite.cseq.number
    assert at_trunk_ack["to_caller"] == ("127.0.0.2", MOVED_PORT), at_trunk_ack
    assert at_bob_ack["to_caller"] == ("127.0.0.2", MOVED_PORT), at_bob_ack
