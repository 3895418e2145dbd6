"""Prometheus metrics for one app: a `MeteringObserver` backed by its own `CollectorRegistry`.

Each app gets a fresh registry (never prometheus_client's global one), so
several apps in one process — tests, mostly — keep separate counts. Counters
live in memory and start at zero with the process, like every Prometheus
counter; values read from outside (database file size, Kafka consumer lag)
are read at scrape time by a custom collector.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from usage_metering.schemas import EventStatus

log = logging.getLogger(__name__)

PREFIX = "usage_metering"
INGESTED_STATUSES = (EventStatus.RECORDED, EventStatus.DUPLICATE, EventStatus.BLOCKED)
BATCH_SIZE_BUCKETS = (1, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, 20_000)
COMMIT_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

LagSource = Callable[[], Mapping[int, int]]
"""Returns {partition: lag in messages} for the partitions this node owns (Kafka mode)."""


class _ScrapeTimeCollector(Collector):
    """Values that are cheaper to read when scraped than to keep up to date."""

    def __init__(self, db_path: Path, lag_source: Callable[[], LagSource | None]) -> None:
        self.db_path = db_path
        self.lag_source = lag_source

    def collect(self) -> Iterator[Metric]:
        size = GaugeMetricFamily(f"{PREFIX}_database_size_bytes", "Size of the DuckDB database file (without its WAL).")
        with contextlib.suppress(OSError):  # not created yet, or removed: no sample rather than a wrong one
            size.add_metric([], os.stat(self.db_path).st_size)
        yield size
        source = self.lag_source()
        if source is None:
            return
        lag = GaugeMetricFamily(
            f"{PREFIX}_consumer_lag",
            "Kafka messages not yet committed to DuckDB, per owned partition.",
            labels=["partition"],
        )
        try:
            for partition, value in sorted(source().items()):
                lag.add_metric([str(partition)], value)
        except Exception:  # lag is best effort; a broken source must not break the scrape
            log.exception("consumer lag source failed")
            return
        yield lag


class PrometheusMetrics:
    """Counts what the library reports (see `usage_metering.ingest.observer.MeteringObserver`)."""

    def __init__(self, db_path: str | Path, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lag_source: LagSource | None = None
        r = self.registry
        events = Counter(f"{PREFIX}_events", "Events committed by the ingestor, by outcome.", ["status"], registry=r)
        self._events = {status: events.labels(status) for status in INGESTED_STATUSES}  # bound once: cheap inc()
        self._rejected = Counter(
            f"{PREFIX}_events_rejected", "Events that failed validation, by error code.", ["reason"], registry=r
        )
        self._dead_letters = Counter(f"{PREFIX}_dead_letters", "Dead letters committed.", registry=r)
        self._batch_size = Histogram(
            f"{PREFIX}_ingest_batch_size", "Events per group commit.", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self._commit_seconds = Histogram(
            f"{PREFIX}_ingest_commit_seconds",
            "Time to commit one group (one DuckDB transaction).",
            buckets=COMMIT_SECONDS_BUCKETS,
            registry=r,
        )
        decisions = Counter(
            f"{PREFIX}_quota_decisions",
            "Quota decisions: allowed/denied answers to quota checks, and events blocked by a block policy.",
            ["outcome"],
            registry=r,
        )
        self._allowed, self._denied, self._blocked = (decisions.labels(o) for o in ("allowed", "denied", "blocked"))
        r.register(_ScrapeTimeCollector(Path(db_path), lambda: self._lag_source))

    # -- hooks for the node ----------------------------------------------------------

    def set_lag_source(self, source: LagSource | None) -> None:
        """Kafka mode registers e.g. `KafkaIngestConsumer.lag`; without one there is no lag series."""
        self._lag_source = source

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # -- MeteringObserver --------------------------------------------------------------

    def on_batch(self, size: int, seconds: float, outcomes: Tally[EventStatus]) -> None:
        for status, count in outcomes.items():
            child = self._events.get(status)
            if child is not None and count:
                child.inc(count)
        blocked = outcomes.get(EventStatus.BLOCKED, 0)
        if blocked:
            self._blocked.inc(blocked)
        self._batch_size.observe(size)
        self._commit_seconds.observe(seconds)

    def on_dead_letters(self, count: int) -> None:
        self._dead_letters.inc(count)

    def on_rejected(self, code: str) -> None:
        self._rejected.labels(code).inc()

    def on_quota_check(self, allowed: bool) -> None:
        (self._allowed if allowed else self._denied).inc()
