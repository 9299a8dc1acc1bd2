"""Calls between a WebSocket softphone (RFC 7118) and sipp on UDP, through ``voipgw run``.

No WebSocket SIP user agent is packaged in Debian; the browser's part is played by
``tests/interop/harness/ws_client.py`` on the ``websockets`` package (an independent WebSocket
implementation), writing SIP the way JsSIP does (``.invalid`` Via and Contact hosts). The other
side is a real sipp on UDP. Both directions, each with its BYE from the other end, over ws and
wss; during a call, bad WebSocket connections are refused and the call is not disturbed.
"""

from __future__ import annotations

import importlib.metadata
import re
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.interop.harness import (
    LOOPBACK,
    GatewayProcess,
    SippUas,
    TestPki,
    free_port,
    free_port_pair,
    run_sipp_uac,
)
from tests.interop.harness.ws_client import SDP, WsSipClient

pytestmark = pytest.mark.interop

ALICE = ("alice", "wonderland")  # the WebSocket softphone
BOB = ("bob", "builder")  # sipp
ORIGIN = "https://phone.example"


def entry_points_env(workdir: Path) -> dict[str, str]:
    """``PYTHONPATH`` for a gateway process that must find the ws and wss entry points: none
    when they are installed; else a dist-info naming them (an editable install made before
    they existed has the old entry points)."""
    if importlib.metadata.entry_points(group="voipgw.plugins", name="wss"):
        return {}
    site = workdir / "entry-points"
    info = site / "voipgw_websocket_entry_points-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: voipgw-websocket-entry-points\nVersion: 0\n"
    )
    (info / "entry_points.txt").write_text(
        "[voipgw.plugins]\n"
        "ws = gateway.plugins.transports.ws\n"
        "wss = gateway.plugins.transports.wss\n"
    )
    return {"PYTHONPATH": str(site)}


class WsGateway:
    """A ``GatewayProcess`` with ws and wss listeners (wss with a certificate of a test CA)."""

    def __init__(self, workdir: Path) -> None:
        pki = TestPki(workdir / "pki")
        ca = pki.ca("Test CA")
        issued = ca.issue("gateway", hosts=[LOOPBACK, "localhost"])
        self.ssl_context = ssl.create_default_context(cafile=str(ca.certificate))
        self.ws_port = free_port("tcp")
        self.wss_port = free_port("tcp")
        port = free_port_pair()
        listen = [
            f"udp:{LOOPBACK}:{port}",
            f"tcp:{LOOPBACK}:{port}",
            f"ws:{LOOPBACK}:{self.ws_port}",
            f"wss:{LOOPBACK}:{self.wss_port}",
        ]
        self.process = GatewayProcess(
            workdir,
            accounts=dict([ALICE, BOB]),
            port=port,
            settings={
                "sip": {"listen": listen},
                "plugins": {"enable": ["udp", "tcp", "ws", "wss", "sdes", "dtls"]},
            },
            extra_toml=(
                f'[plugins.ws]\nallowed_origins = ["{ORIGIN}"]\n\n'
                f'[plugins.wss]\nallowed_origins = ["{ORIGIN}"]\n'
                f'certificate = "{issued.certificate}"\nprivate_key = "{issued.key}"\n'
            ),
            env=entry_points_env(workdir),
            # refusals_during_a_call sends bytes that are no TLS to the wss listener on purpose.
            allowed_warnings=[r"wss: handshake from \S+ failed \(encryption-only mode\): wrong"],
        )

    def url(self, transport: str) -> str:
        port = self.ws_port if transport == "ws" else self.wss_port
        return f"{transport}://{LOOPBACK}:{port}/"

    def client(self, transport: str, **kwargs: Any) -> WsSipClient:
        context = self.ssl_context if transport == "wss" else None
        return WsSipClient.connect(self.url(transport), ssl_context=context, **kwargs)

    def __enter__(self) -> WsGateway:
        self.process.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.__exit__(*exc)  # type: ignore[arg-type]


def register_sipp(gw: GatewayProcess, workdir: Path, port: int) -> None:
    """REGISTER bob from a sipp that exits, with his Contact on ``port`` where a UAS answers."""
    result = run_sipp_uac(
        "register_auth.xml",
        gw.address,
        workdir=workdir,
        service="bob",
        auth=BOB,
        port=port,
    )
    result.check()
    gw.wait_for_log(rf"registered: 1 binding\(s\) for {re.escape(gw.uri('bob'))} via udp:")


