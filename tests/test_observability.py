"""Observability end to end: /metrics, /readyz, request ids and JSON logs on real servers.

The counting tests post known events to a real server process on a real
DuckDB file and compare /metrics (parsed with prometheus_client's own parser)
before and after, so they hold whatever ran before them on the same server.
The hook tests (Kafka lag, readiness checks) serve an app with uvicorn on a
real socket in this process, because only code in the process can register a hook.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from support.nodes import ServerProcess, free_port, request, serving
from usage_metering.api.app import create_app
from usage_metering.api.metrics import PrometheusMetrics
from usage_metering.metering import Metering
from usage_metering.schemas import EventStatus
from usage_metering.store.dead_letters import DeadLetter

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

PLAN = {
    "name": "Observed",
    "currency": "USD",
    "base_fee": "0",
    "metrics": [{"metric": "api_calls", "included": 10, "policy": "block"}],
}


def scrape(url: str) -> Samples:
    status, headers, text = request("GET", f"{url}/metrics")
    assert status == 200, text
    assert headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def event(event_id: str, quantity: Any, **extra: Any) -> dict[str, Any]:
    return {"tenant_id": "obs_tenant", "metric": "api_calls", "quantity": quantity, "event_id": event_id, **extra}


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("observability")
    yield from serving(ServerProcess(directory / "metering.duckdb", demo=False, options={"log_format": "json"}))


def test_metrics_count_exactly_what_happened(json_server: ServerProcess) -> None:
    assert json_server.request("PUT", "/api/plans/observed", json_body=PLAN)[0] == 200
    status, _, body = json_server.request("PUT", "/api/tenants/obs_tenant", json_body={"plan_id": "observed"})
    assert status == 200, body
    before = scrape(json_server.url)

    batch = [
        event("e1", 4),
        event("e2", 5),
        event("e1", 4),  # duplicate
        event("e3", 5),  # 9 + 5 > 10: blocked
        event("bad-q", -1),  # rejected: invalid_quantity
        event("bad-f", 1, colour="red"),  # rejected: unknown_field
    ]
    status, _, body = json_server.request("POST", "/api/events/batch", json_body={"events": batch})
    assert status == 200, body
    assert [r["status"] for r in body["results"]] == ["recorded", "recorded", "duplicate", "blocked", "rejected", "rejected"]
    assert [r["error"]["code"] for r in body["results"][4:]] == ["invalid_quantity", "unknown_field"]
    quota_status, _, quota = json_server.request("GET", "/api/quota/obs_tenant/api_calls")
    assert (quota_status, quota["allowed"]) == (200, True)  # 9 of 10 used
    assert json_server.request("POST", "/api/events", json_body=event("e4", 1))[0] == 200  # 10 of 10
    assert json_server.request("POST", "/api/events", json_body=event("e5", 1))[0] == 429
    quota_status, _, quota = json_server.request("GET", "/api/quota/obs_tenant/api_calls")
    assert (quota_status, quota["allowed"]) == (200, False)

    after = scrape(json_server.url)
    assert delta(before, after, "usage_metering_events_total", status="recorded") == 3
    assert delta(before, after, "usage_metering_events_total", status="duplicate") == 1
    assert delta(before, after, "usage_metering_events_total", status="blocked") == 2
    assert delta(before, after, "usage_metering_events_rejected_total", reason="invalid_quantity") == 1
    assert delta(before, after, "usage_metering_events_rejected_total", reason="unknown_field") == 1
    assert delta(before, after, "usage_metering_quota_decisions_total", outcome="allowed") == 1
    assert delta(before, after, "usage_metering_quota_decisions_total", outcome="denied") == 1
    assert delta(before, after, "usage_metering_quota_decisions_total", outcome="blocked") == 2
    assert delta(before, after, "usage_metering_dead_letters_total") == 0  # embedded mode has none
    batches = delta(before, after, "usage_metering_ingest_batch_size_count")
    assert 3 <= batches <= 6  # the batch request is one group or more; each single event one more
    assert delta(before, after, "usage_metering_ingest_batch_size_sum") == 6  # every valid event, once
    assert delta(before, after, "usage_metering_ingest_commit_seconds_count") == batches
    assert delta(before, after, "usage_metering_ingest_commit_seconds_sum") > 0
    assert value(after, "usage_metering_database_size_bytes") > 0
    assert not any(name == "usage_metering_consumer_lag" for name, _ in after)  # no Kafka lag source: no series


def test_readyz_and_healthz(json_server: ServerProcess) -> None:
    assert json_server.request("GET", "/readyz")[::2] == (200, {"status": "ready"})
    assert json_server.request("GET", "/healthz")[::2] == (200, {"status": "ok"})


def test_request_id_is_echoed_or_generated(json_server: ServerProcess) -> None:
    _, headers, _ = json_server.request("GET", "/healthz", headers={"X-Request-ID": "client-id.42"})
    assert headers["x-request-id"] == "client-id.42"
    _, headers, _ = json_server.request("GET", "/api/quota/nobody/api_calls")  # a 404 gets one too
    assert re.fullmatch(r"[0-9a-f]{16}", headers["x-request-id"])
    _, headers, _ = json_server.request("GET", "/healthz", headers={"X-Request-ID": "not sane\"id"})
    assert headers["x-request-id"] != 'not sane"id'
    assert re.fullmatch(r"[0-9a-f]{16}", headers["x-request-id"])


def _wait_for_line(path: Path, needle: str, timeout: float = 10.0) -> None:
    """The access line is written just after the response is sent; give it a moment."""
    deadline = time.monotonic() + timeout
    while needle not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{needle!r} never logged:\n{path.read_text(errors='replace')}"
        time.sleep(0.05)


def test_json_logs_every_line_with_request_ids(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "metering.duckdb", demo=True, options={"log_format": "json"})
    try:
        server.start()
        status, headers, _ = server.request(
            "POST", "/api/events", json_body={"tenant_id": "t_log", "metric": "m", "quantity": 1},
            headers={"X-Request-ID": "log-test-7"},
        )
        assert (status, headers["x-request-id"]) == (200, "log-test-7")
        _wait_for_line(server.log_path, "log-test-7")
        server.stop()
        lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    finally:
        server.close()

    records = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    for record in records:
        assert {"timestamp", "level", "logger", "message", "request_id"} <= record.keys()
        assert record["timestamp"].endswith("Z")
        datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
    loggers = Counter(record["logger"] for record in records)
    assert loggers["uvicorn.error"] >= 2  # uvicorn's own start and shutdown lines went through our handler
    access = [r for r in records if r["logger"] == "usage_metering.access" and r["request_id"] == "log-test-7"]
    assert len(access) == 1
    assert access[0]["method"] == "POST"
    assert access[0]["path"] == "/api/events"
    assert access[0]["status"] == 200
    assert access[0]["duration_ms"] > 0
    # The startup /healthz polls were logged with ids of their own.
    assert any(r["logger"] == "usage_metering.access" and r["path"] == "/healthz" and r["request_id"] for r in records)


# -- hooks for Kafka mode: in-process app on a real socket ------------------------------------


class ThreadedServer:
    """uvicorn serving `app` on 127.0.0.1:`port` from a thread (signal handlers stay with pytest)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()


