"""The node face: which node answers a quota check from its own counters in a cluster."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from usage_metering.hooks import NodeHooks
from usage_metering.kafka.partitions import partition_of

pytestmark = pytest.mark.unit


class FakeStore:
    read_only = True  # no config-refresh thread

    def __init__(self, on_lake: bool) -> None:
        self.lake = object() if on_lake else None


class FakeConsumer:
    def __init__(self, partition_count: int | None, assigned: list[int]) -> None:
        self._count, self._assigned = partition_count, assigned

    def partition_count(self) -> int | None:
        return self._count

    def assigned_partitions(self) -> list[int]:
        return self._assigned


def hooks(on_lake: bool, consumer: FakeConsumer | None) -> NodeHooks:
    store: Any = FakeStore(on_lake)
    node = NodeHooks(
        store,
        None,
        None,
        clock=lambda: datetime.now(timezone.utc),  # type: ignore[arg-type]
        late_window=timedelta(days=35),
        publisher=None,
    )
    node._consumer = consumer  # type: ignore[assignment]  # what kafka_consumer() sets
    return node


def test_outside_a_cluster_ownership_does_not_apply() -> None:
    assert hooks(on_lake=False, consumer=FakeConsumer(12, [0])).owns_partition_of("t1") is None
    assert hooks(on_lake=True, consumer=None).owns_partition_of("t1") is None


def test_a_lake_node_before_its_first_assignment_owns_nothing() -> None:
    """Its counters follow no tenant yet: answering from them would say 0 used."""
    assert hooks(on_lake=True, consumer=FakeConsumer(None, [])).owns_partition_of("t1") is False


def test_a_lake_node_owns_the_tenants_of_its_partitions() -> None:
    mine = partition_of("t1", 12)
    assert hooks(on_lake=True, consumer=FakeConsumer(12, [mine])).owns_partition_of("t1") is True
    assert hooks(on_lake=True, consumer=FakeConsumer(12, [(mine + 1) % 12])).owns_partition_of("t1") is False
