"""SIPS on real sockets (RFC 3261 §26.2.2, RFC 5630): a Gateway in-process with a UDP and a
TLS listener on 127.0.0.1 port 0; alice registered over UDP, bob over TLS (trio.SSLStream on
the stdlib ssl module).

- alice's INVITE to ``sips:bob`` over UDP: 480 with warn-code 380, before any challenge;
- bob's INVITE to ``sips:alice`` over TLS: alice is only over UDP, so 480 with 380 and her
  socket gets nothing;
- bob's INVITE to ``sips:bob``: the gateway calls his TLS contact over his TLS connection, with
  a ``sips:`` Contact.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from gateway.core.auth.client import authorize
from gateway.core.config import from_mapping
from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.plugins import load_plugins
from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.serializer import serialize_message
from gateway.core.store.sqlite import SqliteStore
from tests.port_blocks import port_block_text

LOOPBACK = "127.0.0.1"
REALM = "voipgw.local"
PASSWORDS = {"alice": "wonderland-42", "bob": "builder-42"}


@asynccontextmanager
async def running_gateway(tmp_path: Path) -> AsyncIterator[tuple[int, int]]:
    """The gateway's (UDP port, TLS port)."""
    state = tmp_path / "state"
    store = SqliteStore.open(state)
    for user, password in PASSWORDS.items():
        store.accounts_add(user, password, REALM)
    store.close()
    config = from_mapping(
        {
            "gateway": {"state_dir": str(state), "realm": REALM},
            "sip": {"listen": ["udp:127.0.0.1:0", "tls:127.0.0.1:0"]},
            "media": {"ports": port_block_text(20)},
            "plugins": {"enable": ["udp", "tcp", "tls"]},
        }
    )
    gateway = Gateway(config, load_plugins(config), ids=SeededIds(23))
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve)
        ports = {listener.transport: listener.address[1] for listener in gateway.listeners}
        yield ports["udp"], ports["tls"]
        nursery.cancel_scope.cancel()


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


def warning_380(final: Response) -> bool:
    return final.status == 480 and (final.headers.get("Warning") or "").startswith("380 ")


async def test_sips_is_refused_without_tls_and_reaches_only_contacts_over_tls(
    tmp_path: Path,
) -> None:
    async with running_gateway(tmp_path) as (udp_port, tls_port):
        udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await udp.bind((LOOPBACK, 0))
        alice_port = udp.getsockname()[1]
        gw_udp = (LOOPBACK, udp_port)

        async def udp_final(sent: Request) -> Response:
            await udp.sendto(serialize_message(sent), gw_udp)
            with trio.fail_after(5):
                while True:
                    data, _ = await udp.recvfrom(65535)
                    message = parse_message_untrusted(data)
                    if isinstance(message, Response) and message.status >= 200:
                        return message

        contact = f"sip:alice@{LOOPBACK}:{alice_port}"
        register = request(
            "REGISTER", f"sip:{LOOPBACK}:{udp_port}", "alice", "UDP", contact, 1, "ra"
        )
        challenge = await udp_final(register)
        assert challenge.status == 401
        assert (await udp_final(authorized(register, challenge, "alice"))).status == 200

        # Over UDP to a sips: URI: refused at once, not challenged.
        invite = request(
            "INVITE", f"sips:bob@{LOOPBACK}:{tls_port}", "alice", "UDP", contact, 1, "c1"
        )
        assert warning_380(await udp_final(invite))

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        tcp = await trio.open_tcp_stream(LOOPBACK, tls_port)
        bob = TlsPeer(trio.SSLStream(tcp, context, server_hostname=LOOPBACK))
        bob_contact = f"sip:bob@{LOOPBACK}:5999;transport=tls"
        register = request(
            "REGISTER", f"sip:{LOOPBACK}:{tls_port}", "bob", "TLS", bob_contact, 1, "rb"
        )
        assert (await bob.exchange(register, "bob")).status == 200

        # bob over TLS to sips:alice, who is only over UDP: 480 with 380, alice not rung.
        invite = request(
            "INVITE", f"sips:alice@{LOOPBACK}:{tls_port}", "bob", "TLS", bob_contact, 1, "c2"
        )
        assert warning_380(await bob.exchange(invite, "bob"))
        with trio.move_on_after(0.3):  # anything sent to alice went before the 480
            data, _ = await udp.recvfrom(65535)
            raise AssertionError(f"alice got {data[:40]!r}")

        # bob over TLS to sips:bob: his TLS contact rings, over his connection, Contact sips:.
        invite = request(
            "INVITE", f"sips:bob@{LOOPBACK}:{tls_port}", "bob", "TLS", bob_contact, 1, "c3"
        )
        await bob.send(invite)
        challenge = await bob.final()
        assert challenge.status == 407
        await bob.send(ack_for(invite, challenge))
        await bob.send(authorized(invite, challenge, "bob"))
        while not isinstance(incoming := await bob.next_message(), Request):
            pass
        assert incoming.method == "INVITE"
        assert incoming.headers.get("Contact") == f"<sips:voipgw@{LOOPBACK}:{tls_port}>"
        await bob.send(make_response(incoming, 486, "Busy Here", to_tag="busy1"))
        assert (await bob.final()).status == 486
        await bob.stream.aclose()
        udp.close()


