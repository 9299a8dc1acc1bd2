"""Seeded random call flows and mutated SDP through the B2BUA (the memory network, virtual time):
whatever the peers do, the gateway logs no internal error, answers every request it takes (none
waits for ever), and leaves no call, lookup entry or media stream behind.

These found four bugs when written: a re-INVITE the other leg never completed hung the call, a
callee whose 200 could not be read kept the call ringing until the caller gave up, requests
crossing a BYE were never answered, and an INVITE without Contact rang the callee and failed
with 500 only when it answered. ``--voipgw-seed`` replays a failing run; the failure message
names the flow."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import trio

from gateway.core.sip.serializer import serialize_message
from gateway.testing.network import MemoryDatagramSocket
from gateway.testing.sip_agent import AutoAnswer, Call, Received, SipAgent, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, GW, B2bua, eventually, start_b2bua

FLOWS = 120
OFFERS = 150
MESSAGES = 400
SLOW = 80.0  # seconds: longer than any transaction timer (64*T1 = 32 s)
RING_TIMEOUT = 30.0
# Where a random flow transfers its call: a number the trunk serves, alice herself (another
# call to her phone), nobody, and an attended transfer naming a dialog that does not exist.
REFER_TARGETS = [
    "<sip:+15550199@127.0.0.1:5060>",
    "<sip:alice@127.0.0.1:5060>",
    "<sip:nobody@127.0.0.1:5060>",
    "<sip:alice@127.0.0.1:5060?Replaces=gone%3Bto-tag%3Da%3Bfrom-tag%3Db>",
]

# -- mutated SDP --------------------------------------------------------------------------------

TOKENS = ["", "0", "-1", "65536", "4294967296", "abc", "*", "x" * 3000, "IN IP6 ::1", "::"]
EXTRA_LINES = [
    "a=rtcp-mux",
    "a=rtcp:{port}",
    "a=sendonly",
    "a=inactive",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{text}",
    "a=fingerprint:sha-256 {text}",
    "a=setup:{text}",
    "a=ptime:{number}",
    "a=rtpmap:{number} {text}/{number}",
    "m=video {port} RTP/AVP 96",
    "m=audio 0 RTP/AVP 0",
    "m=image {port} udptl t38",
    "c=IN IP4 {text}",
    "b=AS:{number}",
]


def mutate(sdp: bytes, rng: random.Random) -> bytes:
    """One to three line edits: drop, repeat, swap, replace a token, insert a line."""
    lines = sdp.decode().rstrip("\r\n").split("\r\n")
    for _ in range(rng.choice([1, 1, 2, 3])):
        i = rng.randrange(len(lines))
        edit = rng.randrange(5)
        if edit == 0 and len(lines) > 1:
            del lines[i]
        elif edit == 1:
            lines.insert(i, lines[i])
        elif edit == 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif edit == 3:
            words = lines[i].split(" ")
            words[rng.randrange(len(words))] = rng.choice(TOKENS)
            lines[i] = " ".join(words)
        else:
            line = rng.choice(EXTRA_LINES).format(
                port=rng.choice([0, 1, 40002, 65535, 65536]),
                number=rng.choice(["0", "127", "-5", "999999999999", "x"]),
                text=rng.choice([*TOKENS, "actpass", "127.0.0.1", ":".join(["AB"] * 32)]),
            )
            lines.insert(rng.randrange(len(lines) + 1), line)
    return ("\r\n".join(lines) + "\r\n").encode()


def terminated(call: Call) -> bool:
    return call.dialog is not None and call.dialog.state.value == "terminated"


def no_internal_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("gateway")
    ]


async def all_gone(env: B2bua) -> None:
    await trio.sleep(2 * SLOW)  # every transaction, 2xx retransmission and drain is over
    await eventually(lambda: env.calls == 0 and env.call_lookups == 0)
    assert env.gateway.relay is not None and not env.gateway.relay.streams


async def test_mutated_offers_answers_and_reoffers(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rng = random.Random(voipgw_seed)
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, alice_auto=None, sip={"ring_timeout": RING_TIMEOUT}
    )

    def answer_to(offer: bytes) -> bytes:
        try:
            answer = env.alice.answer_sdp(offer)
        except Exception:  # the agent's own SDP code gave up on what the gateway sent
            answer = simple_sdp("127.0.0.3", 30000)
        return mutate(answer, rng) if rng.random() < 0.5 else answer

    async def alice_answers() -> None:
        while True:
            call = await env.alice.next_call(timeout=10**9)
            assert call.incoming is not None
            status = 486 if rng.random() < 0.1 else 200
            await env.alice.respond(call.incoming, status, body=answer_to(call.invite.body))

    async def alice_answers_reoffers(received: Received) -> bool:
        if received.request.method != "INVITE":
            return False
        status = rng.choice([200] * 8 + [488, 500])
        await env.alice.respond(received, status, body=answer_to(received.request.body))
        return True

    nursery.start_soon(alice_answers)
    env.alice.in_dialog = alice_answers_reoffers
    with caplog.at_level(logging.INFO):
        for n in range(OFFERS):
            offer = env.trunk.offer_sdp()
            if rng.random() < 0.8:
                offer = mutate(offer, rng)
            late = rng.random() < 0.25  # no SDP: alice's 200 offers, the trunk's ACK answers
            call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"" if late else offer)
            if late and rng.random() < 0.5:
                call.ack_answer = mutate(env.trunk.offer_sdp(), rng)
            final = await call.final(timeout=RING_TIMEOUT + SLOW)  # never left ringing
            if final.status == 200:
                await trio.sleep(0.1)  # a mutated answer in our ACK makes the gateway BYE us
                if rng.random() < 0.5 and not terminated(call):
                    reoffer = b"" if rng.random() < 0.2 else mutate(env.trunk.offer_sdp(), rng)
                    assert (await call.reinvite(reoffer, timeout=SLOW)).status >= 200, n
                if not terminated(call):
                    await call.bye(timeout=SLOW)
        await all_gone(env)
    assert no_internal_errors(caplog) == []


async def in_call(rng: random.Random, call: Call, agent: SipAgent, flow: list[str]) -> None:
    """Up to three things one side does in an answered call: a re-INVITE (perhaps CANCELled),
    an in-dialog request, a transfer (REFER), or BYE (which ends its part)."""
    for _ in range(rng.randrange(4)):
        # 70 s: past the expiry of a 90 s session timer nobody refreshes (RFC 4028).
        await trio.sleep(rng.choice([0, 0.001, 0.05, 0.5, 2, 70]))
        if call.dialog is None or call.dialog.state.value == "terminated":
            return
        what = rng.randrange(6)
        if what == 5:  # a transfer (RFC 3515): alice's may go ahead, the trunk's gets 403
            target = rng.choice(REFER_TARGETS)
            extra = [("Refer-To", target), *([("Refer-Sub", "false")] * (rng.random() < 0.2))]
            exchange = await call.request("REFER", extra=extra)
            status = (await exchange.final(timeout=SLOW)).status
            flow.append(f"{agent.user} REFER to {target} {status}")
        elif what == 0:
            offer = agent.offer_sdp(direction=rng.choice(["sendrecv", "sendonly", "inactive"]))
            late = rng.random() < 0.25  # without SDP: the other side's 200 offers
            if not late and rng.random() < 0.25:  # the same offer by UPDATE (RFC 3311)
                exchange = await call.request("UPDATE", body=offer, content_type="application/sdp")
                status = (await exchange.final(timeout=SLOW)).status
                flow.append(f"{agent.user} UPDATE with an offer {status}")
                continue
            status = (await call.reinvite(b"" if late else offer, timeout=SLOW)).status
            flow.append(f"{agent.user} {'late ' if late else ''}re-INVITE {status}")
        elif what == 1:
            method = rng.choice(["INFO", "OPTIONS", "MESSAGE", "NOTIFY", "UPDATE", "REFER"])
            exchange = await call.request(method, body=b"x", content_type="text/plain")
            flow.append(f"{agent.user} {method} {(await exchange.final(timeout=SLOW)).status}")
        elif what == 2:
            flow.append(f"{agent.user} BYE {(await call.bye(timeout=SLOW)).status}")
            return
        elif what == 3:  # a session refresh by UPDATE, its interval acceptable or not
            expires = rng.choice(["90", "1800;refresher=uac", "90;refresher=uas", "30", "soon"])
            timer = [("Supported", "timer"), ("Session-Expires", expires)]
            exchange = await call.request("UPDATE", extra=timer)
            status = (await exchange.final(timeout=SLOW)).status
            flow.append(f"{agent.user} UPDATE {expires} {status}")
        else:  # a re-INVITE CANCELled at once (mostly too late: the peers answer at once)
            offer = agent.offer_sdp(direction="sendonly")
            exchange = await call.request("INVITE", body=offer, content_type="application/sdp")
            await call.cancel(exchange)
            flow.append(
                f"{agent.user} CANCELled re-INVITE {(await exchange.final(timeout=SLOW)).status}"
            )


async def test_random_call_flows(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Either direction, answered, busy or never answered, CANCEL at random moments, then both
    # sides re-INVITE, send requests and hang up at random, crossing each other.
    rng = random.Random(voipgw_seed)
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, sip={"ring_timeout": RING_TIMEOUT})
    with caplog.at_level(logging.INFO):
        for n in range(FLOWS):
            for agent in (env.alice, env.trunk):
                for received in agent.received:
                    received.taken = True  # next_call() below finds this flow's call
            flow: list[str] = [f"flow {n}"]
            env.alice.auto = AutoAnswer(
                ring=rng.random() < 0.8,
                status=rng.choice([200, 200, 200, 486, None]),
                delay=rng.choice([0, 0.01, 1]),
            )
            env.trunk.auto = AutoAnswer(status=rng.choice([200, 200, 486]))
            sdp = b"" if rng.random() < 0.25 else None  # a late offer, or the agent's offer
            if sdp is not None:
                flow.append("late offer")
            # A caller that requires reliable provisional responses (RFC 3262), PRACKing them.
            extra = [("Require", "100rel"), ("Supported", "100rel")] if rng.random() < 0.25 else []
            if extra:
                flow.append("100rel")
            if rng.random() < 0.25:  # session timers (RFC 4028), asked for in any way
                expires = rng.choice(["90", "90;refresher=uas", "300;refresher=uac", "60", "x"])
                extra += [("Supported", "timer"), ("Session-Expires", expires)]
                if rng.random() < 0.5:
                    extra.append(("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE"))
                flow.append(f"session timer {expires}")
            if rng.random() < 0.4:
                caller_agent, callee_agent = env.alice, env.trunk
                call = await env.alice.invite("sip:+15550123@127.0.0.1:5060", sdp=sdp, extra=extra)
                if (await call.final()).status == 407:
                    await call.authenticate()
            else:
                caller_agent, callee_agent = env.trunk, env.alice
                call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=sdp, extra=extra)
            if rng.random() < 0.2:
                await trio.sleep(rng.choice([0, 0.001, 0.02, 0.3, 1.0]))
                await call.cancel()
                flow.append("CANCEL")
            final = await call.final(timeout=RING_TIMEOUT + SLOW)
            flow.append(f"final {final.status}")
            if final.status == 200:
                callee = await callee_agent.next_call(timeout=5)
                try:
                    async with trio.open_nursery() as sides:
                        sides.start_soon(in_call, rng, call, caller_agent, flow)
                        sides.start_soon(in_call, rng, callee, callee_agent, flow)
                except trio.TooSlowError:
                    raise AssertionError(f"a request was never answered: {flow}") from None
                for leg in (call, callee):
                    if leg.dialog is not None and leg.dialog.state.value != "terminated":
                        await leg.bye(timeout=SLOW)
            await trio.sleep(rng.choice([0, 0.1, 40]))
        await all_gone(env)
    assert no_internal_errors(caplog) == []


# -- mutated INVITEs, as bytes ---------------------------------------------------------------

JUNK = ["", ";", "<>", "<sip:>", "sip:@", "-1", "4294967296", "x" * 500, "*", "1 FOO", "a,b,c"]
HEADERS = [
    *("Require", "Proxy-Require", "Route", "Record-Route", "Contact", "Via", "CSeq", "To"),
    *("Session-Expires", "Min-SE", "Supported"),
]


def mutate_message(data: bytes, rng: random.Random) -> bytes:
    """One to three header edits: drop, repeat, replace a value or a parameter, add a header."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    for _ in range(rng.choice([1, 1, 2, 3])):
        i = rng.randrange(1, len(lines))
        name, _, value = lines[i].partition(":")
        edit = rng.randrange(5)
        if edit == 0 and len(lines) > 2:
            del lines[i]
        elif edit == 1:
            lines.insert(i, lines[i])
        elif edit == 2:
            lines[i] = f"{name}: {rng.choice(JUNK)}"
        elif edit == 3:
            params = value.split(";")
            params[rng.randrange(len(params))] = rng.choice(JUNK)
            lines[i] = f"{name}:{';'.join(params)}"
        else:
            lines.insert(i, f"{rng.choice(HEADERS)}: {rng.choice(JUNK)}")
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


