"""The sipp scenarios of the interop harness, proven against each other without the gateway.

Each UAC scenario calls the UAS scenario that plays its counterpart, directly, over UDP and TCP.
Both sides must end with exit code 0: every message arrived as the scenario expects. Mismatched
pairs must fail, which shows a scenario checks what it claims to check. Also the port helpers.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.interop.harness import (
    SCENARIOS,
    SippResult,
    SippUas,
    free_port,
    free_port_block,
    free_port_pair,
    ports,
    run_sipp_uac,
    tone_ulaw,
    wait_listening,
)

TRANSPORTS = pytest.mark.parametrize("transport", ["udp", "tcp"])


def _bind(kind: socket.SocketKind, port: int) -> None:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", port))


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = [free_port("udp"), free_port("tcp"), free_port_pair(), free_port_pair()]
    assert len(set(ports)) == len(ports)
    _bind(socket.SOCK_DGRAM, ports[0])
    _bind(socket.SOCK_STREAM, ports[1])
    for port in ports[2:]:
        _bind(socket.SOCK_DGRAM, port)
        _bind(socket.SOCK_STREAM, port)


def test_free_port_block_is_consecutive_even_and_unshared() -> None:
    first = free_port_block(100)
    second = free_port_block(100)
    assert first % 2 == 0
    assert not set(range(first, first + 100)) & set(range(second, second + 100))
    for port in range(first, first + 100):
        _bind(socket.SOCK_DGRAM, port)


def test_wait_listening_sees_a_bound_socket_and_times_out_without_one() -> None:
    port = free_port("udp")
    with pytest.raises(RuntimeError, match="nothing listens"):
        wait_listening(port, "udp", timeout=0.2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        wait_listening(port, "udp", timeout=2)
    tcp_port = free_port("tcp")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", tcp_port))
        with pytest.raises(RuntimeError):
            wait_listening(tcp_port, "tcp", timeout=0.2)  # bound, not listening yet
        sock.listen()
        wait_listening(tcp_port, "tcp", timeout=2)


def _trace_block(direction: str, message: str) -> str:
    """One message as sipp's -trace_msg writes it."""
    heading = (
        "UDP message received [99] bytes :"
        if direction == "received"
        else "UDP message sent (99 bytes):"
    )
    return f"{'-' * 47} 2026-11-30 12:00:00.000000\n{heading}\n\n{message}\n\n"


def test_the_trace_lists_each_message_once_without_its_retransmissions(tmp_path: Path) -> None:
    """An INVITE the gateway sent again while a starved sipp had not answered it (Timer A,
    RFC 3261 §17.1.1.2) is one INVITE; a new request (another CSeq) is another."""
    invite = "INVITE sip:112@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
    invite += "CSeq: 1 INVITE\r\nContent-Length: 0\r\n"
    reinvite = invite.replace("branch=z9hG4bK1", "branch=z9hG4bK2").replace("1 INVITE", "2 INVITE")
    ok = "SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n"
    (tmp_path / "messages.log").write_text(
        _trace_block("received", invite)
        + _trace_block("received", invite)
        + _trace_block("sent", ok)
        + _trace_block("sent", ok)
        + _trace_block("received", reinvite)
    )
    result = SippResult("uas.xml", ("sipp",), 0, tmp_path, 5060, 6000)
    assert [m.splitlines()[2] for m in result.received("INVITE ")] == [
        "CSeq: 1 INVITE",
        "CSeq: 2 INVITE",
    ]
    assert len(result.received("INVITE ", retransmissions=True)) == 3
    assert len(result.sent("SIP/2.0 200")) == 1
    assert len(result.sent("SIP/2.0 200", retransmissions=True)) == 2
    assert result.received("SIP/2.0") == [] and result.sent("INVITE ") == []


def test_every_scenario_file_is_exercised_here() -> None:
    mine = {path.name for path in SCENARIOS.glob("ua[cs]_*.xml")}
    exercised = {name for pair in PAIRS for name in pair}
    assert mine == exercised


