"""Where the in-process call's time goes, by area: py-spy's raw stacks of
``benchmarks/call_instructions.py`` summed per task owner and per area of the code.

Record the stacks first (py-spy from the benchmark venv; no valgrind: the driver runs in trio's
virtual time, so only the machine's other load stretches the samples, all alike)::

    PYTHONHASHSEED=0 py-spy record -r 1000 -f raw -o /tmp/spy.txt -- \\
        python benchmarks/call_instructions.py --calls 600
    python benchmarks/call_areas.py /tmp/spy.txt

Only samples inside ``trio.run`` count (not the interpreter's start and the imports). Each
sample's task is the frames above trio's ``unrolled_run``: the test's (its two phones, the
in-memory network, the memory transport's receive task, the driver and the mock clock's
autojump: ``gateway/testing/``, ``b2bua_env``, ``call_instructions``, ``_mock_clock`` among
its first three frames), the gateway's (``gateway/core/`` there), or the run loop itself
between tasks (deadlines, I/O wait, scheduling). Its area is that of the innermost frame that
names one, in the order of :data:`AREAS` (so the SDP parser's frames inside the call's set-up
count as SDP, and trio's frames inside the gateway's task as trio); a test task's sample is
the test's whatever code it runs (the phones parse and build with ``gateway.core.sip``).

Inside one area (session 40's media set-up), ``--inside REGEX`` lists instead every function's
inclusive share of the samples that have a frame matching REGEX, from the outermost such frame
down (a function on the stack twice counts once)::

    python benchmarks/call_areas.py /tmp/spy.txt \\
        --inside 'gateway/core/media/|gateway/plugins/keyexchange|media_keys'
"""

from __future__ import annotations

import argparse
import collections
import re
from collections.abc import Iterable

AREAS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("SDP: parse", r"gateway/core/sdp/parser\.py"),
        ("SDP: write", r"gateway/core/sdp/serializer\.py"),
        ("SDP: model, offer/answer, rewrite", r"gateway/core/sdp/"),
        ("SIP: parse", r"gateway/core/sip/(parser|grammar)\.py"),
        ("SIP: messages built and written",
         r"gateway/core/sip/(serializer|message|headers|uri|via)\.py"),
        ("SIP: transactions", r"gateway/core/sip/transaction\.py"),
        ("SIP: dialogs", r"gateway/core/sip/dialog\.py"),
        ("SIP: other", r"gateway/core/sip/"),
        ("media set-up (sessions, relay, keys)",
         r"gateway/core/media/|gateway/plugins/keyexchange|media_keys\.py"),
        ("records, metrics, store",
         r"gateway/core/calls/records\.py|gateway/core/store/|metrics|sqlite3"),
        ("call logic (gateway/core/calls)", r"gateway/core/calls/"),
        ("endpoint (dispatch, flows, sends)",
         r"gateway/core/endpoint\.py|gateway/core/transport/|gateway/core/inbound\.py"),
        ("gateway, other", r"gateway/core/|gateway/plugins/"),
        ("test code", r"gateway/testing/|b2bua_env|call_instructions\.py"),
        ("trio", r"trio/|outcome/|sortedcontainers|contextlib"),
    )
)  # fmt: skip
_TEST_TASK = re.compile(r"gateway/testing/|b2bua_env|call_instructions|_mock_clock")
_GATEWAY_TASK = re.compile(r"gateway/core/")

TEST = "the test (phones, network, driver)"
GATEWAY = "the gateway"
RUN_LOOP = "trio's run loop between tasks"


def area_of(frames: list[str]) -> str:
    """The area of the innermost frame that names one; trio when none does."""
    for frame in reversed(frames):
        for name, pattern in AREAS:
            if pattern.search(frame):
                return name
    return "trio"


def owner_of(task: list[str]) -> str:
    """Whose task a sample's frames above ``unrolled_run`` are."""
    head = task[:3]
    if any(_TEST_TASK.search(frame) for frame in head):
        return TEST
    if any(_GATEWAY_TASK.search(frame) for frame in head):
        return GATEWAY
    return RUN_LOOP


