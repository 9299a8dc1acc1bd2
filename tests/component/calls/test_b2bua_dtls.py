"""A DTLS-SRTP caller through the B2BUA to a plain-RTP callee (issue #6): signalling on the
in-memory network, the DTLS handshake on real 127.0.0.1 sockets between the gateway's relay and
an in-process phone built from the same engine, in virtual time. Keys come from the handshake and
the call goes on; a wrong fingerprint ends the answered call with BYE, Reason cause 488 and the
stated reason on both legs."""

from __future__ import annotations

import datetime
import math
import socket
from pathlib import Path

import attrs
import trio

import gateway.plugins.keyexchange.dtls_srtp as dtls_plugin
from gateway.core.interfaces import KeysReady, NegotiationFailed, SrtpKeys
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.dtls_certificates import generate_identity
from gateway.plugins.keyexchange.dtls_srtp import (
    FINGERPRINT_MISMATCH_REASON,
    DtlsKeyExchange,
    DtlsNegotiation,
)
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, eventually, start_b2bua

PHONE_PORT = 44500  # a real socket, outside the relay's MEDIA_PORTS
NOW = datetime.datetime.now(datetime.UTC)
PHONE_ID = generate_identity(now=NOW, max_age=datetime.timedelta(days=30))
OTHER_ID = generate_identity(now=NOW, max_age=datetime.timedelta(days=30))


def dtls_offer(negotiation: DtlsNegotiation, fingerprint: str | None = None) -> bytes:
    ours = dict(negotiation.local_sdp_attributes())
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {PHONE_PORT} UDP/TLS/RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
        f"a=fingerprint:{fingerprint or ours['fingerprint']}\r\n"
        f"a=setup:{ours['setup']}\r\na=tls-id:{ours['tls-id']}\r\n"
    ).encode()


@attrs.define
class Phone:
    negotiation: DtlsNegotiation
    sock: trio.socket.SocketType
    gateway: tuple[str, int]
    keys: SrtpKeys | None = None
    failure: str | None = None
    media: list[bytes] = attrs.Factory(list)
    keyed: trio.Event = attrs.Factory(trio.Event)

    async def run(self) -> None:
        with self.sock:  # closed when the test's nursery is cancelled
            await self._loop()

    async def _loop(self) -> None:
        while True:
            now = trio.current_time()
            for datagram in self.negotiation.packets_to_send(now=now):
                await self.sock.sendto(datagram, self.gateway)
            while (event := self.negotiation.next_event()) is not None:
                if isinstance(event, KeysReady):
                    self.keys = event.keys
                    self.keyed.set()
                elif isinstance(event, NegotiationFailed):
                    self.failure = event.reason
            timer = self.negotiation.get_timer()
            with trio.move_on_at(math.inf if timer is None else timer):
                data, _ = await self.sock.recvfrom(2048)
                if data and self.negotiation.claims_packet(data[0], data):
                    self.negotiation.receive_packet(data, now=trio.current_time())
                else:
                    self.media.append(data)
                continue
            self.negotiation.handle_timer(now=trio.current_time())


async def call_with(
    nursery: trio.Nursery, tmp_path: Path, seed: int, *, wrong_fingerprint: bool
) -> tuple[B2bua, Phone]:
    env = await start_b2bua(nursery, tmp_path, seed, plugins=[("dtls", dtls_plugin)])
    phone_exchange = DtlsKeyExchange(identity=lambda: PHONE_ID)
    negotiation = phone_exchange.offer(suites=[], secure_signalling=False)
    wrong = None
    if wrong_fingerprint:
        wrong = "sha-256 " + ":".join(f"{b:02X}" for b in OTHER_ID.digest("sha-256"))
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=dtls_offer(negotiation, wrong))
    final = await call.final()
    assert final.status == 200, final.reason
    answer = parse_sdp_untrusted(final.body)
    media = answer.media[0]
    assert media.proto == "UDP/TLS/RTP/SAVP"
    assert media.attributes.get("setup") == "active"
    negotiation.remote_sdp_attributes([(a[0], a[1]) for a in media.attributes])
    # The callee got plain RTP and none of the caller's DTLS attributes.
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    offer_b = leg_b.incoming.request.body
    assert b"RTP/AVP" in offer_b
    assert b"fingerprint" not in offer_b and b"setup" not in offer_b and b"SAVP" not in offer_b
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await sock.bind(("127.0.0.1", PHONE_PORT))
    phone = Phone(negotiation, sock, ("127.0.0.1", media.port))
    nursery.start_soon(phone.run)
    return env, phone


async def test_a_dtls_caller_gets_keys_from_the_handshake_and_the_call_goes_on(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, phone = await call_with(nursery, tmp_path, voipgw_seed, wrong_fingerprint=False)
    with trio.fail_after(30):
        await phone.keyed.wait()
    assert phone.failure is None
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    await eventually(lambda: gateway_call.a.security.keys(0) is not None)
    assert gateway_call.a.security.keys(0) == attrs.evolve(
        phone.keys, local_key=phone.keys.remote_key, remote_key=phone.keys.local_key
    )
    record = gateway_call.security_record()["a"]["streams"][0]
    assert record["key_exchange"] == "dtls"
    assert record["peer_certificate_sha256"] == PHONE_ID.sha256_hex()
    # Still up well after the handshake timeout would have struck.
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == []


async def test_a_wrong_fingerprint_ends_the_call_with_the_reason_and_no_media(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, phone = await call_with(nursery, tmp_path, voipgw_seed, wrong_fingerprint=True)
    bye_a = await env.trunk.next_request("BYE", timeout=30)
    bye_b = await env.alice.next_request("BYE", timeout=5)
    for bye in (bye_a, bye_b):
        reason = bye.request.headers.get("Reason") or ""
        assert "cause=488" in reason
        assert FINGERPRINT_MISMATCH_REASON in reason
    assert phone.keys is None
    assert phone.media == []
