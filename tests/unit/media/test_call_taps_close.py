"""A call's taps at its end (gateway/core/media/taps.py ``CallTaps.close``): every sink is
closed and let go, since a sink may hold the call (a recording's TappedCall holds the call's
``recording_indicated``) and the call holds its taps, a cycle only the collector would free
(tests/component/calls/test_b2bua_call_freed.py); what the call's record says of its taps is
unchanged, and a sink's late word about its recording is not taken."""

from __future__ import annotations

import weakref

from gateway.core.media.taps import CallTaps


class Sink:
    def __init__(self, covert: bool = False) -> None:
        self.covert = covert
        self.closed = False

    def packet(self, stream_id: str, direction: str, rtp: bytes, *, now: float) -> None:
        pass

    async def run(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_closing_closes_and_lets_go_of_every_sink_and_keeps_the_names() -> None:
    recorder, intercept = Sink(), Sink(covert=True)
    closed_recorder, closed_intercept = weakref.ref(recorder), weakref.ref(intercept)
    taps = CallTaps("call-1", None, [("recorder", recorder), ("intercept", intercept)], clock=float)
    record = taps.record()
    assert taps.names == ("recorder",)  # a covert sink is never named
    assert taps.may_indicate("recorder")
    del recorder, intercept
    assert closed_recorder() is not None  # held by the taps while the call lives
    taps.close()
    assert taps.record() == record
    assert taps.names == ("recorder",)
    assert not taps.may_indicate("recorder")
    assert closed_recorder() is None and closed_intercept() is None  # closed, then let go


def test_each_sink_is_closed_once() -> None:
    sink = Sink()
    closes = []
    sink.close = lambda: closes.append(1)  # type: ignore[method-assign]
    taps = CallTaps("call-1", None, [("recorder", sink)], clock=float)
    taps.close()
    taps.close()
    assert closes == [1]
