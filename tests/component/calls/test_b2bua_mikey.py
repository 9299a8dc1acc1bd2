"""MIKEY through the B2BUA, in virtual time on the in-memory network, its signalling flows
marked secure (the NULL container only travels over TLS; the memory transport stands in for it):

- a MIKEY caller keyed from its own I_MSG, bridged to a callee in plain RTP, and to a callee
  that takes SDES: each leg keyed on its own, the caller's a=key-mgmt never forwarded;
- a callee offered MIKEY (policy ``mikey``) keyed from the gateway's I_MSG;
- a callee answering with a MIKEY error message ends the call, both sides told why;
- a MIKEY caller on a leg without TLS is refused with a 488 saying so;
- a re-INVITE with the same I_MSG keeps the keys;
- PSK and DH-HMAC callers over UDP keyed with their trunk's pre-shared key (the call manager
  tells the leg's LegSecurity whose leg it is), and a wrong key refused with the reason.
"""

from __future__ import annotations

import base64
from pathlib import Path

import attrs
import pytest
import trio

import gateway.plugins.keyexchange.mikey as mikey_plugin
import gateway.plugins.keyexchange.sdes as sdes_plugin
from gateway.core.interfaces import KeysReady, LegInfo, SrtpKeys
from gateway.core.sdp.model import MediaDescription, SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.mikey import MikeyKeyExchange
from gateway.plugins.keyexchange.mikey.engine import MikeyNegotiation, MikeySettings, keymgmt_value
from gateway.plugins.keyexchange.mikey.payloads import (
    DataType,
    ErrorPayload,
    Header,
    Timestamp,
    encode_message,
    parse_message_untrusted,
)
from gateway.plugins.keyexchange.mikey.psk import PskStore
from gateway.plugins.keyexchange.sdes import SdesKeyExchange
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, eventually, start_b2bua
from tests.component.calls.secure_signalling import tls_signalling  # noqa: F401 (the fixture)

CALLER_PORT = 41000  # SDP only: nothing binds it


def mikey_sdp(
    negotiation: MikeyNegotiation | None, *, port: int = CALLER_PORT, proto: str = "RTP/SAVP"
) -> bytes:
    lines = "".join(
        f"a={name}:{value}\r\n"
        for name, value in (negotiation.local_sdp_attributes() if negotiation else ())
    )
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n{lines}"
    ).encode()


def pairs(sd: SessionDescription, media: MediaDescription) -> list[tuple[str, str | None]]:
    return [(a[0], a[1]) for a in media.attributes] + [(a[0], a[1]) for a in sd.attributes]


def mirrored(keys: SrtpKeys) -> SrtpKeys:
    return attrs.evolve(keys, local_key=keys.remote_key, remote_key=keys.local_key)


def keys_of(negotiation: MikeyNegotiation) -> SrtpKeys:
    event = negotiation.next_event()
    assert isinstance(event, KeysReady), event
    return event.keys


async def with_mikey(
    nursery: trio.Nursery, tmp_path: Path, seed: int, *, sdes: bool = False, **kwargs: object
) -> B2bua:
    plugins: list[tuple[str, object]] = [("mikey", mikey_plugin)]
    if sdes:
        plugins.append(("sdes", sdes_plugin))
    return await start_b2bua(
        nursery,
        tmp_path,
        seed,
        plugins=plugins,
        carrier={"media_policy": "mikey"},
        **kwargs,  # type: ignore[arg-type]
    )


def record(env: B2bua, side: str) -> dict[str, object]:
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    streams = gateway_call.security_record()[side]["streams"]
    assert isinstance(streams, list)
    return dict(streams[0])


def leg_keys(env: B2bua, side: str) -> SrtpKeys | None:
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    leg = gateway_call.a if side == "a" else gateway_call.b
    assert leg is not None and leg.security is not None
    return leg.security.keys(0)


