"""Folding usage_hourly's delta rows in the background, off the ingest path.

Each ingest batch appends its rollup deltas (store/events.py); a group that
many batches touched (single-event POSTs: one row each) would make reads and
the file grow with traffic rather than with (tenant, metric, user, hour)
groups. A `RollupCompactor` thread merges them every `interval_seconds`, in
its own transaction on its own cursor, so ingest never waits for it. It only
looks at hours ingest touched since its last pass (and, after a start, at the
last `startup_lookback` unless the previous writer stopped cleanly after its final pass),
so a pass costs what recent traffic wrote, not history.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Callable

from usage_metering.store import Database
from usage_metering.store.usage import compact_rollups, mark_rollups_compact, rollups_left_compact

from .periodic import PeriodicTask

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 5.0
STARTUP_LOOKBACK = timedelta(days=2)


class RollupCompactor:
    def __init__(
        self,
        database: Database,
        clock: Callable[[], datetime],
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        self.database = database
        self.clock = clock
        self.interval_seconds = interval_seconds
        self._lock = threading.Lock()
        self._pass = threading.Lock()  # one pass at a time: two would delete the same delta rows and conflict
        self._dirty_since: datetime | None = None
        self._started = False
        self._task = PeriodicTask("rollup-compactor", interval_seconds, self.compact)
        self.rows_removed = 0

    def touched(self, earliest_hour: datetime) -> None:
        """The writer appended deltas for hours from `earliest_hour` on (aware UTC)."""
        hour = earliest_hour.replace(minute=0, second=0, microsecond=0)
        with self._lock:
            if self._dirty_since is None or hour < self._dirty_since:
                self._dirty_since = hour

    def compact(self) -> int:
        """One pass now over the hours touched since the last one; returns the rows merged away."""
        with self._pass:
            with self._lock:
                since, self._dirty_since = self._dirty_since, None
            if since is None:
                return 0
            try:
                removed = compact_rollups(self.database.cursor(), since)
            except BaseException:
                self.touched(since)  # try those hours again next time
                raise
            self.rows_removed += removed
            return removed

    def start(self) -> RollupCompactor:
        """Begin; the writer must not append deltas before this (the store is marked not compact)."""
        cursor = self.database.cursor()
        if not rollups_left_compact(cursor):
            self.touched(self.clock() - STARTUP_LOOKBACK)  # deltas a previous run left unfolded
        mark_rollups_compact(cursor, False)  # until a clean stop says otherwise
        self._started = True
        if self.interval_seconds > 0:
            self._task.start()
        return self

    def stop(self) -> None:
        """After the writer stopped: fold what this run appended, then mark the rollups compact."""
        self._task.stop()
        if self._started:
            self._started = False
            try:
                self.compact()
            except Exception:  # left marked not compact: the next start looks back again
                log.exception("the final rollup compaction failed")
                return
            mark_rollups_compact(self.database.cursor(), True)
