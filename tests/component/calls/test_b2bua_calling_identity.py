"""Who a call's B leg says is calling: From, P-Asserted-Identity and Privacy.

An account calling out through a trunk is presented by its number there (the first of the
trunk's ``dids`` that reaches it, else the trunk's ``caller_id``), in From and in
P-Asserted-Identity (RFC 3325 §9.1: trunks are the gateway's trust domain); carriers accept
only their own numbers, and before this the trunk saw the account's name. A caller that asks
for privacy (RFC 3323: ``Privacy`` other than none, or an anonymous From) is sent on as
``"Anonymous" <sip:anonymous@anonymous.invalid>``, with ``Privacy: id`` and the asserted number
to a trunk, and nothing identifying to a device. Before, an account's name replaced the
anonymous From it sent: its caller ID restriction leaked.

Set-up as b2bua_env.py: trunk "carrier" (+1 numbers; alice's DID is ALICE_DID) at 127.0.0.2.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import trio

from gateway.core.ids import SeededIds
from gateway.core.sip.message import Request
from gateway.testing.sip_agent import SipAgent
from tests.component.calls.b2bua_env import ALICE_DID, GW, B2bua, eventually, start_b2bua

PBX = ("127.0.0.4", 5060)
ANONYMOUS_FROM = '"Anonymous" <sip:anonymous@anonymous.invalid>'


async def alice_calls(
    env: B2bua, agent: SipAgent, number: str, extra: Sequence[tuple[str, str]] = ()
) -> Request:
    """alice calls ``number`` (routed to ``agent``'s trunk) with ``extra`` headers; the INVITE
    the trunk got. The call is hung up."""
    call = await env.alice.invite(f"sip:{number}@127.0.0.1:5060", extra=extra)
    assert (await call.final()).status == 407
    await call.authenticate()
    assert (await call.final()).status == 200
    invite = (await agent.next_call(timeout=5)).invite
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    return invite


def without_tag(from_: str) -> str:
    return from_.split(";tag=")[0]


async def test_an_account_calling_a_trunk_is_presented_by_its_number_there(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    invite = await alice_calls(env, env.trunk, "+15551234")
    assert str(invite.from_.uri) == f"sip:{ALICE_DID}@127.0.0.1:5060"
    assert invite.headers.get("P-Asserted-Identity") == f"<sip:{ALICE_DID}@127.0.0.1:5060>"
    assert invite.headers.get("Privacy") is None


async def test_an_account_asking_for_privacy_is_anonymous_with_its_number_asserted_to_the_trunk(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    for privacy in ("id", "user; critical", "header"):
        invite = await alice_calls(env, env.trunk, "+15551234", extra=[("Privacy", privacy)])
        assert without_tag(invite.headers.get("From") or "") == ANONYMOUS_FROM, privacy
        assert invite.headers.get("P-Asserted-Identity") == f"<sip:{ALICE_DID}@127.0.0.1:5060>"
        assert invite.headers.get("Privacy") == "id"
    # "none" asks for nothing.
    invite = await alice_calls(env, env.trunk, "+15551234", extra=[("Privacy", "none")])
    assert invite.from_.uri is not None and ALICE_DID in str(invite.from_.uri)


async def test_a_trunk_callers_privacy_reaches_the_device_without_any_identity(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    pai = [("P-Asserted-Identity", "<sip:+15550100@127.0.0.2>"), ("Privacy", "id")]
    call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=pai)
    assert (await call.final()).status == 200
    invite = (await env.alice.next_call()).invite
    assert without_tag(invite.headers.get("From") or "") == ANONYMOUS_FROM
    # A device is outside the trust domain: no asserted identity, and nothing to withhold.
    assert invite.headers.get("P-Asserted-Identity") is None
    assert invite.headers.get("Privacy") is None
    assert "+15550100" not in (invite.headers.get("From") or "")
    assert (await call.bye()).status == 200
    # Without privacy the device sees the caller's number, as before.
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200
    invite = (await env.alice.next_call()).invite
    assert invite.from_.uri is not None and invite.from_.uri.user == "+15550100"  # type: ignore[union-attr]
    assert (await call.bye()).status == 200


async def test_an_account_without_a_number_on_the_trunk_gets_its_caller_id_or_its_name(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    for caller_id, presented in (("+442071230000", "+442071230000"), (None, "alice")):
        pbx_trunk = {"name": "pbx", "address": "udp:127.0.0.4:5060", "prefixes": ["+44"]}
        if caller_id is not None:
            pbx_trunk["caller_id"] = caller_id
        async with trio.open_nursery() as run:
            env = await start_b2bua(
                run, tmp_path / presented, voipgw_seed, extra_trunks=[pbx_trunk]
            )
            pbx = SipAgent(env.network, PBX, ids=SeededIds(voipgw_seed + 4), user="pbx", proxy=GW)
            await run.start(pbx.serve)
            invite = await alice_calls(env, pbx, "+447700900123")
            assert invite.from_.uri is not None and invite.from_.uri.user == presented  # type: ignore[union-attr]
            assert invite.headers.get("P-Asserted-Identity") == (
                f"<sip:{presented}@127.0.0.1:5060>"
            )
            run.cancel_scope.cancel()


async def test_an_anonymous_from_is_a_privacy_request_too(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # A PBX trunk whose caller withheld its number the RFC 3323 §4.1.1.3 way (an anonymous
    # From, no Privacy header): the device sees no identity either.
    pbx_trunk = {
        "name": "pbx",
        "address": "udp:127.0.0.4:5060",
        "prefixes": ["+44"],
        "dids": {"+442071230001": "alice"},
    }
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, extra_trunks=[pbx_trunk])
    for n, (user, domain) in enumerate(
        (("anonymous", "127.0.0.4:5060"), ("x", "anonymous.invalid"))
    ):
        pbx = SipAgent(
            env.network,
            PBX,
            ids=SeededIds(voipgw_seed + 4 + n),  # (new Call-IDs and branches each time)
            user=user,
            domain=domain,
            proxy=GW,
        )
        async with trio.open_nursery() as run:
            await run.start(pbx.serve)
            call = await pbx.invite(env.did_uri("+442071230001"))
            assert (await call.final()).status == 200, (user, domain)
            invite = (await env.alice.next_call()).invite
            assert without_tag(invite.headers.get("From") or "") == ANONYMOUS_FROM, (user, domain)
            assert invite.headers.get("P-Asserted-Identity") is None
            assert (await call.bye()).status == 200
            await eventually(lambda: env.calls == 0)
            run.cancel_scope.cancel()
        pbx.socket.close()
