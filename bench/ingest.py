"""In-process ingest: `Metering.record_events` and the bare `Ingestor`, vs row-at-a-time SQL.

Why three numbers: "validate+ingest" is what a library caller pays,
"ingest only" (pre-validated `UsageEvent`s straight into `Ingestor.ingest`)
isolates the DuckDB/Arrow write path, and the naive baseline shows what the
columnar group commit buys over one INSERT per event.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import random
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from usage_metering.ingest import Ingestor
from usage_metering.metering import Metering
from usage_metering.schemas import UsageEvent, format_timestamp, parse_event
from usage_metering.schemas.event_json import parse_events
from usage_metering.store import Database

from .common import Row, fmt_rate, fmt_ratio, median, timed, verdict

CHUNK = 10_000
METRICS = ("api_calls", "storage_gb", "active_users", "compute_minutes")
TARGET_EVENTS_PER_S = 100_000
SMALL_GROUP = 32


def make_events(count: int, seed: int, tenants: int = 100, users: int = 1000) -> list[dict[str, Any]]:
    """Event dicts as a producer would send them: ids set, RFC 3339 times in the last hour."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    events = []
    for i in range(count):
        event: dict[str, Any] = {
            "tenant_id": f"tenant-{rng.randrange(tenants):04d}",
            "metric": METRICS[i % len(METRICS)],
            "quantity": str(rng.randrange(1, 100_000) / 100),
            "event_id": f"ev-{seed}-{i:09d}",
            "timestamp": format_timestamp(now - timedelta(seconds=rng.randrange(3600))),
        }
        if i % 3:
            event["user_id"] = f"user-{rng.randrange(users)}"
        events.append(event)
    return events


def _chunks(items: list[Any], size: int = CHUNK) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_validate_and_ingest(path: Path, events: list[dict[str, Any]]) -> float:
    """Seconds for `Metering.record_events` over 10k chunks (open/close not timed)."""
    metering = Metering.open(path)
    try:
        chunks = _chunks(events)
        seconds, results = timed(lambda: [metering.record_events(chunk) for chunk in chunks])
    finally:
        metering.close()
    recorded = sum(r.status == "recorded" for chunk in results for r in chunk)
    assert recorded == len(events), f"only {recorded} of {len(events)} recorded"
    return seconds


def run_ingest_only(path: Path, validated: list[UsageEvent]) -> float:
    """Seconds for `Ingestor.ingest` (no writer thread: the commit runs inline) over 10k chunks."""
    database = Database(path)
    try:
        ingestor = Ingestor(database)
        chunks = _chunks(validated)
        seconds, _ = timed(lambda: [ingestor.ingest(chunk) for chunk in chunks])
    finally:
        database.close()
    return seconds


def commit_cost(path: Path, validated: list[UsageEvent], group: int) -> float:
    """Seconds per group commit when groups are small (what 32 concurrent single-event POSTs produce)."""
    database = Database(path)
    try:
        ingestor = Ingestor(database)
        chunks = _chunks(validated, group)
        seconds, _ = timed(lambda: [ingestor.ingest(chunk) for chunk in chunks])
    finally:
        database.close()
    return seconds / len(chunks)


def run_validate_only(events: list[dict[str, Any]]) -> tuple[float, list[UsageEvent]]:
    now = datetime.now(timezone.utc)
    seconds, checked = timed(lambda: parse_events(events, now=now))  # what Metering.record_events runs
    return seconds, [event for event in checked if isinstance(event, UsageEvent)]


# The hand-rolled table a team would start from: the events' columns with a primary key for dedup.
NAIVE_TABLE = """
    CREATE TABLE naive_events (
        tenant_id VARCHAR, event_id VARCHAR, metric VARCHAR, quantity DECIMAL(38, 9), user_id VARCHAR,
        ts TIMESTAMP, properties JSON, received_at TIMESTAMP, PRIMARY KEY (tenant_id, event_id)
    )
"""
NAIVE_SQL = "INSERT INTO naive_events VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"


