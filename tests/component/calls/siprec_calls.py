"""The SIPREC environment, SRS, answered call and metadata of the in-memory SIPREC tests: moved
here from test_b2bua_siprec.py so that no test module imports another."""

from __future__ import annotations

import itertools
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

import gateway.plugins.taps.siprec as siprec_plugin
from gateway.core.ids import SeededIds
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.taps.siprec import NAMESPACE
from gateway.testing.sip_agent import AutoAnswer, Call, SipAgent, simple_sdp
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    GW,
    B2bua,
    start_b2bua,
)
from tests.component.calls.dtls_phone import bind
from tests.port_blocks import port_bases

SRS = ("127.0.0.9", 5060)
CALLER_PORT, CALLEE_PORT, SRS_PORT = port_bases(3)  # this process's own (tests/port_blocks.py)


def rtp(seq: int, byte: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, ssrc) + bytes([byte]) * 160


def srs_answer(
    labels: tuple[str, str] = ("1", "2"), ports: tuple[int, int] = (SRS_PORT, SRS_PORT + 2)
) -> bytes:
    """The SRS's SDP answer: recvonly, the labels in reverse order (matched by label)."""
    lines = ["v=0", "o=srs 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    for label, port in reversed(list(zip(labels, ports, strict=True))):
        lines += [f"m=audio {port} RTP/AVP 0", f"a=label:{label}", "a=recvonly"]
    return ("\r\n".join(lines) + "\r\n").encode()


async def siprec_env(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    *,
    alice_auto: AutoAnswer | None = None,
    sip: Mapping[str, object] | None = None,
    carrier: Mapping[str, object] | None = None,
    media_table: Mapping[str, object] | None = None,
    **table: object,
) -> tuple[B2bua, SipAgent]:
    """A B2BUA recording the carrier's calls with SIPREC (``table``: more of ``[plugins.siprec]``,
    ``sip``: of ``[sip]``, ``carrier``: of the carrier trunk, ``media_table``: ``[media]``) and
    its SRS agent."""
    env = await start_b2bua(
        nursery,
        tmp_path,
        seed,
        sip=sip,
        carrier=carrier,
        plugins=[("siprec", siprec_plugin)],
        plugin_tables={
            "enable": ["siprec"],
            "siprec": {"srs": "sip:srs@127.0.0.9:5060", "trunks": ["carrier"], **table},
        },
        alice_auto=alice_auto,
        media_table=media_table,
    )
    # The recorder answers as each test says (auto=None), never by itself.
    srs = SipAgent(env.network, SRS, ids=SeededIds(seed + 9), user="srs", proxy=GW, auto=None)
    await nursery.start(srs.serve)
    return env, srs


async def answered_call(env: B2bua) -> tuple[object, tuple[str, int], tuple[str, int]]:
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    leg_b = await env.alice.next_call()
    offered = parse_sdp_untrusted(leg_b.invite.body).media[0]
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    assert final.status == 200
    answered = parse_sdp_untrusted(final.body).media[0]
    return call, ("127.0.0.1", answered.port), ("127.0.0.1", offered.port)


async def recorded_call_with_media(env: B2bua, srs: SipAgent) -> tuple[Any, Call]:
    """An answered call whose recording the SRS answered, and RTP each way until one of the
    caller's packets reached the SRS as it was sent (sent again every 0.2 s: a stream's first
    packets may come before its far end is latched, and with media workers before the worker
    has its streams): the call and the recording's session at the SRS."""
    call, to_caller_side, to_callee_side = await answered_call(env)
    recording = await srs.next_call()
    await recording.answer(200, sdp=srs_answer())
    await srs.next_request("ACK", timeout=5)
    with (
        await bind(CALLER_PORT) as caller,
        await bind(CALLEE_PORT) as callee,
        await bind(SRS_PORT) as srs_caller,
        trio.fail_after(10),
    ):
        sent: set[bytes] = set()
        for seq in itertools.count():
            sent.add(rtp(seq, 0x11, 0x1111))
            await caller.sendto(rtp(seq, 0x11, 0x1111), to_caller_side)
            await callee.sendto(rtp(seq, 0x22, 0x2222), to_callee_side)
            with trio.move_on_after(0.2):
                if await srs_caller.recv(2048) in sent:
                    break
    return call, recording


async def hang_up_recorded_call(
    env: B2bua, srs: SipAgent, call: Any, recording: Call, *, srs_first: bool
) -> None:
    """The call ends with the caller's BYE, which ends its recording (our BYE to the SRS); or,
    ``srs_first``, the SRS hangs up first and the call goes on unrecorded until then."""
    if srs_first:
        assert (await recording.bye()).status == 200
        await trio.sleep(1)  # the call goes on
        assert env.calls == 1
    await call.bye()
    if not srs_first:
        await srs.next_request("BYE", timeout=10)


NS = {"r": NAMESPACE}


def metadata_of(body: bytes) -> ET.Element:
    """The RFC 7865 document of a multipart body (parsing it proves it well-formed)."""
    found = re.search(rb"<\?xml.*</recording>", body, re.DOTALL)
    assert found is not None, body
    return ET.fromstring(found.group(0))


def participants_of(root: ET.Element) -> dict[str | None, str | None]:
    """participant_id -> the aor it names."""
    return {
        p.get("participant_id"): p.find("r:nameID", NS).get("aor")  # type: ignore[union-attr]
        for p in root.findall("r:participant", NS)
    }
