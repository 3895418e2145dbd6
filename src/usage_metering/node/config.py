"""One node configuration: what `serve` and `consume` build from their options and `run_node` starts.

A node is one process that owns the store (a DuckDB file, or its share of a lake). It serves HTTP
(`http` set: `serve`), consumes Kafka (`kafka` set), or both; everything else is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from usage_metering.schemas import DEFAULT_LATE_WINDOW
from usage_metering.schemas.topics import (
    DEFAULT_GROUP_ID,
    DEFAULT_MAX_POLL_RECORDS,
    DEFAULT_SESSION_TIMEOUT_MS,
    DEFAULT_TOPIC,
)
from usage_metering.store import Lake
from usage_metering.store.database import DEFAULT_MEMORY_LIMIT

from .maintenance import DEFAULT_MAINTENANCE_INTERVAL
from .snapshots import DEFAULT_SNAPSHOT_INTERVAL

_HEARTBEAT_MS = 3000  # kafka-python's default; at most a third of the session timeout


@dataclass(frozen=True)
class KafkaOptions:
    """The node's consumer-group membership (and, when it serves HTTP, where it produces)."""

    bootstrap_servers: str
    topic: str = DEFAULT_TOPIC
    group_id: str = DEFAULT_GROUP_ID
    instance_id: str | None = None  # static membership: a restart takes its partitions back at once
    dead_letter_topic: str | None = None  # None: <topic>-dead-letters; "": only the dead_letters table
    max_poll_records: int = DEFAULT_MAX_POLL_RECORDS
    session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS

    def consumer_options(self) -> dict[str, Any]:
        """`KafkaIngestConsumer`'s keyword arguments for this membership."""
        return {
            "topic": self.topic,
            "group_id": self.group_id,
            "group_instance_id": self.instance_id,
            "dead_letter_topic": self.dead_letter_topic,
            "max_poll_records": self.max_poll_records,
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": max(100, min(_HEARTBEAT_MS, self.session_timeout_ms // 3)),
        }


@dataclass(frozen=True)
class HttpOptions:
    """The HTTP API, and the analyst snapshots a serving node publishes."""

    host: str = "127.0.0.1"
    port: int = 8005
    advertise_url: str | None = None  # with a lake and Kafka: where other nodes reach this one
    snapshot_interval: float = DEFAULT_SNAPSHOT_INTERVAL  # seconds; 0 = never (and never on a lake)
    snapshot_path: Path | None = None  # default: <db stem>.snapshot.duckdb


@dataclass(frozen=True)
class WebhookOptions:
    """Quota alert delivery: the default URL (tenants may have their own), the signing secret, retries."""

    url: str | None = None
    secret: str | None = None  # None: generated once into <db>.webhook-secret
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0


@dataclass(frozen=True)
class NodeConfig:
    db_path: Path
    lake: Lake | None = None  # the store is this DuckLake; `db_path` is then where local files go
    late_window: timedelta = DEFAULT_LATE_WINDOW
    memory_limit: str = DEFAULT_MEMORY_LIMIT  # DuckDB's buffer pool (store/database.py)
    http: HttpOptions | None = field(default_factory=HttpOptions)  # None: no HTTP (`consume`)
    kafka: KafkaOptions | None = None
    webhooks: WebhookOptions = field(default_factory=WebhookOptions)
    maintenance_interval: float = DEFAULT_MAINTENANCE_INTERVAL  # lake maintenance passes; 0 = never
    demo: bool = False
    log_format: str = "text"
    log_level: str = "info"
