"""Entitlements: what a plan lets a tenant use of one metric per billing period, and the one access decision.

Ingest (a `block` policy refusing an event), quota status (`GET /api/quota`) and billing (the overage)
all ask an `Entitlement`, so the three cannot disagree about where the limit lies. Grants (prepaid
units that raise the limit) will add to `limit` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from .aggregate import AggregateState
from .event import QUANTITY_MAX_SCALE
from .metric import Aggregation
from .money import EXACT
from .plan import OveragePolicy, Plan, PlanMetric

# The least positive quantity an event can carry: "may this tenant use more?" asks about one such event.
SMALLEST_QUANTITY = Decimal(1).scaleb(-QUANTITY_MAX_SCALE)
# A user id no event can carry (ids have no spaces): "more" of a UNIQUE_COUNT metric is one more user.
UNSEEN_USER = " unseen user"
_ZERO = Decimal(0)


@dataclass(frozen=True)
class Entitlement:
    """A limit (None: unlimited) and the policy past it (None: the metric is not in the tenant's plan)."""

    limit: Decimal | None = None
    policy: OveragePolicy | None = None

    @classmethod
    def of(cls, plan: Plan | None, metric: str) -> Entitlement:
        return cls.of_plan_metric(plan.metric(metric) if plan else None)

    @classmethod
    def of_plan_metric(cls, plan_metric: PlanMetric | None) -> Entitlement:
        if plan_metric is None:
            return cls()
        return cls(plan_metric.included, plan_metric.policy)

    @property
    def blocking_limit(self) -> Decimal | None:
        """The value usage may not pass: set only under a `block` policy with a finite limit."""
        return self.limit if self.policy is OveragePolicy.BLOCK else None

    def admits(self, value_after: Decimal) -> bool:
        """May usage become `value_after` (the metric's aggregate with the new usage counted)?

        Only `block` ever refuses; `charge` and `notify` accept past the limit."""
        limit = self.blocking_limit
        return limit is None or value_after <= limit

    def admits_more(
        self, state: AggregateState, aggregation: Aggregation, at: datetime, quantity: Decimal = SMALLEST_QUANTITY
    ) -> bool:
        """May one more event of `quantity` at `at`, from a user not counted yet, be recorded now?"""
        return self.admits(state.value_after(aggregation, quantity, at, UNSEEN_USER))

    def remaining(self, used: Decimal) -> Decimal | None:
        """What is left below the limit (never negative); None when unlimited."""
        if self.limit is None:
            return None
        return max(_ZERO, EXACT.subtract(self.limit, used))

    def overage(self, used: Decimal) -> Decimal:
        """Usage above the limit; 0 when unlimited or not reached."""
        if self.limit is None or used <= self.limit:
            return _ZERO
        return EXACT.subtract(used, self.limit)
