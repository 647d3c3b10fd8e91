"""tune_gc: start-up objects are frozen and young collections are rarer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sigstack.runtime import GEN0_THRESHOLD, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_freezes_what_exists_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    survivor = [object()]  # a container built "at start-up"
    tune_gc()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == GEN0_THRESHOLD
    assert all(o is not survivor for o in gc.get_objects())  # frozen: never scanned
    tune_gc()  # a second call keeps the same settings
    assert gc.get_threshold()[0] == GEN0_THRESHOLD


@pytest.mark.usefixtures("restore_gc")
def test_cycles_are_still_collected_after_tuning() -> None:
    tune_gc()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2  # the cycle is garbage and the collector still finds it
