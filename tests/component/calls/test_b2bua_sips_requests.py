"""SIPS for what is not an INVITE (RFC 3261 §26.2.2, RFC 5630 §3.1.3), and the BLF pickup of
a secure call. The same set-up as test_b2bua_sips: UDP 5060 and the ``tls`` stand-in at 5061;
alice registered over UDP, bob over the stand-in.

- SUBSCRIBE, MESSAGE, OPTIONS, REFER and REGISTER to a ``sips:`` URI over UDP: 480 with
  warn-code 380 before any challenge; the same with ``sip:`` goes on as ever;
- a REGISTER over UDP binding a ``sips:`` Contact: 480 with 380, nothing bound; over TLS bound;
- a ``sips:`` MESSAGE over TLS reaches only alice's phone on TLS; with none, 480 with 380;
- a BLF SUBSCRIBE to ``sips:`` over TLS is answered, and NOTIFYed, with a ``sips:`` Contact;
- an MWI SUBSCRIBE to ``sips:`` over TLS is not relayed to a voicemail trunk on UDP (480, 380);
- a ringing secure call picked up from the BLF (INVITE with Replaces): refused to a phone on
  UDP, taken by one on TLS with a ``sips:`` Contact in our 200.
"""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.core.ids import SeededIds
from gateway.core.registrar import canonical_aor
from gateway.core.sip.dialog import Dialog
from gateway.testing.sip_agent import AutoAnswer, SipAgent
from tests.component.calls.b2bua_env import GW, REALM, B2bua, next_within, start_b2bua
from tests.component.calls.dialog_event_watch import next_doc
from tests.component.calls.message_accept import accept
from tests.component.calls.pickup_calls import early_dialog, replaces_of
from tests.component.calls.sips_phones import (
    ALICE_TLS,
    BOB,
    CAROL,
    OUR_SIPS_CONTACT,
    assert_sips_not_allowed,
    sips_env,
    tls_phone,
)

TEXT = "text/plain"


