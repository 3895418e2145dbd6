"""Usage Metering: deduplicated usage events in DuckDB, per-plan quotas, billing reports."""

from .metering import EventResult, Metering, NotFoundError
from .schemas import ValidationError

__all__ = ["EventResult", "Metering", "NotFoundError", "ValidationError"]
__version__ = "0.1.0"
