"""2xx responses the call does not take: another fork's answer after a callee's 2xx (a
forking proxy downstream, two phones answering: RFC 3261 §13.2.2.4, §16.7 "multiple 2xx"),
each dialog ACKed in its own right and BYEd once; the 2xx of a late-offer INVITE nobody takes
(the call failed, or gave the INVITE up, §9.1), ACKed with an answer refusing its offer (RFC
3264 §4: the ACK must carry the answer) and BYEd; and a re-INVITE without SDP whose offer
finds no media ports, answered 503 as everywhere else. Signalling on the in-memory network,
virtual time (T1 = 0.5 s)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.media.errors import PortsExhausted
from gateway.core.media.session import MediaSession
from tests.component.calls.b2bua_env import answered_call, eventually, start_b2bua
from tests.component.calls.test_b2bua_call_guards import ended_lines
from tests.component.calls.test_b2bua_offer_errors import warning_of


async def test_no_media_ports_for_the_offer_in_a_late_reinvites_2xx_is_503(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The trunk's re-INVITE without SDP goes to alice without SDP; her 2xx offers, and the
    relay has no ports for it: the node is full, not the offer bad. 503 with Warning "no free
    media ports" and no Retry-After (RFC 3261 §21.5.4; docs/configuration.md), as a caller's
    INVITE, a re-INVITE with SDP or a picker gets, where it used to be 488 "bad SDP offer".
    Alice holds a session the trunk cannot get, so the call ends, saying so."""
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    real = MediaSession.offer_from
    armed = [True]

    def exhausted(self: MediaSession, *args: Any, **kwargs: Any) -> Any:
        if armed:
            armed.clear()
            raise PortsExhausted("no free media port pair")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MediaSession, "offer_from", exhausted)
    refused = await call.reinvite(b"")
    assert (refused.status, refused.reason) == (503, "Service Unavailable")
    assert warning_of(refused) == '399 voipgw "no free media ports"'
    assert refused.headers.get("Retry-After") is None
    await eventually(lambda: env.calls == 0)
    (line,) = [line for line in ended_lines(caplog) if call.call_id in line]
    assert line.endswith("ended: no free media ports"), line
