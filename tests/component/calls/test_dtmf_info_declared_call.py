"""A peer declared to do DTMF by SIP INFO (docs/architecture.md "DTMF interworking"):

- the carrier trunk with ``dtmf = "info"`` (an old PBX behind it) offers without
  telephone-event; alice's phone is offered telephone-event 101 with ``a=fmtp:101 0-16`` and
  answers with it; our answer to the trunk has none. The trunk's INFO digits become RFC 4733
  events at alice's RTP socket (answered 200, not relayed), and alice's events become INFO to
  the trunk (never the event packets);
- alice's phone, whose model a device profile declares ``dtmf = "info"``, calls out: the
  carrier is offered telephone-event, answers with it, and alice's INFO reaches it as events;
- the same trunk without the declaration: nothing added, the INFO relayed as ever.

In-memory signalling, virtual time; RTP on real 127.0.0.1 sockets through the relay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

import gateway.plugins.keyexchange.zrtp as zrtp_plugin
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import DeviceProfile
from gateway.core.media.dtmf import event_payload, parse_event_untrusted
from gateway.core.media.session import DtmfPlan
from gateway.core.plugins import Registry
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import AutoAnswer, Call, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, start_b2bua
from tests.component.calls.dtls_phone import bind
from tests.component.calls.dtmf_calls import (
    audio,
    b2bua_call,
    fields,
    rtp,
    telephone_events,
)
from tests.port_blocks import port_bases

TRUNK_PORT, ALICE_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)
TRUNK_SSRC, ALICE_SSRC = 0x7778, 0xA11CF

# alice's SipAgent sends "User-Agent: voipgw-test-agent/alice" (gateway/testing/sip_agent.py).
OLD_PHONE = DeviceProfile(
    name="old-phone", user_agent_prefixes=("voipgw-test-agent/alice",), dtmf="info"
)


class DevicePlugin:
    @hookimpl
    def gateway_register_device_profiles(self, registry: Registry[Any], config: Any) -> None:
        registry.add(OLD_PHONE.name, OLD_PHONE)


def fmtps(body: bytes) -> list[str]:
    return list(parse_sdp_untrusted(body).media[0].attributes.values("fmtp"))


async def info_trunk_calls_alice(env: B2bua) -> tuple[Call, Call, bytes]:
    """The trunk offers PCMU only; alice answers PCMU and telephone-event 101."""
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", TRUNK_PORT, formats=("0",))
    )
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    await env.alice.respond(
        leg_b.incoming, 200, body=simple_sdp("127.0.0.1", ALICE_PORT, formats=("0", "101"))
    )
    final = await incoming.final()
    assert final.status == 200, final.reason
    await env.alice.next_request("ACK")
    return incoming, leg_b, final.body


async def test_an_info_trunk_and_a_phone_with_telephone_event_exchange_digits(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        alice_auto=AutoAnswer(ring=False, status=None),
        carrier={"dtmf": "info"},
    )
    incoming, leg_b, answer = await info_trunk_calls_alice(env)
    # Alice was offered telephone-event; the trunk's answer has none (it never offered it).
    assert telephone_events(leg_b.invite.body) == ["101 telephone-event/8000"]
    assert fmtps(leg_b.invite.body) == ["101 0-16"]
    assert parse_sdp_untrusted(leg_b.invite.body).media[0].formats == ("0", "101")
    assert telephone_events(answer) == []
    assert parse_sdp_untrusted(answer).media[0].formats == ("0",)
    call = b2bua_call(env)
    assert call.media.dtmf == DtmfPlan(0, "b", "a", 101, 8000)

    to_trunk = parse_sdp_untrusted(answer).media[0].port
    to_alice = parse_sdp_untrusted(leg_b.invite.body).media[0].port
    trunk_sock, alice_sock = await bind(TRUNK_PORT), await bind(ALICE_PORT)
    with trunk_sock, alice_sock:
        trunk_to, alice_to = ("127.0.0.1", to_trunk), ("127.0.0.1", to_alice)
        with trio.fail_after(2):
            await trunk_sock.sendto(audio(1, TRUNK_SSRC), trunk_to)
            assert await alice_sock.recv(2048) == audio(1, TRUNK_SSRC)
            await alice_sock.sendto(audio(1, ALICE_SSRC), alice_to)
            assert await trunk_sock.recv(2048) == audio(1, ALICE_SSRC)

        # INFO -> RFC 4733: the PBX behind the trunk sends 9 (100 ms); alice hears events.
        exchange = await incoming.request(
            "INFO", body=b"Signal=9\r\nDuration=100\r\n", content_type="application/dtmf-relay"
        )
        assert (await exchange.final()).status == 200
        received = []
        with trio.fail_after(2):
            for _ in range(4):  # a start, then three ends
                received.append(await alice_sock.recv(2048))
        heads = [fields(p) for p in received]
        events = [parse_event_untrusted(p[12:]) for p in received]
        assert [h[0] for h in heads] == [True, False, False, False]
        assert {h[1] for h in heads} == {101}  # alice's number for telephone-event
        assert [h[2] for h in heads] == [2, 3, 4, 5]  # on from the trunk's audio
        assert {h[4] for h in heads} == {TRUNK_SSRC}
        assert [e.event for e in events] == [9] * 4
        assert [e.end for e in events] == [False, True, True, True]
        assert env.alice.requests("INFO") == []  # answered by the gateway, not relayed

        # RFC 4733 -> INFO: alice presses # (200 ms); the trunk gets one INFO, no events.
        ts = 320
        packets = [
            rtp(
                2,
                101,
                ALICE_SSRC,
                event_payload(11, end=False, duration=0),
                marker=True,
                timestamp=ts,
            ),
            rtp(3, 101, ALICE_SSRC, event_payload(11, end=False, duration=800), timestamp=ts),
            *(
                rtp(
                    4 + n, 101, ALICE_SSRC, event_payload(11, end=True, duration=1600), timestamp=ts
                )
                for n in range(3)
            ),
        ]
        with trio.fail_after(2):
            for packet in packets:
                await alice_sock.sendto(packet, alice_to)
            await alice_sock.sendto(audio(7, ALICE_SSRC), alice_to)
            assert fields(await trunk_sock.recv(2048))[1:3] == (0, 2)  # audio, next in sequence
        info = await env.trunk.next_request("INFO")
        assert info.request.content_type == "application/dtmf-relay"
        assert info.request.body == b"Signal=#\r\nDuration=200\r\n"
        assert env.trunk.requests("INFO") == [info.request]
    record = call.security_record()["dtmf"]
    assert record["rfc4733_leg"] == "b" and record["info_leg"] == "a"
    assert record["digits_to_info"] == 1 and record["digits_to_rfc4733"] == 1


async def test_a_phone_model_declared_info_gets_telephone_event_offered_to_the_carrier(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        plugins=[("zrtp", zrtp_plugin), ("devices", DevicePlugin())],
        alice_auto=None,
    )
    call = await env.alice.invite(
        "sip:+15551234@127.0.0.1:5060", sdp=simple_sdp("127.0.0.1", ALICE_PORT, formats=("0",))
    )
    assert (await call.final()).status == 407
    await call.authenticate()
    leg_b = await env.trunk.next_call(timeout=5)
    assert telephone_events(leg_b.invite.body) == ["101 telephone-event/8000"]
    assert fmtps(leg_b.invite.body) == ["101 0-16"]
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", TRUNK_PORT, formats=("0", "101")))
    final = await call.final()
    assert final.status == 200
    assert telephone_events(final.body) == []
    gateway_call = b2bua_call(env)
    assert gateway_call.security_record()["a"]["device"] == "old-phone"
    assert gateway_call.media.dtmf == DtmfPlan(0, "b", "a", 101, 8000)
    trunk_sock = await bind(TRUNK_PORT)
    with trunk_sock:
        exchange = await call.request("INFO", body=b"4", content_type="application/dtmf")
        assert (await exchange.final()).status == 200
        with trio.fail_after(2):
            first = await trunk_sock.recv(2048)
        assert fields(first)[:2] == (True, 101)
        assert parse_event_untrusted(first[12:]).event == 4
    assert env.trunk.requests("INFO") == []


async def test_without_the_declaration_nothing_is_added_and_info_is_relayed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(ring=False, status=None)
    )
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", TRUNK_PORT, formats=("0",))
    )
    leg_b = await env.alice.next_call()
    assert telephone_events(leg_b.invite.body) == []
    assert leg_b.incoming is not None
    await env.alice.respond(
        leg_b.incoming, 200, body=simple_sdp("127.0.0.1", ALICE_PORT, formats=("0",))
    )
    assert (await incoming.final()).status == 200
    await env.alice.next_request("ACK")
    assert b2bua_call(env).media.dtmf is None
    exchange = await incoming.request(
        "INFO", body=b"Signal=9\r\nDuration=100\r\n", content_type="application/dtmf-relay"
    )
    info = await env.alice.next_request("INFO")
    assert info.request.body == b"Signal=9\r\nDuration=100\r\n"
    await env.alice.respond(info, 200)
    assert (await exchange.final()).status == 200


async def test_a_reinvite_from_the_info_trunk_offers_telephone_event_again(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        alice_auto=AutoAnswer(ring=False, status=None),  # re-INVITEs answered with her codecs
        carrier={"dtmf": "info"},
    )
    incoming, _, _ = await info_trunk_calls_alice(env)
    plan = b2bua_call(env).media.dtmf
    assert plan == DtmfPlan(0, "b", "a", 101, 8000)
    ok = await incoming.reinvite(
        simple_sdp("127.0.0.1", TRUNK_PORT, formats=("0",), version=2, direction="sendonly")
    )
    assert ok.status == 200
    reoffer = env.alice.requests("INVITE")[-1]
    assert telephone_events(reoffer.body) == ["101 telephone-event/8000"]  # the same number
    assert fmtps(reoffer.body) == ["101 0-16"]
    assert telephone_events(ok.body) == [] and parse_sdp_untrusted(ok.body).media[0].formats == (
        "0",
    )
    assert b2bua_call(env).media.dtmf == plan
