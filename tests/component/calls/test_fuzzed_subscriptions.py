"""Mutated registrations and subscription requests from the gateway's own peers, past
authentication (the robustness rule: bad input gets a clear answer and loses nothing).

test_b2bua_fuzzed_input's stranger never gets past the digest challenge; here the messages come
from alice and bob (accounts, registered phones) with credentials answering a real challenge, and
from the voicemail trunk inside the message-waiting subscription's dialog, so the registrar, the
presence and dialog-event services and the message-summary relay read what was mutated. Each
turn sends a valid request once to be challenged (401/407), then the same request, authorized,
with one header or the body mutated (the Authorization header too, at times), or the whole
message mutated as bytes (tests/unit/fuzz/mutator.py), or as it is:

- REGISTER from alice, with Contact parameters (+sip.instance, reg-id, expires), Expires, Path;
- PUBLISH from alice with a PIDF body (RFC 3903, RFC 3863);
- SUBSCRIBE from bob to alice's presence and dialog state (RFC 3856, RFC 4235), and from alice to
  her mailbox (RFC 3842), which the gateway relays to the voicemail trunk;
- NOTIFY from the trunk in that mailbox subscription, message-summary bodies mutated (no
  challenge: the trunk is known by its address).

After each: a request got exactly one final response (the status the parser names, with a
reason, when it refuses it), nothing was logged at error level and no internal error counted.
At the end alice registers again and takes a call, and once every subscription and publication
has expired the gateway's tables are empty again.

VOIPGW_FUZZ_EXAMPLES scales the number of turns (a fortieth of it: 25 in CI);
VOIPGW_FUZZ_SEED moves the stream.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from gateway.core.ids import SeededIds
from gateway.core.sip.message import Request
from gateway.core.sip.serializer import serialize_message
from gateway.testing.sip_agent import AutoAnswer, SipAgent
from tests.component.calls.b2bua_env import (
    GW,
    B2bua,
    answered_call,
    eventually,
    start_b2bua,
)
from tests.component.calls.fuzz_checks import (
    MAX_UDP,
    error_records,
    mutate_message,
)
from tests.component.calls.fuzz_checks import (
    _expected as expected_answer,
)
from tests.component.calls.mwi_subscriptions import SUMMARY, Voicemail, subscribed
from tests.component.calls.presence_subscriptions import BOB, OFFICE, pidf
from tests.component.calls.subscription_fuzz import WINDOW, _challenged
from tests.unit.fuzz.mutator import base_seed, examples

SUMMARIES = [
    SUMMARY,
    b"Messages-Waiting: no\r\n",
    b"Messages-Waiting: yes\r\nMessage-Account: sip:alice@127.0.0.1\r\n"
    b"Voice-Message: 4294967296/1 (0/0)\r\nFax-Message: 1/2\r\n",
]


def _register(alice: SipAgent, rng: random.Random) -> Request:
    """alice's REGISTER (RFC 3261 §10.2) with RFC 5626 and RFC 3327 fields, or removing all."""
    expires = rng.choice(["600", "3600", "0", "60"])
    contact = (
        f"<sip:alice@127.0.0.3:5060;transport=udp>;expires={expires}"
        ';+sip.instance="<urn:uuid:00000000-0000-1000-8000-000a95a0e128>";reg-id=1'
    )
    if rng.random() < 0.1:
        contact, expires = "*", "0"
    request = alice.new_request(
        "REGISTER",
        "sip:127.0.0.1:5060",
        to=alice.aor,
        extra=[
            ("Expires", expires),
            ("Supported", "path, outbound"),
            ("Path", "<sip:edge@127.0.0.9:5060;lr;ob>"),
        ],
    )
    return request.with_headers(request.headers.set("Contact", contact))


def _requests(env: B2bua, bob: SipAgent, rng: random.Random) -> dict[str, Callable[[], Request]]:
    alice = env.alice

    def publish() -> Request:
        note = rng.choice(["", "lunch", "x" * 500])
        body = pidf(rng.choice(["open", "closed"]), note=note)
        return alice.new_request(
            "PUBLISH",
            "sip:alice@127.0.0.1:5060",
            extra=[("Event", "presence"), ("Expires", rng.choice(["600", "60", "0"]))],
            body=body,
            content_type="application/pidf+xml",
        )

    def subscribe(event: str, accept: str, phone: SipAgent, target: str) -> Callable[[], Request]:
        return lambda: phone.new_request(
            "SUBSCRIBE",
            f"sip:{target}@127.0.0.1:5060",
            to=phone.aor if target == phone.user else None,
            extra=[
                ("Event", event),
                ("Expires", rng.choice(["600", "60", "0"])),
                ("Accept", accept),
            ],
        )

    return {
        "REGISTER": lambda: _register(alice, rng),
        "PUBLISH": publish,
        "SUBSCRIBE presence": subscribe("presence", "application/pidf+xml", bob, "alice"),
        "SUBSCRIBE dialog": subscribe("dialog", "application/dialog-info+xml", bob, "alice"),
        "SUBSCRIBE message-summary": subscribe(
            "message-summary", "application/simple-message-summary", alice, "alice"
        ),
    }


