"""benchmarks/call_areas.py sums py-spy's raw stacks of the in-process call by task owner and
by the innermost frame's area (docs/benchmarks.md, session 39): checked on hand-made stacks in
py-spy's raw format, and run as a script."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[3] / "benchmarks" / "call_areas.py"
_spec = importlib.util.spec_from_file_location("call_areas", SCRIPT)
assert _spec is not None and _spec.loader is not None
call_areas = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(call_areas)

TOP = "<module> (call_instructions.py:278);main (call_instructions.py:263)"
RUN = "run (trio/_core/_run.py:2532);unrolled_run (trio/_core/_run.py:2866)"
CALL = (
    "CallManager._run_call (gateway/core/calls/manager.py:280);"
    "Call.run (gateway/core/calls/call.py:191)"
)
STACKS = [
    # start-up: not inside trio.run
    f"{TOP};import (gateway/core/sip/parser.py:1) 50",
    # the gateway: an SDP parse inside the call's set-up, trio inside the call's task
    f"{TOP};{RUN};{CALL};parse_sdp_untrusted (gateway/core/sdp/parser.py:65) 3",
    f"{TOP};{RUN};{CALL};CancelScope.__enter__ (trio/_core/_run.py:627) 2",
    (
        f"{TOP};{RUN};SipEndpoint.run (gateway/core/endpoint.py:681);"
        "parse_message_untrusted (gateway/core/sip/parser.py:69);"
        "parse_name_addr_untrusted (gateway/core/sip/grammar.py:672) 4"
    ),
    # the test: a phone parsing with the gateway's parser is still the test's
    (
        f"{TOP};{RUN};SipAgent.serve (gateway/testing/sip_agent.py:499);"
        "parse_message_untrusted (gateway/core/sip/parser.py:69) 5"
    ),
    f"{TOP};{RUN};MockClock._autojump (trio/_core/_mock_clock.py:128) 1",
    # the run loop between tasks
    f"{TOP};{RUN};Deadlines.expire (trio/_core/_run.py:313) 5",
]


def test_samples_by_owner_and_innermost_area() -> None:
    total, counts = call_areas.tally(line + "\n" for line in STACKS)
    assert total == 20
    assert counts == {
        (call_areas.GATEWAY, "SDP: parse"): 3,
        (call_areas.GATEWAY, "trio"): 2,
        (call_areas.GATEWAY, "SIP: parse"): 4,
        (call_areas.TEST, "test code"): 6,
        (call_areas.RUN_LOOP, "trio"): 5,
    }


def test_it_runs(tmp_path: Path) -> None:
    raw = tmp_path / "spy.txt"
    raw.write_text("\n".join(STACKS) + "\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(raw)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.startswith("20 samples inside trio.run\n"), result.stdout
    assert "the gateway                                   45.0 %" in result.stdout


MEDIA = "gateway/core/media/"
INSIDE = [
    *STACKS,
    # the media set-up: offer_from opening a stream (a socket), and rewriting twice
    (
        f"{TOP};{RUN};{CALL};MediaSession.offer_from (gateway/core/media/session.py:560);"
        "MediaRelay.open_stream (gateway/core/media/relay.py:2244);"
        "socket.__init__ (socket.py:232) 6"
    ),
    (
        f"{TOP};{RUN};{CALL};MediaSession.offer_from (gateway/core/media/session.py:580);"
        "_rewritten_media (gateway/core/media/session.py:1460);"
        "Attributes.has (gateway/core/sdp/model.py:93);"
        "_rewritten_media (gateway/core/media/session.py:1470) 4"
    ),
]


def test_inside_an_area_every_function_inclusive_from_the_outermost_match() -> None:
    total, inside, functions = call_areas.tally_inside(
        (line + "\n" for line in INSIDE), call_areas.re.compile(MEDIA)
    )
    assert (total, inside) == (30, 10)
    assert functions == {
        "MediaSession.offer_from (gateway/core/media/session.py)": 10,
        "MediaRelay.open_stream (gateway/core/media/relay.py)": 6,
        "socket.__init__ (socket.py)": 6,
        "_rewritten_media (gateway/core/media/session.py)": 4,  # twice on its stack: once
        "Attributes.has (gateway/core/sdp/model.py)": 4,
    }


def test_it_runs_inside(tmp_path: Path) -> None:
    raw = tmp_path / "spy.txt"
    raw.write_text("\n".join(INSIDE) + "\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(raw), "--inside", MEDIA, "--top", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith("30 samples inside trio.run, 10 (33.33 %) with a matching frame")
    assert lines[2:] == [
        " 33.33 %  100.0 %  MediaSession.offer_from (gateway/core/media/session.py)",
        " 20.00 %   60.0 %  MediaRelay.open_stream (gateway/core/media/relay.py)",
    ]