async def test_requests_outside_a_dialog_to_sips_over_udp_are_refused_before_a_challenge(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await sips_env(nursery, tmp_path, voipgw_seed)
    alice = env.alice  # over UDP
    await accept(bob)
    extras = {
        "OPTIONS": [],
        "MESSAGE": [],
        "SUBSCRIBE": [("Event", "dialog"), ("Accept", "application/dialog-info+xml")],
        "REFER": [("Refer-To", "<sip:+15550123@127.0.0.1>")],
        "REGISTER": [("Expires", "600")],
    }
    for method, extra in extras.items():
        uri = "sips:127.0.0.1:5061" if method == "REGISTER" else "sips:bob@127.0.0.1:5061"
        body = b"hello" if method == "MESSAGE" else b""
        request = alice.new_request(
            method, uri, extra=extra, body=body, content_type=TEXT if body else None
        )
        final = await (await alice.send(request)).final()
        assert_sips_not_allowed(final)  # not 401/407: refused before any challenge
    assert await next_within(bob, "MESSAGE", 3) is None
    # The same OPTIONS and MESSAGE with sip: go on as ever (one type check and one string
    # comparison for them).
    options = await (await alice.send(alice.new_request("OPTIONS", "sip:127.0.0.1:5060"))).final()
    assert options.status == 200, options.reason
    message = alice.new_request("MESSAGE", "sip:bob@127.0.0.1:5060", body=b"hi", content_type=TEXT)
    _, final = await alice.send_authenticated(message)
    assert final.status == 200, final.reason
    assert (await bob.next_request("MESSAGE")).request.body == b"hi"


async def test_a_sips_contact_is_bound_only_over_tls(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await sips_env(nursery, tmp_path, voipgw_seed)
    for phone, sips_contact in (
        (env.alice, "<sips:alice@127.0.0.2:5061>"),
        (bob, "<sips:bob@127.0.0.4:5061>"),
    ):
        request = phone.new_request(
            "REGISTER", "sip:127.0.0.1:5060", to=phone.aor, extra=[("Expires", "600")]
        )
        request = request.with_headers(request.headers.set("Contact", sips_contact))
        _, final = await phone.send_authenticated(request)
        if phone is env.alice:
            # RFC 5630 §3.1.3: the sips: Contact came over UDP: not bound.
            assert_sips_not_allowed(final)
            assert sips_contact not in final.headers.get_all("Contact")
        else:
            assert final.status == 200, final.reason
            bound = " ".join(final.headers.get_all("Contact"))
            assert sips_contact.rstrip(">") in bound
    assert env.gateway.store is not None
    aor = canonical_aor(env.alice.aor.uri)
    contacts = [b.contact for b in env.gateway.store.registrations_for(aor)]
    assert contacts and not any(c.startswith("sips:") for c in contacts)


async def test_a_sips_message_reaches_only_phones_on_tls(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await sips_env(nursery, tmp_path, voipgw_seed)

    async def send(body: bytes) -> int:
        message = bob.new_request(
            "MESSAGE", "sips:alice@127.0.0.1:5061", body=body, content_type=TEXT
        )
        _, final = await bob.send_authenticated(message)
        if final.status == 480:
            assert_sips_not_allowed(final)
        return final.status

    await accept(env.alice)
    assert await send(b"only udp") == 480  # alice only on UDP: nobody gets it
    assert await next_within(env.alice, "MESSAGE", 3) is None
    alice_tls = await tls_phone(env, nursery, ALICE_TLS, "alice", "wonderland-42", voipgw_seed + 6)
    await accept(alice_tls)
    assert await send(b"secret") == 200
    got = await alice_tls.next_request("MESSAGE")
    assert got.request.body == b"secret"
    assert got.source == ("127.0.0.1", 5061)  # over TLS
    assert await next_within(env.alice, "MESSAGE", 3) is None  # the UDP phone left out


async def pickup_env(
    nursery: trio.Nursery, tmp_path: Path, seed: int
) -> tuple[B2bua, SipAgent, SipAgent]:
    """alice rings on TLS only for carol's sips: call; bob on TLS watches alice. Returns the
    environment, alice's TLS phone and bob."""
    ring_only = AutoAnswer(ring=True, status=None)
    env = await start_b2bua(
        nursery,
        tmp_path,
        seed,
        sip={"listen": ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061"]},
        tls_stand_in=True,
        alice_auto=ring_only,
        dialog_watch_groups=[{"name": "office", "accounts": ["alice", "bob"], "pickup": True}],
    )
    assert env.gateway.store is not None
    env.gateway.store.accounts_add("carol", "carol-password-1", REALM)
    alice_tls = await tls_phone(env, nursery, ALICE_TLS, "alice", "wonderland-42", seed + 6)
    alice_tls.auto = ring_only
    bob = await tls_phone(env, nursery, BOB, "bob", "bob-password-1", seed + 5)
    bob.auto = ring_only
    return env, alice_tls, bob


async def watch_over_tls(bob: SipAgent) -> None:
    """bob's BLF subscription to sips:alice over TLS: 200 and NOTIFYs with sips: Contacts
    (RFC 3261 §12.1.1), so that bob's refreshes come back over TLS."""
    subscribe = bob.new_request(
        "SUBSCRIBE",
        "sips:alice@127.0.0.1:5061",
        extra=[
            ("Event", "dialog"),
            ("Expires", "600"),
            ("Accept", "application/dialog-info+xml"),
        ],
    )
    sent, final = await bob.send_authenticated(subscribe)
    assert final.status == 200, final.reason
    assert final.headers.get("Contact") == OUR_SIPS_CONTACT
    bob.add_dialog(Dialog.create_uac(sent, final, over_tls=True))
    notify, _ = await next_doc(bob)
    assert notify.headers.get("Contact") == OUR_SIPS_CONTACT


async def test_a_ringing_secure_call_is_picked_up_from_the_blf_only_over_tls(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, alice_tls, bob = await pickup_env(nursery, tmp_path, voipgw_seed)
    await watch_over_tls(bob)
    carol = await tls_phone(env, nursery, CAROL, "carol", "carol-password-1", voipgw_seed + 7)
    incoming = await carol.invite("sips:alice@127.0.0.1:5061")
    assert (await incoming.final()).status == 407
    await incoming.authenticate()
    await alice_tls.next_call()  # ringing, over TLS
    dialog = await early_dialog(bob)
    replaces = replaces_of(dialog)
    # A phone on UDP with the same Replaces (bob's UDP line) would take the call in clear.
    bob_udp = SipAgent(
        env.network,
        ("127.0.0.8", 5060),
        ids=SeededIds(voipgw_seed + 8),
        user="bob",
        password="bob-password-1",
        proxy=GW,
    )
    await nursery.start(bob_udp.serve)
    clear = await bob_udp.invite("sip:alice@127.0.0.1:5060", extra=[("Replaces", replaces)])
    assert (await clear.final()).status == 407
    await clear.authenticate()
    assert_sips_not_allowed(await clear.final())
    assert await next_within(alice_tls, "CANCEL", 3) is None  # still ringing
    # bob's BLF key on TLS takes it; our Contact to him is sips: (a secure call's TLS leg).
    pickup = await bob.invite("sip:alice@127.0.0.1:5061", extra=[("Replaces", replaces)])
    assert (await pickup.final()).status == 407
    await pickup.authenticate()
    taken = await pickup.final()
    assert taken.status == 200, taken.reason
    assert taken.headers.get("Contact") == OUR_SIPS_CONTACT
    assert (await incoming.final()).status == 200
    await alice_tls.next_request("CANCEL")
    await pickup.request("BYE")
    bye = await carol.next_request("BYE")
    assert bye.source == ("127.0.0.1", 5061)


async def test_a_sips_mwi_subscription_is_not_relayed_to_a_voicemail_trunk_without_tls(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        sip={"listen": ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061"]},
        tls_stand_in=True,
        carrier={"voicemail": True},  # the voicemail trunk, over UDP
        alice_auto=None,
    )
    alice_tls = await tls_phone(env, nursery, ALICE_TLS, "alice", "wonderland-42", voipgw_seed + 6)

    async def subscribe(uri: str) -> int:
        request = alice_tls.new_request(
            "SUBSCRIBE",
            uri,
            to=alice_tls.aor,
            extra=[
                ("Event", "message-summary"),
                ("Expires", "600"),
                ("Accept", "application/simple-message-summary"),
            ],
        )
        _, final = await alice_tls.send_authenticated(request)
        if final.status == 480:
            assert_sips_not_allowed(final)
        return final.status

    assert await subscribe("sips:alice@127.0.0.1:5061") == 480
    assert await next_within(env.trunk, "SUBSCRIBE", 3) is None
    # With sip: (TLS to us only) it is relayed to the voicemail trunk as ever.
    with trio.move_on_after(5):
        await subscribe("sip:alice@127.0.0.1:5061")
    assert (await env.trunk.next_request("SUBSCRIBE")).request.method == "SUBSCRIBE"
