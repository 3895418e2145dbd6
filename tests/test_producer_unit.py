"""Unit tests for the producer SDK: no broker, no metering service.

The Kafka transport runs against a fake KafkaProducer; the HTTP transport runs
against a tiny real HTTP server in a thread that answers like the service's
batch endpoint.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import deque
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.errors import KafkaTimeoutError, NotLeaderForPartitionError
from kafka.future import Future

from usage_metering.producer import (
    DeliveryError,
    HttpStatusError,
    HttpUsageProducer,
    RejectedEvent,
    UsageProducer,
)
from usage_metering.producer import kafka_transport
from usage_metering.producer.events import build_event, encode_event
from usage_metering.schemas import ValidationError
from usage_metering.schemas.event_json import decode_event_json


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


# -- Kafka transport, with a fake KafkaProducer ---------------------------


class FakeKafkaProducer:
    """Records sends; flush() acknowledges whatever the test has not settled."""

    def __init__(self, **configs: Any) -> None:
        self.configs = configs
        self.sent: list[SimpleNamespace] = []
        self.closed = False
        self.flush_times_out = False
        self.send_raises: Exception | None = None
        self.fail_at: dict[int, Exception] = {}  # the n-th send fails with this when flushed
        self._lock = threading.Lock()

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
             headers: list[tuple[str, bytes]] | None = None, partition: int | None = None,
             timestamp_ms: int | None = None) -> Future:
        if self.send_raises is not None:
            raise self.send_raises
        future = Future()
        with self._lock:
            self.sent.append(SimpleNamespace(topic=topic, value=value, key=key, headers=headers, future=future))
        return future

    def flush(self, timeout: float | None = None) -> None:
        if self.flush_times_out:
            raise KafkaTimeoutError("Timeout waiting for future")
        with self._lock:
            pending = [(n, s.future) for n, s in enumerate(self.sent) if not s.future.is_done]
        for n, future in pending:
            if n in self.fail_at:
                future.failure(self.fail_at[n])
            else:
                future.success(SimpleNamespace(offset=0))

    def close(self, timeout: float | None = None) -> None:
        self.flush(timeout)
        self.closed = True


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_transport, "KafkaProducer", FakeKafkaProducer)


def fake_of(producer: UsageProducer) -> FakeKafkaProducer:
    fake = producer._producer
    assert isinstance(fake, FakeKafkaProducer)
    return fake


def sent_events(producer: UsageProducer) -> list[dict[str, Any]]:
    """Flush, then every event sent so far, in order, out of the records' batch envelopes."""
    producer.flush()
    events = []
    for sent in fake_of(producer).sent:
        envelope = json.loads(sent.value)
        assert envelope["version"] == 1 and 1 <= len(envelope["events"]) <= 500
        events.extend(envelope["events"])
    return events


@pytest.mark.unit
def test_kafka_config_is_durable_and_ordered(fake_kafka: None) -> None:
    producer = UsageProducer("broker:9092", "metering")
    configs = fake_of(producer).configs
    assert configs["bootstrap_servers"] == "broker:9092"
    assert configs["acks"] == "all"
    assert configs["enable_idempotence"] is True
    assert configs["compression_type"] == "lz4"
    assert "linger_ms" not in configs  # the SDK lingers while packing a tenant's events; Kafka need not
    assert configs["batch_size"] == 1024 * 1024
    assert configs.get("retries", float("inf")) > 1000


@pytest.mark.unit
def test_kafka_options_override_defaults(fake_kafka: None) -> None:
    producer = UsageProducer(["a:9092", "b:9092"], compression_type=None, batch_size=5, client_id="svc")
    configs = fake_of(producer).configs
    assert configs["bootstrap_servers"] == ["a:9092", "b:9092"]
    assert configs["compression_type"] is None
    assert configs["batch_size"] == 5
    assert configs["client_id"] == "svc"


