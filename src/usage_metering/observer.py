"""What the `Metering` library reports to an observer (metrics, tests), beyond ingest batches."""

from __future__ import annotations

from typing import Protocol

from .consumer.observer import IngestObserver


class MeteringObserver(IngestObserver, Protocol):
    """An `IngestObserver` that also hears about validation rejections and quota checks.

    Called on the request's thread: keep it cheap, never raise.
    """

    def on_rejected(self, code: str) -> None:
        """An event failed validation with this `ValidationError.code`."""

    def on_quota_check(self, allowed: bool) -> None:
        """`Metering.quota` answered; `allowed` is whether one more unit would be accepted."""
