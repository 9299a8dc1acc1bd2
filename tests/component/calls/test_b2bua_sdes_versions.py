"""The o= version of our SDP to an SDES phone when only its keys change (RFC 3264 §8): the
session's version rule sees the plain SDP, our keys are added per leg (LegSecurity).

In virtual time on the in-memory network, its flows marked secure (SDES needs TLS; the memory
transport stands in); alice's agent is an SDES phone behind a best-effort offer (RFC 8643).
"""

from __future__ import annotations

import base64
from pathlib import Path

import trio

import gateway.plugins.keyexchange.sdes as sdes_plugin
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import simple_sdp
from tests.component.calls.b2bua_env import ALICE, ALICE_DID, start_b2bua
from tests.component.calls.secure_signalling import tls_signalling  # noqa: F401 (the fixture)

SUITE = "AES_CM_128_HMAC_SHA1_80"


def crypto_line(sdp: SessionDescription) -> tuple[str, bytes]:
    """The tag and key (with salt) of the first m= line's a=crypto line of :data:`SUITE`."""
    for name, value in sdp.media[0].attributes:
        if name == "crypto" and value is not None and value.split()[1] == SUITE:
            tag, _, inline = value.split()[:3]
            return tag, base64.b64decode(inline.removeprefix("inline:").split("|")[0])
    raise AssertionError(f"no a=crypto line of {SUITE}")


def phone_sdp(tag: str, key: bytes, *, version: int) -> bytes:
    inline = base64.b64encode(key).decode()
    return simple_sdp(ALICE[0], 30000, version=version, formats=("0",)) + (
        f"a=crypto:{tag} {SUITE} inline:{inline}\r\n".encode()
    )


async def test_our_answer_to_a_phones_new_key_has_the_next_o_version(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """A phone's re-INVITE with a new key of its own and nothing else changed: our 200 has a
    new key of ours (RFC 4568 §7.1.4) and so the next o= version, though the session's plain
    SDP for the leg did not change (before session 41's review it kept the version: a phone
    that trusts the rule could keep our old key). The same re-INVITE again keeps our key and
    the version."""
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, plugins=[("sdes", sdes_plugin)], alice_auto=None
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    invite = parse_sdp_untrusted(leg_b.invite.body)
    tag, offered_key = crypto_line(invite)
    await leg_b.answer(200, sdp=phone_sdp(tag, bytes(range(30)), version=1))
    assert (await call.final()).status == 200
    await env.alice.next_request("ACK")

    # Our 200 to its first re-INVITE answers with its one codec: the plain SDP changes too.
    first = await leg_b.reinvite(phone_sdp(tag, bytes(range(100, 130)), version=2))
    assert first.status == 200
    answered = parse_sdp_untrusted(first.body)
    # Another new key of the phone's, nothing else: only our key changes in our answer.
    second = await leg_b.reinvite(phone_sdp(tag, bytes(range(200, 230)), version=3))
    assert second.status == 200
    rekeyed = parse_sdp_untrusted(second.body)
    assert crypto_line(rekeyed)[1] not in (offered_key, crypto_line(answered)[1])
    assert rekeyed.origin == answered.origin.bumped()
    # The same offer again (a session refresh): our key and version stay (§7.1.4, §8).
    same = await leg_b.reinvite(phone_sdp(tag, bytes(range(200, 230)), version=3))
    assert same.status == 200
    assert parse_sdp_untrusted(same.body) == rekeyed
    assert (await call.bye()).status == 200
