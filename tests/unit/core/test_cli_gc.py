"""``voipgw run`` tunes the cyclic garbage collector of its own process (see cli.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.core import cli
from gateway.core.config import embedded_defaults


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_run_freezes_start_up_objects_and_raises_the_young_threshold(restored_gc: None) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    cli._tune_garbage_collector(embedded_defaults().gateway.gc_thresholds)
    assert gc.get_threshold() == (10_000, 10, 10)
    assert gc.get_freeze_count() > 0
