"""A graceful stop through ``voipgw run`` (``[gateway] drain_timeout``): SIGTERM while a sipp
call is up. The gateway answers OPTIONS 503 at once (a trunk proxy's health check takes it out
of rotation), and a phone's REGISTER or MESSAGE too (but not one removing its binding), keeps
the call until its caller hangs up, then exits 0; a call still up when the
drain runs out gets the gateway's BYE on both legs; a second SIGTERM stops at once.

The caller is a trunk (sipp on 127.0.0.2) calling alice's DID; alice is a registered sipp UAS.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.interop.harness import LOOPBACK, GatewayProcess, SippResult, SippUas, run_sipp_uac
from tests.interop.harness.processes import children_of, process_gone
from tests.interop.sipp_calls import ACCOUNTS, DID, TRUNK_IP, inbound_trunk, register

pytestmark = pytest.mark.interop


def status_of(
    port: int,
    method: str = "OPTIONS",
    *,
    user: str = "probe",
    extra: str = "",
    timeout: float = 2.0,
) -> str:
    """The status line of the gateway's answer to a request outside any dialog over UDP (to
    the gateway for OPTIONS, to ``user``'s address of record otherwise: a REGISTER's)."""
    target = f"sip:{LOOPBACK}:{port}" if method == "OPTIONS" else f"sip:{user}@{LOOPBACK}"
    uri = f"sip:{LOOPBACK}:{port}" if method in ("OPTIONS", "REGISTER") else target
    probe = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOOPBACK}:9;branch=z9hG4bKdrain{time.monotonic_ns()};rport\r\n"
        f"From: <sip:{user}@{LOOPBACK}>;tag=p\r\nTo: <{target}>\r\n"
        f"Call-ID: drain{time.monotonic_ns()}@{LOOPBACK}\r\nCSeq: 1 {method}\r\n"
        f"Max-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.bind((LOOPBACK, 0))
        sock.sendto(probe, (LOOPBACK, port))
        return sock.recv(65535).split(b"\r\n", 1)[0].decode()


REFUSED = "SIP/2.0 503 Service Unavailable (shutting down)"


def gateway(tmp_path: Path, drain_timeout: float, *, workers: int = 1) -> GatewayProcess:
    return GatewayProcess(
        tmp_path,
        accounts=ACCOUNTS,
        extra_toml=inbound_trunk(),
        settings={"gateway": {"drain_timeout": drain_timeout}, "media": {"workers": workers}},
        # The tests stop the gateway themselves (SIGTERM) with a call up: the drain running
        # out is what they provoke, and read.
        allowed_warnings=[r"drain_timeout reached: ending \d+ call\(s\)"],
    )


def call_alice(
    pool: ThreadPoolExecutor, gw: GatewayProcess, tmp_path: Path, scenario: str, **options: Any
) -> Future[SippResult]:
    """The trunk (sipp on 127.0.0.2) calls alice's DID, in the background."""
    return pool.submit(
        run_sipp_uac,
        scenario,
        gw.address,
        workdir=tmp_path,
        service=DID,
        caller="+4940777",
        local_ip=TRUNK_IP,
        **options,
    )


def call_answered(gw: GatewayProcess) -> None:
    """Poll ``voipgw calls`` until the one call is answered."""
    out = gw.cli_until(
        lambda text: any(c["answered_at"] for c in json.loads(text)), "calls", "--json"
    )
    assert any(c["answered_at"] for c in json.loads(out)), out


def sigterm(gw: GatewayProcess) -> None:
    assert gw.process is not None
    gw.process.send_signal(signal.SIGTERM)


def exit_code(gw: GatewayProcess, timeout: float) -> int | None:
    assert gw.process is not None
    try:
        return gw.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def test_sigterm_waits_for_the_call_in_progress_then_exits(tmp_path: Path) -> None:
    gw = gateway(tmp_path, drain_timeout=60)
    with gw:
        alice = SippUas("uas_answer.xml", workdir=tmp_path, timeout=40)
        register(gw, tmp_path, "udp", alice.port)
        with alice, ThreadPoolExecutor(1) as pool:
            caller = call_alice(pool, gw, tmp_path, "uac_call.xml", call_duration_ms=5000)
            call_answered(gw)
            sigterm(gw)
            gw.wait_for_log(r"draining: .* refused \(503\); waiting up to 60 s for 1 call")
            # A trunk's health probe and a phone's re-REGISTER and MESSAGE go elsewhere...
            assert status_of(gw.port) == REFUSED
            contact = f"Contact: <sip:alice@{LOOPBACK}:9>\r\nExpires: 600\r\n"
            assert status_of(gw.port, "REGISTER", user="alice", extra=contact) == REFUSED
            assert status_of(gw.port, "MESSAGE", user="bob") == REFUSED
            # ...but removing a registration is served (challenged, as ever).
            remove = f"Contact: <sip:alice@{LOOPBACK}:9>\r\nExpires: 0\r\n"
            removing = status_of(gw.port, "REGISTER", user="alice", extra=remove)
            assert removing.startswith("SIP/2.0 401"), removing
            assert exit_code(gw, timeout=0.5) is None  # still serving the call
            result = caller.result(timeout=45)
            result.check()  # its BYE went through and was answered
            assert exit_code(gw, timeout=15) == 0
            assert "drained: no calls in progress" in gw.log_text()
            callee = alice.wait(timeout=10)
    callee.check()
    (bye,) = callee.received("BYE ")
    assert "cause=503" not in bye  # the caller's BYE, relayed: not ended by the gateway


