"""``voipgw calls`` and the log lines: log lines name a call by its SIP Call-ID (``call ID:
...``), ``voipgw calls`` by its record's id, ``Call-ID;tag`` (a caller retrying with one Call-ID
makes a new record). ``--call-id`` finds the calls a log line names, and ``--json`` gives each
call's ``sip_call_id``; what the command printed before is unchanged (docs/operations.md,
"Calls and log lines")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.core import cli
from gateway.core.store.interface import CallRecord
from gateway.core.store.sqlite import SqliteStore

CALL_ID = "a84b4c76e66710@192.0.2.4"


def _state(tmp_path: Path) -> str:
    state = str(tmp_path / "state")
    store = SqliteStore.open(state)
    try:
        # The caller's first attempt failed and it retried with the same Call-ID; another
        # call is live; a third ended.
        store.call_record_insert(CallRecord(f"{CALL_ID};t1", "sip:alice@gw", "sip:bob@gw", 1.0))
        store.call_record_update(f"{CALL_ID};t1", ended_at=2.0, end_reason="486 from B leg")
        store.call_record_insert(CallRecord(f"{CALL_ID};t2", "sip:alice@gw", "sip:bob@gw", 3.0))
        store.call_record_insert(
            CallRecord("other@192.0.2.5;t3", "sip:carol@gw", "sip:bob@gw", 4.0)
        )
        store.call_record_insert(CallRecord("ended@192.0.2.6;t4", "sip:dave@gw", "sip:bob@gw", 5.0))
        store.call_record_update("ended@192.0.2.6;t4", ended_at=6.0, end_reason="BYE from A leg")
    finally:
        store.close()
    return state


def _calls(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert cli.main(["calls", *args]) == cli.EXIT_OK
    return capsys.readouterr().out


def _headers(out: str) -> list[str]:
    return [line for line in out.splitlines() if not line.startswith(" ")]


def test_call_id_finds_the_calls_a_log_line_names_live_or_ended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _state(tmp_path)
    out = _calls(capsys, "--state-dir", state, "--call-id", CALL_ID)
    assert sorted(_headers(out)) == [
        f"{CALL_ID};t1  sip:alice@gw -> sip:bob@gw  [ended (486 from B leg)]",
        f"{CALL_ID};t2  sip:alice@gw -> sip:bob@gw  [live]",
    ]
    # A record's id as the command shows it finds that record alone.
    out = _calls(capsys, "--state-dir", state, "--call-id", f"{CALL_ID};t2")
    assert _headers(out) == [f"{CALL_ID};t2  sip:alice@gw -> sip:bob@gw  [live]"]
    # --recent N: the newest N of its calls (session 41: before, the Call-ID's calls among
    # the newest N records of all).
    out = _calls(capsys, "--state-dir", state, "--call-id", CALL_ID, "--recent", "1")
    assert _headers(out) == [f"{CALL_ID};t2  sip:alice@gw -> sip:bob@gw  [live]"]
    out = _calls(capsys, "--state-dir", state, "--call-id", f"{CALL_ID};t1", "--recent", "1")
    assert _headers(out) == [f"{CALL_ID};t1  sip:alice@gw -> sip:bob@gw  [ended (486 from B leg)]"]
    out = _calls(capsys, "--state-dir", state, "--call-id", "nobody@192.0.2.9")
    assert out == "no call with Call-ID nobody@192.0.2.9 in the store\n"
    # Not a prefix or a part of a Call-ID, nor a record id's part.
    for part in ("a84b4c76e66710", f"{CALL_ID};", f"{CALL_ID};t", "t1", "192.0.2.4"):
        out = _calls(capsys, "--state-dir", state, "--call-id", part)
        assert out == f"no call with Call-ID {part} in the store\n"


def test_call_id_finds_a_call_older_than_the_newest_thousand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Session 41: the store is asked by Call-ID. Before, only the newest 1000 records were
    looked at (20 s of calls on a node taking 50 a second): yesterday's call on a busy node was
    "no call ... among the last 1000 calls"."""
    state = _state(tmp_path)
    store = SqliteStore.open(state)
    try:
        store.call_records_save(
            [
                CallRecord(
                    f"later{n}@127.0.0.1;t{n}", "sip:x@gw", "sip:y@gw", 10.0 + n, None, 11.0 + n
                )
                for n in range(1500)
            ]
        )
    finally:
        store.close()
    out = _calls(capsys, "--state-dir", state, "--call-id", CALL_ID)
    assert sorted(_headers(out)) == [
        f"{CALL_ID};t1  sip:alice@gw -> sip:bob@gw  [ended (486 from B leg)]",
        f"{CALL_ID};t2  sip:alice@gw -> sip:bob@gw  [live]",
    ]


def test_a_call_id_holding_a_semicolon_is_told_from_its_record_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Call-ID with a ";" (not in RFC 3261 §25.1's word, but the store takes what it is
    given): the SIP Call-ID of a record is what comes before its id's last ";" (the tag holds
    none), so "a;b@127.0.0.1" finds "a;b@127.0.0.1;t1" and "a" finds "a;t2" alone, as the
    filter over the newest records did before the store was asked (session 41)."""
    state = str(tmp_path / "state")
    store = SqliteStore.open(state)
    try:
        store.call_record_insert(CallRecord("a;b@127.0.0.1;t1", "sip:x@gw", "sip:y@gw", 1.0))
        store.call_record_insert(CallRecord("a;t2", "sip:x@gw", "sip:y@gw", 2.0))
    finally:
        store.close()
    out = _calls(capsys, "--state-dir", state, "--call-id", "a;b@127.0.0.1")
    assert _headers(out) == ["a;b@127.0.0.1;t1  sip:x@gw -> sip:y@gw  [live]"]
    out = _calls(capsys, "--state-dir", state, "--call-id", "a")
    assert _headers(out) == ["a;t2  sip:x@gw -> sip:y@gw  [live]"]


def test_json_gives_each_calls_sip_call_id_and_the_rest_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _state(tmp_path)
    calls = json.loads(_calls(capsys, "--state-dir", state, "--json", "--recent", "10"))
    assert [(c["call_id"], c["sip_call_id"]) for c in calls] == [
        ("ended@192.0.2.6;t4", "ended@192.0.2.6"),
        ("other@192.0.2.5;t3", "other@192.0.2.5"),
        (f"{CALL_ID};t2", CALL_ID),
        (f"{CALL_ID};t1", CALL_ID),
    ]
    assert set(calls[0]) == {
        "call_id",
        "sip_call_id",
        "from",
        "to",
        "started_at",
        "answered_at",
        "ended_at",
        "end_reason",
        "security",
    }
    found = json.loads(_calls(capsys, "--state-dir", state, "--json", "--call-id", CALL_ID))
    assert sorted(c["call_id"] for c in found) == [f"{CALL_ID};t1", f"{CALL_ID};t2"]


def test_without_call_id_the_live_calls_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _state(tmp_path)
    out = _calls(capsys, "--state-dir", state)
    assert sorted(_headers(out)) == [
        f"{CALL_ID};t2  sip:alice@gw -> sip:bob@gw  [live]",
        "other@192.0.2.5;t3  sip:carol@gw -> sip:bob@gw  [live]",
    ]
