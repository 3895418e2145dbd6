"""Cluster mode on a DuckLake: throughput with 1-3 nodes, commit latency, partition hand-over, billing.

    PYTHONPATH=src python -m bench.cluster [--events N] [--runs 3] [--billing-events 10000000]

Real parts: a throwaway PostgreSQL server (tests/support/postgres_server.py) holds each
lake's catalog, Parquet data goes to a temp dir, the Kafka broker is
KAFKA_BOOTSTRAP_SERVERS or the local script broker (stopped afterwards if this
started it). Prints one markdown table; every figure is a median of `--runs`.

- nodes (1, 2, 3): that many `usage-metering --lake ... consume` processes in
  one group on a fresh lake and topic (12 partitions), all assigned first;
  then a producer process sends N events (SDK, packed records); first produce
  -> the group's offsets reach the end. Baseline: one consumer on a DuckDB
  file, same way.
- 32-event commit: `Ingestor.ingest` of 32 new events on a lake against on a file.
- hand-over: a node claims 6 partitions after another node committed 100k
  events there (offsets, the key index's tail and the counters re-read); and a
  node's first open of a lake holding M events (its key index built from the lake).
- billing: `Metering.billing_report()` for 1,000 tenants over the billing
  dataset (bench/billing.py, 10M events) copied into a lake (cached in
  bench/.data with its PostgreSQL data directory), against the same file.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from usage_metering import Metering
from usage_metering.ingest import Ingestor
from usage_metering.kafka.topics import create_topics, end_offsets
from usage_metering.schemas import parse_event
from usage_metering.store import Database, Lake

from .common import Row, fmt_ms, fmt_rate, markdown_table, median

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(__file__).resolve().parent / ".data"
PARTITIONS = 12


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tests" / "support" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Lakes:
    """Fresh lakes on one PostgreSQL server: a catalog database and a data directory each."""

    def __init__(self, server: Any, directory: Path) -> None:
        self.server, self.directory = server, directory

    def new(self, name: str) -> Lake:
        database = f"{name}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.server.dsn, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{database}"')
        data = self.directory / database
        data.mkdir(parents=True)
        return Lake(f"postgres:host=127.0.0.1 port={self.server.port} user=postgres dbname={database}", str(data))


# -- nodes -------------------------------------------------------------------------------


def _produce(bootstrap: str, topic: str, count: int, seed: int, started_at: Synchronized[float]) -> None:
    from usage_metering.producer import UsageProducer

    producer = UsageProducer(bootstrap, topic)
    started_at.value = time.time()  # after the process's start-up: the clock starts at the first record
    for i in range(count):
        producer.record(
            f"tenant-{i % 200:03d}", ("api_calls", "storage_gb", "compute_ms")[i % 3], i % 17, event_id=f"{seed}-{i}"
        )
    producer.flush()
    producer.close()


def _group_offsets(bootstrap: str, group: str) -> dict[int, int]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        result = admin.list_group_offsets({group: None})
        return {tp.partition: meta.offset for tp, meta in result.get(group, {}).items() if meta.offset >= 0}
    except Exception:  # the coordinator may not be ready yet: not there yet
        return {}
    finally:
        admin.close()


def _consumer(bootstrap: str, topic: str, group: str, node_dir: Path, lake: Lake | None) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    store = ["--lake", lake.catalog, "--lake-data", str(lake.data_path)] if lake else []
    argv = [
        sys.executable,
        "-m",
        "usage_metering",
        *store,
        "--db",
        str(node_dir),
        "consume",
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
        "--group-id",
        group,
        "--maintenance-interval",
        "0",
    ]
    return subprocess.Popen(
        argv, env=env, stdout=(node_dir.parent / f"{node_dir.name}.log").open("wb"), stderr=subprocess.STDOUT
    )


def _assigned_everywhere(logs: list[Path], nodes: int) -> bool:
    """Every node logged an assignment and together they hold all partitions (the group is stable)."""
    latest: list[set[int]] = []
    for log in logs:
        lines = [line for line in log.read_text(errors="replace").splitlines() if "assigned [" in line]
        if not lines:
            return False
        latest.append({int(p) for p in lines[-1].split("assigned [", 1)[1].split("]", 1)[0].split(", ") if p})
    return (
        len(latest) == nodes
        and sum(len(s) for s in latest) == PARTITIONS
        and set().union(*latest) == set(range(PARTITIONS))
    )


def nodes_rate(bootstrap: str, lakes: Lakes | None, nodes: int, events: int, work: Path) -> float:
    """Events/s from the first produce to the group's offsets at the end, with `nodes` consumers."""
    topic, group = f"bench-cluster-{uuid.uuid4().hex[:8]}", f"bench-cluster-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, topic, PARTITIONS, dead_letter_topic=f"{topic}-dl")
    lake = lakes.new("nodes") if lakes else None
    run_dir = Path(tempfile.mkdtemp(dir=work))
    processes = [_consumer(bootstrap, topic, group, run_dir / f"node-{n}", lake) for n in range(nodes)]
    try:
        logs = [run_dir / f"node-{n}.log" for n in range(nodes)]
        deadline = time.monotonic() + 180
        while not _assigned_everywhere(logs, nodes):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"the nodes did not settle: {[log.read_text()[-500:] for log in logs]}")
            time.sleep(0.2)
        time.sleep(1.0)
        context = multiprocessing.get_context("spawn")
        started_at: Synchronized[float] = context.Value("d", 0.0)
        producer = context.Process(target=_produce, args=(bootstrap, topic, events, nodes, started_at))
        producer.start()
        producer.join()
        ends = end_offsets(bootstrap, topic)
        while _group_offsets(bootstrap, group) != ends:
            if time.time() - started_at.value > 900 or any(p.poll() is not None for p in processes):
                raise RuntimeError("the nodes did not catch up")
            time.sleep(0.05)
        return events / (time.time() - started_at.value)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=120)


