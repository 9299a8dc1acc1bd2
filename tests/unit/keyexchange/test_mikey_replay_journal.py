"""The MIKEY replay cache across restarts (RFC 3830 §5.4): what one process saw is refused by
the next one inside the clock-skew window, through the SQLite journal in ``<state_dir>/mikey``.
Each "restart" is a new cache (or key exchange) on a new store over the same file."""

from __future__ import annotations

import logging
import sqlite3
import stat
from pathlib import Path

import pytest

from gateway.core.interfaces import KeysReady, NegotiationFailed
from gateway.plugins.keyexchange.mikey import MikeyConfig, MikeyKeyExchange
from gateway.plugins.keyexchange.mikey.replay import ReplayCache
from gateway.plugins.keyexchange.mikey.replay_store import ReplayStore
from tests.unit.keyexchange.mikey_exchanges import ALICE, CARRIER, NOW, Clock, events, exchange

REPLAY = "it is a replay of an earlier message"


def cache(path: Path, *, scope: str = "", max_entries: int = 8) -> ReplayCache:
    return ReplayCache(
        max_skew=120, max_entries=max_entries, journal=ReplayStore(path), scope=scope
    )


def test_a_message_seen_before_a_restart_is_refused_after_it(tmp_path: Path) -> None:
    path = tmp_path / "mikey" / "replay.sqlite"
    before = cache(path)
    assert before.check(b"m1", NOW, now=NOW) is None
    after = cache(path)  # a new process: nothing in memory
    assert after.check(b"m1", NOW, now=NOW + 5) == REPLAY
    assert after.check(b"m2", NOW + 5, now=NOW + 5) is None
    # Private, as the other stores: digests only, yet nobody else's business.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_without_a_journal_a_restart_forgets(tmp_path: Path) -> None:
    # What the journal changes: the in-memory cache alone takes the replay after a restart.
    ReplayCache(max_skew=120).check(b"m1", NOW, now=NOW)
    assert ReplayCache(max_skew=120).check(b"m1", NOW, now=NOW + 5) is None


def test_a_peer_clock_ahead_of_ours_cannot_replay_across_a_restart(tmp_path: Path) -> None:
    # A T up to the skew in the future was taken before the restart; after it that T is still
    # ahead of our clock, so no "refuse what predates our start" floor would have caught it.
    path = tmp_path / "replay.sqlite"
    assert cache(path).check(b"ahead", NOW + 100, now=NOW) is None
    assert cache(path).check(b"ahead", NOW + 100, now=NOW + 1) == REPLAY


def test_our_own_messages_stay_refused_as_reflections_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite"
    cache(path).remember_own(b"ours", NOW, now=NOW)
    assert cache(path).check(b"ours", NOW, now=NOW + 1) == REPLAY


def test_the_floor_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite"
    full = cache(path, max_entries=1)
    assert full.check(b"a", NOW, now=NOW) is None
    assert full.check(b"b", NOW + 1, now=NOW + 1) is None  # evicts "a": the floor is NOW
    restarted = cache(path, max_entries=1)
    assert restarted.check(b"older", NOW - 1, now=NOW + 2) == REPLAY
    assert restarted.check(b"b", NOW + 1, now=NOW + 2) == REPLAY
    assert restarted.check(b"c", NOW + 2, now=NOW + 2) is None