def tally(lines: Iterable[str]) -> tuple[int, collections.Counter[tuple[str, str]]]:
    """Samples inside trio.run, and their count per (owner, area); a test task's area is
    always "test code"."""
    total = 0
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in lines:
        stack, _, number = line.rstrip("\n").rpartition(" ")
        if not stack or not number.isdigit():
            continue
        frames = stack.split(";")
        runs = [i for i, frame in enumerate(frames) if frame.startswith("unrolled_run ")]
        if not runs:
            continue  # the interpreter's start, the imports
        samples = int(number)
        total += samples
        task = frames[runs[0] + 1 :]
        owner = owner_of(task)
        counts[(owner, "test code" if owner == TEST else area_of(task))] += samples
    return total, counts


def report(total: int, counts: collections.Counter[tuple[str, str]]) -> str:
    if not total:
        return "no sample inside trio.run"
    owners: collections.Counter[str] = collections.Counter()
    for (owner, _area), samples in counts.items():
        owners[owner] += samples
    lines = [f"{total} samples inside trio.run", ""]
    for owner, samples in owners.most_common():
        lines.append(f"{owner:44} {100 * samples / total:5.1f} %")
        for (who, area), n in counts.most_common():
            if who == owner and (owner != TEST or area != "test code"):
                lines.append(f"    {area:40} {100 * n / total:5.1f} %")
    return "\n".join(lines)


_LINE_NUMBER = re.compile(r":\d+\)$")


def tally_inside(
    lines: Iterable[str], pattern: re.Pattern[str]
) -> tuple[int, int, collections.Counter[str]]:
    """Samples inside trio.run, those with a frame that ``pattern`` finds, and per function
    (file and name, line numbers dropped) the samples that have it at or below the outermost
    such frame: each function's inclusive share of that part of the call."""
    total = inside = 0
    functions: collections.Counter[str] = collections.Counter()
    for line in lines:
        stack, _, number = line.rstrip("\n").rpartition(" ")
        if not stack or not number.isdigit():
            continue
        frames = stack.split(";")
        if not any(frame.startswith("unrolled_run ") for frame in frames):
            continue
        samples = int(number)
        total += samples
        first = next((i for i, frame in enumerate(frames) if pattern.search(frame)), None)
        if first is None:
            continue
        inside += samples
        for name in {_LINE_NUMBER.sub(")", frame) for frame in frames[first:]}:
            functions[name] += samples
    return total, inside, functions


def report_inside(total: int, inside: int, functions: collections.Counter[str], limit: int) -> str:
    if not inside:
        return "no sample inside trio.run has such a frame"
    lines = [
        f"{total} samples inside trio.run, {inside} ({100 * inside / total:.2f} %) with a "
        "matching frame; per function, inclusive: % of the samples inside trio.run, % of those "
        "matching",
        "",
    ]
    # Ties by name: the same stacks give the same list whatever the hash seed.
    for name, n in sorted(functions.items(), key=lambda item: (-item[1], item[0]))[:limit]:
        lines.append(f"{100 * n / total:6.2f} % {100 * n / inside:6.1f} %  {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("raw", help="py-spy's --format raw output of call_instructions.py")
    parser.add_argument(
        "--inside",
        metavar="REGEX",
        help="instead of the areas: every function's inclusive share of the samples that have "
        "a frame matching REGEX, from the outermost such frame down (e.g. the media set-up: "
        "'gateway/core/media/|gateway/plugins/keyexchange|media_keys')",
    )
    parser.add_argument("--top", type=int, default=60, help="functions listed with --inside")
    args = parser.parse_args()
    with open(args.raw, encoding="utf-8") as stacks:
        if args.inside:
            found = tally_inside(stacks, re.compile(args.inside))
            print(report_inside(*found, args.top))
        else:
            print(report(*tally(stacks)))


if __name__ == "__main__":
    main()