@pytest.mark.unit
@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"quantity": Decimal("-1")}, "quantity"),
        ({"quantity": "abc"}, "quantity"),
        ({"quantity": Decimal("0.0000000001")}, "quantity"),
        ({"tenant_id": "has space"}, "tenant_id"),
        ({"metric": ""}, "metric"),
        ({"user_id": "x" * 129}, "user_id"),
        ({"event_id": "bad/id"}, "event_id"),
        ({"timestamp": datetime(2024, 1, 1)}, "timestamp"),  # naive
        ({"timestamp": datetime.now(timezone.utc) + timedelta(hours=1)}, "timestamp"),
        ({"properties": ["not", "an", "object"]}, "properties"),
        ({"properties": {"s": {1, 2}}}, "properties"),  # not JSON
        ({"properties": {"x": float("nan")}}, "properties"),
    ],
)
def test_invalid_event_raises_at_record_and_sends_nothing(fake_kafka: None, kwargs: dict[str, Any], field: str) -> None:
    producer = UsageProducer()
    args: dict[str, Any] = {"tenant_id": "acme", "metric": "api_calls", "quantity": 1, **kwargs}
    with pytest.raises(ValidationError) as caught:
        producer.record(**args)
    assert caught.value.field == field
    assert fake_of(producer).sent == []
    producer.close()  # nothing pending, nothing failed


@pytest.mark.unit
def test_generated_ids_are_unique_uuid7_and_carried_in_the_value(fake_kafka: None) -> None:
    producer = UsageProducer()
    ids = [producer.record("acme", "api_calls", 1) for _ in range(500)]
    assert len(set(ids)) == 500
    assert all(uuid.UUID(event_id).version == 7 for event_id in ids)
    assert [value["event_id"] for value in sent_events(producer)] == ids


@pytest.mark.unit
def test_explicit_event_id_is_kept(fake_kafka: None) -> None:
    producer = UsageProducer()
    assert producer.record("acme", "api_calls", 1, event_id="req-123") == "req-123"
    assert sent_events(producer)[0]["event_id"] == "req-123"


@pytest.mark.unit
def test_message_key_headers_and_value_shape(fake_kafka: None) -> None:
    producer = UsageProducer(topic="usage-events")
    at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    event_id = producer.record(
        "acme", "storage_gb", Decimal("0.1"), user_id="u-1", timestamp=at,
        properties={"region": "eu", "size": Decimal("1.50"), "café": "ü"},
    )
    (event,) = sent_events(producer)
    sent = fake_of(producer).sent[0]
    assert sent.topic == "usage-events"
    assert sent.key == b"acme"
    assert sent.headers == [("schema-version", b"1"),
                            ("content-type", b"application/vnd.usage-metering.events+json; version=1")]
    assert b" " not in sent.value.replace(b'"', b"").split(b"properties")[0]  # compact separators
    assert "café".encode() in sent.value  # UTF-8, not \u escapes
    assert event == {
        "tenant_id": "acme",
        "metric": "storage_gb",
        "quantity": "0.1",
        "event_id": event_id,
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "user_id": "u-1",
        "properties": {"region": "eu", "size": 1.5, "café": "ü"},
    }


@pytest.mark.unit
@pytest.mark.parametrize(
    "quantity, text",
    [(Decimal("0.1"), "0.1"), (Decimal("12345678901.123456789"), "12345678901.123456789"),
     (Decimal("2.500"), "2.5"), (3, "3"), ("0.30", "0.3"), (Decimal("1E+3"), "1000")],
)
def test_quantity_is_an_exact_decimal_string(fake_kafka: None, quantity: Any, text: str) -> None:
    producer = UsageProducer()
    producer.record("acme", "m", quantity)
    assert sent_events(producer)[0]["quantity"] == text


