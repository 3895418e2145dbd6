"""Folding usage_hourly's delta rows in the background, off the ingest path.

Each ingest batch appends its rollup deltas (store/events.py); a group that
many batches touched (single-event POSTs: one row each) would make reads and
the file grow with traffic rather than with (tenant, metric, user, hour)
groups. A `RollupCompactor` thread merges them every `interval_seconds`, in
its own transaction on its own cursor, so ingest never waits for it.

A pass costs what recent traffic wrote, not history:

- Hourly deltas are folded only for the last `RECENT_HOURS` (the hours that keep
  receiving deltas). A scan of those hours reads only the row groups appended
  since then (an event is never later than the clock), where a scan back to the
  oldest late event's hour would read every row group appended since it. An
  older hour's deltas stay as they are: late traffic spreads thin, so they are
  few per group, and its day's seal folds them into one daily row each.
- The daily deltas that late events append to sealed days (spread over the
  whole late window) are folded in one pass over those days once they are at
  least half as many as the daily table's rows: each pass costs the table, and
  comes after appends that paid for it, so the cost per appended row stays flat.

`Metering.compact_rollups()` (maintenance) folds every delta of both tables.

A pass also seals the days that ended at least `SEAL_AFTER` ago into daily
rollups (store/sealed_days.py), a few per pass, holding the writer's lock while
it does: a day's seal must not miss a commit that ran beside it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta, timezone

from usage_metering.store import Database
from usage_metering.store.sealed_days import DAY, days_sealed_before, first_day_with_usage, seal_day
from usage_metering.store.usage import (
    compact_rollups,
    daily_rollup_rows,
    mark_rollups_compact,
    rollups_left_compact,
)
from usage_metering.utilities import PeriodicTask

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 5.0
STARTUP_LOOKBACK = timedelta(days=2)
SEAL_AFTER = timedelta(hours=1)  # a day is sealed once it ended this long ago
DAYS_PER_PASS = 3  # a store with much unsealed history catches up over several passes
RECENT_HOURS = timedelta(hours=3)  # hourly deltas of older hours are left to their day's seal


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
        self._late_rows = 0  # daily delta rows ingest appended to sealed days since their last fold
        # Days before this are sealed; ingest reads it under the writer's lock (None: no day is).
        self.sealed_before = days_sealed_before(database.cursor())
        self._started = False
        self._task = PeriodicTask("rollup-compactor", interval_seconds, self.compact)
        self.rows_removed = 0

    def touched(self, earliest_hour: datetime, table: str = "usage_hourly", rows: int = 0) -> None:
        """The writer appended deltas to `table` for buckets from `earliest_hour` on (aware UTC); `rows`
        counts the daily ones (usage_daily_rollup)."""
        hour = earliest_hour.replace(minute=0, second=0, microsecond=0)
        with self._lock:
            if table not in self._dirty_since or hour < self._dirty_since[table]:
                self._dirty_since[table] = hour
            if table == "usage_daily_rollup":
                self._late_rows += rows

    def compact(self, seal_limit: int | None = DAYS_PER_PASS, *, everything: bool = False) -> int:
        """One pass now: fold the recent hours' deltas, seal up to `seal_limit` of the days due (None: all),
        and fold the sealed days' late deltas when due; with `everything`, fold every delta of both tables.
        Returns the rows merged away."""
        with self._pass:
            recent = None if everything else self.clock() - RECENT_HOURS
            removed = self._fold("usage_hourly", recent, everything)
            self.seal_due_days(seal_limit)
            if everything or self._late_deltas_due():
                removed += self._fold("usage_daily_rollup", None, everything)
            self.rows_removed += removed
            return removed

    def _late_deltas_due(self) -> bool:
        """At least half as many late daily deltas appended since their last fold as the daily table holds."""
        with self._lock:
            late = self._late_rows
        return late > 0 and 2 * late >= daily_rollup_rows(self.database.cursor())

    def _fold(self, table: str, not_before: datetime | None, everything: bool) -> int:
        with self._lock:
            since = self._dirty_since.pop(table, None)
            late = self._late_rows if table == "usage_daily_rollup" else 0
            self._late_rows -= late
        if everything:
            since = datetime.min.replace(tzinfo=timezone.utc)
        if since is None:
            return 0
        try:
            return compact_rollups(self.database.cursor(), max(since, not_before) if not_before else since, table)
        except BaseException:
            self.touched(since, table, late)  # try those buckets again next time
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
            if self.sealed_before is not None and self.sealed_before + DAY + SEAL_AFTER > self.clock():
                return sealed  # no day is due: the next one to seal starts at the mark (skips a scan of the hours)
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