def run_naive(path: Path, validated: list[UsageEvent]) -> float:
    """Row-at-a-time: `executemany` of one INSERT ... ON CONFLICT DO NOTHING per event (one keyed table only)."""
    database = Database(path)
    try:
        database.cursor().execute(NAIVE_TABLE)
        received = datetime.now(timezone.utc).replace(tzinfo=None)
        rows = [
            [e.tenant_id, e.event_id, e.metric, e.quantity, e.user_id, e.timestamp.replace(tzinfo=None), None, received]
            for e in validated
        ]
        cursor = database.cursor()
        seconds, _ = timed(lambda: cursor.executemany(NAIVE_SQL, rows))
        stored = cursor.execute("SELECT count(*) FROM naive_events").fetchall()[0][0]
        assert stored == len(rows), (stored, len(rows))
    finally:
        database.close()
    return seconds


def bench_ingest(events_count: int, naive_count: int, repeats: int) -> list[Row]:
    """Median events/s of each path, each repeat into a fresh DuckDB file."""
    full, ingest, validate, naive, small = [], [], [], [], []
    for rep in range(repeats):
        events = make_events(events_count, seed=rep)
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
            full.append(events_count / run_validate_and_ingest(Path(tmp) / "a.duckdb", events))
            seconds, validated = run_validate_only(events)
            validate.append(events_count / seconds)
            ingest.append(events_count / run_ingest_only(Path(tmp) / "b.duckdb", validated))
            naive.append(naive_count / run_naive(Path(tmp) / "c.duckdb", validated[:naive_count]))
            small.append(commit_cost(Path(tmp) / "d.duckdb", validated[: SMALL_GROUP * 100], SMALL_GROUP))
    base = median(naive)
    baseline_text = fmt_rate(base, "ev/s") + f" (naive executemany, {naive_count:,} rows)"
    rows = []
    for name, values in (("validate+ingest (Metering.record_events)", full), ("ingest only (Ingestor.ingest)", ingest)):
        value = median(values)
        rows.append(
            Row(
                f"in-process {name}, {events_count:,} ev in 10k chunks",
                fmt_rate(value, "ev/s"),
                baseline_text,
                fmt_ratio(value, base),
                f">= {TARGET_EVENTS_PER_S:,} ev/s",
                verdict(value >= TARGET_EVENTS_PER_S),
                notes=f"runs: {', '.join(f'{v:,.0f}' for v in values)}",
            )
        )
    rows.append(
        Row(
            "in-process validate only (parse_events)",
            fmt_rate(median(validate), "ev/s"),
            notes="part of validate+ingest; shows the Python validation cost",
        )
    )
    per_commit = median(small)
    rows.append(
        Row(
            f"in-process ingest, {SMALL_GROUP}-event groups (one commit each)",
            fmt_rate(SMALL_GROUP / per_commit, "ev/s"),
            notes=f"{per_commit * 1000:.2f} ms per group commit: the fixed cost every HTTP single-event group pays",
        )
    )
    return rows


def profile_small_commits(top: int = 20) -> str:
    """cProfile of 100 commits of 32 pre-validated events: where the fixed per-commit cost goes."""
    events = make_events(SMALL_GROUP * 100, seed=98)
    now = datetime.now(timezone.utc)
    validated = [parse_event(e, now=now) for e in events]
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        database = Database(Path(tmp) / "s.duckdb")
        ingestor = Ingestor(database)
        profiler = cProfile.Profile()
        profiler.enable()
        for chunk in _chunks(validated, SMALL_GROUP):
            ingestor.ingest(chunk)
        profiler.disable()
        database.close()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    return out.getvalue()


def profile_ingest(events_count: int, top: int = 25) -> str:
    """cProfile of one validate+ingest run (all threads' work happens in this thread: no writer thread)."""
    events = make_events(events_count, seed=99)
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        database = Database(Path(tmp) / "p.duckdb")
        ingestor = Ingestor(database)
        now = datetime.now(timezone.utc)
        profiler = cProfile.Profile()
        profiler.enable()
        for chunk in _chunks(events):
            ingestor.ingest([e for e in parse_events(chunk, now=now) if isinstance(e, UsageEvent)])
        profiler.disable()
        database.close()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()
