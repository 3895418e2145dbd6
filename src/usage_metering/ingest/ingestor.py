"""The ingestor: dedup, quota enforcement and group-committed batch inserts.

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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, localcontext
from typing import TypeVar

import duckdb
import msgspec

from usage_metering.ingest.folds import BatchFolds, fold_batch
from usage_metering.schemas import (
    AggregateState,
    Aggregation,
    EventStatus,
    OveragePolicy,
    Period,
    UsageEvent,
    UsageTotals,
    period_containing,
)
from usage_metering.store import Catalog, Database, DeadLetter, load_catalog
from usage_metering.store.alerts import add_alerts
from usage_metering.store.catalog import register_tenants
from usage_metering.store.counter_checkpoint import (
    CounterCheckpoint,
    drop_checkpoint,
    event_states_for_windows,
    load_checkpoint,
    save_checkpoint,
)
from usage_metering.store.dead_letters import add_dead_letters
from usage_metering.store.events import (
    EventKey,
    append_events,
    append_rollup_deltas,
    event_fingerprint,
    events_to_arrow,
    stored_event_rows,
)
from usage_metering.store.offsets import PartitionKey, PartitionLost, claim_offsets, save_offsets
from usage_metering.store.owners import record_owner
from usage_metering.store.sealed_days import append_late_day_deltas
from usage_metering.store.transaction import transaction
from usage_metering.store.usage import Window, aggregate_states_for_windows

from .alerts import AlertRule, detect_alerts
from .compactor import DEFAULT_INTERVAL_SECONDS, RollupCompactor
from .counters import QuotaCounters, StagedCounters, seed_windows
from .dedup import EventKeyIndex, index_directory
from .observer import MeteringObserver

log = logging.getLogger(__name__)
T = TypeVar("T")
_COMMIT_ATTEMPTS = 5  # on a lake, against conflicts with other nodes' commits
# On a lake, events that come without Kafka offsets (HTTP, imports) move this pseudo-partition's counter in
# their commit, so two nodes ingesting directly fence each other like a partition's owners (see claim()).
DIRECT_INGEST_TOPIC = "_direct_ingest"
DIRECT_INGEST: PartitionKey = (DIRECT_INGEST_TOPIC, 0)
_CONFLICT_BACKOFF_SECONDS = 0.05
CHECKPOINT_INTERVAL_SECONDS = 60.0  # how often the counters are saved (store/counter_checkpoint.py)


@dataclass(frozen=True)
class QuotaExceeded:
    """Why an event was blocked: the limit, the usage before it, and the period."""

    metric: str
    limit: Decimal
    used: Decimal
    period: Period


class IngestOutcome(msgspec.Struct, frozen=True, gc=False):
    """What became of one submitted event (a msgspec Struct, like UsageEvent: one is built per event)."""

    event_id: str
    status: EventStatus  # EventStatus.RECORDED, EventStatus.DUPLICATE or EventStatus.BLOCKED
    quota: QuotaExceeded | None = None


# Turns the blocked event at this index of a request into a dead letter (Kafka mode: a
# blocked message must not vanish, and must be recorded in the commit that moves its offset).
BlockedLetter = Callable[[int, IngestOutcome], DeadLetter]


@dataclass
class _Request:
    events: Sequence[UsageEvent]
    offsets: Mapping[PartitionKey, int]
    dead_letters: Sequence[DeadLetter]
    dead_letter_blocked: BlockedLetter | None = None
    future: Future[list[IngestOutcome]] = field(default_factory=Future)
    # Hashed by the submitting thread (an HTTP loop, a Kafka poller) while the writer commits the group before.
    fingerprints: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.fingerprints = [event_fingerprint(event.tenant_id, event.event_id) for event in self.events]


class IngestorStopped(RuntimeError):
    pass


@dataclass(frozen=True)
class _MeteringRule:
    """What the catalog says about one tenant's metric, looked up once per batch."""

    aggregation: Aggregation
    anchor_day: int
    block_limit: Decimal | None  # set only for a `block` policy with a finite quota

    @classmethod
    def of(cls, catalog: Catalog, tenant_id: str, metric: str) -> _MeteringRule:
        plan = catalog.plan_for(tenant_id)
        plan_metric = plan.metric(metric) if plan else None
        blocks = plan_metric is not None and plan_metric.policy is OveragePolicy.BLOCK
        return cls(
            catalog.aggregation(metric),
            catalog.anchor_day(tenant_id),
            plan_metric.included if blocks and plan_metric is not None else None,
        )


