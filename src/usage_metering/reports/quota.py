"""Quota status: usage in the current period against the plan's included quantity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from usage_metering.schemas import OveragePolicy, Period, Plan
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
    allowed: bool  # would one more unit of usage be accepted?
    as_of: Timestamp
    consumer_lag: Annotated[int | None, OMITTED_WHEN_NONE] = None


def quota_status(
    tenant_id: str, metric: str, plan: Plan | None, period: Period, used: Decimal, as_of: datetime
) -> QuotaStatus:
    """Only a `block` policy ever disallows; `charge` and `notify` accept past the limit."""
    plan_metric = plan.metric(metric) if plan else None
    limit = plan_metric.included if plan_metric else None
    policy = plan_metric.policy if plan_metric else None
    allowed = not (policy is OveragePolicy.BLOCK and limit is not None and used >= limit)
    remaining = None if limit is None else max(Decimal(0), limit - used)
    return QuotaStatus(tenant_id, metric, period, used, limit, remaining, policy, allowed, as_of)
