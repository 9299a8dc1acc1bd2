"""``Direction``'s flags read through module names (docs/benchmarks.md, session 44) against the
definitions they replaced, copied here, for every member and every pair: ``sends``,
``receives``, ``from_flags``, ``reversed`` and RFC 3264 §6.1's ``direction_allowed``."""

from __future__ import annotations

import itertools

import pytest

from gateway.core.sdp.model import Direction
from gateway.core.sdp.offer_answer import direction_allowed


def _sends_before(direction: Direction) -> bool:
    return direction in (Direction.SENDRECV, Direction.SENDONLY)


def _receives_before(direction: Direction) -> bool:
    return direction in (Direction.SENDRECV, Direction.RECVONLY)


def _from_flags_before(*, sends: bool, receives: bool) -> Direction:
    if sends:
        return Direction.SENDRECV if receives else Direction.SENDONLY
    return Direction.RECVONLY if receives else Direction.INACTIVE


@pytest.mark.parametrize("direction", list(Direction))
def test_flags_as_before(direction: Direction) -> None:
    assert direction.sends is _sends_before(direction)
    assert direction.receives is _receives_before(direction)
    assert direction.reversed() is _from_flags_before(
        sends=_receives_before(direction), receives=_sends_before(direction)
    )


@pytest.mark.parametrize(("sends", "receives"), list(itertools.product([False, True], repeat=2)))
def test_from_flags_as_before(sends: bool, receives: bool) -> None:
    assert Direction.from_flags(sends=sends, receives=receives) is _from_flags_before(
        sends=sends, receives=receives
    )


@pytest.mark.parametrize(("offered", "answered"), list(itertools.product(Direction, repeat=2)))
def test_direction_allowed_as_before(offered: Direction, answered: Direction) -> None:
    expected = (not _sends_before(answered) or _receives_before(offered)) and (
        not _receives_before(answered) or _sends_before(offered)
    )
    assert direction_allowed(offered, answered) is expected


def test_the_rfc_3264_answers() -> None:
    # RFC 3264 §6.1: sendonly -> recvonly or inactive; recvonly -> sendonly or inactive;
    # sendrecv -> any; inactive -> inactive.
    allowed = {(o, a) for o, a in itertools.product(Direction, repeat=2) if direction_allowed(o, a)}
    assert allowed == {
        *((Direction.SENDRECV, a) for a in Direction),
        (Direction.SENDONLY, Direction.RECVONLY),
        (Direction.SENDONLY, Direction.INACTIVE),
        (Direction.RECVONLY, Direction.SENDONLY),
        (Direction.RECVONLY, Direction.INACTIVE),
        (Direction.INACTIVE, Direction.INACTIVE),
    }
