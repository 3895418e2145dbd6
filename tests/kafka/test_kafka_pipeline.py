"""The Kafka pipeline end to end against a real broker: exactly-once counting under
duplicates, kill -9, broker restarts and poison messages; locking and clean shutdown."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewPartitions

from support import kafka_broker
from support.pipeline_helpers import (
    PARTITIONS,
    REPO_ROOT,
    ThreadedConsumer,
    assert_exact,
    dead_letter_topic_of,
    group_offsets,
    produce_events,
    start_consumer_process,
    stored_state,
    terminate,
    wait_for_group_offsets,
    wait_for_log,
    wait_for_partition_count,
)
from usage_metering.kafka.topics import create_topics, end_offsets
from usage_metering.schemas import parse_plan, parse_tenant
from usage_metering.store import Database
from usage_metering.store import catalog as catalog_store


class _nullcontext:
    def __init__(self, database: Database) -> None:
        self.database = database

    def __enter__(self) -> Database:
        return self.database

    def __exit__(self, *exc: object) -> None:
        self.database.close()


def test_exactness_200k_events_with_10_percent_resent(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    expected = produce_events(kafka_bootstrap, topic, 200_000, duplicate_fraction=0.1, seed=1)
    ends = end_offsets(kafka_bootstrap, topic)
    assert expected.messages == 220_000
    assert sum(ends.values()) < expected.messages / 10  # the SDK packs a tenant's events into one record

    consumer = ThreadedConsumer(kafka_bootstrap, tmp_path / "metering.duckdb", topic)
    consumer.wait_until_caught_up(ends, timeout=150)
    deadline = time.monotonic() + 5  # end offsets are refreshed about once a second
    while consumer.consumer.lag() != {p: 0 for p in range(12)} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert consumer.consumer.lag() == {p: 0 for p in range(12)}
    # While it runs, the consumer mirrors DuckDB's offsets to the group's Kafka offsets (for lag tools),
    # re-trying each second what Kafka has not acknowledged: also after a rebalance that came between its
    # last commit and now (a topic created moments ago changes the group's metadata), when the partitions
    # were not ours to commit for a moment.
    wait_for_group_offsets(kafka_bootstrap, consumer.group_id, ends, timeout=30)
    consumer.stop()
    stats = consumer.consumer.stats
    consumer.close_database()

    assert_exact(tmp_path / "metering.duckdb", expected)
    assert stats.records == sum(ends.values())
    assert stats.recorded == expected.distinct
    assert stats.duplicates == expected.duplicates == 20_000
    assert stats.dead_letters == 0
    _, _, _, offsets = stored_state(tmp_path / "metering.duckdb")
    assert offsets == ends
    assert group_offsets(kafka_bootstrap, consumer.group_id) == ends  # and stay so after it stopped


def test_kill_9_at_random_moments_loses_and_doubles_nothing(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    expected = produce_events(kafka_bootstrap, topic, 100_000, duplicate_fraction=0.05, seed=2)
    ends = end_offsets(kafka_bootstrap, topic)
    db_path, log_path = tmp_path / "metering.duckdb", tmp_path / "consumer.log"
    group = f"group-{topic}"
    # static membership: no rebalance wait; small polls of packed records (~27 events each): many commits to cut into
    args = ("--instance-id", "node-1", "--max-poll-records", "40")
    rng = random.Random(7)
    kills = 0
    progress_at_kill = []
    while kills < 6:
        before = sum(group_offsets(kafka_bootstrap, group).values())
        process = start_consumer_process(kafka_bootstrap, db_path, topic, group, *args, log_path=log_path)
        try:
            # Wait for this run to commit something, then kill it at a random moment mid-stream.
            deadline = time.monotonic() + 60
            while sum(group_offsets(kafka_bootstrap, group).values()) <= before:
                assert process.poll() is None, f"consumer exited with {process.returncode}: {log_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "consumer made no progress"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.6))
        finally:
            process.kill()  # SIGKILL
            process.wait(timeout=30)
        kills += 1
        progress_at_kill.append(sum(group_offsets(kafka_bootstrap, group).values()))
        if progress_at_kill[-1] >= sum(ends.values()):
            break
    assert kills >= 5, f"the stream was consumed after {kills} kills ({progress_at_kill}); make it longer"

    log_start = log_path.stat().st_size
    process = start_consumer_process(kafka_bootstrap, db_path, topic, group, *args, log_path=log_path)
    wait_for_group_offsets(kafka_bootstrap, group, ends, timeout=120, process=process)
    # Kafka may have had every offset before this run started (mirrored by the last killed
    # run): make sure this run owns its partitions, so SIGTERM meets its handler.
    wait_for_log(log_path, "assigned [0, 1, 2", start=log_start, process=process)
    assert terminate(process) == 0
    assert_exact(db_path, expected)
    assert stored_state(db_path)[3] == ends


def test_broker_restart_during_production(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    in_ci = not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and not kafka_broker.docker_available()
    if not in_ci and kafka_broker._source != "local":
        pytest.skip("restart_local_broker() needs the scripts/kafka-local.sh broker")
    assert kafka_broker._source == "local", "CI must run Kafka tests on the local script broker"

    consumer = ThreadedConsumer(kafka_bootstrap, tmp_path / "metering.duckdb", topic)
    restarted = threading.Event()
    restart_error: list[BaseException] = []

    def restart_once(n: int) -> None:
        if n == 10_000 and not restarted.is_set():
            restarted.set()

            def restart() -> None:
                try:
                    kafka_broker.restart_local_broker()
                except BaseException as exc:
                    restart_error.append(exc)

            worker = threading.Thread(target=restart)
            worker.start()
            restart_threads.append(worker)

    restart_threads: list[threading.Thread] = []
    expected = produce_events(kafka_bootstrap, topic, 30_000, duplicate_fraction=0.1, seed=3,
                              between=restart_once, max_batch_events=1)  # flush() inside must succeed
    for worker in restart_threads:
        worker.join(timeout=180)
    assert restarted.is_set() and not restart_error, restart_error

    ends = end_offsets(kafka_bootstrap, topic)
    assert sum(ends.values()) == expected.messages  # idempotent producer: no broker-side duplicates
    consumer.wait_until_caught_up(ends, timeout=150)
    consumer.stop()
    consumer.close_database()
    assert_exact(tmp_path / "metering.duckdb", expected)


def test_partitions_added_while_consuming_are_picked_up(kafka_bootstrap: str, tmp_path: Path) -> None:
    """An operator adds partitions to a topic created moments ago; the running consumer takes them all.

    Both changes make the group leader rejoin because the topic metadata
    changed. Very short polls make kafka-python 3.0.12 time out in the middle
    of those rejoins, which (without KafkaIngestConsumer's workaround) leaves
    the member owning nothing while the broker counts the partitions as its own.
    """
    topic = f"usage-events-grow-{uuid.uuid4().hex[:10]}"
    create_topics(kafka_bootstrap, topic, 2, dead_letter_topic=dead_letter_topic_of(topic))
    expected = produce_events(kafka_bootstrap, topic, 2_000, duplicate_fraction=0.05, seed=11)
    consumer = ThreadedConsumer(kafka_bootstrap, tmp_path / "metering.duckdb", topic,
                                poll_timeout_ms=5, metadata_max_age_ms=300)
    consumer.wait_until_caught_up(end_offsets(kafka_bootstrap, topic), timeout=60)

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_partitions({topic: NewPartitions(total_count=PARTITIONS)})
    finally:
        admin.close()
    wait_for_partition_count(kafka_bootstrap, topic, PARTITIONS)
    produce_events(kafka_bootstrap, topic, 6_000, duplicate_fraction=0.05, seed=12, id_prefix="grown-",
                   expected=expected)
    ends = end_offsets(kafka_bootstrap, topic)
    assert all(ends[p] > 0 for p in range(2, PARTITIONS)), ends  # the new partitions hold events

    consumer.wait_until_caught_up(ends, timeout=90)
    assert consumer.consumer.assigned_partitions() == list(range(PARTITIONS))
    consumer.stop()
    consumer.close_database()
    assert_exact(tmp_path / "metering.duckdb", expected)
    assert stored_state(tmp_path / "metering.duckdb")[3] == ends


def test_kafka_group_offsets_catch_up_with_duckdb_while_the_topic_is_idle(
        kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    """Kafka's group offsets (for lag tools) follow DuckDB's even when no new records arrive.

    A kill -9 between a DuckDB commit and its Kafka commit leaves Kafka behind;
    so does a commit lost in a rebalance. Simulated here by a second group
    resuming a file another group filled: DuckDB already holds every offset.
    """
    db_path = tmp_path / "metering.duckdb"
    produce_events(kafka_bootstrap, topic, 3_000, duplicate_fraction=0.05, seed=13)
    ends = end_offsets(kafka_bootstrap, topic)
    first = ThreadedConsumer(kafka_bootstrap, db_path, topic, group_id=f"first-{topic}")
    first.wait_until_caught_up(ends, timeout=60)
    first.stop()
    first.close_database()

    second = ThreadedConsumer(kafka_bootstrap, db_path, topic, group_id=f"second-{topic}")
    wait_for_group_offsets(kafka_bootstrap, second.group_id, ends, timeout=30)
    assert second.consumer.stats.records == 0  # resumed from DuckDB: nothing read again
    second.stop()
    second.close_database()


def test_poison_messages_are_dead_lettered_and_the_consumer_goes_on(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    db_path = tmp_path / "metering.duckdb"
    with _nullcontext(Database(db_path)) as database:
        cursor = database.cursor()
        catalog_store.save_plan(cursor, parse_plan({
            "plan_id": "capped", "name": "Capped",
            "metrics": [{"metric": "api_calls", "included": 5, "policy": "block"}],
        }))
        catalog_store.save_tenant(cursor, parse_tenant({"tenant_id": "capped-tenant", "plan_id": "capped"}))

    def good(i: int, tenant: str = "good-tenant") -> bytes:
        return json.dumps({"tenant_id": tenant, "metric": "api_calls", "quantity": "1.5", "event_id": f"g-{i}"}).encode()

    bad = {
        "not_json": (b"{this is not json", "invalid_json: -:"),
        "array": (b'[{"tenant_id": "t"}]', "invalid_type: -:"),
        "negative": (json.dumps({"tenant_id": "t", "metric": "api_calls", "quantity": -3}).encode(),
                     "invalid_quantity: quantity:"),
        "unknown_field": (json.dumps({"tenant_id": "t", "metric": "api_calls", "quantity": 1, "colour": "red"}).encode(),
                          "unknown_field: colour:"),
        "nan": (b'{"tenant_id": "t", "metric": "api_calls", "quantity": NaN}', "invalid_json: -:"),
        "bad_utf8": (b'{"tenant_id": "\xff\xfe"}', "invalid_json: -:"),
    }
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    sent_bad: dict[str, tuple[int, int]] = {}
    good_count = 0
    try:
        for round_ in range(3):
            for name, (raw, _) in bad.items():
                for _ in range(5):
                    producer.send(topic, key=b"good-tenant", value=good(good_count)).get(timeout=30)
                    good_count += 1
                meta = producer.send(topic, key=f"k-{name}".encode(), value=raw).get(timeout=30)
                sent_bad[f"{name}-{round_}"] = (meta.partition, meta.offset)
        # 8 events of 1 for a tenant whose plan blocks api_calls above 5: three are blocked.
        for i in range(8):
            body = json.dumps({"tenant_id": "capped-tenant", "metric": "api_calls", "quantity": 1, "event_id": f"c-{i}"})
            producer.send(topic, key=b"capped-tenant", value=body.encode()).get(timeout=30)
        producer.flush()
    finally:
        producer.close()

    ends = end_offsets(kafka_bootstrap, topic)
    consumer = ThreadedConsumer(kafka_bootstrap, db_path, topic)
    consumer.wait_until_caught_up(ends, timeout=90)
    consumer.stop()
    stats = consumer.consumer.stats
    rows = consumer.database.cursor().execute(
        'SELECT source, topic, partition, "offset", raw, reason FROM dead_letters ORDER BY id').fetchall()
    totals = dict(consumer.database.cursor().execute(
        "SELECT tenant_id, sum(quantity) FROM events GROUP BY ALL").fetchall())
    consumer.close_database()

    assert totals == {"good-tenant": Decimal("1.5") * good_count, "capped-tenant": Decimal(5)}
    assert stats.recorded == good_count + 5 and stats.blocked == 3
    by_position = {(r[2], r[3]): r for r in rows}
    assert len(rows) == len(sent_bad) + 3
    for label, (partition, offset) in sent_bad.items():
        name = label.rsplit("-", 1)[0]
        source, row_topic, _, _, raw, reason = by_position[(partition, offset)]
        assert (source, row_topic, bytes(raw)) == ("kafka", topic, bad[name][0])
        assert reason.startswith(bad[name][1]), (name, reason)
    quota_rows = [r for r in rows if r[5].startswith("quota_exceeded: api_calls:")]
    assert len(quota_rows) == 3

    # The same dead letters, with their reasons, on the dead-letter topic.
    dl_consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                consumer_timeout_ms=5000)
    dl_topic = dead_letter_topic_of(topic)
    dl_consumer.assign([TopicPartition(dl_topic, p) for p in range(12)])
    published = []
    deadline = time.monotonic() + 30
    while len(published) < len(rows) and time.monotonic() < deadline:
        for records in dl_consumer.poll(timeout_ms=1000).values():
            published.extend(records)
    dl_consumer.close()
    assert sorted(r.value for r in published) == sorted(bytes(r[4]) for r in rows)
    published_meta = sorted(
        (int(dict(r.headers)["source-partition"]), int(dict(r.headers)["source-offset"]), dict(r.headers)["reason"].decode())
        for r in published
    )
    assert published_meta == sorted((r[2], r[3], r[5]) for r in rows)


def test_a_second_consumer_on_a_held_database_fails_at_once(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    db_path = tmp_path / "metering.duckdb"
    holder = Database(db_path)  # this process is the running node
    try:
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "usage_metering", "--db", str(db_path), "consume",
             "--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--group-id", f"group-{topic}"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
        )
        elapsed = time.monotonic() - started
    finally:
        holder.close()
    assert proc.returncode == 1
    assert "held by another process" in proc.stderr and "--url" in proc.stderr, proc.stderr
    assert elapsed < 15
    # Nothing half-started: no group offsets were committed for it.
    assert group_offsets(kafka_bootstrap, f"group-{topic}") == {}


def test_sigterm_commits_everything_acknowledged_and_exits_0(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    # one event per record: a stop between any two records is a stop between two events
    expected = produce_events(kafka_bootstrap, topic, 40_000, duplicate_fraction=0.0, seed=4, max_batch_events=1)
    ends = end_offsets(kafka_bootstrap, topic)
    db_path, log_path = tmp_path / "metering.duckdb", tmp_path / "consumer.log"
    group = f"group-{topic}"
    process = start_consumer_process(kafka_bootstrap, db_path, topic, group, "--max-poll-records", "1000",
                                     log_path=log_path)
    deadline = time.monotonic() + 60
    while sum(group_offsets(kafka_bootstrap, group).values()) == 0:
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.05)
    assert terminate(process) == 0, log_path.read_text()[-3000:]
    assert "stopped cleanly" in log_path.read_text()

    events, _, total, offsets = stored_state(db_path)
    acknowledged = group_offsets(kafka_bootstrap, group)
    # Everything acknowledged to Kafka is in DuckDB, and DuckDB holds exactly the records
    # before its stored offsets (each message is one distinct event here).
    assert acknowledged == offsets
    assert total == sum(offsets.values()) > 0
    assert total < expected.distinct, "stopped too late to test a mid-stream stop"

    process = start_consumer_process(kafka_bootstrap, db_path, topic, group, log_path=log_path)
    wait_for_group_offsets(kafka_bootstrap, group, ends, timeout=90, process=process)
    os.kill(process.pid, signal.SIGINT)
    assert process.wait(timeout=60) == 0
    assert_exact(db_path, expected)
