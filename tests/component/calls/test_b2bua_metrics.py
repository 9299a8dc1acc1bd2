"""The ``metrics`` plugin on a running B2BUA: real HTTP scrapes on 127.0.0.1 (port 0), calls on
the in-memory network, RTP on real sockets through the relay, in virtual time.

- the counters move as calls start, are answered, carry media and end (each outcome), and the
  media totals stay when the call has ended;
- a trunk's max_calls refusals and a failed key exchange are counted;
- bad HTTP (another path, another method, garbage, an oversized head, a silent client, too
  many connections) is answered or cut off, and the next scrape still works;
- a port already taken stops the start-up with a line naming the plugin;
- without the plugin the core counts nothing for it;
- the internal tables (``voipgw_internal_entries``) are back to their idle size once calls end;
- call record retention: its window, the records it deleted, the passes the store failed, and
  the oldest record kept (left out of a scrape the store cannot answer).
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest
import trio

import gateway.plugins.keyexchange.dtls_srtp as dtls_plugin
import gateway.plugins.keyexchange.sdes as sdes_plugin
import gateway.plugins.keyexchange.zrtp as zrtp_plugin
import gateway.plugins.metrics as metrics_plugin
from gateway.core.c_heap import c_heap_figures
from gateway.core.gateway import HOUSEKEEPING_INTERVAL
from gateway.core.ids import SeededIds
from gateway.core.media.relay import DROP_REASONS
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.store.errors import StoreBusy, StoreError, StoreIndexing
from gateway.plugins.keyexchange.dtls_srtp import DtlsKeyExchange
from gateway.plugins.metrics.server import (
    CONNECTION_TIMEOUT,
    HEAD_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_REQUEST,
)
from gateway.testing.sip_agent import AutoAnswer, SipAgent, simple_sdp
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    GW,
    TRUNK,
    eventually,
    start_b2bua,
)
from tests.component.calls.dtls_phone import OTHER_ID, PHONE_ID, PHONE_PORT, bind, dtls_sdp
from tests.component.calls.metrics_scrape import aged_records, http, metrics_env, scrape
from tests.component.calls.recorder_calls import rtp
from tests.component.calls.scanner_requests import SCANNER
from tests.component.calls.scanner_requests import request as scanner_request
from tests.component.calls.zrtp_pairs import forged_hello, phone_exchange, zrtp_sdp
from tests.port_blocks import port_bases

CALLER_PORT, CALLEE_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)


NO_DROPS = dict.fromkeys(DROP_REASONS, 0)


def _drops_by_reason(samples: dict[str, float]) -> dict[str, float]:
    prefix = 'voipgw_media_dropped_packets_by_reason_total{reason="'
    return {
        key[len(prefix) : -2]: value for key, value in samples.items() if key.startswith(prefix)
    }


async def test_scrapes_follow_a_call_from_start_to_end_and_keep_its_media(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, address = await metrics_env(nursery, tmp_path, voipgw_seed)
    before = await scrape(address)
    assert before["voipgw_calls_started_total"] == 0
    assert before["voipgw_calls_in_progress"] == 0
    assert before["voipgw_registration_bindings"] == 1  # alice registered
    assert before['voipgw_build_info{version="0.1.0"}'] == 1

    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    leg_b = await env.alice.next_call()
    offered = parse_sdp_untrusted(leg_b.invite.body).media[0]
    await leg_b.ring()
    await trio.sleep(3)  # she answers after 3 s of ringing
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    assert final.status == 200
    answered = parse_sdp_untrusted(final.body).media[0]
    caller, callee = await bind(CALLER_PORT), await bind(CALLEE_PORT)
    with caller, callee:
        for seq in range(10):
            await caller.sendto(rtp(seq, 0x00, 0x1111), ("127.0.0.1", answered.port))
            await callee.sendto(rtp(seq, 0x80, 0x2222), ("127.0.0.1", offered.port))
            await trio.sleep(0.02)
        await caller.sendto(b"\x80\x00\x00", ("127.0.0.1", answered.port))  # not even a header
        await trio.sleep(0.1)

        during = await scrape(address)
        assert during["voipgw_calls_started_total"] == 1
        assert during["voipgw_calls_answered_total"] == 1
        assert during["voipgw_calls_in_progress"] == 1
        assert during['voipgw_trunk_calls_in_progress{trunk="carrier"}'] == 1
        assert during["voipgw_media_streams"] == 1
        assert during["voipgw_media_relayed_packets_total"] == 20
        assert during["voipgw_media_relayed_bytes_total"] == 20 * (12 + 160)
        assert during["voipgw_media_dropped_packets_total"] == 1
        # Why, by reason: every reason has its series, the runt is the one malformed packet.
        assert _drops_by_reason(during) == {**NO_DROPS, "malformed": 1}
        # Answered after about 3 s: in the 5 s bucket, not the 2 s one.
        assert during['voipgw_call_setup_seconds_bucket{le="2.0"}'] == 0
        assert during['voipgw_call_setup_seconds_bucket{le="5.0"}'] == 1
        assert during['voipgw_call_setup_seconds_bucket{le="+Inf"}'] == 1
        assert during["voipgw_call_setup_seconds_count"] == 1
        assert 3.0 <= during["voipgw_call_setup_seconds_sum"] < 3.5

        assert (await call.bye()).status == 200
        await eventually(lambda: env.calls == 0)

    after = await scrape(address)
    assert after["voipgw_calls_in_progress"] == 0
    assert after['voipgw_calls_ended_total{outcome="answered"}'] == 1
    assert after['voipgw_trunk_calls_in_progress{trunk="carrier"}'] == 0
    assert after["voipgw_media_streams"] == 0
    # The ended call's media stays counted: counters never go backwards.
    assert after["voipgw_media_relayed_packets_total"] == 20
    assert after["voipgw_media_relayed_bytes_total"] == 20 * (12 + 160)
    assert after["voipgw_media_dropped_packets_total"] == 1
    assert _drops_by_reason(after) == {**NO_DROPS, "malformed": 1}
    assert (
        after["voipgw_sip_messages_received_total"] > before["voipgw_sip_messages_received_total"]
    )


async def test_each_way_a_call_ends_is_counted_under_its_outcome(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, address = await metrics_env(nursery, tmp_path, voipgw_seed, sip={"ring_timeout": 5.0})
    # Rejected: alice is busy.
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.answer(486)
    assert (await call.final()).status == 486
    # Cancelled by the caller while it rings.
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    await trio.sleep(1)
    await call.cancel()
    assert (await call.final()).status == 487
    # Nobody answers within the ring timeout.
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    assert (await call.final(timeout=10)).status in (408, 480)
    await eventually(lambda: env.calls == 0)

    samples = await scrape(address)
    assert samples["voipgw_calls_started_total"] == 3
    assert samples["voipgw_calls_answered_total"] == 0
    assert samples['voipgw_calls_ended_total{outcome="rejected"}'] == 1
    assert samples['voipgw_calls_ended_total{outcome="cancelled"}'] == 1
    assert samples['voipgw_calls_ended_total{outcome="no_answer"}'] == 1
    assert samples['voipgw_calls_ended_total{outcome="answered"}'] == 0
    assert samples["voipgw_call_setup_seconds_count"] == 0


def tables(samples: dict[str, float]) -> dict[str, float]:
    """The ``voipgw_internal_entries`` samples, by table."""
    prefix = 'voipgw_internal_entries{table="'
    return {k[len(prefix) : -2]: v for k, v in samples.items() if k.startswith(prefix)}


# Grow with anything the process does once (caches up to their bound, the interpreter's heap,
# the C allocator's), or per peer address (flows: the trunk's, forgotten when idle).
NOT_PER_CALL = {
    "flows",
    "flows_by_remote",
    "ip_literal_cache",
    "ip_facts_cache",
    "digest_nonces_tracked",
    "python_allocated_blocks",
    "malloc_in_use_bytes",
    "malloc_free_bytes",
}


async def test_internal_tables_are_back_to_their_idle_size_once_calls_have_ended(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """What benchmarks/soak.py watches for leaks: every table the calls fill empties again."""
    env, address = await metrics_env(nursery, tmp_path, voipgw_seed, sip={"ring_timeout": 5.0})
    await trio.sleep(40)  # the set-up's REGISTER transaction ends (Timer J: 64*T1)
    idle = tables(await scrape(address))
    assert idle["sip_server_transactions"] == 0
    assert idle["trio_tasks"] > 0
    assert {"malloc_in_use_bytes", "malloc_free_bytes"} & idle.keys() == set(c_heap_figures())
    # Answered, with media ports, then ended by the caller.
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    leg_b = await env.alice.next_call()
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    assert (await call.final()).status == 200
    during = tables(await scrape(address))
    assert during["calls"] == 1
    assert during["call_dialogs"] == 2  # the caller's dialog and the callee's
    assert during["media_port_pairs"] == 2
    assert during["sip_server_transactions"] >= 1
    assert during["trio_tasks"] > idle["trio_tasks"]
    assert (await call.bye()).status == 200
    # Rejected, cancelled while ringing, and unanswered until the ring timeout.
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    await (await env.alice.next_call()).answer(486)
    assert (await call.final()).status == 486
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    await (await env.alice.next_call()).ring()
    await call.cancel()
    assert (await call.final()).status == 487
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    await (await env.alice.next_call()).ring()
    assert (await call.final(timeout=10)).status in (408, 480)
    await eventually(lambda: env.calls == 0)
    await trio.sleep(40)  # past every transaction's last timer (Timers J, K, L, M)

    after = tables(await scrape(address))
    assert after.keys() == idle.keys()
    grown = {
        name: (idle[name], after[name])
        for name in idle
        if name not in NOT_PER_CALL and after[name] != idle[name]
    }
    assert grown == {}


async def test_a_trunks_max_calls_refusals_are_counted(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, address = await metrics_env(nursery, tmp_path, voipgw_seed, carrier={"max_calls": 1})
    first = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    second = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await second.final()).status == 503

    samples = await scrape(address)
    assert samples['voipgw_trunk_max_calls{trunk="carrier"}'] == 1
    assert samples['voipgw_trunk_calls_in_progress{trunk="carrier"}'] == 1
    assert samples['voipgw_trunk_calls_refused_total{trunk="carrier",limit="max_calls"}'] == 1
    assert samples['voipgw_trunk_calls_refused_total{trunk="carrier",limit="max_cps"}'] == 0
    # No max_cps: no pace shown; SQLite: no cluster, no live nodes.
    assert not any(name.startswith("voipgw_trunk_paced_cps") for name in samples)
    assert "voipgw_store_live_nodes" not in samples
    await first.cancel()
    assert (await first.final()).status == 487


async def test_a_failed_key_exchange_is_counted_by_its_name(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, address = await metrics_env(
        nursery, tmp_path, voipgw_seed, plugins=[("sdes", sdes_plugin)]
    )
    # SDES keys over UDP signalling: anyone on the path could read them (RFC 4568 §8.3).
    offer = simple_sdp("127.0.0.1", CALLER_PORT).replace(b"RTP/AVP", b"RTP/SAVP") + (
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=offer)
    assert (await call.final()).status == 488

    samples = await scrape(address)
    failures = {
        name: value
        for name, value in samples.items()
        if name.startswith("voipgw_key_exchange_failures_total")
    }
    assert failures == {'voipgw_key_exchange_failures_total{key_exchange="sdes"}': 1}
    # Without the zrtp plugin, none of its families (session 40).
    assert not any(name.startswith("voipgw_zrtp_") for name in samples)


async def test_zrtp_hellos_that_match_no_zrtp_hash_are_counted(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Session 40: the ZRTP exchanges' drops, summed over legs (docs/metrics.md): a Hello
    that matches no a=zrtp-hash of the phone's SDP (RFC 6189 §8.1) is forged, or a phone whose
    SDP and Hello disagree; an operator alerts on it."""
    env, address = await metrics_env(
        nursery, tmp_path, voipgw_seed, plugins=[("zrtp", zrtp_plugin)]
    )
    samples = await scrape(address)
    assert samples["voipgw_zrtp_hello_mismatches_total"] == 0
    assert samples["voipgw_zrtp_discarded_total"] == 0
    phone = phone_exchange().offer(suites=[], secure_signalling=False)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=zrtp_sdp(phone))
    leg_b = await env.alice.next_call()
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    assert final.status == 200
    port = parse_sdp_untrusted(final.body).media[0].port
    with await bind(PHONE_PORT + 4) as stranger:
        for _ in range(3):
            await stranger.sendto(forged_hello(), ("127.0.0.1", port))
        with trio.fail_after(5):
            while (await scrape(address))["voipgw_zrtp_hello_mismatches_total"] < 3:
                await trio.sleep(0.1)
    samples = await scrape(address)
    assert samples["voipgw_zrtp_hello_mismatches_total"] == 3
    assert samples["voipgw_zrtp_discarded_total"] == 3


