"""SIPREC with SRTP towards the recorder (``media_security = "sdes"``) and a stream the call
removes (RFC 3264 §8.2), the SRS a SIP agent over the ``tls`` stand-in, the media on real
127.0.0.1 sockets, in virtual time:

- an SRS that answers the removed stream's lines (at port 0 in our offer, without a crypto line)
  at a port, without a crypto line of its own, does not end the recording: a removed stream
  stays removed whatever the answer says, and its lines need no keys.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
import trio

from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.message import Request
from gateway.plugins.keyexchange.sdes import parse_crypto_untrusted
from gateway.plugins.taps.siprec import srs_sdp
from tests.component.calls.b2bua_env import next_within
from tests.component.calls.siprec_added_calls import audio_video, callee_takes_two_streams
from tests.component.calls.siprec_srtp_calls import (
    CALLEE_PORT,
    CALLER_PORT,
    SRS_PORT,
    answered_call,
    srtp_env,
)


def srtp_answer_of(request: Request, *, removed_at_a_port: bool = False) -> bytes:
    """The SRS's answer to an offer of any number of lines: each line offered at a port
    recvonly at SRS_PORT + 2 * (label - 1) with a crypto line of the SRS's own (the tag and
    suite of our first); a line offered at port 0 declined or, ``removed_at_a_port`` (a faulty
    SRS), answered at its label's port without a crypto line."""
    offer = parse_sdp_untrusted(srs_sdp(request.headers.get("Content-Type"), request.body))
    lines = ["v=0", "o=srs 1 2 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    for media in offer.media:
        label = media.attributes.get("label") or ""
        port = SRS_PORT + 2 * (int(label) - 1)
        if media.port == 0:
            lines += [
                f"m={media.media} {port if removed_at_a_port else 0} RTP/SAVP {media.formats[0]}",
                f"a=label:{label}",
                "a=recvonly" if removed_at_a_port else "a=inactive",
            ]
            continue
        ours = parse_crypto_untrusted(media.attributes.values("crypto")[0])
        key = base64.b64encode(bytes([int(label)]) * 30).decode()
        lines += [
            f"m={media.media} {port} RTP/SAVP {media.formats[0]}",
            f"a=label:{label}",
            "a=recvonly",
            f"a=crypto:{ours.tag} {ours.suite} inline:{key}",
        ]
    return ("\r\n".join(lines) + "\r\n").encode()


async def test_an_srs_answering_a_removed_line_at_a_port_does_not_end_an_srtp_recording(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.plugins.taps.siprec")
    env, srs = await srtp_env(nursery, tmp_path, voipgw_seed, record_video=True)
    call, _, _ = await answered_call(env)
    recording = await srs.next_call()
    await recording.answer(200, sdp=srtp_answer_of(recording.invite))
    await srs.next_request("ACK", timeout=5)

    await callee_takes_two_streams(env, CALLEE_PORT)
    answer = await call.reinvite(  # type: ignore[attr-defined]
        audio_video(CALLER_PORT, CALLER_PORT + 2, version=2)
    )
    assert answer.status == 200
    added = await srs.next_request("INVITE", timeout=10)
    await srs.respond(
        added, 200, body=srtp_answer_of(added.request), content_type="application/sdp"
    )
    await srs.next_request("ACK", timeout=5)

    answer = await call.reinvite(  # type: ignore[attr-defined]
        audio_video(CALLER_PORT, 0, version=3)
    )
    assert answer.status == 200
    removed = await srs.next_request("INVITE", timeout=10)
    body = srtp_answer_of(removed.request, removed_at_a_port=True)
    await srs.respond(removed, 200, body=body, content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    assert await next_within(srs, "BYE", 5) is None  # the recording goes on
    assert not [r for r in caplog.records if "recording ended" in r.getMessage()]
    await call.bye()  # type: ignore[attr-defined]
    final = await srs.next_request("INVITE", timeout=10)  # the final snapshot: still recording
    assert final.request.call_id == recording.invite.call_id
