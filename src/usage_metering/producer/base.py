"""The interface both transports share: record, flush, close, `with`."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import TracebackType
from typing import Any, TypeVar

from usage_metering.schemas import UsageEvent

from .delivery import DeliveryError
from .events import Quantity, Timestamp, build_event

log = logging.getLogger(__name__)

_Producer = TypeVar("_Producer", bound="BaseUsageProducer")


class BaseUsageProducer(ABC):
    """Validates events at `record()` and hands them to a transport."""

    def record(
        self,
        tenant_id: str,
        metric: str,
        quantity: Quantity,
        user_id: str | None = None,
        event_id: str | None = None,
        timestamp: Timestamp | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue one usage event for delivery and return its event id.

        Raises ValidationError (nothing is sent) if the event is invalid. Delivery
        happens in the background; failures go to `on_error` and to the next
        `flush()`/`close()` as DeliveryError.
        """
        event = build_event(
            tenant_id,
            metric,
            quantity,
            user_id=user_id,
            event_id=event_id,
            timestamp=timestamp,
            properties=properties,
        )
        self._send(event)
        return event.event_id

    @abstractmethod
    def _send(self, event: UsageEvent) -> None:
        """Queue a validated event; must not block on the network for long."""

    @abstractmethod
    def flush(self, timeout: float | None = None) -> None:
        """Deliver everything recorded so far; raise DeliveryError for failures.

        Raises TimeoutError if events are still unsent after `timeout` seconds
        (they stay queued; a later flush reports them).
        """

    @abstractmethod
    def close(self, timeout: float | None = None) -> None:
        """Flush, release resources, and raise DeliveryError for failures.

        Events still unsent when `timeout` runs out are reported as failed.
        """

    def __enter__(self: _Producer) -> _Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        # The block already failed: close anyway, but don't hide its exception.
        try:
            self.close()
        except DeliveryError as delivery_error:
            log.error("while handling %r: %s", exc, delivery_error)
