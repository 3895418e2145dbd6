"""A small hook for watching ingestion and the library without them knowing who watches.

The ingestor and `Metering` must not import metrics libraries or the API;
whoever wants to count (the Prometheus exporter in `usage_metering.api.metrics`,
a test, a log line) implements this protocol and hands it to
`Metering.node.observe`. The ingestor calls `on_batch` and `on_dead_letters` on its
writer thread; `Metering` calls `on_rejected` and `on_quota_check` on the
request's thread.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from usage_metering.schemas import EventStatus


class MeteringObserver(Protocol):
    """Implementations must be quick and must not raise (an exception is logged
    and otherwise ignored: it never fails a commit that already happened)."""

    def on_batch(self, size: int, seconds: float, outcomes: Counter[EventStatus]) -> None:
        """`size` events were committed in `seconds`; `outcomes` counts them by status."""

    def on_dead_letters(self, count: int) -> None:
        """`count` dead letters were committed with the group (only called when count > 0)."""

    def on_rejected(self, code: str) -> None:
        """An event failed validation with this `ValidationError.code`."""

    def on_quota_check(self, allowed: bool) -> None:
        """`Metering.quota` answered; `allowed` is whether one more unit would be accepted."""
