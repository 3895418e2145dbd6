"""Logging for the node: plain text (default) or one JSON object per line.

JSON lines carry `timestamp` (UTC, RFC 3339), `level`, `logger`, `message`,
`request_id` (null outside a request) and every `extra={...}` field of the
record, plus `exception` when there is one. In JSON mode uvicorn's own loggers
go through the same handler, Python warnings are logged too, and the access
logger (`usage_metering.access`, one line per request) is on.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from usage_metering.api.request_context import access_log, request_id_var

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-colored duplicate of the message
    "taskName",
}


def rfc3339_utc(created: float) -> str:
    return datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "timestamp": rfc3339_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES:
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str)


def configure_logging(log_format: str = "text", log_level: str = "info") -> None:
    """Set up the root logger for a node process (replacing any handlers it had)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    handler = logging.StreamHandler()  # stderr
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # kafka-python logs every connection at INFO; its warnings and errors still show.
    logging.getLogger("kafka").setLevel(max(level, logging.WARNING))
    # Access lines only in JSON mode (for log pipelines); a record's own logger level decides,
    # since propagation to the root handler ignores the root logger's level.
    access_log.setLevel(max(level, logging.INFO) if log_format == "json" else logging.WARNING)
    logging.captureWarnings(log_format == "json")
