"""The node's lake maintenance schedule: a pass every N seconds (store/lake_maintenance.py).

Every node of a cluster runs it; two passes at once conflict on a step, which
is logged and done by the next pass. A failed pass never stops the node.
"""

from __future__ import annotations

import json
import logging

from usage_metering.metering import Metering
from usage_metering.utilities import PeriodicTask

log = logging.getLogger(__name__)

DEFAULT_MAINTENANCE_INTERVAL = 3600.0  # seconds


class LakeMaintenance:
    def __init__(self, metering: Metering, interval: float = DEFAULT_MAINTENANCE_INTERVAL) -> None:
        if interval < 0:
            raise ValueError("the maintenance interval must be >= 0 (0 = never)")
        self.metering = metering
        self._task = PeriodicTask("lake-maintenance", interval, self._pass, wait_first=True)

    @property
    def enabled(self) -> bool:
        return self._task.interval_seconds > 0 and self.metering.database.lake is not None

    def start(self) -> LakeMaintenance:
        if self.enabled:
            self._task.start()
        return self

    def stop(self) -> None:
        self._task.stop()

    def _pass(self) -> None:
        log.info("lake maintenance: %s", json.dumps(self.metering.maintain_lake().as_dict()))
