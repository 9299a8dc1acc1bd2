"""Device profiles through the B2BUA (gateway/core/devices.py): a phone model a plugin registers
is recognised and its profile shapes that device's legs, and only those.

- a call to a registered phone: the profile found by the User-Agent of its REGISTER narrows our
  offer to the key exchanges the model takes (no ``a=zrtp-hash`` for a phone that only does
  SDES), and the call record names the device;
- a call from a phone: its INVITE's User-Agent finds the profile, whose ``media_policy``
  replaces the default one (``rtp-only``: its ZRTP offer is answered in clear), but never a
  policy the operator set for the account;
- a plugin's ``gateway_identify_device`` decides first (here by a header of the trunk's INVITE);
  one that fails or answers nonsense is passed over for the User-Agent match, and the call goes on;
- a profile naming an unknown policy, key exchange or suite stops start-up with its name.

Signalling on the in-memory network, ZRTP enabled (the only key exchange usable over UDP
signalling), media on real 127.0.0.1 ports in virtual time. Set-up as b2bua_env.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import gateway.plugins.keyexchange.zrtp as zrtp_plugin
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import DeviceProfile
from gateway.core.plugins import PluginError, Registry
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.message import Request
from gateway.core.store.sqlite import SqliteStore
from gateway.core.transport.flows import Flow
from gateway.testing.sip_agent import simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, eventually, start_b2bua
from tests.component.calls.zrtp_pairs import phone_exchange, zrtp_sdp

# alice's SipAgent sends "User-Agent: voipgw-test-agent/alice" (gateway/testing/sip_agent.py).
SDES_ONLY = DeviceProfile(
    name="acme-t1", user_agent_prefixes=("voipgw-test-agent/a",), key_exchanges=("sdes",)
)
NO_SRTP = DeviceProfile(
    name="acme-t0", user_agent_prefixes=("voipgw-test-agent/al",), media_policy="rtp-only"
)


class DevicePlugin:
    """A device plugin as an operator would write one: profiles, and optionally its own way to
    tell models apart."""

    def __init__(
        self,
        *profiles: DeviceProfile,
        identify: Callable[[Request], Any] | None = None,
    ) -> None:
        self.profiles = profiles
        self.identify = identify

    @hookimpl
    def gateway_register_device_profiles(self, registry: Registry[Any], config: Any) -> None:
        for profile in self.profiles:
            registry.add(profile.name, profile)

    @hookimpl
    def gateway_identify_device(self, request: Request, flow: Flow) -> DeviceProfile | None:
        return self.identify(request) if self.identify is not None else None


async def with_devices(
    nursery: trio.Nursery, tmp_path: Path, seed: int, plugin: DevicePlugin
) -> B2bua:
    return await start_b2bua(
        nursery,
        tmp_path,
        seed,
        plugins=[("zrtp", zrtp_plugin), ("devices", plugin)],
        alice_auto=None,
    )


def record_of_only_call(env: B2bua) -> dict[str, Any]:
    """The security record of the one call, its ringing B leg's too (the record has a "b" only
    once a leg answered)."""
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    record = gateway_call.security_record()
    if "b" not in record and gateway_call.b_legs:
        security = gateway_call.b_legs[0].security
        assert security is not None
        record["b"] = security.record()
    return record


def attribute_names(body: bytes) -> set[str]:
    sd = parse_sdp_untrusted(body)
    return {a[0] for a in sd.attributes} | {a[0] for m in sd.media for a in m.attributes}


async def test_a_call_to_a_phone_offers_only_what_its_model_takes(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Without a profile, alice's phone is offered ZRTP (best-effort over UDP).
    env = await with_devices(nursery, tmp_path / "plain", voipgw_seed, DevicePlugin())
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call(timeout=5)
    assert "zrtp-hash" in attribute_names(leg_b.invite.body)
    assert "device" not in record_of_only_call(env)["b"]
    await leg_b.answer(486)
    await call.final()

    env = await with_devices(nursery, tmp_path / "sdes", voipgw_seed, DevicePlugin(SDES_ONLY))
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call(timeout=5)
    assert "zrtp-hash" not in attribute_names(leg_b.invite.body)
    record = record_of_only_call(env)
    assert record["b"]["device"] == "acme-t1"
    assert "device" not in record["a"]  # the trunk is no Acme phone
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", 24700))
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_phones_profile_policy_replaces_the_default_only(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_devices(nursery, tmp_path, voipgw_seed, DevicePlugin(SDES_ONLY, NO_SRTP))
    # The longest prefix wins: alice's UA finds acme-t0 (rtp-only), not acme-t1.
    phone = phone_exchange().offer(suites=[], secure_signalling=False)
    call = await env.alice.invite("sip:+15551234@127.0.0.1:5060", sdp=zrtp_sdp(phone))
    assert (await call.final()).status == 407
    await call.authenticate()
    leg_b = await env.trunk.next_call(timeout=5)
    record = record_of_only_call(env)
    assert record["a"]["device"] == "acme-t0"
    assert record["a"]["policy"] == "rtp-only"
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", 24702))
    final = await call.final()
    assert final.status == 200
    assert "zrtp-hash" not in attribute_names(final.body)  # answered in clear
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)

    # An account the operator set to a policy of its own keeps it whatever the device.
    store = SqliteStore.open(tmp_path / "state")
    try:
        store.accounts_set("alice", media_policy="encrypted-only")
    finally:
        store.close()
    await eventually(lambda: _policy_of(env, "alice") == "encrypted-only")
    call = await env.alice.invite("sip:+15551234@127.0.0.1:5060", sdp=zrtp_sdp(phone))
    assert (await call.final()).status == 407
    await call.authenticate()
    leg_b = await env.trunk.next_call(timeout=5)
    record = record_of_only_call(env)
    assert record["a"]["device"] == "acme-t0"
    assert record["a"]["policy"] == "encrypted-only"
    await leg_b.answer(486)
    await call.final()


def _policy_of(env: B2bua, account: str) -> str | None:
    assert env.gateway.store is not None
    found = env.gateway.store.get_account(account)
    return found.media_policy if found is not None else None


async def test_a_plugin_identifies_devices_first_and_a_failing_one_is_passed_over(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pbx = DeviceProfile(name="pbx-9000", key_exchanges=())

    def by_header(request: Request) -> Any:
        model = request.headers.get("X-Model")
        if model == "9000":
            return pbx
        if model == "broken":
            raise RuntimeError("the plugin has a bug")
        if model == "garbage":
            return "pbx-9000"  # a name, not a profile
        return None

    by_user_agent = DeviceProfile(name="carrier-sbc", user_agent_prefixes=("voipgw-test-agent/+",))
    env = await with_devices(
        nursery, tmp_path, voipgw_seed, DevicePlugin(by_user_agent, identify=by_header)
    )
    devices = []
    for model in ("9000", "broken", "garbage", "none"):
        call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[("X-Model", model)])
        leg_b = await env.alice.next_call(timeout=5)
        devices.append(record_of_only_call(env)["a"].get("device"))
        await leg_b.answer(486)
        assert (await call.final()).status == 486
        await eventually(lambda: env.calls == 0)
    # Where the plugin does not decide, the trunk's User-Agent ("voipgw-test-agent/+1...").
    assert devices == ["pbx-9000", "carrier-sbc", "carrier-sbc", "carrier-sbc"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    # Logged once a minute, not per INVITE: the "broken" one (the "garbage" one came within
    # the same minute of virtual time).
    assert len([e for e in errors if "gateway_identify_device" in e]) == 1
    # pluggy does not say whose hook raised; the log does.
    assert any(e.startswith("plugin 'devices': gateway_identify_device failed") for e in errors)


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        (DeviceProfile(name="x", media_policy="paranoid"), "media_policy 'paranoid'"),
        (DeviceProfile(name="x", key_exchanges=("sdes", "magic")), "unknown key exchange 'magic'"),
        (DeviceProfile(name="x", suites=("ROT13",)), "unknown SRTP suite 'ROT13'"),
    ],
)
async def test_a_profile_naming_what_does_not_exist_stops_start_up(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    profile: DeviceProfile,
    message: str,
) -> None:
    with pytest.raises(
        PluginError, match=f"device profile 'x' \\(plugin 'devices'\\): .*{message}"
    ):
        await with_devices(nursery, tmp_path, voipgw_seed, DevicePlugin(profile))
