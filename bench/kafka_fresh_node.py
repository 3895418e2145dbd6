"""A fresh Kafka-mode node against one SDK producer: the case users meet first.

Per run, on a fresh topic:

1. one SDK producer *process* (`UsageProducer`, SDK defaults) publishes N realistic events
   alone (1,000 tenants, 50 users each, 3 metrics, random UUID event ids, timestamps in the
   last minutes); `record()` of the first event -> `flush()` done is its rate, the baseline;
2. then a real `usage-metering --db <fresh file> serve --kafka-bootstrap-servers ... --kafka-topic
   <topic>` subprocess starts on that topic, as users start it (its 1,000 tenants registered
   in the file first, so `GET /api/usage` answers for them); it is timed from `/readyz`
   answering 200 to `usage_metering_events_total{status="recorded"}` on `/metrics` reaching
   N (the counter moves after each commit, when the events are visible to reads). The usage
   totals of every tenant (`GET /api/usage/<tenant>`) are then checked to add up to N.

Used by `bench.kafka_pipeline` (its "fresh serve node" row); its `--profile-node FILE` attaches
`py-spy record` (if installed in the venv; not a dependency) to the node for the measured window.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from usage_metering.kafka.topics import create_topics
from usage_metering.metering import Metering
from usage_metering.producer import UsageProducer

REPO_ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 12  # what `kafka init` makes by default
TENANT_COUNT = 1000
USERS_PER_TENANT = 50
METRICS = ("api_calls", "storage_gb", "compute_ms")
RECENT_SECONDS = 600  # event timestamps fall in the last ten minutes
READY_TIMEOUT_SECONDS = 120.0
CONSUME_TIMEOUT_SECONDS = 600.0
POLL_SECONDS = 0.02
_RECORDED = re.compile(r'^usage_metering_events_total\{status="recorded"\} (\S+)$', re.MULTILINE)


@dataclass(frozen=True)
class FreshNodeRun:
    producer_rate: float  # events/s of the lone producer process
    node_rate: float  # events/s of the fresh node, /readyz -> the last event visible
    ready_seconds: float  # process start -> /readyz 200 (not in the node's rate)


def tenant_ids() -> list[str]:
    return [f"tenant-{i:04d}" for i in range(TENANT_COUNT)]


def _realistic_inputs(count: int, seed: int) -> list[tuple[str, str, Decimal, str, str, datetime]]:
    rng = random.Random(seed)
    tenants = tenant_ids()
    now = datetime.now(timezone.utc)
    return [
        (
            tenant := tenants[rng.randrange(TENANT_COUNT)],
            METRICS[rng.randrange(len(METRICS))],
            Decimal(rng.randint(1, 100_000)) / 100,
            f"{tenant}-user-{rng.randrange(USERS_PER_TENANT):02d}",
            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            now - timedelta(seconds=rng.random() * RECENT_SECONDS),
        )
        for _ in range(count)
    ]


def _produce_alone(bootstrap: str, topic: str, count: int, seed: int, seconds: Any) -> None:
    """In a process of its own: the SDK with its defaults records `count` events and flushes."""
    inputs = _realistic_inputs(count, seed)  # the caller's values are made before the clock starts
    producer = UsageProducer(bootstrap, topic)
    started = time.perf_counter()
    for tenant, metric, quantity, user, event_id, timestamp in inputs:
        producer.record(tenant, metric, quantity, user_id=user, event_id=event_id, timestamp=timestamp)
    producer.flush()
    seconds.value = time.perf_counter() - started
    producer.close()


def produce_alone(bootstrap: str, topic: str, count: int, seed: int) -> float:
    """Seconds the lone producer process took (first record() -> flushed)."""
    ctx = multiprocessing.get_context("spawn")
    seconds = ctx.Value("d", 0.0)
    proc = ctx.Process(target=_produce_alone, args=(bootstrap, topic, count, seed, seconds))
    proc.start()
    proc.join()
    if proc.exitcode != 0 or seconds.value <= 0:
        raise RuntimeError(f"producer process failed ({proc.exitcode})")
    return float(seconds.value)


def register_tenants(db_path: Path) -> None:
    """The fresh file's tenants, as a user registers them before sending usage."""
    metering = Metering.open(db_path)
    try:
        for tenant in tenant_ids():
            metering.save_tenant({"tenant_id": tenant})
    finally:
        metering.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(db_path: Path, bootstrap: str, topic: str, port: int) -> list[str]:
    """`usage-metering serve` in Kafka mode, with the options a user gives (everything else default)."""
    return [
        sys.executable,
        "-m",
        "usage_metering",
        "--db",
        str(db_path),
        "serve",
        "--port",
        str(port),
        "--kafka-bootstrap-servers",
        bootstrap,
        "--kafka-topic",
        topic,
    ]