async def test_dtls_cookies_asked_of_other_sources_are_counted(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Session 41: a ClientHello to a DTLS call's port from another source than the caller's
    SDP address gets a HelloVerifyRequest (RFC 6347 §4.2.1), counted; one whose cookie is not
    ours for its address is counted as a bad cookie too (docs/metrics.md)."""
    env, address = await metrics_env(
        nursery, tmp_path, voipgw_seed, plugins=[("dtls", dtls_plugin)]
    )
    samples = await scrape(address)
    assert samples["voipgw_dtls_hello_verify_requests_total"] == 0
    assert samples["voipgw_dtls_bad_cookies_total"] == 0
    assert samples["voipgw_dtls_rate_limited_total"] == 0
    phone = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(suites=[], secure_signalling=False)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=dtls_sdp(phone, setup="active"))
    leg_b = await env.alice.next_call()
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    assert final.status == 200
    port = parse_sdp_untrusted(final.body).media[0].port
    offer = DtlsKeyExchange(identity=lambda: OTHER_ID).offer(suites=[], secure_signalling=False)
    client = DtlsKeyExchange(identity=lambda: OTHER_ID).answer(
        offer.local_sdp_attributes(), suites=[], secure_signalling=False
    )
    assert client is not None
    (hello,) = client.packets_to_send(now=trio.current_time())
    with await bind(PHONE_PORT + 4) as stranger:
        await stranger.sendto(hello, ("127.0.0.1", port))
        with trio.fail_after(5):
            request, _ = await stranger.recvfrom(2048)
        assert len(request) == 60 and request[13] == 3  # our HelloVerifyRequest
        # Its cookie sent back changed (since session 42 the cookie covers the host, not its
        # port: from another port it would be ours).
        client.receive_packet(request, now=trio.current_time())
        (returned,) = client.packets_to_send(now=trio.current_time())
        cookie = request[-32:]
        returned = returned.replace(cookie, cookie[:-1] + bytes([cookie[-1] ^ 1]))
        with await bind(PHONE_PORT + 5) as other:
            await other.sendto(returned, ("127.0.0.1", port))
            with trio.fail_after(5):
                again, _ = await other.recvfrom(2048)
            assert len(again) == 60 and again[13] == 3
    samples = await scrape(address)
    assert samples["voipgw_dtls_hello_verify_requests_total"] == 2
    assert samples["voipgw_dtls_bad_cookies_total"] == 1
    assert samples["voipgw_dtls_rate_limited_total"] == 0


async def test_dtls_client_hellos_dropped_unanswered_are_counted_by_reason(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Session 42: a ClientHello from another source than the caller's SDP address that gets
    no answer is counted by why (docs/metrics.md): here a later fragment alone (the first
    carries the cookie), one series per reason, 0 included."""
    env, address = await metrics_env(
        nursery, tmp_path, voipgw_seed, plugins=[("dtls", dtls_plugin)]
    )
    reasons = ("later_fragment", "unreadable", "cookie_out_of_sequence")
    name = "voipgw_dtls_client_hellos_dropped_total"
    samples = await scrape(address)
    assert [samples[f'{name}{{reason="{reason}"}}'] for reason in reasons] == [0, 0, 0]
    phone = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(suites=[], secure_signalling=False)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=dtls_sdp(phone, setup="active"))
    leg_b = await env.alice.next_call()
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    assert final.status == 200
    port = parse_sdp_untrusted(final.body).media[0].port
    offer = DtlsKeyExchange(identity=lambda: OTHER_ID).offer(suites=[], secure_signalling=False)
    client = DtlsKeyExchange(identity=lambda: OTHER_ID).answer(
        offer.local_sdp_attributes(), suites=[], secure_signalling=False
    )
    assert client is not None
    (hello,) = client.packets_to_send(now=trio.current_time())
    # Its second half as a fragment of its own (RFC 6347 §4.2.3), with no first fragment.
    message = hello[13 + 12 :]
    half = len(message) // 2
    handshake = (
        hello[13:19] + half.to_bytes(3, "big") + (len(message) - half).to_bytes(3, "big")
    ) + message[half:]
    later = hello[:11] + len(handshake).to_bytes(2, "big") + handshake
    with await bind(PHONE_PORT + 4) as stranger:
        await stranger.sendto(later, ("127.0.0.1", port))
        with trio.fail_after(5):
            while (await scrape(address))[f'{name}{{reason="later_fragment"}}'] < 1:
                await trio.sleep(0.1)
    samples = await scrape(address)
    assert [samples[f'{name}{{reason="{reason}"}}'] for reason in reasons] == [1, 0, 0]
    assert samples["voipgw_dtls_hello_verify_requests_total"] == 0


