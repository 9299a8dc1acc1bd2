"""The ZRTP retained-secret cache (RFC 6189 §4.3, §4.6.1, §4.9): the SQLite store, and key
continuity between two engines over several calls (new, match, mismatch, and the recovery
through rs2 when only one side updated its cache)."""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import stat
from pathlib import Path

import pytest

from gateway.core.interfaces import SasReady
from gateway.plugins.keyexchange.zrtp import ZrtpConfig, ZrtpKeyExchange
from gateway.plugins.keyexchange.zrtp.cache import FOREVER, SecretCache
from gateway.plugins.keyexchange.zrtp.engine import ZrtpNegotiation

ZID_GATEWAY = bytes.fromhex("aa" * 12)
ZID_PHONE = bytes.fromhex("bb" * 12)


# -- the store ------------------------------------------------------------------------------------


def test_the_store_keeps_secrets_by_zid_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "zrtp" / "cache.sqlite"
    cache = SecretCache(path)
    assert cache.lookup(ZID_PHONE) is None
    cache.store(ZID_PHONE, b"\x01" * 32, rs2=None, expires_in=FOREVER)
    cache.store(ZID_GATEWAY, b"\x02" * 32, rs2=b"\x03" * 32, expires_in=FOREVER)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cache.close()
    again = SecretCache(path)  # another run of the gateway
    phone = again.lookup(ZID_PHONE)
    assert phone is not None and phone.rs1 == b"\x01" * 32 and phone.rs2 is None
    other = again.lookup(ZID_GATEWAY)
    assert other is not None and other.rs2 == b"\x03" * 32
    assert "\\x01" not in repr(phone) and "01010101" not in repr(phone)


def test_an_expired_entry_is_gone_and_expiry_zero_forgets() -> None:
    now = [1000.0]
    cache = SecretCache(":memory:", clock=lambda: now[0])
    cache.store(ZID_PHONE, b"\x01" * 32, rs2=None, expires_in=60)
    now[0] += 59
    assert cache.lookup(ZID_PHONE) is not None
    now[0] += 2
    assert cache.lookup(ZID_PHONE) is None
    cache.store(ZID_PHONE, b"\x01" * 32, rs2=None, expires_in=FOREVER)
    now[0] += 10**9
    assert cache.lookup(ZID_PHONE) is not None  # 0xffffffff: no expiry
    cache.store(ZID_PHONE, b"\x04" * 32, rs2=None, expires_in=0)
    assert cache.lookup(ZID_PHONE) is None  # §4.9: 0 keeps nothing, and forgets


