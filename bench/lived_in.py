"""Stores that lived through the real ingest path, and what ingest costs on them.

`fill` grows a store the way users do: 10k-event chunks of event JSON through
`Metering.record_events`, with the writer thread, the rollup compactor, day
sealing, counter checkpoints and key-index runs all running as they do in a
node. The store's clock is simulated and moves one day per million events
(`EVENTS_PER_DAY`), so a 20M store holds 20 days of history, sealed as it went.
At each requested size the node is stopped (a restart, as in production) and
the store's files are copied into bench/.data as that size's cache, with a
sidecar JSON holding its clock and the fill-rate curve so far. A larger size
continues from the largest cached one.

Two traffic shapes, 1,000 tenants x 50 users x 3 metrics, tenants and users
drawn at random, event ids random UUIDs as SDKs send them:

- live: each chunk's timestamps fall in the clock time since the last chunk
  (about 14 minutes at one day per million events);
- backfill: timestamps spread over the last `BACKFILL_DAYS` days.

`measure` (run in a fresh interpreter on a copy of the cached store, so the
cache never changes) times re-open, then records three warm-up chunks and times
32-event group commits, validate+ingest and ingest alone in the store's own
shape and clock, then the same-run ceilings on
the same file: DuckDB appending the same Arrow rows into a bare table of the
events' shape, and the bare 32-row INSERT + COMMIT.

    PYTHONPATH=src python -m bench.lived_in fill live 1000000,10000000
    PYTHONPATH=src python -m bench.lived_in measure live 1000000
    PYTHONPATH=src python -m bench.lived_in measure backfill 20000000 live   # live traffic on a backfill store
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb

from usage_metering.ingest.dedup import index_directory
from usage_metering.metering import Metering
from usage_metering.schemas import UsageEvent, parse_event
from usage_metering.store.events import events_to_arrow

from .billing import DATA_DIR, PLANS, tenant_id

SHAPES = ("live", "backfill")
FORMAT_VERSION = 1  # bump when the traffic or the fill changes, so stale caches are not reused
CHUNK = 10_000
TENANTS = 1_000
USERS_PER_TENANT = 50
METRICS = {"api_calls": "SUM", "storage_gb": "MAX", "active_users": "UNIQUE_COUNT"}
EVENTS_PER_DAY = 1_000_000
SECONDS_PER_EVENT = 86_400 / EVENTS_PER_DAY
BACKFILL_DAYS = 20
FILL_START = datetime(2026, 1, 1, tzinfo=timezone.utc)  # the clock at the first event of every fill
COMMITS = 100
SMALL_GROUP = 32
CHUNKS = 5
WARM_UP_CHUNKS = 3


class SimulatedClock:
    """The store's clock: set by the fill per chunk; in a measurement, the snapshot's time plus real time."""

    def __init__(self, now: datetime, *, running: bool = False) -> None:
        self.now = now
        self._started = time.monotonic() if running else None

    def __call__(self) -> datetime:
        if self._started is None:
            return self.now
        return self.now + timedelta(seconds=time.monotonic() - self._started)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Traffic:
    """Event JSON in one of the SHAPES, as services send it."""

    def __init__(self, shape: str, seed: int) -> None:
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}: one of {', '.join(SHAPES)}")
        self.shape = shape
        self.random = random.Random(seed)
        self.metrics = list(METRICS)

    def chunk(self, now: datetime, count: int) -> list[dict[str, Any]]:
        span = count * SECONDS_PER_EVENT if self.shape == "live" else BACKFILL_DAYS * 86_400.0
        draw = self.random
        events = []
        for _ in range(count):
            tenant = draw.randrange(TENANTS)
            moment = now - timedelta(seconds=draw.random() * span)
            events.append(
                {
                    "tenant_id": tenant_id(tenant),
                    "metric": self.metrics[draw.randrange(len(self.metrics))],
                    "quantity": draw.randint(1, 1000),
                    "user_id": f"user-{draw.randrange(USERS_PER_TENANT)}",
                    "event_id": str(uuid.UUID(int=draw.getrandbits(128), version=4)),
                    "timestamp": moment.isoformat().replace("+00:00", "Z"),
                }
            )
        return events


# -- the cache --------------------------------------------------------------------


def cached_path(shape: str, events: int) -> Path:
    from usage_metering.store.migrations import MIGRATIONS

    schema = max(version for version, _sql in MIGRATIONS)
    return DATA_DIR / f"lived-{shape}-v{FORMAT_VERSION}-s{schema}-duckdb{duckdb.__version__}-{events}ev.duckdb"


def sidecar(path: Path) -> Path:
    return Path(f"{path}.json")


def store_files(path: Path) -> list[Path]:
    """The DuckDB file, its WAL and its key index's directory."""
    return [p for p in (path, Path(f"{path}.wal"), index_directory(path)) if p.exists()]


