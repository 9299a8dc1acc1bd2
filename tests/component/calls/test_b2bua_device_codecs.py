"""``DeviceProfile.codecs`` through the B2BUA (gateway/core/media/security.py, LegSecurity):
a phone model that cannot decode some codecs is never offered them, and its own offers are
narrowed before the other leg sees them, so the answers it gets hold only what it takes.

- a call to the phone: our offer keeps only the profile's codecs, in its order of preference,
  telephone-event only because the profile lists it; the other legs are left alone;
- a call from the phone: its offer reaches the trunk with only the profile's codecs, in the
  phone's own order (telephone-event dropped: this profile does not list it), and the answer
  it gets holds only those;
- nothing left: the caller gets 488 with the reason (the profile and what was offered), the
  phone is never rung; the phone's own offer with nothing left gets 488 too;
- a profile with an empty codec list stops start-up naming it.

Signalling on the in-memory network, media on real 127.0.0.1 ports in virtual time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import DeviceProfile
from gateway.core.plugins import PluginError, Registry
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, eventually, start_b2bua

# alice's SipAgent sends "User-Agent: voipgw-test-agent/alice" (gateway/testing/sip_agent.py).
G711_PHONE = DeviceProfile(
    name="acme-t1",
    user_agent_prefixes=("voipgw-test-agent/alice",),
    codecs=("PCMA", "PCMU", "telephone-event"),
)
PCMU_ONLY = DeviceProfile(
    name="acme-t0", user_agent_prefixes=("voipgw-test-agent/alice",), codecs=("pcmu",)
)
WIDEBAND = ("9", "111", "0", "8", "101")  # G722, opus, PCMU, PCMA, telephone-event


class Profiles:
    def __init__(self, *profiles: DeviceProfile) -> None:
        self.profiles = profiles

    @hookimpl
    def gateway_register_device_profiles(self, registry: Registry[Any], config: Any) -> None:
        for profile in self.profiles:
            registry.add(profile.name, profile)


async def with_profile(
    nursery: trio.Nursery, tmp_path: Path, seed: int, *profiles: DeviceProfile
) -> B2bua:
    return await start_b2bua(
        nursery, tmp_path, seed, plugins=[("devices", Profiles(*profiles))], alice_auto=None
    )


def audio(body: bytes) -> tuple[list[str], list[str]]:
    """The formats of the first m= line and the encodings its a=rtpmap lines name."""
    media = parse_sdp_untrusted(body).media[0]
    names = [value.split(" ", 1)[1].split("/")[0] for value in media.attributes.values("rtpmap")]
    return list(media.formats), names


async def test_a_call_to_the_phone_offers_only_its_codecs_in_its_order(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_profile(nursery, tmp_path, voipgw_seed, G711_PHONE)
    call = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", 24710, formats=WIDEBAND)
    )
    leg_b = await env.alice.next_call(timeout=5)
    formats, names = audio(leg_b.invite.body)
    assert formats == ["8", "0", "101"]  # PCMA, PCMU, telephone-event: the profile's order
    assert sorted(names) == ["PCMA", "PCMU", "telephone-event"]
    assert b"G722" not in leg_b.invite.body and b"opus" not in leg_b.invite.body
    assert b"a=fmtp:101 0-16" in leg_b.invite.body  # the kept format keeps its parameters
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", 24712, formats=("8", "101")))
    final = await call.final()
    assert final.status == 200
    assert audio(final.body)[0] == ["8", "101"]  # the trunk gets the phone's choice
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_the_phones_offer_reaches_the_trunk_with_only_its_codecs(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_profile(nursery, tmp_path, voipgw_seed, PCMU_ONLY)
    call = await env.alice.invite(
        "sip:+15551234@127.0.0.1:5060", sdp=simple_sdp("127.0.0.1", 24714, formats=WIDEBAND)
    )
    assert (await call.final()).status == 407
    await call.authenticate()
    leg_b = await env.trunk.next_call(timeout=5)
    # The phone's offer, narrowed: PCMU alone (telephone-event is not in this profile).
    assert audio(leg_b.invite.body) == (["0"], ["PCMU"])
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", 24716, formats=("0",)))
    final = await call.final()
    assert final.status == 200
    assert audio(final.body)[0] == ["0"]
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_an_offer_with_none_of_the_phones_codecs_is_refused_with_the_reason(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_profile(nursery, tmp_path, voipgw_seed, G711_PHONE)
    # To the phone: G.722 and telephone-event only (which alone would play nothing).
    call = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", 24718, formats=("9", "101"))
    )
    final = await call.final()
    assert final.status == 488
    warning = final.headers.get("Warning") or ""
    assert "device profile 'acme-t1' takes none of the audio codecs offered (G722);" in warning
    assert "it takes PCMA, PCMU, telephone-event" in warning
    assert env.alice.requests("INVITE") == []  # never rung
    await eventually(lambda: env.calls == 0)
    records = env.gateway.calls.records if env.gateway.calls is not None else None
    assert records is not None and env.gateway.store is not None
    records.flush()
    (record,) = env.gateway.store.call_records_recent()
    # The callee's leg refused the offer (as a policy would): the caller's SDP was not bad.
    assert record.end_reason == (
        "488 Not Acceptable Here (device profile 'acme-t1' takes none of the audio codecs "
        "offered (G722); it takes PCMA, PCMU, telephone-event)"
    )

    # From the phone: opus alone.
    call = await env.alice.invite(
        "sip:+15551234@127.0.0.1:5060", sdp=simple_sdp("127.0.0.1", 24720, formats=("111",))
    )
    assert (await call.final()).status == 407
    await call.authenticate()
    final = await call.final()
    assert final.status == 488
    assert "takes none of the audio codecs offered (opus)" in (final.headers.get("Warning") or "")
    assert env.trunk.requests("INVITE") == []
    await eventually(lambda: env.calls == 0)


async def test_a_profile_with_an_empty_codec_list_stops_start_up(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    empty = DeviceProfile(name="x", codecs=())
    with pytest.raises(PluginError, match=r"device profile 'x' \(plugin 'devices'\): codecs: "):
        await with_profile(nursery, tmp_path, voipgw_seed, empty)