@pytest.mark.unit
def test_failed_send_makes_flush_raise_and_calls_on_error(fake_kafka: None) -> None:
    errors: list[tuple[str, Exception]] = []
    producer = UsageProducer(on_error=lambda event_id, exc: errors.append((event_id, exc)))
    ok_id = producer.record("acme", "api_calls", 1)
    bad_id = producer.record("globex", "api_calls", 2)  # another tenant: another record
    boom = NotLeaderForPartitionError("leader moved")
    fake_of(producer).fail_at[1] = boom

    with pytest.raises(DeliveryError) as caught:
        producer.flush()
    assert errors == [(bad_id, boom)]
    assert caught.value.event_ids == [bad_id]
    assert caught.value.first_exception is boom
    assert bad_id in str(caught.value) and ok_id not in str(caught.value)
    producer.flush()  # each failure is reported once


@pytest.mark.unit
def test_on_error_that_raises_does_not_hide_the_failure(fake_kafka: None) -> None:
    def broken(event_id: str, exc: Exception) -> None:
        raise RuntimeError("callback bug")

    producer = UsageProducer(on_error=broken)
    event_id = producer.record("acme", "api_calls", 1)
    fake_of(producer).fail_at[0] = KafkaTimeoutError("expired")
    with pytest.raises(DeliveryError) as caught:
        producer.flush()
    assert caught.value.event_ids == [event_id]


@pytest.mark.unit
def test_a_send_that_raises_fails_the_events_of_its_record(fake_kafka: None) -> None:
    producer = UsageProducer()
    fake_of(producer).send_raises = KafkaTimeoutError("no metadata")
    ids = [producer.record("acme", "api_calls", 1) for _ in range(3)]
    with pytest.raises(DeliveryError) as caught:
        producer.flush()
    assert caught.value.event_ids == ids
    assert isinstance(caught.value.first_exception, KafkaTimeoutError)
    fake_of(producer).send_raises = None
    producer.close()  # reported once


@pytest.mark.unit
def test_close_flushes_closes_and_raises_for_failures(fake_kafka: None) -> None:
    producer = UsageProducer()
    event_id = producer.record("acme", "api_calls", 1)
    fake_of(producer).fail_at[0] = KafkaTimeoutError("expired")
    with pytest.raises(DeliveryError) as caught:
        producer.close()
    assert caught.value.event_ids == [event_id]
    assert fake_of(producer).closed
    with pytest.raises(RuntimeError):
        producer.record("acme", "api_calls", 1)


@pytest.mark.unit
def test_close_timeout_fails_unacknowledged_events(fake_kafka: None) -> None:
    producer = UsageProducer()
    event_id = producer.record("acme", "api_calls", 1)
    fake_of(producer).flush_times_out = True
    with pytest.raises(DeliveryError) as caught:
        producer.close(timeout=0.1)
    assert caught.value.event_ids == [event_id]
    assert isinstance(caught.value.first_exception, TimeoutError)


@pytest.mark.unit
def test_flush_timeout_raises_timeout_error(fake_kafka: None) -> None:
    producer = UsageProducer()
    producer.record("acme", "api_calls", 1)
    fake_of(producer).flush_times_out = True
    with pytest.raises(TimeoutError):
        producer.flush(timeout=0.1)


@pytest.mark.unit
def test_context_manager_flushes_and_closes(fake_kafka: None) -> None:
    with UsageProducer() as producer:
        producer.record("acme", "api_calls", 1)
        fake = fake_of(producer)
    assert fake.closed
    assert all(sent.future.succeeded() for sent in fake.sent)


@pytest.mark.unit
def test_context_manager_raises_delivery_error(fake_kafka: None) -> None:
    with pytest.raises(DeliveryError):
        with UsageProducer() as producer:
            producer.record("acme", "api_calls", 1)
            fake_of(producer).fail_at[0] = KafkaTimeoutError("expired")


def record_from_threads(producer: Any, threads: int, per_thread: int) -> list[str]:
    """Record from several threads at once; every returned event id, in no particular order."""
    ids: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [producer.record("acme", "api_calls", 1) for _ in range(per_thread)]
        with lock:
            ids.extend(mine)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return ids