def copy_store(source: Path, target: Path) -> None:
    remove_store(target)
    for file in store_files(source):
        destination = Path(str(file).replace(str(source), str(target), 1))
        if file.is_dir():
            shutil.copytree(file, destination)
        else:
            shutil.copyfile(file, destination)


def remove_store(path: Path) -> None:
    for file in store_files(path):
        if file.is_dir():
            shutil.rmtree(file)
        else:
            file.unlink()
    sidecar(path).unlink(missing_ok=True)


@dataclass
class FillState:
    """What a cached store's sidecar says: its clock, events, and the fill so far."""

    clock: datetime
    events: int
    rates: list[float]  # validate+ingest rate of each million events added (median of its chunks)
    sustained: list[float]  # each million's events over its wall time: checkpoints, compaction, merges included
    peak_rss_mb: float
    seconds: float

    def save(self, path: Path) -> None:
        data = {**self.__dict__, "clock": self.clock.isoformat()}
        sidecar(path).write_text(json.dumps(data))

    @classmethod
    def load(cls, path: Path) -> FillState:
        data = json.loads(sidecar(path).read_text())
        return cls(**{**data, "clock": datetime.fromisoformat(data["clock"])})


def _define_catalog(metering: Metering) -> None:
    for name, aggregation in METRICS.items():
        metering.define_metric({"name": name, "aggregation": aggregation})
    for plan in PLANS:
        metered = [m for m in plan["metrics"] if m["metric"] in METRICS]  # type: ignore[attr-defined]
        metering.save_plan({**plan, "metrics": metered})
    for index in range(TENANTS):
        metering.save_tenant({"tenant_id": tenant_id(index), "plan_id": PLANS[index % len(PLANS)]["plan_id"]})


