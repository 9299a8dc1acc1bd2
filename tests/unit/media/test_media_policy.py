from __future__ import annotations

import pytest

from gateway.core.interfaces import MediaPolicy
from gateway.core.media.policy import (
    BUILTIN_POLICIES,
    UnknownPolicy,
    all_policies,
    effective,
    resolve,
)


def test_builtin_policy_names_are_the_documented_contract() -> None:
    assert set(BUILTIN_POLICIES) == {"rtp-only", "sdes", "dtls", "encrypted-only", "best-effort"}
    assert BUILTIN_POLICIES["dtls"].key_exchanges == ("dtls",)
    assert not BUILTIN_POLICIES["dtls"].allow_cleartext
    assert BUILTIN_POLICIES["rtp-only"].key_exchanges == ()
    assert BUILTIN_POLICIES["rtp-only"].allow_cleartext
    assert BUILTIN_POLICIES["sdes"].key_exchanges == ("sdes",)
    assert not BUILTIN_POLICIES["sdes"].allow_cleartext
    assert not BUILTIN_POLICIES["encrypted-only"].allow_cleartext
    assert BUILTIN_POLICIES["best-effort"].allow_cleartext
    assert "sdes" in BUILTIN_POLICIES["best-effort"].key_exchanges


def test_plugins_add_policies_but_cannot_replace_builtins() -> None:
    zrtp = MediaPolicy(name="zrtp", key_exchanges=("zrtp",), allow_cleartext=False)
    policies = all_policies([("zrtp", zrtp)])
    assert policies["zrtp"] is zrtp and "sdes" in policies
    with pytest.raises(ValueError, match="built in"):
        all_policies([("sdes", zrtp)])


def test_effective_keeps_only_enabled_key_exchanges_in_order() -> None:
    limited = effective(BUILTIN_POLICIES["encrypted-only"], ["sdes", "dtls"])
    assert limited.key_exchanges == ("dtls", "sdes")
    assert not limited.allow_cleartext


def test_resolution_order_hook_then_configured_then_default() -> None:
    policies = all_policies([])
    custom = MediaPolicy(name="custom", key_exchanges=(), allow_cleartext=True)
    assert resolve("sdes", policies, hook_answer=custom) is custom
    assert resolve("sdes", policies, hook_answer="rtp-only").name == "rtp-only"
    assert resolve("sdes", policies).name == "sdes"
    assert resolve(None, policies).name == "best-effort"
    with pytest.raises(UnknownPolicy, match="'nope' is not registered"):
        resolve("nope", policies)
