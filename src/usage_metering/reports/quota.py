"""Quota status: usage in the current period against the plan's included quantity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from usage_metering.schemas import OveragePolicy, Period, Plan, format_decimal, format_timestamp


@dataclass(frozen=True)
class QuotaStatus:
    tenant_id: str
    metric: str
    period: Period
    used: Decimal
    limit: Decimal | None  # None = unlimited
    policy: OveragePolicy | None  # None = the metric is not in the tenant's plan
    allowed: bool  # would one more unit of usage be accepted?
    as_of: datetime

    @property
    def remaining(self) -> Decimal | None:
        return None if self.limit is None else max(Decimal(0), self.limit - self.used)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "metric": self.metric,
            "period": self.period.to_json_dict(),
            "used": format_decimal(self.used),
            "limit": None if self.limit is None else format_decimal(self.limit),
            "remaining": None if self.remaining is None else format_decimal(self.remaining),
            "policy": None if self.policy is None else self.policy.value,
            "allowed": self.allowed,
            "as_of": format_timestamp(self.as_of),
        }


def quota_status(
    tenant_id: str, metric: str, plan: Plan | None, period: Period, used: Decimal, as_of: datetime
) -> QuotaStatus:
    """Only a `block` policy ever disallows; `charge` and `notify` accept past the limit."""
    plan_metric = plan.metric(metric) if plan else None
    limit = plan_metric.included if plan_metric else None
    policy = plan_metric.policy if plan_metric else None
    allowed = not (policy is OveragePolicy.BLOCK and limit is not None and used >= limit)
    return QuotaStatus(tenant_id, metric, period, used, limit, policy, allowed, as_of)