async def test_sips_requests_other_than_invite_need_tls(tmp_path: Path) -> None:
    """OPTIONS, SUBSCRIBE and MESSAGE to ``sips:`` over UDP and a REGISTER binding a ``sips:``
    Contact over UDP: 480 with 380. bob's ``sips:`` MESSAGE over TLS: refused for alice (only on
    UDP, her socket gets nothing), relayed to bob's own TLS contact over his connection."""
    async with running_gateway(tmp_path) as (udp_port, tls_port):
        udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await udp.bind((LOOPBACK, 0))
        alice_port = udp.getsockname()[1]

        async def udp_final(sent: Request) -> Response:
            await udp.sendto(serialize_message(sent), (LOOPBACK, udp_port))
            with trio.fail_after(5):
                while True:
                    data, _ = await udp.recvfrom(65535)
                    message = parse_message_untrusted(data)
                    if isinstance(message, Response) and message.status >= 200:
                        return message

        contact = f"sip:alice@{LOOPBACK}:{alice_port}"
        sips_bob = f"sips:bob@{LOOPBACK}:{tls_port}"
        for n, method in enumerate(("OPTIONS", "SUBSCRIBE", "MESSAGE")):
            sent = request(method, sips_bob, "alice", "UDP", contact, 1, f"u{n}")
            assert warning_380(await udp_final(sent)), method  # before any challenge
        register = request(
            "REGISTER", f"sip:{LOOPBACK}:{udp_port}", "alice", "UDP", contact, 1, "ra"
        )
        assert (await udp_final(register)).status == 401
        sips_register = request(
            "REGISTER",
            f"sip:{LOOPBACK}:{udp_port}",
            "alice",
            "UDP",
            f"sips:alice@{LOOPBACK}:{alice_port}",
            1,
            "rs",
        )
        challenge = await udp_final(sips_register)
        assert warning_380(await udp_final(authorized(sips_register, challenge, "alice")))
        challenge = await udp_final(register)
        assert (await udp_final(authorized(register, challenge, "alice"))).status == 200

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        tcp = await trio.open_tcp_stream(LOOPBACK, tls_port)
        bob = TlsPeer(trio.SSLStream(tcp, context, server_hostname=LOOPBACK))
        bob_contact = f"sip:bob@{LOOPBACK}:5999;transport=tls"
        register = request(
            "REGISTER", f"sip:{LOOPBACK}:{tls_port}", "bob", "TLS", bob_contact, 1, "rb"
        )
        assert (await bob.exchange(register, "bob")).status == 200

        to_alice = request(
            "MESSAGE", f"sips:alice@{LOOPBACK}:{tls_port}", "bob", "TLS", bob_contact, 1, "m1"
        ).with_body(b"for alice", "text/plain")
        assert warning_380(await bob.exchange(to_alice, "bob"))
        with trio.move_on_after(0.3):
            data, _ = await udp.recvfrom(65535)
            raise AssertionError(f"alice got {data[:40]!r}")

        to_bob = request("MESSAGE", sips_bob, "bob", "TLS", bob_contact, 1, "m2").with_body(
            b"for bob", "text/plain"
        )
        await bob.send(to_bob)
        challenge = await bob.final()
        assert challenge.status == 407
        await bob.send(authorized(to_bob, challenge, "bob"))
        while not isinstance(relayed := await bob.next_message(), Request):
            pass
        assert relayed.method == "MESSAGE" and relayed.body == b"for bob"
        await bob.send(make_response(relayed, 200, "OK", to_tag="m2ok"))
        assert (await bob.final()).status == 200
        await bob.stream.aclose()
        udp.close()