@pytest.mark.unit
def test_record_from_many_threads(fake_kafka: None) -> None:
    producer = UsageProducer()
    ids = record_from_threads(producer, threads=8, per_thread=200)
    assert sorted(event["event_id"] for event in sent_events(producer)) == sorted(ids)
    producer.close()
    assert len(set(ids)) == 1600


@pytest.mark.unit
def test_a_tenants_events_are_packed_in_order_up_to_the_count_and_byte_bounds(fake_kafka: None) -> None:
    producer = UsageProducer(max_batch_events=4, max_batch_bytes=10_000, linger_ms=60_000)
    ids = {tenant: [producer.record(tenant, "m", 1) for _ in range(10)] for tenant in ("acme", "globex")}
    big = [producer.record("initech", "m", 1, properties={"pad": "x" * 3000}) for _ in range(7)]
    events = sent_events(producer)
    records = fake_of(producer).sent
    by_tenant: dict[bytes, list[str]] = {}
    for record in records:
        batch = json.loads(record.value)["events"]
        assert {event["tenant_id"].encode() for event in batch} == {record.key}
        assert len(batch) <= 4 and len(record.value) <= 10_000 + 100
        by_tenant.setdefault(record.key, []).extend(event["event_id"] for event in batch)
    assert by_tenant == {b"acme": ids["acme"], b"globex": ids["globex"], b"initech": big}
    assert len([r for r in records if r.key == b"acme"]) == 3  # 4 + 4 + 2
    assert len([r for r in records if r.key == b"initech"]) == 3  # 3 + 3 + 1: bytes bound first
    assert len(events) == 27
    producer.close()


@pytest.mark.unit
def test_an_open_record_is_sent_once_its_first_event_has_lingered(fake_kafka: None) -> None:
    producer = UsageProducer(linger_ms=50)
    started = time.monotonic()
    producer.record("acme", "m", 1)
    producer.record("acme", "m", 2)
    wait_until(lambda: len(fake_of(producer).sent) == 1)
    assert time.monotonic() - started >= 0.045
    assert [e["quantity"] for e in json.loads(fake_of(producer).sent[0].value)["events"]] == ["1", "2"]
    producer.close()


@pytest.mark.unit
def test_one_event_per_record_when_asked(fake_kafka: None) -> None:
    producer = UsageProducer(max_batch_events=1)
    event_id = producer.record("acme", "m", 1)
    producer.flush()
    (sent,) = fake_of(producer).sent
    assert sent.headers == [("schema-version", b"1"), ("content-type", b"application/json")]
    assert json.loads(sent.value)["event_id"] == event_id
    producer.close()


@pytest.mark.unit
def test_publish_resolves_once_every_record_is_acknowledged(fake_kafka: None) -> None:
    producer = UsageProducer(linger_ms=1)
    events = [build_event(tenant, "m", 1) for tenant in ("a", "b", "a")]
    done = producer.publish(events)
    wait_until(lambda: len(fake_of(producer).sent) == 2)
    assert not done.done()
    fake_of(producer).flush()
    assert done.result(timeout=1) is None
    fake_of(producer).fail_at[2] = NotLeaderForPartitionError("moved")
    failed = producer.publish([build_event("c", "m", 1)])
    wait_until(lambda: len(fake_of(producer).sent) == 3)
    fake_of(producer).flush()
    assert isinstance(failed.exception(timeout=1), NotLeaderForPartitionError)
    producer.close()


# -- HTTP transport, with a tiny real server ------------------------------