def _profiler(pid: int, profile_to: Path | None) -> subprocess.Popen[bytes] | None:
    """`py-spy record` attached to the node (all threads, idle included), if asked for and installed."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if profile_to is None or not py_spy.exists():
        return None
    command = [str(py_spy), "record", "--pid", str(pid), "--threads", "--idle", "--rate", "50", "--format"]
    return subprocess.Popen([*command, "raw", "--output", str(profile_to)], stdout=subprocess.DEVNULL)


def recorded_events(http: httpx.Client) -> int:
    """The node's `usage_metering_events_total{status="recorded"}` (0 before its first commit)."""
    match = _RECORDED.search(http.get("/metrics").text)
    return int(float(match.group(1))) if match else 0


def _wait_ready(http: httpx.Client, process: subprocess.Popen[bytes]) -> float:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        try:
            if http.get("/readyz").status_code == 200:
                return time.perf_counter()
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"serve did not get ready (exit code {process.poll()})")
        time.sleep(POLL_SECONDS)


def _wait_recorded(http: httpx.Client, process: subprocess.Popen[bytes], count: int) -> float:
    deadline = time.monotonic() + CONSUME_TIMEOUT_SECONDS
    while recorded_events(http) < count:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"serve did not record {count:,} events (exit code {process.poll()})")
        time.sleep(POLL_SECONDS)
    return time.perf_counter()


def usage_event_count(http: httpx.Client) -> int:
    """Events counted in every tenant's usage, as `GET /api/usage/<tenant>` answers."""
    total = 0
    for tenant in tenant_ids():
        answer = http.get(f"/api/usage/{tenant}")
        answer.raise_for_status()
        total += sum(int(summary["event_count"]) for summary in answer.json()["metrics"])
    return total


def fresh_node_consume(
    bootstrap: str, topic: str, count: int, work_dir: Path, profile_to: Path | None = None
) -> tuple[float, float]:
    """A fresh `serve` node on `topic` (holding `count` events): (seconds /readyz -> all visible, start -> ready)."""
    db_path = work_dir / f"fresh-{uuid.uuid4().hex[:8]}.duckdb"
    register_tenants(db_path)
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"), PYTHONUNBUFFERED="1")
    with open(work_dir / f"{db_path.stem}.log", "wb") as log:
        launched = time.perf_counter()
        command = serve_command(db_path, bootstrap, topic, port)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                ready = _wait_ready(http, process)
                profiler = _profiler(process.pid, profile_to)  # the measured window only
                done = _wait_recorded(http, process, count)
                if profiler is not None:
                    profiler.send_signal(signal.SIGINT)  # py-spy writes its file
                    profiler.wait(timeout=60)
                visible = usage_event_count(http)
                if visible != count:
                    raise RuntimeError(f"GET /api/usage counts {visible:,} events, {count:,} were sent")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    return done - ready, ready - launched


def fresh_node_run(
    bootstrap: str, count: int, work_dir: Path, seed: int, profile_to: Path | None = None
) -> FreshNodeRun:
    """One run: a fresh topic, the producer alone, then a fresh node consuming what it published."""
    topic = f"bench-fresh-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, topic, PARTITIONS)
    produce_seconds = produce_alone(bootstrap, topic, count, seed)
    consume_seconds, ready_seconds = fresh_node_consume(bootstrap, topic, count, work_dir, profile_to)
    return FreshNodeRun(count / produce_seconds, count / consume_seconds, ready_seconds)
