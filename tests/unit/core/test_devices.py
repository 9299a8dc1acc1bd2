"""Device identification and what a profile does to a leg's policy (gateway/core/devices.py),
without a gateway: the User-Agent match, the identify hook's precedence and failures, the
policy narrowing, and the start-up checks of registered profiles."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.core.devices import DeviceIdentifier, check_profiles, narrowed_for_device
from gateway.core.interfaces import DeviceProfile, MediaPolicy
from gateway.core.media.policy import BUILTIN_POLICIES
from gateway.core.plugins import PluginError
from gateway.core.sip.message import Headers, Request
from gateway.core.sip.uri import SipUri
from gateway.core.transport.flows import Flow, FlowKey

YEALINK = DeviceProfile(name="yealink", user_agent_prefixes=("Yealink",))
YEALINK_T4 = DeviceProfile(name="yealink-t4", user_agent_prefixes=("Yealink SIP-T4",))
ALSO_T4 = DeviceProfile(name="also-t4", user_agent_prefixes=("Yealink SIP-T4",))
SNOM = DeviceProfile(name="snom", user_agent_prefixes=("snom", "Snom"))
BEST_EFFORT = BUILTIN_POLICIES["best-effort"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def identifier(*profiles: DeviceProfile, hook: Any = None, clock: Clock | None = None) -> Any:
    return DeviceIdentifier(
        [(p.name, p) for p in profiles], hook, clock=clock if clock is not None else Clock()
    )


def invite(user_agent: str | None) -> Request:
    headers = [("User-Agent", user_agent)] if user_agent is not None else []
    return Request("INVITE", SipUri("sip", "example.com", user="bob"), Headers.of(headers))


async def _send(data: bytes) -> None:
    raise AssertionError("never sends")


FLOW = Flow(FlowKey("udp", ("127.0.0.1", 5060), ("192.0.2.7", 5060)), _send, reliable=False)


@pytest.mark.parametrize(
    ("user_agent", "expected"),
    [
        ("Yealink SIP-T46U 108.86.0.20", "yealink-t4"),  # the longest prefix
        ("Yealink SIP-T54W 96.86.0.100", "yealink"),
        ("Yealink W60B", "yealink"),
        ("snomD785/10.1.159.12", "snom"),
        ("Snom D120", "snom"),
        ("Grandstream GXP2170", None),
        ("yealink lower case", None),  # prefixes are compared as written
        ("", None),
        (None, None),
    ],
)
def test_the_longest_user_agent_prefix_wins(user_agent: str | None, expected: str | None) -> None:
    found = identifier(YEALINK, YEALINK_T4, SNOM).of_request(invite(user_agent), FLOW)
    assert (found.name if found else None) == expected


def test_equal_prefixes_go_to_the_profile_registered_first() -> None:
    assert identifier(YEALINK_T4, ALSO_T4).of_user_agent("Yealink SIP-T46U").name == "yealink-t4"
    assert identifier(ALSO_T4, YEALINK_T4).of_user_agent("Yealink SIP-T46U").name == "also-t4"


def test_nothing_to_identify_with_is_inactive() -> None:
    assert not identifier().active
    assert identifier(YEALINK).active
    assert identifier(hook=lambda **kwargs: None).active


def test_the_hook_decides_first_and_none_falls_back_to_the_user_agent() -> None:
    custom = DeviceProfile(name="custom")
    answers: list[Any] = [custom, None]
    devices = identifier(YEALINK, hook=lambda request, flow: answers.pop(0))
    assert devices.of_request(invite("Yealink SIP-T46U"), FLOW) is custom
    assert devices.of_request(invite("Yealink SIP-T46U"), FLOW) is YEALINK


def test_a_failing_or_wrong_hook_is_logged_once_a_minute_and_passed_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    answers: list[Any] = ["yealink", RuntimeError("bug"), 42]

    def hook(request: Request, flow: Flow) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    devices = identifier(YEALINK, hook=hook, clock=clock)
    with caplog.at_level(logging.ERROR, logger="gateway.core.devices"):
        assert devices.of_request(invite("Yealink"), FLOW) is YEALINK  # a str: passed over
        clock.now = 30.0
        assert devices.of_request(invite("Yealink"), FLOW) is YEALINK  # raised: passed over
        clock.now = 61.0
        assert devices.of_request(invite("Yealink"), FLOW) is YEALINK
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # the first, then the one a minute later
    assert "returned str, expected a DeviceProfile" in messages[0]
    assert "returned int" in messages[1]
    # The line a minute later counts those left out (plugins' HookFailures, one limiter).
    assert messages[1].endswith("meanwhile) (1 more since the last such line)")


def test_one_failing_identify_plugin_does_not_silence_another(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Once a minute per plugin, as every hook failure (gateway.core.plugins.HookFailures):
    # a plugin failing on every INVITE hid another's first failure for a minute.
    import pluggy

    from gateway.core.plugins import new_plugin_manager

    hookimpl = pluggy.HookimplMarker("voipgw")

    class Older:
        @hookimpl
        def gateway_identify_device(self, request: Request) -> DeviceProfile | None:
            raise KeyError("older")

    class Newer:  # asked first; fails only on some phones
        @hookimpl
        def gateway_identify_device(self, request: Request) -> DeviceProfile | None:
            if request.headers.get("User-Agent") == "Snom":
                raise KeyError("newer")
            return None

    pm = new_plugin_manager()
    pm.register(Older(), name="older")
    pm.register(Newer(), name="newer")
    clock = Clock()
    devices = DeviceIdentifier(
        [(YEALINK.name, YEALINK)], pm.hook.gateway_identify_device, clock=clock
    )
    with caplog.at_level(logging.ERROR, logger="gateway.core.devices"):
        assert devices.of_request(invite("Snom"), FLOW) is None
        clock.now = 1.0
        assert devices.of_request(invite("Yealink"), FLOW) is YEALINK
        clock.now = 2.0
        assert devices.of_request(invite("Yealink"), FLOW) is YEALINK
    messages = [r.getMessage() for r in caplog.records]
    assert [m.partition(":")[0] for m in messages] == ["plugin 'newer'", "plugin 'older'"]


def test_a_failing_or_wrong_identify_plugin_is_passed_over_for_the_next_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One vendor's broken plugin (asked first: registered last) must not keep another
    # plugin's phones unidentified: each failing or wrong answer is passed over as None.
    import pluggy

    from gateway.core.plugins import new_plugin_manager

    hookimpl = pluggy.HookimplMarker("voipgw")
    snom = DeviceProfile(name="snom", codecs=("PCMU",))

    class Knows:
        @hookimpl
        def gateway_identify_device(self, request: Request) -> DeviceProfile | None:
            return snom

    class Wrong:
        @hookimpl
        def gateway_identify_device(self, request: Request) -> Any:
            return "snom"

    class BadProfile:
        @hookimpl
        def gateway_identify_device(self, request: Request) -> DeviceProfile:
            return DeviceProfile(name="spot", codecs=())

    class Broken:
        @hookimpl
        def gateway_identify_device(self, request: Request) -> DeviceProfile | None:
            raise KeyError("broken")

    pm = new_plugin_manager()
    pm.register(Knows(), name="knows")
    pm.register(Wrong(), name="wrong")
    pm.register(BadProfile(), name="bad-profile")
    pm.register(Broken(), name="broken")
    devices = DeviceIdentifier(
        [(YEALINK.name, YEALINK)],
        pm.hook.gateway_identify_device,
        clock=Clock(),
        policies=BUILTIN_POLICIES,
    )
    with caplog.at_level(logging.ERROR, logger="gateway.core.devices"):
        assert devices.of_request(invite("Yealink"), FLOW) is snom
    assert [r.getMessage().partition(":")[0] for r in caplog.records] == [
        "plugin 'broken'",
        "plugin 'bad-profile'",
        "plugin 'wrong'",
    ]


def test_a_profile_narrows_key_exchanges_and_suites_but_never_adds_cleartext() -> None:
    sdes_only = DeviceProfile(name="d", key_exchanges=("sdes", "mikey"))
    narrowed = narrowed_for_device(BEST_EFFORT, sdes_only)
    assert narrowed.key_exchanges == ("sdes", "mikey")  # the policy's order
    assert narrowed.allow_cleartext and narrowed.name == "best-effort"

    strict = MediaPolicy(
        name="strict",
        key_exchanges=("dtls", "sdes"),
        allow_cleartext=False,
        suites=("AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"),
    )
    old_phone = DeviceProfile(
        name="old", suites=("AES_CM_128_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_80")
    )
    assert narrowed_for_device(strict, old_phone).suites == ("AES_CM_128_HMAC_SHA1_80",)
    # A policy without suites (every suite) takes the device's list.
    assert narrowed_for_device(BEST_EFFORT, old_phone).suites == old_phone.suites
    # No suite in common: no key exchange is left (an empty suites would mean "any").
    gcm_only = DeviceProfile(name="gcm", suites=("AEAD_AES_256_GCM",))
    nothing = narrowed_for_device(strict, gcm_only)
    assert nothing.key_exchanges == () and not nothing.allow_cleartext
    # No profile, or one without limits: the policy itself.
    assert narrowed_for_device(strict, None) is strict
    assert narrowed_for_device(strict, YEALINK) is strict


def test_profiles_naming_what_does_not_exist_are_refused_with_their_plugin() -> None:
    good = DeviceProfile(
        name="ok",
        media_policy="sdes",
        key_exchanges=("sdes", "zrtp", "custom-kx"),
        suites=("AES_CM_128_HMAC_SHA1_32",),
    )
    check_profiles([("ok", good, "acme")], BUILTIN_POLICIES, ["custom-kx"])
    with pytest.raises(PluginError, match=r"device profile 'bad' \(plugin 'acme'\): media_policy"):
        check_profiles(
            [("bad", DeviceProfile(name="bad", media_policy="nope"), "acme")], BUILTIN_POLICIES, []
        )
    with pytest.raises(PluginError, match="not a DeviceProfile"):
        check_profiles([("bad", "a string", "acme")], BUILTIN_POLICIES, [])  # type: ignore[list-item]


def test_a_profile_dtmf_mode_must_be_known() -> None:
    check_profiles([("old", DeviceProfile(name="old", dtmf="info"), "acme")], BUILTIN_POLICIES, [])
    with pytest.raises(PluginError, match=r"device profile 'bad' \(plugin 'acme'\): dtmf"):
        bad = DeviceProfile(name="bad", dtmf="inband")  # type: ignore[arg-type]
        check_profiles([("bad", bad, "acme")], BUILTIN_POLICIES, [])


def test_a_profile_the_hook_makes_is_checked_as_registered_ones_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A profile made on the spot with codecs=() would refuse every offer; one naming a policy
    # nobody registered would refuse media: each is logged naming the plugin and taken as no
    # profile (the User-Agent match then), as a registered one would have stopped start-up.
    import pluggy

    from gateway.core.plugins import new_plugin_manager

    hookimpl = pluggy.HookimplMarker("voipgw")
    answers: list[DeviceProfile] = [
        DeviceProfile(name="spot", codecs=()),
        DeviceProfile(name="spot", media_policy="nope"),
        DeviceProfile(name="spot", codecs=("PCMU",), media_policy="sdes"),
    ]

    class Spot:
        @hookimpl
        def gateway_identify_device(self, request: Request) -> DeviceProfile:
            return answers.pop(0)

    pm = new_plugin_manager()
    pm.register(Spot(), name="acme-spot")
    clock = Clock()
    devices = DeviceIdentifier(
        [(YEALINK.name, YEALINK)],
        pm.hook.gateway_identify_device,
        clock=clock,
        policies=BUILTIN_POLICIES,
    )
    with caplog.at_level(logging.ERROR, logger="gateway.core.devices"):
        assert devices.of_request(invite("Yealink"), FLOW) is YEALINK
        clock.now = 61.0
        assert devices.of_request(invite("Yealink"), FLOW) is YEALINK
        good = devices.of_request(invite("Yealink"), FLOW)
    assert good is not None and good.name == "spot"
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith(
        "plugin 'acme-spot': gateway_identify_device returned device profile 'spot': codecs: ()"
    )
    assert "media_policy 'nope' is not registered" in messages[1]
    assert messages[1].startswith("plugin 'acme-spot': ")


def test_a_hook_wrapper_still_wraps_the_identify_hook(caplog: pytest.LogCaptureFixture) -> None:
    # Before plugins-left the hook was called through pluggy, so a plugin's wrapper (new or
    # old style) saw each call and could replace the answer; calling the implementations one
    # by one must not drop it silently. The answer is still checked as a registered profile.
    import pluggy

    from gateway.core.plugins import new_plugin_manager

    hookimpl = pluggy.HookimplMarker("voipgw")
    seen: list[str] = []
    answers = [
        DeviceProfile(name="spot", codecs=("PCMU",)),
        DeviceProfile(name="spot", codecs=()),
    ]

    class Vendor:
        @hookimpl
        def gateway_identify_device(self, request: Request) -> DeviceProfile | None:
            return None

    class Overrides:
        @hookimpl(wrapper=True)
        def gateway_identify_device(self, request: Request) -> Any:
            answer = yield
            seen.append(request.headers.get("User-Agent") or "")
            return answers.pop(0) if answer is None else answer

    class Watches:
        @hookimpl(hookwrapper=True)
        def gateway_identify_device(self, request: Request) -> Any:
            yield
            seen.append("old-style")

    pm = new_plugin_manager()
    pm.register(Vendor(), name="vendor")
    pm.register(Overrides(), name="overrides")
    pm.register(Watches(), name="watches")
    devices = DeviceIdentifier(
        [(YEALINK.name, YEALINK)],
        pm.hook.gateway_identify_device,
        clock=Clock(),
        policies=BUILTIN_POLICIES,
    )
    with caplog.at_level(logging.ERROR, logger="gateway.core.devices"):
        first = devices.of_request(invite("Yealink"), FLOW)
        assert first is not None and first.name == "spot"
        # A wrapper's answer that breaks a rule is taken as no profile, as any other.
        assert devices.of_request(invite("Yealink"), FLOW) is YEALINK
    assert seen == ["Yealink", "old-style", "Yealink", "old-style"]
    (record,) = caplog.records
    assert "gateway_identify_device returned device profile 'spot': codecs: ()" in (
        record.getMessage()
    )


def test_with_a_hook_wrapper_a_failing_implementation_is_still_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import pluggy

    from gateway.core.plugins import new_plugin_manager

    hookimpl = pluggy.HookimplMarker("voipgw")

    class Broken:
        @hookimpl
        def gateway_identify_device(self, request: Request) -> DeviceProfile | None:
            raise KeyError("secret-ish")

    class Wraps:
        @hookimpl(wrapper=True)
        def gateway_identify_device(self, request: Request) -> Any:
            return (yield)

    pm = new_plugin_manager()
    pm.register(Broken(), name="broken")
    pm.register(Wraps(), name="wraps")
    devices = DeviceIdentifier(
        [(YEALINK.name, YEALINK)], pm.hook.gateway_identify_device, clock=Clock()
    )
    with caplog.at_level(logging.ERROR, logger="gateway.core.devices"):
        assert devices.of_request(invite("Yealink"), FLOW) is YEALINK
    (record,) = caplog.records
    assert record.getMessage().startswith("plugin 'broken': gateway_identify_device failed")
