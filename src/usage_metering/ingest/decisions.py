"""Deciding a group's events (duplicate, blocked by an entitlement, or recorded) and counting the recorded ones.

Only events under a `block` entitlement are counted while deciding, one by one, since each decision
depends on the ones before it; `count_folds` counts the rest from the batch's folds, an hour of a
metric at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import msgspec

from usage_metering.schemas import AggregateState, Aggregation, EventStatus, Period, UsageEvent
from usage_metering.schemas.entitlement import Entitlement
from usage_metering.store import Catalog
from usage_metering.store.events import EventKey

from .alerts import AlertRule
from .counters import QuotaCounters, StagedCounters
from .folds import BatchFolds


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


@dataclass(frozen=True)
class MeteringRule:
    """What the catalog says about one tenant's metric, looked up once per batch."""

    aggregation: Aggregation
    anchor_day: int
    entitlement: Entitlement
    blocks: bool  # the entitlement may refuse events: each is decided and counted on its own

    @classmethod
    def of(cls, catalog: Catalog, tenant_id: str, metric: str) -> MeteringRule:
        entitlement = Entitlement.of(catalog.plan_for(tenant_id), metric)
        blocks = entitlement.blocking_limit is not None
        return cls(catalog.aggregation(metric), catalog.anchor_day(tenant_id), entitlement, blocks)


class RuleBook:
    """The rules looked up so far for one catalog; a catalog is never changed, only replaced."""

    def __init__(self) -> None:
        self.catalog: Catalog | None = None
        self.rules: dict[tuple[str, str], MeteringRule] = {}
        self.alert_rules: dict[tuple[str, str], AlertRule | None] = {}
        self.unique_user_metrics: set[str] = set()  # metrics whose counters need the users seen

    def adopt(self, catalog: Catalog) -> RuleBook:
        if catalog is not self.catalog:
            self.catalog, self.rules, self.alert_rules = catalog, {}, {}
            self.unique_user_metrics = {
                name for name, metric in catalog.metrics.items() if metric.aggregation is Aggregation.UNIQUE_COUNT
            }
        return self

    def rule(self, tenant_id: str, metric: str) -> MeteringRule:
        rule = self.rules.get((tenant_id, metric))
        if rule is None:
            assert self.catalog is not None
            rule = self.rules[(tenant_id, metric)] = MeteringRule.of(self.catalog, tenant_id, metric)
        return rule


def quota_exceeded(
    event: UsageEvent, rule: MeteringRule, state: AggregateState, period: Period
) -> QuotaExceeded | None:
    """The entitlement's decision on one event against `state`; None when it is admitted."""
    user_id = event.user_id if rule.aggregation is Aggregation.UNIQUE_COUNT else None
    if rule.entitlement.admits(state.value_after(rule.aggregation, event.quantity, event.timestamp, user_id)):
        return None
    limit = rule.entitlement.blocking_limit
    assert limit is not None
    return QuotaExceeded(event.metric, limit, state.value(rule.aggregation), period)


def decide(
    events: list[UsageEvent], stored: set[EventKey], book: RuleBook, counters: QuotaCounters, staged: StagedCounters
) -> list[IngestOutcome]:
    """Per unique event, in arrival order: duplicate (stored before), blocked by its entitlement, or recorded.

    `book` gets the rule of every (tenant, metric) seen."""
    decisions: list[IngestOutcome] = []
    rules = book.rules
    for event in events:
        if stored and (event.tenant_id, event.event_id) in stored:
            decisions.append(IngestOutcome(event.event_id, EventStatus.DUPLICATE))
            continue
        rule = rules.get((event.tenant_id, event.metric)) or book.rule(event.tenant_id, event.metric)
        if rule.blocks:
            decisions.append(_decide_under_block(event, rule, counters, staged))
        else:
            decisions.append(IngestOutcome(event.event_id, EventStatus.RECORDED))
    return decisions


def _decide_under_block(
    event: UsageEvent, rule: MeteringRule, counters: QuotaCounters, staged: StagedCounters
) -> IngestOutcome:
    period = counters.period_for(event.tenant_id, rule.anchor_day, event.timestamp)
    if not counters.is_tracked(event.tenant_id, period):
        return IngestOutcome(event.event_id, EventStatus.RECORDED)
    counter_key = (event.tenant_id, event.metric, period.start)
    exceeded = quota_exceeded(event, rule, staged.state(counter_key), period)
    if exceeded is not None:
        return IngestOutcome(event.event_id, EventStatus.BLOCKED, exceeded)
    staged.add(counter_key, event, rule.aggregation)
    return IngestOutcome(event.event_id, EventStatus.RECORDED)


def count_folds(folds: BatchFolds, book: RuleBook, counters: QuotaCounters, staged: StagedCounters) -> None:
    """Add the recorded events that `decide` did not count (no `block` entitlement)."""
    for hour in folds.hours:
        rule = book.rules[(hour.tenant_id, hour.metric)]
        if rule.blocks:
            continue
        period = counters.period_for(hour.tenant_id, rule.anchor_day, hour.hour)
        if counters.is_tracked(hour.tenant_id, period):
            staged.add_group(
                (hour.tenant_id, hour.metric, period.start),
                hour.total,
                hour.count,
                hour.maximum,
                hour.latest_at,
                hour.latest_quantity,
                folds.users.get((hour.tenant_id, hour.metric, hour.hour), ()),
            )