def refusals_during_a_call(wgw: WsGateway, transport: str) -> dict[str, Any]:
    """What the gateway does with bad WebSocket connections (each its own connection)."""
    seen: dict[str, Any] = {}
    with pytest.raises(InvalidStatus) as no_sip:
        wgw.client(transport, subprotocols=("chat",))
    seen["no_sip"] = no_sip.value.response.status_code
    with pytest.raises(InvalidStatus) as foreign:
        wgw.client(transport, origin="https://evil.example")
    seen["foreign"] = foreign.value.response.status_code
    with wgw.client(transport) as big:
        big.send("OPTIONS sip:x SIP/2.0\r\n" + "X: y\r\n" * 20000 + "\r\n")
        with pytest.raises(ConnectionClosed) as closed:
            big.recv()
        seen["big"] = closed.value.rcvd.code if closed.value.rcvd is not None else None
    port = wgw.ws_port if transport == "ws" else wgw.wss_port
    with socket.create_connection((LOOPBACK, port), timeout=5) as raw:
        raw.sendall(b"\x00\xff garbage \xfe\r\n\r\n" * 10)
        while raw.recv(4096):
            pass  # a 400 (ws) or a TLS alert (wss), then the gateway closes it
        seen["garbage_closed"] = True
    return seen


@pytest.mark.parametrize("transport", ["ws", "wss"])
def test_websocket_phone_calls_sipp_and_hangs_up(tmp_path: Path, transport: str) -> None:
    with WsGateway(tmp_path) as wgw:
        gw = wgw.process
        bob = SippUas("uas_answer.xml", workdir=tmp_path)
        register_sipp(gw, tmp_path, bob.port)
        with bob:
            with wgw.client(transport) as alice:
                assert alice.register(*ALICE, domain=gw.address).status == 200
                answer = alice.invite(*ALICE, callee="bob")
                assert answer.status == 200, answer.first_line
                alice.ack()
                seen = refusals_during_a_call(wgw, transport)
                bye = alice.bye()
            callee = bob.wait(timeout=10)
        callee.check()
    assert bye.status == 200
    assert seen["no_sip"] == 400
    assert seen["foreign"] == 403
    assert seen["big"] == 1009
    assert seen["garbage_closed"]
    # The browser's answer and sipp's INVITE both carry the gateway's relay, not each other.
    (invite,) = callee.received("INVITE ")
    assert invite.startswith(f"INVITE sip:bob@{LOOPBACK}:{bob.port}"), invite
    assert re.search(rf"^Via: SIP/2.0/UDP {re.escape(LOOPBACK)}:{gw.port}\b", invite, re.M)
    assert "c=IN IP4 127.0.0.1" in answer.body
    assert f"m=audio {bob.media_port} " not in answer.body  # the relay's port, not sipp's
    assert callee.received("BYE ")  # alice's hang-up reached sipp


@pytest.mark.parametrize("transport", ["ws", "wss"])
def test_sipp_calls_the_websocket_phone_and_hangs_up(tmp_path: Path, transport: str) -> None:
    with WsGateway(tmp_path) as wgw:
        gw = wgw.process
        with wgw.client(transport) as alice:
            assert alice.register(*ALICE, domain=gw.address).status == 200
            got: dict[str, Any] = {}

            def answer_the_call() -> None:
                invite = alice.recv(timeout=15)
                got["invite"] = invite
                alice.respond(invite, 180, "Ringing")
                alice.respond(invite, 200, "OK", body=SDP.format(port=40002))
                got["ack"] = alice.recv(timeout=10)
                bye = alice.recv(timeout=10)
                got["bye"] = bye
                alice.respond(bye, 200, "OK")

            phone = threading.Thread(target=answer_the_call)
            phone.start()
            caller = run_sipp_uac(
                "uac_call_auth.xml",
                gw.address,
                workdir=tmp_path,
                service="alice",
                caller="bob",
                auth=BOB,
            )
            phone.join(timeout=20)
    caller.check()
    invite = got["invite"]
    assert invite.method == "INVITE"
    # Over the registration's own connection, to its .invalid Contact (RFC 7118 §5).
    assert re.match(rf"INVITE sip:alice@\w+\.invalid;transport={transport} ", invite.first_line)
    assert (invite.get("Via") or "").startswith(f"SIP/2.0/{transport.upper()} {LOOPBACK}:")
    assert got["ack"].method == "ACK"
    assert got["bye"].method == "BYE"  # sipp's hang-up reached the phone
