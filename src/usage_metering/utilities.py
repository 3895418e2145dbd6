"""Small utilities every layer may use; this module imports nothing of the package.

`PeriodicTask`: a daemon thread that runs one task every few seconds until stopped (rollup compaction,
webhook delivery, lake maintenance).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicTask:
    """Runs `tick` now (or, with `wait_first`, after one interval) and then every `interval_seconds`;
    a tick that fails is logged and the next one retries."""

    def __init__(
        self, name: str, interval_seconds: float, tick: Callable[[], object], *, wait_first: bool = False
    ) -> None:
        self.name = name
        self.interval_seconds = interval_seconds
        self.tick = tick
        self.wait_first = wait_first
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        """True once stop() was called: a long tick should finish its current item and return."""
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Let the tick in flight finish, then end the thread."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        if self.wait_first:
            self._stop.wait(self.interval_seconds)
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a database hiccup must not end the task for good
                log.exception("%s failed; retrying in %.1f s", self.name, self.interval_seconds)
            self._stop.wait(self.interval_seconds)
