"""Registering with a trunk (``[[trunks]] register = true``, calls/trunk_registration.py): a
carrier that delivers calls only to a registered customer. The carrier (127.0.0.2) is a
SipAgent acting as a digest-challenging registrar, answering REGISTER through its
``out_of_dialog`` hook.

- the gateway registers (answering the challenge with the trunk's credentials), keeps one
  Call-ID with increasing CSeq, and refreshes before the granted expiry runs out;
- a 423 is answered with its Min-Expires; a refusal is logged, retried after 30 s, and the
  recovery logged;
- the carrier's calls to our Contact reach the account whose DID is in To, or in
  P-Called-Party-ID.

Signalling on the in-memory network, in virtual time. Set-up as b2bua_env.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from gateway.core.sip.grammar import parse_name_addr_untrusted
from tests.component.calls.b2bua_env import ALICE_DID, eventually
from tests.component.calls.trunk_registrar import PASSWORD, USERNAME, registering_carrier


async def test_the_gateway_registers_and_refreshes_before_the_expiry(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    _env, registrar = await registering_carrier(nursery, tmp_path, voipgw_seed)
    first = registrar.accepted[0]
    assert str(first.uri) == "sip:carrier.example"
    assert first.headers.get("To") == f"<sip:{USERNAME}@carrier.example>"
    assert first.headers.get("Contact") == f"<sip:{USERNAME}@127.0.0.1:5060>"
    assert first.headers.get("Expires") == "120"
    registered_at = registrar.registers[-1][0]
    # 120 s granted: refreshed at half of it (two margins of a minute would leave nothing).
    await eventually(lambda: len(registrar.accepted) == 2, timeout=120)
    assert 59 <= registrar.registers[-1][0] - registered_at <= 62
    second = registrar.accepted[1]
    assert second.call_id == first.call_id
    assert second.cseq.number > first.cseq.number


async def test_a_423_is_answered_with_its_min_expires(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    _env, registrar = await registering_carrier(nursery, tmp_path, voipgw_seed)
    registrar.answer = (423, [("Min-Expires", "3600")])
    # At the refresh, 60 s on: the 423, then the REGISTER again asking for 3600 s.
    await eventually(
        lambda: any(r.headers.get("Expires") == "3600" for _, r in registrar.registers),
        timeout=70,
    )
    first_ask = next(r for _, r in registrar.registers if r.headers.get("Expires") == "3600")
    refused = [r for _, r in registrar.registers if r.cseq.number == first_ask.cseq.number - 1]
    assert refused and refused[0].headers.get("Expires") == "120"


async def test_a_refusal_is_logged_retried_and_the_recovery_logged(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.core.calls.trunk_registration")
    env, registrar = await registering_carrier(nursery, tmp_path, voipgw_seed)
    registrar.answer = (403, [])
    registration = env.gateway.trunk_registrations["carrier"]
    await eventually(lambda: registration.failure == "403 Forbidden", timeout=120)
    failed_at = trio.current_time()
    assert "registration with trunk carrier failed: 403 Forbidden" in caplog.text
    assert "retrying in 30 s" in caplog.text
    assert PASSWORD not in caplog.text
    registrar.answer = None
    await eventually(lambda: registration.registered, timeout=60)
    assert 29 <= trio.current_time() - failed_at <= 32
    assert "registered with trunk carrier for 120 s (it had failed: 403 Forbidden)" in caplog.text


@pytest.mark.parametrize("where", ["To", "P-Called-Party-ID"])
async def test_the_carriers_calls_to_our_contact_reach_the_did_it_names(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    where: str,
) -> None:
    env, _registrar = await registering_carrier(nursery, tmp_path, voipgw_seed)
    contact = f"sip:{USERNAME}@127.0.0.1:5060"
    did = parse_name_addr_untrusted(f"<sip:{ALICE_DID}@carrier.example>")
    if where == "To":
        call = await env.trunk.invite(contact, to=did)
    else:
        call = await env.trunk.invite(contact, extra=[(where, str(did))])
    leg_b = await env.alice.next_call(timeout=5)
    assert leg_b.invite.uri.user == "alice"  # type: ignore[union-attr]
    final = await call.final()
    assert final.status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


@pytest.mark.parametrize(
    ("params", "registered", "refresh_after"),
    [
        (";expires=" + "9" * 400, True, 60),  # absurd: what we asked (120), refreshed at half
        (";expires=99999", True, 60),  # longer than asked: clamped to what we asked
        (";expires=0", False, None),  # not kept: a failure, retried
    ],
)
async def test_the_registrars_grant_is_bounded_by_what_we_asked(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    params: str,
    registered: bool,
    refresh_after: float | None,
) -> None:
    env, registrar = await registering_carrier(nursery, tmp_path, voipgw_seed)
    registration = env.gateway.trunk_registrations["carrier"]
    registrar.contact_params = params
    accepted, expires_at = len(registrar.accepted), registration.expires_at
    await eventually(lambda: len(registrar.accepted) == accepted + 1, timeout=70)  # the refresh
    at = registrar.registers[-1][0]
    # Its 200 handled: a new expiry, or the failure.
    await eventually(
        lambda: registration.expires_at != expires_at or registration.failure is not None
    )
    assert registration.registered is registered
    if refresh_after is not None:
        await eventually(lambda: len(registrar.accepted) == accepted + 2, timeout=130)
        assert refresh_after - 1 <= registrar.registers[-1][0] - at <= refresh_after + 2
    else:
        assert registration.failure == "200 without our Contact (or with expires=0)"


async def test_stopping_removes_the_registration_answering_the_challenge(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, registrar = await registering_carrier(nursery, tmp_path, voipgw_seed)
    accepted = len(registrar.accepted)
    await env.gateway.before_stop()
    assert len(registrar.accepted) == accepted + 1  # challenged first, then accepted
    removal = registrar.accepted[-1]
    assert removal.headers.get("Expires") == "0"
    assert removal.headers.get("Authorization") is not None
    registration = env.gateway.trunk_registrations["carrier"]
    assert registration.removed and not registration.registered
    await trio.sleep(700)  # long past any refresh: nothing more is sent
    assert len(registrar.accepted) == accepted + 1
