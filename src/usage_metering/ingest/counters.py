"""In-memory usage counters per (tenant, metric, billing period), for hot quota checks.

Published states are never mutated: the ingestor stages copies while it works
on a batch and publishes them only after the DuckDB commit, so a reader sees
committed usage without taking a lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal

import duckdb

from usage_metering.schemas import (
    AggregateState,
    Aggregation,
    Period,
    UsageEvent,
    UsageTotals,
    period_containing,
    previous_period,
)
from usage_metering.store.counter_checkpoint import CounterCheckpoint, event_states_for_windows
from usage_metering.store.usage import Window, aggregate_states_for_windows

CounterKey = tuple[str, str, datetime]  # (tenant_id, metric, period start)


class QuotaCounters:
    def __init__(self) -> None:
        self._states: dict[CounterKey, AggregateState] = {}
        self._tracked_from: dict[str, datetime] = {}  # per tenant: earliest period counted
        self._period_cache: dict[tuple[str, int], Period] = {}

    def reset(self, states: dict[CounterKey, AggregateState], tracked_from: dict[str, datetime]) -> None:
        self._states = states
        self._tracked_from = tracked_from

    def snapshot(self) -> tuple[dict[CounterKey, AggregateState], dict[str, datetime]]:
        """The published states (never mutated once published) and each tenant's first counted period."""
        return dict(self._states), dict(self._tracked_from)

    def period_for(self, tenant_id: str, anchor_day: int, moment: datetime) -> Period:
        """The period holding `moment`, cached per tenant (almost every event is in the current one)."""
        cache_key = (tenant_id, anchor_day)
        period = self._period_cache.get(cache_key)
        if period is None or not period.contains(moment):
            period = period_containing(moment, anchor_day)
            self._period_cache[cache_key] = period
        return period

    def is_tracked(self, tenant_id: str, period: Period) -> bool:
        tracked_from = self._tracked_from.get(tenant_id)
        return tracked_from is None or period.start >= tracked_from

    def totals(self, tenant_id: str, metric: str, period: Period) -> UsageTotals:
        return self.published_totals((tenant_id, metric, period.start))

    def published_totals(self, key: CounterKey) -> UsageTotals:
        """Committed usage for one counter (what a batch's staged copy started from)."""
        state = self._states.get(key)
        return state.totals() if state else UsageTotals()

    def published_state(self, key: CounterKey) -> AggregateState:
        """The committed running aggregate for one counter; treat it as read-only."""
        return self._states.get(key) or AggregateState()

    def stage(self) -> StagedCounters:
        return StagedCounters(self)

    def publish(self, staged: StagedCounters) -> None:
        for key, state in staged.changed.items():
            self._states[key] = state  # one dict assignment each: readers see old or new


class StagedCounters:
    """Copies of the counters a batch touches, changed in place until published."""

    def __init__(self, counters: QuotaCounters) -> None:
        self._counters = counters
        self.changed: dict[CounterKey, AggregateState] = {}

    def state(self, key: CounterKey) -> AggregateState:
        state = self.changed.get(key)
        if state is None:
            published = self._counters._states.get(key)
            state = published.copy() if published else AggregateState()
            self.changed[key] = state
        return state

    def add(self, key: CounterKey, event: UsageEvent, aggregation: Aggregation) -> None:
        user_id = event.user_id if aggregation is Aggregation.UNIQUE_COUNT else None
        self.state(key).add(event.quantity, event.timestamp, user_id)

    def add_group(
        self,
        key: CounterKey,
        total: Decimal,
        count: int,
        maximum: Decimal,
        latest_at: datetime,
        latest_quantity: Decimal,
        users: Iterable[str],
    ) -> None:
        """Add `count` events at once: their sum, max, latest (quantity at `latest_at`) and users."""
        state = self.state(key)
        state.add_group(total, count, maximum, latest_at, latest_quantity, None)
        state.users.update(users)


def seed_windows(anchor_days: dict[str, int], now: datetime) -> list[tuple[str, datetime, datetime]]:
    """Per tenant, the periods counted in memory: the previous one (late events) and the current one."""
    windows = []
    for tenant_id, anchor_day in anchor_days.items():
        current = period_containing(now, anchor_day)
        previous = previous_period(current, anchor_day)
        windows.append((tenant_id, previous.start, previous.end))
        windows.append((tenant_id, current.start, current.end))
    return windows


def seeded_states(
    cursor: duckdb.DuckDBPyConnection, windows: Sequence[Window], checkpoint: CounterCheckpoint | None
) -> dict[CounterKey, AggregateState]:
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
