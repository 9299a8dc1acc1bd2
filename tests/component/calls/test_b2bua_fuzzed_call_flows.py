"""Whole call flows in which one message of a real peer is replaced by a structure-aware mutation
of itself (the robustness rule: nothing from the network crashes the gateway or another call;
malformed SIP gets 400 with a reason, a malformed response is dropped, bad SDP gets 488).

The parsers are fuzzed on their own (tests/unit/fuzz/) and the call layer with a stranger's
messages (test_b2bua_fuzzed_input), in confirmed dialogs (test_b2bua_fuzzed_dialogs) and in
100rel early dialogs (test_b2bua_fuzzed_early_dialogs). This module walks the rest of a call:
each round is a new call trunk -> alice through the B2BUA -- the trunk's INVITE (at times
requiring 100rel or session timers, at times with a multipart body and a Geolocation), alice's
180 and 183 (at times reliable), her 200, the trunk's PRACK and ACK, at times the trunk's CANCEL,
then in the dialog re-INVITEs, UPDATEs, INFOs, REFERs and NOTIFYs from either side and the BYE
from one -- and one message of it, chosen per round (the point), goes out mutated in its place
(tests/component/calls/flow_fuzz.py: a header given an edge value, the body rewritten as odd
SDP or a broken multipart, Content-Length one off, or fuzz_checks' field and byte mutations).
The agent that sent it does not know: its retransmissions, and the ACKs of retransmitted 2xx,
are the original, as on a network that corrupted one datagram.

Oracle: a mutated request the parser refuses gets the status the parser names (400 with a
reason) when a Via can be salvaged, one it accepts gets a final response (488 when it is an
INVITE or UPDATE whose only mutation is an SDP offer the SDP parser refuses); nothing is logged at
error level and no log line carries a traceback (log_exception's ``exc_text``); the endpoint
counts no internal error; the round's call ends (by its flow, or by the gateway with a BYE or a
final response) and leaves no client transaction of the gateway waiting with no timer armed
(only a peer could end it), and the call manager with only the bystander, a call answered before
the rounds that answers a re-INVITE, and the gateway an OPTIONS, every few rounds. At the end
the bystander hangs up, the gateway still answers OPTIONS, and the call manager, the
endpoint's transaction and flow tables and the media port allocator are back to their size
before the calls.

VOIPGW_FUZZ_EXAMPLES (docs/testing.md) scales the number of rounds (a fortieth of it: 25 in
CI); VOIPGW_FUZZ_SEED moves the stream; ``--voipgw-seed`` picks the network's and the ids'.
A failure names the round, the point, the mutated bytes and what came back.
"""

from __future__ import annotations

import contextlib
import logging
import random
from pathlib import Path

import pytest
import trio

from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.errors import SipError
from gateway.core.sip.message import Request, Response
from gateway.testing.sip_agent import SDP, AutoAnswer, Call, SipAgent
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    BOB_DID,
    GW,
    B2bua,
    eventually,
    start_b2bua,
)
from tests.component.calls.early_dialog_fuzz import _bystander
from tests.component.calls.flow_fuzz import (
    PIDF,
    Interceptor,
    Match,
    headers_only,
)
from tests.component.calls.fuzz_checks import (
    DTMF_RELAY,
    SIPFRAG,
    WINDOW,
    _expected,
    _parsed,
    _responses_to,
    error_records,
    leftovers,
    table_sizes,
)
from tests.unit.fuzz.mutator import base_seed, examples

HEALTH_EVERY = 5  # rounds
CRLF = b"\r\n"
# Where one message is mutated: the call's set-up, its end, and requests in its dialog.
SETUP_POINTS = ["INVITE", "1xx", "200", "refusal", "ACK", "PRACK", "CANCEL", "CANCEL 200"]
DIALOG_POINTS = [
    *("re-INVITE", "re-INVITE 2xx", "UPDATE", "INFO", "REFER", "NOTIFY", "BYE", "BYE 2xx"),
]
POINTS = SETUP_POINTS + DIALOG_POINTS
REFER_TARGETS = [
    "<sip:+15550199@127.0.0.1:5060>",  # the carrier's number: the trunk answers it
    f"<sip:{BOB_DID}@127.0.0.1:5060>",  # an account never registered
    "<sip:+4930000@127.0.0.1:5060>",  # nobody
]


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The gateway's error-level log lines and every line of it with a traceback."""
    traced = [
        f"{r.getMessage()}\n{r.exc_text}"
        for r in caplog.records
        if r.name.startswith("gateway") and (r.exc_text or r.exc_info) and r.levelno < logging.ERROR
    ]
    return error_records(caplog) + traced


