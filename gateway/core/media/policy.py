"""Media-security policies: what each call leg may use to protect its media (issue #5).

A policy is data (:class:`~gateway.core.interfaces.MediaPolicy`): the key exchanges a leg may
negotiate, in order of preference, whether cleartext RTP is acceptable, and the SRTP suites
allowed. The built-in ones below have names operators' configuration and scripts rely on; key-
exchange plugins may register more through ``gateway_register_media_policies``. Which policy a leg
gets: the ``gateway_media_security_policy`` hook first (device plugins), else the account's or
trunk's configured name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.core.interfaces import MediaPolicy

# The key exchanges the gateway knows of, best first: DTLS-SRTP and ZRTP authenticate the key
# agreement on the media path; SDES (RFC 4568) trusts the signalling; MIKEY is rare.
ALL_KEY_EXCHANGES = ("dtls", "zrtp", "sdes", "mikey")

DEFAULT_POLICY = "best-effort"

BUILTIN_POLICIES: Mapping[str, MediaPolicy] = {
    policy.name: policy
    for policy in (
        MediaPolicy(
            name="rtp-only",
            key_exchanges=(),
            allow_cleartext=True,
            description="never encrypt; offers with only encrypted media are refused (488)",
        ),
        MediaPolicy(
            name="sdes",
            key_exchanges=("sdes",),
            allow_cleartext=False,
            description="SDES-SRTP (RFC 4568) over TLS signalling; never cleartext",
        ),
        MediaPolicy(
            name="dtls",
            key_exchanges=("dtls",),
            allow_cleartext=False,
            description="DTLS-SRTP (RFC 5763/5764) only; never cleartext",
        ),
        MediaPolicy(
            name="encrypted-only",
            key_exchanges=ALL_KEY_EXCHANGES,
            allow_cleartext=False,
            description="any key exchange the gateway has enabled; never cleartext",
        ),
        MediaPolicy(
            name="best-effort",
            key_exchanges=ALL_KEY_EXCHANGES,
            allow_cleartext=True,
            description="encrypt where the device can, else RTP (the default for new accounts)",
        ),
    )
}


class UnknownPolicy(LookupError):
    """A leg names a policy nobody registered."""


def all_policies(registered: Iterable[tuple[str, MediaPolicy]]) -> dict[str, MediaPolicy]:
    """The built-in policies plus those plugins registered (a plugin may not replace a
    built-in: operators rely on their meaning)."""
    policies = dict(BUILTIN_POLICIES)
    for name, policy in registered:
        if name in BUILTIN_POLICIES:
            raise ValueError(f"media policy {name!r} is built in and cannot be replaced")
        policies[name] = policy
    return policies


def effective(policy: MediaPolicy, enabled_key_exchanges: Iterable[str]) -> MediaPolicy:
    """``policy`` limited to the key exchanges whose plugins are enabled, in the policy's order."""
    enabled = set(enabled_key_exchanges)
    return MediaPolicy(
        name=policy.name,
        key_exchanges=tuple(k for k in policy.key_exchanges if k in enabled),
        allow_cleartext=policy.allow_cleartext,
        suites=policy.suites,
        description=policy.description,
    )


def resolve(
    name: str | None, policies: Mapping[str, MediaPolicy], *, hook_answer: object = None
) -> MediaPolicy:
    """The policy for a leg: the hook's answer (a policy or a registered name) if any, else
    ``name``, else the default. Raises :class:`UnknownPolicy` for a name nobody registered."""
    if isinstance(hook_answer, MediaPolicy):
        return hook_answer
    if isinstance(hook_answer, str):
        name = hook_answer
    name = name or DEFAULT_POLICY
    policy = policies.get(name)
    if policy is None:
        known = ", ".join(sorted(policies))
        raise UnknownPolicy(f"media policy {name!r} is not registered (known: {known})")
    return policy
