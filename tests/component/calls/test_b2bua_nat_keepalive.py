"""Keepalives to phones behind NAT (``[sip] nat_keepalive_interval``,
gateway/core/nat_keepalive.py): bob registers from 127.0.0.7 with a Contact saying 10.0.0.7, as
a phone behind a NAT does.

- he gets an OPTIONS every interval, sent to the NAT's address (where his REGISTER came from),
  and answers it; alice, registered with her own address as Contact, gets none;
- when his answers stop (the NAT's mapping is gone, the phone is off), his registration is
  removed after three keepalives without an answer, logged, and a call to him fails at once
  with 480 instead of ringing a contact nobody reaches for 32 s;
- without the setting nobody gets keepalives;
- a Contact with a password (RFC 3261 §19.1.1 deprecates it; a phone may still send one) is
  logged with the password hidden, at registration and at removal.

Signalling on the in-memory network, in virtual time. Set-up as b2bua_env.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from gateway.core.ids import SeededIds
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.uri import SipUri
from gateway.testing.sip_agent import SipAgent
from tests.component.calls.b2bua_env import BOB_DID, GW, B2bua, eventually, start_b2bua

BOB = ("127.0.0.7", 5060)
BOB_BEHIND_NAT = ("10.0.0.7", 5060)


class PasswordInContact(SipAgent):
    """A phone whose Contact carries a password: ``sip:bob:contact-secret@host:port``."""

    @property
    def contact(self) -> NameAddr:
        host, port = self.contact_address
        return NameAddr(SipUri("sip", host, user=self.user, password="contact-secret", port=port))


async def with_bob(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    interval: float | None,
    agent: type[SipAgent] = SipAgent,
) -> tuple[B2bua, SipAgent]:
    sip = {"nat_keepalive_interval": interval} if interval is not None else None
    env = await start_b2bua(nursery, tmp_path, seed, sip=sip)
    bob = agent(
        env.network,
        BOB,
        ids=SeededIds(seed + 7),
        user="bob",
        password="bob-password-1",
        proxy=GW,
        media_port=42000,
        contact_address=BOB_BEHIND_NAT,
    )
    await nursery.start(bob.serve)
    assert (await bob.register()).status == 200
    return env, bob


async def test_a_phone_behind_nat_gets_keepalives_and_answers_them(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await with_bob(nursery, tmp_path, voipgw_seed, interval=10.0)
    await trio.sleep(35)
    options = bob.requests("OPTIONS")
    assert 3 <= len(options) <= 4, len(options)
    assert str(options[0].uri) == "sip:bob@10.0.0.7:5060"  # the contact, reached through the NAT
    assert env.alice.requests("OPTIONS") == []  # not behind a NAT
    keepalive = env.gateway.nat_keepalive
    assert keepalive is not None and keepalive.removed == 0
    # Still registered: a call reaches him.
    call = await env.trunk.invite(env.did_uri(BOB_DID))
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_phone_that_stops_answering_is_unregistered_and_its_calls_fail_at_once(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.core.nat_keepalive")
    env, bob = await with_bob(nursery, tmp_path, voipgw_seed, interval=10.0)
    env.network.set_link(BOB, GW, drop=1.0)  # nothing he sends arrives any more
    keepalive = env.gateway.nat_keepalive
    assert keepalive is not None
    await eventually(lambda: keepalive.removed == 1, timeout=60)
    assert len(bob.requests("OPTIONS")) >= 3  # he got them; his answers were lost
    assert "registration of sip:bob@" in caplog.text
    assert "no answer to 3 keepalives (OPTIONS) in a row" in caplog.text
    assert env.gateway.store is not None
    assert env.gateway.store.bindings_for_account("bob", now=0) == ()
    started = trio.current_time()
    call = await env.trunk.invite(env.did_uri(BOB_DID))
    final = await call.final()
    assert final.status == 480
    assert trio.current_time() - started < 1.0


async def test_without_the_setting_nobody_gets_keepalives(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await with_bob(nursery, tmp_path, voipgw_seed, interval=None)
    await trio.sleep(60)
    assert bob.requests("OPTIONS") == []
    assert env.gateway.nat_keepalive is None


async def test_a_password_in_a_contact_is_never_logged(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    env, bob = await with_bob(
        nursery, tmp_path, voipgw_seed, interval=10.0, agent=PasswordInContact
    )
    assert "contact-secret" in str(bob.contact)  # what the REGISTER carried
    env.network.set_link(BOB, GW, drop=1.0)
    keepalive = env.gateway.nat_keepalive
    assert keepalive is not None
    await eventually(lambda: keepalive.removed == 1, timeout=60)
    assert "registered: 1 binding(s) for sip:bob@" in caplog.text
    assert "registration of sip:bob@" in caplog.text  # the removal's line, Contact redacted
    assert " at sip:bob:***@10.0.0.7:5060 removed" in caplog.text
    assert "contact-secret" not in caplog.text