def test_sigterm_to_every_process_of_the_service_drains_with_media_workers_too(
    tmp_path: Path,
) -> None:
    # systemd's stop (KillMode=control-group, its default and the README unit's) sends SIGTERM
    # to every process of the service at once: the media workers too, as `kill -TERM -PGID`
    # does. Before session 63 a worker died of it: the SIP process logged "media worker ...
    # exited", ended the call it relayed with BYE on both legs and restarted the worker, in
    # the middle of the drain meant to keep that call. A worker's life follows its channel to
    # the SIP process, which closes it as it stops: the worker now ignores SIGTERM.
    gw = gateway(tmp_path, drain_timeout=60, workers=2)
    with gw:
        assert gw.process is not None
        workers = children_of(gw.process.pid)
        assert len(workers) == 2, workers
        alice = SippUas("uas_answer.xml", workdir=tmp_path, timeout=40)
        register(gw, tmp_path, "udp", alice.port)
        with alice, ThreadPoolExecutor(1) as pool:
            caller = call_alice(pool, gw, tmp_path, "uac_call.xml", call_duration_ms=5000)
            call_answered(gw)
            for pid in (gw.process.pid, *workers):
                os.kill(pid, signal.SIGTERM)
            gw.wait_for_log(r"draining: .* refused \(503\); waiting up to 60 s for 1 call")
            assert exit_code(gw, timeout=0.5) is None  # still serving the call
            assert children_of(gw.process.pid) == workers  # the same workers, still there
            result = caller.result(timeout=45)
            result.check()  # its own BYE went through and was answered: not cut
            assert exit_code(gw, timeout=15) == 0
            assert "drained: no calls in progress" in gw.log_text()
            assert "exited" not in gw.log_text()
            callee = alice.wait(timeout=10)
    callee.check()
    (bye,) = callee.received("BYE ")
    assert "cause=503" not in bye and "media worker" not in bye, bye
    assert all(process_gone(pid) for pid in workers)  # they ended with the gateway


def test_a_call_still_up_when_the_drain_runs_out_gets_the_gateways_bye(tmp_path: Path) -> None:
    gw = gateway(tmp_path, drain_timeout=1)
    with gw:
        alice = SippUas("uas_answer.xml", workdir=tmp_path, timeout=40, call_duration_ms=60_000)
        register(gw, tmp_path, "udp", alice.port)
        with alice, ThreadPoolExecutor(1) as pool:
            caller = call_alice(pool, gw, tmp_path, "uac_call_remote_bye.xml", timeout=30)
            call_answered(gw)
            sigterm(gw)
            result = caller.result(timeout=45)
            result.check()  # the gateway's BYE reached it, and its 200 was taken
            assert exit_code(gw, timeout=15) == 0
            assert "drain_timeout reached: ending 1 call(s)" in gw.log_text()
            callee = alice.wait(timeout=10)
    callee.check()
    (bye,) = callee.received("BYE ")
    assert "cause=503" in bye and "gateway shutting down" in bye, bye
    (caller_bye,) = result.received("BYE ")
    assert "cause=503" in caller_bye, caller_bye


@pytest.mark.parametrize("drain_timeout", [600, 0])
def test_a_second_sigterm_or_none_to_drain_stops_at_once_ending_calls(
    tmp_path: Path, drain_timeout: float
) -> None:
    """Without a drain (0), or at a second SIGTERM, the gateway stops at once; the call still
    up is ended with its BYE rather than left to the phones' timers."""
    gw = gateway(tmp_path, drain_timeout=drain_timeout)
    with gw:
        alice = SippUas("uas_answer.xml", workdir=tmp_path, timeout=40, call_duration_ms=60_000)
        register(gw, tmp_path, "udp", alice.port)
        with alice, ThreadPoolExecutor(1) as pool:
            caller = call_alice(pool, gw, tmp_path, "uac_call_remote_bye.xml", timeout=30)
            call_answered(gw)
            sigterm(gw)
            if drain_timeout:
                gw.wait_for_log("draining: new calls and other requests outside calls refused")
                assert exit_code(gw, timeout=1) is None
                sigterm(gw)
            assert exit_code(gw, timeout=10) == 0
            assert "received SIGTERM: shutting down" in gw.log_text()
            result = caller.result(timeout=45)
            result.check()
            callee = alice.wait(timeout=10)
    callee.check()
    for received in (callee, result):
        (bye,) = received.received("BYE ")
        assert "cause=503" in bye and "gateway shutting down" in bye, bye
