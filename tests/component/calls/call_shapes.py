"""Call shapes and a collector-free check that what a call made is freed, shared by
tests/component/calls/test_b2bua_call_freed.py (the in-process relay) and
tests/integration/test_gateway_workers_call_freed.py (two media workers).

Each shape drives one kind of call (or a request outside a call) through a gateway started by
:func:`start_shapes_b2bua`; :func:`record_made` keeps a weak reference to every instance of the
classes asked for; with the ``no_collector`` fixture (tests/conftest.py) only reference
counting frees anything; and :func:`cyclic_garbage` names the gateway's and trio's types the
collector then finds unreachable.
"""

from __future__ import annotations

import base64
import gc
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import gateway.plugins.keyexchange.dtls_srtp as dtls_plugin
import gateway.plugins.keyexchange.sdes as sdes_plugin
import gateway.plugins.taps.recorder as recorder_plugin
from gateway.core.ids import SeededIds
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import AutoAnswer, Received, SipAgent, simple_sdp
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    GW,
    B2bua,
    answered_call,
    eventually,
    start_b2bua,
)
from tests.component.calls.dtls_callers import dtls_caller
from tests.component.calls.dtls_phone import bind
from tests.component.calls.recorder_calls import rtp
from tests.component.calls.sips_phones import BOB, TLS_TRUNK, tls_phone
from tests.component.calls.transfer_calls import BOB_URI, bob_phone, refer

BACKUP = ("127.0.0.5", 5060)
NUMBER = "+15551234"
SECURE_NUMBER = "+25551234"  # only the TLS trunk serves +2
SUITE = "AES_CM_128_HMAC_SHA1_80"
RECORDED_TRUNK = ("127.0.0.7", 5060)
RECORDED_NUMBER = "+35551234"  # only the recorded trunk serves +3


Made = list[tuple[str, weakref.ref[object]]]


