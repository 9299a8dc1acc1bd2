from __future__ import annotations

import voipgw_example_devices as plugin

from gateway.core.config import ConfigError, from_mapping
from gateway.core.interfaces import DeviceProfile, LegInfo, OutboundMessage
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


OFFER = (
    b"v=0\r\no=voipgw 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 30000 RTP/AVP 9 0 8 18 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:18 G729/8000\r\n"
    b"a=fmtp:18 annexb=no\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
)


def _invite_to(device: str) -> OutboundMessage:
    invite = Request("INVITE", SipUri("sip", "192.0.2.9", user="alice"), Headers.of([]))
    invite = invite.with_body(OFFER, "application/sdp")
    leg = LegInfo(
        call_id="c1",
        side="b",
        kind="account",
        name="alice",
        secure_signalling=True,
        device=DeviceProfile(name=device),
    )
    return OutboundMessage(message=invite, flow=None, leg=leg)


def test_only_the_codecs_the_model_takes_are_offered_to_it() -> None:
    plugins = _load({"codecs": ["PCMU", "PCMA", "telephone-event"]})
    outbound = _invite_to("acme-t1")
    plugins.hook.gateway_outbound_message(outbound=outbound)
    body = outbound.message.body.decode()
    assert "m=audio 30000 RTP/AVP 0 8 101\r\n" in body
    assert "G722" not in body and "G729" not in body and "annexb" not in body
    assert "a=rtpmap:101 telephone-event/8000" in body and "a=fmtp:101 0-16" in body

    other = _invite_to("yealink-t4")  # another plugin's phone: left alone
    plugins.hook.gateway_outbound_message(outbound=other)
    assert other.message.body == OFFER


def test_without_codecs_the_sdp_is_left_alone() -> None:
    plugins = _load({})
    outbound = _invite_to("acme-t1")
    plugins.hook.gateway_outbound_message(outbound=outbound)
    assert outbound.message.body == OFFER
