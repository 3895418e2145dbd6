"""HTTP benchmarks against a real server process (`run_node`, fresh DuckDB file, no demo).

Named http_api, not http, so `bench/` on sys.path could never shadow the stdlib `http`.
The server runs in its own process on a free 127.0.0.1 port; the load generator
runs in another (see loadgen.py), so client and server CPU are measured apart.
Baseline for every HTTP number: GET /healthz on the same server at the same
concurrency, i.e. what Starlette + uvicorn cost with no metering work at all.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from usage_metering import MeteringClient

from .common import Row, fmt_ms, fmt_rate, fmt_ratio, median, verdict
from .loadgen import LoadResult, build_request, run_in_process

HOST = "127.0.0.1"
TENANTS = 100
METRICS = ("api_calls", "storage_gb", "active_users", "compute_minutes")

SERVER_CODE = """
import sys
from pathlib import Path
from usage_metering.node.config import HttpOptions, NodeConfig
from usage_metering.node.server import run_node
db, port, profile_out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if profile_out:
    import cProfile
    profiler = cProfile.Profile()
    profiler.enable()
try:
    run_node(NodeConfig(Path(db), http=HttpOptions("127.0.0.1", port), log_level="warning"))
finally:
    if profile_out:
        profiler.disable()
        profiler.dump_stats(profile_out)
