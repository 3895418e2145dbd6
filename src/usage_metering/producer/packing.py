"""Packing events into records: one open record per key, shipped when full or when it has lingered.

A record is shipped when it holds `max_events` events, when the next event
would take it over `max_bytes`, when its first event has waited
`linger_seconds`, or on `ship_all()`. Records of one key are shipped in the
order their events were added (shipping happens under the packer's lock), so
a tenant's events stay in order on its partition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")  # what the transport wants back with each event's payload (e.g. its event id)


class _OpenRecord(Generic[Item]):
    __slots__ = ("due", "items", "payloads", "size")

    def __init__(self, due: float) -> None:
        self.payloads: list[bytes] = []
        self.items: list[Item] = []
        self.size = 0
        self.due = due


class RecordPacker(Generic[Item]):
    """Thread-safe; a background thread ships records whose linger time is up.

    `ship(key, payloads, items)` sends one record; it must not raise (a
    transport settles its own send errors).
    """

    def __init__(
        self,
        ship: Callable[[bytes, list[bytes], list[Item]], None],
        *,
        max_events: int,
        max_bytes: int,
        linger_seconds: float,
    ) -> None:
        if max_events < 1 or max_bytes < 1 or linger_seconds < 0:
            raise ValueError("max_events and max_bytes must be >= 1, linger_seconds >= 0")
        self._ship = ship
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._linger = linger_seconds
        # add() takes the lock itself (a C context manager); the condition, on the same lock, wakes the shipper.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Insertion order is due order: every record lingers the same time from its creation.
        self._open: dict[bytes, _OpenRecord[Item]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._ship_when_due, name="usage-metering-record-packer", daemon=True)
        self._thread.start()

    def add(self, key: bytes, payload: bytes, item: Item) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the producer is closed")
            record = self._open.get(key)
            if record is not None and record.size + len(payload) > self._max_bytes:
                self._ship_locked(key)
                record = None
            if record is None:
                record = self._open[key] = _OpenRecord(time.monotonic() + self._linger)
                if len(self._open) == 1:
                    self._cond.notify()  # the shipping thread waits without a deadline when nothing is open
            record.payloads.append(payload)
            record.items.append(item)
            record.size += len(payload) + 1
            if len(record.payloads) >= self._max_events or record.size >= self._max_bytes:
                self._ship_locked(key)

    def ship_all(self) -> None:
        """Ship every open record now (flush)."""
        with self._cond:
            for key in list(self._open):
                self._ship_locked(key)

    def close(self) -> None:
        """Ship what is open and stop the shipping thread; `add` raises afterwards."""
        with self._cond:
            for key in list(self._open):
                self._ship_locked(key)
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _ship_locked(self, key: bytes) -> None:
        record = self._open.pop(key)
        try:
            self._ship(key, record.payloads, record.items)
        except Exception:  # a transport bug: keep the shipping thread alive
            log.exception("shipping a record of %d events failed", len(record.items))

    def _ship_when_due(self) -> None:
        with self._cond:
            while not self._closed:
                if not self._open:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                for key, record in list(self._open.items()):
                    if record.due > now:
                        break
                    self._ship_locked(key)
                if self._open:
                    self._cond.wait(next(iter(self._open.values())).due - now)
