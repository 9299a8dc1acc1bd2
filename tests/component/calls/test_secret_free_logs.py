"""Nothing a phone or a transport hands the gateway puts a secret into its log, at any level.

- A Contact with a password (``sip:bob:<password>@host``: RFC 3261 §19.1.1 deprecates it, a
  phone may still send one) goes through registration, its refresh, NAT keepalives, a call to
  it (the password is in our INVITE's Request-URI, RFC 3261 §10.3 / §16.5), the call's end, a
  call whose INVITE cannot be sent to it, keepalives unanswered until its registration is
  removed, an unregistration and a registration that expires: no log line of any logger, DEBUG
  included, shows the password (gateway.core.sip.uri.redact_password; docs/architecture.md
  "Logged exceptions"), and the lines that name the Contact show it as ``sip:bob:***@...``.
- A transport that fails a send with a password in its exception's text (a plugin may raise
  anything) is logged by what the operating system says of its errno, never that text
  (gateway.core.logs.transport_error_text), in the lines and in the call's end reason.

Signalling on the in-memory network, in virtual time. Set-up as b2bua_env.py.
"""

from __future__ import annotations

import errno
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.ids import SeededIds
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.uri import SipUri
from gateway.testing.network import MemoryDatagramSocket
from gateway.testing.sip_agent import SipAgent
from tests.component.calls.b2bua_env import (
    BOB_DID,
    GW,
    eventually,
    start_b2bua,
)

BOB = ("127.0.0.7", 5060)
BOB_BEHIND_NAT = ("10.0.0.7", 5060)
CONTACT_PASSWORD = "pw-in-contact-7f3a"
TRANSPORT_SECRET = "transport-secret-91c2"


class PasswordInContact(SipAgent):
    """A phone whose Contact carries a password: ``sip:bob:<password>@host:port``."""

    @property
    def contact(self) -> NameAddr:
        host, port = self.contact_address
        return NameAddr(SipUri("sip", host, user=self.user, password=CONTACT_PASSWORD, port=port))


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every line logged, with its traceback's rendering, as an operator's log shows it."""
    return [f"{r.getMessage()}\n{r.exc_text or ''}" for r in caplog.records]


async def test_a_contacts_password_is_in_no_log_line(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, sip={"nat_keepalive_interval": 10.0})
    bob = PasswordInContact(
        env.network,
        BOB,
        ids=SeededIds(voipgw_seed + 7),
        user="bob",
        password="bob-password-1",
        proxy=GW,
        media_port=42000,
        contact_address=BOB_BEHIND_NAT,
    )
    await nursery.start(bob.serve)
    assert (await bob.register(expires=600)).status == 200
    await trio.sleep(25)  # keepalives (OPTIONS) to the contact
    assert bob.requests("OPTIONS")
    assert (await bob.register(expires=600)).status == 200  # a refresh
    # A call to him: our INVITE's Request-URI is his Contact, password and all.
    call = await env.trunk.invite(env.did_uri(BOB_DID))
    assert (await call.final()).status == 200
    invites = bob.requests("INVITE")
    assert invites and CONTACT_PASSWORD in str(invites[0].uri)  # it is there to leak
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    # A call whose INVITE to him cannot be sent (no flow to him: "cannot reach <contact>").
    endpoint = env.gateway.endpoint
    assert endpoint is not None
    real_flow_to = endpoint.flow_to

    async def refused(transport: str, address: Any, flow: Any = None) -> Any:
        if tuple(address) == BOB:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        return await real_flow_to(transport, address, flow)

    monkeypatch.setattr(endpoint, "flow_to", refused)
    unreachable = await env.trunk.invite(env.did_uri(BOB_DID))
    assert (await unreachable.final()).status >= 400
    await eventually(lambda: env.calls == 0)
    monkeypatch.setattr(endpoint, "flow_to", real_flow_to)
    # His keepalives go unanswered: the registration is removed ("registration of ... at
    # <contact> removed").
    keepalive = env.gateway.nat_keepalive
    assert keepalive is not None
    env.network.set_link(BOB, GW, drop=1.0)
    await eventually(lambda: keepalive.removed == 1, timeout=60)
    env.network.set_link(BOB, GW, drop=0.0)
    assert (await bob.register(expires=600)).status == 200
    assert (await bob.register(expires=0)).status == 200  # unregistered
    assert (await bob.register(expires=60)).status == 200
    # And this one expires: bindings expire on the wall clock (time.time), virtual time not.
    wall = time.time
    monkeypatch.setattr(time, "time", lambda: wall() + 120)
    assert env.gateway.directory is not None
    monkeypatch.setattr(env.gateway.directory, "now", time.time)
    store = env.gateway.store
    assert store is not None
    assert store.bindings_for_account("bob", now=time.time()) == ()
    expired = await env.trunk.invite(env.did_uri(BOB_DID))
    assert (await expired.final()).status == 480  # nobody to ring: his only contact expired
    lines = logged(caplog)
    # His contact was logged (the unreachable call, the keepalives' removal), password hidden.
    shown = [line for line in lines if "sip:bob:***@10.0.0.7:5060" in line]
    assert len(shown) >= 2, [line for line in lines if "bob" in line]
    assert [line for line in lines if CONTACT_PASSWORD in line] == []


async def test_a_transports_exception_text_is_in_no_log_line(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = SipAgent(
        env.network,
        BOB,
        ids=SeededIds(voipgw_seed + 7),
        user="bob",
        password="bob-password-1",
        proxy=GW,
        media_port=42000,
    )
    await nursery.start(bob.serve)
    assert (await bob.register()).status == 200
    real = MemoryDatagramSocket.sendto

    async def failing(self: MemoryDatagramSocket, data: Any, address: Any) -> int:
        # The transport (a plugin) fails every send to bob, saying a secret it had in hand.
        if tuple(address) == BOB and self.getsockname() == GW:
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, f"refused; login bob:{TRANSPORT_SECRET}"
            )
        return await real(self, data, address)

    monkeypatch.setattr(MemoryDatagramSocket, "sendto", failing)
    call = await env.trunk.invite(env.did_uri(BOB_DID))
    final = await call.final()
    assert final.status >= 400
    await eventually(lambda: env.calls == 0, timeout=60)
    lines = logged(caplog)
    unsent = [line for line in lines if "ECONNREFUSED (Connection refused)" in line]
    assert unsent, [line for line in lines if "bob" in line or "cannot" in line]
    assert [line for line in lines if TRANSPORT_SECRET in line] == []
    store = env.gateway.store
    assert store is not None
    await eventually(lambda: len(store.call_records_recent()) == 1)
    reasons = [str(r.end_reason) for r in store.call_records_recent()]
    assert reasons and not any(TRANSPORT_SECRET in reason for reason in reasons), reasons