def test_a_broken_store_is_logged_and_the_phone_treated_as_new(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    cache = SecretCache(path)
    with caplog.at_level(logging.WARNING):
        assert cache.lookup(ZID_PHONE) is None
        cache.store(ZID_PHONE, b"\x01" * 32, rs2=None, expires_in=FOREVER)
    assert "not read" in caplog.text and "not written" in caplog.text
    assert "\\x01" not in caplog.text


def test_the_plugin_config_puts_the_cache_in_the_state_dir_or_none(tmp_path: Path) -> None:
    cache = ZrtpConfig(state_dir=str(tmp_path)).secret_cache()
    assert cache is not None and cache.path == tmp_path / "zrtp" / "cache.sqlite"
    assert not (tmp_path / "zrtp").exists()  # opened at first use only
    assert ZrtpConfig(state_dir=str(tmp_path), cache=False).secret_cache() is None


# -- key continuity between two engines ------------------------------------------------------------


def call(
    gateway_cache: SecretCache | None, phone_cache: SecretCache | None, seed: int
) -> tuple[ZrtpNegotiation, ZrtpNegotiation, list[object], list[object]]:
    """One exchange between the gateway (offerer) and a phone, each with its cache."""
    rng = random.Random(seed)
    gateway = ZrtpKeyExchange(
        zid=lambda: ZID_GATEWAY, random_bytes=rng.randbytes, cache=gateway_cache
    )
    phone = ZrtpKeyExchange(zid=lambda: ZID_PHONE, random_bytes=rng.randbytes, cache=phone_cache)
    ours = gateway.offer(suites=(), secure_signalling=False)
    theirs = phone.answer(ours.local_sdp_attributes(), suites=(), secure_signalling=False)
    assert theirs is not None
    ours.remote_sdp_attributes(theirs.local_sdp_attributes())
    now = 0.0
    while now < 5 and not (ours.state == theirs.state == "secure"):
        for sender, receiver in ((ours, theirs), (theirs, ours)):
            timer = sender.get_timer()
            if timer is not None and timer <= now:
                sender.handle_timer(now=now)
            for packet in sender.packets_to_send(now=now):
                receiver.receive_packet(packet, now=now)
        now += 0.01
    assert ours.state == theirs.state == "secure", (ours.failure, theirs.failure)
    events: tuple[list[object], list[object]] = ([], [])
    for negotiation, found in zip((ours, theirs), events, strict=True):
        while (event := negotiation.next_event()) is not None:
            found.append(event)
    return ours, theirs, events[0], events[1]


def sas_alarm(events: list[object]) -> str | None:
    (sas,) = [e for e in events if isinstance(e, SasReady)]
    return sas.alarm


def test_the_first_call_is_new_and_the_next_ones_match_with_rs1_moving_to_rs2() -> None:
    gateway_cache, phone_cache = SecretCache(":memory:"), SecretCache(":memory:")
    ours, theirs, ours_events, _ = call(gateway_cache, phone_cache, 1)
    assert ours.zrtp_cache == theirs.zrtp_cache == "new"
    assert sas_alarm(ours_events) is None
    first = gateway_cache.lookup(ZID_PHONE)
    kept_by_phone = phone_cache.lookup(ZID_GATEWAY)
    assert first is not None and kept_by_phone is not None
    assert first.rs1 == kept_by_phone.rs1 and first.rs2 is None  # both kept the same rs1

    ours, theirs, ours_events, _ = call(gateway_cache, phone_cache, 2)
    assert ours.zrtp_cache == theirs.zrtp_cache == "match"
    assert sas_alarm(ours_events) is None
    second = gateway_cache.lookup(ZID_PHONE)
    assert second is not None and second.rs2 == first.rs1 and second.rs1 != first.rs1
    assert second == phone_cache.lookup(ZID_GATEWAY)


def test_a_phone_that_lost_its_cache_raises_the_alarm_once() -> None:
    gateway_cache = SecretCache(":memory:")
    call(gateway_cache, SecretCache(":memory:"), 1)
    # The phone was reset: it keeps nothing of the gateway any more.
    phone_cache = SecretCache(":memory:")
    ours, theirs, ours_events, _ = call(gateway_cache, phone_cache, 2)
    assert ours.zrtp_cache == "mismatch" and theirs.zrtp_cache == "new"
    alarm = sas_alarm(ours_events)
    assert alarm is not None and "man in the middle" in alarm
    # The gateway kept the new secret (it has no user to compare the SAS): the next call
    # matches again.
    ours, theirs, ours_events, _ = call(gateway_cache, phone_cache, 3)
    assert ours.zrtp_cache == theirs.zrtp_cache == "match"
    assert sas_alarm(ours_events) is None


def test_a_side_that_missed_the_last_update_recovers_through_rs2() -> None:
    """§4.6.1: the phone's cache lost the last call's update (the call broke before it could
    store it); its rs1 is the gateway's rs2, and the next exchange still matches."""
    gateway_cache, phone_path = SecretCache(":memory:"), SecretCache(":memory:")
    call(gateway_cache, phone_path, 1)
    before = phone_path.lookup(ZID_GATEWAY)
    assert before is not None
    call(gateway_cache, phone_path, 2)
    stale_phone = SecretCache(":memory:")
    stale_phone.store(ZID_GATEWAY, before.rs1, rs2=before.rs2, expires_in=FOREVER)
    ours, theirs, ours_events, _ = call(gateway_cache, stale_phone, 3)
    assert ours.zrtp_cache == theirs.zrtp_cache == "match"
    assert sas_alarm(ours_events) is None


def test_a_cacheless_phone_leaves_nothing_in_our_cache() -> None:
    """Its Confirm says expiration 0 (§4.9.1): nothing is kept, and what was kept is dropped."""
    gateway_cache = SecretCache(":memory:")
    gateway_cache.store(ZID_PHONE, os.urandom(32), rs2=None, expires_in=FOREVER)
    ours, theirs, _, _ = call(gateway_cache, None, 1)
    assert ours.zrtp_cache == "mismatch" and theirs.zrtp_cache is None
    assert gateway_cache.lookup(ZID_PHONE) is None


def test_without_a_cache_we_promise_nothing_and_the_phone_keeps_nothing() -> None:
    phone_cache = SecretCache(":memory:")
    ours, theirs, _, _ = call(None, phone_cache, 1)
    assert ours.zrtp_cache is None and theirs.zrtp_cache == "new"
    assert phone_cache.lookup(ZID_GATEWAY) is None


def test_cache_rows_hold_no_secret_in_clear_text_columns(tmp_path: Path) -> None:
    """The file holds the secrets (as blobs, by design) and the ZID as hex: nothing else."""
    path = tmp_path / "cache.sqlite"
    cache = SecretCache(path)
    cache.store(ZID_PHONE, b"\x09" * 32, rs2=None, expires_in=FOREVER)
    cache.close()
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(peers)")]
    assert columns == ["zid", "rs1", "rs2", "expires", "updated"]
