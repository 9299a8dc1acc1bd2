"""How a transfer reaches a call's tap sinks (gateway/core/media/taps.py ``CallTaps``): the older
``leg_replaced(side)`` and ``party_replaced(side, uri)`` with the new party's URI, each only to
the sinks that have it; a sink that raises does not keep the others from hearing."""

from __future__ import annotations

from gateway.core.media.taps import CallTaps


class Sink:
    def packet(self, stream_id: str, direction: str, rtp: bytes, *, now: float) -> None:
        pass

    async def run(self) -> None:
        pass

    def close(self) -> None:
        pass


class OldSink(Sink):
    """A sink written before ``party_replaced`` existed (an interception)."""

    def __init__(self) -> None:
        self.heard: list[str] = []

    def leg_replaced(self, side: str) -> None:
        self.heard.append(side)


class NewSink(Sink):
    """A sink that wants the new party (a SIPREC client)."""

    def __init__(self, fail: bool = False) -> None:
        self.heard: list[tuple[str, str]] = []
        self.fail = fail

    def party_replaced(self, side: str, uri: str) -> None:
        self.heard.append((side, uri))
        if self.fail:
            raise RuntimeError("broken sink")


def test_each_sink_hears_of_a_transfer_by_the_method_it_has() -> None:
    old, new, broken, plain = OldSink(), NewSink(), NewSink(fail=True), Sink()
    sinks = [("broken", broken), ("old", old), ("plain", plain), ("new", new)]
    taps = CallTaps("call-1", None, sinks, clock=lambda: 0.0)
    taps.leg_replaced("b", "sip:bob@gw")
    assert broken.heard == [("b", "sip:bob@gw")]
    assert old.heard == ["b"]
    assert new.heard == [("b", "sip:bob@gw")]
    taps.leg_replaced("a")  # a caller of the older signature: no URI known
    assert old.heard == ["b", "a"] and new.heard == [("b", "sip:bob@gw"), ("a", "")]
