"""``voipgw run`` and ``check-config`` warn of a gateway no phone or trunk can reach
(config.listener_warnings), in words that fit a third-party transport plugin too."""

from __future__ import annotations

from gateway.core.config import GatewayConfig, PluginsSection, listener_warnings


def enabling(*names: str) -> GatewayConfig:
    return GatewayConfig(plugins=PluginsSection(enable=names))


def test_a_third_party_transport_without_a_listener_is_told_to_name_one() -> None:
    # It has no default listener (DEFAULT_LISTEN lists the built-in ones): keeping the
    # built-in transports, the advice for a newcomer who enabled "metrics" alone, is not it.
    (warning,) = listener_warnings(enabling("sctp", "metrics"), ["sctp"])
    assert "names no SIP transport" not in warning
    assert warning == (
        "no SIP listener: transport sctp (a plugin's) has no default listener and [sip] listen "
        "names none, so no phone or trunk can reach the gateway: name one, e.g. [sip] listen = "
        '["sctp:127.0.0.1:PORT"]'
    )


def test_enabling_a_plugin_alone_is_told_to_keep_the_transports() -> None:
    (warning,) = listener_warnings(enabling("metrics"), [])
    assert warning.startswith("no SIP listener: [plugins] enable names no SIP transport")


def test_a_built_in_transport_listens_by_default() -> None:
    assert listener_warnings(enabling("udp", "sctp"), ["udp", "sctp"]) == []