def _is_request(method: str, *, in_dialog: bool | None = None) -> Match:
    def match(message: Request | Response) -> bool:
        if not isinstance(message, Request) or message.method != method:
            return False
        return in_dialog is None or (message.to.tag is not None) == in_dialog

    return match


def _is_response(method: str, low: int, high: int, *, after: int = 0) -> Match:
    def match(message: Request | Response) -> bool:
        return (
            isinstance(message, Response)
            and low <= message.status < high
            and message.cseq.method == method
            and message.cseq.number > after
        )

    return match


class Round:
    """One call trunk -> alice, its flow, and the one message of it that goes out mutated."""

    def __init__(
        self,
        env: B2bua,
        rng: random.Random,
        point: str,
        hooks: dict[str, Interceptor],
        keep: set[str],
    ) -> None:
        self.env = env
        self.keep = keep  # the bystander's Call-IDs: never hung up by a round
        self.rng = rng
        self.point = point
        self.hooks = hooks
        self.side = rng.choice(["trunk", "alice"])  # who sends the in-dialog point
        self.steps: list[str] = []

    def arm(self, who: str, match: Match) -> None:
        self.hooks[who].arm(match)

    def disarm(self) -> None:
        for hook in self.hooks.values():
            hook.match = None

    async def run(self) -> str:
        env, rng, point = self.env, self.rng, self.point
        for agent in (env.alice, env.trunk):
            for received in agent.received:
                received.taken = True  # next_call() finds this round's INVITE
        extra: list[tuple[str, str]] = []
        if point == "PRACK" or rng.random() < 0.25:
            extra += [("Require", "100rel"), ("Supported", "100rel")]
        if rng.random() < 0.3:
            extra += [("Supported", "timer"), ("Session-Expires", "1800"), ("Min-SE", "90")]
        body, content_type = env.trunk.offer_sdp(), SDP
        if rng.random() < 0.2:  # RFC 6442: the location by value, next to the SDP
            content_type = "multipart/mixed;boundary=unique-boundary-1"
            body = (
                b"--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\n"
                + body
                + b"\r\n--unique-boundary-1\r\nContent-Type: application/pidf+xml\r\n"
                b"Content-ID: <loc@127.0.0.2>\r\n\r\n" + PIDF + b"\r\n--unique-boundary-1--\r\n"
            )
            extra += [("Geolocation", "<cid:loc@127.0.0.2>"), ("Geolocation-Routing", "yes")]
        if point == "INVITE":
            self.arm("trunk", _is_request("INVITE", in_dialog=False))
        elif point == "ACK":
            self.arm("trunk", _is_request("ACK"))
        elif point == "PRACK":
            self.arm("trunk", _is_request("PRACK"))
        elif point == "CANCEL":
            self.arm("trunk", _is_request("CANCEL"))
        elif point == "1xx":
            self.arm("alice", _is_response("INVITE", 101, 200))
        elif point == "200":
            self.arm("alice", _is_response("INVITE", 200, 300))
        elif point == "refusal":
            self.arm("alice", _is_response("INVITE", 300, 700))
        elif point == "CANCEL 200":
            self.arm("alice", _is_response("CANCEL", 200, 300))
        self.call = call = await env.trunk.invite(
            env.did_uri(ALICE_DID), sdp=body, content_type=content_type, extra=extra
        )
        leg_b = await _next_call(env.alice)
        if leg_b is None:  # the gateway refused the INVITE (or never saw it)
            return await self._finish(call, None, "no call to alice")
        self.leg_b = leg_b
        assert leg_b.incoming is not None
        offer_to_b = leg_b.invite.body
        reliable = "100rel" in leg_b.invite.headers.option_tags("Supported") and rng.random() < 0.4
        rseq = rng.randrange(1, 2**31 - 10)
        if reliable:
            extra_1xx = [("Require", "100rel"), ("RSeq", str(rseq))]
            await self._respond(leg_b, 183, env.alice.answer_sdp(offer_to_b), extra_1xx)
        else:
            await self._respond(leg_b, 180, b"", [])
            if rng.random() < 0.4:
                await self._respond(leg_b, 183, env.alice.answer_sdp(offer_to_b), [])
        await trio.sleep(1.0)
        if point in ("CANCEL", "CANCEL 200") or rng.random() < 0.1:
            await call.cancel()
            await trio.sleep(rng.choice([0.2, 2.0]))
        assert call.exchange is not None
        ringing = not [s for s in call.exchange.statuses if s >= 200]
        if ringing and leg_b.answered is None and env.calls >= 2:
            if reliable:  # RFC 3262 §3: our 2xx after the gateway's PRACK (wait for it)
                with trio.move_on_after(WINDOW):
                    await env.alice.next_request("PRACK", timeout=WINDOW + 1)
            if point == "refusal":
                status = rng.choice([404, 480, 486, 488, 503, 603])
                await self._respond(leg_b, status, b"", [])
            with contextlib.suppress(SipError):  # the gateway cancelled it meanwhile
                await leg_b.answer()
        try:
            final = await call.final(timeout=2 * WINDOW)
        except trio.TooSlowError:
            sent = [h.sent for h in self.hooks.values()]
            raise AssertionError(f"{point}: the INVITE got no final response: {sent!r}") from None
        self.steps.append(f"final {final.status}")
        if final.status != 200:
            return await self._finish(call, leg_b, f"{point}: {final.status}")
        await trio.sleep(1.0)  # the ACK (or its retransmission) is through
        if point in DIALOG_POINTS:
            await self._in_dialog(call, leg_b)
        return await self._finish(call, leg_b, f"{point}: answered")

    async def _respond(
        self, leg_b: Call, status: int, body: bytes, extra: list[tuple[str, str]]
    ) -> None:
        assert leg_b.incoming is not None
        if leg_b.answered is not None:
            return
        # SipError: the transaction ended (a CANCEL, a failure the mutation caused).
        with contextlib.suppress(SipError):
            await self.env.alice.respond(leg_b.incoming, status, body=body, extra=extra)

    async def _in_dialog(self, call: Call, leg_b: Call) -> None:
        env, rng, point = self.env, self.rng, self.point
        sender, other = (call, leg_b) if self.side == "trunk" else (leg_b, call)
        who = self.side
        answerer = "alice" if who == "trunk" else "trunk"
        before = rng.randrange(0, 2)  # valid requests before the mutated one
        for i in range(before + 1):
            mutated = i == before
            method = {"re-INVITE": "INVITE", "re-INVITE 2xx": "INVITE", "BYE 2xx": "BYE"}.get(
                point, point
            )
            if not mutated:
                method = rng.choice(["INVITE", "UPDATE", "INFO", "OPTIONS"])
            if method == "BYE":
                break  # the BYE is the end of the call, below
            if mutated and point == "re-INVITE 2xx":
                assert other.dialog is not None
                # The answerer's 2xx to the gateway's copy of the re-INVITE (a CSeq above any
                # the gateway sent it before).
                seq = other.dialog.remote_seq or 0
                self.arm(answerer, _is_response("INVITE", 200, 300, after=seq))
            elif mutated:
                self.arm(who, _is_request(method, in_dialog=True))
            await self._request(sender, method)
            self.disarm()
            if env.calls < 2:
                return

    async def _request(self, sender: Call, method: str) -> None:
        rng = self.rng
        agent = sender.agent
        body, content_type, extra = b"", None, []
        if method in ("INVITE", "UPDATE") and rng.random() < 0.8:
            body, content_type = agent.offer_sdp(), SDP
        elif method == "INFO":
            body, content_type = DTMF_RELAY, "application/dtmf-relay"
        elif method == "REFER":
            extra = [
                ("Refer-To", rng.choice(REFER_TARGETS)),
                ("Referred-By", f"<sip:{agent.user}@127.0.0.1>"),
            ]
        elif method == "NOTIFY":
            extra = [("Event", "refer"), ("Subscription-State", "active;expires=60")]
            body, content_type = SIPFRAG, "message/sipfrag;version=2.0"
        if method in ("INVITE", "UPDATE") and rng.random() < 0.3:
            extra += [("Supported", "timer"), ("Session-Expires", "90;refresher=uac")]
        try:
            exchange = await sender.request(
                method, body=body, content_type=content_type, extra=extra
            )
        except SipError:
            return  # its dialog ended
        final = await exchange.final(timeout=3 * WINDOW)
        self.steps.append(f"{agent.user} {method}: {final.status}")
        if method == "REFER" and final.status < 300:
            await trio.sleep(WINDOW)  # the transfer runs (its NOTIFYs answered by the agent)

    async def _finish(self, call: Call, leg_b: Call | None, outcome: str) -> str:
        """Hang up (the BYE from one side: the point's side when the point is BYE); then every
        dialog left of this round (a transfer's too); wait until only the bystander is left."""
        env, rng = self.env, self.rng
        if call.dialog is not None and leg_b is not None and env.calls >= 2:
            side = self.side if self.point.startswith("BYE") else rng.choice(["trunk", "alice"])
            sender = call if side == "trunk" else leg_b
            if self.point == "BYE":
                self.arm(side, _is_request("BYE", in_dialog=True))
            elif self.point == "BYE 2xx":  # the other side's 200 to the gateway's BYE
                self.arm("alice" if side == "trunk" else "trunk", _is_response("BYE", 200, 300))
            try:
                final = await (await sender.request("BYE")).final(timeout=3 * WINDOW)
                self.steps.append(f"{side} BYE: {final.status}")
            except SipError:
                pass
            self.disarm()
        with trio.move_on_after(4 * WINDOW):
            await eventually(lambda: env.calls <= 1, timeout=4 * WINDOW + 1)
        if env.calls > 1:  # a transfer's call, or one the BYE did not reach: hang up all
            for agent in (env.trunk, env.alice):
                await _hang_up_all(agent, self.keep)
            await eventually(lambda: env.calls <= 1, timeout=4 * WINDOW)
        return outcome


