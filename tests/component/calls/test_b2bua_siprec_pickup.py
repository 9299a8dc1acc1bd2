"""A recorded call that another phone picks up (the ``siprec`` tap, RFC 7866; pickup.py): the
recording session opens at the answer, after the pickup, so its metadata (RFC 7865) names the
caller and the phone that picked up, never the phone that only rang; the picker's hang-up ends
the call, and the SRS gets the final snapshot (the session's stop-time, every participant
disassociated) before the BYE. The SRS a SIP agent on the in-memory network, virtual time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import gateway.plugins.taps.siprec as siprec_plugin
from gateway.core.ids import SeededIds
from gateway.testing.sip_agent import SipAgent, simple_sdp
from tests.component.calls.b2bua_env import GW, eventually
from tests.component.calls.dialog_event_watch import start
from tests.component.calls.pickup_calls import BOB_PORT, PICKUP
from tests.component.calls.pickup_feature_calls import dial_call, ring_alice
from tests.component.calls.siprec_calls import (
    NS,
    SRS,
    metadata_of,
    participants_of,
    srs_answer,
)
from tests.component.calls.siprec_recorded_calls import VirtualWallClock, stamp_of


async def test_a_picked_up_call_is_recorded_with_the_picker_and_stops_at_its_hang_up(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(siprec_plugin, "time", VirtualWallClock())
    env, bob = await start(
        nursery,
        tmp_path,
        voipgw_seed,
        groups=[PICKUP],
        plugins=[("siprec", siprec_plugin)],
        plugin_tables={
            "enable": ["siprec"],
            "siprec": {"srs": "sip:srs@127.0.0.9:5060", "trunks": ["carrier"]},
        },
    )
    srs = SipAgent(
        env.network, SRS, ids=SeededIds(voipgw_seed + 9), user="srs", proxy=GW, auto=None
    )
    await nursery.start(srs.serve)
    incoming, _ = await ring_alice(env)
    await trio.sleep(5)  # alice's phone rings; nobody records a ringing call
    picked, to_bob = await dial_call(bob, "*8")
    assert to_bob.status == 200, to_bob.reason
    assert (await incoming.final()).status == 200

    recording = await srs.next_call(timeout=5)
    opened = metadata_of(recording.invite.body)
    parties = participants_of(opened)
    caller_id, picker_id = parties
    assert str(parties[caller_id]).startswith("sip:+1")  # the trunk's caller
    assert str(parties[picker_id]).startswith("sip:bob@")  # who answered, not the DID rung
    started = stamp_of(opened.findtext("r:session/r:start-time", namespaces=NS))
    assert opened.find("r:session/r:stop-time", NS) is None
    assert [
        a.find("r:disassociate-time", NS) for a in opened.findall("r:participantsessionassoc", NS)
    ] == [None, None]
    await recording.answer(200, sdp=srs_answer())
    await srs.next_request("ACK", timeout=5)

    await trio.sleep(30)
    assert (await picked.bye()).status == 200  # bob hangs up: the call is over
    final = await srs.next_request("INVITE", timeout=10)
    assert final.request.call_id == recording.invite.call_id
    assert srs.requests("BYE") == []
    root = metadata_of(final.request.body)
    assert participants_of(root) == parties  # same ids, same parties
    assert stamp_of(root.findtext("r:session/r:start-time", namespaces=NS)) == started
    stopped = stamp_of(root.findtext("r:session/r:stop-time", namespaces=NS))
    assert 30 <= stopped - started <= 31
    left = {
        a.get("participant_id"): stamp_of(a.findtext("r:disassociate-time", namespaces=NS))
        for a in root.findall("r:participantsessionassoc", NS)
    }
    assert left == {caller_id: stopped, picker_id: stopped}
    await srs.respond(final, 200, body=srs_answer(), content_type="application/sdp")
    bye = await srs.next_request("BYE", timeout=10)
    assert bye.request.call_id == recording.invite.call_id
    await eventually(lambda: env.calls == 0)


async def test_the_pickers_recordpref_in_its_invite_pauses_the_recording_from_its_start(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The picker's INVITE is the called party's first SDP (RFC 7866 §7.2): its
    ``a=recordpref:off`` is read, and with ``recordpref = "pause"`` the recording that starts
    at the answer starts paused (both of its streams ``a=inactive``)."""
    env, bob = await start(
        nursery,
        tmp_path,
        voipgw_seed,
        groups=[PICKUP],
        plugins=[("siprec", siprec_plugin)],
        plugin_tables={
            "enable": ["siprec"],
            "siprec": {
                "srs": "sip:srs@127.0.0.9:5060",
                "trunks": ["carrier"],
                "recordpref": "pause",
            },
        },
    )
    srs = SipAgent(
        env.network, SRS, ids=SeededIds(voipgw_seed + 9), user="srs", proxy=GW, auto=None
    )
    await nursery.start(srs.serve)
    incoming, _ = await ring_alice(env)
    offer = simple_sdp("127.0.0.1", BOB_PORT).replace(b"m=audio", b"a=recordpref:off\r\nm=audio", 1)
    picked = await bob.invite("sip:*8@127.0.0.1:5060", sdp=offer)
    await picked.exchange.wait_for(lambda r: r.status == 407)  # type: ignore[union-attr]
    await picked.authenticate()
    assert (await picked.final()).status == 200
    assert (await incoming.final()).status == 200
    recording = await srs.next_call(timeout=5)
    assert recording.invite.body.count(b"a=inactive") == 2  # type: ignore[attr-defined]
    assert env.gateway.calls is not None
    (call,) = env.gateway.calls.calls
    assert call.b.recordpref == "off"
    assert call.security_record()["b"]["recordpref"] == "off"
