"""The message mutator, expected answers and leftover/table checks that the fuzzed dialog tests
share: moved here from test_b2bua_fuzzed_dialogs.py so that no test module imports another."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.sip.errors import SipParseError
from gateway.core.sip.message import Request, Response
from gateway.core.sip.parser import parse_message_untrusted, salvage_request_headers
from gateway.testing.network import Address
from gateway.testing.sip_agent import Call
from tests.component.calls.b2bua_env import (
    GW,
    T1,
    B2bua,
    eventually,
    start_b2bua,
)
from tests.unit.fuzz.mutator import mutate as mutate_bytes

MAX_UDP = 65507
# Every retransmission a message causes is over before the next one (an INVITE's non-2xx
# final response is repeated until Timer H, 64*T1, RFC 3261 §17.2.1); a turn whose response is
# mutated waits for the gateway's own client transaction to time out too (Timer B/F, 64*T1)
# and its answer to be relayed. Virtual time: it costs nothing.
WINDOW = 64 * T1 + 1.0

# Values one header takes at a time: empty, out of range, wrong shape, huge.
JUNK = [
    "",
    ";",
    "<>",
    "<sip:>",
    "sip:@",
    "-1",
    "0",
    "4294967296",
    "2147483648",
    "x" * 500,
    "*",
    "1 FOO",
    "a,b,c",
    '"',
    "<sip:a@b>;tag=",
    "\u00b2",
]
HEADER_JUNK = {
    "RAck": [
        "1",
        "1 1",
        "x 1 INVITE",
        "1 x INVITE",
        "99999999999 1 INVITE",
        "1 1 BYE",
        "0 0 INVITE",
    ],
    "Refer-To": [
        "<sip:+15550199@127.0.0.1:5060>",
        "<sip:alice@127.0.0.1:5060?Replaces=gone%3Bto-tag%3Da%3Bfrom-tag%3Db>",
        "<sip:alice@127.0.0.1?Replaces=%3B%3B%3B>",
        "<sip:alice@127.0.0.1?Replaces=>",
        "<sip:x@127.0.0.1?Replaces=a%3Bto-tag%3D%3Bfrom-tag%3D&Require=replaces>",
        "<tel:+15550199>",
        "<sips:bob@127.0.0.1>",
        "<sip:bob@127.0.0.1>, <sip:carol@127.0.0.1>",
        "<http://example.com/>",
    ],
    "Referred-By": ["<sip:>", "sip:alice@127.0.0.1;cid=x", "<sip:a@b>" * 50],
    "Replaces": ["x;to-tag=a;from-tag=b", ";to-tag=;from-tag=", "x;early-only"],
    "Session-Expires": ["90", "1", "0", "90;refresher=uas", "1800;refresher=x", "soon", "-5"],
    "Min-SE": ["90", "86400", "1", "0", "-1", "x"],
    "Supported": ["timer", "100rel", "timer, 100rel, replaces", ",,,"],
    "Require": ["timer", "100rel", "foo", "replaces"],
    "Event": ["refer", "refer;id=1", "refer;id=x", "dialog", "presence", "talk"],
    "Subscription-State": ["active", "terminated;reason=noresource", "pending;expires=x", "foo"],
    "Content-Type": [
        "application/sdp",
        "application/dtmf-relay",
        "application/dtmf",
        "message/sipfrag;version=2.0",
        "multipart/mixed",
        "multipart/mixed;boundary=",
        "text/plain",
        "application/sdp;charset=utf-32",
    ],
    "Reason": ["Q.850;cause=16", "Q.850;cause=x", "SIP;cause=999999999", 'SIP;text="' + "a" * 300],
    "Contact": ["<sip:evil@127.0.0.9:5060>", "*", "<sips:x@127.0.0.2>", "<sip:[::1]:5060>"],
    "Allow": ["INVITE", "", "UPDATE, INFO"],
}
HEADERS = [*HEADER_JUNK, "Via", "CSeq", "To", "From", "Call-ID", "Max-Forwards", "Route"]

DTMF_RELAY = b"Signal=5\r\nDuration=160\r\n"

SIPFRAG = b"SIP/2.0 200 OK\r\n"


def _body_mutation(rng: random.Random, body: bytes) -> bytes:
    """The body through the byte mutator (all of the mutator's edits), or emptied."""
    if not body or rng.random() < 0.1:
        return rng.choice([b"", b"\r\n", b"x" * 3000, DTMF_RELAY, SIPFRAG])
    return mutate_bytes(rng, [body])


def mutate_field(data: bytes, rng: random.Random) -> bytes:
    """One field of a valid message: a header dropped, repeated, given a junk value or a junk
    parameter, a header added, or the body mutated (Content-Length fixed to fit, so the body's
    reader is what sees it)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    if rng.random() < 0.3:
        body = _body_mutation(rng, body)
    else:
        i = rng.randrange(1, len(lines))
        name, _, value = lines[i].partition(":")
        edit = rng.randrange(6)
        if edit == 0 and len(lines) > 2 and name != "Content-Length":
            del lines[i]
        elif edit == 1:
            lines.insert(i, lines[i])
        elif edit == 2:
            lines[i] = f"{name}: {rng.choice(HEADER_JUNK.get(name, JUNK) + JUNK)}"
        elif edit == 3:
            params = value.split(";")
            params[rng.randrange(len(params))] = rng.choice(JUNK)
            lines[i] = f"{name}:{';'.join(params)}"
        elif edit == 4:
            header = rng.choice(HEADERS)
            lines.insert(i, f"{header}: {rng.choice(HEADER_JUNK.get(header, JUNK))}")
        else:  # the request or status line: a word of it
            words = lines[0].split(" ")
            words[rng.randrange(len(words))] = rng.choice([*JUNK, "INVITE", "SIP/3.0", "99"])
            lines[0] = " ".join(words)
    out = [line for line in lines if not line.lower().startswith("content-length:")]
    out.append(f"Content-Length: {len(body)}")
    return "\r\n".join(out).encode() + b"\r\n\r\n" + body


def mutate_message(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """(how, the mutated message): one field, the whole message as bytes, or nothing."""
    draw = rng.random()
    if draw < 0.55:
        return "field", mutate_field(data, rng)[:MAX_UDP]
    if draw < 0.9:
        return "bytes", mutate_bytes(rng, [data])[:MAX_UDP]
    return "valid", data


def _parsed(data: bytes) -> Request | Response | None:
    try:
        return parse_message_untrusted(data)
    except SipParseError:
        return None


def _expected(data: bytes) -> str:
    """What the gateway owes the sender of ``data``: "none", "final" or a status number."""
    try:
        message = parse_message_untrusted(data)
    except SipParseError as err:
        if err.status is None or salvage_request_headers(data) is None:
            return "none"
        if data.lstrip(b"\r\n").startswith(b"ACK "):
            return "none"  # RFC 3261 §8.2.7
        return str(err.status)
    if isinstance(message, Response) or message.method == "ACK":
        return "none"
    return "final"


def _responses_to(env: B2bua, peer: Address, start: int) -> list[bytes]:
    """The gateway's distinct responses to ``peer`` since capture index ``start``."""
    found: list[bytes] = []
    for datagram in env.network.capture[start:]:
        data = datagram.data
        # To the peer's host: a mutated Via may name another port (RFC 3261 §18.2.2).
        ours = datagram.src == GW and datagram.dst[0] == peer[0] and data.startswith(b"SIP/")
        if ours and data not in found:
            found.append(data)
    return found


def _byes_to(env: B2bua, peer: Address, call_id: str, start: int) -> int:
    marker = f"\r\nCall-ID: {call_id}\r\n".encode()
    return sum(
        1
        for d in env.network.capture[start:]
        if d.src == GW and d.dst == peer and d.data.startswith(b"BYE ") and marker in d.data
    )


def table_sizes(env: B2bua) -> dict[str, int]:
    """The sizes of what the gateway keeps per call and per transaction: back to where they
    were once every call and transaction has ended."""
    gateway = env.gateway
    assert gateway.calls is not None and gateway.relay is not None
    endpoint = gateway.endpoint
    return {
        "calls": len(gateway.calls.calls),
        "call lookups": gateway.calls.lookup_entries,
        "client transactions": len(endpoint.transactions._client),
        "server transactions": len(endpoint.transactions._server),
        "server flows": len(endpoint._server_flows),
        "client requests": len(endpoint._client_requests),
        "sip taps": len(endpoint.sip_taps),
        "media ports free": gateway.relay.allocator.available,
        "media streams": len(gateway.relay.streams),
    }


def leftovers(env: B2bua) -> list[str]:
    """The endpoint's transactions still alive (what a leak's failure names)."""
    table = env.gateway.endpoint.transactions
    return [
        f"{txn!r} {txn.request.call_id if txn.request else ''} {txn.running_timers}"
        for txn in [*table._client.values(), *table._server.values()]
    ]


def error_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The gateway's error-level log lines (an "internal error" is one)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("gateway")
    ]


async def settled_b2bua(
    nursery: trio.Nursery, tmp_path: Path, seed: int, **options: Any
) -> tuple[B2bua, dict[str, int]]:
    """``start_b2bua(...)`` once its registration's transactions are over, and its
    :func:`table_sizes` then: what :func:`tables_back` compares with at the test's end."""
    env = await start_b2bua(nursery, tmp_path, seed, **options)
    await trio.sleep(WINDOW)
    return env, table_sizes(env)


async def tables_back(env: B2bua, before: dict[str, int]) -> None:
    """Once every timer of what the test did has run (two windows: a relayed transaction's
    and the gateway's own), the tables are as they were (:func:`settled_b2bua`); a failure names
    the transactions left."""
    await trio.sleep(2 * WINDOW)
    assert table_sizes(env) == before, leftovers(env)


async def goes_on(env: B2bua, bystander: Call) -> None:
    """An answered call another call's failure must spare: an OPTIONS in it, a re-INVITE and
    its BYE are answered 200, and the gateway has no call left."""
    assert (await (await bystander.request("OPTIONS")).final()).status == 200
    assert (await bystander.reinvite(env.trunk.offer_sdp())).status == 200
    assert (await bystander.bye()).status == 200
    await eventually(lambda: env.calls == 0)
