"""Our ClientHello follows our SDP answer at every answer we make, not only the caller's first
(docs/architecture.md, "DTLS: our answer before our ClientHello").

Answering ``a=setup:actpass`` with ``active`` makes us the DTLS client (RFC 5763 §5): our
ClientHello starts the handshake, and the peer can check our certificate only with the
fingerprint of our answer. A phone given the ClientHello first ignores it (baresip does) and
the handshake waits for our resend, 1 s (RFC 6347 §4.2.4.1), the call's media with it. Besides
the caller's 183/200 we answer in our ACK to a callee that offered in its 200 (a late offer),
in our 200 to a re-INVITE whose new tls-id starts a new association (RFC 8842 §5), in our 200
to a call picker and in our ACK to a transfer's target. The call's handshake task runs at any
checkpoint, and each of those waits for ``MediaSession.applied()`` (a round trip with media
workers, short sleeps of the virtual clock here) before the answer goes.

What the gateway sends is noted in order: ``("sip", side)`` once a message carrying our SDP
answer to that side has gone (a response's body, an ACK's), ``("dtls", side)`` for each
datagram the handshake task hands to that side's relay. In-memory signalling, virtual time;
the relay's sockets and the phones' are real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

import gateway.plugins.keyexchange.dtls_srtp as dtls_plugin
from gateway.core.calls.call import Call as GatewayCall
from gateway.core.endpoint import SipEndpoint
from gateway.core.ids import SeededIds
from gateway.core.media.handshakes import CallHandshakes
from gateway.core.media.relay_api import RelaySide
from gateway.core.media.session import MediaSession
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.message import Request, Response
from gateway.plugins.keyexchange.dtls_srtp import DtlsKeyExchange, DtlsNegotiation
from gateway.testing.sip_agent import AutoAnswer, SipAgent
from tests.component.calls.b2bua_env import ALICE_DID, GW, eventually, start_b2bua
from tests.component.calls.dialog_event_watch import next_doc, start, watch
from tests.component.calls.dtls_callers import dtls_caller
from tests.component.calls.dtls_pairs import pairs
from tests.component.calls.dtls_phone import PHONE_ID, Phone, bind, dtls_sdp
from tests.component.calls.pickup_calls import PICKUP, early_dialog, pick_up, replaces_of

WORKER_ROUND_TRIP = 0.002
"""Seconds of virtual time a media worker takes to confirm what the call applied."""


class NotingSide:
    """A relay side, noting each datagram the handshake task sends out of it."""

    def __init__(self, side: RelaySide, name: str, noted: list[Any]) -> None:
        self._side = side
        self._name = name
        self._noted = noted

    def send(self, packet: bytes, *, rtcp: bool = False, copy_to_sdp_address: bool = True) -> bool:
        self._noted.append(("dtls", self._name))
        return self._side.send(packet, rtcp=rtcp, copy_to_sdp_address=copy_to_sdp_address)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._side, name)


@pytest.fixture
def noted(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    respond, ack_b, side_of = SipEndpoint.respond, GatewayCall._ack_b, CallHandshakes._side
    applied = MediaSession.applied

    async def noting_respond(self: SipEndpoint, transaction: Any, response: Response) -> None:
        await respond(self, transaction, response)
        if response.body and b"a=fingerprint" in response.body:
            # bob's picker is the B side; every other request answered here is the caller's.
            sender = response.headers.get("From") or ""
            seen.append(("sip", "b" if "sip:bob@" in sender else "a"))

    async def noting_ack_b(self: GatewayCall, *args: Any, **kwargs: Any) -> None:
        await ack_b(self, *args, **kwargs)
        if kwargs.get("body"):
            seen.append(("sip", "b"))

    def noting_side(self: CallHandshakes, side: str, index: int) -> RelaySide | None:
        found = side_of(self, side, index)
        return None if found is None else NotingSide(found, side, seen)  # type: ignore[return-value]

    async def round_trip(self: MediaSession) -> None:
        await trio.sleep(WORKER_ROUND_TRIP)
        await applied(self)

    monkeypatch.setattr(SipEndpoint, "respond", noting_respond)
    monkeypatch.setattr(GatewayCall, "_ack_b", noting_ack_b)
    monkeypatch.setattr(CallHandshakes, "_side", noting_side)
    monkeypatch.setattr(MediaSession, "applied", round_trip)
    return seen


def assert_answer_first(noted: list[Any], side: str, *, after: int = 0) -> None:
    """From ``after`` on, our answer to ``side`` went before any datagram of its handshake."""
    later = noted[after:]
    assert ("dtls", side) in later, noted
    assert ("sip", side) in later, noted
    assert later.index(("sip", side)) < later.index(("dtls", side)), noted


async def keyed_by_our_answer_in_the_ack(
    nursery: trio.Nursery,
    negotiation: DtlsNegotiation,
    sock: trio.socket.SocketType,
    ack: Request,
    noted: list[Any],
) -> None:
    """The phone offered DTLS-SRTP (actpass) in its 200: our answer in ``ack`` is ``active``,
    the handshake keys the phone, and our ClientHello came after the ACK."""
    answer = parse_sdp_untrusted(ack.body)
    answered = answer.media[0]
    assert answered.attributes.get("setup") == "active"
    negotiation.remote_sdp_attributes(pairs(answer, answered))
    phone = Phone(negotiation, sock, ("127.0.0.1", answered.port))
    nursery.start_soon(phone.run)
    with trio.fail_after(30):
        await phone.keyed.wait()
    assert phone.failure is None
    assert_answer_first(noted, "b")


async def test_our_client_hello_to_a_late_offer_callee_follows_our_ack(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    noted: list[Any],
) -> None:
    """The trunk's INVITE has no SDP; alice's phone offers DTLS-SRTP (actpass) in its 200, and
    our answer, ``active``, goes in our ACK: our ClientHello after the ACK."""
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, plugins=[("dtls", dtls_plugin)], alice_auto=None
    )
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", media_policy="dtls")
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    leg_b = await env.alice.next_call()
    negotiation = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(
        suites=[], secure_signalling=False
    )
    sock = await bind()
    await leg_b.answer(200, sdp=dtls_sdp(negotiation))
    assert (await call.final()).status == 200
    ack = (await env.alice.next_request("ACK")).request
    await keyed_by_our_answer_in_the_ack(nursery, negotiation, sock, ack, noted)


async def test_our_client_hello_of_a_new_association_follows_our_200_to_the_re_invite(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    noted: list[Any],
) -> None:
    """The caller re-INVITEs with a new tls-id and actpass (RFC 8842 §5: a new association):
    we answer ``active`` again, and the new handshake's ClientHello follows our 200."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, plugins=[("dtls", dtls_plugin)])
    caller = await dtls_caller(nursery, env)
    phone = caller.phone
    with trio.fail_after(30):
        await phone.keyed.wait()
    assert_answer_first(noted, "a")
    first_keys = phone.keys
    await trio.sleep(1)
    before = len(noted)
    fresh = caller.exchange.offer(
        suites=[], secure_signalling=False, previous=phone.negotiation, rekey=True
    )
    phone.negotiation = fresh
    phone.keys = None
    ok = await caller.call.reinvite(dtls_sdp(fresh))
    assert ok.status == 200
    answer = parse_sdp_untrusted(ok.body)
    media = answer.media[0]
    assert media.attributes.get("setup") == "active"
    assert media.attributes.get("tls-id") != caller.answer.attributes.get("tls-id")
    fresh.remote_sdp_attributes(pairs(answer, media))
    await eventually(lambda: phone.keys is not None and phone.keys != first_keys)
    assert_answer_first(noted, "a", after=before)


