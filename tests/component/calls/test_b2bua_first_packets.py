"""The relay carries an answer before the ACK that lets its peer send: a callee (or, in a late
offer, an offerer in its 2xx) may send its first packet the moment our ACK reaches it, and that
packet must find the stream unblocked, pointed at both phones and transcoding as the answer
says. The call also awaits ``MediaSession.applied()`` before that ACK: a no-op in process, the
round trip that makes a media worker apply the answer first
(tests/integration/media/test_media_workers_first_packets.py sends the packets).

The gateway's ``_ack_b`` is wrapped to note, as each ACK to B goes, what the stream does then.
In-memory signalling, virtual time; the relay's sockets are real."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.calls.call import Call as GatewayCall
from gateway.core.media.session import MediaSession
from gateway.testing.sip_agent import AutoAnswer, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, start_b2bua
from tests.port_blocks import port_bases

TRUNK_PORT, ALICE_PORT = port_bases(2)


@pytest.fixture
def noted(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What happened, in order: ``"applied"`` for each ``MediaSession.applied()``, and for
    each ACK to B the state of the call's stream as it went."""
    seen: list[Any] = []
    ack_b, applied = GatewayCall._ack_b, MediaSession.applied

    async def noting_ack_b(self: GatewayCall, *args: Any, **kwargs: Any) -> None:
        assert self.media is not None
        (stream,) = self.media.streams
        seen.append(
            {
                "blocked": (stream.a_to_b.blocked, stream.b_to_a.blocked),
                "to_callee": stream.b.rtp_destination,  # type: ignore[attr-defined]
                "to_caller": stream.a.rtp_destination,  # type: ignore[attr-defined]
                "transcoding": (stream.a_to_b.transcoding, stream.b_to_a.transcoding),
            }
        )
        await ack_b(self, *args, **kwargs)

    async def noting_applied(self: MediaSession) -> None:
        seen.append("applied")
        await applied(self)

    monkeypatch.setattr(GatewayCall, "_ack_b", noting_ack_b)
    monkeypatch.setattr(MediaSession, "applied", noting_applied)
    return seen


def carried(state: dict[str, Any]) -> bool:
    """The answer is in the relay: both ways open, both phones' addresses, PCMU <-> PCMA."""
    a_to_b, b_to_a = state["transcoding"]
    return (
        state["blocked"] == (False, False)
        and state["to_caller"] == ("127.0.0.1", TRUNK_PORT)
        and state["to_callee"] == ("127.0.0.1", ALICE_PORT)
        and a_to_b is not None
        and b_to_a is not None
    )


async def test_the_callee_is_acked_once_the_relay_carries_its_answer(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    noted: list[Any],
) -> None:
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        alice_auto=AutoAnswer(ring=False, status=None),
        media_table={"g711_transcoding": True},
    )
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", TRUNK_PORT, formats=("0", "101"))
    )
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    await env.alice.respond(
        leg_b.incoming, 200, body=simple_sdp("127.0.0.1", ALICE_PORT, formats=("8", "101"))
    )
    assert (await incoming.final()).status == 200
    await env.alice.next_request("ACK")
    state = noted[-1]
    assert carried(state), state
    assert noted == ["applied", state]


async def test_a_late_offerer_is_acked_once_the_relay_carries_the_answer(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    noted: list[Any],
) -> None:
    # An INVITE without SDP (RFC 3261 §13.2.1): alice's 200 is the offer, the carrier's ACK
    # the answer, which our ACK brings alice.
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        alice_auto=AutoAnswer(ring=False, status=None),
        media_table={"g711_transcoding": True},
    )
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    incoming.ack_answer = simple_sdp("127.0.0.1", TRUNK_PORT, formats=("0", "101"))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    await env.alice.respond(
        leg_b.incoming, 200, body=simple_sdp("127.0.0.1", ALICE_PORT, formats=("8", "101"))
    )
    assert (await incoming.final()).status == 200
    ack = (await env.alice.next_request("ACK")).request
    assert ack.body
    state = noted[-1]
    assert carried(state), state
    assert noted == ["applied", state]
