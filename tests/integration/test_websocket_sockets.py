"""The ws and wss transports on real sockets, the gateway in this process, the ``websockets``
package as the client (an independent WebSocket implementation, run in a thread).

REGISTER with digest over WebSocket; calls to a registered WebSocket client go down its
connection and fail with 480 once it is closed; refusals (no ``sip`` subprotocol, a foreign
Origin, an oversize message, garbage, unmasked frames, sockets that never finish the handshake,
too many connections) close only the offending connection.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.core.config import from_mapping
from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.plugins import load_plugins
from gateway.core.store.sqlite import SqliteStore
from gateway.plugins.transports import ws as ws_plugin
from gateway.plugins.transports import wss as wss_plugin
from tests.interop.harness.pki import TestPki
from tests.interop.harness.ws_client import WsSipClient
from tests.port_blocks import ModuleBlock

# The relay's ports: this process's own (tests/port_blocks.py), not the gateway's default range,
# which another test run's gateway may bind as well (tests/media_range_guard.py).
MEDIA_PORTS = ModuleBlock(20)

REALM = "voipgw.local"
ORIGIN = "https://phone.example"

Body = Callable[[Gateway, dict[str, int]], Awaitable[None]]


def state_with_accounts(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    store = SqliteStore.open(state)
    store.accounts_add("alice", "wonderland", REALM)
    store.accounts_add("bob", "builder", REALM)
    store.close()
    return state


async def run_gateway(
    tmp_path: Path,
    body: Body,
    *,
    ws: dict[str, Any] | None = None,
    wss: dict[str, Any] | None = None,
) -> None:
    """A gateway on UDP, ws and (with ``wss`` settings) wss, all on 127.0.0.1 port 0; ``body``
    gets it and the bound ports by transport."""
    listen = ["udp:127.0.0.1:0", "ws:127.0.0.1:0"]
    enable = ["udp", "ws"]
    plugins: dict[str, Any] = {"ws": {"allowed_origins": [ORIGIN], **(ws or {})}}
    if wss is not None:
        listen.append("wss:127.0.0.1:0")
        enable.append("wss")
        plugins["wss"] = wss
    config = from_mapping(
        {
            "gateway": {
                "state_dir": str(state_with_accounts(tmp_path)),
                "digest_algorithms": ["MD5"],
            },
            "sip": {"listen": listen},
            "media": {"ports": MEDIA_PORTS.text()},
            "plugins": {"enable": enable, **plugins},
        }
    )
    # The entry points may not be installed (an editable install from before they existed).
    plugins_loaded = load_plugins(config, extra=[("ws", ws_plugin), ("wss", wss_plugin)])
    gw = Gateway(config, plugins_loaded, ids=SeededIds(11))
    async with trio.open_nursery() as nursery:
        await nursery.start(gw.serve)
        ports = {listener.transport: listener.address[1] for listener in gw.listeners}
        await body(gw, ports)
        nursery.cancel_scope.cancel()


def in_thread(function: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    return trio.to_thread.run_sync(function, *args)


def ws_flows(gw: Gateway) -> list[Any]:
    return [flow for flow in gw.flows if flow.transport in ("ws", "wss")]


async def test_register_over_ws_with_digest(tmp_path: Path) -> None:
    async def body(gw: Gateway, ports: dict[str, int]) -> None:
        def work() -> tuple[int | None, str, str]:
            with WsSipClient.connect(f"ws://127.0.0.1:{ports['ws']}/", origin=ORIGIN) as alice:
                ok = alice.register("alice", "wonderland", domain=f"127.0.0.1:{ports['udp']}")
                return ok.status, ok.get("Via") or "", ok.get("Contact") or ""

        status, via, contact = await in_thread(work)
        assert status == 200
        # The response came back over the connection: its Via is the client's, received-stamped.
        assert via.startswith("SIP/2.0/WS ") and ".invalid;" in via and "received=127.0.0.1" in via
        assert ".invalid;transport=ws" in contact
        assert gw.store is not None
        (binding,) = gw.store.bindings_for_account("alice")
        assert binding.flow.transport == "ws"
        assert binding.contact.endswith(".invalid;transport=ws")

    await run_gateway(tmp_path, body)


async def test_calls_reach_a_ws_client_over_its_connection_and_480_once_it_is_gone(
    tmp_path: Path,
) -> None:
    async def body(gw: Gateway, ports: dict[str, int]) -> None:
        url = f"ws://127.0.0.1:{ports['ws']}/"
        domain = f"127.0.0.1:{ports['udp']}"

        def work() -> tuple[int | None, str, int | None]:
            alice = WsSipClient.connect(url)
            with WsSipClient.connect(url) as bob:
                assert alice.register("alice", "wonderland", domain=domain).status == 200
                assert bob.register("bob", "builder", domain=domain).status == 200
                # bob's INVITE goes out; alice gets hers over her own WebSocket.
                bob_result: list[Any] = []
                caller = threading.Thread(
                    target=lambda: bob_result.append(bob.invite("bob", "builder", callee="alice"))
                )
                caller.start()
                invite = alice.recv(timeout=10)
                while invite.method != "INVITE":
                    invite = alice.recv(timeout=10)
                alice.respond(invite, 486, "Busy Here")
                ack = alice.recv(timeout=10)
                caller.join(timeout=10)
                busy = bob_result[0]
                first_line = invite.first_line
                alice.close()
                # alice's connection is gone: her binding cannot be reached any more.
                deadline = time.monotonic() + 5
                while len(ws_flows(gw)) > 1 and time.monotonic() < deadline:
                    time.sleep(0.01)  # polling until the gateway has seen the close
                gone = bob.invite("bob", "builder", callee="alice")
                assert ack.method == "ACK"
                return busy.status, first_line, gone.status

        busy, first_line, gone = await in_thread(work)
        assert first_line.startswith("INVITE sip:alice@") and ".invalid;transport=ws" in first_line
        assert busy == 486
        assert gone == 480

    await run_gateway(tmp_path, body)


async def test_bad_connections_are_refused_and_a_registered_one_goes_on(tmp_path: Path) -> None:
    async def body(gw: Gateway, ports: dict[str, int]) -> None:
        url = f"ws://127.0.0.1:{ports['ws']}/"
        domain = f"127.0.0.1:{ports['udp']}"

        def work() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            with WsSipClient.connect(url) as alice:
                assert alice.register("alice", "wonderland", domain=domain).status == 200
                with pytest.raises(InvalidStatus) as no_sip:
                    WsSipClient.connect(url, subprotocols=("chat",))
                seen["no_sip"] = no_sip.value.response.status_code
                with pytest.raises(InvalidStatus) as foreign:
                    WsSipClient.connect(url, origin="https://evil.example")
                seen["foreign"] = foreign.value.response.status_code
                with WsSipClient.connect(url) as big:
                    big.send("OPTIONS sip:x SIP/2.0\r\n" + "X: y\r\n" * 20000 + "\r\n")
                    with pytest.raises(ConnectionClosed) as closed:
                        big.recv()
                    assert closed.value.rcvd is not None
                    seen["big"] = closed.value.rcvd.code
                with socket.create_connection(("127.0.0.1", ports["ws"]), timeout=5) as raw:
                    raw.sendall(b"\x16\x03\x01\x00\xff" + bytes(300) + b"\r\n\r\n")
                    seen["garbage"] = _read_all(raw)
                seen["unmasked"] = _unmasked_frame_answer(ports["ws"])
                # alice's connection is untouched: OPTIONS is answered over it.
                alice.request("OPTIONS", f"sip:{domain}", to=f"sip:{domain}")
                seen["options"] = alice.final().status
            return seen

        seen = await in_thread(work)
        assert seen["no_sip"] == 400
        assert seen["foreign"] == 403
        assert seen["big"] == 1009
        assert seen["garbage"].startswith(b"HTTP/1.1 400 ")
        # A close frame (opcode 8) with status 1002, protocol error (RFC 6455 §7.4.1).
        assert seen["unmasked"][0] == 0x88 and seen["unmasked"][2:4] == (1002).to_bytes(2, "big")
        assert seen["options"] == 200

    await run_gateway(tmp_path, body)


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the gateway closes the connection (or 5 s)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _unmasked_frame_answer(port: int) -> bytes:
    """A correct handshake, then an unmasked frame (RFC 6455 §5.1 forbids it from a client):
    what the gateway sends after its 101."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: sip\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += raw.recv(1)
        assert head.startswith(b"HTTP/1.1 101 "), head
        raw.sendall(b"\x81\x05hello")
        return _read_all(raw)