async def test_bad_requests_get_their_status_and_the_exporter_goes_on(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, address = await metrics_env(nursery, tmp_path, voipgw_seed)
    answer = await http(address, b"GET /other HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404 ")
    answer = await http(address, b"POST /metrics HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 405 ")
    assert b"\r\nallow: GET, HEAD\r\n" in answer
    answer = await http(address, b"this is not HTTP\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    huge = b"GET /metrics HTTP/1.1\r\nHost: gw\r\nX-Pad: " + b"a" * (2 * MAX_REQUEST) + b"\r\n\r\n"
    answer = await http(address, huge)
    assert answer.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 413 ")), answer[:40]
    answer = await http(address, b"HEAD /metrics HTTP/1.1\r\nHost: gw\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == b""
    # A control octet amid white space (h11's header regex backtracked quadratically over such
    # heads, before authentication): refused by our check of the head, which says what it saw.
    blanks = b" " * 3000
    for octet in (b"\r", b"\x0b"):
        bad = b"GET /metrics HTTP/1.1\r\nX:" + blanks + octet + blanks + b"a\r\n\r\n"
        answer = await http(address, bad)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:40]
        assert answer.endswith(f"control character 0x{octet[0]:02x} in the request head\n".encode())

    # A client that says nothing is cut off once its head is overdue; meanwhile scrapes go on.
    silent = await trio.open_tcp_stream(*address)
    async with silent:
        assert (await scrape(address))["voipgw_calls_started_total"] == 0
        started = trio.current_time()
        with trio.fail_after(CONNECTION_TIMEOUT):
            assert await silent.receive_some(100) == b""
        assert trio.current_time() - started <= HEAD_TIMEOUT + 0.1

    # Every connection taken by clients that say nothing: a scrape still gets through, the
    # oldest of them making way for it (they cannot shut Prometheus out).
    held = [await trio.open_tcp_stream(*address) for _ in range(MAX_CONNECTIONS)]
    exporter = env.gateway.plugins.services.get("metrics")
    await eventually(lambda: len(exporter.server._reading_heads) == MAX_CONNECTIONS)
    assert (await scrape(address))["voipgw_calls_in_progress"] == 0
    assert await held[0].receive_some(100) == b""  # the one that gave way: closed
    for stream in held:
        await stream.aclose()


def _leaves(group: BaseExceptionGroup[OSError]) -> list[OSError]:
    found: list[OSError] = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


async def test_a_taken_port_stops_the_start_up_naming_the_plugin(
    tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with taken, pytest.raises(BaseExceptionGroup) as raised:
        async with trio.open_nursery() as nursery:
            await start_b2bua(
                nursery,
                tmp_path,
                voipgw_seed,
                plugins=[("metrics", metrics_plugin)],
                plugin_tables={"enable": ["metrics"], "metrics": {"listen": f"127.0.0.1:{port}"}},
            )
    matched, rest = raised.value.split(OSError)
    assert matched is not None and rest is None, raised.value
    text = " ".join(str(error) for error in _leaves(matched))
    assert f"metrics: cannot listen on 127.0.0.1:{port}" in text


async def test_without_the_plugin_the_core_counts_nothing_for_it(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    assert env.gateway.status is None
    assert env.gateway.call_statistics is None
    assert env.gateway.calls is not None and env.gateway.calls.statistics is None


async def test_trunk_health_registration_and_failovers_are_exposed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A carrier answering 503 fails its call over to the backup (counted), its probes stop
    being answered (down), and a registering trunk whose registrar does not answer REGISTER
    (the agent answers 501) is not registered."""
    env, address = await metrics_env(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"options_interval": 5.0},
        extra_trunks=[
            {
                "name": "backup",
                "address": "udp:127.0.0.5:5060",
                "prefixes": ["+1"],
                "allowed_sources": [],
                "register": True,
                "username": "customer",
                "password": "secret",
            }
        ],
    )
    backup = SipAgent(env.network, ("127.0.0.5", 5060), ids=SeededIds(voipgw_seed + 5), proxy=GW)
    await nursery.start(backup.serve)
    env.trunk.auto = AutoAnswer(ring=True, status=503)
    call = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    samples = await scrape(address)
    assert samples['voipgw_trunk_failovers_total{trunk="carrier"}'] == 1
    assert samples['voipgw_trunk_failovers_total{trunk="backup"}'] == 0
    assert samples['voipgw_trunk_up{trunk="carrier"}'] == 1
    assert 'voipgw_trunk_up{trunk="backup"}' not in samples  # not probed
    assert samples['voipgw_trunk_registered{trunk="backup"}'] == 0  # its REGISTER got 501
    assert 'voipgw_trunk_registered{trunk="carrier"}' not in samples

    env.network.set_link(TRUNK, GW, drop=1.0)
    await eventually(lambda: not env.gateway.trunk_health.is_up("carrier"), timeout=30)
    assert (await scrape(address))['voipgw_trunk_up{trunk="carrier"}'] == 0


async def test_nat_keepalives_are_exposed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, address = await metrics_env(
        nursery, tmp_path, voipgw_seed, sip={"nat_keepalive_interval": 10.0}
    )
    bob_address = ("127.0.0.7", 5060)
    bob = SipAgent(
        env.network,
        bob_address,
        ids=SeededIds(voipgw_seed + 7),
        user="bob",
        password="bob-password-1",
        proxy=GW,
        contact_address=("10.0.0.7", 5060),  # behind a NAT
    )
    await nursery.start(bob.serve)
    assert (await bob.register()).status == 200
    samples = await scrape(address)
    assert samples["voipgw_nat_keepalive_contacts"] == 1  # bob; alice is not behind a NAT
    assert samples["voipgw_nat_keepalive_removed_total"] == 0
    env.network.set_link(bob_address, GW, drop=1.0)
    keepalive = env.gateway.nat_keepalive
    assert keepalive is not None
    await eventually(lambda: keepalive.removed == 1, timeout=60)
    samples = await scrape(address)
    assert samples["voipgw_nat_keepalive_contacts"] == 0
    assert samples["voipgw_nat_keepalive_removed_total"] == 1


async def test_a_drain_is_exposed_while_it_lasts(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, address = await metrics_env(nursery, tmp_path, voipgw_seed)
    assert (await scrape(address))["voipgw_draining"] == 0
    drained = trio.Event()

    async def drain() -> None:
        await env.gateway.drain(60)
        drained.set()

    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.answer(200)
    assert (await call.final()).status == 200
    nursery.start_soon(drain)
    await eventually(lambda: env.gateway.draining)
    during = await scrape(address)
    assert during["voipgw_draining"] == 1
    assert during["voipgw_calls_in_progress"] == 1
    assert (await call.bye()).status == 200
    await drained.wait()


async def test_scanner_drops_and_password_guessing_are_exposed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, address = await metrics_env(
        nursery, tmp_path, voipgw_seed, gateway_table={"auth_max_failures": 2}
    )
    samples = await scrape(address)
    assert samples['voipgw_sip_requests_dropped_total{reason="user_agent"}'] == 0
    assert samples["voipgw_sip_auth_failures_total"] == 0
    assert samples["voipgw_sip_auth_blocked_total"] == 0
    scanner = env.network.bind(SCANNER)
    await scanner.sendto(
        scanner_request("OPTIONS", "100", user_agent="friendly-scanner", number=1), GW
    )
    guesser = SipAgent(
        env.network,
        ("192.0.2.67", 5060),
        ids=SeededIds(voipgw_seed + 9),
        user="alice",
        password="not-her-password",
        proxy=GW,
    )
    await nursery.start(guesser.serve)
    for _ in range(3):
        await guesser.register()  # a failure, a failure (blocked), a refusal
    await trio.sleep(1)
    samples = await scrape(address)
    assert samples['voipgw_sip_requests_dropped_total{reason="user_agent"}'] == 1
    assert samples["voipgw_sip_auth_failures_total"] == 2
    assert samples["voipgw_sip_auth_blocked_total"] == 1


async def test_banned_sources_are_a_gauge_counted_at_the_scrape(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """``voipgw_sip_auth_banned_sources``: the sources banned now, an IPv4 address and an IPv6
    /64 ([gateway] auth_ipv6_prefix_length) here, back to 0 when their bans end, with no
    request in between to drop them from the ban table."""
    gateway_table = {
        "auth_max_failures": 2,
        "auth_block_time": 100,
        "auth_ipv6_prefix_length": 64,
    }
    env, address = await metrics_env(nursery, tmp_path, voipgw_seed, gateway_table=gateway_table)
    assert (await scrape(address))["voipgw_sip_auth_banned_sources"] == 0
    sources = [("192.0.2.67", 5060), ("2001:db8:1:2::66", 5060), ("2001:db8:1:2::67", 5060)]
    guessers = []
    for number, source in enumerate(sources):
        guesser = SipAgent(
            env.network,
            source,
            ids=SeededIds(voipgw_seed + 9 + number),
            user="alice",
            password="not-her-password",
            proxy=GW,
        )
        await nursery.start(guesser.serve)
        guessers.append(guesser)
    ipv4, first_of_64, second_of_64 = guessers
    for _ in range(2):
        await ipv4.register()
    assert (await scrape(address))["voipgw_sip_auth_banned_sources"] == 1
    await trio.sleep(50)
    await first_of_64.register()  # two addresses, one prefix: one ban
    assert (await second_of_64.register()).status == 403
    samples = await scrape(address)
    assert samples["voipgw_sip_auth_banned_sources"] == 2
    assert samples["voipgw_sip_auth_blocked_total"] == 0  # nothing refused yet
    await trio.sleep(51)  # the IPv4 address's ban has ended
    assert (await scrape(address))["voipgw_sip_auth_banned_sources"] == 1
    await trio.sleep(50)
    assert (await scrape(address))["voipgw_sip_auth_banned_sources"] == 0


async def test_call_record_retention_is_scraped_as_it_deletes_and_fails(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env, address = await metrics_env(
        nursery, tmp_path, voipgw_seed, store_table={"call_record_days": 1}
    )
    store = env.gateway.store
    assert store is not None
    now = int(time.time())  # the housekeeping's clock is the wall clock
    store.call_records_save(aged_records(now))
    samples = await scrape(address)
    assert samples["voipgw_call_record_retention_seconds"] == 86400
    assert samples["voipgw_call_records_expired_total"] == 0
    assert samples["voipgw_call_record_retention_failures_total"] == 0
    # Two days old with a day's retention: what an alert on the lag sees before a pass.
    assert samples["voipgw_call_records_oldest_time_seconds"] == now - 2 * 86400 - 2
    await trio.sleep(HOUSEKEEPING_INTERVAL + 1)  # one pass
    samples = await scrape(address)
    assert samples["voipgw_call_records_expired_total"] == 3
    assert samples["voipgw_call_records_oldest_time_seconds"] == now - 60
    assert samples["voipgw_call_record_retention_failures_total"] == 0

    def busy(before: float, *, most: int) -> int:
        raise StoreBusy("another process holds the write lock")

    def failing() -> float | None:
        raise StoreError("the disk is gone")

    monkeypatch.setattr(store, "expire_call_records", busy)
    monkeypatch.setattr(store, "oldest_call_record", failing)
    await trio.sleep(2 * HOUSEKEEPING_INTERVAL)  # two passes, both ended by the store
    samples = await scrape(address)  # the scrape goes on without the store's gauge
    assert samples["voipgw_call_record_retention_failures_total"] == 2
    assert samples["voipgw_call_records_expired_total"] == 3
    assert "voipgw_call_records_oldest_time_seconds" not in samples


async def test_an_index_being_built_is_waited_for_quietly_and_a_failing_store_said_once(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL's retention index is built for minutes after an upgrade (StoreIndexing):
    expected, so no pass is counted failed and each of the retention and the exporter says
    so once at INFO, where every pass counted a failure and every scrape logged a WARNING.
    A store that fails the oldest record's look-up is a failure: one WARNING over scrapes,
    one INFO when it answers again."""
    caplog.set_level(logging.INFO, logger="gateway")
    env, address = await metrics_env(
        nursery, tmp_path, voipgw_seed, store_table={"call_record_days": 1}
    )
    store = env.gateway.store
    assert store is not None
    store.call_records_save(aged_records(int(time.time())))

    def indexing(*args: object, **kwargs: object) -> int:
        raise StoreIndexing("the index call_records_kept_by is being built")

    monkeypatch.setattr(store, "expire_call_records", indexing)
    monkeypatch.setattr(store, "oldest_call_record", indexing)
    for _ in range(3):
        await trio.sleep(HOUSEKEEPING_INTERVAL)  # a pass
        samples = await scrape(address)
        assert "voipgw_call_records_oldest_time_seconds" not in samples
    assert samples["voipgw_call_record_retention_failures_total"] == 0
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    said = [r.getMessage() for r in caplog.records if "being built" in r.getMessage()]
    assert len(said) == 2  # the retention's, the exporter's: once each

    def failing() -> float | None:
        raise StoreError("the disk is gone")

    monkeypatch.setattr(store, "oldest_call_record", failing)
    for _ in range(3):
        assert "voipgw_call_records_oldest_time_seconds" not in await scrape(address)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "the disk is gone" in warnings[0]
    monkeypatch.undo()
    assert "voipgw_call_records_oldest_time_seconds" in await scrape(address)
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_without_retention_only_the_oldest_record_is_shown(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, address = await metrics_env(nursery, tmp_path, voipgw_seed)
    samples = await scrape(address)
    assert not any("call_record" in name for name in samples)  # no record, no retention
    assert env.gateway.store is not None
    now = int(time.time())
    env.gateway.store.call_records_save(aged_records(now))
    await trio.sleep(HOUSEKEEPING_INTERVAL + 1)
    samples = await scrape(address)
    assert samples["voipgw_call_records_oldest_time_seconds"] == now - 2 * 86400 - 2  # kept
    assert not any("retention" in name or "expired" in name for name in samples)


async def test_a_plugin_whose_figures_raise_costs_only_its_own_rows(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Session 41: a key exchange's optional counters() that raises, and a transport's scrape
    figures that raise (a third-party plugin's bug), leave that plugin's rows out: the scrape
    still answers 200 with every other row, counts the failures in
    voipgw_plugin_figures_failures_total, and says each once at WARNING, not at every scrape.
    Before, the exporter answered 500 and nothing (an ERROR at every scrape)."""
    env, address = await metrics_env(
        nursery, tmp_path, voipgw_seed, plugins=[("zrtp", zrtp_plugin)]
    )
    healthy = await scrape(address)
    assert "voipgw_zrtp_discarded_total" in healthy

    def broken() -> object:
        raise RuntimeError("a plugin's bug")

    zrtp = env.gateway.plugins.key_exchanges.get("zrtp")
    zrtp.counters = broken  # type: ignore[union-attr]
    transport_name, transport = env.gateway.plugins.transports.items()[0]
    transport.loaded_crls = broken  # type: ignore[attr-defined]
    caplog.set_level(logging.WARNING, logger="gateway.core.status")
    first = await scrape(address)  # asserts 200
    second = await scrape(address)
    for samples in (first, second):
        assert not any(name.startswith("voipgw_zrtp_") for name in samples)
        assert not any(name.startswith("voipgw_plugin_counters_total") for name in samples)
        assert not any(name.startswith("voipgw_tls_crl_") for name in samples)
        others = {
            name
            for name in healthy
            if not name.startswith(
                (
                    "voipgw_zrtp_",
                    'voipgw_plugin_counters_total{kind="key_exchange",plugin="zrtp",',
                    "voipgw_plugin_figures_failures_total",
                )
            )
        }
        assert others <= set(samples), others - set(samples)
    failures = (
        'voipgw_plugin_figures_failures_total{kind="key_exchange",plugin="zrtp",figures="counters"}'
    )
    crls = (
        'voipgw_plugin_figures_failures_total{kind="transport",'
        f'plugin="{transport_name}",figures="loaded_crls"}}'
    )
    assert first[failures] == 1 and second[failures] == 2
    assert first[crls] == 1 and second[crls] == 2
    said = [r for r in caplog.records if r.name == "gateway.core.status"]
    assert [(r.levelno, r.getMessage()) for r in said] == [
        (
            logging.WARNING,
            "status: the key exchange plugin zrtp raised reading its counters: left out of"
            " monitoring until it answers (said once; counted in"
            " voipgw_plugin_figures_failures_total)",
        ),
        (
            logging.WARNING,
            f"status: the transport plugin {transport_name} raised reading its loaded_crls: left"
            " out of monitoring until it answers (said once; counted in"
            " voipgw_plugin_figures_failures_total)",
        ),
    ]
    assert "a plugin's bug" not in caplog.text  # its text withheld, as any plugin code's


class _CountingTap:
    """A third-party media tap that keeps counters (its optional counters())."""

    name = "acme-recorder"

    def sink_for_call(self, call: object) -> None:
        return None

    def counters(self) -> tuple[tuple[str, int], ...]:
        return (("uploads", 7), ("upload_failures", 1))


class _CovertCountingTap(_CountingTap):
    covert = True  # an interception tap: that it is configured must not show


async def test_every_plugins_counters_are_one_family_with_the_plugin_as_a_label(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Session 42: only zrtp's and dtls's counters() reached the metrics, each in families of
    its own; a third-party key exchange's or tap's needed a gateway change. Every plugin's are
    now in voipgw_plugin_counters_total, zrtp's and dtls's families kept as they were; a covert
    tap's never."""
    env, address = await metrics_env(
        nursery,
        tmp_path,
        voipgw_seed,
        plugins=[("zrtp", zrtp_plugin), ("dtls", dtls_plugin)],
    )
    before = await scrape(address)
    assert "voipgw_zrtp_discarded_total" in before  # the existing names, unchanged
    assert "voipgw_dtls_bad_cookies_total" in before
    taps = env.gateway.plugins.media_taps
    for name, tap in (("acme-recorder", _CountingTap()), ("li", _CovertCountingTap())):
        taps._current_plugin = name
        taps.add(name, tap)
    taps._current_plugin = "<core>"
    samples = await scrape(address)
    family = "voipgw_plugin_counters_total"
    assert samples[f'{family}{{kind="key_exchange",plugin="zrtp",counter="discarded"}}'] == 0
    assert samples[f'{family}{{kind="key_exchange",plugin="dtls",counter="bad_cookies"}}'] == 0
    assert samples[f'{family}{{kind="media_tap",plugin="acme-recorder",counter="uploads"}}'] == 7
    assert (
        samples[f'{family}{{kind="media_tap",plugin="acme-recorder",counter="upload_failures"}}']
        == 1
    )
    assert not any('plugin="li"' in name for name in samples)
    assert samples["voipgw_zrtp_discarded_total"] == before["voipgw_zrtp_discarded_total"]
