"""The node's snapshot schedule: publish an analyst snapshot every N seconds and at shutdown.

    scheduler = SnapshotScheduler(metering, interval=300).start()
    ...
    scheduler.stop()   # ends the thread, then writes one last snapshot

A failed snapshot is logged and retried at the next tick; it never stops the node.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from usage_metering.metering import Metering
from usage_metering.store.snapshot import SnapshotInfo

log = logging.getLogger(__name__)

DEFAULT_SNAPSHOT_INTERVAL = 300.0  # seconds


class SnapshotScheduler:
    def __init__(
        self, metering: Metering, interval: float = DEFAULT_SNAPSHOT_INTERVAL, path: str | Path | None = None
    ) -> None:
        if interval < 0:
            raise ValueError("the snapshot interval must be >= 0 (0 = no snapshots)")
        self.metering = metering
        self.interval = interval
        self.path = Path(path) if path is not None else metering.snapshot_path()
        self.last: SnapshotInfo | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one snapshot at a time (a tick and stop() may overlap)

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def start(self) -> SnapshotScheduler:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="snapshots", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the schedule and publish a final snapshot (when enabled)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.enabled:
            self.publish()

    def publish(self) -> SnapshotInfo | None:
        """Write a snapshot now; returns None (and logs) if it failed."""
        with self._lock:
            try:
                info = self.metering.snapshot(self.path)
            except Exception:
                log.exception("snapshot to %s failed; the previous one stays in place", self.path)
                return None
            self.last = info
            log.info("snapshot %s: %d events in %.3fs", info.path, info.events, info.seconds)
            return info

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.publish()