async def test_idle_sockets_are_capped_and_timed_out(tmp_path: Path) -> None:
    async def body(gw: Gateway, ports: dict[str, int]) -> None:
        def work() -> tuple[float, float]:
            first = socket.create_connection(("127.0.0.1", ports["ws"]), timeout=5)
            second = socket.create_connection(("127.0.0.1", ports["ws"]), timeout=5)
            try:
                # Both are accepted and wait for their handshake before a third arrives.
                deadline = time.monotonic() + 5
                transport = gw.plugins.transports.get("ws")
                while transport.connections < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                start = time.monotonic()
                with socket.create_connection(("127.0.0.1", ports["ws"]), timeout=5) as third:
                    assert third.recv(1) == b""  # closed at once: max_connections
                refused_after = time.monotonic() - start
                assert first.recv(1) == b""  # closed when handshake_timeout ran out
                timed_out_after = time.monotonic() - start
            finally:
                first.close()
                second.close()
            return refused_after, timed_out_after

        refused_after, timed_out_after = await in_thread(work)
        assert refused_after < 0.5
        assert 0.5 <= timed_out_after < 4.5

    await run_gateway(tmp_path, body, ws={"max_connections": 2, "handshake_timeout": 1.0})


async def test_register_over_wss(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    ca = pki.ca("Test CA")
    server = ca.issue("gateway", hosts=["127.0.0.1", "localhost"])
    context = ssl.create_default_context(cafile=str(ca.certificate))

    async def body(gw: Gateway, ports: dict[str, int]) -> None:
        def work() -> tuple[int | None, str]:
            url = f"wss://127.0.0.1:{ports['wss']}/"
            with WsSipClient.connect(url, ssl_context=context) as alice:
                ok = alice.register("alice", "wonderland", domain=f"127.0.0.1:{ports['udp']}")
                return ok.status, ok.get("Via") or ""

        status, via = await in_thread(work)
        assert status == 200
        assert via.startswith("SIP/2.0/WSS ")
        assert gw.store is not None
        (binding,) = gw.store.bindings_for_account("alice")
        assert binding.flow.transport == "wss"

    await run_gateway(
        tmp_path,
        body,
        wss={"certificate": str(server.certificate), "private_key": str(server.key)},
    )


async def test_wss_without_a_certificate_serves_the_generated_one(tmp_path: Path) -> None:
    async def body(gw: Gateway, ports: dict[str, int]) -> None:
        generated = Path(gw.config.gateway.state_dir) / "tls" / "gateway.crt"
        # The generated certificate is its own CA; pinning it is how a client trusts it.
        context = ssl.create_default_context(cafile=str(generated))

        def work() -> int | None:
            url = f"wss://127.0.0.1:{ports['wss']}/"
            with WsSipClient.connect(url, ssl_context=context) as alice:
                return alice.register(
                    "alice", "wonderland", domain=f"127.0.0.1:{ports['udp']}"
                ).status

        assert await in_thread(work) == 200

    await run_gateway(tmp_path, body, wss={})


async def test_a_failed_wss_handshake_is_logged_as_wss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """wss shares the tls transport's handshake; its log lines name wss, not tls."""
    caplog.set_level(logging.WARNING, logger="gateway.plugins.transports.tls")

    async def body(gw: Gateway, ports: dict[str, int]) -> None:
        def plain_http() -> None:  # no TLS at all on the wss port
            with socket.create_connection(("127.0.0.1", ports["wss"]), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                while sock.recv(4096):
                    pass

        await in_thread(plain_http)
        with trio.fail_after(5):
            while "handshake from" not in caplog.text:
                await trio.sleep(0.01)

    await run_gateway(tmp_path, body, wss={})
    assert re.search(r"wss: handshake from 127\.0\.0\.1:\d+ failed", caplog.text)
    assert "tls: handshake" not in caplog.text
