"""With ``[media] workers = 2`` an ended call is freed by reference counting, as in-process.

tests/component/calls/test_b2bua_call_freed.py runs each call shape (call_shapes.py) against the
in-process relay. Here the same shapes run against a gateway whose relay is two real worker
processes on 127.0.0.1 (ports of this process, tests/port_blocks.py), in real time, signalling
on the in-memory SIP network: what the SIP process keeps of a worker's streams (``CallRelay``,
``RemoteStream`` and their sides and directions) must not hold the call in a reference cycle.
A 25-minute soak with two workers found every call cyclic garbage (docs/benchmarks.md "Soak"):
the SIP process's heap grew to a million blocks between full collections, and each full
collection (300-590 ms) held the event loop long enough that the requests behind it were
refused as overload, every 71 s at 80 calls/s. The recorded call (the worker sends the SIP
process a copy of every packet it relays, for the recorder's sink there) was cyclic garbage in
process and with workers alike: the sink held the call (its recording indication), the call its
taps, the taps the sink.

An intercepted call (the worker sends the SIP process a copy of every packet, which the
intercept's sink queues as X3 PDUs) and a call recorded by SIPREC (its streams to the SRS are
the worker's, the session to the SRS the SIP process's) likewise. The DTLS-SRTP caller's
handshake reaches the SIP process through a worker (the phone is a real socket on 127.0.0.1,
tests/component/calls/dtls_phone.py), and the ring timeout runs with a Timer C of 2 s, this
test being in real time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from gateway.core.calls.call import Call
from gateway.core.calls.transfer import Transfer
from gateway.core.media.remote_relay import CallRelay, RemoteStream
from gateway.core.media.session import MediaSession
from tests.component.calls.b2bua_env import ALICE_DID, eventually
from tests.component.calls.call_shapes import (
    SHAPES,
    Made,
    alive,
    cyclic_garbage,
    record_made,
    start_shapes_b2bua,
)
from tests.component.calls.intercept_calls import (
    activate,
    answered_with_media,
    intercept_env,
    pki,  # noqa: F401 (the fixture)
)
from tests.component.calls.siprec_calls import (
    hang_up_recorded_call,
    recorded_call_with_media,
    siprec_env,
)
from tests.interop.harness.pki import Issued, TestCa
from tests.port_blocks import ModuleBlock

# Only reference counting frees anything while a test runs (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("no_collector")
MEDIA_PORTS = ModuleBlock(100)  # this process's own ports (tests/port_blocks.py)
TRACKED = (Call, MediaSession, Transfer, CallRelay, RemoteStream)
RING_TIMEOUT = 2.0  # [sip] ring_timeout for the ring-timeout shape, in real time


def workers() -> dict[str, object]:
    """``[media]``: two workers, on this module's ports."""
    return {"workers": 2, "ports": MEDIA_PORTS.text()}


@pytest.mark.parametrize("shape", SHAPES)
async def test_an_ended_call_through_media_workers_is_freed_by_reference_counting(
    nursery: trio.Nursery,
    tmp_path: Path,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    shape: str,
) -> None:
    env = await start_shapes_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        ring_timeout=RING_TIMEOUT if shape == "ring-timeout" else 30,
        media_table=workers(),
    )
    assert env.gateway.media_workers is not None and env.gateway.relay is None
    cyclic_garbage()  # nothing from the start counts
    made = record_made(monkeypatch, TRACKED)
    await SHAPES[shape](env, nursery, voipgw_seed)
    await freed(made, lambda: env.calls)


async def freed(made: Made, calls: Callable[[], int]) -> None:
    """The calls have ended and nothing they made is left, in a cycle or otherwise."""
    await eventually(lambda: calls() == 0, timeout=30)
    # A call's last wait is its streams' final counters from the worker (Close with
    # final_counters); once they came, nothing of the call is left, unless in a cycle.
    with trio.move_on_after(5):
        while alive(made):
            await trio.sleep(0.05)
    assert alive(made) == []
    assert {"Call", "MediaSession", "CallRelay", "RemoteStream"} <= {name for name, _ in made}
    assert cyclic_garbage() == []


async def test_an_intercepted_call_through_media_workers_is_freed_by_reference_counting(
    nursery: trio.Nursery,
    tmp_path: Path,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    pki: tuple[TestCa, Issued, Issued],  # noqa: F811
) -> None:
    env = await intercept_env(nursery, tmp_path, voipgw_seed, pki, media_table=workers())
    assert env.b2bua.gateway.media_workers is not None
    await env.provision(activate(f"<e164Number>{ALICE_DID[1:]}</e164Number>"))
    cyclic_garbage()  # nothing from the start (the ADMF's X1 connection) counts
    made = record_made(monkeypatch, TRACKED)
    call, talk = await answered_with_media(env)
    with talk.caller, talk.callee:
        await talk.packets(0)
        await eventually(lambda: len(env.x3()) == 20)  # the worker copied each packet
        assert (await call.bye()).status == 200
    await freed(made, lambda: env.b2bua.calls)


@pytest.mark.parametrize("srs_hangs_up", [False, True], ids=["call-ends", "srs-hangs-up"])
async def test_a_siprec_recorded_call_through_media_workers_is_freed_by_reference_counting(
    nursery: trio.Nursery,
    tmp_path: Path,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    srs_hangs_up: bool,
) -> None:
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, media_table=workers())
    assert env.gateway.media_workers is not None
    cyclic_garbage()  # nothing from the start counts
    made = record_made(monkeypatch, TRACKED)
    call, recording = await recorded_call_with_media(env, srs)
    await hang_up_recorded_call(env, srs, call, recording, srs_first=srs_hangs_up)
    await freed(made, lambda: env.calls)
