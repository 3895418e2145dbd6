"""Delivery bookkeeping shared by the transports: pending events, failures, errors.

A send completes later, on a transport thread. `DeliveryTracker` remembers each
event until it is acknowledged or fails, so a failure is always reported: to the
`on_error` callback as it happens, and as a `DeliveryError` from the next
`flush()` or `close()`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

ErrorCallback = Callable[[str, Exception], None]

_IDS_IN_MESSAGE = 10


class DeliveryError(Exception):
    """Some recorded events were not delivered.

    `failures` holds (event_id, exception) pairs in the order they failed;
    `event_ids` and `first_exception` are shortcuts. Resending the same events
    (same ids) is safe: the service drops duplicates by event id.
    """

    def __init__(self, failures: list[tuple[str, Exception]]) -> None:
        self.failures = list(failures)
        ids = self.event_ids
        shown = ", ".join(ids[:_IDS_IN_MESSAGE])
        more = f" and {len(ids) - _IDS_IN_MESSAGE} more" if len(ids) > _IDS_IN_MESSAGE else ""
        super().__init__(
            f"{len(ids)} usage event(s) not delivered: {shown}{more} (first error: {self.first_exception!r})"
        )

    @property
    def event_ids(self) -> list[str]:
        return [event_id for event_id, _ in self.failures]

    @property
    def first_exception(self) -> Exception | None:
        return self.failures[0][1] if self.failures else None


class RejectedEvent(Exception):
    """The service answered for this event and refused it; resending will not help.

    `status` is ``"blocked"`` (over a quota with a blocking policy) or
    ``"rejected"`` (invalid); `code`, `message` and `field` come from the
    service's error object.
    """

    def __init__(self, status: str, code: str | None, message: str | None, field: str | None = None) -> None:
        super().__init__(f"{status}: {code or 'unknown'}: {message or ''}".rstrip(": "))
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class DeliveryTracker:
    """Thread-safe record of pending events and unreported failures.

    `start()` hands out increasing tokens, so a transport that completes events
    in order (the HTTP one) can use the token as a sequence number. A token may
    stand for several events delivered together (`start_many`, one Kafka record).
    """

    def __init__(self, on_error: ErrorCallback | None = None) -> None:
        self._on_error = on_error
        self._lock = threading.Lock()
        self._next_token = 0
        self._pending: dict[int, str | list[str]] = {}
        self._failures: list[tuple[str, Exception]] = []

    def start(self, event_id: str) -> int:
        return self._start(event_id)

    def start_many(self, event_ids: list[str]) -> int:
        """One token for events that succeed or fail together."""
        return self._start(event_ids)

    def _start(self, pending: str | list[str]) -> int:
        with self._lock:
            token = self._next_token
            self._next_token += 1
            self._pending[token] = pending
            return token

    def succeeded(self, token: int) -> None:
        with self._lock:
            self._pending.pop(token, None)

    def discard(self, token: int) -> None:
        """Forget an event that was never queued (its caller got the exception)."""
        with self._lock:
            self._pending.pop(token, None)

    def failed(self, token: int, error: Exception) -> None:
        with self._lock:
            pending = self._pending.pop(token, None)
            if pending is None:  # already settled (e.g. failed by close)
                return
            event_ids = [pending] if isinstance(pending, str) else pending
            self._failures.extend((event_id, error) for event_id in event_ids)
        for event_id in event_ids:
            self._report(event_id, error)

    def fail_all_pending(self, error: Exception) -> None:
        """Fail every event still pending (used when close() gives up on them)."""
        with self._lock:
            pending = list(self._pending.items())
        for token, _ in pending:
            self.failed(token, error)

    def raise_failures(self) -> None:
        """Raise DeliveryError for the failures since the last call, if any."""
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            raise DeliveryError(failures) from failures[0][1]

    def _report(self, event_id: str, error: Exception) -> None:
        log.warning("usage event %s not delivered: %r", event_id, error)
        if self._on_error is None:
            return
        try:
            self._on_error(event_id, error)
        except Exception:  # a broken callback must not kill a transport thread
            log.exception("on_error callback failed for usage event %s", event_id)
