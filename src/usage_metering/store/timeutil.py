"""DuckDB TIMESTAMP columns hold naive UTC; these convert at the boundary."""

from __future__ import annotations

from datetime import datetime, timezone


def to_naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def from_naive_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc)


def utc_now_naive() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