# -- commit, hand-over --------------------------------------------------------------------


def _events(prefix: str, count: int, tenants: int = 200) -> list[Any]:
    now = datetime.now(timezone.utc)
    return [
        parse_event(
            {
                "tenant_id": f"t{i % tenants}",
                "metric": "calls",
                "quantity": i % 9,
                "user_id": f"u{i % 7}",
                "event_id": f"{prefix}-{i}",
            },
            now=now,
        )
        for i in range(count)
    ]


def commit_ms(database: Database, commits: int = 200) -> float:
    ingestor = Ingestor(database)
    batch = _events(uuid.uuid4().hex[:6], 32 * commits)
    seconds = []
    for n in range(commits):
        started = time.perf_counter()
        ingestor.ingest(batch[n * 32 : (n + 1) * 32])
        seconds.append(time.perf_counter() - started)
    return median(seconds)


def hand_over(lakes: Lakes, stored: int, work: Path) -> tuple[float, float]:
    """(seconds for a new node's first open: key index built from a lake of `stored` events,
    seconds for a claim of 6 partitions after the old owner committed 100k more)."""
    lake = lakes.new("handover")
    with Metering.open(work / f"old-{uuid.uuid4().hex[:6]}", lake=lake) as old:
        for start in range(0, stored, 50_000):
            old.ingestor.ingest(_events(f"h{start}", 50_000)[: min(50_000, stored - start)])
    started = time.perf_counter()
    new = Metering.open(work / f"new-{uuid.uuid4().hex[:6]}", lake=lake)
    first_open = time.perf_counter() - started
    try:
        with Metering.open(work / f"old2-{uuid.uuid4().hex[:6]}", lake=lake) as old:
            old.ingestor.claim("t", range(6))
            for start in range(0, 100_000, 50_000):
                old.ingestor.ingest(_events(f"late{start}", 50_000), offsets={("t", p): start + 1 for p in range(6)})
        started = time.perf_counter()
        new.ingestor.claim("t", list(range(6)))
        return first_open, time.perf_counter() - started
    finally:
        new.close()


# -- billing ------------------------------------------------------------------------------


def billing_lake(billing_file: Path, postgres_module: Any) -> tuple[Any, Lake]:
    """A PostgreSQL server whose catalog holds the billing dataset as a lake (copied once from the file)."""
    key = billing_file.stem
    home = DATA_DIR / f"lake-{key}"
    built = home / "built"
    server = postgres_module.PostgresServer(home / "pg")
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o755)
    server.start()
    lake = Lake(f"postgres:host=127.0.0.1 port={server.port} user=postgres dbname=lake", str(home / "data"))
    if not built.exists():
        with psycopg.connect(server.dsn, autocommit=True) as connection:
            connection.execute("DROP DATABASE IF EXISTS lake")
            connection.execute("CREATE DATABASE lake")
        shutil.rmtree(home / "data", ignore_errors=True)
        database = Database(home / "node", lake=lake)
        try:
            cursor = database.cursor()
            cursor.execute(f"ATTACH '{billing_file}' AS source (READ_ONLY)")
            tables = [
                t
                for (t,) in cursor.execute(
                    "SELECT table_name FROM duckdb_tables()"
                    " WHERE database_name = 'source' AND table_name <> 'schema_migrations'"
                ).fetchall()
            ]
            cursor.execute("BEGIN TRANSACTION")
            for table in tables:
                cursor.execute(f"DELETE FROM lake.{table}")
                cursor.execute(f"INSERT INTO lake.{table} SELECT * FROM source.{table}")
            cursor.execute("COMMIT")
            cursor.execute("DETACH source")
        finally:
            database.close()
        built.touch()
    return server, lake