class FakeService:
    """Answers POST /api/events/batch like the metering service.

    `script` holds what to do with the next requests: "ok", "503", "drop"
    (close the connection without answering) or an int status. `outcomes`
    overrides the per-event status by event id.
    """

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.client_ports: list[int] = []  # the client's side of the connection, per request
        self.script: deque[str | int] = deque()
        self.outcomes: dict[str, str] = {}
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def event_ids(self, batch_index: int) -> list[str]:
        return [event["event_id"] for event in self.batches[batch_index]]

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers["Content-Length"]))
        events = json.loads(body)["events"]
        with self.lock:
            self.batches.append(events)
            self.headers.append(dict(handler.headers))
            self.paths.append(handler.path)
            self.client_ports.append(handler.client_address[1])
            action = self.script.popleft() if self.script else "ok"
        if action == "drop":
            handler.close_connection = True
            return
        if action == "503":
            self.reply(handler, 503, {"error": "unavailable"}, {"Retry-After": "0"})
            return
        if isinstance(action, int):
            self.reply(handler, action, {"error": {"code": "nope", "message": "nope"}})
            return
        results = []
        for index, event in enumerate(events):
            event_id = event["event_id"]
            with self.lock:
                status = self.outcomes.get(event_id) or ("duplicate" if event_id in self.seen else "recorded")
                self.seen.add(event_id)
            result: dict[str, Any] = {"index": index, "event_id": event_id, "status": status}
            if status in ("blocked", "rejected"):
                code = "quota_exceeded" if status == "blocked" else "invalid_metric"
                result["error"] = {"code": code, "message": f"{status} by test", "field": None}
            results.append(result)
        self.reply(handler, 200, {"results": results})

    @staticmethod
    def reply(handler: BaseHTTPRequestHandler, status: int, document: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(document).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)


