"""Phone models: which registered device profile a peer is, and what its profile changes.

Theory of operation. Device plugins register :class:`~gateway.core.interfaces.DeviceProfile`
values under a name (``gateway_register_device_profiles``): what a phone model takes and what it
chokes on. A request the device itself sends (its INVITE) is identified by the
``gateway_identify_device`` hook (``firstresult``: a plugin may look at anything, a certificate,
a header) and, where no plugin decides, by its ``User-Agent`` against the registered profiles'
``user_agent_prefixes``: the longest matching prefix wins, on a tie the profile registered first
(so ``Yealink SIP-T46U`` finds a "Yealink SIP-T4" profile before a "Yealink" one). A call *to* a
registered phone is identified by the ``User-Agent`` its REGISTER carried, which the store keeps
with the binding: the hook needs a request from the device, and the INVITE to it is ours.

What a profile changes, on that device's legs only (``narrowed_for_device`` and the manager's
``leg_security``):

- ``media_policy`` replaces the leg's policy where its account or trunk has ``best-effort``,
  the default (the store cannot tell "set to best-effort" from "left so"): a model known not to
  encrypt gets ``rtp-only`` instead of offers it would refuse. Any other policy is kept: a
  profile cannot weaken an account set to ``sdes`` or ``encrypted-only``.
- ``key_exchanges`` narrows the policy's key exchanges to those the model handles (a phone that
  rejects an offer carrying ``a=zrtp-hash`` or ``a=fingerprint`` it does not know: ``("sdes",)``).
- ``suites`` narrows the SRTP suites to those it accepts (a phone that refuses AEAD or 256-bit
  suites). Narrowing never adds cleartext: a leg whose policy forbids it and whose device takes
  none of what is left is refused with the reason, as any leg that cannot get keys.
- ``codecs`` keeps only the audio codecs the model decodes, in its order of preference, in
  the offers we send it and in its own offers before the other leg sees them (so our answers
  to it hold only those too): a phone offered G.722 or Opus it cannot decode answers wrongly
  or plays noise. An offer left with no audio codec is refused with 488 and the reason
  (``LegSecurity``, gateway/core/media/security.py).
- ``dtmf = "info"`` declares a model that sends DTMF only as SIP INFO (as a trunk's ``dtmf``
  does): its offers without telephone-event get one towards the other leg, and the digits are
  interworked (docs/architecture.md "DTMF interworking"); ``LegSecurity.dtmf_info``.

The call's security record names the profile (``voipgw calls``: "device yealink-t4").

Everything here is synchronous and quick: it runs on the event loop for every INVITE when any
profile or identification hook is registered, and not at all when none is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from gateway.core.config import DTMF_MODES
from gateway.core.interfaces import DeviceProfile, MediaPolicy
from gateway.core.media.policy import ALL_KEY_EXCHANGES
from gateway.core.media.srtp import SUITES
from gateway.core.plugins import HookFailures, PluginError, raising_plugin
from gateway.core.sip.message import Request
from gateway.core.transport.flows import Flow

log = logging.getLogger(__name__)


class DeviceIdentifier:
    """Which registered profile a device is (see the module docstring). ``profiles`` are the
    registered ``(name, profile)`` pairs in registration order; ``identify_hook`` is the
    plugin manager's ``gateway_identify_device`` caller, or None when no plugin implements it."""

    def __init__(
        self,
        profiles: Sequence[tuple[str, DeviceProfile]],
        identify_hook: Callable[..., Any] | None,
        *,
        clock: Callable[[], float],
        policies: Mapping[str, MediaPolicy] | None = None,
        key_exchanges: Iterable[str] = (),
    ) -> None:
        self._prefixes = sorted(
            (
                (prefix, order, profile)
                for order, (_, profile) in enumerate(profiles)
                for prefix in profile.user_agent_prefixes
                if prefix
            ),
            key=lambda entry: (-len(entry[0]), entry[1]),
        )
        self._hook = identify_hook
        # Each implementation with its plugin's name, newest first as pluggy calls them
        # (firstresult): called one by one so that a profile that fails the checks is put down
        # to the plugin that returned it (pluggy's call does not say whose answer it is). A
        # plain function standing in for the hook (tests, `voipgw` commands) has no name.
        # A hook wrapper (pluggy's wrapper or hookwrapper) wraps the others' call and may
        # replace their answer: with one, the hook is called through pluggy as it always was
        # (its answer checked all the same, a failure named by its traceback).
        impls = getattr(identify_hook, "get_hookimpls", None)
        found = impls() if impls is not None else []
        self._impls: tuple[tuple[str | None, Callable[..., Any], tuple[str, ...]], ...] = (
            tuple(
                (impl.plugin_name, impl.function, tuple(impl.argnames)) for impl in reversed(found)
            )
            if impls is not None
            and not any(impl.hookwrapper or getattr(impl, "wrapper", False) for impl in found)
            else ((None, identify_hook, ("request", "flow")),)
            if identify_hook is not None
            else ()
        )
        self._policies = policies
        self._known_exchanges = set(ALL_KEY_EXCHANGES) | set(key_exchanges)
        # A plugin's identify hook that keeps failing is logged once a minute, not per INVITE.
        self._failures = HookFailures(log, clock)

    @property
    def active(self) -> bool:
        """Whether anything can identify a device: without profiles or a hook, nothing is
        looked at per INVITE."""
        return bool(self._prefixes) or self._hook is not None

    def of_request(self, request: Request, flow: Flow) -> DeviceProfile | None:
        """The profile of the device that sent ``request`` over ``flow``: the plugins' answer,
        else the ``User-Agent`` match; None for a device nobody knows. A plugin that fails or
        answers something else is logged and passed over for the next plugin, then the
        ``User-Agent`` match (a call never fails for it)."""
        if self._impls:
            answer = self._hooks_answer(request, flow)
            if answer is not None:
                return answer
        return self.of_user_agent(request.headers.get("User-Agent"))

    def _hooks_answer(self, request: Request, flow: Flow) -> DeviceProfile | None:
        """The first implementation's answer that is not None (firstresult), when it is a
        profile that passes the checks registered ones pass at start-up
        (:func:`profile_problem`); else None. An implementation that raises or answers
        something else is logged naming the plugin and passed over for the next one, as if it
        had answered None: a profile made on the spot with ``codecs=()`` would refuse every
        offer, one naming a policy nobody registered would refuse media, and one vendor's
        broken plugin must not keep another's phones from being identified."""
        arguments = {"request": request, "flow": flow}
        for plugin, function, argnames in self._impls:
            try:
                answer = function(**{name: arguments[name] for name in argnames})
            except Exception as exc:
                if plugin is None:  # called through pluggy: its traceback says
                    plugin = raising_plugin(self._hook, exc)
                self._log_hook_error(plugin, "gateway_identify_device failed", exc)
                continue
            if answer is None:
                continue
            if not isinstance(answer, DeviceProfile):
                self._log_hook_error(
                    plugin,
                    f"gateway_identify_device returned {type(answer).__name__}, "
                    "expected a DeviceProfile or None",
                )
                continue
            problem = profile_problem(answer, self._policies, self._known_exchanges)
            if problem is not None:
                self._log_hook_error(
                    plugin,
                    f"gateway_identify_device returned device profile {answer.name!r}: "
                    f"{problem}; taken as no profile",
                )
                continue
            return answer
        return None

    def of_user_agent(self, user_agent: str | None) -> DeviceProfile | None:
        """The registered profile with the longest prefix of ``user_agent``, or None."""
        if not user_agent:
            return None
        for prefix, _, profile in self._prefixes:
            if user_agent.startswith(prefix):
                return profile
        return None

    def _log_hook_error(
        self, plugin: str | None, message: str, failure: BaseException | None = None
    ) -> None:
        # "plugin 'NAME': " where the plugin is known (a plain function standing in for the
        # hook has no name); once a minute per plugin, with a count of those left out.
        who = f"plugin {plugin!r}: " if plugin is not None else ""
        self._failures.failed(
            plugin,
            failure,
            "%s%s (devices are identified by User-Agent meanwhile)%s",
            who,
            message,
        )


