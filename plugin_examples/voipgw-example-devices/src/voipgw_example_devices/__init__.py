"""Example voipgw plugin: device profiles for the fictional Acme phone range.

Shows the kinds of hook a device plugin usually needs: a config table, a registration hook, a
decision hook, and an adjusting hook for what a profile cannot say (the codecs a model takes).
Everything here is synchronous and quick: hooks run on the gateway's event loop.
"""

from __future__ import annotations

from typing import Literal

import attrs

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import CallEvent, DeviceProfile, OutboundMessage
from gateway.core.plugins import Registry
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import MediaDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from gateway.core.sip.message import Request, Response
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
    # The audio codecs the firmware takes, by rtpmap encoding name (["PCMU", "PCMA",
    # "telephone-event"] for a G.711-only model); None: any. A profile has no codec list, so the
    # gateway_outbound_message hook below removes the others from the SDP sent to these phones.
    codecs: tuple[str, ...] | None = None


# Call events seen by this plugin, by kind (a real plugin would export metrics).
EVENTS_SEEN: dict[str, int] = {}

# What gateway_outbound_message needs of the configuration: adjusting and decision hooks get no
# ``config``, so the registration hook keeps it here (profile name -> codecs it takes).
CODECS: dict[str, frozenset[str]] = {}


@hookimpl
def gateway_plugin_config() -> type:
    return ExampleDevicesConfig


@hookimpl
def gateway_register_device_profiles(
    registry: Registry[DeviceProfile], config: ExampleDevicesConfig
) -> None:
    CODECS.clear()
    for model in config.models:
        if config.codecs is not None:
            CODECS[model.lower()] = frozenset(codec.upper() for codec in config.codecs)
        registry.add(
            model.lower(),
            DeviceProfile(
                name=model.lower(),
                user_agent_prefixes=(model,),
                media_policy=config.media_policy,
                key_exchanges=config.key_exchanges,
                dtmf=config.dtmf,
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
def gateway_outbound_message(outbound: OutboundMessage) -> None:
    """Keep only the codecs the model takes in the SDP the gateway sends to one of its phones
    (our offer in the INVITE to it; our answers hold only what its own offer had)."""
    leg, message = outbound.leg, outbound.message
    if not CODECS or leg is None or leg.device is None:
        return  # cheap: this runs for every message the gateway sends
    codecs = CODECS.get(leg.device.name)
    if codecs is None or not isinstance(message, Request | Response) or not message.body:
        return
    if (message.content_type or "").lower() != "application/sdp":
        return
    try:
        sdp = parse_sdp_untrusted(message.body)
        media = tuple(_only(section, codecs) for section in sdp.media)
    except SdpError:
        return
    outbound.message = message.with_body(serialize_sdp(attrs.evolve(sdp, media=media)))


def _only(section: MediaDescription, codecs: frozenset[str]) -> MediaDescription:
    """An audio section with only ``codecs`` among its formats, and their rtpmap and fmtp."""
    if section.media != "audio" or section.is_rejected or not section.is_rtp:
        return section
    kept = [
        str(pt)
        for pt in section.payload_types
        if (rtpmap := section.rtpmap(pt)) is not None and rtpmap.encoding.upper() in codecs
    ]
    if not kept:
        return section  # none left: the phone refuses the call (488), as it would have
    attributes = section.attributes.remove_if(
        lambda a: a.name in ("rtpmap", "fmtp") and (a.value or "").split(" ", 1)[0] not in kept
    )
    return section.with_formats(kept).with_attributes(attributes)
