"""The ingestor: dedup, entitlement decisions and group-committed batch inserts.

One writer thread owns every write to the events and rollups. Callers from any
thread `submit` events and get a future; the writer drains whatever is queued
(waiting at most `max_wait_seconds` for more when the last group had several
callers; a lone caller is not kept waiting), and commits the whole group in
ONE DuckDB transaction: new events, rollups, source offsets and dead letters.
Futures resolve only after that commit, so an acknowledgement means durable.
Embedded mode (HTTP/CLI) and the Kafka consumer use this same class.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import localcontext
from typing import TypeVar

import duckdb

from usage_metering.schemas import (
    AggregateState,
    Aggregation,
    EventStatus,
    Period,
    UsageEvent,
    UsageTotals,
    period_containing,
)
from usage_metering.store import Catalog, Database, DeadLetter, load_catalog
from usage_metering.store.alerts import add_alerts
from usage_metering.store.catalog import register_tenants
from usage_metering.store.counter_checkpoint import CounterCheckpoint, drop_checkpoint, load_checkpoint, save_checkpoint
from usage_metering.store.dead_letters import add_dead_letters
from usage_metering.store.events import append_events, append_rollup_deltas, events_to_arrow, stored_event_rows
from usage_metering.store.offsets import PartitionKey
from usage_metering.store.owners import record_owner
from usage_metering.store.sealed_days import append_late_day_deltas
from usage_metering.store.transaction import transaction
from usage_metering.store.usage import aggregate_states_for_windows

from .alerts import detect_alerts
from .compactor import DEFAULT_INTERVAL_SECONDS, RollupCompactor
from .counters import QuotaCounters, StagedCounters, seed_windows, seeded_states
from .decisions import IngestOutcome, MeteringRule, QuotaExceeded, RuleBook, count_folds, decide, quota_exceeded
from .dedup import EventKeyIndex, index_directory
from .fencing import DIRECT_INGEST, DIRECT_INGEST_TOPIC, OffsetFence, retrying_on_lake
from .folds import BatchFolds, fold_batch
from .group import BlockedLetter, Group, Request
from .observer import MeteringObserver

__all__ = ["BlockedLetter", "IngestOutcome", "Ingestor", "IngestorStopped", "QuotaExceeded"]

log = logging.getLogger(__name__)
T = TypeVar("T")
CHECKPOINT_INTERVAL_SECONDS = 60.0  # how often the counters are saved (store/counter_checkpoint.py)


class IngestorStopped(RuntimeError):
    pass


@dataclass(frozen=True)
class _Appended:
    """What a group appended, for what the writer does once the transaction committed."""

    recorded: list[int]  # indexes into the group's unique events
    earliest_hour: datetime | None
    late_rows: int  # daily delta rows appended for the hours in sealed days


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Ingestor:
    def __init__(
        self,
        database: Database,
        *,
        max_batch_events: int = 20_000,
        max_wait_seconds: float = 0.001,
        clock: Callable[[], datetime] = _utc_now,
        observer: MeteringObserver | None = None,
        compact_interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        checkpoint_interval_seconds: float = CHECKPOINT_INTERVAL_SECONDS,
    ) -> None:
        self.database = database
        # On a DuckLake, nodes share the tables and a transaction that deletes from a table fails every
        # other that appended to it meanwhile: no rollup compaction (readers fold delta rows, and the
        # lake's file merging keeps files few) and no counter checkpoint (rewritten in place) there.
        self._on_lake = database.lake is not None
        self._write_lock = threading.RLock()  # held while a batch, a config change, a reload or a day's seal runs
        self.compactor = RollupCompactor(database, clock, compact_interval_seconds, self._write_lock)
        self.observer = observer  # told about every committed group; may be set later
        self.max_batch_events = max_batch_events
        self.max_wait_seconds = max_wait_seconds
        self.clock = clock
        self.counters = QuotaCounters()
        self.keys = EventKeyIndex(index_directory(database.path))
        self.catalog = Catalog()
        self.last_commit_at: datetime | None = None
        self._queue: queue.Queue[Request | None] = queue.Queue()
        self._last_group_callers = 1  # more than one: callers are concurrent, worth waiting for
        self._rules = RuleBook()
        self._thread: threading.Thread | None = None
        self.checkpoint_interval_seconds = checkpoint_interval_seconds
        self._next_checkpoint = time.monotonic() + checkpoint_interval_seconds
        self._fence = OffsetFence()
        self.reload(from_checkpoint=not database.read_only and not self._on_lake)  # a read-only file may predate them

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Ingestor:
        if self._thread is None:
            self._load_keys(self.database.cursor())
            if not self._on_lake:
                self.compactor.start()
            self._thread = threading.Thread(target=self._run, name="ingestor", daemon=True)
            self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """True while the writer thread runs: counters are loaded and submits are accepted."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Commit everything already submitted, then stop the writer thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
            self.compactor.stop()  # after the writer: its final pass folds everything this run appended
            self._maintain(checkpoint_now=True)
        self.keys.wait_for_merge()

    def __enter__(self) -> Ingestor:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- API ---------------------------------------------------------------------

    def submit(
        self,
        events: Sequence[UsageEvent],
        *,
        offsets: Mapping[PartitionKey, int] | None = None,
        dead_letters: Sequence[DeadLetter] = (),
        dead_letter_blocked: BlockedLetter | None = None,
    ) -> Future[list[IngestOutcome]]:
        """Queue events for the next group commit; the future gives one outcome per event."""
        request = Request(events, offsets or {}, dead_letters, dead_letter_blocked)
        if self._thread is None:
            request.future.set_exception(IngestorStopped("the ingestor is not running"))
        else:
            self._queue.put(request)
        return request.future

    def ingest(
        self,
        events: Sequence[UsageEvent],
        *,
        offsets: Mapping[PartitionKey, int] | None = None,
        dead_letters: Sequence[DeadLetter] = (),
        dead_letter_blocked: BlockedLetter | None = None,
    ) -> list[IngestOutcome]:
        """Like `submit`, waiting for the commit. Works without the writer thread too."""
        if self._thread is None:
            request = Request(events, offsets or {}, dead_letters, dead_letter_blocked)
            self._process([request])
            return request.future.result()
        return self.submit(
            events, offsets=offsets, dead_letters=dead_letters, dead_letter_blocked=dead_letter_blocked
        ).result()

    def reload(self, *, from_checkpoint: bool = False) -> None:
        """Re-read metrics, plans and tenants, and rebuild the counters from the rollups (or the checkpoint)."""
        with self._write_lock:
            cursor = self.database.cursor()
            catalog = load_catalog(cursor)
            anchors = {t.tenant_id: t.billing_anchor_day for t in catalog.tenants.values()}
            windows = seed_windows(anchors, self.clock())
            checkpoint = load_checkpoint(cursor) if from_checkpoint else None
            states = seeded_states(cursor, windows, checkpoint)
            for (_tenant_id, metric, _start), state in states.items():
                if catalog.aggregation(metric) is not Aggregation.UNIQUE_COUNT:
                    state.users = set()
            tracked_from = {tenant_id: start for tenant_id, start, _end in windows[::2]}
            self.counters.reset(states, tracked_from)
            self.catalog = catalog

    def claim(self, topic: str, partitions: Sequence[int], node_url: str | None = None) -> dict[int, int | None]:
        """Take over Kafka partitions just assigned: their stored offsets (None: nothing committed yet).

        The claim is recorded with `node_url` (where this node answers HTTP, if it does) for the
        nodes that forward questions about these partitions' tenants here.

        Later commits move these offsets only from where they stand now, so a batch read
        by a consumer that lost the partition meanwhile fails with `PartitionLost`. On a
        lake another node may have written these partitions' tenants until now: the key
        index reads the rows committed since it last looked, and the counters are rebuilt.
        """
        with self._write_lock:
            offsets = self._claim(topic, partitions, catch_up=self._on_lake)
            self._retrying(lambda: self._record_owner(topic, partitions, node_url))
            return offsets

    def _claim(self, topic: str, partitions: Sequence[int], *, catch_up: bool) -> dict[int, int | None]:
        """Expect the partitions' stored offsets from now on; with `catch_up`, then re-read what other
        writers committed (the key index's tail, the counters): fence first, reads after."""
        cursor = self.database.cursor()
        offsets = self._fence.claim(cursor, topic, partitions)
        if catch_up:
            self.keys.load(cursor)
            self.reload()
        return offsets

    def _record_owner(self, topic: str, partitions: Sequence[int], node_url: str | None) -> None:
        with transaction(self.database.cursor()) as cursor:
            record_owner(cursor, topic, partitions, node_url)

    def release(self, keys: Iterable[PartitionKey]) -> None:
        """Partitions revoked or lost: commit nothing more for them until claimed again."""
        with self._write_lock:
            self._fence.release(keys)

    def change_config(self, change: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run a catalog write (plans, tenants, metrics) between batches, then reload.

        Holding the writer's lock keeps it from racing the ingest transaction
        (which registers new tenants) and the counters from seeing half a change.
        """

        def change_and_forget_checkpoint(cursor: duckdb.DuckDBPyConnection) -> T:
            result = change(cursor)
            if not self._on_lake:
                drop_checkpoint(cursor)  # the counters may mean something else now (e.g. a metric's aggregation)
            return result

        with self._write_lock:
            result = self.write(change_and_forget_checkpoint)
            self.reload()
            return result

    def write(self, change: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run a small write transaction between batches, without a reload (e.g. alert delivery status).

        Serialised with the ingest transaction, so the two never conflict on a row.
        """

        def attempt() -> T:
            with transaction(self.database.cursor()) as cursor:
                return change(cursor)

        with self._write_lock:
            return self._retrying(attempt)

    def refresh_catalog(self) -> bool:
        """Adopt metrics, plans and tenants as stored now (on a lake, other nodes change them); True if that
        took a counter reload (a metric's aggregation or a tenant's billing anchor changed)."""
        with self._write_lock:
            stored = load_catalog(self.database.cursor())
            current = self.catalog
            anchors_moved = any(stored.anchor_day(t) != current.anchor_day(t) for t in current.tenants)
            if stored.metrics != current.metrics or anchors_moved:
                self.reload()
                return True
            self.catalog = stored
            return False

    def check_quota(self, event: UsageEvent) -> QuotaExceeded | None:
        """Would a `block` entitlement refuse this event, judged on committed usage? (No side effects.)

        A front end that does not write (Kafka mode) uses this to answer 429 before
        producing; the consumer's ingest makes the exact decision.
        """
        rule = MeteringRule.of(self.catalog, event.tenant_id, event.metric)
        if not rule.blocks:
            return None
        period = self.counters.period_for(event.tenant_id, rule.anchor_day, event.timestamp)
        state = self.counters.published_state((event.tenant_id, event.metric, period.start))
        return quota_exceeded(event, rule, state, period)

    def current_state(self, tenant_id: str, metric: str, at: datetime | None = None) -> tuple[Period, AggregateState]:
        """Committed usage in the period holding `at` (default now), from memory; treat it as read-only."""
        at = at or self.clock()
        period = self.counters.period_for(tenant_id, self.catalog.anchor_day(tenant_id), at)
        return period, self.counters.published_state((tenant_id, metric, period.start))

    def current_usage(self, tenant_id: str, metric: str, at: datetime | None = None) -> tuple[Period, UsageTotals]:
        """Committed usage in the period holding `at` (default now), from memory."""
        period, state = self.current_state(tenant_id, metric, at)
        return period, state.totals()

    def stored_usage(self, tenant_id: str, metric: str, at: datetime | None = None) -> tuple[Period, AggregateState]:
        """Committed usage in the period holding `at`, read from the store: for a tenant whose
        partition another node of a cluster owns (this node's counters do not follow it)."""
        at = at or self.clock()
        period = period_containing(at, self.catalog.anchor_day(tenant_id))
        states = aggregate_states_for_windows(self.database.cursor(), [(tenant_id, period.start, period.end)])
        found = [state for (_tenant, stored_metric, _start), state in states.items() if stored_metric == metric]
        return period, found[0] if found else AggregateState()

    # -- the writer ----------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch, stopping = self._collect(first)
            self._process(batch)

    def _collect(self, first: Request) -> tuple[list[Request], bool]:
        batch = [first]
        size = len(first.events)
        deadline = time.monotonic() + (self.max_wait_seconds if self._last_group_callers > 1 else 0.0)
        while size < self.max_batch_events:
            remaining = deadline - time.monotonic()
            try:
                request = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if request is None:
                return batch, True
            batch.append(request)
            size += len(request.events)
        self._last_group_callers = len(batch)
        return batch, False

    def _process(self, requests: list[Request]) -> None:
        try:
            with self._write_lock, localcontext() as context:
                context.prec = 60  # running totals grow past the default 28 digits
                started = time.perf_counter()
                group = Group.of(requests)
                outcomes = self._retrying(lambda: self._commit_group(group))
                seconds = time.perf_counter() - started
        except Exception as exc:  # a failed commit fails every caller in the group; nothing is half-done
            log.exception("ingest batch failed; rolled back")
            for request in requests:
                request.future.set_exception(exc)
            return
        if self.observer is not None:
            self._report(requests, outcomes, seconds)
        for request, request_outcomes in zip(requests, outcomes):
            request.future.set_result(request_outcomes)
        self._maintain()

    def _maintain(self, *, checkpoint_now: bool = False) -> None:
        """After the callers heard back: save a full recent-key set as a run (ingest/dedup.py), and the
        counters when their checkpoint is due. Both are derived data: a failure is logged and retried."""
        try:
            with self._write_lock:
                cursor = self.database.cursor()
                self.keys.flush_if_full(cursor)
                if self._on_lake:
                    return
                if checkpoint_now or time.monotonic() >= self._next_checkpoint:
                    self._next_checkpoint = time.monotonic() + self.checkpoint_interval_seconds
                    states, tracked_from = self.counters.snapshot()
                    save_checkpoint(cursor, CounterCheckpoint(stored_event_rows(cursor), tracked_from, states))
        except Exception:
            log.exception("saving event keys or the counter checkpoint failed")

    def _report(self, requests: list[Request], outcomes: list[list[IngestOutcome]], seconds: float) -> None:
        """Tell the observer before the callers hear back, so a scrape after a 2xx sees the events."""
        assert self.observer is not None
        try:
            statuses = Counter(outcome.status for request_outcomes in outcomes for outcome in request_outcomes)
            self.observer.on_batch(sum(len(r.events) for r in requests), seconds, statuses)
            dead_letters = sum(len(r.dead_letters) for r in requests)
            if dead_letters:
                self.observer.on_dead_letters(dead_letters)
        except Exception:  # observing must never fail a commit that already happened
            log.exception("ingest observer failed")

    def _load_keys(self, cursor: duckdb.DuckDBPyConnection) -> None:
        if not self.keys.loaded:
            with self._write_lock:
                self.keys.load(cursor)

    def _retrying(self, attempt: Callable[[], T]) -> T:
        return retrying_on_lake(attempt, self._on_lake, lambda: self._claim(DIRECT_INGEST_TOPIC, [0], catch_up=True))

    # -- one group commit, in the order it happens ----------------------------------

    def _commit_group(self, group: Group) -> list[list[IngestOutcome]]:
        """Decide, fold and append, advance offsets, commit; then publish what the commit made true."""
        now = self.clock()
        cursor = self.database.cursor()
        direct = self._prepare(cursor, group)
        stored = self.keys.stored(cursor, group.keys, group.fingerprints)
        with transaction(cursor):
            catalog = self._register_new_tenants(cursor, group.unique)
            book = self._rules.adopt(catalog)
            staged = self.counters.stage()
            decisions = decide(group.unique, stored, book, self.counters, staged)
            appended = self._fold_and_append(cursor, group, decisions, book, staged, now)
            outcomes = group.outcomes(decisions)
            letters = [request.letters_with_blocked(o) for request, o in zip(group.requests, outcomes)]
            for request_letters in letters:
                add_dead_letters(cursor, request_letters)
            expected = self._fence.advance(cursor, [r.offsets for r in group.requests], direct=direct)
        self._publish(group, appended, letters, expected, catalog, staged, now)
        return outcomes

    def _prepare(self, cursor: duckdb.DuckDBPyConnection, group: Group) -> bool:
        """Before the transaction: the key index loaded and every partition fenced; True when the group
        moves the direct-ingest counter (a lake, and some events without source offsets)."""
        self._load_keys(cursor)
        for topic, partitions in self._fence.unclaimed(r.offsets for r in group.requests).items():
            self._claim(topic, partitions, catch_up=False)
        direct = self._on_lake and group.direct
        if direct and DIRECT_INGEST not in self._fence.expected:
            self._claim(DIRECT_INGEST_TOPIC, [0], catch_up=True)
        return direct

    def _fold_and_append(
        self,
        cursor: duckdb.DuckDBPyConnection,
        group: Group,
        decisions: list[IngestOutcome],
        book: RuleBook,
        staged: StagedCounters,
        now: datetime,
    ) -> _Appended:
        """Append the recorded events and their rollup deltas, count them, and add the alerts they raise."""
        recorded = [i for i, decision in enumerate(decisions) if decision.status is EventStatus.RECORDED]
        everything = len(recorded) == len(group.unique)
        events = group.unique if everything else [group.unique[i] for i in recorded]
        fingerprints = group.fingerprints if everything else [group.fingerprints[i] for i in recorded]
        batch = events_to_arrow(events, fingerprints, now)
        append_events(cursor, batch)
        folds = fold_batch(events, batch, book.unique_user_metrics)
        append_rollup_deltas(cursor, folds.rollups)
        earliest_hour, late_rows = self._append_late_day_deltas(cursor, folds)
        count_folds(folds, book, self.counters, staged)
        assert book.catalog is not None
        add_alerts(cursor, detect_alerts(staged.changed, self.counters, book.catalog, now, book.alert_rules))
        return _Appended(recorded, earliest_hour, late_rows)

    def _append_late_day_deltas(
        self, cursor: duckdb.DuckDBPyConnection, folds: BatchFolds
    ) -> tuple[datetime | None, int]:
        """The batch's earliest hour, and the daily delta rows appended for its hours in sealed days (those
        count in the sealed days' table too)."""
        earliest_hour = min(hour.hour for hour in folds.hours) if folds.hours else None
        sealed_before = self.compactor.sealed_before
        if earliest_hour is None or sealed_before is None or earliest_hour >= sealed_before:
            return earliest_hour, 0
        return earliest_hour, append_late_day_deltas(cursor, folds.rollups, sealed_before)

    def _publish(
        self,
        group: Group,
        appended: _Appended,
        letters: list[list[DeadLetter]],
        expected: Mapping[PartitionKey, int | None],
        catalog: Catalog,
        staged: StagedCounters,
        now: datetime,
    ) -> None:
        """The commit happened: make it visible to readers (keys, offsets, catalog, counters, compactor)."""
        for request, request_letters in zip(group.requests, letters):
            request.dead_letters = request_letters  # kept apart until now: a lake may run the commit again
        keys = group.keys if len(appended.recorded) == len(group.keys) else [group.keys[i] for i in appended.recorded]
        self.keys.add(keys)
        self._fence.committed(expected)
        self.catalog = catalog
        self.counters.publish(staged)
        self.last_commit_at = now
        if appended.earliest_hour is not None:
            self.compactor.touched(appended.earliest_hour)
            if appended.late_rows:
                self.compactor.touched(appended.earliest_hour.replace(hour=0), "usage_daily_rollup", appended.late_rows)

    def _register_new_tenants(self, cursor: duckdb.DuckDBPyConnection, events: Sequence[UsageEvent]) -> Catalog:
        new_ids = sorted({e.tenant_id for e in events} - self.catalog.tenants.keys())
        if not new_ids:
            return self.catalog
        register_tenants(cursor, new_ids)
        return self.catalog.with_new_tenants(new_ids)