async def final_status_line(sock: MemoryDatagramSocket) -> str:
    """The status line of the next final response that arrives on ``sock`` (read as text: a 400
    to a request without CSeq has none either, and would not parse)."""
    while True:
        reply, _ = await sock.recvfrom()
        line = reply.split(b"\r\n", 1)[0].decode(errors="replace")
        words = line.split(" ", 2)
        if len(words) > 1 and words[0] == "SIP/2.0" and words[1].isdigit() and int(words[1]) >= 200:
            return line


async def test_mutated_invites_as_bytes(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # From the trunk's address (trusted by source), so each INVITE that parses makes a call.
    rng = random.Random(voipgw_seed)
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    sock = env.network.bind(("127.0.0.2", 5070))
    finals: dict[int | None, int] = {}
    with caplog.at_level(logging.INFO):
        for n in range(MESSAGES):
            invite = env.trunk.new_request(
                "INVITE",
                env.did_uri(ALICE_DID),
                call_id=f"mutated-{n}",
                from_tag=f"m{n}",
                body=env.trunk.offer_sdp(),
                content_type="application/sdp",
            )
            via = f"SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKm{voipgw_seed}x{n};rport"
            data = serialize_message(invite.with_headers(invite.headers.prepend("Via", via)))
            data = data.replace(b"127.0.0.2:5060", b"127.0.0.2:5070")  # Contact: this socket
            await sock.sendto(mutate_message(data, rng), GW)
            final = None
            with trio.move_on_after(SLOW):  # a message without a usable Via gets nothing
                final = int((await final_status_line(sock)).split(" ")[1])
            finals[final] = finals.get(final, 0) + 1
        await all_gone(env)  # the 200s we never ACK end in BYE after 64*T1
    assert no_internal_errors(caplog) == []
    assert 500 not in finals, finals  # 500 is what an exception in a call answers
    assert finals.get(200) and finals.get(400), finals  # some went through, some were refused


async def test_an_invite_without_contact_gets_400_and_nobody_is_called(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # What the byte mutations found: it used to ring alice and fail with 500 when she answered
    # (the A leg's dialog cannot exist without the caller's Contact, RFC 3261 §8.1.1.8).
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert call.exchange is not None
    # The agent's INVITE, sent again without its Contact from a second socket.
    sock = env.network.bind(("127.0.0.2", 5071))
    original = call.exchange.request
    without = original.with_headers(
        original.headers.remove("Contact")
        .set("Call-ID", "no-contact")
        .set("Via", "SIP/2.0/UDP 127.0.0.2:5071;branch=z9hG4bKnocontact;rport")
    )
    await sock.sendto(serialize_message(without), GW)
    with trio.fail_after(5):
        status_line = await final_status_line(sock)
    assert status_line.startswith("SIP/2.0 400 ") and "Contact" in status_line
    assert (await call.final()).status == 200  # the well-formed call went through
    assert len(env.alice.requests("INVITE")) == 1  # the one without Contact rang nobody
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
