"""Quota status: usage in the current period against the tenant's entitlement (the plan's included quantity)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from usage_metering.schemas import AggregateState, Aggregation, OveragePolicy, Period
from usage_metering.schemas.entitlement import Entitlement
from usage_metering.schemas.wire import OMITTED_WHEN_NONE, DecimalText, Identifier, JsonShape, Timestamp


@dataclass(frozen=True)
class QuotaStatus(JsonShape):
    """`consumer_lag` only from a Kafka-mode node: messages not yet counted."""

    tenant_id: Identifier
    metric: Identifier
    period: Period
    used: DecimalText
    limit: DecimalText | None  # None = unlimited
    remaining: DecimalText | None  # None = unlimited
    policy: OveragePolicy | None  # None = the metric is not in the tenant's plan
    allowed: bool  # would an event of the least quantity (from a user not counted yet) be accepted now?
    as_of: Timestamp
    consumer_lag: Annotated[int | None, OMITTED_WHEN_NONE] = None


def quota_status(
    tenant_id: str,
    metric: str,
    entitlement: Entitlement,
    aggregation: Aggregation,
    period: Period,
    state: AggregateState,
    as_of: datetime,
) -> QuotaStatus:
    """`allowed` is the entitlement's decision, the one ingest makes for a `block` policy."""
    used = state.value(aggregation)
    allowed = entitlement.admits_more(state, aggregation, as_of)
    limit, remaining = entitlement.limit, entitlement.remaining(used)
    return QuotaStatus(tenant_id, metric, period, used, limit, remaining, entitlement.policy, allowed, as_of)
