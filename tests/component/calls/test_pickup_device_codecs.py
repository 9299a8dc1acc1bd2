"""Call pickup by a phone whose device profile limits its codecs (``DeviceProfile.codecs``,
gateway/core/calls/picked_up.py): our answer to the picker holds only the codecs its profile
takes, as every answer to that phone does, whatever the caller offered. Our 200 to the caller
keeps the caller's telephone-event when the profile leaves it out: that is DTMF interworking
(docs/architecture.md "DTMF interworking"), the caller's RFC 4733 digits going to the picker
as SIP INFO, as for any callee answering without telephone-event; with
``[media] dtmf_interworking = false`` it is left out. In-memory signalling, virtual time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from gateway.core.hookspecs import hookimpl
from gateway.core.ids import SeededIds
from gateway.core.interfaces import DeviceProfile
from gateway.core.media.session import DtmfPlan
from gateway.core.plugins import Registry
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import AutoAnswer, SipAgent, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, GW, eventually
from tests.component.calls.dialog_event_watch import next_doc, start, watch
from tests.component.calls.dtmf_calls import b2bua_call
from tests.component.calls.pickup_calls import PICKUP, early_dialog, pick_up, replaces_of

PICKER = ("127.0.0.6", 5060)
# bob's SipAgent sends "User-Agent: voipgw-test-agent/bob" (gateway/testing/sip_agent.py).
BOBS_PHONE = DeviceProfile(
    name="acme-g711", user_agent_prefixes=("voipgw-test-agent/bob",), codecs=("PCMU",)
)


class Profiles:
    @hookimpl
    def gateway_register_device_profiles(self, registry: Registry[Any], config: Any) -> None:
        registry.add(BOBS_PHONE.name, BOBS_PHONE)


async def _picked_up(
    nursery: trio.Nursery, tmp_path: Path, seed: int, **kwargs: Any
) -> tuple[Any, Any, Any, Any]:
    """A trunk's call to alice (G.722, PCMU, telephone-event 101) picked up by bob's phone of
    profile BOBS_PHONE: (env, the caller's call, the picker's call, the picker's 200)."""
    env, bob = await start(
        nursery, tmp_path, seed, groups=[PICKUP], plugins=[("devices", Profiles())], **kwargs
    )
    picker = SipAgent(
        env.network,
        PICKER,
        ids=SeededIds(seed + 5),
        user="bob",
        password="bob-password-1",
        proxy=GW,
        auto=None,
    )
    await nursery.start(picker.serve)
    await watch(bob)
    await next_doc(bob)
    env.alice.auto = AutoAnswer(ring=True, status=None)  # she lets it ring
    # The carrier offers G.722 first, then PCMU and telephone-event.
    caller_offer = simple_sdp("127.0.0.1", 40000, formats=("9", "0", "101"))
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=caller_offer)
    await env.alice.next_call()
    # The picking phone offers G.722 too (its firmware does; its profile says it plays noise).
    picker_offer = simple_sdp("127.0.0.1", 40010, formats=("9", "0", "101"))
    picking = await pick_up(picker, replaces_of(await early_dialog(bob)), sdp=picker_offer)
    to_picker = await picking.final()
    assert to_picker.status == 200, to_picker.reason
    return env, incoming, picking, to_picker


async def test_a_picker_is_answered_only_the_codecs_its_profile_takes(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, incoming, picking, to_picker = await _picked_up(nursery, tmp_path, voipgw_seed)
    to_caller = await incoming.final()
    assert to_caller.status == 200, to_caller.reason
    (ours,) = parse_sdp_untrusted(to_picker.body).media
    # PCMU alone: not the G.722 both offered, nor telephone-event (this profile lists none).
    # The picker's offer is narrowed to its profile on arrival (LegSecurity.take_offer), and
    # our answer to it is made from that offer (answer_with), so it holds nothing else.
    assert list(ours.formats) == ["0"]
    assert [r.encoding.upper() for r in ours.rtpmaps().values()] == ["PCMU"]
    # The caller keeps its telephone-event (RFC 3264 §6.1: an answer may keep any offered
    # format): the gateway takes its digits and sends them to the picker as SIP INFO, as for
    # a callee answering without telephone-event (MediaSession._plan_dtmf).
    (to_a,) = parse_sdp_untrusted(to_caller.body).media
    assert list(to_a.formats) == ["0", "101"]
    assert b2bua_call(env).media.dtmf == DtmfPlan(0, "a", "b", 101, 8000)
    assert (await picking.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_without_dtmf_interworking_the_callers_answer_has_only_the_pickers_codecs(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, incoming, picking, _ = await _picked_up(
        nursery, tmp_path, voipgw_seed, media_table={"dtmf_interworking": False}
    )
    to_caller = await incoming.final()
    assert to_caller.status == 200, to_caller.reason
    (to_a,) = parse_sdp_untrusted(to_caller.body).media
    assert list(to_a.formats) == ["0"]  # nobody would take the caller's events
    assert b2bua_call(env).media.dtmf is None
    assert (await picking.bye()).status == 200
    await eventually(lambda: env.calls == 0)
