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

from gateway.core.config import from_mapping
from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.plugins import load_plugins
from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.serializer import serialize_message
from gateway.core.store.sqlite import SqliteStore
from tests.integration.tls.tls_peers import (
    LOOPBACK,
    PASSWORDS,
    REALM,
    TlsPeer,
    ack_for,
    authorized,
    request,
)
from tests.port_blocks import PortLease


@asynccontextmanager
async def running_gateway(tmp_path: Path) -> AsyncIterator[tuple[int, int]]:
    """The gateway's (UDP port, TLS port)."""
    state = tmp_path / "state"
    store = SqliteStore.open(state)
    for user, password in PASSWORDS.items():
        store.accounts_add(user, password, REALM)
    store.close()
    lease = PortLease()  # its media ports, given back once it has stopped
    config = from_mapping(
        {
            "gateway": {"state_dir": str(state), "realm": REALM},
            "sip": {"listen": ["udp:127.0.0.1:0", "tls:127.0.0.1:0"]},
            "media": {"ports": lease.text(20)},
            "plugins": {"enable": ["udp", "tcp", "tls"]},
        }
    )
    try:
        gateway = Gateway(config, load_plugins(config), ids=SeededIds(23))
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            ports = {listener.transport: listener.address[1] for listener in gateway.listeners}
            yield ports["udp"], ports["tls"]
            nursery.cancel_scope.cancel()
    finally:
        lease.release()


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
            while True:
                data, _ = await udp.recvfrom(65535)
                # alice never ACKed her own 480 (c1): the gateway resends it over UDP (RFC 3261
                # §17.2.1, Timer G), and a slow run puts a resend in this window. Only a
                # request would mean alice was rung.
                if isinstance(parse_message_untrusted(data), Request):
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