async def _next_call(alice: SipAgent) -> Call | None:
    with trio.move_on_after(WINDOW):
        return await alice.next_call(timeout=WINDOW + 1)
    return None


async def _hang_up_all(agent: SipAgent, keep: set[str]) -> None:
    for call in agent.calls:
        dialog = call.dialog
        if call.call_id in keep or dialog is None or dialog.state.value != "confirmed":
            continue
        try:
            exchange = await call.request("BYE")
        except SipError:
            continue
        await exchange.final(timeout=3 * WINDOW)
        dialog.terminate()


def _check_mutated(env: B2bua, hook: Interceptor, where: str, counts: dict[str, int]) -> None:
    """Each mutated message got what the rules owe it (once the round is over: retransmissions
    of the original may have been answered too, so the answer is looked for, not the only one)."""
    for how, data, start in hook.sent:
        expected = _expected(data)
        parsed = _parsed(data)
        failure = f"{where} ({how}): {headers_only(data)!r}"
        counts[f"{how} {expected if expected in ('none', 'final') else 'refused'}"] = (
            counts.get(f"{how} {expected if expected in ('none', 'final') else 'refused'}", 0) + 1
        )
        if expected == "none":
            continue
        if expected != "final":
            answers = _responses_to(env, hook.agent.address, start)
            statuses = [int(a[8:11]) for a in answers if a[8:11].isdigit()]
            assert int(expected) in statuses, f"{failure}\n  got {statuses}\n{_since(env, start)}"
            refusal = next(a for a in answers if int(a[8:11]) == int(expected))
            assert refusal.split(b"\r\n", 1)[0][12:].strip(), failure  # names the defect
            continue
        assert isinstance(parsed, Request)
        marker = f"\r\nCall-ID: {parsed.call_id}\r\n".encode()
        cseq = f"\r\nCSeq: {parsed.cseq.number} {parsed.cseq.method}\r\n".encode()
        finals = [
            d.data[8:11]
            for d in env.network.capture[start:]
            if d.src == GW
            and d.data.startswith(b"SIP/2.0 ")
            and d.data[8:9] in b"23456"
            and marker in d.data
            and cseq in d.data
        ]
        assert finals, f"{failure}\n  no final response"
        if _bad_offer(how, parsed):  # RFC 3261 §21.4.26 via RFC 3264: an offer we cannot read
            assert b"488" in finals, f"{failure}\n  got {finals} for an SDP offer it cannot parse"


