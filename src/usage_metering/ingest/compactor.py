"""Folding usage_hourly's delta rows in the background, off the ingest path.

Each ingest batch appends its rollup deltas (store/events.py); a group that
many batches touched (single-event POSTs: one row each) would make reads and
the file grow with traffic rather than with (tenant, metric, user, hour)
groups. A `RollupCompactor` thread merges them every `interval_seconds`, in
its own transaction on its own cursor, so ingest never waits for it. It only
looks at hours ingest touched since its last pass (and, after a start, at the
last `startup_lookback` unless the previous writer stopped cleanly after its final pass),
so a pass costs what recent traffic wrote, not history.

A pass also seals the days that ended at least `SEAL_AFTER` ago into daily
rollups (store/sealed_days.py), a few per pass, holding the writer's lock while
it does: a day's seal must not miss a commit that ran beside it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta

from usage_metering.store import Database
from usage_metering.store.sealed_days import DAY, days_sealed_before, first_day_with_usage, seal_day
from usage_metering.store.usage import compact_rollups, mark_rollups_compact, rollups_left_compact
from usage_metering.utilities import PeriodicTask

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 5.0
STARTUP_LOOKBACK = timedelta(days=2)
SEAL_AFTER = timedelta(hours=1)  # a day is sealed once it ended this long ago
DAYS_PER_PASS = 3  # a store with much unsealed history catches up over several passes


class RollupCompactor:
    def __init__(
        self,
        database: Database,
        clock: Callable[[], datetime],
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        writer_lock: AbstractContextManager[object] | None = None,
    ) -> None:
        self.database = database
        self.clock = clock
        self.interval_seconds = interval_seconds
        self._writer_lock = writer_lock or nullcontext()  # held by ingest commits; sealing takes it too
        self._lock = threading.Lock()
        self._pass = threading.Lock()  # one pass at a time: two would delete the same delta rows and conflict
        self._dirty_since: dict[str, datetime] = {}  # per rollup table, the earliest bucket appended to
        # Days before this are sealed; ingest reads it under the writer's lock (None: no day is).
        self.sealed_before = days_sealed_before(database.cursor())
        self._started = False
        self._task = PeriodicTask("rollup-compactor", interval_seconds, self.compact)
        self.rows_removed = 0

    def touched(self, earliest_hour: datetime, table: str = "usage_hourly") -> None:
        """The writer appended deltas to `table` for buckets from `earliest_hour` on (aware UTC)."""
        hour = earliest_hour.replace(minute=0, second=0, microsecond=0)
        with self._lock:
            if table not in self._dirty_since or hour < self._dirty_since[table]:
                self._dirty_since[table] = hour

    def compact(self, seal_limit: int | None = DAYS_PER_PASS) -> int:
        """One pass now: fold the deltas appended since the last one, then seal up to `seal_limit` of the
        days due (None: all); returns the rows merged away."""
        with self._pass:
            removed = self._fold("usage_hourly")
            self.seal_due_days(seal_limit)
            removed += self._fold("usage_daily_rollup")  # late events' daily deltas
            self.rows_removed += removed
            return removed

    def _fold(self, table: str) -> int:
        with self._lock:
            since = self._dirty_since.pop(table, None)
        if since is None:
            return 0
        try:
            return compact_rollups(self.database.cursor(), since, table)
        except BaseException:
            self.touched(since, table)  # try those buckets again next time
            raise

    def seal_due_days(self, limit: int | None = None) -> int:
        """Seal, oldest first, up to `limit` days with usage that ended `SEAL_AFTER` ago; returns how many.

        Never on a lake: other nodes' commits could not be kept out.
        """
        if self.database.lake is not None or self.database.read_only:
            return 0
        cursor = self.database.cursor()
        sealed = 0
        while limit is None or sealed < limit:
            with self._writer_lock:
                day = first_day_with_usage(cursor, self.sealed_before)
                if day is None or day + DAY + SEAL_AFTER > self.clock():
                    return sealed
                seal_day(cursor, day)
                self.sealed_before = day + DAY
            sealed += 1
        return sealed

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
