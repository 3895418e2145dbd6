"""Records our SDK did not write: Apache Kafka's Java client and a raw kafka-python producer, every codec.

The consumer must count every valid event exactly once and turn everything
else (tombstones, bytes that are not UTF-8 or JSON, values over the size
limit, record batches it cannot unpack) into dead letters at their exact
topic/partition/offset, without ever stopping.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import kafka.codec
import pytest
from kafka import KafkaProducer

from support import kafka_broker
from support.pipeline_helpers import REPO_ROOT, ThreadedConsumer
from usage_metering.kafka.topics import end_offsets
from usage_metering.schemas import parse_plan, parse_tenant
from usage_metering.schemas.event_json import MAX_EVENT_JSON_BYTES
from usage_metering.store import Database
from usage_metering.store import catalog as catalog_store
from usage_metering.store.offsets import load_offsets

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
JAVA_SOURCE = REPO_ROOT / "tests" / "kafka" / "java" / "RecordProducer.java"
# The jars a Java producer needs: the client and the codecs it compresses with.
CLIENT_JARS = ("kafka-clients-", "snappy-java-", "lz4-java-", "zstd-jni-", "slf4j-api-")


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    reason: str | None = None  # the dead letter's reason prefix; None: a valid event


@dataclass
class Published:
    """What was sent, where it landed, and what the consumer must make of it."""

    totals: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    events: int = 0  # distinct valid events
    dead_letters: dict[tuple[int, int], str] = field(default_factory=dict)  # (partition, offset) -> reason prefix

    def add(self, records: list[Record], positions: list[tuple[int, int]], new_events: dict[str, Decimal]) -> None:
        assert len(positions) == len(records)
        for record, position in zip(records, positions):
            if record.reason is not None:
                self.dead_letters[position] = record.reason
        for tenant, quantity in new_events.items():
            self.totals[tenant] += quantity


def mixed_records(label: str, rng: random.Random, count: int = 150) -> tuple[list[Record], dict[str, Decimal], int]:
    """`count` events (10% resent, some with headers or no key) among records that must be dead-lettered."""
    records: list[Record] = []
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for i in range(count):
        tenant = f"interop-{rng.randrange(8)}"
        quantity = Decimal(rng.randrange(1, 100_000)) / 100
        body = {"tenant_id": tenant, "metric": "api_calls", "quantity": str(quantity),
                "user_id": f"u{rng.randrange(5)}", "event_id": f"{label}-{i}"}
        value = json.dumps(body).encode()
        key = None if i % 7 == 0 else tenant.encode()
        headers = [("content-type", b"application/json"), ("trace", bytes([i % 256]))] if i % 5 == 0 else []
        records.append(Record(key, value, headers))
        totals[tenant] += quantity
        if i % 10 == 3:  # a retry: the same bytes again
            records.append(Record(key, value))
    oversized = json.dumps({"tenant_id": "interop-0", "metric": "api_calls", "quantity": 1,
                            "properties": {"pad": "x" * MAX_EVENT_JSON_BYTES}}).encode()
    poison = [
        Record(b"interop-1", None, reason="invalid_json: -: empty message"),
        Record(b"interop-2", b'{"tenant_id": "\xff\xfe", "metric": "api_calls", "quantity": 1}', reason="invalid_json: -:"),
        Record(None, b"quantity=3", reason="invalid_json: -:"),
        Record(b"interop-3", oversized, reason="event_too_large: -:"),
        Record(b"interop-4", b'{"tenant_id": "interop-4", "metric": "api_calls", "quantity": -1}',
               reason="invalid_quantity: quantity:"),
    ]
    for record in poison:
        records.insert(rng.randrange(len(records) + 1), record)
    return records, totals, count


# -- producers that are not our SDK ------------------------------------------------------------


@pytest.fixture(scope="session")
def java_producer(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[list[str]]:
    """`java -cp ... RecordProducer`, compiled with javac against the broker's own kafka-clients jar."""
    fetched = subprocess.run(["bash", str(kafka_broker.KAFKA_LOCAL_SCRIPT), "fetch"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=600, check=True)
    libs = Path(fetched.stdout.strip().splitlines()[-1])
    jars = [str(jar) for jar in sorted(libs.glob("*.jar")) if jar.name.startswith(CLIENT_JARS)]
    assert len(jars) == len(CLIENT_JARS), f"missing client jars in {libs}: {jars}"
    classes = tmp_path_factory.mktemp("java-producer")
    javac, java = shutil.which("javac"), shutil.which("java")
    assert javac and java, "javac and java (JDK 17) are needed for the interop tests"
    subprocess.run([javac, "-cp", ":".join(jars), "-d", str(classes), str(JAVA_SOURCE)], check=True, timeout=300)
    yield [java, "-cp", ":".join([str(classes), *jars]), "RecordProducer"]


def publish_with_java(command: list[str], bootstrap: str, topic: str, codec: str, records: list[Record],
                      workdir: Path) -> list[tuple[int, int]]:
    def b64(data: bytes | None) -> str:
        return "-" if data is None else base64.b64encode(data).decode()

    lines = []
    for record in records:
        fields = [b64(record.key), b64(record.value)]
        fields += [f"{b64(name.encode())}:{b64(value)}" for name, value in record.headers]
        lines.append("\t".join(fields))
    spec = workdir / f"records-{codec}.tsv"
    spec.write_text("\n".join(lines) + "\n", encoding="ascii")
    done = subprocess.run([*command, bootstrap, topic, codec, str(spec)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [(int(p), int(o)) for p, o in (line.split() for line in done.stdout.split("\n") if line.strip())]


def publish_with_kafka_python(bootstrap: str, topic: str, codec: str, records: list[Record],
                              partition: int | None = None) -> list[tuple[int, int]]:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                             compression_type=None if codec == "none" else codec, max_request_size=4 * 1024 * 1024)
    try:
        futures = [producer.send(topic, key=r.key, value=r.value, headers=r.headers, partition=partition)
                   for r in records]
        producer.flush()
        return [(meta.partition, meta.offset) for meta in (f.get(timeout=60) for f in futures)]
    finally:
        producer.close()


# -- checking what the consumer stored ---------------------------------------------------------


def consume_everything(bootstrap: str, topic: str, db_path: Path) -> ThreadedConsumer:
    consumer = ThreadedConsumer(bootstrap, db_path, topic)
    consumer.wait_until_caught_up(end_offsets(bootstrap, topic), timeout=120)
    consumer.stop()
    return consumer


def assert_stored(consumer: ThreadedConsumer, topic: str, published: Published) -> None:
    cursor = consumer.database.cursor()
    totals = dict(cursor.execute("SELECT tenant_id, sum(quantity) FROM events GROUP BY ALL").fetchall())
    count = cursor.execute("SELECT count(*) FROM events").fetchone()[0]
    rollups = dict(cursor.execute("SELECT tenant_id, sum(quantity_sum) FROM usage_hourly GROUP BY ALL").fetchall())
    letters = {(p, o): (t, reason) for t, p, o, reason in cursor.execute(
        'SELECT topic, partition, "offset", reason FROM dead_letters').fetchall()}
    assert count == published.events
    assert totals == dict(published.totals)
    assert rollups == dict(published.totals)
    assert set(letters) == set(published.dead_letters)
    for position, prefix in published.dead_letters.items():
        row_topic, reason = letters[position]
        assert row_topic == topic and reason.startswith(prefix), (position, reason, prefix)


def test_every_codec_from_the_java_client_and_kafka_python_is_counted_exactly(
    kafka_bootstrap: str, topic: str, tmp_path: Path, java_producer: list[str]
) -> None:
    rng = random.Random(10)
    published = Published()
    for codec in CODECS:
        records, totals, events = mixed_records(f"java-{codec}", rng)
        published.add(records, publish_with_java(java_producer, kafka_bootstrap, topic, codec, records, tmp_path), totals)
        published.events += events
        records, totals, events = mixed_records(f"py-{codec}", rng)
        published.add(records, publish_with_kafka_python(kafka_bootstrap, topic, codec, records), totals)
        published.events += events

    consumer = consume_everything(kafka_bootstrap, topic, tmp_path / "metering.duckdb")
    try:
        assert consumer.consumer.stats.dead_letters == len(published.dead_letters) == 5 * 2 * len(CODECS)
        assert_stored(consumer, topic, published)
    finally:
        consumer.close_database()


def test_a_record_batch_that_cannot_be_unpacked_is_dead_lettered_and_the_rest_is_counted(
    kafka_bootstrap: str, topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer without the zstd library meets a zstd batch between two readable ones on one partition."""
    rng = random.Random(11)
    published = Published()
    for label, codec in (("before", "gzip"), ("unreadable", "zstd"), ("after", "none")):
        records, totals, events = mixed_records(label, rng, count=20)
        positions = publish_with_kafka_python(kafka_bootstrap, topic, codec, records, partition=3)
        if codec == "zstd":  # every record of the batch, valid or not, is a dead letter
            for record in records:
                record.reason = "undecodable_record: -: UnsupportedCodecError: Libraries for zstd"
            totals, events = {}, 0
        published.add(records, positions, totals)
        published.events += events

    monkeypatch.setattr(kafka.codec, "zstd", None)  # what a consumer installed without the zstd extra sees
    consumer = consume_everything(kafka_bootstrap, topic, tmp_path / "metering.duckdb")
    try:
        stored = load_offsets(consumer.database.cursor(), topic)
        assert stored[3] == end_offsets(kafka_bootstrap, topic)[3]
        assert_stored(consumer, topic, published)
    finally:
        consumer.close_database()


def test_batch_envelopes_written_by_hand_count_each_event_on_its_own(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """What a producer in another language writes following the README: the envelope and its header."""
    db_path = tmp_path / "metering.duckdb"
    database = Database(db_path)
    catalog_store.save_plan(database.cursor(), parse_plan({
        "plan_id": "capped", "name": "Capped", "metrics": [{"metric": "api_calls", "included": 3, "policy": "block"}]}))
    catalog_store.save_tenant(database.cursor(), parse_tenant({"tenant_id": "capped-tenant", "plan_id": "capped"}))
    database.close()

    def event(tenant: str, i: int, quantity: object = 1) -> bytes:
        return json.dumps({"tenant_id": tenant, "metric": "api_calls", "quantity": quantity,
                           "event_id": f"{tenant}-{i}"}).encode()

    header = [("content-type", b"application/vnd.usage-metering.events+json; version=1")]
    bad_event = event("batch-a", 99, quantity="-2")
    unreadable = b'{"version": 1, "events": [' + event("batch-b", 0)  # cut short
    records = [
        Record(b"batch-a", b'{"version": 1, "events": [' + b", ".join(
            [event("batch-a", 0), bad_event, event("batch-a", 1), event("batch-a", 0)]) + b"]}", header),
        Record(b"batch-b", unreadable, header, reason="invalid_batch: -:"),
        Record(b"batch-c", b'{"version": 7, "events": []}', header, reason="unsupported_version: version:"),
        Record(b"capped-tenant", b'{"version":1,"events":[' + b",".join(
            event("capped-tenant", i) for i in range(5)) + b"]}", header),
        Record(b"batch-a", event("batch-a", 2)),  # a one-event record between batches still reads
    ]
    positions = publish_with_kafka_python(kafka_bootstrap, topic, "lz4", records)

    consumer = consume_everything(kafka_bootstrap, topic, db_path)
    try:
        cursor = consumer.database.cursor()
        totals = dict(cursor.execute("SELECT tenant_id, sum(quantity) FROM events GROUP BY ALL").fetchall())
        assert totals == {"batch-a": 3, "capped-tenant": 3}  # the resent batch-a-0 once; 2 of capped blocked
        letters = cursor.execute(
            'SELECT partition, "offset", raw, reason FROM dead_letters ORDER BY "offset", id').fetchall()
        by_reason = {reason.split(":")[0] + ":" + reason.split(":")[1]: (p, o, bytes(raw))
                     for p, o, raw, reason in letters}
        assert by_reason["invalid_quantity: events[1].quantity"] == (*positions[0], bad_event)
        assert by_reason["invalid_batch: -"] == (*positions[1], unreadable)
        assert by_reason["unsupported_version: version"][:2] == positions[2]
        blocked = [(p, o, json.loads(raw)) for p, o, raw, reason in letters if reason.startswith("quota_exceeded")]
        assert [(p, o) for p, o, _ in blocked] == [positions[3]] * 2
        assert sorted(raw["event_id"] for _, _, raw in blocked) == ["capped-tenant-3", "capped-tenant-4"]
        assert len(letters) == 5
    finally:
        consumer.close_database()