async def test_our_client_hello_to_a_transfers_target_follows_our_ack(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    noted: list[Any],
) -> None:
    """alice transfers the trunk's call to bob (policy ``dtls``), called without SDP: his
    phone offers DTLS-SRTP in its 200 and our answer, ``active``, goes in our ACK to him."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, plugins=[("dtls", dtls_plugin)])
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("bob", media_policy="dtls")
    bob = SipAgent(
        env.network,
        ("127.0.0.4", 5060),
        ids=SeededIds(voipgw_seed + 3),
        user="bob",
        password="bob-password-1",
        proxy=GW,
        auto=None,
    )
    await nursery.start(bob.serve)
    assert (await bob.register()).status == 200
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200
    alice_leg = await env.alice.next_call()
    refer = await alice_leg.request("REFER", extra=[("Refer-To", "<sip:bob@127.0.0.1:5060>")])
    assert (await refer.final()).status == 202
    bob_leg = await bob.next_call()
    negotiation = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(
        suites=[], secure_signalling=False
    )
    sock = await bind()
    await bob_leg.answer(200, sdp=dtls_sdp(negotiation))
    ack = (await bob.next_request("ACK")).request
    await keyed_by_our_answer_in_the_ack(nursery, negotiation, sock, ack, noted)


async def test_an_active_re_offerers_new_client_hello_before_our_200_is_kept_for_it(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    noted: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The caller re-INVITEs with a new tls-id and ``a=setup:active`` (RFC 8842 §5: a new
    association; RFC 5763 §5: the offerer is the client) and sends its ClientHello at once,
    before our 200 (we relay the re-INVITE to alice first). That ClientHello is kept for the
    new association and answered once our 200 went, not fed to the association in force
    (where it was lost: a phone resends it 1 s later, RFC 6347 §4.2.4.1; this one, whose loop
    still waits on its previous association's timer, never does, and is never keyed)."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, plugins=[("dtls", dtls_plugin)])
    caller = await dtls_caller(nursery, env)
    phone = caller.phone
    with trio.fail_after(30):
        await phone.keyed.wait()
    first_keys = phone.keys
    await trio.sleep(1)
    # The phone as the client of a new association: our certificate is the one of our first
    # answer (its fingerprint), its own tls-id new.
    client = caller.exchange.answer(
        [
            ("fingerprint", caller.answer.attributes.get("fingerprint")),
            ("setup", "passive"),
            ("tls-id", "a-new-association-of-the-phone"),
        ],
        suites=[],
        secure_signalling=False,
    )
    assert client is not None and client.dtls_role == "client"
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    taken = trio.Event()
    reoffer = GatewayCall._reoffer

    def noting_reoffer(self: GatewayCall, *args: Any) -> Any:
        try:
            return reoffer(self, *args)
        finally:
            taken.set()

    monkeypatch.setattr(GatewayCall, "_reoffer", noting_reoffer)
    reinvite = await caller.call.request(
        "INVITE", body=dtls_sdp(client), content_type="application/sdp"
    )
    # The gateway took the offer and relays it to alice (the ClientHello of a phone that sends
    # it before its re-INVITE is read cannot be told from the association in force's).
    await taken.wait()
    for datagram in client.packets_to_send(now=trio.current_time()):
        await phone.sock.sendto(datagram, phone.gateway)  # before our 200
    phone.negotiation, phone.keys = client, None
    ok = await reinvite.final()
    assert ok.status == 200
    media = parse_sdp_untrusted(ok.body).media[0]
    assert media.attributes.get("setup") == "passive"
    await eventually(lambda: phone.keys is not None and phone.keys != first_keys)
    assert client.statistics().retransmissions == 0
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    assert stream.a_to_b.statistics().dropped == 0


async def test_our_client_hello_to_a_call_picker_follows_our_200_to_it(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    noted: list[Any],
) -> None:
    """bob's phone picks up the call ringing at alice (RFC 3891 Replaces) with a DTLS-SRTP
    offer (actpass): our 200 to the picker answers ``active``, and our ClientHello to it
    follows that 200."""
    env, bob = await start(
        nursery, tmp_path, voipgw_seed, groups=[PICKUP], plugins=[("dtls", dtls_plugin)]
    )
    await watch(bob)
    await next_doc(bob)
    env.alice.auto = AutoAnswer(ring=True, status=None)  # she lets it ring
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID))
    await env.alice.next_call()
    negotiation = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(
        suites=[], secure_signalling=False
    )
    sock = await bind()
    picking = await pick_up(bob, replaces_of(await early_dialog(bob)), sdp=dtls_sdp(negotiation))
    to_picker = await picking.final()
    assert to_picker.status == 200, to_picker.reason
    assert (await incoming.final()).status == 200
    answer = parse_sdp_untrusted(to_picker.body)
    answered = answer.media[0]
    assert answered.attributes.get("setup") == "active"
    negotiation.remote_sdp_attributes(pairs(answer, answered))
    phone = Phone(negotiation, sock, ("127.0.0.1", answered.port))
    nursery.start_soon(phone.run)
    with trio.fail_after(30):
        await phone.keyed.wait()
    assert phone.failure is None
    assert_answer_first(noted, "b")