def record_made(monkeypatch: pytest.MonkeyPatch, classes: tuple[type, ...]) -> Made:
    """From now on, every instance of ``classes`` made: its class name and a weak reference."""
    refs: Made = []
    for cls in classes:
        original = cls.__init__

        def recording(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> None:
            refs.append((type(self).__name__, weakref.ref(self)))
            __original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", recording)
    return refs


def alive(refs: Made) -> list[str]:
    return sorted(name for name, ref in refs if ref() is not None)


def cyclic_garbage() -> list[str]:
    """The types, of the gateway's and of trio's, of what the collector finds unreachable."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = [type(obj) for obj in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        # Freed now: only taken out of gc.garbage, they would be unreachable again, and found
        # again by the next call (a test's "nothing from before counts").
        gc.collect()
    mine = {f"{t.__module__}.{t.__qualname__}" for t in found}
    return sorted(name for name in mine if name.startswith(("gateway.", "trio.")))


async def ended(env: B2bua, refs: Made, *, settle: float = 1) -> None:
    """The call is over and its task has returned (its nursery closed): nothing it made is
    left."""
    await eventually(lambda: env.calls == 0, timeout=120)
    await trio.sleep(settle)
    assert refs, "no call was made"
    assert alive(refs) == []


async def register_refresh_expire(env: B2bua, nursery: trio.Nursery, seed: int) -> None:
    assert (await env.alice.register()).status == 200  # a refresh (start_b2bua registered)
    assert (await env.alice.register(expires=60)).status == 200
    await trio.sleep(90)  # the binding expires


async def options(env: B2bua, nursery: trio.Nursery, seed: int) -> None:
    request = env.trunk.new_request("OPTIONS", "sip:127.0.0.1:5060")
    assert (await (await env.trunk.send(request, GW)).final()).status == 200


async def plain(env: B2bua, nursery: trio.Nursery, seed: int) -> None:
    call, _leg_b = await answered_call(env)
    assert (await call.bye()).status == 200


async def refused(env: B2bua, nursery: trio.Nursery, seed: int) -> None:
    env.alice.auto = AutoAnswer(ring=True, status=486)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 486


async def cancelled(env: B2bua, nursery: trio.Nursery, seed: int) -> None:
    env.alice.auto = AutoAnswer(ring=True, status=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert call.exchange is not None
    await call.exchange.wait_for(lambda response: response.status == 180)
    await call.cancel()
    assert (await call.final()).status == 487


async def ring_timeout(env: B2bua, nursery: trio.Nursery, seed: int) -> None:
    env.alice.auto = AutoAnswer(ring=True, status=None)  # rings, never answers: Timer C
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final(timeout=60)).status == 408


async def challenged(env: B2bua, nursery: trio.Nursery, seed: int) -> None:
    env.trunk.auto = AutoAnswer()
    call = await env.alice.invite(f"sip:{NUMBER}@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200


async def hold_and_resume(env: B2bua, nursery: trio.Nursery, seed: int) -> None:
    call, _leg_b = await answered_call(env)
    assert (await call.reinvite(env.trunk.offer_sdp(direction="sendonly"))).status == 200
    assert (await call.reinvite(env.trunk.offer_sdp())).status == 200
    assert (await call.bye()).status == 200


async def failover(env: B2bua, nursery: trio.Nursery, seed: int) -> None:
    env.trunk.auto = AutoAnswer(ring=True, status=503)
    backup = SipAgent(
        env.network, BACKUP, ids=SeededIds(seed + 5), user="backup", proxy=GW, media_port=41000
    )
    backup.auto = AutoAnswer()
    await nursery.start(backup.serve)
    call = await env.alice.invite(f"sip:{NUMBER}@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    assert (await call.final()).status == 200
    assert len(backup.requests("INVITE")) == 1
    assert (await call.bye()).status == 200


async def blind_transfer(env: B2bua, nursery: trio.Nursery, seed: int) -> None:
    bob = await bob_phone(env, nursery, seed)
    _call, alice_leg = await answered_call(env)
    assert await refer(alice_leg, BOB_URI) == 202
    await bob.next_request("ACK")
    assert (await alice_leg.bye()).status == 200
    assert (await bob.calls[0].bye()).status == 200


def with_key(sdp: bytes, key: int, tag: str = "1", proto: str = "RTP/SAVP") -> bytes:
    """``sdp`` in ``proto`` with one SDES crypto line (RFC 4568 §9.1) of key octets ``key``."""
    inline = base64.b64encode(bytes([key]) * 30).decode()
    sdp = sdp.replace(b" RTP/AVP ", f" {proto} ".encode())
    return sdp + f"a=crypto:{tag} {SUITE} inline:{inline}\r\n".encode()


def tag_of(offer: bytes) -> str:
    """The tag of the offer's crypto line of SUITE (the answer's must be the same, §5.1.2)."""
    line = next(line for line in offer.decode().split("\r\n") if SUITE in line)
    return line.split()[0].split(":")[1]


async def sdes_both_legs(env: B2bua, nursery: trio.Nursery, seed: int) -> None:
    """A TLS phone calls a TLS trunk, both keyed by SDES; the phone re-keys, goes to plain RTP
    and back to SDES (each a re-INVITE the gateway carries to the trunk)."""
    bob = await tls_phone(env, nursery, BOB, "bob", "bob-password-1", seed + 5)
    trunk = SipAgent(env.network, TLS_TRUNK, ids=SeededIds(seed + 7), user="tt", auto=None)
    await nursery.start(trunk.serve)
    versions = iter(range(2, 10))

    async def answer(received: Received) -> bool:
        offer = received.request.body
        body = simple_sdp(TLS_TRUNK[0], 33000, version=next(versions))
        if b"a=crypto" in offer:
            body = with_key(body, next(versions), tag_of(offer), proto="RTP/AVP")
        await trunk.respond(received, 200, body=body)
        return True

    trunk.in_dialog = answer
    call = await bob.invite(
        f"sips:{SECURE_NUMBER}@127.0.0.1:5061", sdp=with_key(simple_sdp(BOB[0], 32000), 1)
    )
    assert (await call.final()).status == 407
    await call.authenticate()
    rung = await trunk.next_call()
    assert b"a=crypto" in rung.invite.body
    body = with_key(simple_sdp(TLS_TRUNK[0], 33000), 2, tag_of(rung.invite.body), "RTP/AVP")
    await rung.answer(200, sdp=body)
    assert (await call.final()).status == 200
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    record = gateway_call.security_record()
    assert [record[leg]["streams"][0]["key_exchange"] for leg in "ab"] == ["sdes", "sdes"]
    del gateway_call, record
    sdp = simple_sdp(BOB[0], 32000, version=2)
    assert (await call.reinvite(with_key(sdp, 3))).status == 200  # re-keyed
    assert (await call.reinvite(simple_sdp(BOB[0], 32000, version=3))).status == 200  # RTP
    sdp = simple_sdp(BOB[0], 32000, version=4)
    assert (await call.reinvite(with_key(sdp, 4))).status == 200  # SDES again
    assert (await call.bye()).status == 200


async def dtls_srtp(env: B2bua, nursery: trio.Nursery, seed: int) -> None:
    caller = await dtls_caller(nursery, env)
    with trio.fail_after(30):
        await caller.phone.keyed.wait()
    assert (await caller.call.bye()).status == 200


async def _relayed(
    sock: trio.socket.SocketType, to: tuple[str, int], peer: trio.socket.SocketType, seq: int
) -> None:
    """One PCMU packet from ``sock`` to the gateway's port ``to`` arrives at ``peer``."""
    packet = rtp(seq, 0x55, 0x3333 + sock.getsockname()[1])
    with trio.fail_after(10):
        while True:  # the first packets of a stream may come before its far end is latched
            await sock.sendto(packet, to)
            with trio.move_on_after(0.2):
                if await peer.recv(2048) == packet:
                    return


