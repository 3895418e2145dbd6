"""The HTTP transport: batches of events to `POST {url}/api/events/batch`.

One background thread sends batches in order through one httpx client (a
keep-alive connection). Event ids are fixed before the first attempt, so
resending a batch whose response was lost is safe: the service answers
"duplicate" for events it already has, which counts as delivered.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from usage_metering.schemas import UsageEvent

from .base import BaseUsageProducer
from .delivery import DeliveryTracker, ErrorCallback, RejectedEvent
from .events import encode_event

BATCH_PATH = "/api/events/batch"
MAX_BACKOFF_SECONDS = 30.0
DELIVERED = frozenset({"recorded", "duplicate"})
# What a kept-alive connection the server had closed fails with: worth one immediate retry.
_STALE_CONNECTION_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class HttpStatusError(Exception):
    """The service answered a batch with an error status (or an unreadable body)."""

    def __init__(self, status: int, body: bytes | str) -> None:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        super().__init__(f"HTTP {status}: {text[:500]}")
        self.status = status
        self.body = text


@dataclass(frozen=True)
class _Queued:
    token: int  # from DeliveryTracker; increases in queue order
    event_id: str
    payload: bytes  # the event's compact JSON
    queued_at: float  # time.monotonic()


class HttpUsageProducer(BaseUsageProducer):
    """Records usage events through the service's HTTP batch endpoint. Thread-safe.

    A batch is sent when `batch_size` events are waiting, when the oldest has
    waited `linger_seconds`, or on flush/close. Connection errors and 5xx
    answers are retried up to `max_retries` times with exponential backoff and
    jitter (honouring Retry-After); other error statuses, and events the
    service answers "blocked" (quota) or "rejected", are final failures.
    """

    def __init__(
        self,
        url: str = "http://localhost:8005",
        *,
        batch_size: int = 500,
        linger_seconds: float = 0.05,
        max_retries: int = 8,
        backoff_seconds: float = 0.1,
        timeout: float = 10.0,
        api_key: str | None = None,
        on_error: ErrorCallback | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if linger_seconds < 0 or backoff_seconds < 0 or max_retries < 0 or timeout <= 0:
            raise ValueError("linger_seconds, backoff_seconds and max_retries must be >= 0, timeout > 0")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host[:port][/prefix], got {url!r}")
        self.url = url
        self._batch_url = url.rstrip("/") + BATCH_PATH
        self._batch_size = batch_size
        self._linger = linger_seconds
        self._max_retries = max_retries
        self._backoff = backoff_seconds
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "usage-metering-producer",
        }
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(headers=headers, timeout=timeout)
        self._answered = 0  # requests answered on this client: a later failure may be a stale connection

        self._tracker = DeliveryTracker(on_error)
        self._cond = threading.Condition()
        self._queue: deque[_Queued] = deque()
        self._last_token = -1  # newest token queued
        self._flush_through = -1  # send without lingering every event up to this token
        self._done_through = -1  # every event up to this token is settled
        self._closing = False
        self._abort = threading.Event()  # close timed out: stop retrying
        self._thread = threading.Thread(target=self._run, name="usage-metering-http-producer", daemon=True)
        self._thread.start()

    # -- caller side -----------------------------------------------------

    def _send(self, event: UsageEvent) -> None:
        payload = encode_event(event)
        with self._cond:
            if self._closing:
                raise RuntimeError("HttpUsageProducer is closed")
            # Token taken under the queue lock so queue order == token order.
            token = self._tracker.start(event.event_id)
            self._queue.append(_Queued(token, event.event_id, payload, time.monotonic()))
            self._last_token = token
            if len(self._queue) == 1 or len(self._queue) >= self._batch_size:
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        """Send everything recorded before this call and wait for the answers."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._last_token
            self._flush_through = max(self._flush_through, target)
            self._cond.notify_all()
            while self._done_through < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"events still unsent after {timeout}s")
                self._cond.wait(remaining)
        self._tracker.raise_failures()

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued, stop the sender thread, raise DeliveryError on failures."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            self._tracker.fail_all_pending(TimeoutError(f"not delivered within the close timeout ({timeout}s)"))
        self._tracker.raise_failures()

    # -- sender thread ---------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                try:
                    self._deliver(batch)
                except Exception as exc:  # a bug here must not leave events pending forever
                    self._fail(batch, exc)
                with self._cond:
                    self._done_through = batch[-1].token
                    self._cond.notify_all()
        finally:
            self._http.close()
            with self._cond:  # release any flush() waiting on a thread that stopped
                self._done_through = self._last_token
                self._cond.notify_all()

    def _next_batch(self) -> list[_Queued] | None:
        """Wait until a batch is due; None when closing with nothing left (or aborted)."""
        with self._cond:
            while True:
                if self._abort.is_set():
                    return None
                if self._queue:
                    now = time.monotonic()
                    due_at = self._queue[0].queued_at + self._linger
                    if (
                        len(self._queue) >= self._batch_size
                        or self._closing
                        or self._queue[0].token <= self._flush_through
                        or now >= due_at
                    ):
                        count = min(self._batch_size, len(self._queue))
                        return [self._queue.popleft() for _ in range(count)]
                    self._cond.wait(due_at - now)
                elif self._closing:
                    return None
                else:
                    self._cond.wait()

    def _deliver(self, batch: list[_Queued]) -> None:
        """Send one batch until it is answered, retrying what is worth retrying."""
        body = b'{"events":[' + b",".join(item.payload for item in batch) + b"]}"
        attempt = 0
        stale_retry_used = False
        while True:
            retry_after: float | None = None
            reused = self._answered > 0
            try:
                status, retry_after_header, data = self._post(body)
            except httpx.TransportError as exc:
                error: Exception = exc
                if reused and not stale_retry_used and isinstance(exc, _STALE_CONNECTION_ERRORS):
                    # A kept-alive connection the server had closed: retry at once.
                    stale_retry_used = True
                    continue
            else:
                if 200 <= status < 300:
                    try:
                        results = _parse_results(data, len(batch))
                    except ValueError as exc:
                        error = HttpStatusError(status, f"unreadable batch response: {exc}")
                    else:
                        self._settle(batch, results)
                        return
                elif status >= 500:
                    error = HttpStatusError(status, data)
                    retry_after = _parse_retry_after(retry_after_header)
                else:
                    self._fail(batch, HttpStatusError(status, data))
                    return
            attempt += 1
            if attempt > self._max_retries or self._abort.wait(self._delay(attempt, retry_after)):
                self._fail(batch, error)
                return

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with "equal jitter"; at least Retry-After, at most the cap."""
        base: float = min(MAX_BACKOFF_SECONDS, self._backoff * 2 ** (attempt - 1))
        delay = base / 2 + random.uniform(0, base / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, MAX_BACKOFF_SECONDS)

    def _post(self, body: bytes) -> tuple[int, str | None, bytes]:
        response = self._http.post(self._batch_url, content=body)
        self._answered += 1
        return response.status_code, response.headers.get("Retry-After"), response.content

    def _settle(self, batch: list[_Queued], results: dict[int, dict[str, Any]]) -> None:
        for index, item in enumerate(batch):
            result = results.get(index)
            if result is None:
                self._tracker.failed(item.token, HttpStatusError(200, f"no result for event index {index}"))
                continue
            status = result.get("status")
            if status in DELIVERED:
                self._tracker.succeeded(item.token)
                continue
            detail = result.get("error")
            error: dict[str, Any] = detail if isinstance(detail, dict) else {}
            self._tracker.failed(
                item.token,
                RejectedEvent(str(status), error.get("code"), error.get("message"), error.get("field")),
            )

    def _fail(self, batch: list[_Queued], error: Exception) -> None:
        for item in batch:
            self._tracker.failed(item.token, error)


def _parse_results(data: bytes, batch_length: int) -> dict[int, dict[str, Any]]:
    """The per-event results of a batch answer, by index; ValueError if malformed."""
    document = json.loads(data)
    results = document.get("results") if isinstance(document, dict) else None
    if not isinstance(results, list):
        raise ValueError("missing 'results' list")
    by_index: dict[int, dict[str, Any]] = {}
    for position, result in enumerate(results):
        if not isinstance(result, dict):
            raise ValueError(f"result {position} is not an object")
        index = result.get("index", position)
        if not isinstance(index, int) or not 0 <= index < batch_length:
            raise ValueError(f"result {position} has a bad index {index!r}")
        by_index[index] = result
    return by_index


def _parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
