"""Quota alerts: an outbox of crossed thresholds, one row per (tenant, metric, period start, threshold).

The ingestor inserts rows in the same transaction as the batch that crossed
the threshold (inserted only when not there: once per period, whatever the replays);
the webhook dispatcher reads the pending ones and records each attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal

import duckdb
import pyarrow as pa

from usage_metering.schemas import Period, format_decimal, format_timestamp
from usage_metering.schemas.wire import DecimalText, Identifier, JsonShape, Timestamp

from .events import DECIMAL, TIMESTAMP
from .timeutil import from_naive_utc, to_naive_utc

PENDING: Final = "pending"
DELIVERED: Final = "delivered"
ALERT_STATUSES = (PENDING, DELIVERED)


ALERT_TYPE: Final = "quota.threshold_crossed"
WEBHOOK_FIELDS = (
    "type",
    "alert_id",
    "tenant_id",
    "metric",
    "threshold_percent",
    "included",
    "used",
    "period",
    "created_at",
)


def alert_id(tenant_id: str, metric: str, period: Period, threshold_percent: Decimal) -> str:
    """Stable across retries and restarts: receivers deduplicate on it (delivery is at-least-once)."""
    return f"{tenant_id}:{metric}:{format_timestamp(period.start)}:{format_decimal(threshold_percent)}"


@dataclass(frozen=True)
class Alert(JsonShape):
    """A crossed threshold (percent of `included`) and its webhook delivery state."""

    alert_id: str
    tenant_id: Identifier
    metric: Identifier
    threshold_percent: DecimalText
    included: DecimalText
    used: DecimalText
    period: Period
    created_at: Timestamp
    status: Literal["pending", "delivered"] = PENDING
    attempts: int = 0
    last_error: str | None = None
    delivered_at: Timestamp | None = None
    next_attempt_at: Timestamp | None = None
    type: Literal["quota.threshold_crossed"] = ALERT_TYPE

    @classmethod
    def crossed(
        cls,
        tenant_id: str,
        metric: str,
        period: Period,
        threshold_percent: Decimal,
        included: Decimal,
        used: Decimal,
        created_at: datetime,
    ) -> Alert:
        """A new, pending alert."""
        key = alert_id(tenant_id, metric, period, threshold_percent)
        return cls(key, tenant_id, metric, threshold_percent, included, used, period, created_at)

    def payload(self) -> dict[str, Any]:
        """The webhook body: what was crossed, for whom, in which period."""
        data = self.to_json_dict()
        return {name: data[name] for name in WEBHOOK_FIELDS}


_ALERT_COLUMNS = (
    "tenant_id, metric, period_start, threshold, period_end, included, used, status, attempts, last_error, "
    "next_attempt_at, created_at, delivered_at"
)


def add_alerts(cursor: duckdb.DuckDBPyConnection, alerts: Sequence[Alert]) -> None:
    """Record new crossings; an alert already stored for the same key is left as it is."""
    if not alerts:
        return
    # As an Arrow table: bound as parameters, each value costs DuckDB's Python client a module lookup.
    new_alerts = pa.Table.from_arrays(  # noqa: F841 (read by name from this frame: DuckDB's replacement scan)
        [
            pa.array([a.tenant_id for a in alerts], pa.string()),
            pa.array([a.metric for a in alerts], pa.string()),
            pa.array([to_naive_utc(a.period.start) for a in alerts], TIMESTAMP),
            pa.array([a.threshold_percent for a in alerts], DECIMAL),
            pa.array([to_naive_utc(a.period.end) for a in alerts], TIMESTAMP),
            pa.array([a.included for a in alerts], DECIMAL),
            pa.array([a.used for a in alerts], DECIMAL),
            pa.array([to_naive_utc(a.created_at) for a in alerts], TIMESTAMP),
        ],
        names=["tenant_id", "metric", "period_start", "threshold", "period_end", "included", "used", "created_at"],
    )
    cursor.execute(
        f"INSERT INTO alerts ({_ALERT_COLUMNS}) SELECT tenant_id, metric, period_start, threshold, period_end, "
        "included, used, 'pending', 0, NULL, created_at, created_at, NULL FROM new_alerts new "
        "WHERE NOT EXISTS (SELECT 1 FROM alerts a WHERE a.tenant_id = new.tenant_id AND a.metric = new.metric "
        "AND a.period_start = new.period_start AND a.threshold = new.threshold)"
    )


_COLUMNS = (
    "a.tenant_id, a.metric, a.period_start, a.period_end, a.threshold, a.included, a.used, a.created_at, "
    "a.status, a.attempts, a.last_error, a.delivered_at, a.next_attempt_at"
)


def _naive_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else from_naive_utc(moment)


def _alert(row: Sequence[Any]) -> Alert:
    period = Period(from_naive_utc(row[2]), from_naive_utc(row[3]))
    threshold_percent = Decimal(row[4])
    return Alert(
        alert_id=alert_id(row[0], row[1], period, threshold_percent),
        tenant_id=row[0],
        metric=row[1],
        period=period,
        threshold_percent=threshold_percent,
        included=Decimal(row[5]),
        used=Decimal(row[6]),
        created_at=from_naive_utc(row[7]),
        status=row[8],
        attempts=int(row[9]),
        last_error=row[10],
        delivered_at=_naive_or_none(row[11]),
        next_attempt_at=_naive_or_none(row[12]) if row[8] == PENDING else None,
    )


def list_alerts(
    cursor: duckdb.DuckDBPyConnection, tenant_id: str | None = None, status: str | None = None, limit: int = 1000
) -> list[Alert]:
    """Newest first, optionally for one tenant and/or one status."""
    rows = cursor.execute(
        f"SELECT {_COLUMNS} FROM alerts a "
        "WHERE (? IS NULL OR a.tenant_id = ?) AND (? IS NULL OR a.status = ?) "
        "ORDER BY a.created_at DESC, a.tenant_id, a.metric, a.threshold DESC LIMIT ?",
        [tenant_id, tenant_id, status, status, limit],
    ).fetchall()
    return [_alert(row) for row in rows]


def due_alerts(
    cursor: duckdb.DuckDBPyConnection, now: datetime, default_url: str | None, limit: int = 100
) -> list[tuple[Alert, str]]:
    """Pending alerts whose next attempt is due, with the URL to POST to (the tenant's, else `default_url`).

    Alerts with no URL at all stay pending, untouched, until one is configured.
    """
    rows = cursor.execute(
        f"SELECT {_COLUMNS}, coalesce(t.webhook_url, ?) AS url FROM alerts a "
        "LEFT JOIN tenants t ON t.tenant_id = a.tenant_id "
        "WHERE a.status = 'pending' AND a.next_attempt_at <= ? AND coalesce(t.webhook_url, ?) IS NOT NULL "
        "ORDER BY a.next_attempt_at, a.created_at LIMIT ?",
        [default_url, to_naive_utc(now), default_url, limit],
    ).fetchall()
    return [(_alert(row[:-1]), row[-1]) for row in rows]


def _key(alert: Alert) -> list[Any]:
    return [alert.tenant_id, alert.metric, to_naive_utc(alert.period.start), alert.threshold_percent]


_WHERE_KEY = "WHERE tenant_id = ? AND metric = ? AND period_start = ? AND threshold = ?"


def mark_delivered(cursor: duckdb.DuckDBPyConnection, alert: Alert, at: datetime) -> None:
    cursor.execute(
        "UPDATE alerts SET status = 'delivered', attempts = attempts + 1, last_error = NULL, delivered_at = ? "
        + _WHERE_KEY,
        [to_naive_utc(at), *_key(alert)],
    )


def mark_failed(cursor: duckdb.DuckDBPyConnection, alert: Alert, error: str, next_attempt_at: datetime) -> None:
    cursor.execute(
        "UPDATE alerts SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? " + _WHERE_KEY,
        [error[:1000], to_naive_utc(next_attempt_at), *_key(alert)],
    )
