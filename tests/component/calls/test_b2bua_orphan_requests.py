"""Requests for a dialog the gateway does not know (RFC 3261 §12.2.2: 481) and a CANCEL that
matches no transaction (§9.2: 481): answered at once, relayed nowhere, nothing created; an
OPTIONS in a call's dialog is answered 200 while the call is up and 481 once it has ended (the
probe carriers' SBCs send to learn whether a call still is); a re-INVITE's 481 is never followed
by its 100 Trying (§17.2.1: no provisional response after the final one). Signalling on the
in-memory network, virtual time."""

from __future__ import annotations

from pathlib import Path

import attrs
import trio

from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.headers import NameAddr
from gateway.testing.sip_agent import SDP
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    GW,
    answered_call,
    eventually,
    start_b2bua,
)


async def test_an_in_dialog_options_gets_200_in_a_call_and_481_once_it_has_ended(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    probe = await call.request("OPTIONS")
    assert (await probe.final(timeout=5)).status == 200  # ours to answer: the call is up
    assert env.alice.requests("OPTIONS") == []
    assert call.dialog is not None
    ours, theirs = call.dialog.id.local_tag, call.dialog.id.remote_tag
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    uri = env.did_uri(ALICE_DID)
    to = NameAddr(attrs.evolve(parse_uri_untrusted(uri), params=())).with_tag(theirs or "")
    options = env.trunk.new_request(
        "OPTIONS", uri, to=to, call_id=call.call_id, from_tag=ours, cseq=10
    )
    late = await env.trunk.send(options, GW)
    assert (await late.final(timeout=5)).status == 481  # not 200: the call has ended


async def test_requests_of_a_dialog_that_never_was_get_481_and_create_nothing(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    uri = env.did_uri(ALICE_DID)
    target = parse_uri_untrusted(uri)
    to = NameAddr(attrs.evolve(target, params=())).with_tag("never-was")
    for method in ("BYE", "INFO", "OPTIONS", "INVITE"):
        body = env.trunk.offer_sdp() if method == "INVITE" else b""
        request = env.trunk.new_request(
            method, uri, to=to, body=body, content_type=SDP if body else None
        )
        exchange = await env.trunk.send(request, GW)
        assert (await exchange.final(timeout=5)).status == 481, method
    # §9.2: a CANCEL that matches no INVITE transaction.
    cancel = env.trunk.new_request("CANCEL", uri)
    assert (await (await env.trunk.send(cancel, GW)).final(timeout=5)).status == 481
    await trio.sleep(5)
    assert env.calls == 0
    assert env.alice.received == [r for r in env.alice.received if r.request.method == "REGISTER"]
    # The re-INVITE's 100 went before its 481, never after it.
    invite_answers = [
        d.data.split(b"\r\n", 1)[0]
        for d in env.network.capture
        if d.src == GW and d.data.startswith(b"SIP/2.0") and b" INVITE\r\n" in d.data
    ]
    assert invite_answers[-1] == b"SIP/2.0 481 Call/Transaction Does Not Exist", invite_answers
