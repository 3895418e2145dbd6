"""A small hook for watching the ingestor without the ingestor knowing who watches.

The ingestor must not import metrics libraries or the API; whoever wants to
count batches (the Prometheus exporter in `usage_metering.api.metrics`, a test,
a log line) implements this protocol and sets `Ingestor.observer`.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol


class IngestObserver(Protocol):
    """Called on the writer thread right after each committed group, before callers are answered.

    Implementations must be quick and must not raise (an exception is logged
    and otherwise ignored: it never fails a commit that already happened).
    """

    def on_batch(self, size: int, seconds: float, outcomes: Counter[str]) -> None:
        """`size` events were committed in `seconds`; `outcomes` counts them by status."""

    def on_dead_letters(self, count: int) -> None:
        """`count` dead letters were committed with the group (only called when count > 0)."""
