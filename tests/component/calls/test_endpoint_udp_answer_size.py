"""UDP requests too large to answer (RFC 3261 §18.1.1, §18.2.2, §21.5.14): a response echoes
the request's Via, From, To, Call-ID and CSeq and adds our own fields, and over UDP one that
does not fit a datagram cannot be sent (EMSGSIZE). Before the gateway checked, a 65 KB INVITE
rang its callee while no answer could reach the caller. Now such a request is refused with a
stateless 513 when that fits, else dropped, counted and logged at most once a second; a request
large for its body or for fields no response echoes is served as ever.

Set-up as b2bua_env.py; the requests come from the carrier's address (a trunk needs no digest).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from gateway.core.endpoint import ANSWERABLE_UDP_REQUEST, MAX_UDP_PAYLOAD, RESPONSE_ALLOWANCE
from gateway.core.status import CallStatistics, StatusView
from tests.component.calls.b2bua_env import ALICE_DID, GW, B2bua, start_b2bua
from tests.component.calls.udp_requests import SOURCE, request


async def answers(env: B2bua, data: bytes) -> list[bytes]:
    """Send ``data`` from SOURCE; the gateway's distinct answers within 64*T1."""
    start = len(env.network.capture)
    sock = env.network.bind(SOURCE)
    try:
        await sock.sendto(data, GW)
        await trio.sleep(33)
    finally:
        sock.close()
    found: list[bytes] = []
    for datagram in env.network.capture[start:]:
        if datagram.src == GW and datagram.dst == SOURCE and datagram.data not in found:
            found.append(datagram.data)
    return found


async def test_an_invite_whose_answers_would_not_fit_gets_513_and_rings_nobody(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    data = request("INVITE", env.did_uri(ALICE_DID), echoed=MAX_UDP_PAYLOAD - 4000)
    assert ANSWERABLE_UDP_REQUEST < len(data) <= MAX_UDP_PAYLOAD
    (answer,) = await answers(env, data)
    assert answer.startswith(b"SIP/2.0 513 Message Too Large")
    assert len(answer) <= MAX_UDP_PAYLOAD and b";tag=" in answer.split(b"\r\nTo:")[1][:200]
    assert env.alice.requests("INVITE") == [] and env.calls == 0
    statistics = env.gateway.endpoint.statistics
    assert (statistics.rejected_too_large, statistics.send_errors) == (1, 0)
    assert StatusView(env.gateway, CallStatistics()).sip().rejected_too_large == 1


async def test_a_request_not_even_a_513_fits_is_dropped_counted_and_logged_once_a_second(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "gateway.core.endpoint")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    sent: list[bytes] = []
    for number in (1, 2, 3):
        # As large as a datagram may be; what the 513 adds (its status line, received, rport,
        # a To tag) is more than what it leaves out (Request-Line, Max-Forwards).
        data = request("OPTIONS", "sip:127.0.0.1:5060", echoed=MAX_UDP_PAYLOAD, number=number)
        echoed = 2 * MAX_UDP_PAYLOAD - len(data)
        sent.append(request("OPTIONS", "sip:127.0.0.1:5060", echoed=echoed, number=number))
        assert len(sent[-1]) == MAX_UDP_PAYLOAD
    start = len(env.network.capture)
    sock = env.network.bind(SOURCE)
    await sock.sendto(sent[0], GW)
    await sock.sendto(sent[1], GW)
    await trio.sleep(1.5)  # the next line is due
    await sock.sendto(sent[2], GW)
    await trio.sleep(33)
    assert not [d for d in env.network.capture[start:] if d.src == GW and d.dst == SOURCE]
    statistics = env.gateway.endpoint.statistics
    assert (statistics.dropped_too_large, statistics.send_errors) == (3, 0)
    lines = [r.getMessage() for r in caplog.records if "would not fit a datagram" in r.getMessage()]
    # The first is logged at once, the second not within the second after it: the third's
    # line counts both.
    assert len(lines) == 2, lines
    assert "0 refused with 513, 1 dropped" in lines[0]
    assert "0 refused with 513, 2 dropped" in lines[1]
    assert f"OPTIONS from 127.0.0.2:5071, {MAX_UDP_PAYLOAD} bytes" in lines[1]
    # The gateway serves on.
    probe = await env.trunk.send(env.trunk.new_request("OPTIONS", "sip:127.0.0.1:5060"))
    assert (await probe.final()).status == 200


async def test_a_large_request_whose_answers_fit_is_served(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Large for fields no response echoes: its answers are small, nothing to refuse."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    data = request("OPTIONS", "sip:127.0.0.1:5060", echoed=2000, padding=MAX_UDP_PAYLOAD - 3000)
    assert ANSWERABLE_UDP_REQUEST < len(data) <= MAX_UDP_PAYLOAD
    (answer,) = await answers(env, data)
    assert answer.startswith(b"SIP/2.0 200 OK") and len(answer) < RESPONSE_ALLOWANCE
    statistics = env.gateway.endpoint.statistics
    assert statistics.rejected_too_large == statistics.dropped_too_large == 0


async def test_a_malformed_request_whose_400_would_not_fit_is_not_answered(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A 400 repeats the Via stack it salvaged (RFC 3261 §8.2.6): too large to send, it is
    dropped and counted instead of failing in sendto."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    data = request("OPTIONS", "sip:127.0.0.1:5060", echoed=MAX_UDP_PAYLOAD)
    data = request("OPTIONS", "sip:127.0.0.1:5060", echoed=2 * MAX_UDP_PAYLOAD - len(data))
    malformed = data.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")  # method mismatch: 400
    assert len(malformed) == MAX_UDP_PAYLOAD - 1  # INVITE is a letter shorter
    assert await answers(env, malformed) == []
    statistics = env.gateway.endpoint.statistics
    assert (statistics.rejected_malformed, statistics.dropped_too_large) == (1, 1)
    assert statistics.send_errors == 0
