"""Helpers for the Kafka pipeline tests: producing, offsets, consumers, checking DuckDB."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import KafkaError

from usage_metering.kafka.consumer import KafkaIngestConsumer
from usage_metering.producer import UsageProducer
from usage_metering.store import Database, Lake

REPO_ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 12
TENANTS = [f"tenant-{i:02d}" for i in range(50)]
METRICS = ["api_calls", "storage_gb", "compute_ms"]


def dead_letter_topic_of(topic: str) -> str:
    return f"{topic}-dead-letters"


# -- producing ------------------------------------------------------------------------


@dataclass
class Expected:
    """What the test produced, computed independently of the service."""

    totals: dict[tuple[str, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    counts: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    distinct: int = 0
    messages: int = 0

    @property
    def duplicates(self) -> int:
        return self.messages - self.distinct


def produce_events(
    bootstrap: str,
    topic: str,
    count: int,
    *,
    duplicate_fraction: float = 0.1,
    seed: int = 0,
    id_prefix: str = "",
    expected: Expected | None = None,
    between: Callable[[int], None] | None = None,
    **producer_options: object,
) -> Expected:
    """Send `count` distinct events through the SDK, plus identical resends of a fraction of them.

    Resends (same event id, same quantity and timestamp: a retry) are
    interleaved randomly with the rest. `between(i)` is called every 1000
    messages (e.g. to restart the broker mid-stream).
    """
    rng = random.Random(seed)
    expected = expected or Expected()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    events = []
    for i in range(count):
        tenant, metric = rng.choice(TENANTS), rng.choice(METRICS)
        quantity = Decimal(rng.randint(0, 10_000_000)) / 1000  # up to 3 decimals
        timestamp = now - timedelta(seconds=rng.randint(0, 6 * 3600))  # spread over several hours
        events.append((tenant, metric, quantity, f"{id_prefix}ev-{seed}-{i}", timestamp))
        expected.totals[(tenant, metric)] += quantity
        expected.counts[(tenant, metric)] += 1
    resend = rng.sample(range(count), int(count * duplicate_fraction))
    # Interleave: a resend goes somewhere after its original (a retry never precedes the first send).
    keyed = [(float(i), i) for i in range(count)] + [(rng.uniform(i + 0.5, count), i) for i in resend]
    keyed.sort()
    stream = [events[i] for _, i in keyed]
    producer = UsageProducer(bootstrap, topic, **producer_options)
    try:
        for n, (tenant, metric, quantity, event_id, timestamp) in enumerate(stream):
            producer.record(tenant, metric, quantity, event_id=event_id, timestamp=timestamp)
            if between is not None and n % 1000 == 0:
                between(n)
        producer.flush(timeout=180)
    finally:
        producer.close(timeout=60)
    expected.distinct += count
    expected.messages += len(stream)
    return expected


# -- offsets ---------------------------------------------------------------------------


def wait_for_partition_count(bootstrap: str, topic: str, count: int, timeout: float = 30) -> None:
    """Wait until fresh metadata shows `count` partitions (so new producers spread over all of them)."""
    deadline = time.monotonic() + timeout
    while True:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap)
        try:
            if len(consumer.partitions_for_topic(topic) or ()) == count:
                return
        finally:
            consumer.close()
        assert time.monotonic() < deadline, f"{topic} did not reach {count} partitions"
        time.sleep(0.2)


def group_offsets(bootstrap: str, group_id: str, timeout: float = 30) -> dict[int, int]:
    """The group's committed Kafka offsets (retrying while the coordinator is not ready yet)."""
    deadline = time.monotonic() + timeout
    while True:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            result = admin.list_group_offsets({group_id: None})
            return {tp.partition: meta.offset for tp, meta in result.get(group_id, {}).items() if meta.offset >= 0}
        except KafkaError as exc:
            if not getattr(exc, "retriable", False) or time.monotonic() > deadline:
                raise
        finally:
            admin.close()
        time.sleep(0.2)


def wait_for_group_offsets(bootstrap: str, group_id: str, target: dict[int, int], timeout: float = 120,
                           process: subprocess.Popen | None = None) -> None:
    """Wait until the group's Kafka offsets (written after the DuckDB commit) reach `target`."""
    deadline = time.monotonic() + timeout
    current: dict[int, int] = {}
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"consumer exited early with {process.returncode}")
        current = group_offsets(bootstrap, group_id)
        if all(current.get(p, 0) >= offset for p, offset in target.items()):
            return
        time.sleep(0.3)
    raise AssertionError(f"group offsets {current} did not reach {target} within {timeout}s")


