"""Example voipgw plugin: device profiles for the fictional Acme phone range.

Shows the kinds of hook a device plugin usually needs: a config table, a registration hook
(profiles, with the codecs a model decodes), a decision hook, and an inbound fix-up for a
firmware quirk a profile cannot say (Acme phones send ``Remote-Party-ID`` where the core reads
``P-Asserted-Identity``). Everything here is synchronous and quick: hooks run on the gateway's
event loop.
"""

from __future__ import annotations

from typing import Literal

import attrs

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import CallEvent, DeviceProfile, InboundMessage
from gateway.core.plugins import Registry
from gateway.core.sip.message import Request
from gateway.core.transport.flows import Flow


@attrs.frozen
class ExampleDevicesConfig:
    """``[plugins.example-devices]``."""

    models: tuple[str, ...] = ("Acme-T1",)
    media_policy: str = "best-effort"
    # The key exchanges the Acme firmware handles; None: whatever the leg's policy allows.
    # Acme phones reject an offer that carries an a=zrtp-hash they do not know, hence the list.
    key_exchanges: tuple[str, ...] | None = ("sdes", "dtls")
    # How the firmware sends DTMF: "rfc4733" (telephone-event, as its SDP says) or "info" (SIP
    # INFO only: the gateway then offers telephone-event to the other leg on its behalf and
    # converts the digits both ways, docs/architecture.md "DTMF interworking").
    dtmf: Literal["rfc4733", "info"] = "rfc4733"
    # The audio codecs the firmware decodes, by rtpmap encoding name in its order of preference
    # (["PCMU", "PCMA", "telephone-event"] for a G.711-only model); None: any. The profile's
    # codecs: the gateway offers these phones nothing else and narrows their own offers to them.
    codecs: tuple[str, ...] | None = None


# Call events seen by this plugin, by kind (a real plugin would export metrics).
EVENTS_SEEN: dict[str, int] = {}

# The names of this plugin's profiles, for gateway_inbound_message.
ACME = "acme-"


@hookimpl
def gateway_plugin_config() -> type:
    return ExampleDevicesConfig


@hookimpl
def gateway_register_device_profiles(
    registry: Registry[DeviceProfile], config: ExampleDevicesConfig
) -> None:
    for model in config.models:
        registry.add(
            model.lower(),
            DeviceProfile(
                name=model.lower(),
                user_agent_prefixes=(model,),
                media_policy=config.media_policy,
                key_exchanges=config.key_exchanges,
                dtmf=config.dtmf,
                codecs=config.codecs,
                notes="example profile",
            ),
        )


@hookimpl
def gateway_identify_device(request: Request, flow: Flow) -> DeviceProfile | None:
    user_agent = request.headers.get("User-Agent") or ""
    if user_agent.startswith("Acme-"):
        return DeviceProfile(name="acme-generic", user_agent_prefixes=("Acme-",))
    return None


@hookimpl
def gateway_call_event(event: CallEvent) -> None:
    EVENTS_SEEN[event.kind] = EVENTS_SEEN.get(event.kind, 0) + 1


@hookimpl
def gateway_inbound_message(inbound: InboundMessage) -> None:
    """Acme firmware sends the caller's identity as ``Remote-Party-ID`` (an expired draft);
    the core, and the trunks our calls go on to, read ``P-Asserted-Identity`` (RFC 3325 §9.1).
    Runs for every message the gateway receives: return at once for what is not ours."""
    device, message = inbound.device, inbound.message
    if device is None or not device.name.startswith(ACME) or not isinstance(message, Request):
        return
    headers = message.headers
    rpid = headers.get("Remote-Party-ID")
    if rpid is None or headers.get("P-Asserted-Identity") is not None:
        return
    # The name-addr without the draft's parameters (party, screen, privacy).
    identity = rpid.split(">", 1)[0] + ">" if ">" in rpid else rpid.split(";", 1)[0]
    headers = headers.remove("Remote-Party-ID").add("P-Asserted-Identity", identity)
    inbound.message = message.with_headers(headers)
