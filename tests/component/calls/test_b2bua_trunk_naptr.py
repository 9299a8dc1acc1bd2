"""A trunk named by a bare domain (RFC 3263 §4.1: NAPTR chooses the transport), and host names
in a trunk dialog's Contact and Record-Route, through the B2BUA on the in-memory network.

- ``address = "sip.carrier.example"``: the NAPTR records offer TLS (preference 10) and UDP
  (20); the gateway has no TLS transport, so the call goes over UDP to the SRV target of the
  UDP record, with a Request-URI naming the domain and no transport; the carrier's calls are
  recognised by that target's address; OPTIONS probes go over the target's transport.
- A bare domain on a gateway with none of udp, tcp, tls listening is a config error.
- The carrier answers with a Contact and a Record-Route naming hosts (its SBC and its edge
  proxy), and later refreshes its Contact to another name: the gateway never looks them up.
  Its ACK, re-INVITE, UPDATE and BYE go to the address the INVITE went to (the trunk as
  outbound proxy, RFC 3261 §8.1.2), with the names in the Request-URI and Route as RFC 3261
  §12.2.1.1 builds them, and the call goes on and ends normally; likewise for the carrier's own
  call with a name in its Contact.
- A bare domain registers (``register``) at its NAPTR target, over that target's transport.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gateway.core.calls.trunk_dns import NaptrRecord, SrvRecord
from gateway.core.config import ConfigError, from_mapping
from gateway.core.gateway import Gateway
from gateway.testing.fake_dns import FakeResolver
from gateway.testing.memory_transport import memory_plugins
from gateway.testing.network import MemoryNetwork
from gateway.testing.sip_agent import AutoAnswer
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    GW,
    TRUNK,
    B2bua,
    eventually,
    sent,
    start_b2bua,
)
from tests.component.calls.trunk_registrar import PASSWORD, USERNAME, Registrar

NUMBER = "+15551234"
NAME = "sip.carrier.example"
ENDED = 40.0


def naptr_carrier() -> FakeResolver:
    return FakeResolver(
        naptr_records={
            NAME: [
                NaptrRecord(10, 20, "s", "SIP+D2U", "", f"_sip._udp.{NAME}"),
                NaptrRecord(10, 10, "s", "SIPS+D2T", "", f"_sips._tcp.{NAME}"),
            ]
        },
        srv_records={
            f"_sips._tcp.{NAME}": [SrvRecord(10, 0, 5061, "tls.carrier.example")],
            f"_sip._udp.{NAME}": [SrvRecord(10, 0, TRUNK[1], "udp.carrier.example")],
        },
        hosts={"tls.carrier.example": ["127.0.0.9"], "udp.carrier.example": [TRUNK[0]]},
    )


async def alice_calls(env: B2bua) -> object:
    call = await env.alice.invite(f"sip:{NUMBER}@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    return call


async def test_a_bare_domain_goes_over_the_naptr_transport_we_have(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    resolver = naptr_carrier()
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"address": NAME, "options_interval": 5.0},
        dns_resolver=resolver,
    )
    # Without a TLS transport the SIPS+D2T record is not followed at all (RFC 3263 §4.1).
    assert f"SRV _sip._udp.{NAME}" in resolver.asked
    assert not any("_sips" in query for query in resolver.asked)
    assert env.gateway.trunk_for_source(TRUNK[0]) == "carrier"
    env.trunk.auto = AutoAnswer(ring=True, status=200)
    call = await env.alice.invite(f"sip:{NUMBER}@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    assert (await call.final()).status == 200
    (invite,) = env.trunk.requests("INVITE")
    assert str(invite.uri) == f"sip:{NUMBER}@{NAME}"  # the domain, no transport, no port
    assert invite.top_via.transport == "UDP"
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    record = gateway_call.security_record()
    assert record["b"]["dns"] == {  # type: ignore[index]
        "name": NAME,
        "target": "udp:127.0.0.2:5060",
        "attempt": 1,
    }
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0, timeout=ENDED)
    # The probe goes to the target over its transport; its URI names the domain alone.
    await eventually(lambda: bool(env.trunk.requests("OPTIONS")), timeout=10)
    probe = env.trunk.requests("OPTIONS")[0]
    assert str(probe.uri) == f"sip:{NAME}" and probe.top_via.transport == "UDP"
    assert env.gateway.trunk_health.is_up("carrier")


async def test_a_bare_domain_needs_a_transport_with_a_listener(tmp_path: Path) -> None:
    config = from_mapping(
        {
            "gateway": {"state_dir": str(tmp_path / "state")},
            "sip": {"listen": ["ws:127.0.0.1:5062"]},
            "plugins": {"enable": []},
            "trunks": [{"name": "carrier", "address": NAME, "prefixes": ["+1"]}],
        },
        file="gw.toml",
    )
    plugins = memory_plugins(config, MemoryNetwork(1), ws_stand_in=True)
    with pytest.raises(ConfigError) as info:
        Gateway(config, plugins).check()
    assert (info.value.table, info.value.key) == ("trunks.carrier", "address")
    assert "none of them is enabled with a [sip] listen entry" in str(info.value)


async def test_names_in_the_trunks_contact_and_record_route_are_not_looked_up(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    resolver = FakeResolver()  # any look-up would be counted here
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"address": f"udp:{TRUNK[0]}:{TRUNK[1]}"},
        dns_resolver=resolver,
    )
    env.trunk.auto = None
    env.trunk.contact_address = ("sbc.carrier.example", 5060)  # a name in its Contact
    edge = "<sip:edge.carrier.example;lr>"
    call = await env.alice.invite(f"sip:{NUMBER}@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    callee = await env.trunk.next_call()
    await env.trunk.respond(
        callee.incoming,  # type: ignore[arg-type]
        200,
        body=env.trunk.answer_sdp(callee.invite.body),
        extra=[
            ("Record-Route", edge),
            ("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE"),
            ("Session-Expires", "90;refresher=uac"),
            ("Require", "timer"),
        ],
    )
    assert (await call.final()).status == 200
    env.trunk.auto = AutoAnswer()  # in-dialog re-INVITEs answered by the agent from now on

    def to_trunk(start: bytes) -> list[bytes]:
        return [d.data for d in sent(env.network.capture, GW, TRUNK, start)]

    # ACK: Request-URI the Contact's name, Route the edge (RFC 3261 §12.2.1.1), sent to the
    # address the INVITE went to.
    await eventually(lambda: bool(to_trunk(b"ACK ")), timeout=5)
    (ack,) = to_trunk(b"ACK ")
    assert ack.startswith(b"ACK sip:+15550100@sbc.carrier.example:5060 SIP/2.0")
    assert f"Route: {edge}".encode() in ack
    assert env.trunk.awaiting_ack == []  # the carrier has its ACK

    # alice's re-INVITE (hold) and UPDATE reach the carrier the same way.
    assert (await call.reinvite(env.alice.offer_sdp(direction="sendonly"))).status == 200
    (reinvite,) = to_trunk(b"INVITE sip:+15550100@sbc.carrier.example:5060 ")
    assert f"Route: {edge}".encode() in reinvite
    # Our session refresh of the trunk's leg (RFC 4028: it chose us as refresher, and it
    # allows UPDATE): an UPDATE at half the interval, the same way.
    await trio.sleep(50)
    (update,) = to_trunk(b"UPDATE ")
    assert update.startswith(b"UPDATE sip:+15550100@sbc.carrier.example:5060 SIP/2.0")
    assert f"Route: {edge}".encode() in update

    # The carrier moves its Contact to another name (a target refresh, §12.2.2).
    env.trunk.contact_address = ("sbc2.carrier.example", 5080)
    assert (await callee.reinvite(env.trunk.offer_sdp())).status == 200

    assert (await call.bye()).status == 200
    await eventually(lambda: len(env.trunk.requests("BYE")) == 1, timeout=5)
    byes = to_trunk(b"BYE ")
    assert len(byes) == 1 and byes[0].startswith(b"BYE sip:+15550100@sbc2.carrier.example:5080 ")
    assert f"Route: {edge}".encode() in byes[0]
    await eventually(lambda: env.calls == 0, timeout=ENDED)
    assert resolver.queries == 0
    # Nothing went anywhere but the trunk's address and alice's.
    assert {d.dst for d in env.network.capture if d.src == GW} <= {TRUNK, env.alice.address}


async def test_a_name_in_the_contact_of_the_carriers_own_call_is_not_looked_up(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    resolver = FakeResolver()
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, dns_resolver=resolver)
    env.trunk.contact_address = ("sbc.carrier.example", 5060)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200
    # alice hangs up: our BYE to the carrier names its SBC and goes where its INVITE came from.
    (answered,) = [c for c in env.alice.calls if c.dialog is not None]
    assert (await answered.bye()).status == 200
    await eventually(lambda: bool(env.trunk.requests("BYE")), timeout=5)
    (bye,) = env.trunk.requests("BYE")
    assert str(bye.uri) == "sip:+15550100@sbc.carrier.example:5060"
    await eventually(lambda: env.calls == 0, timeout=ENDED)
    assert resolver.queries == 0


async def test_a_bare_domain_registers_over_the_naptr_targets_transport(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    registering = {
        "address": NAME,
        "register": True,
        "username": USERNAME,
        "password": PASSWORD,
        "register_expires": 120,
    }
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, carrier=registering, dns_resolver=naptr_carrier()
    )
    registrar = Registrar(env.trunk)
    registration = env.gateway.trunk_registrations["carrier"]
    await eventually(lambda: registration.registered, timeout=120)  # (a retry after a 501)
    (accepted,) = registrar.accepted
    # The registrar's domain, no transport parameter; our Contact on the UDP target's transport.
    assert str(accepted.uri) == f"sip:{NAME}"
    assert accepted.top_via.transport == "UDP"
    (contact,) = accepted.contacts
    assert str(contact.uri) == f"sip:{USERNAME}@127.0.0.1:5060"
