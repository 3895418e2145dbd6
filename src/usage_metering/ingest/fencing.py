"""Fencing: which source offsets this writer may move, and lake commits tried again after a conflict.

A writer claims a partition by reading its stored offset (store/offsets.py); each commit then moves the
offset from the value the writer expects, so a writer that lost the partition meanwhile (a zombie)
fails with `PartitionLost` and stores nothing. On a lake, events without source offsets (HTTP,
imports) move the `_direct_ingest` pseudo-partition's counter in their commit, so two nodes ingesting
directly fence each other the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import duckdb

from usage_metering.store.offsets import PartitionKey, PartitionLost, claim_offsets, save_offsets

log = logging.getLogger(__name__)
T = TypeVar("T")

DIRECT_INGEST_TOPIC = "_direct_ingest"
DIRECT_INGEST: PartitionKey = (DIRECT_INGEST_TOPIC, 0)
COMMIT_ATTEMPTS = 5  # on a lake, against conflicts with other nodes' commits
_CONFLICT_BACKOFF_SECONDS = 0.05


class OffsetFence:
    """The next offset this writer expects stored per claimed partition (None: nothing committed yet)."""

    def __init__(self) -> None:
        self.expected: dict[PartitionKey, int | None] = {}

    def claim(self, cursor: duckdb.DuckDBPyConnection, topic: str, partitions: Sequence[int]) -> dict[int, int | None]:
        """Read the partitions' stored offsets and expect them from now on."""
        offsets = claim_offsets(cursor, topic, partitions)
        self.expected.update({(topic, p): offset for p, offset in offsets.items()})
        return offsets

    def release(self, keys: Iterable[PartitionKey]) -> None:
        for key in keys:
            self.expected.pop(key, None)

    def unclaimed(self, offsets: Iterable[Mapping[PartitionKey, int]]) -> dict[str, list[int]]:
        """Per topic, the partitions that callers send offsets for without having claimed them (a single writer)."""
        keys = {key for request_offsets in offsets for key in request_offsets if key not in self.expected}
        return {topic: sorted(p for t, p in keys if t == topic) for topic in {topic for topic, _ in keys}}

    def advance(
        self, cursor: duckdb.DuckDBPyConnection, offsets: Sequence[Mapping[PartitionKey, int]], *, direct: bool
    ) -> dict[PartitionKey, int | None]:
        """Move the offsets, request by request, inside the caller's transaction (compare-and-set); with
        `direct`, the direct-ingest counter too. Returns what to expect once that transaction commits."""
        expected = dict(self.expected)
        for request_offsets in offsets:
            save_offsets(cursor, request_offsets, expected)
            expected.update(request_offsets)
        if direct:
            fence = {DIRECT_INGEST: (expected[DIRECT_INGEST] or 0) + 1}
            save_offsets(cursor, fence, expected)
            expected.update(fence)
        return expected

    def committed(self, expected: Mapping[PartitionKey, int | None]) -> None:
        """The transaction that `advance` wrote into committed: expect its offsets (for partitions still held)."""
        self.expected.update({key: expected[key] for key in self.expected})


def retrying_on_lake(attempt: Callable[[], T], on_lake: bool, direct_ingest_lost: Callable[[], object]) -> T:
    """On a lake, a commit can conflict with another node's (a config change, a partition's new owner):
    nothing was stored, so run it again on the new state (a lost partition then shows as `PartitionLost`).
    When another node ingested directly meanwhile, `direct_ingest_lost` reads what it stored first.
    `attempt` must do all its deciding inside."""
    for number in range(COMMIT_ATTEMPTS):
        last = number == COMMIT_ATTEMPTS - 1
        try:
            return attempt()
        except duckdb.TransactionException as exc:
            if not on_lake or last:
                raise
            log.warning("commit conflicted on the lake (%s); trying again", str(exc).splitlines()[0])
            time.sleep(_CONFLICT_BACKOFF_SECONDS * (number + 1))
        except PartitionLost as lost:
            if lost.key != DIRECT_INGEST or last:
                raise
            direct_ingest_lost()
    raise AssertionError("unreachable")
