"""The peer a team would otherwise build: a hand-rolled PostgreSQL table, measured beside the scale curve.

Debian's PostgreSQL (tests/support/postgres_server.py), default durable settings
(fsync, synchronous_commit on). Per batch, in one transaction: COPY the
pre-validated events into a temp table, INSERT ... ON CONFLICT DO NOTHING
RETURNING into `events` (primary key (tenant_id, event_id)), and upsert the
hourly rollups of the inserted rows. Stores of N events are built once with
generate_series and cached as data directories in bench/.data.
"""

from __future__ import annotations

import importlib.util
import shutil
import statistics
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .billing import DATA_DIR

_SERVER_MODULE = Path(__file__).resolve().parent.parent / "tests" / "support" / "postgres_server.py"

SCHEMA = """
CREATE TABLE events (
    tenant_id text NOT NULL, event_id text NOT NULL, metric text NOT NULL, quantity numeric(38, 9) NOT NULL,
    user_id text, ts timestamp NOT NULL, properties jsonb, received_at timestamp NOT NULL,
    PRIMARY KEY (tenant_id, event_id));
CREATE TABLE usage_hourly (
    tenant_id text NOT NULL, metric text NOT NULL, user_id text NOT NULL, hour timestamp NOT NULL,
    quantity_sum numeric(38, 9) NOT NULL, quantity_max numeric(38, 9) NOT NULL, event_count bigint NOT NULL,
    latest_at timestamp NOT NULL, latest_quantity numeric(38, 9) NOT NULL,
    PRIMARY KEY (tenant_id, metric, user_id, hour));
"""

BUILD = """
INSERT INTO events
SELECT 'tenant-' || lpad((floor(1000 * power(random(), 2)))::int::text, 5, '0'), 'ev-' || i,
       (ARRAY['api_calls', 'storage_gb', 'active_users', 'compute_minutes'])[1 + i % 4],
       (i % 100000) / 100.0,
       CASE WHEN i % 10 < 3 THEN NULL ELSE 'user-' || (i % 20) END,
       now()::timestamp - (i % 3456000) * interval '1 second', NULL, now()::timestamp
FROM generate_series(1, {events}) AS i;
INSERT INTO usage_hourly
SELECT tenant_id, metric, coalesce(user_id, ''), date_trunc('hour', ts), sum(quantity), max(quantity), count(*),
       max(ts), (array_agg(quantity ORDER BY ts DESC))[1]
FROM events GROUP BY 1, 2, 3, 4;
"""

INGEST = """
WITH inserted AS (
    INSERT INTO events SELECT * FROM incoming ON CONFLICT DO NOTHING RETURNING *
)
INSERT INTO usage_hourly
SELECT tenant_id, metric, coalesce(user_id, ''), date_trunc('hour', ts), sum(quantity), max(quantity), count(*),
       max(ts), (array_agg(quantity ORDER BY ts DESC))[1]
FROM inserted GROUP BY 1, 2, 3, 4
ON CONFLICT (tenant_id, metric, user_id, hour) DO UPDATE SET
    quantity_sum = usage_hourly.quantity_sum + excluded.quantity_sum,
    quantity_max = greatest(usage_hourly.quantity_max, excluded.quantity_max),
    event_count = usage_hourly.event_count + excluded.event_count,
    latest_quantity = CASE WHEN excluded.latest_at >= usage_hourly.latest_at
                           THEN excluded.latest_quantity ELSE usage_hourly.latest_quantity END,
    latest_at = greatest(usage_hourly.latest_at, excluded.latest_at)
"""


def _server_class() -> Any:
    spec = importlib.util.spec_from_file_location("postgres_server", _SERVER_MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PostgresServer


def _rows(events: list[Any]) -> list[tuple[Any, ...]]:
    received = datetime.now(timezone.utc).replace(tzinfo=None)
    return [
        (e.tenant_id, e.event_id, e.metric, e.quantity, e.user_id, e.timestamp.replace(tzinfo=None), None, received)
        for e in events
    ]


def _ingest(connection: Any, rows: list[tuple[Any, ...]]) -> None:
    with connection.transaction():
        connection.execute("CREATE TEMP TABLE incoming (LIKE events) ON COMMIT DROP")
        with connection.cursor().copy("COPY incoming FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        connection.execute(INGEST)


def measure_peer(stored: int, small: list[Any], chunks: list[list[Any]]) -> dict[str, float]:
    """The peer's 32-event commit (median ms) and 10k-batch rate (median ev/s) on a store of `stored` events."""
    import psycopg

    server_class = _server_class()
    cached = DATA_DIR / f"pg-{stored}ev"
    built = DATA_DIR / f"pg-{stored}ev.built"  # written once the store is complete
    if stored and not built.exists():
        shutil.rmtree(cached, ignore_errors=True)  # a build that was cut short
    server = server_class.temporary() if stored == 0 else server_class(cached)
    fresh = not (server.data_dir / "PG_VERSION").exists()
    server.start()
    try:
        with psycopg.connect(server.dsn, autocommit=True) as connection:
            if fresh:
                connection.execute(SCHEMA)
                if stored:
                    connection.execute(BUILD.replace("{events}", str(stored)))
                    connection.execute("VACUUM ANALYZE")
                    built.touch()
            commit_seconds = []
            for k in range(0, len(small), 32):
                rows = _rows(small[k : k + 32])
                begin = time.perf_counter()
                _ingest(connection, rows)
                commit_seconds.append(time.perf_counter() - begin)
            rates = []
            for chunk in chunks:
                rows = _rows(chunk)
                begin = time.perf_counter()
                _ingest(connection, rows)
                rates.append(len(rows) / (time.perf_counter() - begin))
    finally:
        if stored == 0:
            server.remove()
        else:
            server.stop()
    return {"commit_ms": statistics.median(commit_seconds) * 1000, "rate": statistics.median(rates)}


def peer_events(run_id: str, count: int, offset: int = 0) -> list[Any]:
    """Pre-validated events shaped like the scale section's (unique ids per run)."""
    from usage_metering.schemas import parse_event

    now = datetime.now(timezone.utc)
    return [
        parse_event(
            {
                "tenant_id": f"tenant-{i % 1000:05d}",
                "metric": ("api_calls", "storage_gb")[i % 2],
                "quantity": str(i % 997 + 1),
                "user_id": f"user-{i % 20}",
                "event_id": f"pg-{run_id}-{i}",
                "timestamp": (now - timedelta(seconds=i % 3600)).isoformat(),
            },
            now=now,
        )
        for i in range(offset, offset + count)
    ]
