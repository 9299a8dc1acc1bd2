"""Every hook a voipgw plugin can implement. docs/plugin_hooks.md documents each one and a test
fails when a hook or one of its arguments is missing there.

Rules (ARCHITECTURE.md): hooks are synchronous — pluggy cannot await — and hand objects over:
``gateway_register_*`` hooks receive a registry to add factories and engines to, whose async parts
the core runs; decision hooks are ``firstresult`` (the first non-None answer wins, plugins in
reverse registration order, so a later-enabled plugin overrides an earlier one); observer hooks
return nothing and must not block.

A plugin is a module or object with functions marked ``@hookimpl``; it is enabled by naming its
entry point (group ``voipgw.plugins``) in ``[plugins] enable``. Arguments a hookimpl does not list
are not passed, so an implementation takes only what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from gateway.core.interfaces import (
        Caller,
        CallEvent,
        DeviceProfile,
        Directory,
        InboundMessage,
        LegInfo,
        MediaPolicy,
        OutboundMessage,
        RouteDecision,
    )
    from gateway.core.plugins import Registry
    from gateway.core.sip.message import Request
    from gateway.core.transport.flows import Flow

PROJECT = "voipgw"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def gateway_plugin_config() -> type | None:
    """Declare the plugin's configuration table ``[plugins.NAME]``.

    Return an ``@attrs.frozen`` class whose fields are the table's keys (types str, int, float,
    bool, Literal[...], tuple[...] for lists, with defaults for optional keys). The core structures
    the table into it before any ``gateway_register_*`` hook runs and passes the result to this
    plugin's hooks as ``config``. Errors name the file, the table and the key. Return None (or do
    not implement the hook) for a plugin without settings.
    """


@hookspec
def gateway_configure(config: Any) -> None:
    """Receive this plugin's structured ``[plugins.NAME]`` table (the instance of the class
    ``gateway_plugin_config`` returned, or None) once at start-up, after every table is
    structured and before any ``gateway_register_*`` hook: where a plugin keeps the settings its
    decision and adjusting hooks need, as those get no ``config`` (docs/plugin_hooks.md,
    "Settings in decision hooks"). Raise ``PluginError`` or ``ConfigError`` with a message for
    the operator to refuse a setting; it stops start-up as a registration hook's would."""


@hookspec
def gateway_register_transports(registry: Registry[Any], config: Any) -> None:
    """Add signalling transports (objects satisfying ``interfaces.Transport``) with
    ``registry.add(transport.name, transport)``. ``config`` is this plugin's own structured
    ``[plugins.NAME]`` table, or None."""


@hookspec
def gateway_register_key_exchanges(registry: Registry[Any], config: Any) -> None:
    """Add media key exchanges (``interfaces.KeyExchange``: sdes, dtls, zrtp, mikey) under
    their name."""


@hookspec
def gateway_register_media_policies(registry: Registry[Any], config: Any) -> None:
    """Add named media-security policies (``interfaces.MediaPolicy``) that accounts, trunks and
    device profiles can refer to by name."""


@hookspec
def gateway_register_media_taps(registry: Registry[Any], config: Any) -> None:
    """Add media taps (``interfaces.MediaTap``: recording, SIPREC, lawful intercept)."""


@hookspec
def gateway_register_sip_captures(registry: Registry[Any], config: Any) -> None:
    """Add SIP capture agents (``interfaces.SipCapture``: HEP to Homer) that get a copy of every
    SIP message the gateway sends or receives."""


@hookspec
def gateway_register_device_profiles(registry: Registry[Any], config: Any) -> None:
    """Add phone-model profiles (``interfaces.DeviceProfile``) under their name."""


@hookspec
def gateway_register_interworking(registry: Registry[Any], config: Any) -> None:
    """Add PSTN interworking functions (``interfaces.Interworking``) under their name."""


@hookspec
def gateway_register_services(registry: Registry[Any], config: Any) -> None:
    """Add monitoring services (``interfaces.Service``: a Prometheus exporter, an SNMP agent).
    The core runs each one's ``run(status, *, task_status)`` from start-up to the stop, handing
    it ``status``, the read-only ``interfaces.GatewayStatus`` view of the gateway."""


@hookspec
def gateway_register_caller_identity(registry: Registry[Any], config: Any) -> None:
    """Add caller-identity services (``interfaces.CallerIdentity``: STIR/SHAKEN) that sign our
    INVITEs to trunks and check the INVITEs trunks send us. Nothing is asked per call while
    none is registered."""


@hookspec(firstresult=True)
def gateway_identify_device(request: Request, flow: Flow) -> DeviceProfile | None:
    """Say which phone model sent ``request`` over ``flow``, or None to let the next plugin (and
    finally the core's User-Agent match against registered profiles) decide."""


@hookspec(firstresult=True)
def gateway_route_call(
    request: Request, caller: Caller, directory: Directory
) -> RouteDecision | None:
    """Decide where a new call goes: ``RouteDecision(targets=...)`` to ring targets in parallel,
    ``RouteDecision.reject(status, reason)`` to refuse it, or None to defer to the next plugin and
    finally the core's routing (user by registration, trunk by number prefix). An out-of-dialog
    MESSAGE (``request.method``) is routed through this hook too, exactly as a call."""


@hookspec(firstresult=True)
def gateway_media_security_policy(leg: LegInfo) -> MediaPolicy | str | None:
    """Choose the media-security policy for one call leg: a ``MediaPolicy``, the name of a
    registered one, or None to use the leg's configured policy."""


@hookspec
def gateway_outbound_message(outbound: OutboundMessage) -> None:
    """Adjust a SIP message just before it is sent (device quirks, header hygiene) by replacing
    ``outbound.message``. Runs for every message: keep it cheap."""


@hookspec
def gateway_inbound_message(inbound: InboundMessage) -> None:
    """Fix up a SIP message just received (device and carrier quirks) by replacing
    ``inbound.message``, before the core acts on it. Only well-formed messages are handed over;
    Via, Call-ID, CSeq, the From and To tags, a request's method and Request-URI and a
    response's status class must stay as they are (RFC 3261 §17 and §12 match transactions and
    dialogs by them), a request's Max-Forwards may only go down (§16.3: loops), and the
    replacement must parse. A change that breaks a rule, or a hook
    that raises, is logged naming the plugin and dropped: the message goes on as it was. Runs
    for every message while any plugin implements it: keep it cheap."""


@hookspec
def gateway_call_event(event: CallEvent) -> None:
    """Observe a call event (started, ringing, answered, transferred, ended ...). Must not block;
    an exception in an observer is logged and never affects the call."""