@pytest.fixture
def service() -> Iterator[tuple[FakeService, str]]:
    fake = FakeService()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        disable_nagle_algorithm = True  # headers and body are separate writes

        def do_POST(self) -> None:
            fake.handle(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_http_sends_batches_by_size(service: tuple[FakeService, str]) -> None:
    fake, url = service
    producer = HttpUsageProducer(url, batch_size=3, linger_seconds=60)
    ids = [producer.record("acme", "api_calls", 1) for _ in range(7)]
    wait_until(lambda: len(fake.batches) == 2)  # two full batches go without waiting
    time.sleep(0.05)
    assert len(fake.batches) == 2  # the partial one lingers
    producer.flush()
    assert [len(batch) for batch in fake.batches] == [3, 3, 1]
    assert [e["event_id"] for batch in fake.batches for e in batch] == ids
    assert fake.paths == ["/api/events/batch"] * 3
    producer.close()


@pytest.mark.integration
def test_http_sends_a_partial_batch_when_linger_expires(service: tuple[FakeService, str]) -> None:
    fake, url = service
    producer = HttpUsageProducer(url, batch_size=100, linger_seconds=0.1)
    started = time.monotonic()
    producer.record("acme", "api_calls", 1)
    producer.record("acme", "api_calls", Decimal("0.1"))
    wait_until(lambda: len(fake.batches) == 1)
    assert time.monotonic() - started >= 0.09
    assert [e["quantity"] for e in fake.batches[0]] == ["1", "0.1"]
    producer.close()


@pytest.mark.integration
def test_http_retries_after_503_with_the_same_ids(service: tuple[FakeService, str]) -> None:
    fake, url = service
    fake.script.extend(["503"])
    producer = HttpUsageProducer(url, backoff_seconds=0.01)
    ids = [producer.record("acme", "api_calls", 1) for _ in range(2)]
    producer.flush()
    assert len(fake.batches) == 2
    assert fake.event_ids(0) == fake.event_ids(1) == ids
    producer.close()


@pytest.mark.integration
def test_http_retries_after_a_dropped_connection(service: tuple[FakeService, str]) -> None:
    fake, url = service
    fake.script.extend(["drop"])
    errors: list[tuple[str, Exception]] = []
    producer = HttpUsageProducer(url, backoff_seconds=0.01, on_error=lambda i, e: errors.append((i, e)))
    ids = [producer.record("acme", "api_calls", 1) for _ in range(3)]
    producer.flush()
    assert len(fake.batches) == 2
    assert fake.event_ids(0) == fake.event_ids(1) == ids
    assert errors == []
    producer.close()


@pytest.mark.integration
def test_http_resend_answered_as_duplicate_counts_as_delivered(service: tuple[FakeService, str]) -> None:
    fake, url = service
    fake.seen.add("evt-1")  # an earlier attempt landed but its answer was lost
    with HttpUsageProducer(url) as producer:
        producer.record("acme", "api_calls", 1, event_id="evt-1")
    assert fake.event_ids(0) == ["evt-1"]


@pytest.mark.integration
def test_http_blocked_and_rejected_events_surface_in_delivery_error(service: tuple[FakeService, str]) -> None:
    fake, url = service
    fake.outcomes.update({"evt-blocked": "blocked", "evt-rejected": "rejected"})
    errors: list[tuple[str, Exception]] = []
    producer = HttpUsageProducer(url, on_error=lambda i, e: errors.append((i, e)))
    producer.record("acme", "api_calls", 1, event_id="evt-ok")
    producer.record("acme", "api_calls", 1, event_id="evt-blocked")
    producer.record("acme", "api_calls", 1, event_id="evt-rejected")
    with pytest.raises(DeliveryError) as caught:
        producer.flush()
    assert caught.value.event_ids == ["evt-blocked", "evt-rejected"]
    blocked, rejected = (exc for _, exc in caught.value.failures)
    assert isinstance(blocked, RejectedEvent) and blocked.status == "blocked" and blocked.code == "quota_exceeded"
    assert isinstance(rejected, RejectedEvent) and rejected.status == "rejected" and rejected.code == "invalid_metric"
    assert [event_id for event_id, _ in errors] == ["evt-blocked", "evt-rejected"]
    assert len(fake.batches) == 1  # blocked is final: not retried
    producer.close()


@pytest.mark.integration
def test_http_gives_up_after_max_retries(service: tuple[FakeService, str]) -> None:
    fake, url = service
    fake.script.extend(["503"] * 10)
    producer = HttpUsageProducer(url, max_retries=2, backoff_seconds=0.01)
    event_id = producer.record("acme", "api_calls", 1)
    with pytest.raises(DeliveryError) as caught:
        producer.flush()
    assert caught.value.event_ids == [event_id]
    assert isinstance(caught.value.first_exception, HttpStatusError)
    assert caught.value.first_exception.status == 503
    assert len(fake.batches) == 3
    producer.close()


@pytest.mark.integration
def test_http_client_errors_are_not_retried(service: tuple[FakeService, str]) -> None:
    fake, url = service
    fake.script.extend([401])
    producer = HttpUsageProducer(url, backoff_seconds=0.01)
    event_id = producer.record("acme", "api_calls", 1)
    with pytest.raises(DeliveryError) as caught:
        producer.close()
    assert caught.value.event_ids == [event_id]
    assert len(fake.batches) == 1


@pytest.mark.integration
def test_http_context_manager_flushes_and_sends_api_key(service: tuple[FakeService, str]) -> None:
    fake, url = service
    with HttpUsageProducer(url + "/", linger_seconds=60, api_key="secret-key") as producer:
        event_id = producer.record("acme", "api_calls", 1)
        assert fake.batches == []
    assert fake.event_ids(0) == [event_id]
    assert fake.headers[0]["Authorization"] == "Bearer secret-key"
    assert fake.headers[0]["Content-Type"] == "application/json"
    with pytest.raises(RuntimeError):
        producer.record("acme", "api_calls", 1)


@pytest.mark.integration
def test_http_keeps_the_connection_alive(service: tuple[FakeService, str]) -> None:
    fake, url = service
    producer = HttpUsageProducer(url)
    producer.record("acme", "api_calls", 1)
    producer.flush()
    producer.record("acme", "api_calls", 1)
    producer.flush()
    producer.close()
    assert len(fake.client_ports) == 2 and fake.client_ports[0] == fake.client_ports[1]  # one connection


@pytest.mark.integration
def test_http_validation_raises_at_record(service: tuple[FakeService, str]) -> None:
    fake, url = service
    producer = HttpUsageProducer(url)
    with pytest.raises(ValidationError):
        producer.record("acme", "api_calls", Decimal("-1"))
    producer.close()
    assert fake.batches == []


@pytest.mark.integration
def test_http_close_timeout_reports_unsent_events() -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    errors: list[str] = []
    producer = HttpUsageProducer(f"http://127.0.0.1:{port}", max_retries=1000, backoff_seconds=0.05,
                                 on_error=lambda i, e: errors.append(i))
    event_id = producer.record("acme", "api_calls", 1)
    with pytest.raises(DeliveryError) as caught:
        producer.close(timeout=0.3)
    assert caught.value.event_ids == [event_id]
    assert errors == [event_id]


@pytest.mark.integration
def test_http_flush_timeout_raises_timeout_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    producer = HttpUsageProducer(f"http://127.0.0.1:{port}", max_retries=1000, backoff_seconds=0.05)
    producer.record("acme", "api_calls", 1)
    with pytest.raises(TimeoutError):
        producer.flush(timeout=0.2)
    with pytest.raises(DeliveryError):
        producer.close(timeout=0.1)


@pytest.mark.integration
def test_http_record_from_many_threads(service: tuple[FakeService, str]) -> None:
    fake, url = service
    producer = HttpUsageProducer(url, batch_size=50, linger_seconds=0.01)
    ids = record_from_threads(producer, threads=8, per_thread=100)
    producer.close()
    sent = [e["event_id"] for batch in fake.batches for e in batch]
    assert sorted(sent) == sorted(ids) and len(set(ids)) == 800
    assert all(len(batch) <= 50 for batch in fake.batches)


@pytest.mark.integration
def test_http_retries_when_a_kept_alive_connection_was_closed(service: tuple[FakeService, str]) -> None:
    fake, url = service
    producer = HttpUsageProducer(url, max_retries=0)  # the stale-connection retry is extra
    producer.record("acme", "api_calls", 1)
    producer.flush()
    fake.script.extend(["drop"])  # the server closed the idle connection
    event_id = producer.record("acme", "api_calls", 1)
    producer.flush()
    assert fake.event_ids(1) == fake.event_ids(2) == [event_id]
    producer.close()


wire_quantities = st.one_of(
    st.integers(min_value=0, max_value=10**20),
    st.decimals(min_value=0, max_value=10**20, allow_nan=False, allow_infinity=False, places=9),
    st.sampled_from([Decimal("1E+3"), Decimal("1E-7"), Decimal("2.500"), Decimal("0E-9"), Decimal("-0"),
                     Decimal("10"), Decimal("0.000000100"), "0.30", "7"]),
)


@pytest.mark.integration
@settings(max_examples=1500, deadline=None)
@given(quantity=wire_quantities,
       user_id=st.one_of(st.none(), st.sampled_from(["u-1", "x" * 128])),
       offset_hours=st.one_of(st.none(), st.integers(min_value=-12, max_value=12)),
       properties=st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
def test_an_encoded_event_is_its_wire_form_and_decodes_to_the_same_event(
        quantity: Any, user_id: str | None, offset_hours: int | None, properties: dict[str, int] | None) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=123456)
    timestamp = None if offset_hours is None else (now - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=offset_hours)))
    try:
        event = build_event("acme", "api_calls", quantity, user_id=user_id, timestamp=timestamp, properties=properties)
    except ValidationError:
        return  # too many digits for DECIMAL(38, 9), and the like: refused at record()
    raw = encode_event(event)
    assert raw == json.dumps(event.to_json_dict(), separators=(",", ":"), ensure_ascii=False).encode()
    assert decode_event_json(raw, now=now + timedelta(seconds=1)) == event