async def recorded(env: B2bua, nursery: trio.Nursery, seed: int) -> None:
    """alice calls the trunk the recorder records (start_shapes_b2bua): RTP each way through
    the relay, whose taps hand a copy of every packet to the recording."""
    with await bind(0) as phone, await bind(0) as far_end:
        trunk = SipAgent(
            env.network, RECORDED_TRUNK, ids=SeededIds(seed + 9), user="recorded", auto=None
        )
        await nursery.start(trunk.serve)
        call = await env.alice.invite(
            f"sip:{RECORDED_NUMBER}@127.0.0.1:5060",
            sdp=simple_sdp("127.0.0.1", phone.getsockname()[1]),
        )
        assert (await call.final()).status == 407
        await call.authenticate()
        rung = await trunk.next_call()
        await rung.answer(200, sdp=simple_sdp("127.0.0.1", far_end.getsockname()[1]))
        final = await call.final()
        assert final.status == 200
        to_trunk = ("127.0.0.1", parse_sdp_untrusted(final.body).media[0].port)
        to_phone = ("127.0.0.1", parse_sdp_untrusted(rung.invite.body).media[0].port)
        assert env.gateway.calls is not None
        (gateway_call,) = env.gateway.calls.calls
        assert gateway_call.security_record()["taps"]["names"] == ["recorder"]
        del gateway_call
        for seq in range(3):
            await _relayed(phone, to_trunk, far_end, seq)
            await _relayed(far_end, to_phone, phone, seq)
        assert (await call.bye()).status == 200
    directory = Path(env.gateway.config.plugin_tables["recorder"]["directory"])
    await eventually(lambda: len(list(directory.glob("*/*.wav"))) == 2)


SHAPES: dict[str, Callable[[B2bua, trio.Nursery, int], Awaitable[None]]] = {
    "answered": plain,
    "refused-486": refused,
    "cancelled": cancelled,
    "ring-timeout": ring_timeout,
    "digest-challenged": challenged,
    "hold-resume": hold_and_resume,
    "failover": failover,
    "blind-transfer": blind_transfer,
    "sdes-both-legs": sdes_both_legs,
    "dtls-srtp": dtls_srtp,
    "recorded": recorded,
}


NO_CALL: dict[str, Callable[[B2bua, trio.Nursery, int], Awaitable[None]]] = {
    "register-refresh-expire": register_refresh_expire,
    "options": options,
}


async def start_shapes_b2bua(
    nursery: trio.Nursery, tmp_path: Path, seed: int, *, ring_timeout: float = 30, **options: Any
) -> B2bua:
    """The gateway every shape runs against (``ring_timeout``: its Timer C, which the
    ``ring-timeout`` shape waits out; ``options``: more of start_b2bua's)."""
    return await start_b2bua(
        nursery,
        tmp_path,
        seed,
        sip={"ring_timeout": ring_timeout, "listen": ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061"]},
        tls_stand_in=True,
        plugins=[("sdes", sdes_plugin), ("dtls", dtls_plugin), ("recorder", recorder_plugin)],
        plugin_tables={
            "enable": ["recorder"],
            "recorder": {
                "directory": str(tmp_path / "rec"),
                "min_free_mb": 0,  # whatever the test machine's free disk
                "trunks": ["recorded"],
            },
        },
        extra_trunks=[
            {
                "name": "backup",
                "address": f"udp:{BACKUP[0]}:{BACKUP[1]}",
                "prefixes": ["+1"],
                "allowed_sources": [],
            },
            {"name": "secure-carrier", "address": "tls:127.0.0.6:5061", "prefixes": ["+2"]},
            {
                "name": "recorded",
                "address": f"udp:{RECORDED_TRUNK[0]}:{RECORDED_TRUNK[1]}",
                "prefixes": ["+3"],
            },
        ],
        **options,
    )