"""


@dataclass
class Server:
    pid: int
    port: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _client(port: int) -> MeteringClient:
    return MeteringClient(f"http://{HOST}:{port}", timeout=30)


@contextmanager
def running_server(db_path: Path, profile_out: str = "") -> Iterator[Server]:
    """Start the server, wait (bounded) for /healthz, and always stop it with SIGINT (graceful)."""
    port = free_port()
    import usage_metering  # the server runs the same code the bench imported (src/ or a snapshot)

    env = {**os.environ, "PYTHONPATH": str(Path(usage_metering.__file__).resolve().parent.parent)}
    process = subprocess.Popen([sys.executable, "-c", SERVER_CODE, str(db_path), str(port), profile_out], env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with _client(port) as client:
                    if client.http.get("/healthz").status_code == 200:
                        break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
        yield Server(process.pid, port)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- request builders (top-level so the spawned load process can unpickle them) ------------


def _event(seed: int, i: int, now: datetime) -> dict[str, object]:
    event: dict[str, object] = {
        "tenant_id": f"tenant-{(i * 7919 + seed) % TENANTS:04d}",
        "metric": METRICS[i % len(METRICS)],
        "quantity": (i % 997) + 1,
        "event_id": f"http-{seed}-{i:09d}",
        "timestamp": (now - timedelta(seconds=i % 3600)).isoformat().replace("+00:00", "Z"),
    }
    if i % 3:
        event["user_id"] = f"user-{i % 1000}"
    return event


def build_single_events(count: int, seed: int) -> list[bytes]:
    now = datetime.now(timezone.utc)
    return [build_request("POST", "/api/events", json.dumps(_event(seed, i, now)).encode()) for i in range(count)]


def build_batches(count: int, size: int, seed: int) -> list[bytes]:
    now = datetime.now(timezone.utc)
    return [
        build_request(
            "POST",
            "/api/events/batch",
            json.dumps({"events": [_event(seed, b * size + i, now) for i in range(size)]}).encode(),
        )
        for b in range(count)
    ]


def build_gets(paths: tuple[str, ...]) -> list[bytes]:
    return [build_request("GET", p) for p in paths]


QUOTA_PATHS = tuple(f"/api/quota/tenant-{t:04d}/{m}" for t in range(TENANTS) for m in METRICS)

PLAN = {
    "plan_id": "bench-pro",
    "name": "Bench Pro",
    "currency": "USD",
    "base_fee": "49.00",
    "metrics": [
        {"metric": "api_calls", "included": 10_000_000, "policy": "block"},
        {"metric": "storage_gb", "included": 100_000, "policy": "charge", "unit_price": "0.10"},
        {"metric": "active_users", "included": 50, "policy": "notify"},
        {"metric": "compute_minutes", "included": 1000, "policy": "charge", "unit_price": "0.02"},
    ],
}


def setup_catalog(port: int) -> None:
    """A plan with a BLOCK quota (so ingest runs the quota check) and TENANTS tenants on it."""
    metrics = {"api_calls": "SUM", "storage_gb": "MAX", "active_users": "UNIQUE_COUNT", "compute_minutes": "SUM"}
    with _client(port) as client:
        client.save_plan(PLAN)
        for name, aggregation in metrics.items():
            client.define_metric({"name": name, "aggregation": aggregation})
        for t in range(TENANTS):
            client.save_tenant({"tenant_id": f"tenant-{t:04d}", "name": f"T{t}", "plan_id": PLAN["plan_id"]})


# -- running and reporting -----------------------------------------------------------------


def _load(
    server: Server, build: Callable[[], list[bytes]], connections: int, total: int, max_seconds: float, warmup: int
) -> LoadResult:
    result = run_in_process(
        build,
        host=HOST,
        port=server.port,
        connections=connections,
        total=total,
        max_seconds=max_seconds,
        warmup=warmup,
        server_pid=server.pid,
    )
    bad = {s: n for s, n in result.statuses.items() if s >= 300}
    if bad or result.errors:
        raise RuntimeError(f"unexpected responses {bad}, errors {result.errors}: {result.error_sample}")
    return result


def _cpu_text(results: list[LoadResult]) -> str:
    loop = median([r.server_loop_cpu_s / r.seconds for r in results])
    other = median([r.server_other_cpu_s / r.seconds for r in results])
    client = median([r.client_cpu_share for r in results])
    busy = median([r.machine_busy_s / r.seconds for r in results])
    return (
        f"server {loop + other:.2f} cores (loop {loop:.2f} + threads {other:.2f}) / client {client:.2f}; "
        f"whole machine busy {busy:.2f} of 2"
    )


def _runs(results: list[LoadResult]) -> str:
    return ", ".join(f"{r.rate:,.0f} ({r.p99_s * 1000:.1f} ms)" for r in results)


def _summary(results: list[LoadResult], per_request: int = 1) -> tuple[float, float, float]:
    """Median over runs of: items/s, p50 and p99 seconds."""
    return (
        median([r.rate * per_request for r in results]),
        median([r.p50_s for r in results]),
        median([r.p99_s for r in results]),
    )


@dataclass
class HttpSizes:
    batches: int  # 1,000-event batches per run
    singles: int  # single-event POSTs per run
    quotas: int  # quota GETs per run
    health: int  # /healthz GETs per run (baseline)
    max_seconds: float  # cap per run
    repeats: int


def bench_http(sizes: HttpSizes, sections: set[str], profile_out: str = "") -> list[Row]:
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-http-") as tmp,
        running_server(Path(tmp) / "http.duckdb", profile_out) as server,
    ):
        setup_catalog(server.port)
        cap = sizes.max_seconds
        health_build = functools.partial(build_gets, ("/healthz",))

        def health(connections: int) -> list[LoadResult]:
            return [_load(server, health_build, connections, sizes.health, cap, 200) for _ in range(sizes.repeats)]

        single_rate = None
        if "single" in sections or "batch" in sections:
            single_runs = [
                _load(
                    server,
                    functools.partial(build_single_events, sizes.singles + 300, 1000 + rep),
                    32,
                    sizes.singles,
                    cap,
                    300,
                )
                for rep in range(sizes.repeats)
            ]
            single_rate, p50, p99 = _summary(single_runs)
            if "single" in sections:
                base, *_ = _summary(health(32))
                rows.append(
                    Row(
                        "HTTP single-event POST /api/events, 32 conns",
                        fmt_rate(single_rate, "req/s"),
                        fmt_rate(base, "req/s") + " (GET /healthz)",
                        f"{single_rate / base:.2f} of healthz",
                        ">= 5,000 req/s, p99 < 20 ms",
                        verdict(single_rate >= 5000 and p99 < 0.020),
                        fmt_ms(p50),
                        fmt_ms(p99),
                        _cpu_text(single_runs),
                        f"{sizes.singles:,} req/run; runs req/s (p99): {_runs(single_runs)}",
                    )
                )
        if "batch" in sections:
            runs = [
                _load(
                    server,
                    functools.partial(build_batches, sizes.batches + 3, 1000, 2000 + rep),
                    4,
                    sizes.batches,
                    cap,
                    3,
                )
                for rep in range(sizes.repeats)
            ]
            rate, p50, p99 = _summary(runs, per_request=1000)
            rows.append(
                Row(
                    "HTTP batch POST /api/events/batch (1,000 ev/req), 4 conns",
                    fmt_rate(rate, "ev/s"),
                    fmt_rate(single_rate or 0, "ev/s") + " (single-event POSTs)",
                    fmt_ratio(rate, single_rate or 0),
                    ">= 100,000 ev/s (item 1's batch target)",
                    verdict(rate >= 100_000),
                    fmt_ms(p50) + " /batch",
                    fmt_ms(p99) + " /batch",
                    _cpu_text(runs),
                    f"{sizes.batches} batches/run; runs: {', '.join(f'{r.rate * 1000:,.0f}' for r in runs)}",
                )
            )
        if "quota" in sections:
            _load(server, functools.partial(build_single_events, 2000, 3000), 8, 2000, cap, 0)  # usage to report
            quota_build = functools.partial(build_gets, QUOTA_PATHS)
            runs = [_load(server, quota_build, 16, sizes.quotas, cap, 200) for _ in range(sizes.repeats)]
            rate, p50, p99 = _summary(runs)
            base, *_ = _summary(health(16))
            rows.append(
                Row(
                    "HTTP quota GET /api/quota/{tenant}/{metric}, 16 conns",
                    fmt_rate(rate, "req/s"),
                    fmt_rate(base, "req/s") + " (GET /healthz)",
                    f"{rate / base:.2f} of healthz",
                    ">= 5,000 req/s, p99 < 5 ms",
                    verdict(rate >= 5000 and p99 < 0.005),
                    fmt_ms(p50),
                    fmt_ms(p99),
                    _cpu_text(runs),
                    f"{sizes.quotas:,} req/run; runs req/s (p99): {_runs(runs)}",
                )
            )
    return rows


def wrk_cross_check(seconds: int = 5) -> str | None:
    """If `wrk` is installed, its GET /api/quota numbers as an independent check (else None)."""
    import shutil

    wrk = shutil.which("wrk")
    if not wrk:
        return None
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp, running_server(Path(tmp) / "w.duckdb") as server:
        setup_catalog(server.port)
        with _client(server.port) as client:
            client.record({"tenant_id": "tenant-0000", "metric": "api_calls", "quantity": 1})
        out = subprocess.run(
            [
                wrk,
                "-t1",
                "-c16",
                f"-d{seconds}s",
                "--latency",
                f"http://{HOST}:{server.port}/api/quota/tenant-0000/api_calls",
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        )
        return out.stdout
