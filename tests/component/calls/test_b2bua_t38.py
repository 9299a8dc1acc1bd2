"""T.38 fax passthrough through the B2BUA: signalling on the in-memory network, media on real
127.0.0.1 sockets through the gateway's relay, in virtual time.

- a plain call: the callee's ATA re-INVITEs to ``m=image udptl t38``; the carrier gets the same
  offer (attributes unchanged, our port); UDPTL datagrams go both ways byte for byte, those that
  look like RTP included; a re-INVITE back to audio makes the stream RTP again; the call's record
  says the fax was not encrypted;
- a ZRTP (SRTP) caller leg and a plain callee leg: the fax goes in clear on both, as the record
  says, and the re-INVITE back to audio offers the ZRTP leg fresh keys;
- a carrier whose policy requires encryption: T.38 offered beside audio is refused on that leg
  with port 0 (the devices fall back to G.711 fax over the SRTP audio), alone with 488, and the
  call goes on;
- an intercepted call: its fax datagrams reach the mediation function as X3 IP packets (payload
  format 5) with the sender's address, while the parties see the same as without interception.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

import gateway.plugins.keyexchange.zrtp as zrtp_plugin
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, eventually, start_b2bua
from tests.component.calls.dtls_phone import bind
from tests.component.calls.t38_scenarios import (
    CALLEE_PORT,
    CALLER_PORT,
    DATAGRAMS,
    T38_LINES,
    a_zrtp_leg_and_a_plain_leg_relaying_a_fax,
    an_atas_reinvite_to_t38_and_back_to_audio,
    an_intercepted_calls_fax_to_x3,
    answer_invites,
    fax_both_ways,
    image_port,
    t38_sdp,
    zrtp_caller,
)
from tests.component.calls.zrtp_pairs import zrtp_sdp


async def test_an_atas_reinvite_to_t38_is_relayed_and_back_to_audio(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    await an_atas_reinvite_to_t38_and_back_to_audio(nursery, tmp_path, voipgw_seed)


async def test_a_zrtp_leg_and_a_plain_leg_relay_the_fax_in_clear(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    await a_zrtp_leg_and_a_plain_leg_relaying_a_fax(nursery, tmp_path, voipgw_seed)


async def test_a_leg_whose_policy_requires_encryption_refuses_t38(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        alice_auto=None,
        plugins=[("zrtp", zrtp_plugin)],
        carrier={"media_policy": "encrypted-only"},
    )
    call, ata, phone = await zrtp_caller(env, nursery)
    offers: list[bytes] = []
    answer = zrtp_sdp(phone.negotiation, port=CALLER_PORT).replace(b" 1 1 IN", b" 1 2 IN")
    answer += b"m=image 0 udptl t38\r\n"
    answer_invites(env.trunk, answer, answer, offers)
    with caplog.at_level(logging.INFO, logger="gateway.core.media.security"):
        # Audio and T.38 offered: the carrier's leg gets the T.38 line at port 0.
        both = simple_sdp("127.0.0.1", CALLEE_PORT, version=2) + b"".join(
            line + b"\r\n" for line in t38_sdp(CALLEE_PORT, version=2).split(b"\r\n")[5:-1]
        )
        response = await ata.reinvite(both)  # type: ignore[attr-defined]
    assert response.status == 200
    assert image_port(offers[0]) == 0
    assert image_port(response.body) == 0
    assert "T.38" in caplog.text and "encrypted-only" in caplog.text

    # T.38 alone (the audio set aside): 488, the call goes on with its audio.
    response = await ata.reinvite(  # type: ignore[attr-defined]
        t38_sdp(CALLEE_PORT, version=3, audio_port=0)
    )
    assert response.status == 488
    assert "T.38" in (response.headers.get("Warning") or "")
    assert len(offers) == 1
    assert env.calls == 1
    await call.bye()  # type: ignore[attr-defined]
    await eventually(lambda: env.calls == 0)


async def test_an_intercepted_calls_fax_is_delivered_as_x3_ip_packets(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    await an_intercepted_calls_fax_to_x3(nursery, tmp_path, voipgw_seed)


async def test_a_fax_only_call_relays_t38_from_its_first_invite(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=t38_sdp(CALLER_PORT, version=1))
    ata = await env.alice.next_call()
    offered = parse_sdp_untrusted(ata.invite.body).media
    assert [(m.media, m.proto) for m in offered] == [("image", "udptl")]
    assert [f"a={n}:{v}" for n, v in offered[0].attributes] == T38_LINES
    await ata.answer(200, sdp=t38_sdp(CALLEE_PORT, version=1))
    final = await call.final()
    assert final.status == 200
    caller, callee = await bind(CALLER_PORT), await bind(CALLEE_PORT)
    with caller, callee:
        await fax_both_ways(
            caller,
            ("127.0.0.1", image_port(final.body)),
            callee,
            ("127.0.0.1", offered[0].port),
        )
    await call.bye()
    await eventually(lambda: env.calls == 0)


async def test_a_fax_calls_datagrams_are_counted_apart_from_rtp_in_the_metrics(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A fax-only call: its UDPTL datagrams go to ``voipgw_media_relayed_udptl_*``, not to the
    RTP and RTCP packets (none: the call had no audio), live and after its end (its stream's
    counters kept when it closes)."""
    from tests.component.calls.metrics_scrape import metrics_env, scrape

    env, address = await metrics_env(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=t38_sdp(CALLER_PORT, version=1))
    ata = await env.alice.next_call()
    offered = parse_sdp_untrusted(ata.invite.body).media
    await ata.answer(200, sdp=t38_sdp(CALLEE_PORT, version=1))
    final = await call.final()
    caller, callee = await bind(CALLER_PORT), await bind(CALLEE_PORT)
    with caller, callee:
        await fax_both_ways(
            caller,
            ("127.0.0.1", image_port(final.body)),
            callee,
            ("127.0.0.1", offered[0].port),
        )
    fax_bytes = 2 * sum(len(d) for d in DATAGRAMS)
    for when in ("live", "ended"):
        if when == "ended":
            await call.bye()
            await eventually(lambda: env.calls == 0)
        figures = await scrape(address)
        assert figures["voipgw_media_relayed_udptl_packets_total"] == 2 * len(DATAGRAMS), when
        assert figures["voipgw_media_relayed_udptl_bytes_total"] == fax_bytes
        assert figures["voipgw_media_relayed_packets_total"] == 0
        assert figures["voipgw_media_relayed_bytes_total"] == 0
