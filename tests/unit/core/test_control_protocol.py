"""The control socket's protocol (gateway/core/control.py): one JSON request line, bounded; one
JSON answer; errors in words; the client's reasons when there is no answer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.core.control import (
    MAX_PATH,
    MAX_REQUEST,
    ControlError,
    ask,
    parse_request_untrusted,
    respond,
    socket_path,
)


def test_a_request_is_one_json_object_line_naming_a_known_query() -> None:
    assert parse_request_untrusted(b'{"query": "live_quality"}\n') == "live_quality"
    assert parse_request_untrusted(b'{"query":"live_quality","x":1}\nignored') == "live_quality"
    assert parse_request_untrusted(b'{"query": "trunks"}\n') == "trunks"  # voipgw trunks
    media_workers = b'{"query": "media_workers"}\n'  # voipgw media-workers
    assert parse_request_untrusted(media_workers) == "media_workers"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"query": "live_quality"}', "not ended by a newline"),
        (b"live_quality\n", "not JSON"),
        (b"\xff\xfe\n", "not JSON"),
        (b'["live_quality"]\n', '"query" string'),
        (b'{"query": 7}\n', '"query" string'),
        (b'{"query": "drop_tables"}\n', "unknown query 'drop_tables'; known: live_quality"),
        (b" " * MAX_REQUEST + b"\n", f"longer than {MAX_REQUEST} octets"),
    ],
)
def test_what_is_not_a_request_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ControlError, match=re.escape(reason)):
        parse_request_untrusted(data)
    answer = json.loads(respond(data, lambda query: {"never": "asked"}))
    assert reason in answer["error"]


def test_an_answer_is_one_json_line_and_a_failing_one_an_error() -> None:
    request = b'{"query": "live_quality"}\n'
    answer = respond(request, lambda query: {"calls": {"c1;t1": {"a": None}}, "q": query})
    assert answer.endswith(b"\n") and answer.count(b"\n") == 1
    assert json.loads(answer) == {"calls": {"c1;t1": {"a": None}}, "q": "live_quality"}

    def broken(query: str) -> dict[str, object]:
        raise RuntimeError("a bug")

    assert json.loads(respond(request, broken)) == {
        "error": "the gateway failed to answer 'live_quality' (logged)"
    }


def test_the_client_says_why_no_gateway_answers(tmp_path: Path) -> None:
    path = socket_path(tmp_path)
    assert path == tmp_path / "control.sock"
    with pytest.raises(ControlError, match="no gateway running here"):
        ask(path, "live_quality")
    too_long = tmp_path / ("x" * MAX_PATH) / "control.sock"
    with pytest.raises(ControlError, match="longer than a Unix socket path may be"):
        ask(too_long, "live_quality")
