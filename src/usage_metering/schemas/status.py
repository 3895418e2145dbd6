"""What became of a submitted event, and the per-status counts every batch answer reports."""

from __future__ import annotations

from enum import Enum
from typing import Iterable


class EventStatus(str, Enum):
    RECORDED = "recorded"  # stored and counted
    DUPLICATE = "duplicate"  # its (tenant_id, event_id) was already stored
    BLOCKED = "blocked"  # a `block` quota refused it; not stored
    REJECTED = "rejected"  # invalid; not stored
    ACCEPTED = "accepted"  # Kafka mode: acknowledged by the broker (acks=all), not yet ingested

    def __str__(self) -> str:
        return self.value


# The summary's key for each status (the API has always said "duplicates").
SUMMARY_KEYS = {
    EventStatus.RECORDED: "recorded",
    EventStatus.DUPLICATE: "duplicates",
    EventStatus.BLOCKED: "blocked",
    EventStatus.REJECTED: "rejected",
    EventStatus.ACCEPTED: "accepted",
}


def batch_summary(statuses: Iterable[str]) -> dict[str, int]:
    """How many events of a batch ended in each status: {recorded, duplicates, blocked, rejected, accepted}."""
    counts = dict.fromkeys(SUMMARY_KEYS.values(), 0)
    for status in statuses:
        counts[SUMMARY_KEYS[EventStatus(status)]] += 1
    return counts