def fill(shape: str, sizes: Sequence[int]) -> dict[int, str]:
    """Cache a store of each size (ascending), continuing from the largest cached one; what each took."""
    origins: dict[int, str] = {}
    missing = [size for size in sorted(sizes) if not sidecar(cached_path(shape, size)).exists()]
    for size in sorted(sizes):
        if size not in missing:
            origins[size] = "cached"
    if not missing:
        return origins
    work = DATA_DIR / f"lived-{shape}-filling.duckdb"
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    start = max((s for s in _cached_sizes(shape) if s < missing[0]), default=0)
    if start:
        copy_store(cached_path(shape, start), work)
        state = FillState.load(cached_path(shape, start))
    else:
        remove_store(work)
        state = FillState(FILL_START, 0, [], [], 0.0, 0.0)
    traffic = Traffic(shape, seed=start)
    for size in missing:
        began = time.perf_counter()
        _fill_to(work, traffic, state, size)
        state.seconds += time.perf_counter() - began
        state.peak_rss_mb = max(state.peak_rss_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        target = cached_path(shape, size)
        copy_store(work, target)
        state.save(target)
        origins[size] = f"filled through record_events in {state.seconds:.0f} s"
    remove_store(work)
    return origins


def _cached_sizes(shape: str) -> list[int]:
    prefix = cached_path(shape, 0).name.removesuffix("0ev.duckdb")
    return [
        int(p.name[len(prefix) :].removesuffix("ev.duckdb.json")) for p in DATA_DIR.glob(f"{prefix}*ev.duckdb.json")
    ]


def _fill_to(path: Path, traffic: Traffic, state: FillState, size: int) -> None:
    """Record chunks until the store holds `size` events; a node's restart at the end (close)."""
    clock = SimulatedClock(state.clock)
    metering = Metering.open(path, clock=clock)
    try:
        if not metering.metrics():
            _define_catalog(metering)
        million_rates: list[float] = []
        million_began = time.perf_counter()
        while state.events < size:
            clock.advance(CHUNK * SECONDS_PER_EVENT)
            batch = traffic.chunk(clock.now, CHUNK)
            began = time.perf_counter()
            results = metering.record_events(batch)
            million_rates.append(CHUNK / (time.perf_counter() - began))
            bad = [r for r in results if r.status != "recorded"]
            if bad:
                raise RuntimeError(f"the fill's events must all be recorded; {len(bad)} were not: {bad[0]}")
            state.events += CHUNK
            if state.events % 1_000_000 == 0:
                state.rates.append(statistics.median(million_rates))
                state.sustained.append(1_000_000 / (time.perf_counter() - million_began))
                million_rates, million_began = [], time.perf_counter()
                print(f"  {traffic.shape}: {state.events:,} events, {state.rates[-1]:,.0f} ev/s", file=sys.stderr)
    finally:
        metering.close()
    state.clock = clock.now


# -- measuring on a copy ---------------------------------------------------------------


def _rss_mb(field: str = "VmRSS") -> float:
    """A memory figure of this process from /proc/self/status (VmRSS; RssAnon: heap, DuckDB's buffers;
    RssFile: mapped files, mostly the key runs' pages, which the kernel may drop)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(shape: str, events: int, work: Path, traffic_shape: str | None = None) -> dict[str, float]:
    """On a copy of the cached store of `shape` (none at 0: a new file), in this fresh process, with traffic
    of `traffic_shape` (default: the store's own); the figures."""
    clock_at = FILL_START
    if events:
        source = cached_path(shape, events)
        copy_store(source, work)
        clock_at = FillState.load(source).clock
    else:  # the empty store: the same catalog, no events, after a restart
        remove_store(work)
        with Metering.open(work, clock=SimulatedClock(clock_at)) as metering:
            _define_catalog(metering)
    clock = SimulatedClock(clock_at, running=True)
    traffic = Traffic(traffic_shape or shape, seed=int(time.time()))
    began = time.perf_counter()
    metering = Metering.open(work, clock=clock)
    reopen = time.perf_counter() - began
    result: dict[str, float] = {"reopen_s": reopen, "rss_open_mb": _rss_mb()}
    # A few chunks first on every store, empty or not: the empty store's first commits would otherwise also
    # pay the period's threshold alerts (each tenant's first events cross them), which a lived-in store
    # raised long ago.
    for _ in range(WARM_UP_CHUNKS):
        metering.record_events(traffic.chunk(clock(), CHUNK))
    small = [_valid(e, clock) for e in traffic.chunk(clock(), COMMITS * SMALL_GROUP)]
    commit_seconds = []
    for k in range(COMMITS):
        begin = time.perf_counter()
        metering.ingestor.ingest(small[k * SMALL_GROUP : (k + 1) * SMALL_GROUP])
        commit_seconds.append(time.perf_counter() - begin)
    rates = []
    for _ in range(CHUNKS):
        batch = traffic.chunk(clock(), CHUNK)
        begin = time.perf_counter()
        results = metering.record_events(batch)
        rates.append(CHUNK / (time.perf_counter() - begin))
        assert all(r.status == "recorded" for r in results), "every measured event must be recorded"
    ingest_rates = []
    arrow_batches = []
    for _ in range(CHUNKS):
        valid = [_valid(e, clock) for e in traffic.chunk(clock(), CHUNK)]
        begin = time.perf_counter()
        metering.ingestor.ingest(valid)
        ingest_rates.append(CHUNK / (time.perf_counter() - begin))
        arrow_batches.append(events_to_arrow(valid, [0] * len(valid), clock()))
    result["checkpoint_ms"] = _checkpoint_seconds(metering) * 1000
    result.update(
        commit_ms=statistics.median(commit_seconds) * 1000,
        rate=statistics.median(rates),
        ingest_rate=statistics.median(ingest_rates),
        rss_peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        rss_anon_mb=_rss_mb("RssAnon"),
        rss_file_mb=_rss_mb("RssFile"),
        stored=float(metering.database.cursor().execute("SELECT count(*) FROM events").fetchall()[0][0]),
    )
    metering.close()
    result.update(_ceilings(work, arrow_batches, small, clock))
    result["disk_mb"] = sum(_size(p) for p in store_files(work)) / 2**20
    remove_store(work)
    return result


def _checkpoint_seconds(metering: Metering) -> float:
    """How long DuckDB takes to fold the measurement's WAL into the file (what a commit that crosses the
    checkpoint threshold pays), with the writer idle."""
    for _ in range(50):
        began = time.perf_counter()
        try:
            metering.database.cursor().execute("CHECKPOINT")
            return time.perf_counter() - began
        except duckdb.TransactionException:  # the compactor's pass is running; wait for it
            time.sleep(0.1)
    raise RuntimeError("CHECKPOINT kept conflicting with other transactions")


def peer_traffic(shape: str, count: int) -> list[UsageEvent]:
    """Validated events of `shape` at the real clock, for the PostgreSQL peer."""
    now = datetime.now(timezone.utc)
    return [parse_event(data, now=now) for data in Traffic(shape, seed=int(time.time())).chunk(now, count)]


def _valid(data: dict[str, Any], clock: SimulatedClock) -> UsageEvent:
    return parse_event(data, now=clock())


def _ceilings(path: Path, arrow_batches: list[Any], small: list[UsageEvent], clock: SimulatedClock) -> dict[str, float]:
    """On the same file: DuckDB appending the same rows as Arrow into a bare table of the events' columns
    (no dedup, no rollups, no counters), one transaction per chunk; and the bare 32-row INSERT + COMMIT."""
    connection = duckdb.connect(str(path))
    try:
        connection.execute("CREATE TABLE bare_events AS SELECT * FROM events LIMIT 0")
        rates = []
        for batch in arrow_batches:
            begin = time.perf_counter()
            connection.execute("BEGIN TRANSACTION")
            connection.execute("INSERT INTO bare_events SELECT * FROM batch")
            connection.execute("COMMIT")
            rates.append(batch.num_rows / (time.perf_counter() - begin))
        floor = []
        for k in range(COMMITS):
            small_rows = events_to_arrow(small[k * SMALL_GROUP : (k + 1) * SMALL_GROUP], [0] * SMALL_GROUP, clock())  # noqa: F841
            begin = time.perf_counter()
            connection.execute("BEGIN TRANSACTION")
            connection.execute("INSERT INTO bare_events SELECT * FROM small_rows")
            connection.execute("COMMIT")
            floor.append(time.perf_counter() - begin)
        connection.execute("DROP TABLE bare_events")
    finally:
        connection.close()
    return {"arrow_append_rate": statistics.median(rates), "floor_commit_ms": statistics.median(floor) * 1000}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size


def main(argv: list[str]) -> int:
    command, shape, sizes = argv[0], argv[1], [int(n) for n in argv[2].split(",")]
    traffic_shape = argv[3] if len(argv) > 3 else None
    if command == "fill":
        print(json.dumps({str(k): v for k, v in fill(shape, sizes).items()}))
    elif command == "measure":
        work = DATA_DIR / f"lived-{shape}-measuring.duckdb"
        print(json.dumps(measure(shape, sizes[0], work, traffic_shape)))
    else:
        raise SystemExit(f"unknown command {command!r}: fill or measure")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