def billing_seconds(metering: Metering, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        metering.billing_report()
        times.append(time.perf_counter() - started)
    return median(times)


# -- main ---------------------------------------------------------------------------------


def run(args: argparse.Namespace, bootstrap: str, postgres_module: Any) -> list[Row]:
    rows: list[Row] = []
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    server = postgres_module.PostgresServer.temporary().start()
    lakes = Lakes(server, work / "lakes")
    try:
        file_rates = [nodes_rate(bootstrap, None, 1, args.events, work) for _ in range(args.runs)]
        print(f"  1 consumer on a file: {median(file_rates):,.0f} ev/s", file=sys.stderr)
        for nodes in (1, 2, 3):
            rates = [nodes_rate(bootstrap, lakes, nodes, args.events, work) for _ in range(args.runs)]
            print(f"  {nodes} node(s) on a lake: {median(rates):,.0f} ev/s ({rates})", file=sys.stderr)
            rows.append(
                Row(
                    f"cluster: {nodes} consume node(s) on a lake, {args.events:,} events",
                    fmt_rate(median(rates), "ev/s"),
                    baseline=fmt_rate(median(file_rates), "ev/s") + " (1 consumer on a file)",
                    ratio=f"{median(rates) / median(file_rates):.2f}x",
                    notes=f"runs: {', '.join(f'{r:,.0f}' for r in rates)}; "
                    "2 cores shared with broker, PostgreSQL, producer",
                )
            )
        on_file = Database(work / "commit.duckdb")
        on_lake = Database(work / "commit-node", lake=lakes.new("commit"))
        try:
            file_ms = [commit_ms(on_file) for _ in range(args.runs)]
            lake_ms = [commit_ms(on_lake) for _ in range(args.runs)]
        finally:
            on_file.close()
            on_lake.close()
        rows.append(
            Row(
                "cluster: 32-event commit on a lake",
                fmt_ms(median(lake_ms)),
                baseline=fmt_ms(median(file_ms)) + " (on a DuckDB file)",
                ratio=f"{median(lake_ms) / median(file_ms):.1f}x slower",
            )
        )
        for stored in args.handover_sizes:
            measured = [hand_over(lakes, stored, work) for _ in range(args.runs)]
            rows.append(
                Row(
                    f"cluster: hand-over, lake holding {stored:,} events",
                    f"claim of 6 partitions {median([m[1] for m in measured]):.2f} s",
                    baseline=f"first open (key index from the lake) {median([m[0] for m in measured]):.2f} s",
                    notes="claim after the old owner committed 100k events: offsets, key tail, counters re-read",
                )
            )
    finally:
        server.remove()
        shutil.rmtree(work, ignore_errors=True)
    if args.billing_events:
        from .billing import dataset

        billing_file, how = dataset(args.billing_events, 1000)
        lake_server, lake = billing_lake(billing_file, postgres_module)
        try:
            with Metering.open(billing_file, read_only=True) as file_metering:
                file_s = billing_seconds(file_metering, max(args.runs, 5))
            with Metering.open(DATA_DIR / "billing-reader", lake=lake, read_only=True) as lake_metering:
                lake_s = billing_seconds(lake_metering, max(args.runs, 5))
        finally:
            lake_server.stop()
        rows.append(
            Row(
                f"cluster: billing report, 1,000 tenants, {args.billing_events:,} events, from the lake",
                fmt_ms(lake_s),
                baseline=fmt_ms(file_s) + " (the same data in a DuckDB file)",
                ratio=f"{lake_s / file_s:.1f}x slower",
                notes=f"file {how}; lake cached in bench/.data",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--handover-sizes", type=lambda text: [int(x) for x in text.split(",")], default=[1_000_000])
    parser.add_argument("--billing-events", type=int, default=10_000_000, help="0 = skip the billing row")
    args = parser.parse_args(argv)
    broker = _load("kafka_broker")
    postgres_module = _load("postgres_server")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    started_broker = not bootstrap and not broker._local_broker_running()
    try:
        rows = run(args, bootstrap or str(broker.find_bootstrap_servers()), postgres_module)
    finally:
        if started_broker:
            broker.stop_local_broker()
    table = markdown_table(rows)
    print(table)
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / "cluster.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
