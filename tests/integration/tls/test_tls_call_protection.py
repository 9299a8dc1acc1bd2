"""What a call's record and its protection line say of its TLS legs, on real sockets: a Gateway
in-process with a TLS listener on 127.0.0.1 port 0 (server-only mode, the phone vendor's CA in
``ca_bundles``), two phones on the stdlib ssl module, registered over TLS:

- alice presents a certificate the CA issued: her leg says her certificate was verified;
- bob presents none: his leg says he is not authenticated by a certificate (digest only, over
  a TLS connection that authenticated the gateway alone);
- the record says who opened each connection (``tls``) and who the leg is with, and the line
  keeps "signalling TLS" first (operators grep it);
- a call to a TLS trunk (a TLS server on the stdlib ssl module answering the INVITE): the
  gateway opened that connection, and the line says the trunk's certificate was verified for
  the name it had to carry (``[plugins.tls] peers``).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import trio

from gateway.core.calls.protection import describe_leg
from gateway.core.config import from_mapping
from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.plugins import load_plugins
from gateway.core.sip.message import Request, make_response
from gateway.core.store.sqlite import SqliteStore
from tests.integration.tls.tls_peers import (
    LOOPBACK,
    PASSWORDS,
    REALM,
    TlsPeer,
    ack_for,
    authorized,
    client_context,
    connect,
    request,
    tls_port,
)
from tests.interop.harness.pki import TestPki
from tests.port_blocks import PortLease

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@asynccontextmanager
async def running_gateway(
    tmp_path: Path, ca: Path, trunk_port: int | None = None
) -> AsyncIterator[Gateway]:
    state = tmp_path / "state"
    store = SqliteStore.open(state)
    for user, password in PASSWORDS.items():
        store.accounts_add(user, password, REALM, media_policy="rtp-only")
    store.close()
    tls: dict[str, object] = {"mode": "server-only", "ca_bundles": [str(ca)]}
    trunks: list[dict[str, object]] = []
    if trunk_port is not None:
        tls["system_ca_for_trunks"] = False
        tls["peers"] = {f"127.0.0.1:{trunk_port}": "trunk.example"}
        trunks.append(
            {
                "name": "carrier",
                "address": f"tls:127.0.0.1:{trunk_port}",
                "prefixes": [""],
                "allowed_sources": [],  # the phones are on 127.0.0.1 too
                "media_policy": "rtp-only",
            }
        )
    lease = PortLease()  # its media ports, given back once it has stopped
    config = from_mapping(
        {
            "gateway": {"state_dir": str(state), "realm": REALM},
            "sip": {"listen": ["tls:127.0.0.1:0"]},
            "media": {"ports": lease.text(20)},
            "plugins": {"enable": ["udp", "tcp", "tls"], "tls": tls},
            "trunks": trunks,
        }
    )
    try:
        gateway = Gateway(config, load_plugins(config), ids=SeededIds(32))
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            yield gateway
            nursery.cancel_scope.cancel()
    finally:
        lease.release()


async def test_a_tls_leg_says_whether_its_phone_was_authenticated_by_a_certificate(
    tmp_path: Path,
) -> None:
    pki = TestPki(tmp_path / "pki")
    ca = pki.ca("Phone Vendor Factory CA")
    alice_certificate = ca.issue("0004f2aabbcc", hosts=[])
    async with running_gateway(tmp_path, ca.certificate) as gateway:
        port = tls_port(gateway)
        alice = TlsPeer(await connect(port, client_context(certificate=alice_certificate)))
        bob = TlsPeer(await connect(port, client_context()))  # no client certificate
        contacts = {
            "alice": f"sip:alice@{LOOPBACK}:5998;transport=tls",
            "bob": f"sip:bob@{LOOPBACK}:5999;transport=tls",
        }
        for name, peer in (("alice", alice), ("bob", bob)):
            register = request(
                "REGISTER", f"sip:{LOOPBACK}:{port}", name, "TLS", contacts[name], 1, f"r{name}"
            )
            assert (await peer.exchange(register, name)).status == 200

        invite = request(
            "INVITE", f"sip:bob@{LOOPBACK}:{port}", "alice", "TLS", contacts["alice"], 1, "c1"
        )
        invite = invite.with_body(SDP.format(port=40000).encode(), "application/sdp")
        await alice.send(invite)
        challenge = await alice.final()
        assert challenge.status == 407
        await alice.send(ack_for(invite, challenge))
        await alice.send(authorized(invite, challenge, "alice"))
        while not isinstance(incoming := await bob.next_message(), Request):
            pass
        assert incoming.method == "INVITE"
        ok = make_response(incoming, 200, "OK", to_tag="bob1")
        ok = ok.with_headers(ok.headers.set("Contact", f"<{contacts['bob']}>"))
        await bob.send(ok.with_body(SDP.format(port=40002).encode(), "application/sdp"))
        answered = await alice.final()
        assert answered.status == 200

        assert gateway.calls is not None
        (call,) = gateway.calls.calls
        record = call.security_record()
        caller, callee = record["a"], record["b"]
        assert isinstance(caller, dict) and isinstance(callee, dict)
        # Both connections were opened by the phones: their certificates are client ones.
        assert caller["tls"] == {"opened_by": "peer", "server_name": None}
        assert callee["tls"] == {"opened_by": "peer", "server_name": None}
        assert (caller["peer_kind"], caller["peer_name"]) == ("account", "alice")
        assert (callee["peer_kind"], callee["peer_name"]) == ("account", "bob")
        assert caller["peer_certificate"]["verified"] is True
        assert callee["peer_certificate"] is None
        assert describe_leg(caller) == (
            "signalling TLS, phone's certificate verified; media RTP, not encrypted"
        )
        assert describe_leg(callee) == (
            "signalling TLS (phone not authenticated by certificate); media RTP, not encrypted"
        )
        for peer in (alice, bob):
            await peer.stream.aclose()


async def test_a_tls_leg_to_a_trunk_says_its_certificate_was_verified_for_its_name(
    tmp_path: Path,
) -> None:
    pki = TestPki(tmp_path / "pki")
    ca = pki.ca("Carrier CA")
    trunk_certificate = ca.issue("trunk", hosts=["trunk.example"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(trunk_certificate.certificate, trunk_certificate.key)
    invites: list[Request] = []

    async def trunk(stream: trio.SSLStream[trio.SocketStream]) -> None:
        # The carrier: answers the INVITE with its SDP, then reads on until the call ends.
        peer = TlsPeer(stream)
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            while not isinstance(incoming := await peer.next_message(), Request):
                pass
            invites.append(incoming)
            ok = make_response(incoming, 200, "OK", to_tag="carrier1")
            ok = ok.with_headers(
                ok.headers.set("Contact", f"<sip:carrier@{LOOPBACK}:{port};transport=tls>")
            )
            await peer.send(ok.with_body(SDP.format(port=40004).encode(), "application/sdp"))
            await trio.sleep_forever()

    listeners = await trio.open_ssl_over_tcp_listeners(0, context, host=LOOPBACK)
    port = listeners[0].transport_listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, trunk, listeners)
        async with running_gateway(tmp_path, ca.certificate, trunk_port=port) as gateway:
            gw_port = tls_port(gateway)
            alice = TlsPeer(await connect(gw_port, client_context()))
            contact = f"sip:alice@{LOOPBACK}:5998;transport=tls"
            register = request(
                "REGISTER", f"sip:{LOOPBACK}:{gw_port}", "alice", "TLS", contact, 1, "ra"
            )
            assert (await alice.exchange(register, "alice")).status == 200
            invite = request(
                "INVITE", f"sip:+4930123@{LOOPBACK}:{gw_port}", "alice", "TLS", contact, 1, "c9"
            )
            invite = invite.with_body(SDP.format(port=40000).encode(), "application/sdp")
            assert (await alice.exchange(invite, "alice")).status == 200
            assert len(invites) == 1

            assert gateway.calls is not None
            (call,) = gateway.calls.calls
            record = call.security_record()
            callee = record["b"]
            assert isinstance(callee, dict)
            assert callee["tls"] == {"opened_by": "gateway", "server_name": "trunk.example"}
            assert (callee["peer_kind"], callee["peer_name"]) == ("trunk", "carrier")
            assert describe_leg(callee) == (
                "signalling TLS to trunk carrier, certificate verified for trunk.example; "
                "media RTP, not encrypted"
            )
            await alice.stream.aclose()
        nursery.cancel_scope.cancel()
