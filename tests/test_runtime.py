"""A node's process settings (node/runtime.py)."""

from __future__ import annotations

import gc
from typing import Iterator

import pytest

from usage_metering.node.runtime import YOUNG_GENERATION_THRESHOLD, tune_garbage_collector

pytestmark = pytest.mark.unit


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_a_node_collects_the_young_generation_less_often(restored_gc: None) -> None:
    older = gc.get_threshold()[1:]
    tune_garbage_collector()
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, *older)
    assert gc.get_freeze_count() > 0  # what existed at start-up is left out of full collections
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1  # cycles are still collected