def test_entries_leave_the_journal_with_the_window_and_scopes_are_apart(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite"
    alice = cache(path, scope="account:alice")
    assert alice.check(b"m", NOW, now=NOW) is None
    # Another account's cache never sees alice's messages, before or after a restart.
    assert cache(path, scope="trunk:carrier").check(b"m", NOW, now=NOW) is None
    later = NOW + 200
    assert alice.check(b"n", later, now=later) is None  # expires "m", in memory and on disk
    rows = ReplayStore(path).load("account:alice", since=0.0)[0]
    assert [t for _, t, _ in rows] == [later]


def test_an_unreadable_journal_refuses_what_could_be_a_replay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "replay.sqlite"
    path.write_bytes(b"not a database" * 100)
    broken = cache(path)
    with caplog.at_level(logging.ERROR):
        assert broken.check(b"m", NOW, now=NOW) == REPLAY
    assert "not read" in caplog.text
    assert broken.check(b"m2", NOW + 120, now=NOW + 1) == REPLAY  # up to now + skew
    assert broken.check(b"m3", NOW + 241, now=NOW + 241) is None  # then as usual


def test_a_journal_that_cannot_be_written_leaves_the_cache_working(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    unwritable = cache(blocker / "replay.sqlite")  # its directory cannot be made
    with caplog.at_level(logging.WARNING):
        # The read fails too (no file, no directory): the floor refuses the window...
        assert unwritable.check(b"m", NOW, now=NOW) == REPLAY
        # ...and later messages are checked in memory, the failed writes logged once.
        assert unwritable.check(b"m2", NOW + 300, now=NOW + 300) is None
        assert unwritable.check(b"m2", NOW + 300, now=NOW + 301) == REPLAY
    assert caplog.text.count("not written") == 1


def test_a_psk_offer_answered_before_a_restart_is_refused_after_it(tmp_path: Path) -> None:
    # End to end through the plugin's own wiring: MikeyConfig's journal under state_dir.
    config = MikeyConfig(state_dir=str(tmp_path))
    offer = exchange(1, offer_modes=("psk",)).offer(suites=[], secure_signalling=False, leg=ALICE)
    attributes = offer.local_sdp_attributes()

    def gateway(now: float) -> MikeyKeyExchange:
        return exchange(
            2,
            clock=Clock(now),
            replay=ReplayCache(max_skew=120, journal=config.replay_journal()),
        )

    first = gateway(NOW).answer(attributes, suites=[], secure_signalling=False, leg=CARRIER)
    assert first is not None and isinstance(first.next_event(), KeysReady)
    assert (tmp_path / "mikey" / "replay.sqlite").exists()
    again = gateway(NOW + 30).answer(attributes, suites=[], secure_signalling=False, leg=CARRIER)
    assert again is not None
    assert events(again) == [NegotiationFailed(f"MIKEY message refused: {REPLAY}", 488)]
    # The same message from another account's leg is checked in that account's scope.
    other = gateway(NOW + 30).answer(attributes, suites=[], secure_signalling=False, leg=ALICE)
    assert other is not None and isinstance(other.next_event(), KeysReady)


def test_the_journal_commits_without_an_fsync_per_message(tmp_path: Path) -> None:
    # Each accepted message is a commit in the event loop that relays media: a write-ahead log
    # with synchronous=NORMAL (1), as the gateway's store, not the rollback journal's fsyncs.
    path = tmp_path / "mikey" / "replay.sqlite"
    store = ReplayStore(path)
    cache_ = ReplayCache(max_skew=120, journal=store)
    assert cache_.check(b"m1", NOW, now=NOW) is None
    db = store._db
    assert db is not None
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1
    store.close()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_corrupt_journal_is_set_aside_and_the_next_start_reads_a_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "mikey" / "replay.sqlite"
    path.parent.mkdir()
    path.write_bytes(b"not a database" * 100)
    store = ReplayStore(path)
    first = ReplayCache(max_skew=120, journal=store, scope="account:alice")
    with caplog.at_level(logging.ERROR):
        assert first.check(b"m", NOW, now=NOW) == REPLAY  # unknown before: the window refused
    # Another scope's rows went with the old file: its window is refused as well.
    other = ReplayCache(max_skew=120, journal=store, scope="trunk:carrier")
    assert other.check(b"x", NOW, now=NOW + 1) == REPLAY
    later = NOW + 300
    assert first.check(b"m2", later, now=later) is None  # written to the new journal
    restarted = cache(path, scope="account:alice")
    assert restarted.check(b"m2", later, now=later + 1) == REPLAY  # read back
    assert restarted.check(b"m3", later + 1, now=later + 1) is None  # and no floor any more
    assert "set aside as replay.sqlite.corrupt-" in caplog.text
    (aside,) = path.parent.glob("replay.sqlite.corrupt-*")
    assert aside.read_bytes() == b"not a database" * 100


def test_a_corrupt_journal_is_reported_once_and_the_new_one_is_swept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first read after a start sets a corrupt journal aside; the sweep that comes with
    it must not fail on the old file first and log that writes fail until a restart (false:
    the new journal takes them), nor use up the once-only warning a real write failure
    needs."""
    path = tmp_path / "mikey" / "replay.sqlite"
    path.parent.mkdir()
    path.write_bytes(b"not a database" * 100)
    store = ReplayStore(path)
    first = ReplayCache(max_skew=120, journal=store, scope="account:alice")
    with caplog.at_level(logging.WARNING):
        assert first.check(b"m", NOW, now=NOW) == REPLAY
    assert "set aside as replay.sqlite.corrupt-" in caplog.text
    assert "not written" not in caplog.text
    assert not store._warned
    assert first.check(b"m2", NOW + 300, now=NOW + 300) is None  # into the new journal
    assert rows_by_scope(path) == {"account:alice": 1}


def rows_by_scope(path: Path) -> dict[str, int]:
    db = sqlite3.connect(str(path))
    try:
        counts = db.execute("SELECT scope, count(*) FROM seen GROUP BY scope").fetchall()
        return dict(counts)
    finally:
        db.close()


def floors(path: Path) -> dict[str, float]:
    db = sqlite3.connect(str(path))
    try:
        return dict(db.execute("SELECT scope, floor FROM floors").fetchall())
    finally:
        db.close()


def test_rows_of_a_scope_no_longer_used_leave_with_the_next_sweep(tmp_path: Path) -> None:
    """An account that stopped using MIKEY expires nothing, so its own delete never runs: the
    sweep (every SWEEP_EVERY seconds of T, in place of a scope's delete) takes its rows."""
    path = tmp_path / "replay.sqlite"
    store = ReplayStore(path)
    alice = ReplayCache(max_skew=120, journal=store, scope="account:alice")
    gone = ReplayCache(max_skew=120, max_entries=1, journal=store, scope="account:gone")
    assert gone.check(b"g1", NOW, now=NOW) is None
    assert gone.check(b"g2", NOW + 1, now=NOW + 1) is None  # a floor for "gone"
    assert alice.check(b"a1", NOW, now=NOW) is None
    assert rows_by_scope(path) == {"account:alice": 1, "account:gone": 2}
    assert alice.check(b"a2", NOW + 200, now=NOW + 200) is None  # expires a1: alice's delete
    assert rows_by_scope(path) == {"account:alice": 1, "account:gone": 2}
    assert alice.check(b"a3", NOW + 500, now=NOW + 500) is None  # past SWEEP_EVERY: a sweep
    assert rows_by_scope(path) == {"account:alice": 1}
    assert floors(path) == {}
    # What the sweep took was outside the window: "gone" comes back and replays are refused
    # by the skew check, new messages taken.
    assert gone.check(b"g3", NOW + 501, now=NOW + 501) is None


def test_a_restart_sweeps_what_every_scope_left_behind(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite"
    for scope in ("account:a", "account:b", "trunk:c"):
        full = cache(path, scope=scope, max_entries=1)
        assert full.check(b"x", NOW, now=NOW) is None
        assert full.check(b"y", NOW + 1, now=NOW + 1) is None
    assert rows_by_scope(path) == {"account:a": 2, "account:b": 2, "trunk:c": 2}
    assert floors(path) == {"account:a": NOW, "account:b": NOW, "trunk:c": NOW}
    # Days later, the first use of any scope reads the journal: everything old goes.
    later = cache(path, scope="account:new")
    assert later.check(b"z", NOW + 86_400, now=NOW + 86_400) is None
    assert rows_by_scope(path) == {"account:new": 1} and floors(path) == {}
    # Inside the window nothing is swept: a restart still refuses the replay.
    again = cache(path, scope="account:new")
    assert again.check(b"z", NOW + 86_400, now=NOW + 86_401) == REPLAY


def test_the_sweep_adds_no_statement_per_message(tmp_path: Path) -> None:
    """Per accepted message one INSERT; per expiry one DELETE, the sweep replacing it when due
    (and the first read after a start): no statement more than before the sweep existed."""
    path = tmp_path / "replay.sqlite"
    store = ReplayStore(path)
    alice = ReplayCache(max_skew=120, journal=store, scope="account:alice")
    assert alice.check(b"first", NOW, now=NOW) is None  # opens, loads, sweeps once
    db = store._db
    assert db is not None
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    for second in range(1, 1001):
        assert alice.check(b"m%d" % second, NOW + second, now=NOW + second) is None
    writes = [s for s in statements if s.split()[0] in ("INSERT", "DELETE")]
    # 1000 INSERTs, and one DELETE of rows per check that expired something (each from second
    # 121 on); the sweeps (cutoffs 180, 480, 780 s after the first read's) also drop old floors.
    assert sum(s.startswith("INSERT") for s in writes) == 1000
    assert sum(s.startswith("DELETE FROM seen") for s in writes) == 1000 - 120
    assert sum(s.startswith("DELETE FROM seen WHERE t <") for s in writes) == 3
    assert sum(s.startswith("DELETE FROM floors") for s in writes) == 3