async def test_a_mikey_caller_is_keyed_and_bridged_to_plain_rtp(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    env = await with_mikey(nursery, tmp_path, voipgw_seed)
    phone = MikeyKeyExchange().offer(suites=[], secure_signalling=True)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=mikey_sdp(phone))
    final = await call.final()
    assert final.status == 200, final.reason
    answer = parse_sdp_untrusted(final.body)
    media = answer.media[0]
    assert media.proto == "RTP/SAVP" and not media.attributes.has("key-mgmt")  # V=0
    phone.remote_sdp_attributes(pairs(answer, media))
    phone_keys = keys_of(phone)
    assert leg_keys(env, "a") == mirrored(phone_keys)
    leg_b = await env.alice.next_call()
    (value,) = (v for n, v in phone.local_sdp_attributes() if n == "key-mgmt")
    assert value is not None and value.split()[1].encode() not in leg_b.invite.body
    # Best effort: alice is offered the gateway's own MIKEY message in RTP/AVP; her phone
    # knows no MIKEY and answers plain RTP.
    assert b"RTP/AVP" in leg_b.invite.body
    caller = record(env, "a")
    assert caller["key_exchange"] == "mikey" and caller["encrypted"] is True
    assert caller["mikey_mode"] == "mikey-null (keys protected by TLS)"
    assert record(env, "b")["key_exchange"] == "none"
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_mikey_caller_bridged_to_an_sdes_callee(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    env = await with_mikey(nursery, tmp_path, voipgw_seed, sdes=True, alice_auto=None)
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", media_policy="sdes")
    phone = MikeyKeyExchange().offer(suites=[], secure_signalling=True)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=mikey_sdp(phone))
    leg_b = await env.alice.next_call()
    offer = parse_sdp_untrusted(leg_b.invite.body)
    offered = offer.media[0]
    assert offered.proto == "RTP/SAVP" and offered.crypto
    assert not offered.attributes.has("key-mgmt")
    callee = SdesKeyExchange().answer(pairs(offer, offered), suites=[], secure_signalling=True)
    assert callee is not None
    callee_keys = callee.next_event()
    assert isinstance(callee_keys, KeysReady)
    crypto = "".join(f"a={n}:{v}\r\n" for n, v in callee.local_sdp_attributes())
    body = mikey_sdp(None, port=42000).decode() + crypto
    await leg_b.answer(200, sdp=body.encode())
    final = await call.final()
    assert final.status == 200 and b"a=crypto" not in final.body
    answer = parse_sdp_untrusted(final.body)
    phone.remote_sdp_attributes(pairs(answer, answer.media[0]))
    assert leg_keys(env, "a") == mirrored(keys_of(phone))
    assert leg_keys(env, "b") == mirrored(callee_keys.keys)
    assert record(env, "a")["key_exchange"] == "mikey"
    assert record(env, "b")["key_exchange"] == "sdes"


async def test_a_callee_offered_mikey_is_keyed_from_the_gateways_message(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    env = await with_mikey(nursery, tmp_path, voipgw_seed, alice_auto=None)
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", media_policy="mikey")
    phone = MikeyKeyExchange().offer(suites=[], secure_signalling=True)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=mikey_sdp(phone))
    leg_b = await env.alice.next_call()
    offer = parse_sdp_untrusted(leg_b.invite.body)
    offered = offer.media[0]
    assert offered.proto == "RTP/SAVP" and not offered.crypto
    callee = MikeyKeyExchange().answer(pairs(offer, offered), suites=[], secure_signalling=True)
    assert callee is not None
    callee_keys = keys_of(callee)
    # The gateway's own message to alice, not the trunk phone's.
    assert offered.attributes.get("key-mgmt") != dict(phone.local_sdp_attributes())["key-mgmt"]
    await leg_b.answer(200, sdp=mikey_sdp(callee, port=42000))
    assert (await call.final()).status == 200
    await eventually(lambda: leg_keys(env, "b") is not None)
    assert leg_keys(env, "b") == mirrored(callee_keys)
    assert record(env, "b")["mikey_mode"] == "mikey-null (keys protected by TLS)"


async def test_a_callee_answering_a_mikey_error_ends_the_call_with_the_reason(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    env = await with_mikey(nursery, tmp_path, voipgw_seed, alice_auto=None)
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", media_policy="mikey")
    phone = MikeyKeyExchange().offer(suites=[], secure_signalling=True)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=mikey_sdp(phone))
    leg_b = await env.alice.next_call()
    offered = parse_sdp_untrusted(leg_b.invite.body).media[0]
    received = parse_message_untrusted(
        base64.b64decode((offered.attributes.get("key-mgmt") or "").split()[1])
    )
    error = encode_message(
        Header(DataType.ERROR, received.header.csb_id),
        [Timestamp.ntp_utc(1.8e9), ErrorPayload(10)],
    )
    body = mikey_sdp(None, port=42000).decode() + f"a=key-mgmt:{keymgmt_value(error)}\r\n"
    await leg_b.answer(200, sdp=body.encode())
    bye_b = await env.alice.next_request("BYE", timeout=10)
    reason = bye_b.request.headers.get("Reason") or ""
    assert "MIKEY message is an error: 10 (invalid SP parameter)" in reason
    final = await call.final()
    # The caller is told too: 488 with the reason as Warning.
    assert final.status == 488
    assert "MIKEY message is an error: 10" in (final.headers.get("Warning") or "")
    await eventually(lambda: env.calls == 0)


