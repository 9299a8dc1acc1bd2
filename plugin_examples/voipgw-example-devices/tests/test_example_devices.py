from __future__ import annotations

import voipgw_example_devices as plugin

from gateway.core.config import ConfigError, from_mapping
from gateway.core.interfaces import DeviceProfile, InboundMessage
from gateway.core.plugins import load_plugins
from gateway.core.sip.message import Headers, Request
from gateway.core.sip.uri import SipUri


def _load(table: dict[str, object]):  # type: ignore[no-untyped-def]
    config = from_mapping({"plugins": {"enable": ["example-devices"], "example-devices": table}})
    # Registered as an object rather than through its entry point, so the test needs no install.
    return load_plugins(config, extra=[("example-devices", plugin)], installed={})


def test_registers_a_profile_per_configured_model() -> None:
    plugins = _load({"models": ["Acme-T1", "Acme-X9"], "media_policy": "sdes"})
    assert sorted(plugins.device_profiles.names()) == ["acme-t1", "acme-x9"]
    profile = plugins.device_profiles.get("acme-x9")
    assert profile is not None
    assert profile.media_policy == "sdes"
    assert profile.key_exchanges == ("sdes", "dtls")  # the default: no ZRTP for Acme phones
    assert profile.matches("Acme-X9 firmware 1.2")
    assert not profile.matches("Linphone/5.0")


def test_identifies_acme_user_agents_only() -> None:
    plugins = _load({})
    acme = Request("OPTIONS", SipUri("sip", "127.0.0.1"), Headers.of([("User-Agent", "Acme-T1")]))
    other = Request("OPTIONS", SipUri("sip", "127.0.0.1"), Headers.of([("User-Agent", "baresip")]))
    found = plugins.hook.gateway_identify_device(request=acme, flow=None)
    assert found is not None and found.name == "acme-generic"
    assert plugins.hook.gateway_identify_device(request=other, flow=None) is None


def test_bad_config_names_table_and_key() -> None:
    try:
        _load({"models": "Acme-T1"})
    except ConfigError as exc:
        assert exc.table == "plugins.example-devices"
        assert exc.key == "models"
        assert "list of strings" in str(exc)
    else:
        raise AssertionError("a string where a list belongs must be refused")


def test_the_profiles_carry_the_codecs_the_model_decodes() -> None:
    plugins = _load({"codecs": ["PCMU", "PCMA", "telephone-event"]})
    profile = plugins.device_profiles.get("acme-t1")
    assert profile is not None and profile.codecs == ("PCMU", "PCMA", "telephone-event")
    unlimited = _load({}).device_profiles.get("acme-t1")
    assert unlimited is not None and unlimited.codecs is None


RPID = '"Reception" <sip:200@pbx.example>;party=calling;screen=yes;privacy=off'


def _from_phone(device: str | None) -> InboundMessage:
    invite = Request(
        "INVITE",
        SipUri("sip", "192.0.2.9", user="100"),
        Headers.of([("User-Agent", "Acme-T1 2.0"), ("Remote-Party-ID", RPID)]),
    )
    profile = DeviceProfile(name=device) if device is not None else None
    return InboundMessage(message=invite, flow=None, device=profile)  # type: ignore[arg-type]


def test_an_acme_phones_remote_party_id_becomes_p_asserted_identity() -> None:
    plugins = _load({})
    inbound = _from_phone("acme-t1")
    plugins.hook.gateway_inbound_message(inbound=inbound)
    headers = inbound.message.headers
    assert headers.get("P-Asserted-Identity") == '"Reception" <sip:200@pbx.example>'
    assert headers.get("Remote-Party-ID") is None


def test_other_devices_messages_are_left_alone() -> None:
    plugins = _load({})
    for device in ("yealink-t4", None):
        inbound = _from_phone(device)
        before = inbound.message
        plugins.hook.gateway_inbound_message(inbound=inbound)
        assert inbound.message is before