def _blocked_letters(request: _Request, outcomes: Sequence[IngestOutcome]) -> list[DeadLetter]:
    if request.dead_letter_blocked is None:
        return []
    return [request.dead_letter_blocked(i, o) for i, o in enumerate(outcomes) if o.status == EventStatus.BLOCKED]


def _quota_exceeded(
    event: UsageEvent, rule: _MeteringRule, state: AggregateState, period: Period
) -> QuotaExceeded | None:
    assert rule.block_limit is not None
    user_id = event.user_id if rule.aggregation is Aggregation.UNIQUE_COUNT else None
    if state.value_after(rule.aggregation, event.quantity, event.timestamp, user_id) <= rule.block_limit:
        return None
    return QuotaExceeded(event.metric, rule.block_limit, state.value(rule.aggregation), period)


def _unique_user_metrics(catalog: Catalog) -> set[str]:
    """Metrics whose counters need the users seen (the others' do not keep them)."""
    return {name for name, metric in catalog.metrics.items() if metric.aggregation is Aggregation.UNIQUE_COUNT}


def _seeded_states(
    cursor: duckdb.DuckDBPyConnection, windows: Sequence[Window], checkpoint: CounterCheckpoint | None
) -> dict[tuple[str, str, datetime], AggregateState]:
    """Counter states for `windows`: from the checkpoint plus the events after it where it tracked the
    window, otherwise from the rollups."""
    if checkpoint is None:
        return aggregate_states_for_windows(cursor, windows)
    known = [w for w in windows if checkpoint.tracks(w[0], w[1])]
    known_starts = {(tenant_id, start) for tenant_id, start, _end in known}
    states = {key: state for key, state in checkpoint.states.items() if (key[0], key[2]) in known_starts}
    for key, tail in event_states_for_windows(cursor, known, checkpoint.covered_rows).items():
        states.setdefault(key, AggregateState()).merge(tail)
    unknown = [w for w in windows if (w[0], w[1]) not in known_starts]
    states.update(aggregate_states_for_windows(cursor, unknown))
    return states


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
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._last_group_callers = 1  # more than one: callers are concurrent, worth waiting for
        self._rules: dict[tuple[str, str], _MeteringRule] = {}  # per (tenant, metric), for `_rules_catalog`
        self._rules_catalog: Catalog | None = None
        self._unique_metrics: set[str] = set()  # of `_rules_catalog`
        self._alert_rules: dict[tuple[str, str], AlertRule | None] = {}  # likewise
        self._thread: threading.Thread | None = None
        self.checkpoint_interval_seconds = checkpoint_interval_seconds
        self._next_checkpoint = time.monotonic() + checkpoint_interval_seconds
        # Next offset this writer expects stored per claimed Kafka partition (None: nothing committed yet).
        self._expected_offsets: dict[PartitionKey, int | None] = {}
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
        request = _Request(events, offsets or {}, dead_letters, dead_letter_blocked)
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
            request = _Request(events, offsets or {}, dead_letters, dead_letter_blocked)
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
            now = self.clock()
            anchors = {t.tenant_id: t.billing_anchor_day for t in catalog.tenants.values()}
            windows = seed_windows(anchors, now)
            checkpoint = load_checkpoint(cursor) if from_checkpoint else None
            states = _seeded_states(cursor, windows, checkpoint)
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
            offsets = self._claim_offsets(topic, partitions, catch_up=self._on_lake)
            self._on_lake_retrying(lambda: self._record_owner(topic, partitions, node_url))
            return offsets

    def _claim_offsets(self, topic: str, partitions: Sequence[int], *, catch_up: bool) -> dict[int, int | None]:
        """Expect the partitions' stored offsets from now on; with `catch_up`, then re-read what other
        writers committed (the key index's tail, the counters): fence first, reads after."""
        cursor = self.database.cursor()
        offsets = claim_offsets(cursor, topic, partitions)
        self._expected_offsets.update({(topic, p): offset for p, offset in offsets.items()})
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
            for key in keys:
                self._expected_offsets.pop(key, None)

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
            return self._on_lake_retrying(attempt)

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
        """Would a `block` quota refuse this event, judged on committed usage? (No side effects.)

        A front end that does not write (Kafka mode) uses this to answer 429 before
        producing; the consumer's ingest makes the exact decision.
        """
        rule = _MeteringRule.of(self.catalog, event.tenant_id, event.metric)
        if rule.block_limit is None:
            return None
        period = self.counters.period_for(event.tenant_id, rule.anchor_day, event.timestamp)
        state = self.counters.published_state((event.tenant_id, event.metric, period.start))
        return _quota_exceeded(event, rule, state, period)

    def current_usage(self, tenant_id: str, metric: str, at: datetime | None = None) -> tuple[Period, UsageTotals]:
        """Committed usage in the period holding `at` (default now), from memory."""
        at = at or self.clock()
        period = self.counters.period_for(tenant_id, self.catalog.anchor_day(tenant_id), at)
        return period, self.counters.totals(tenant_id, metric, period)

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

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
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

    def _process(self, requests: list[_Request]) -> None:
        try:
            with self._write_lock, localcontext() as context:
                context.prec = 60  # running totals grow past the default 28 digits
                started = time.perf_counter()
                outcomes = self._on_lake_retrying(lambda: self._commit_group(requests))
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

    def _report(self, requests: list[_Request], outcomes: list[list[IngestOutcome]], seconds: float) -> None:
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

    def _on_lake_retrying(self, attempt: Callable[[], T]) -> T:
        """On a lake, a commit can conflict with another node's (a config change, a partition's new owner):
        nothing was stored, so run it again on the new state (a lost partition then shows as `PartitionLost`).
        `attempt` must do all its deciding inside."""
        for number in range(_COMMIT_ATTEMPTS):
            try:
                return attempt()
            except duckdb.TransactionException as exc:
                if not self._on_lake or number == _COMMIT_ATTEMPTS - 1:
                    raise
                log.warning("commit conflicted on the lake (%s); trying again", str(exc).splitlines()[0])
                time.sleep(_CONFLICT_BACKOFF_SECONDS * (number + 1))
            except PartitionLost as lost:
                if lost.key != DIRECT_INGEST or number == _COMMIT_ATTEMPTS - 1:
                    raise
                # Another node ingested directly meanwhile: read what it stored, then decide again.
                self._claim_offsets(DIRECT_INGEST_TOPIC, [0], catch_up=True)
        raise AssertionError("unreachable")

    def _claim_unclaimed(self, requests: list[_Request]) -> None:
        """Partitions a caller sends offsets for without claiming them first (a single writer): claim them now."""
        unclaimed = {key for request in requests for key in request.offsets if key not in self._expected_offsets}
        for topic in {topic for topic, _partition in unclaimed}:
            self._claim_offsets(topic, [p for t, p in unclaimed if t == topic], catch_up=False)

    def _commit_group(self, requests: list[_Request]) -> list[list[IngestOutcome]]:
        events = [event for request in requests for event in request.events]
        first_index: dict[EventKey, int] = {}  # in order of first appearance
        for index, event in enumerate(events):
            first_index.setdefault((event.tenant_id, event.event_id), index)
        keys = list(first_index)
        fingerprints = [fingerprint for request in requests for fingerprint in request.fingerprints]
        if len(keys) < len(events):
            unique = [events[i] for i in first_index.values()]
            fingerprints = [fingerprints[i] for i in first_index.values()]
        else:
            unique = events
        now = self.clock()
        cursor = self.database.cursor()
        self._load_keys(cursor)
        self._claim_unclaimed(requests)
        direct = self._on_lake and any(not request.offsets for request in requests)
        if direct and DIRECT_INGEST not in self._expected_offsets:
            self._claim_offsets(DIRECT_INGEST_TOPIC, [0], catch_up=True)
        stored = self.keys.stored(cursor, keys, fingerprints)
        expected = dict(self._expected_offsets)

        with transaction(cursor):
            catalog = self._register_new_tenants(cursor, unique)
            staged = self.counters.stage()
            rules = self._rules_of(catalog)
            decisions = self._decide(unique, stored, catalog, staged, rules)
            recorded = [i for i, decision in enumerate(decisions) if decision.status is EventStatus.RECORDED]
            everything = len(recorded) == len(unique)
            stored_events = unique if everything else [unique[i] for i in recorded]
            batch = events_to_arrow(
                stored_events, fingerprints if everything else [fingerprints[i] for i in recorded], now
            )
            append_events(cursor, batch)
            folds = fold_batch(stored_events, batch, self._unique_metrics)
            append_rollup_deltas(cursor, folds.rollups)
            earliest_hour = min(hour.hour for hour in folds.hours) if folds.hours else None
            sealed_before = self.compactor.sealed_before
            late = earliest_hour is not None and sealed_before is not None and earliest_hour < sealed_before
            if late:  # some of the batch's hours are in sealed days
                append_late_day_deltas(cursor, folds.rollups, sealed_before)
            self._count_folds(folds, rules, staged)
            alerts = detect_alerts(staged.changed, self.counters, catalog, now, self._alert_rules)
            add_alerts(cursor, alerts)  # the outbox, in the same commit
            outcomes = self._outcomes(requests, decisions, keys, events)
            letters = []  # per request, with its blocked events (kept apart: a lake may run this again)
            for request, request_outcomes in zip(requests, outcomes):
                save_offsets(cursor, request.offsets, expected)
                expected.update(request.offsets)
                letters.append([*request.dead_letters, *_blocked_letters(request, request_outcomes)])
                add_dead_letters(cursor, letters[-1])
            if direct:
                fence = {DIRECT_INGEST: (expected[DIRECT_INGEST] or 0) + 1}
                save_offsets(cursor, fence, expected)
                expected.update(fence)
        for request, request_letters in zip(requests, letters):
            request.dead_letters = request_letters
        self.keys.add(keys if len(recorded) == len(keys) else [keys[i] for i in recorded])
        self._expected_offsets.update({key: expected[key] for key in self._expected_offsets})
        self.catalog = catalog
        self.counters.publish(staged)
        self.last_commit_at = now
        if earliest_hour is not None:
            self.compactor.touched(earliest_hour)
            if late:
                self.compactor.touched(earliest_hour.replace(hour=0), "usage_daily_rollup")
        return outcomes

    def _rules_of(self, catalog: Catalog) -> dict[tuple[str, str], _MeteringRule]:
        """The rules looked up so far for this catalog (a catalog is never changed, only replaced)."""
        if catalog is not self._rules_catalog:
            self._rules, self._alert_rules, self._rules_catalog = {}, {}, catalog
            self._unique_metrics = _unique_user_metrics(catalog)
        return self._rules

    def _register_new_tenants(self, cursor: duckdb.DuckDBPyConnection, events: Sequence[UsageEvent]) -> Catalog:
        new_ids = sorted({e.tenant_id for e in events} - self.catalog.tenants.keys())
        if not new_ids:
            return self.catalog
        register_tenants(cursor, new_ids)
        return self.catalog.with_new_tenants(new_ids)

    def _decide(
        self,
        events: Sequence[UsageEvent],
        stored: set[EventKey],
        catalog: Catalog,
        staged: StagedCounters,
        rules: dict[tuple[str, str], _MeteringRule],
    ) -> list[IngestOutcome]:
        """Per unique event, in arrival order: duplicate (stored before), blocked by quota, or recorded.

        Only events under a `block` quota are counted here, one by one, since each
        decision depends on the ones before it; `_count_folds` counts the rest
        from the batch's folds. `rules` gets every (tenant, metric) seen.
        """
        decisions: list[IngestOutcome] = []
        for event in events:
            if stored and (event.tenant_id, event.event_id) in stored:
                decisions.append(IngestOutcome(event.event_id, EventStatus.DUPLICATE))
                continue
            rule = rules.get((event.tenant_id, event.metric))
            if rule is None:
                rule = rules[(event.tenant_id, event.metric)] = _MeteringRule.of(catalog, event.tenant_id, event.metric)
            if rule.block_limit is not None:
                decisions.append(self._decide_under_block(event, rule, staged))
            else:
                decisions.append(IngestOutcome(event.event_id, EventStatus.RECORDED))
        return decisions

    def _decide_under_block(self, event: UsageEvent, rule: _MeteringRule, staged: StagedCounters) -> IngestOutcome:
        period = self.counters.period_for(event.tenant_id, rule.anchor_day, event.timestamp)
        if not self.counters.is_tracked(event.tenant_id, period):
            return IngestOutcome(event.event_id, EventStatus.RECORDED)
        counter_key = (event.tenant_id, event.metric, period.start)
        exceeded = _quota_exceeded(event, rule, staged.state(counter_key), period)
        if exceeded is not None:
            return IngestOutcome(event.event_id, EventStatus.BLOCKED, exceeded)
        staged.add(counter_key, event, rule.aggregation)
        return IngestOutcome(event.event_id, EventStatus.RECORDED)

    def _count_folds(
        self, folds: BatchFolds, rules: Mapping[tuple[str, str], _MeteringRule], staged: StagedCounters
    ) -> None:
        """Add the recorded events that `_decide` did not count (no `block` quota), an hour of a metric at a time."""
        for hour in folds.hours:
            rule = rules[(hour.tenant_id, hour.metric)]
            if rule.block_limit is not None:
                continue
            period = self.counters.period_for(hour.tenant_id, rule.anchor_day, hour.hour)
            if self.counters.is_tracked(hour.tenant_id, period):
                staged.add_group(
                    (hour.tenant_id, hour.metric, period.start),
                    hour.total,
                    hour.count,
                    hour.maximum,
                    hour.latest_at,
                    hour.latest_quantity,
                    folds.users.get((hour.tenant_id, hour.metric, hour.hour), ()),
                )

    @staticmethod
    def _outcomes(
        requests: list[_Request], decisions: list[IngestOutcome], keys: list[EventKey], events: list[UsageEvent]
    ) -> list[list[IngestOutcome]]:
        """One outcome per submitted event (`decisions` are per unique key, in `keys` order); a repeat within
        the group is a duplicate of the first."""
        results: list[list[IngestOutcome]] = []
        if len(keys) == len(events):  # no repeats: the decisions are the outcomes, request by request
            start = 0
            for request in requests:
                results.append(decisions[start : start + len(request.events)])
                start += len(request.events)
            return results
        decided = dict(zip(keys, decisions))
        seen: set[EventKey] = set()
        for request in requests:
            request_outcomes = []
            for event in request.events:
                key = (event.tenant_id, event.event_id)
                decision = decided[key]
                if key in seen and decision.status is EventStatus.RECORDED:
                    decision = IngestOutcome(event.event_id, EventStatus.DUPLICATE)
                seen.add(key)
                request_outcomes.append(decision)
            results.append(request_outcomes)
        return results