# -- consumers -----------------------------------------------------------------------------


class ThreadedConsumer:
    """A KafkaIngestConsumer running in a thread of the test process."""

    def __init__(self, bootstrap: str, db_path: Path, topic: str, **options: object) -> None:
        self.database = Database(db_path)
        self.group_id = str(options.pop("group_id", f"group-{topic}"))
        self.consumer = KafkaIngestConsumer(
            bootstrap, self.database, topic=topic, group_id=self.group_id,
            dead_letter_topic=dead_letter_topic_of(topic), **options,
        )
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-consumer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.consumer.run(self.stop_event)
        except BaseException as exc:
            self.error = exc

    def wait_until_caught_up(self, target: dict[int, int], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error is not None:
                raise AssertionError("consumer failed") from self.error
            stored = self.consumer.stored_offsets()
            if all(stored.get(p, 0) >= offset for p, offset in target.items()):
                return
            time.sleep(0.1)
        raise AssertionError(f"stored offsets {self.consumer.stored_offsets()} did not reach {target}")

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "consumer did not stop"
        self.consumer.close()
        if self.error is not None:
            raise AssertionError("consumer failed") from self.error

    def close_database(self) -> None:
        self.database.close()


def start_consumer_process(bootstrap: str, db_path: Path, topic: str, group_id: str, *extra: str,
                           log_path: Path | None = None, lake: Lake | None = None) -> subprocess.Popen:
    """`usage-metering --db DB consume ...` (with `lake`: `--lake ... --lake-data ...`, DB the node's local files)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    lake_options = [] if lake is None else ["--lake", lake.catalog, "--lake-data", str(lake.data_path)]
    argv = [
        sys.executable, "-m", "usage_metering", *lake_options, "--db", str(db_path), "consume",
        "--bootstrap-servers", bootstrap, "--topic", topic,
        "--group-id", group_id, "--dead-letter-topic", dead_letter_topic_of(topic), *extra,
    ]
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    finally:
        if log_path:
            log.close()


def wait_for_log(log_path: Path, text: str, *, start: int = 0, timeout: float = 60,
                 process: subprocess.Popen | None = None) -> None:
    """Wait until `text` appears in the log after byte `start` (what one run of a shared log wrote)."""
    deadline = time.monotonic() + timeout
    while text.encode() not in log_path.read_bytes()[start:]:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"consumer exited early with {process.returncode}")
        assert time.monotonic() < deadline, f"{text!r} not logged within {timeout}s"
        time.sleep(0.1)


def terminate(process: subprocess.Popen, timeout: float = 60) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=timeout)


# -- checking the database -----------------------------------------------------------------


def stored_state(db_path: Path, lake: Lake | None = None) -> tuple[dict[tuple[str, str], tuple[Decimal, int]], dict[tuple[str, str], tuple[Decimal, int]], int, dict[int, int]]:
    """(per tenant/metric (sum, count) from events, the same from usage_hourly, count(*), offsets)."""
    database = Database(db_path, read_only=True, lake=lake)
    try:
        cursor = database.cursor()
        events = {
            (t, m): (Decimal(s), int(c))
            for t, m, s, c in cursor.execute(
                "SELECT tenant_id, metric, sum(quantity), count(*) FROM events GROUP BY ALL").fetchall()
        }
        rollups = {
            (t, m): (Decimal(s), int(c))
            for t, m, s, c in cursor.execute(
                "SELECT tenant_id, metric, sum(quantity_sum), sum(event_count) FROM usage_hourly GROUP BY ALL").fetchall()
        }
        total = int(cursor.execute("SELECT count(*) FROM events").fetchall()[0][0])
        tables = [t for (t,) in cursor.execute("SELECT table_name FROM duckdb_tables() "
                                                "WHERE database_name = current_database() AND table_name LIKE 'source_offsets_%'").fetchall()]
        offsets = {int(p): int(o) for table in tables
                   for p, o in cursor.execute(f"SELECT partition, next_offset FROM {table} WHERE next_offset >= 0").fetchall()}
        return events, rollups, total, offsets
    finally:
        database.close()


def assert_exact(db_path: Path, expected: Expected, lake: Lake | None = None) -> None:
    events, rollups, total, _ = stored_state(db_path, lake)
    want = {key: (expected.totals[key], expected.counts[key]) for key in expected.totals}
    assert total == expected.distinct
    assert events == want
    assert rollups == want
