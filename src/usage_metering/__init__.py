"""Usage Metering: deduplicated usage events in DuckDB, per-plan quotas, billing reports."""

from .client import MeteringClient
from .metering import Metering
from .schemas import EventResult, NotFoundError, ValidationError

__all__ = ["EventResult", "Metering", "MeteringClient", "NotFoundError", "ValidationError"]
__version__ = "0.1.0"
