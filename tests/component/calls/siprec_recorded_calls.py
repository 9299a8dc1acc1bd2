"""The recorded call, media directions and scrape of the in-memory SIPREC update tests: moved here
from test_b2bua_siprec_updates.py so that no test module imports another."""

from __future__ import annotations

import calendar
import time

import trio

from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.status import CallStatistics, StatusView
from gateway.plugins.metrics.collect import render
from gateway.plugins.taps.siprec import srs_sdp
from gateway.testing.sip_agent import Received, SipAgent, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, B2bua
from tests.component.calls.siprec_calls import (
    CALLER_PORT,
    srs_answer,
)

HELD = simple_sdp("127.0.0.1", CALLER_PORT, direction="sendonly")
RESUMED = simple_sdp("127.0.0.1", CALLER_PORT, direction="sendrecv", version=3)


def scrape(env: B2bua) -> str:
    return render(StatusView(env.gateway, CallStatistics())).decode()


def directions(update: Received) -> list[str]:
    request = update.request
    offer = parse_sdp_untrusted(srs_sdp(request.headers.get("Content-Type"), request.body))
    return [m.attributes.direction().value for m in offer.media]  # type: ignore[union-attr]


async def recorded_call(env: B2bua, srs: SipAgent) -> tuple[object, tuple[str, int], str]:
    """A call answered by alice's phone by itself, and its recording session set up; the
    call, where the caller sends its RTP, and the recording session's Call-ID."""
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    final = await call.final()
    assert final.status == 200
    recording = await srs.next_call()
    await recording.answer(200, sdp=srs_answer())
    await srs.next_request("ACK", timeout=5)
    to_caller_side = ("127.0.0.1", parse_sdp_untrusted(final.body).media[0].port)
    return call, to_caller_side, recording.invite.call_id


class VirtualWallClock:
    """The siprec module's ``time``, its wall clock read from trio's virtual one (seconds
    since an epoch of 2023-11-14T22:13:20Z), so that metadata times follow the test's steps."""

    def __init__(self) -> None:
        self.strftime = time.strftime
        self.gmtime = time.gmtime

    def time(self) -> float:
        return 1_700_000_000.0 + trio.current_time()


def stamp_of(text: str | None) -> float:
    """An xs:dateTime in UTC ("...Z", as the SRC writes them) as seconds since the epoch."""
    assert text is not None and text.endswith("Z"), text
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