def test_readiness_and_lag_hooks(tmp_path: Path) -> None:
    metering = Metering.open(tmp_path / "metering.duckdb")
    app = create_app(metering)  # closes the metering on shutdown
    assigned = threading.Event()
    app.state.observability.add_readiness_check("kafka_partitions_assigned", assigned.is_set)
    app.state.observability.set_lag_source(lambda: {2: 0, 0: 7})
    with ThreadedServer(app) as server:
        assert request("GET", f"{server.url}/readyz")[::2] == (
            503, {"status": "waiting", "waiting_for": ["kafka_partitions_assigned"]}
        )
        assigned.set()
        assert request("GET", f"{server.url}/readyz")[0] == 200
        samples = scrape(server.url)
        assert value(samples, "usage_metering_consumer_lag", partition="0") == 7
        assert (("usage_metering_consumer_lag", frozenset({("partition", "2")})) in samples)
        metering.ingestor.stop()  # the writer is gone: not ready any more
        assert request("GET", f"{server.url}/readyz")[::2] == (503, {"status": "waiting", "waiting_for": ["ingestor"]})


class ExplodingObserver(PrometheusMetrics):
    def on_batch(self, size: int, seconds: float, outcomes: Counter[str]) -> None:
        raise RuntimeError("observer bug")


def test_dead_letters_counted_and_observer_errors_never_fail_a_commit(tmp_path: Path) -> None:
    with Metering.open(tmp_path / "metering.duckdb") as metering:
        metrics = PrometheusMetrics(metering.database.path)
        metering.node.observe(metrics)
        letter = DeadLetter("kafka", b"{not json", "invalid_json: not valid JSON", "usage-events", 0, 41)
        metering.ingestor.ingest([], offsets={("usage-events", 0): 42}, dead_letters=[letter, letter])
        text = metrics.render()[0].decode()
        assert "usage_metering_dead_letters_total 2.0" in text
        assert "usage_metering_ingest_batch_size_count 1.0" in text

        metering.node.observe(ExplodingObserver(metering.database.path))
        result = metering.record({"tenant_id": "t_boom", "metric": "m", "quantity": 1, "event_id": "x"})
        assert result.status == EventStatus.RECORDED
        assert metering.usage("t_boom", "m").value == 1