def narrowed_for_device(policy: MediaPolicy, device: DeviceProfile | None) -> MediaPolicy:
    """``policy`` limited to the key exchanges and SRTP suites ``device`` takes (its name and
    cleartext rule unchanged). A device that takes none of the policy's suites leaves no key
    exchange: an empty ``suites`` would mean "every suite"."""
    if device is None or (device.key_exchanges is None and device.suites is None):
        return policy
    exchanges = policy.key_exchanges
    if device.key_exchanges is not None:
        exchanges = tuple(name for name in exchanges if name in device.key_exchanges)
    suites = policy.suites
    if device.suites is not None:
        suites = (
            tuple(suite for suite in policy.suites if suite in device.suites)
            if policy.suites
            else device.suites
        )
        if not suites:
            exchanges = ()
    return MediaPolicy(
        name=policy.name,
        key_exchanges=exchanges,
        allow_cleartext=policy.allow_cleartext,
        suites=suites,
        description=policy.description,
    )


def check_profiles(
    profiles: Iterable[tuple[str, DeviceProfile, str]],
    policies: Mapping[str, MediaPolicy],
    key_exchanges: Iterable[str],
) -> None:
    """Refuse, at start-up, registered profiles that name what does not exist: a policy no
    plugin registered, a key exchange or an SRTP suite the gateway does not know. Each entry is
    ``(name, profile, plugin)``; the error names the profile, its plugin and the field."""
    known_exchanges = set(ALL_KEY_EXCHANGES) | set(key_exchanges)
    for name, profile, plugin in profiles:
        where = f"device profile {name!r} (plugin {plugin!r})"
        if not isinstance(profile, DeviceProfile):
            raise PluginError(f"{where} is a {type(profile).__name__}, not a DeviceProfile")
        problem = profile_problem(profile, policies, known_exchanges)
        if problem is not None:
            raise PluginError(f"{where}: {problem}")


