"""The two ends of the tls transport's socket tests: a Gateway in-process with a TLS listener
on port 0 (:func:`running_gateway`), clients built on the stdlib ssl module (trio.SSLStream)
that send OPTIONS over it, TLS servers standing in for trunks (:func:`trunk_server`), and a
stand-in for a call on a flow (:class:`FakeCall`) for the tests that revoke a certificate, and
SIP peers that register and call over TLS (:class:`TlsPeer`, :func:`request`, :func:`authorized`).
Helpers only: no test is collected from this module."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
import trio

from gateway.core.auth.client import authorize
from gateway.core.config import from_mapping
from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.plugins import load_plugins
from gateway.core.sip.message import Request, Response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.serializer import serialize_message
from gateway.core.transport.flows import Flow
from gateway.plugins.transports.tls import TlsTransport
from tests.interop.harness.pki import Issued
from tests.port_blocks import PortLease

LOOPBACK = "127.0.0.1"
TLS_LOG = "gateway.plugins.transports.tls"
REALM = "voipgw.local"
PASSWORDS = {"alice": "wonderland-42", "bob": "builder-42"}


@asynccontextmanager
async def running_gateway(
    state: Path, tls: Mapping[str, Any], *, listen: tuple[str, ...] = ("tls:127.0.0.1:0",)
) -> AsyncIterator[Gateway]:
    lease = PortLease()  # its media ports, given back once it has stopped
    config = from_mapping(
        {
            "gateway": {"state_dir": str(state)},
            "sip": {"listen": list(listen)},
            "media": {"ports": lease.text(20)},
            "plugins": {"enable": ["udp", "tcp", "tls"], "tls": dict(tls)},
        }
    )
    try:
        gateway = Gateway(config, load_plugins(config), ids=SeededIds(4))
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            yield gateway
            nursery.cancel_scope.cancel()
    finally:
        lease.release()


def tls_port(gateway: Gateway) -> int:
    return next(lst.address[1] for lst in gateway.listeners if lst.transport == "tls")


def tls_transport(gateway: Gateway) -> TlsTransport:
    transport = gateway.plugins.transports.get("tls")
    assert isinstance(transport, TlsTransport)
    return transport


def tls_flows(gateway: Gateway) -> list[Flow]:
    return [flow for flow in gateway.flows if flow.transport == "tls"]


def client_context(
    *,
    trust: Path | None = None,
    certificate: Issued | None = None,
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.maximum_version = maximum
    if trust is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(trust)
    if certificate is not None:
        context.load_cert_chain(certificate.certificate, certificate.key)
    return context


def options(branch: str = "z9hG4bKtls1") -> bytes:
    return (
        f"OPTIONS sip:{LOOPBACK} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {LOOPBACK}:5999;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{LOOPBACK}>;tag=probe1\r\n"
        f"To: <sip:{LOOPBACK}>\r\n"
        f"Call-ID: {branch}@{LOOPBACK}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def connect(port: int, context: ssl.SSLContext) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream(LOOPBACK, port)
    return trio.SSLStream(tcp, context, server_hostname=LOOPBACK)


async def options_over(stream: trio.SSLStream[trio.SocketStream]) -> Response:
    """Send OPTIONS and read the response (raises BrokenResourceError if the server refuses)."""
    with trio.fail_after(5):
        await stream.send_all(options())
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            data = await stream.receive_some(65536)
            if not data:
                raise trio.BrokenResourceError("server closed the connection")
            buffer += data
    response = parse_message_untrusted(buffer)
    assert isinstance(response, Response)
    return response


async def refused(port: int, context: ssl.SSLContext) -> bool:
    """True when the gateway refuses this client: at its handshake or, in TLS 1.3 where the
    client finishes first, at the first read."""
    stream = await connect(port, context)
    try:
        await options_over(stream)
    except trio.BrokenResourceError:
        return True
    finally:
        await trio.aclose_forcefully(stream)
    return False


def failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == TLS_LOG and "failed" in r.message]


@attrs.define
class TrunkServer:
    """A TLS server on 127.0.0.1 (stdlib ssl) standing in for a trunk."""

    port: int = 0
    handshakes: int = 0
    server_names: list[str | None] = attrs.Factory(list)
    client_certificates: list[bytes | None] = attrs.Factory(list)


@asynccontextmanager
async def trunk_server(
    certificate: Issued, *, require_client_ca: Path | None = None
) -> AsyncIterator[TrunkServer]:
    record = TrunkServer()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.certificate, certificate.key)
    if require_client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(require_client_ca)

    def sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        record.server_names.append(name)

    context.sni_callback = sni  # type: ignore[assignment]

    async def handle(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            await stream.do_handshake()
            record.handshakes += 1
            record.client_certificates.append(stream.getpeercert(binary_form=True))
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass

    listeners = await trio.open_ssl_over_tcp_listeners(0, context, host=LOOPBACK)
    record.port = listeners[0].transport_listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        yield record
        nursery.cancel_scope.cancel()


async def closed_by_the_gateway(stream: trio.SSLStream[trio.SocketStream]) -> bool:
    with trio.fail_after(5):
        try:
            return await stream.receive_some(65536) == b""  # close_notify, then EOF
        except trio.BrokenResourceError:
            return True


class FakeCall:
    """Stands in for a call in the call manager: its legs' flows, its INVITE, and how the
    gateway ended it (a real call over these sockets would need digest, SDP and media)."""

    def __init__(self, name: str, flow: Flow, invite: Request) -> None:
        self.id = name
        self.a = SimpleNamespace(flow=flow, invite=invite)
        self.b_legs: list[object] = []
        self.psap_callback = False
        self.ended: list[str] = []

    def end_by_gateway(self, reason: str) -> None:
        self.ended.append(reason)


def invite_to(number: str) -> Request:
    request = parse_message_untrusted(
        (
            f"INVITE sip:{number}@{LOOPBACK} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {LOOPBACK}:5999;branch=z9hG4bK{number}\r\n"
            f"From: <sip:phone@{LOOPBACK}>;tag=a\r\nTo: <sip:{number}@{LOOPBACK}>\r\n"
            f"Call-ID: {number}@{LOOPBACK}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(request, Request)
    return request


# SIP peers on TLS connections that register and call (test_sips_sockets.py,
# test_tls_call_protection.py)


def request(
    method: str, uri: str, user: str, transport: str, contact: str, cseq: int, call_id: str
) -> Request:
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {LOOPBACK}:5999;branch=z9hG4bK{call_id}{cseq};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{LOOPBACK}>;tag={user}1\r\n"
        f"To: <{uri if method != 'REGISTER' else f'sip:{user}@{uri[4:]}'}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Contact: <{contact}>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    parsed = parse_message_untrusted(text.encode())
    assert isinstance(parsed, Request)
    return parsed


def authorized(sent: Request, challenge: Response, user: str) -> Request:
    again = sent.with_headers(
        sent.headers.set("CSeq", f"{sent.cseq.number + 1} {sent.method}").set(
            "Via", f"SIP/2.0/TLS {LOOPBACK}:5999;branch=z9hG4bK{sent.call_id}x;rport"
        )
    )
    answered = authorize(again, challenge, username=user, password=PASSWORDS[user], cnonce="c0")
    assert answered is not None
    return answered


class TlsPeer:
    """A SIP peer on one TLS connection: sends messages, reads them one by one."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, message: Request | Response) -> None:
        await self.stream.send_all(serialize_message(message))

    async def next_message(self) -> Request | Response:
        with trio.fail_after(5):
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end != -1:
                    head = self.buffer[:end].decode()
                    length = next(
                        (
                            int(line.split(":", 1)[1])
                            for line in head.split("\r\n")
                            if line.lower().startswith(("content-length:", "l:"))
                        ),
                        0,
                    )
                    total = end + 4 + length
                    if len(self.buffer) >= total:
                        data, self.buffer = self.buffer[:total], self.buffer[total:]
                        return parse_message_untrusted(data)
                self.buffer += await self.stream.receive_some(65536)

    async def final(self) -> Response:
        while True:
            message = await self.next_message()
            if isinstance(message, Response) and message.status >= 200:
                return message

    async def exchange(self, sent: Request, user: str) -> Response:
        """Send ``sent``; answer one challenge; the final response."""
        await self.send(sent)
        final = await self.final()
        if final.status in (401, 407):
            if sent.method == "INVITE":
                await self.send(ack_for(sent, final))
            await self.send(authorized(sent, final, user))
            final = await self.final()
        return final


def ack_for(invite: Request, final: Response) -> Request:
    """The ACK of a non-2xx final response (RFC 3261 §17.1.1.3)."""
    text = (
        f"ACK {invite.uri} SIP/2.0\r\n"
        f"Via: {invite.headers.get('Via')}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {invite.headers.get('From')}\r\n"
        f"To: {final.headers.get('To')}\r\n"
        f"Call-ID: {invite.call_id}\r\n"
        f"CSeq: {invite.cseq.number} ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    parsed = parse_message_untrusted(text.encode())
    assert isinstance(parsed, Request)
    return parsed
