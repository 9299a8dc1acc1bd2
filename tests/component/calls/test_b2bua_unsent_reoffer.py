"""A re-INVITE's offer relayed to the other leg that never goes there takes no o= version
(RFC 3264 §8: each SDP a leg gets has the version one more than the previous one it got).

- the other leg's security refuses the offer we made for it (its phone's device profile takes
  none of the codecs): the requester gets 488, and the next re-INVITE reaches that leg with
  the version after the last SDP it really got;
- the other leg cannot be reached (no flow, no listener of its transport): the requester gets
  503, and the same holds, for the session's SDP and for the leg's own (LegSecurity's)
  version count alike;
- a transfer target's offer that cannot be sent to the transferee: the transfer fails (503),
  and the transferee's next SDP has the version after the last one it got.

Before session 42 (review-k6) the unsent offer stayed recorded as sent, in the media session
and in the leg's security, and the next SDP skipped one version, or two.

Signalling on the in-memory network, media on real 127.0.0.1 ports in virtual time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.calls.call import Call
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import DeviceProfile
from gateway.core.plugins import Registry
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import simple_sdp
from tests.component.calls.b2bua_env import B2bua, answered_call, start_b2bua
from tests.component.calls.transfer_calls import BOB_URI, bob_phone, eventually_notify, refer

# alice's SipAgent sends "User-Agent: voipgw-test-agent/alice" (gateway/testing/sip_agent.py).
G711_PHONE = DeviceProfile(
    name="acme-t1",
    user_agent_prefixes=("voipgw-test-agent/alice",),
    codecs=("PCMA", "PCMU", "telephone-event"),
)
TRUNK_MEDIA = ("127.0.0.1", 40000)


class Profiles:
    @hookimpl
    def gateway_register_device_profiles(self, registry: Registry[Any], config: Any) -> None:
        registry.add(G711_PHONE.name, G711_PHONE)


def answer_reinvites(env: B2bua) -> None:
    """alice answers every re-INVITE 200 with her answer (RFC 3264 §6)."""

    async def answer(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        body = env.alice.answer_sdp(received.request.body)
        await env.alice.respond(received, 200, body=body)
        return True

    env.alice.in_dialog = answer


def versions_to_alice(env: B2bua) -> list[int]:
    """The o= versions of the SDP alice got: the INVITE's, then each re-INVITE's."""
    return [
        parse_sdp_untrusted(r.body).origin.session_version
        for r in env.alice.requests("INVITE")
        if r.body
    ]


async def test_a_reoffer_the_other_legs_phone_refuses_takes_no_o_version(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, plugins=[("devices", Profiles())])
    call, _ = await answered_call(env)
    answer_reinvites(env)
    (first,) = versions_to_alice(env)
    # G.722 alone: alice's phone takes none of it (CodecsRefused), nothing goes to her.
    refused = await call.reinvite(simple_sdp(*TRUNK_MEDIA, version=2, formats=("9",)))
    assert refused.status == 488
    assert "takes none of the audio codecs offered (G722)" in (refused.headers.get("Warning") or "")
    assert versions_to_alice(env) == [first]
    held = await call.reinvite(simple_sdp(*TRUNK_MEDIA, version=3, direction="sendonly"))
    assert held.status == 200
    assert versions_to_alice(env) == [first, first + 1]
    assert (await call.bye()).status == 200


async def test_a_reoffer_to_a_leg_that_cannot_be_reached_takes_no_o_version(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    answer_reinvites(env)
    (first,) = versions_to_alice(env)
    real = Call._send_in_dialog
    unreachable = [True]

    async def once_unreachable(self: Call, leg: Any, method: str, **kwargs: Any) -> Any:
        if method == "INVITE" and leg is self.b and unreachable:
            unreachable.clear()
            return None  # as _send_in_dialog says of a flow it cannot get (OSError)
        return await real(self, leg, method, **kwargs)

    monkeypatch.setattr(Call, "_send_in_dialog", once_unreachable)
    refused = await call.reinvite(simple_sdp(*TRUNK_MEDIA, version=2, direction="sendonly"))
    assert refused.status == 503
    assert versions_to_alice(env) == [first]
    # Another SDP than the unsent one: the leg's security counts it as a change of its own
    # on top of the session's version unless the unsent one is withdrawn there too.
    held = await call.reinvite(simple_sdp(*TRUNK_MEDIA, version=3, direction="inactive"))
    assert held.status == 200
    assert versions_to_alice(env) == [first, first + 1]
    assert (await call.bye()).status == 200


async def test_a_transfer_targets_offer_the_transferee_cannot_be_sent_takes_no_o_version(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """alice transfers the carrier to bob; bob answers, and the re-INVITE with his offer
    cannot go to the carrier (no flow): the transfer fails (503) and the call goes on. The
    next SDP the carrier gets, alice's re-INVITE relayed, has the version after our 200's."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed, auto=None)
    call, alice_leg = await answered_call(env)
    assert call.exchange is not None
    (ours,) = [r for r in call.exchange.responses if r.status == 200]
    answered = parse_sdp_untrusted(ours.body).origin.session_version
    real = Call._send_in_dialog
    unsent: list[bytes] = []

    async def transferee_unreachable(self: Call, leg: Any, method: str, **kwargs: Any) -> Any:
        if method == "INVITE" and leg is self.a and self._transfer is not None and not unsent:
            unsent.append(kwargs["body"])
            return None  # as _send_in_dialog says of a flow it cannot get (OSError)
        return await real(self, leg, method, **kwargs)

    monkeypatch.setattr(Call, "_send_in_dialog", transferee_unreachable)
    assert await refer(alice_leg, BOB_URI) == 202
    target = await bob.next_call()
    # PCMA only: the offer the carrier would get is another SDP than our 200's (its version
    # one more), where the same codecs on the relay's same ports would keep the version.
    await target.answer(200, sdp=simple_sdp("127.0.0.4", 50000, formats=("8",)))
    await eventually_notify(env.alice, "SIP/2.0 503 Service Unavailable")
    assert b"PCMA" in unsent[0] and b"PCMU" not in unsent[0]
    assert len(unsent) == 1
    assert env.trunk.requests("INVITE") == []
    assert (await alice_leg.reinvite(env.alice.offer_sdp(direction="sendonly"))).status == 200
    (relayed,) = env.trunk.requests("INVITE")
    assert parse_sdp_untrusted(relayed.body).origin.session_version == answered + 1
    assert (await call.bye()).status == 200