def profile_problem(
    profile: DeviceProfile,
    policies: Mapping[str, MediaPolicy] | None,
    known_exchanges: Collection[str],
) -> str | None:
    """What is wrong with ``profile`` (the field and why), or None: the rules registered
    profiles are held to at start-up (:func:`check_profiles`) and a profile the
    ``gateway_identify_device`` hook returns is held to per INVITE (:class:`DeviceIdentifier`).
    ``policies`` None: its ``media_policy`` is not looked up (no gateway to ask)."""
    if (
        policies is not None
        and profile.media_policy is not None
        and profile.media_policy not in policies
    ):
        known = ", ".join(sorted(policies))
        return f"media_policy {profile.media_policy!r} is not registered (known: {known})"
    for exchange in profile.key_exchanges or ():
        if exchange not in known_exchanges:
            known = ", ".join(sorted(known_exchanges))
            return f"key_exchanges: unknown key exchange {exchange!r} (known: {known})"
    if profile.dtmf not in DTMF_MODES:
        return f"dtmf: {profile.dtmf!r} is not one of {', '.join(DTMF_MODES)}"
    if profile.codecs is not None and (
        not profile.codecs
        or not all(isinstance(codec, str) and codec.strip() for codec in profile.codecs)
    ):
        return (
            f"codecs: {profile.codecs!r} must name at least one codec by its "
            "rtpmap encoding name (None: no limit)"
        )
    for suite in profile.suites or ():
        if suite not in SUITES:
            return f"suites: unknown SRTP suite {suite!r} (known: {', '.join(SUITES)})"
    return None