def _stranded(env: B2bua) -> list[str]:
    """The gateway's client transactions waiting for nothing: no timer armed, so only a peer's
    final response would ever end them (an INVITE's in Proceeding whose call is gone)."""
    table = env.gateway.endpoint.transactions
    return [
        f"{txn!r} {txn.request.call_id if txn.request else ''}"
        for txn in table._client.values()
        if not txn.running_timers
    ]


def _since(env: B2bua, start: int) -> str:
    """The datagrams since capture index ``start``, a line each (what a failure shows)."""
    return "\n".join(
        f"  {d.time:.2f} {d.src} -> {d.dst}: {d.data.partition(CRLF)[0]!r}"
        for d in env.network.capture[start : start + 60]
    )


def _bad_offer(how: str, request: Request) -> bool:
    """Whether ``request`` is an offer (INVITE or UPDATE, RFC 3311) only its SDP body was
    mutated in, into SDP the parser refuses: the rule says 488."""
    if how != "body" or request.method not in ("INVITE", "UPDATE") or not request.body:
        return False  # no body: no offer (a late offer, RFC 3261 §13.2.1)
    if (request.headers.get("Content-Type") or "").lower() != SDP:
        return False
    try:
        parse_sdp_untrusted(request.body)
    except SdpError:
        return True
    return False


