"""A call's end waits for its final media counters (``MediaSession.final_counters``: with media
workers a round trip that brings the counters up to date, docs/architecture.md "A call's final
counters") at most ``FINAL_COUNTERS_WAIT``: a media worker that never answers neither holds the
BYE's answer nor the call's end for longer, and the record then says its counters are partial.
Signalling on the in-memory network, virtual time; the relay's answer is the stand-in (the
in-process relay's ``final_counters`` made to hang, as a stuck worker's round trip does)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pytest
import trio

from gateway.core.calls.manager import CallManager
from gateway.core.media.relay import MediaRelay
from gateway.core.media.relay_api import (
    COUNTERS_NO_ANSWER,
    COUNTERS_POOL_STOPPED,
    COUNTERS_WORKER_EXITED,
)
from gateway.core.media.session import FINAL_COUNTERS_WAIT
from tests.component.calls.b2bua_env import answered_call, eventually, start_b2bua


@pytest.mark.parametrize("worker_answers", [True, False])
async def test_a_stuck_media_worker_holds_the_calls_end_no_longer_than_the_bound(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    worker_answers: bool,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.core.calls.call")
    ended: list[tuple[float, Mapping[str, object] | None]] = []
    event = CallManager.event

    def recorded(
        self: CallManager,
        call: object,
        kind: str,
        reason: str | None,
        *,
        security: Mapping[str, object] | None = None,
    ) -> None:
        if kind == "ended":
            ended.append((trio.current_time(), security))
        event(self, call, kind, reason, security=security)  # type: ignore[arg-type]

    async def never_answers(self: MediaRelay) -> bool:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    monkeypatch.setattr(CallManager, "event", recorded)
    if not worker_answers:
        monkeypatch.setattr(MediaRelay, "final_counters", never_answers)
        # As a media worker's: the in-process relay's counters are not waited for.
        monkeypatch.setattr(MediaRelay, "counters_pushed", True)
        # What a call's relay on media worker 0 says of a worker that never answered.
        monkeypatch.setattr(MediaRelay, "counters_missing", {0: COUNTERS_NO_ANSWER})
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    asked = trio.current_time()
    ok = await call.bye()
    assert ok.status == 200
    answered = trio.current_time()
    await eventually(lambda: env.calls == 0)
    ((at, security),) = ended
    assert security is not None
    media = security["media"]
    assert isinstance(media, dict)
    lines = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "gateway.core.calls.call"
        and ("media counters partial" in r.getMessage() or " ended: " in r.getMessage())
    ]
    if worker_answers:
        assert at - asked < FINAL_COUNTERS_WAIT
        assert "counters_partial" not in media
        assert [level for level, _ in lines] == [logging.INFO]  # its "ended" line alone
    else:
        # Answered before the wait; the record written once it was given up on.
        assert answered - asked < FINAL_COUNTERS_WAIT
        assert FINAL_COUNTERS_WAIT <= at - asked < 2 * FINAL_COUNTERS_WAIT
        assert media["counters_partial"] is True
        # Once, before the call's "ended" line, saying which worker and why.
        ((level, partial), (_, ended_line)) = lines
        call_id = ended_line.removeprefix("call ").split(" ended: ")[0]
        assert (level, partial) == (
            logging.WARNING,
            f"call {call_id}: media counters partial (the last second of packets may be "
            "missing from its record and metrics): media worker 0: timed out after 0.5 s",
        )


@pytest.mark.parametrize(
    ("missing", "level", "says"),
    [
        # A shutdown: every call still up has them; expected, so not a WARNING to alert on.
        (
            {0: COUNTERS_POOL_STOPPED},
            logging.INFO,
            "media counters partial (the gateway is stopping: the last second of packets may "
            "be missing from its record and metrics)",
        ),
        # A worker that exited as the gateway stopped is still news.
        (
            {0: COUNTERS_POOL_STOPPED, 1: COUNTERS_WORKER_EXITED},
            logging.WARNING,
            "media counters partial (the last second of packets may be missing from its "
            "record and metrics): media worker 0: stopped with the gateway; media worker 1: "
            "worker exited",
        ),
    ],
)
async def test_counters_cut_by_a_shutdown_alone_are_said_at_info(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    missing: Mapping[int, str],
    level: int,
    says: str,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.core.calls.call")

    async def cut(self: MediaRelay) -> bool:
        return False  # as a worker pool's whose channels closed: at once, incomplete

    monkeypatch.setattr(MediaRelay, "final_counters", cut)
    monkeypatch.setattr(MediaRelay, "counters_pushed", True)
    monkeypatch.setattr(MediaRelay, "counters_missing", missing)
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    ok = await call.bye()
    assert ok.status == 200
    await eventually(lambda: env.calls == 0)
    partial = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "gateway.core.calls.call" and "media counters partial" in r.getMessage()
    ]
    ((logged_at, line),) = partial
    assert logged_at == level
    assert line.split(": ", 1)[1] == says
