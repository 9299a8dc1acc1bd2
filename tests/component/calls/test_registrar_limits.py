"""``[registrar]`` decides what the gateway's registrar grants a phone (RFC 3261 §10.3 steps 6-7):
the expiry it asks for within ``min_expires`` .. ``max_expires`` (423 with Min-Expires below,
lowered above), ``default_expires`` when it asks none, and at most ``max_bindings`` contacts."""

from __future__ import annotations

import re
from pathlib import Path

import trio

from gateway.core.sip.message import Response
from gateway.testing.sip_agent import SipAgent
from tests.component.calls.b2bua_env import B2bua, start_b2bua
from tests.component.calls.b2bua_scenarios import unregistered_second_phone

LIMITS = {"min_expires": 120, "default_expires": 600, "max_expires": 900, "max_bindings": 1}


async def gateway(nursery: trio.Nursery, tmp_path: Path, seed: int) -> B2bua:
    # start_b2bua registers alice's phone (Expires 600, within the limits): one binding.
    return await start_b2bua(nursery, tmp_path, seed, registrar=LIMITS)


def granted(response: Response, agent: SipAgent) -> int:
    """The expiry the 200 gives ``agent``'s contact (its Contact's expires parameter)."""
    assert response.status == 200, response.reason
    host, port = agent.contact_address
    for contact in response.headers.get_all("Contact"):
        if f"@{host}:{port}" in contact:
            found = re.search(r";expires=(\d+)", contact)
            assert found is not None, contact
            return int(found.group(1))
    raise AssertionError(f"no Contact of {host}:{port} in {response.headers.get_all('Contact')}")


async def register_without_expires(agent: SipAgent) -> Response:
    """REGISTER with neither an Expires header nor an expires parameter, the challenge
    answered."""
    request = agent.new_request("REGISTER", f"sip:{agent.domain}", to=agent.aor)
    challenge = await (await agent.send(request)).final()
    assert challenge.status == 401, challenge.reason
    retry = agent.new_request(
        "REGISTER", f"sip:{agent.domain}", to=agent.aor, call_id=request.call_id, cseq=2
    )
    return await (await agent.send(agent.authorize(retry, challenge))).final()


async def test_expiries_are_granted_within_the_configured_bounds(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await gateway(nursery, tmp_path, voipgw_seed)
    alice = env.alice
    too_brief = await alice.register(expires=119)
    assert too_brief.status == 423
    assert too_brief.headers.get("Min-Expires") == "120"
    assert granted(await alice.register(expires=120), alice) == 120
    assert granted(await alice.register(expires=86400), alice) == 900  # lowered to max_expires
    assert granted(await register_without_expires(alice), alice) == 600
    assert (await alice.register(expires=0)).status == 200  # a removal is never too brief


async def test_a_contact_past_max_bindings_is_refused(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await gateway(nursery, tmp_path, voipgw_seed)
    second = await unregistered_second_phone(env, nursery, voipgw_seed)
    refused = await second.register()
    assert (refused.status, refused.reason) == (403, "Too Many Registrations")
    # The first phone's binding is untouched, and once it is removed the second one fits.
    assert granted(await env.alice.register(), env.alice) == 600
    assert (await env.alice.register(expires=0)).status == 200
    assert granted(await second.register(), second) == 600
