"""Detecting quota-threshold crossings in a batch, from the counters before and after it.

Checked once per batch per touched counter (not per event), and only for
counters whose plan metric has an included quantity and alert thresholds.
A threshold is crossed when usage goes from below its level to at or above it:
so a `block` metric (which can reach but never pass its quota) still alerts at
100%, and a blocked event, which never reaches the staged counter, counts for nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cached_property

from usage_metering.schemas import AggregateState, Aggregation, period_containing
from usage_metering.store import Catalog
from usage_metering.store.alerts import Alert

from .counters import CounterKey, QuotaCounters

HUNDRED = Decimal(100)


@dataclass(frozen=True)
class AlertRule:
    """One tenant's metric: its quota, the percentages that alert, and how its usage aggregates."""

    included: Decimal
    thresholds: tuple[Decimal, ...]  # percent of `included`, ascending
    aggregation: Aggregation = Aggregation.SUM

    @classmethod
    def of(cls, catalog: Catalog, tenant_id: str, metric: str) -> AlertRule | None:
        """None when nothing can alert: no plan, metric not in it, no quota or no thresholds."""
        plan = catalog.plan_for(tenant_id)
        plan_metric = plan.metric(metric) if plan else None
        if plan_metric is None or plan_metric.included is None or not plan_metric.alert_thresholds:
            return None
        return cls(plan_metric.included, plan_metric.alert_thresholds, catalog.aggregation(metric))

    @cached_property
    def levels(self) -> tuple[Decimal, ...]:
        """The usage at which each threshold's percent of the quota is reached."""
        return tuple(self.included * threshold / HUNDRED for threshold in self.thresholds)


def crossed_thresholds(rule: AlertRule, before: Decimal, after: Decimal) -> tuple[Decimal, ...]:
    """The thresholds whose level lies in (before, after]: crossed by going from `before` to `after`."""
    return tuple(t for t, level in zip(rule.thresholds, rule.levels) if before < level <= after)


def detect_alerts(
    changed: Mapping[CounterKey, AggregateState],
    counters: QuotaCounters,
    catalog: Catalog,
    now: datetime,
    rules: dict[tuple[str, str], AlertRule | None],
) -> list[Alert]:
    """Alerts for every threshold the staged counters crossed relative to the published ones.

    `rules` are the ones looked up so far for `catalog`, per (tenant, metric); it gets the new ones.
    """
    alerts: list[Alert] = []
    for key, state in changed.items():
        tenant_id, metric, period_start = key
        if (tenant_id, metric) not in rules:
            rules[(tenant_id, metric)] = AlertRule.of(catalog, tenant_id, metric)
        rule = rules[(tenant_id, metric)]
        if rule is None:
            continue
        before = counters.published_state(key).value(rule.aggregation)
        after = state.value(rule.aggregation)
        crossed = crossed_thresholds(rule, before, after)
        if not crossed:
            continue
        period = period_containing(period_start, catalog.anchor_day(tenant_id))
        alerts.extend(
            Alert.crossed(tenant_id, metric, period, threshold, rule.included, after, now) for threshold in crossed
        )
    return alerts
