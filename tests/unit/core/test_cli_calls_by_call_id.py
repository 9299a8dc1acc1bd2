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
    # Within --recent N, the last N records.
    out = _calls(capsys, "--state-dir", state, "--call-id", CALL_ID, "--recent", "3")
    assert _headers(out) == [f"{CALL_ID};t2  sip:alice@gw -> sip:bob@gw  [live]"]
    # Only so many records are read: "no call" says which, or an older call would read as
    # one the node never had.
    out = _calls(capsys, "--state-dir", state, "--call-id", "nobody@192.0.2.9")
    assert out == (
        "no call with Call-ID nobody@192.0.2.9 among the last 1000 calls "
        "(--recent N to look further)\n"
    )
    out = _calls(capsys, "--state-dir", state, "--call-id", f"{CALL_ID};t1", "--recent", "2")
    assert out == f"no call with Call-ID {CALL_ID};t1 among the last 2 calls\n"
    # Not a prefix or a part of a Call-ID.
    out = _calls(capsys, "--state-dir", state, "--call-id", "a84b4c76e66710")
    assert out.startswith("no call with Call-ID a84b4c76e66710 among the last 1000 calls")


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
