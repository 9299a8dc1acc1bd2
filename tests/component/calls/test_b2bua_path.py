"""A phone registered through an edge proxy that added a Path (RFC 3327: a load balancer in
front of several gateways, a NAT-handling edge): a call to it is sent to the first Path hop
with the Path as Route headers, in order (§5.3), so the edge can find the phone's flow; the
INVITE's Request-URI stays the registered contact. Signalling on the in-memory network, in
virtual time; the edge is a SipAgent that answers the INVITE itself. Set-up as b2bua_env.py.
"""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.core.ids import SeededIds
from gateway.testing.sip_agent import SipAgent
from tests.component.calls.b2bua_env import BOB_DID, GW, eventually, start_b2bua

EDGE = ("127.0.0.9", 5060)
PHONE = ("127.0.0.8", 5060)
PATH = ["<sip:127.0.0.9:5060;lr;ob>", "<sip:edge2.example;lr>"]


async def test_a_call_to_a_contact_registered_with_a_path_goes_through_it(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    edge = SipAgent(env.network, EDGE, ids=SeededIds(voipgw_seed + 9), user="edge", proxy=GW)
    phone = SipAgent(
        env.network,
        PHONE,
        ids=SeededIds(voipgw_seed + 8),
        user="bob",
        password="bob-password-1",
        proxy=GW,
    )
    await nursery.start(edge.serve)
    await nursery.start(phone.serve)
    registered = await phone.register(extra=[("Path", ", ".join(PATH)), ("Supported", "path")])
    assert registered.status == 200

    call = await env.trunk.invite(env.did_uri(BOB_DID))
    assert (await call.final()).status == 200
    (invite,) = edge.requests("INVITE")  # to the first hop, not to the phone
    assert phone.requests("INVITE") == []
    assert str(invite.uri) == "sip:bob@127.0.0.8:5060"
    assert list(invite.headers.get_all("Route")) == PATH
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