async def test_a_mikey_caller_without_tls_is_refused_with_the_reason(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_mikey(nursery, tmp_path, voipgw_seed)
    phone = MikeyKeyExchange().offer(suites=[], secure_signalling=True)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=mikey_sdp(phone))
    final = await call.final()
    assert final.status == 488
    warning = final.headers.get("Warning") or final.reason or ""
    assert "only sent and accepted over TLS" in warning
    assert env.alice.requests("INVITE") == []


async def test_a_re_invite_with_the_same_message_keeps_the_keys(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    env = await with_mikey(nursery, tmp_path, voipgw_seed)
    phone = MikeyKeyExchange().offer(suites=[], secure_signalling=True)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=mikey_sdp(phone))
    assert (await call.final()).status == 200
    keys = leg_keys(env, "a")
    assert keys is not None
    response = await call.reinvite(mikey_sdp(phone))
    assert response.status == 200
    await trio.sleep(5)
    assert leg_keys(env, "a") == keys
    fresh = MikeyKeyExchange().offer(suites=[], secure_signalling=True)
    response = await call.reinvite(mikey_sdp(fresh))
    assert response.status == 200
    await eventually(lambda: leg_keys(env, "a") != keys)
    fresh.remote_sdp_attributes([])
    assert leg_keys(env, "a") == mirrored(keys_of(fresh))
    assert env.trunk.requests("BYE") == []


KEY_HEX = "3f" * 32


@pytest.mark.parametrize("mode", ["psk", "dh-hmac"])
async def test_a_psk_caller_over_udp_is_keyed_with_its_trunks_key(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    mode: str,
) -> None:
    keys_file = tmp_path / "mikey-keys.toml"
    keys_file.write_text(f'[trunks]\ncarrier = "{KEY_HEX}"\n')
    keys_file.chmod(0o600)
    env = await with_mikey(
        nursery,
        tmp_path,
        voipgw_seed,
        plugin_tables={"enable": ["mikey"], "mikey": {"psk_file": str(keys_file)}},
    )
    phone_keys = PskStore({("account", "gw"): bytes.fromhex(KEY_HEX)})
    phone_leg = LegInfo(call_id="x", side="b", kind="account", name="gw", secure_signalling=False)
    exchange = MikeyKeyExchange(settings=MikeySettings(offer_modes=(mode,)), psks=phone_keys)
    phone = exchange.offer(suites=[], secure_signalling=False, leg=phone_leg)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=mikey_sdp(phone))
    final = await call.final()
    assert final.status == 200, final.reason
    answer = parse_sdp_untrusted(final.body)
    assert answer.media[0].attributes.has("key-mgmt")  # the V or DHHMAC response
    phone.remote_sdp_attributes(pairs(answer, answer.media[0]))
    assert leg_keys(env, "a") == mirrored(keys_of(phone))
    expected = {"psk": "mikey-psk", "dh-hmac": "mikey-dhhmac"}[mode]
    assert record(env, "a")["mikey_mode"] == expected


async def test_a_psk_caller_with_the_wrong_key_is_refused_with_the_reason(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
) -> None:
    keys_file = tmp_path / "mikey-keys.toml"
    keys_file.write_text(f'[trunks]\ncarrier = "{KEY_HEX}"\n')
    keys_file.chmod(0o600)
    env = await with_mikey(
        nursery,
        tmp_path,
        voipgw_seed,
        plugin_tables={"enable": ["mikey"], "mikey": {"psk_file": str(keys_file)}},
    )
    wrong = PskStore({("account", "gw"): bytes(32)})
    phone_leg = LegInfo(call_id="x", side="b", kind="account", name="gw", secure_signalling=False)
    exchange = MikeyKeyExchange(settings=MikeySettings(offer_modes=("psk",)), psks=wrong)
    phone = exchange.offer(suites=[], secure_signalling=False, leg=phone_leg)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=mikey_sdp(phone))
    final = await call.final()
    assert final.status == 488
    warning = final.headers.get("Warning") or ""
    assert "MIKEY MAC is wrong (another pre-shared key?)" in warning and KEY_HEX not in warning
    assert env.alice.requests("INVITE") == []