PAIRS = [
    ("uac_call.xml", "uas_answer.xml"),
    ("uac_call.xml", "uas_answer_avpf.xml"),
    ("uac_call_rtp.xml", "uas_answer.xml"),
    ("uac_call_auth.xml", "uas_auth_answer.xml"),
    ("uac_call_bye_auth.xml", "uas_answer_bye_auth.xml"),
    ("uac_cancel.xml", "uas_ring_forever.xml"),
    ("uac_busy.xml", "uas_busy.xml"),
    ("uac_call_remote_bye.xml", "uas_bye_first.xml"),
    ("uac_call_late_offer.xml", "uas_answer.xml"),
]


@pytest.mark.interop
@TRANSPORTS
@pytest.mark.parametrize(("uac", "uas"), PAIRS, ids=[uac[:-4] for uac, _ in PAIRS])
def test_uac_scenario_against_its_uas(tmp_path: Path, transport: str, uac: str, uas: str) -> None:
    rtp_file = tone_ulaw(tmp_path / "tone.ulaw", 1000, seconds=1) if "rtp" in uac else None
    keys = {"user": "alice", "password": "s3cret"} if "auth" in uas else None
    with SippUas(uas, workdir=tmp_path, transport=transport, rtp_echo=True, keys=keys) as callee:
        caller = run_sipp_uac(
            uac,
            callee.address,
            workdir=tmp_path,
            transport=transport,
            service="bob",
            caller="alice",
            auth=("alice", "s3cret"),
            rtp_file=rtp_file,
        )
        caller.check()
        callee.wait(timeout=10).check()
    sent = caller.messages()
    assert "SIP/2.0 200" in sent or "SIP/2.0 486" in sent or "SIP/2.0 487" in sent
    # Both sipps have exited: their media ports may be handed out again (a full session's
    # blocks would otherwise fill the range, tests/interop/harness/ports.py).
    assert not {caller.media_port, callee.media_port} & ports._handed_out


@pytest.mark.interop
def test_wrong_password_fails_both_sides(tmp_path: Path) -> None:
    keys = {"user": "alice", "password": "s3cret"}
    with SippUas("uas_auth_answer.xml", workdir=tmp_path, keys=keys) as callee:
        caller = run_sipp_uac(
            "uac_call_auth.xml",
            callee.address,
            workdir=tmp_path,
            service="bob",
            caller="alice",
            auth=("alice", "guess"),
        )
        assert not caller.ok
        assert "403 Forbidden" in caller.messages()
        assert not callee.wait(timeout=10).ok


@pytest.mark.interop
def test_digest_uri_is_the_request_uri(tmp_path: Path) -> None:
    keys = {"user": "alice", "password": "s3cret"}
    with SippUas("uas_auth_answer.xml", workdir=tmp_path, keys=keys) as callee:
        caller = run_sipp_uac(
            "uac_call_auth.xml",
            callee.address,
            workdir=tmp_path,
            service="bob",
            caller="alice",
            auth=("alice", "s3cret"),
        )
        caller.check()
        callee.wait(timeout=10).check()
    assert f'uri="sip:bob@{callee.address}"' in caller.messages()


@pytest.mark.interop
@pytest.mark.parametrize(
    ("uac", "uas"),
    [
        ("uac_call.xml", "uas_busy.xml"),
        ("uac_busy.xml", "uas_answer.xml"),
        ("uac_cancel.xml", "uas_answer.xml"),
        ("uac_call.xml", "uas_ring_forever.xml"),
    ],
)
def test_mismatched_scenarios_fail(tmp_path: Path, uac: str, uas: str) -> None:
    with SippUas(uas, workdir=tmp_path, timeout=5) as callee:
        caller = run_sipp_uac(uac, callee.address, workdir=tmp_path, service="bob", timeout=2)
        assert not caller.ok, caller.describe()
