"""Numbers through the B2BUA with a numbering plan (``[numbering]``, docs/configuration.md):

- an account dialling a national number reaches the trunk that serves it by its E.164 prefix,
  and the trunk gets the called number and the account's number (From, P-Asserted-Identity)
  in its ``number_format``;
- a carrier delivering national numbers reaches the DID written in E.164, and the phone sees
  the caller's number in E.164 (which it can call back through any trunk);
- an emergency number keeps its digits;
- lawful interception matches a target's E.164 number when the carrier sends it national.

Set-up as b2bua_env.py: alice registered at 127.0.0.3, the trunk "carrier" at 127.0.0.2, here
in Germany (country code 49, Berlin's area 30) and taking national numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gateway.plugins.taps.intercept import pdu
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, eventually, start_b2bua
from tests.component.calls.intercept_calls import activate, intercept_env
from tests.interop.harness.pki import Issued, TestCa, TestPki

BERLIN = {"country_code": "49", "area_code": "30"}
NATIONAL_CARRIER = {"prefixes": ["+49", "112"], "number_format": "national"}


async def alice_calls(env: B2bua, dialled: str) -> tuple[str, str, str | None]:
    """alice dials ``dialled``; what the carrier got: Request-URI user, From user, PAI."""
    call = await env.alice.invite(f"sip:{dialled}@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    assert (await call.final()).status == 200
    invite = (await env.trunk.next_call(timeout=5)).invite
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    uri, from_uri = invite.uri, invite.from_.uri
    return (
        getattr(uri, "user", ""),
        getattr(from_uri, "user", ""),
        invite.headers.get("P-Asserted-Identity"),
    )


async def test_an_account_dialling_nationally_goes_out_in_the_carriers_format(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, numbering=BERLIN, carrier=NATIONAL_CARRIER
    )
    for dialled in ("089123456", "0049-89-123456", "%2B4989123456"):
        called, caller, asserted = await alice_calls(env, dialled)
        assert called == "089123456", dialled
        # alice's DID +4930123456, written nationally for the carrier, in From and PAI.
        assert caller == "030123456"
        assert asserted == "<sip:030123456@127.0.0.1:5060>"
    # A subscriber number in Berlin, and the emergency number as dialled.
    assert (await alice_calls(env, "987654"))[0] == "030987654"
    assert (await alice_calls(env, "112"))[0] == "112"


async def test_without_a_plan_numbers_go_out_as_dialled(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, carrier={"prefixes": ["0", "+49"]})
    called, caller, _ = await alice_calls(env, "089123456")
    assert (called, caller) == ("089123456", ALICE_DID)


async def test_a_carriers_national_numbers_reach_the_did_and_the_phone_sees_e164(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, numbering=BERLIN, carrier=NATIONAL_CARRIER
    )
    env.trunk.user = "0301111111"  # the carrier's calling number, national
    call = await env.trunk.invite(env.did_uri("030123456"))  # alice's DID, national
    leg_b = await env.alice.next_call(timeout=5)
    assert getattr(leg_b.invite.from_.uri, "user", "") == "+49301111111"
    assert leg_b.invite.headers.get("P-Asserted-Identity") is None  # devices never get PAI
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_interception_matches_a_target_the_carrier_sends_nationally(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    pki: tuple[TestCa, Issued, Issued],
) -> None:
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki, numbering=BERLIN)
    await env.provision(activate("<e164Number>49301111111</e164Number>"))
    b2bua = env.b2bua
    # Somebody else calls first: no delivery. Then the target, written nationally.
    for caller, target in (("0302222222", False), ("0301111111", True)):
        b2bua.trunk.user = caller
        call = await b2bua.trunk.invite(b2bua.did_uri(ALICE_DID))
        leg_b = await b2bua.alice.next_call(timeout=5)
        await leg_b.answer(486)
        assert (await call.final()).status == 486
        await eventually(lambda: b2bua.calls == 0)
        if target:
            await eventually(lambda: any(p.payload.startswith(b"INVITE ") for p in env.x2()))
        else:
            assert env.x2() == []
    invites = [p for p in env.x2() if p.payload.startswith(b"INVITE ")]
    assert b"0301111111" in invites[0].payload.split(b"\r\n\r\n")[0]
    assert {p.attribute(pdu.MATCHED_TARGET) for p in env.x2()} == {
        b"49301111111"
    }  # the target as provisioned


@pytest.fixture
def pki(tmp_path: Path) -> tuple[TestCa, Issued, Issued]:
    test_pki = TestPki(tmp_path / "pki")
    ca = test_pki.ca("X1 CA")
    return ca, ca.issue("gw-test"), ca.issue("admf-1")


async def test_an_emergency_call_gets_through_whatever_the_limits(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """alice may have one call at a time and the carrier one channel: on a call already, she
    still reaches 112 (an emergency number); any other second call is refused."""
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"prefixes": ["+1", "112"], "max_calls": 1},
    )
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", max_calls=1)
    first = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    assert (await first.final()).status == 407
    await first.authenticate()
    assert (await first.final()).status == 200

    other = await env.alice.invite("sip:+15559999@127.0.0.1:5060")
    assert (await other.final()).status == 407
    await other.authenticate()
    assert (await other.final()).status == 403  # her limit

    emergency = await env.alice.invite("sip:112@127.0.0.1:5060")
    assert (await emergency.final()).status == 407
    await emergency.authenticate()
    assert (await emergency.final()).status == 200
    invites = env.trunk.requests("INVITE")
    assert [getattr(i.uri, "user", "") for i in invites] == ["+15551234", "112"]
    assert env.gateway.calls is not None
    refused = env.gateway.calls.limits.refused
    assert refused[(("account", "alice"), "call limit")] == 1  # the other call only
    assert refused[(("trunk", "carrier"), "call limit")] == 0


async def test_an_emergency_call_gets_past_the_gateways_own_call_cap(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The gateway-wide cap on calls in progress refuses a new call with 503; a call to 112 is
    still served (challenged, routed, answered)."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, carrier={"prefixes": ["+1", "112"]})
    manager = env.gateway.calls
    assert manager is not None
    manager.max_calls = 0

    other = await env.alice.invite("sip:+15559999@127.0.0.1:5060")
    final = await other.final()
    assert (final.status, final.reason) == (503, "Service Unavailable (call limit reached)")

    emergency = await env.alice.invite("sip:112@127.0.0.1:5060")
    assert (await emergency.final()).status == 407
    await emergency.authenticate()
    assert (await emergency.final()).status == 200
    assert [getattr(i.uri, "user", "") for i in env.trunk.requests("INVITE")] == ["112"]


async def test_an_emergency_call_gets_past_the_transaction_limit(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Past the table of server transactions (a flood filled it), new requests get a stateless
    503; a call to 112 is still served, and so is the BYE that ends it, while another call's
    BYE is not."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, carrier={"prefixes": ["+1", "112"]})
    endpoint = env.gateway.endpoint
    assert endpoint is not None
    ordinary = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    assert (await ordinary.final()).status == 407
    await ordinary.authenticate()
    assert (await ordinary.final()).status == 200
    endpoint.transactions.max_server_transactions = 0  # full: nothing new fits

    other = await env.alice.invite("sip:+15559999@127.0.0.1:5060")
    final = await other.final()
    assert (final.status, final.reason) == (503, "too many transactions")
    assert (await ordinary.bye()).status == 503

    emergency = await env.alice.invite("sip:112@127.0.0.1:5060")
    assert (await emergency.final()).status == 407
    await emergency.authenticate()
    assert (await emergency.final()).status == 200
    assert (await emergency.bye()).status == 200
    called = [getattr(i.uri, "user", "") for i in env.trunk.requests("INVITE")]
    assert called == ["+15551234", "112"]
    assert endpoint.statistics.emergency_overload_passes == 3  # two INVITEs and the BYE
