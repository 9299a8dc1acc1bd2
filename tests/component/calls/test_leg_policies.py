"""A leg's media policy, limited to the enabled key exchanges (``CallManager.leg_security``).

Since session 41 a registered policy is limited once, at its first leg, and the same object
serves every later leg (docs/benchmarks.md, "Session 41 (keying)"); what a leg gets must be
what ``policy.effective`` makes of the policy it resolves to, call after call: an account's
policy changed between two calls (``voipgw accounts``) gives its next leg the new one, a device
profile that narrows the policy and a hook's own MediaPolicy (under a registered name too) are
limited as they are, never answered from what the registered policy of that name gave.

Set-up as b2bua_env.py, with the sdes and dtls key exchanges enabled.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pluggy
import trio

import gateway.plugins.keyexchange.dtls_srtp as dtls_plugin
import gateway.plugins.keyexchange.sdes as sdes_plugin
from gateway.core.calls.leg import Side
from gateway.core.interfaces import DeviceProfile, LegInfo, MediaPolicy
from gateway.core.media.policy import effective
from gateway.core.media.security import LegSecurity
from tests.component.calls.b2bua_env import B2bua, start_b2bua

hookimpl = pluggy.HookimplMarker("voipgw")
ENABLED = ("sdes", "dtls")
CALL = SimpleNamespace(id="call-1")
SDES_PHONE = DeviceProfile(name="sdes phone", key_exchanges=("sdes",))


def alices_leg(env: B2bua, device: DeviceProfile | None = None) -> LegSecurity:
    assert env.gateway.calls is not None
    return env.gateway.calls.leg_security(
        CALL,  # type: ignore[arg-type]
        Side.B,
        kind="account",
        name="alice",
        flow=None,
        transport="udp",
        device=device,
    )


async def test_a_registered_policy_is_limited_once_and_follows_the_accounts_changes(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, plugins=[("sdes", sdes_plugin), ("dtls", dtls_plugin)]
    )
    policies = env.gateway.media_policies
    assert env.gateway.store is not None
    first, second = alices_leg(env), alices_leg(env)
    assert first.policy == effective(policies["best-effort"], ENABLED)
    assert first.policy.key_exchanges == ("dtls", "sdes")  # zrtp and mikey are not enabled
    assert second.policy is first.policy

    env.gateway.store.accounts_set("alice", media_policy="sdes")
    assert alices_leg(env).policy == effective(policies["sdes"], ENABLED)
    env.gateway.store.accounts_set("alice", media_policy="rtp-only")
    assert alices_leg(env).policy == effective(policies["rtp-only"], ENABLED)
    env.gateway.store.accounts_set("alice", media_policy="best-effort")
    assert alices_leg(env).policy is first.policy

    # A device that takes only SDES: best-effort narrowed for it, not the cached one.
    narrowed = alices_leg(env, SDES_PHONE).policy
    assert narrowed.name == "best-effort" and narrowed.key_exchanges == ("sdes",)
    assert alices_leg(env).policy is first.policy


class OwnPolicy:
    """``gateway_media_security_policy``: a MediaPolicy of its own under a registered name."""

    def __init__(self) -> None:
        self.answer: Any = None

    @hookimpl
    def gateway_media_security_policy(self, leg: LegInfo) -> Any:
        return self.answer


async def test_a_hooks_own_policy_is_limited_as_it_is(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    hook = OwnPolicy()
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        plugins=[("sdes", sdes_plugin), ("dtls", dtls_plugin), ("own-policy", hook)],
    )
    registered = alices_leg(env).policy
    hook.answer = MediaPolicy(name="best-effort", key_exchanges=("sdes",), allow_cleartext=False)
    own = alices_leg(env).policy
    assert (own.key_exchanges, own.allow_cleartext) == (("sdes",), False)
    # Limited per leg as well: zrtp, which it names, is not enabled here.
    hook.answer = MediaPolicy(
        name="best-effort", key_exchanges=("zrtp", "sdes"), allow_cleartext=True
    )
    assert alices_leg(env).policy.key_exchanges == ("sdes",)
    hook.answer = MediaPolicy(
        name="zrtp-phones", key_exchanges=("zrtp", "dtls"), allow_cleartext=False
    )
    assert alices_leg(env).policy.key_exchanges == ("dtls",)
    hook.answer = "sdes"  # a registered name: the registered policy
    assert alices_leg(env).policy == effective(env.gateway.media_policies["sdes"], ENABLED)
    hook.answer = None
    assert alices_leg(env).policy is registered
