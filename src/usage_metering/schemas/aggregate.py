"""The running state of one aggregate and its value under each aggregation.

Both the ingestor's in-memory quota counters and the reports read usage as
`UsageTotals`, so SUM/COUNT/MAX/UNIQUE_COUNT/LATEST mean the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from .metric import Aggregation


def aggregate_value(
    aggregation: Aggregation, total: Decimal, count: int, maximum: Decimal, unique_users: int, latest: Decimal
) -> Decimal:
    """The one of a set of events' aggregates that `aggregation` picks."""
    if aggregation is Aggregation.SUM:
        return total
    if aggregation is Aggregation.COUNT:
        return Decimal(count)
    if aggregation is Aggregation.MAX:
        return maximum
    if aggregation is Aggregation.UNIQUE_COUNT:
        return Decimal(unique_users)
    return latest


@dataclass(frozen=True)
class UsageTotals:
    """Every aggregate of a set of events; `value` picks the one a metric uses."""

    total: Decimal = Decimal(0)
    count: int = 0
    maximum: Decimal = Decimal(0)
    unique_users: int = 0
    latest: Decimal = Decimal(0)

    def value(self, aggregation: Aggregation) -> Decimal:
        return aggregate_value(aggregation, self.total, self.count, self.maximum, self.unique_users, self.latest)


@dataclass
class AggregateState:
    """A mutable running aggregate (the ingestor's quota counters)."""

    total: Decimal = Decimal(0)
    count: int = 0
    maximum: Decimal = Decimal(0)
    latest_at: datetime | None = None
    latest_quantity: Decimal = Decimal(0)
    users: set[str] = field(default_factory=set)

    def copy(self) -> AggregateState:
        """An independent copy: its own user set."""
        return AggregateState(
            self.total, self.count, self.maximum, self.latest_at, self.latest_quantity, set(self.users)
        )

    def add(self, quantity: Decimal, at: datetime, user_id: str | None) -> None:
        self.add_group(quantity, 1, quantity, at, quantity, user_id)

    def add_group(
        self,
        total: Decimal,
        count: int,
        maximum: Decimal,
        latest_at: datetime,
        latest_quantity: Decimal,
        user_id: str | None,
    ) -> None:
        """Add `count` events of one user (or none) at once: their sum, max and latest (quantity at `latest_at`)."""
        self.total += total
        self.count += count
        if maximum > self.maximum:
            self.maximum = maximum
        if self.latest_at is None or latest_at >= self.latest_at:
            self.latest_at = latest_at
            self.latest_quantity = latest_quantity
        if user_id:
            self.users.add(user_id)

    def merge(self, other: AggregateState) -> None:
        """Add another aggregate of other events (e.g. the events after a checkpoint)."""
        if other.latest_at is not None:  # None: it holds no event
            self.add_group(other.total, other.count, other.maximum, other.latest_at, other.latest_quantity, None)
        self.users |= other.users

    def totals(self) -> UsageTotals:
        return UsageTotals(self.total, self.count, self.maximum, len(self.users), self.latest_quantity)

    def value(self, aggregation: Aggregation) -> Decimal:
        return aggregate_value(aggregation, self.total, self.count, self.maximum, len(self.users), self.latest_quantity)

    def value_after(self, aggregation: Aggregation, quantity: Decimal, at: datetime, user_id: str | None) -> Decimal:
        """The value this aggregate would have with one more event, without changing it."""
        if aggregation is Aggregation.SUM:
            return self.total + quantity
        if aggregation is Aggregation.COUNT:
            return Decimal(self.count + 1)
        if aggregation is Aggregation.MAX:
            return max(self.maximum, quantity)
        if aggregation is Aggregation.UNIQUE_COUNT:
            grows = bool(user_id) and user_id not in self.users
            return Decimal(len(self.users) + (1 if grows else 0))
        if self.latest_at is None or at >= self.latest_at:
            return quantity
        return self.latest_quantity