async def _options(agent: SipAgent) -> int:
    request = agent.new_request("OPTIONS", "sip:127.0.0.1:5060")
    return (await (await agent.send(request, GW)).final(timeout=WINDOW)).status


async def test_one_mutated_message_in_whole_call_flows(
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
        alice_auto=None,
        inactivity_timeout=10**7,  # the calls send no media
        hold_timeout=10**7,
    )
    await trio.sleep(WINDOW)  # the registration's transactions are over
    before = table_sizes(env)
    rng = random.Random(f"flows:{voipgw_seed}:{base_seed()}")
    hooks = {"trunk": Interceptor(env.trunk, rng), "alice": Interceptor(env.alice, rng)}
    for hook in hooks.values():
        hook.capture_size = lambda: len(env.network.capture)
    bystander, bystander_b = await _bystander(env)
    # From here both answer re-INVITEs (and the trunk a transfer's INVITE); alice's new calls
    # are answered by the rounds.
    env.trunk.auto = AutoAnswer()
    env.alice.auto = AutoAnswer(ring=False, status=None)
    keep = {bystander.call_id, bystander_b.call_id}
    total = max(20, examples() // 40)
    outcomes: dict[str, int] = {}
    counts: dict[str, int] = {}
    for number in range(total):
        env.network.capture.clear()
        env.network.deliveries.clear()
        for hook in hooks.values():
            hook.sent.clear()
        point = POINTS[number % len(POINTS)] if number < len(POINTS) else rng.choice(POINTS)
        round_ = Round(env, rng, point, hooks, keep)
        outcome = await round_.run()
        round_.disarm()
        await trio.sleep(2.0)  # the answer to a mutated message sent last is through
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        where = f"round {number} ({point}, {round_.steps})"
        for hook in hooks.values():
            _check_mutated(env, hook, where, counts)
        errors = error_lines(caplog)
        caplog.clear()
        assert errors == [], (where, [h.sent[-1:] for h in hooks.values()], errors)
        assert env.gateway.endpoint.statistics.internal_errors == 0, where
        assert env.calls == 1, where
        if (number + 1) % HEALTH_EVERY == 0:
            offer = env.alice.offer_sdp()
            assert (await bystander_b.reinvite(offer, timeout=WINDOW)).status == 200, where
            assert await _options(env.trunk) == 200, where
        await trio.sleep(WINDOW)  # every transaction of the round is over
        assert _stranded(env) == [], (where, [h.sent[-1:] for h in hooks.values()])
    assert (await bystander.bye(timeout=WINDOW)).status == 200
    assert await _options(env.trunk) == 200
    await trio.sleep(2 * WINDOW + 10)  # every transaction and 2xx retransmission is over
    await eventually(lambda: table_sizes(env)["calls"] == 0)
    assert table_sizes(env) == before, leftovers(env)
    assert error_lines(caplog) == []
    assert env.gateway.endpoint.statistics.internal_errors == 0
    print("call-flow rounds:", total, dict(sorted(outcomes.items())))
    print("call-flow mutations:", dict(sorted(counts.items())))