def _responses_to(env: B2bua, peer: tuple[str, int], start: int) -> list[bytes]:
    found: list[bytes] = []
    for datagram in env.network.capture[start:]:
        data = datagram.data
        # To the peer's host: a mutated Via may name another port (RFC 3261 §18.2.2).
        ours = datagram.src == GW and datagram.dst[0] == peer[0] and data.startswith(b"SIP/")
        if ours and data not in found:
            found.append(data)
    return found


async def _check(
    env: B2bua,
    agent: SipAgent,
    data: bytes,
    where: str,
    outcomes: dict[str, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    expected = expected_answer(data)
    start = len(env.network.capture)
    await agent.socket.sendto(data, GW)
    await trio.sleep(WINDOW)
    answers = _responses_to(env, agent.address, start)
    finals = [int(a[8:11]) for a in answers if a[8:11].isdigit() and a[8:9] != b"1"]
    where = f"{where} got {finals}"
    if expected == "none":
        assert finals == [], where
    elif expected == "final":
        assert len(set(finals)) == 1, where
    else:
        assert finals == [int(expected)], where
        assert answers[-1].split(b"\r\n", 1)[0][12:].strip(), where
    key = expected if expected != "final" else f"final {finals[0]}"
    outcomes[key] = outcomes.get(key, 0) + 1
    errors = error_records(caplog)
    caplog.clear()
    assert errors == [], (where, errors)
    assert env.gateway.endpoint.statistics.internal_errors == 0, where


def tables(env: B2bua) -> dict[str, int]:
    gateway = env.gateway
    assert gateway.subscriptions is not None and gateway.dialog_events is not None
    endpoint = gateway.endpoint
    return {
        "mailbox subscriptions": len(gateway.subscriptions),
        "dialog and presence subscriptions": len(gateway.dialog_events),
        "client transactions": len(endpoint.transactions._client),
        "server transactions": len(endpoint.transactions._server),
        "client requests": len(endpoint._client_requests),
        "server flows": len(endpoint._server_flows),
    }


async def test_mutated_registrations_publications_and_subscriptions(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"voicemail": True},
        dialog_watch_groups=[OFFICE],
        presence={"allow": "same-group", "from_registration": False},
        # Mutated Authorization headers are failed attempts: no lock-out of the phones here.
        gateway_table={"auth_max_failures": 10**6},
    )
    bob = SipAgent(
        env.network,
        BOB,
        ids=SeededIds(voipgw_seed + 3),
        user="bob",
        password="bob-password-1",
        proxy=GW,
        auto=AutoAnswer(ring=True, status=None),
        media_port=31000,
    )
    await nursery.start(bob.serve)
    assert (await bob.register()).status == 200
    voicemail = Voicemail(env.trunk)
    await trio.sleep(WINDOW)
    before = tables(env)
    rng = random.Random(f"subscriptions:{voipgw_seed}:{base_seed()}")
    makers = _requests(env, bob, rng)
    sent: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for number in range(max(25, examples() // 40)):
        env.network.capture.clear()
        env.network.deliveries.clear()
        kind = rng.choice([*sorted(makers), "NOTIFY message-summary"])
        if kind == "NOTIFY message-summary":
            if len(env.gateway.subscriptions or ()) == 0 or voicemail.dialog is None:
                await subscribed(env, voicemail)
            assert voicemail.dialog is not None
            state = rng.choice(["active;expires=500", "terminated;reason=timeout", "pending"])
            notify = voicemail.dialog.create_request(
                "NOTIFY",
                via=env.trunk.new_via(),
                contact=env.trunk.contact,
                extra=[("Event", "message-summary"), ("Subscription-State", state)],
                body=rng.choice(SUMMARIES),
                content_type="application/simple-message-summary",
            )
            agent = env.trunk
            request = notify
        else:
            request = makers[kind]()
            agent = bob if kind in ("SUBSCRIBE presence", "SUBSCRIBE dialog") else env.alice
            request = await _challenged(agent, request)
        how, data = mutate_message(serialize_message(request), rng)
        sent[f"{kind} {how}"] = sent.get(f"{kind} {how}", 0) + 1
        await _check(
            env,
            agent,
            data[:MAX_UDP],
            f"turn {number}: {kind} ({how}): {data[:3000]!r}",
            outcomes,
            caplog,
        )
    print("subscriptions sent:", dict(sorted(sent.items())))
    print("subscriptions outcomes:", dict(sorted(outcomes.items())))

    # alice registers again and takes a call; once everything expired, nothing is left.
    assert (await env.alice.register()).status == 200
    call, _ = await answered_call(env)
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await trio.sleep(4000)  # past every Expires the turns could ask for (the cap is 3600)
    assert tables(env) == before | {
        "mailbox subscriptions": 0,
        "dialog and presence subscriptions": 0,
    }
    assert error_records(caplog) == []
