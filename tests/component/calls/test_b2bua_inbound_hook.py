"""``gateway_inbound_message`` through the B2BUA (gateway/core/inbound.py): a device plugin
fixes up what a quirky peer sends before the core acts on it.

- a carrier's ``Remote-Party-ID`` becomes ``P-Asserted-Identity`` before the call is routed
  (the routing hook sees the fixed INVITE); the INVITE comes with no leg (the call does not
  exist yet) and the carrier's profile by its User-Agent;
- the carrier's ``Reason`` without a protocol becomes a Q.850 one, and the phone's BYE carries
  the fixed one; the responses from the phone come with its leg (B, its account, its
  profile), the carrier's BYE with the carrier's (A, the trunk);
- a plugin that changes what it may not (a BYE's Call-ID) and one that raises on every
  message are logged by name, their changes dropped, and the call goes on as without them;
- with no implementation the endpoint has no hooks to ask (nothing per message);
- the changes dropped are counted in ``voipgw_sip_inbound_hook_refused_total``, 0 and
  exported all the same while no plugin implements the hook.

Signalling on the in-memory network, media on real 127.0.0.1 ports in virtual time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import (
    Caller,
    DeviceProfile,
    Directory,
    InboundMessage,
    LegInfo,
    RouteDecision,
)
from gateway.core.logs import WITHHELD
from gateway.core.plugins import Registry
from gateway.core.sip.message import Request, Response
from gateway.core.status import CallStatistics, StatusView
from gateway.plugins.metrics.collect import render
from tests.component.calls.b2bua_env import ALICE_DID, answered_call, eventually, start_b2bua

CARRIER = DeviceProfile(name="carrier-sbc", user_agent_prefixes=("voipgw-test-agent/+",))
PHONE = DeviceProfile(name="acme-t1", user_agent_prefixes=("voipgw-test-agent/alice",))
RPID = '"Alice Caller" <sip:+15550100@127.0.0.2>;party=calling;screen=yes;privacy=off'
Q850 = 'Q.850;cause=16;text="Normal call clearing"'


def described(message: object) -> str:
    if isinstance(message, Request):
        return message.method
    assert isinstance(message, Response)
    return f"{message.status} {message.cseq.method}"


class CarrierQuirks:
    """What a plugin for a carrier and a phone model would do."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, LegInfo | None, DeviceProfile | None]] = []
        self.routed: list[Request] = []

    @hookimpl
    def gateway_register_device_profiles(self, registry: Registry[Any], config: Any) -> None:
        registry.add(CARRIER.name, CARRIER)
        registry.add(PHONE.name, PHONE)

    @hookimpl
    def gateway_inbound_message(self, inbound: InboundMessage) -> None:
        message = inbound.message
        self.seen.append((described(message), inbound.leg, inbound.device))
        if not isinstance(message, Request):
            return
        headers = message.headers
        rpid = headers.get("Remote-Party-ID")
        if rpid is not None and headers.get("P-Asserted-Identity") is None:
            # RFC 3325 §9.1 instead of the draft's header: the name-addr, without its params.
            identity = rpid.split(";", 1)[0]
            headers = headers.remove("Remote-Party-ID").add("P-Asserted-Identity", identity)
        reason = headers.get("Reason")
        if reason is not None and reason.startswith("cause="):
            # RFC 3326 §2: protocol first; this carrier leaves it out.
            headers = headers.set("Reason", Q850)
        if headers is not message.headers:
            inbound.message = message.with_headers(headers)

    @hookimpl
    def gateway_route_call(
        self, request: Request, caller: Caller, directory: Directory
    ) -> RouteDecision | None:
        self.routed.append(request)
        return None


def refused_metric(env: Any) -> int:
    """``voipgw_sip_inbound_hook_refused_total`` as the metrics plugin writes it."""
    text = render(StatusView(env.gateway, CallStatistics())).decode()
    (line,) = [
        line for line in text.splitlines() if line.startswith("voipgw_sip_inbound_hook_refused")
    ]
    name, value = line.split()
    assert name == "voipgw_sip_inbound_hook_refused_total"
    return int(float(value))


class Breaking:
    """Changes a BYE's Call-ID (a transaction and dialog field) and tags everything else."""

    @hookimpl
    def gateway_inbound_message(self, inbound: InboundMessage) -> None:
        message = inbound.message
        assert isinstance(message, Request | Response)
        if isinstance(message, Request) and message.method == "BYE":
            inbound.message = message.with_headers(message.headers.set("Call-ID", "x@y"))


class Raising:
    @hookimpl
    def gateway_inbound_message(self, inbound: InboundMessage) -> None:
        raise KeyError("psk-0123456789")


async def test_a_plugin_fixes_a_carriers_identity_and_reason_before_the_core_acts(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    quirks = CarrierQuirks()
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, plugins=[("quirks", quirks)])
    call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=[("Remote-Party-ID", RPID)])
    assert (await call.final()).status == 200
    leg_b = await env.alice.next_call()
    await env.alice.next_request("ACK")
    (routed,) = quirks.routed
    assert routed.headers.get("P-Asserted-Identity") == '"Alice Caller" <sip:+15550100@127.0.0.2>'
    assert routed.headers.get("Remote-Party-ID") is None
    # The call did not exist yet: no leg; the carrier's profile by its User-Agent.
    invite = [(leg, device) for what, leg, device in quirks.seen if what == "INVITE"]
    assert invite == [(None, CARRIER)]
    answers = [(leg, device) for what, leg, device in quirks.seen if what == "200 INVITE"]
    assert answers, quirks.seen
    for leg, device in answers:
        assert leg is not None and (leg.side, leg.kind, leg.name) == ("b", "account", "alice")
        assert device == PHONE

    exchange = await call.request("BYE", extra=[("Reason", "cause=16")])
    assert (await exchange.final()).status == 200
    bye = await env.alice.next_request("BYE")
    assert bye.request.call_id == leg_b.call_id
    assert bye.request.headers.get_all("Reason") == (Q850,)
    (by_carrier,) = [leg for what, leg, _ in quirks.seen if what == "BYE"]
    assert by_carrier is not None and (by_carrier.side, by_carrier.kind) == ("a", "trunk")
    await eventually(lambda: env.calls == 0)


async def test_changes_a_plugin_may_not_make_and_raising_hooks_never_fail_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.core.inbound")
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, plugins=[("breaking", Breaking()), ("raising", Raising())]
    )
    call, leg_b = await answered_call(env)
    assert (await call.bye()).status == 200  # matched its dialog: its Call-ID unchanged
    bye = await env.alice.next_request("BYE")
    assert bye.request.call_id == leg_b.call_id
    await eventually(lambda: env.calls == 0)
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "plugin 'breaking': gateway_inbound_message changed Call-ID on BYE" in m for m in messages
    )
    # The first message it raised on was alice's REGISTER, at the start.
    assert any("plugin 'raising': gateway_inbound_message raised on " in m for m in messages)
    assert f"KeyError: {WITHHELD}" in caplog.text and "psk-0123456789" not in caplog.text
    # Once a minute per plugin: the raising one on every message, logged once.
    assert len([m for m in messages if "plugin 'raising'" in m]) == 1
    hooks = env.gateway.endpoint.inbound_hooks
    assert hooks is not None and hooks.refused > 3
    assert env.gateway.endpoint.statistics.internal_errors == 0
    assert refused_metric(env) == hooks.refused


async def test_without_an_implementation_there_is_nothing_to_ask(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    assert env.gateway.endpoint.inbound_hooks is None
    assert refused_metric(env) == 0  # exported all the same
    call, _ = await answered_call(env)
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
