"""How ingest cost grows with stored history: the scale curve.

Up to `LIVED_IN_MAX` events, the stores lived through the real ingest path
(bench/lived_in.py): filled through `Metering.record_events` in two traffic
shapes (live and backfill) with compaction, sealing, counter checkpoints and
key-index runs running as in a node, cached in bench/.data. Each size is
measured in a fresh child process on a copy of its store, in its own shape:

- re-open: `Metering.open` until it answers (migrations, catalog, quota counters);
- RSS right after opening, and the peak after ingesting;
- the 32-event group commit (what concurrent single-event POSTs pay), median of 100,
  beside the bare 32-row INSERT + COMMIT on the same file;
- validate+ingest (`Metering.record_events`, 10k chunks) and ingest alone
  (pre-validated), medians of 5 chunks, beside DuckDB appending the same rows as
  Arrow into a bare table of the events' columns on the same file;
- beside it, the PostgreSQL peer (bench/postgres_peer.py) on a store of the same size;
- and, per shape, the fill-rate curve: validate+ingest per million events added.

Larger sizes (50M, 100M) use stores bulk-built by SQL (the billing dataset's
generator and one key-index run): filling those through the API takes too long.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from usage_metering.ingest.dedup import index_directory

from .billing import DATA_DIR, FORMAT_VERSION, build_dataset, first_open, upgrade_cache
from .common import Row, fmt_ms, fmt_rate, fmt_ratio, verdict
from .postgres_peer import measure_peer, peer_events

COMMITS = 100
SMALL_GROUP = 32
CHUNKS = 5
CHUNK = 10_000
TENANTS = 1_000
TARGET_COMMIT_MS = 2.0
TARGET_RATE = 100_000


def store(events: int) -> tuple[Path, str]:
    """The cached store holding `events` events (0: a fresh file each time)."""
    from usage_metering.store.migrations import MIGRATIONS

    schema = max(version for version, _sql in MIGRATIONS)
    path = DATA_DIR / f"scale-v{FORMAT_VERSION}-s{schema}-duckdb{duckdb.__version__}-{events}ev.duckdb"
    if events == 0:
        remove_store(path)
        return path, "empty"
    if path.exists():
        return path, "cached"
    upgrade = upgrade_cache(path, schema)
    if upgrade is not None:
        return path, f"upgraded from an older schema in {upgrade:.0f} s"
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    seconds = build_dataset(partial, events, TENANTS, datetime.now(timezone.utc))
    partial.replace(path)
    seconds += first_open(path)
    return path, f"built in {seconds:.0f} s"


def store_files(path: Path) -> list[Path]:
    """The DuckDB file, its WAL and its event key index's files."""
    found = [*path.parent.glob(path.name + "*"), *index_directory(path).glob("*")]
    return [p for p in found if p.is_file()]


def remove_store(path: Path) -> None:
    for file in store_files(path):
        file.unlink()
    shutil.rmtree(index_directory(path), ignore_errors=True)


# Runs in a fresh interpreter per size, so RSS and re-open time are this store's alone.
_MEASURE = r"""
import json, resource, statistics, sys, time
from datetime import datetime, timedelta, timezone
from usage_metering.metering import Metering
from usage_metering.schemas import parse_event

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

path, run_id, commits, group, chunks, chunk = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
started = time.perf_counter()
metering = Metering.open(path)
metering.plans()  # answering (the ingestor loaded catalog and counters at open)
reopen = time.perf_counter() - started
rss_open = rss_mb()
now = datetime.now(timezone.utc)

def event(i):
    return {"tenant_id": f"tenant-{i % 1000:05d}", "metric": ("api_calls", "storage_gb")[i % 2],
            "quantity": str(i % 997 + 1), "user_id": f"user-{i % 20}", "event_id": f"scale-{run_id}-{i}",
            "timestamp": (now - timedelta(seconds=i % 3600)).isoformat()}

small = [parse_event(event(i), now=now) for i in range(commits * group)]
commit_seconds = []
for k in range(commits):
    begin = time.perf_counter()
    metering.ingestor.ingest(small[k * group:(k + 1) * group])
    commit_seconds.append(time.perf_counter() - begin)
rates = []
offset = commits * group
for k in range(chunks):
    batch = [event(offset + k * chunk + i) for i in range(chunk)]
    begin = time.perf_counter()
    results = metering.record_events(batch)
    rates.append(chunk / (time.perf_counter() - begin))
    assert all(r.status == "recorded" for r in results)
offset += chunks * chunk
ingest_rates = []
for k in range(chunks):
    batch = [parse_event(event(offset + k * chunk + i), now=now) for i in range(chunk)]
    begin = time.perf_counter()
    metering.ingestor.ingest(batch)
    ingest_rates.append(chunk / (time.perf_counter() - begin))
stored = metering.database.cursor().execute("SELECT count(*) FROM events").fetchall()[0][0]
metering.close()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"reopen_s": reopen, "rss_open_mb": rss_open, "rss_peak_mb": peak, "stored": stored,
                  "commit_ms": statistics.median(commit_seconds) * 1000,
                  "rate": statistics.median(rates), "ingest_rate": statistics.median(ingest_rates)}))
"""

# Billing in an interpreter of its own: a report's working memory is DuckDB's, and it would otherwise be
# counted in the ingest measurement's peak RSS.
_BILLING = r"""
import json, statistics, sys, time
from datetime import timedelta
from usage_metering.metering import Metering

metering = Metering.open(sys.argv[1])

def billing_ms(period):
    times = []
    for _ in range(3):
        begin = time.perf_counter()
        metering.billing_report(period=period)
        times.append(time.perf_counter() - begin)
    return statistics.median(times) * 1000

current = metering.billing_report()[0].period  # also a warm-up
previous = (current.start - timedelta(days=1)).strftime("%Y-%m")
print(json.dumps({"billing_current_ms": billing_ms(None), "billing_previous_ms": billing_ms(previous)}))
metering.close()
"""


def _child(code: str, *args: str) -> dict[str, float]:
    """Run `code` in a fresh interpreter on the bench's usage_metering; its last stdout line is JSON."""
    import usage_metering

    env = {**os.environ, "PYTHONPATH": str(Path(usage_metering.__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scale measurement on {Path(args[0]).name} failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(path: Path, run_id: str) -> dict[str, float]:
    result = _child(_MEASURE, str(path), run_id, str(COMMITS), str(SMALL_GROUP), str(CHUNKS), str(CHUNK))
    result["disk_mb"] = sum(p.stat().st_size for p in store_files(path)) / 2**20
    return result


def _label(events: int) -> str:
    return f"{events / 1_000_000:g}M" if events >= 1_000_000 else f"{events:,}"


def bench_bulk_built(sizes: list[int]) -> tuple[list[Row], str]:
    """The scale rows on bulk-built stores (the sizes past LIVED_IN_MAX)."""
    rows: list[Row] = []
    infos = []
    empty_rate = None
    for events in sizes:
        path, origin = store(events)
        billing = _child(_BILLING, str(path)) if events else {}
        result = measure(path, f"{int(time.time())}")
        infos.append(f"{_label(events)}: {origin}")
        if events == 0:
            empty_rate = result["rate"]
            remove_store(path)
        run_id = f"{int(time.time())}"
        peer = measure_peer(
            events,
            peer_events(run_id, COMMITS * SMALL_GROUP),
            [peer_events(run_id, CHUNK, COMMITS * SMALL_GROUP + k * CHUNK) for k in range(CHUNKS)],
        )
        size = _label(events)
        rows.append(
            Row(
                f"scale {size} stored (bulk-built): 32-event group commit",
                f"{result['commit_ms']:.2f} ms",
                baseline=f"{peer['commit_ms']:.2f} ms (PostgreSQL peer)",
                ratio=fmt_ratio(result["commit_ms"], peer["commit_ms"], higher_is_better=False),
                target=f"<= {TARGET_COMMIT_MS:g} ms",
                met=verdict(result["commit_ms"] <= TARGET_COMMIT_MS),
                notes=f"median of {COMMITS} commits of pre-validated events (Ingestor.ingest)",
            )
        )
        rows.append(
            Row(
                f"scale {size} stored (bulk-built): ingest only (pre-validated)",
                fmt_rate(result["ingest_rate"], "ev/s"),
                baseline=fmt_rate(peer["rate"], "ev/s") + " (PostgreSQL peer, same traffic)",
                ratio=fmt_ratio(result["ingest_rate"], peer["rate"]),
                target="ahead of the PostgreSQL peer",
                met=verdict(result["ingest_rate"] > peer["rate"]),
                notes="Ingestor.ingest vs COPY + ON CONFLICT DO NOTHING + rollup upsert; "
                f"median of {CHUNKS} x {CHUNK:,}",
            )
        )
        rows.append(
            Row(
                f"scale {size} stored (bulk-built): validate+ingest",
                fmt_rate(result["rate"], "ev/s"),
                baseline=fmt_rate(empty_rate, "ev/s") + " (empty store, same run)" if empty_rate else "-",
                ratio=fmt_ratio(result["rate"], empty_rate) if empty_rate else "-",
                target=f">= {TARGET_RATE:,} ev/s and >= 0.8x empty",
                met=verdict(result["rate"] >= TARGET_RATE and (not empty_rate or result["rate"] >= 0.8 * empty_rate)),
                notes=f"Metering.record_events, median of {CHUNKS} chunks of {CHUNK:,}",
            )
        )
        if billing:
            worst = max(billing["billing_current_ms"], billing["billing_previous_ms"])
            rows.append(
                Row(
                    f"scale {size} stored (bulk-built): billing_report(), {TENANTS:,} tenants",
                    f"{billing['billing_current_ms']:,.0f} ms current period / "
                    f"{billing['billing_previous_ms']:,.0f} ms previous (whole) period",
                    target="< 1 s",
                    met=verdict(worst < 1000),
                    notes="median of 3 each, own process, before the writes; events span the last 40 days, so the "
                    "previous period holds about 3/4 of them and the current one what this month has so far",
                )
            )
        rows.append(
            Row(
                f"scale {size} stored (bulk-built): memory, re-open, disk",
                f"RSS {result['rss_open_mb']:,.0f} MB open / {result['rss_peak_mb']:,.0f} MB peak",
                notes=f"re-open {fmt_ms(result['reopen_s'])}; disk {result['disk_mb']:,.0f} MB; "
                f"{int(result['stored']):,} events after the run",
            )
        )
    return rows, "bulk-built scale stores: " + "; ".join(infos)


# -- lived-in stores (bench/lived_in.py) ---------------------------------------------------------

LIVED_IN_MAX = 20_000_000
TARGET_VS_EMPTY = 0.85
TARGET_COMMIT_VS_EMPTY = 1.3
TARGET_VS_ARROW = 0.5
TARGET_VS_PEER = 1.5
TARGET_PEAK_MB = 1200


def _lived_in(command: str, shape: str, sizes: list[int], *more: str) -> dict[str, Any]:
    """`python -m bench.lived_in COMMAND SHAPE SIZES [TRAFFIC]` in a fresh interpreter; its last stdout line
    is JSON."""
    import usage_metering

    source = Path(usage_metering.__file__).resolve().parent.parent
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{root}"}
    argv = [sys.executable, "-m", "bench.lived_in", command, shape, ",".join(map(str, sizes)), *more]
    done = subprocess.run(argv, env=env, cwd=root, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench.lived_in {command} {shape} {sizes} failed (its stderr is above)")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline else "-"


def bench_lived_in(sizes: list[int], repeats: int) -> tuple[list[Row], str]:
    """Both traffic shapes at every size; the PostgreSQL peer once per size, in the live shape."""
    from .lived_in import SHAPES, FillState, cached_path

    infos = []
    rows: list[Row] = []
    live_empty = None
    for shape in SHAPES:
        peers = {size: _peer(size, shape) for size in sizes}
        filled = _lived_in("fill", shape, [size for size in sizes if size])
        infos += [f"{shape} {_label(int(size))}: {origin}" for size, origin in filled.items()]
        measured = {size: _median_of(shape, size, repeats) for size in sizes}
        empty = measured.get(0)
        for size in sizes:
            rows += _lived_in_rows(shape, size, measured[size], empty, peers[size])
        largest = max(sizes)
        if largest:
            rows.append(_fill_row(shape, FillState.load(cached_path(shape, largest))))
        if shape == "live":
            live_empty = empty
    if live_empty and max(sizes):
        rows += _live_on_backfill(max(sizes), live_empty, repeats)
    return rows, "lived-in scale stores: " + "; ".join(infos)


def _live_on_backfill(size: int, live_empty: dict[str, float], repeats: int) -> list[Row]:
    """Live traffic on the backfill store: a store filled over the late window, then fresh events."""
    import statistics

    runs = [_lived_in("measure", "backfill", [size], "live") for _ in range(repeats)]
    rate, commit = (statistics.median(run[key] for run in runs) for key in ("rate", "commit_ms"))
    name = f"scale backfill {_label(size)} stored, live traffic"
    return [
        _rate_row(
            f"{name}: validate+ingest",
            (rate, live_empty["rate"], "empty store, live traffic, same run"),
            TARGET_VS_EMPTY,
            "the store filled with timestamps over 20 days, then events of the last minutes",
        ),
        Row(
            f"{name}: 32-event group commit",
            f"{commit:.2f} ms",
            baseline=f"{live_empty['commit_ms']:.2f} ms (empty store, live traffic)",
            ratio=_ratio(live_empty["commit_ms"], commit),
            target=f"<= {TARGET_COMMIT_VS_EMPTY}x the empty store's ms (ratio >= {1 / TARGET_COMMIT_VS_EMPTY:.2f}x)",
            met=verdict(commit <= TARGET_COMMIT_VS_EMPTY * live_empty["commit_ms"]),
            notes=f"median of {COMMITS}",
        ),
    ]


def _median_of(shape: str, size: int, repeats: int) -> dict[str, float]:
    """Each figure's median over `repeats` measurements (a fresh copy of the store each time)."""
    import statistics

    runs = [_lived_in("measure", shape, [size]) for _ in range(repeats)]
    peak = max(run["rss_peak_mb"] for run in runs)
    return {**{key: statistics.median(run[key] for run in runs) for key in runs[0]}, "rss_peak_mb": peak}


def _peer(size: int, shape: str) -> dict[str, float]:
    """The PostgreSQL peer on its store of `size` events, fed the traffic of `shape`."""
    from .lived_in import peer_traffic

    events = peer_traffic(shape, COMMITS * SMALL_GROUP + CHUNKS * CHUNK)
    small, chunks = events[: COMMITS * SMALL_GROUP], events[COMMITS * SMALL_GROUP :]
    return measure_peer(size, small, [chunks[k * CHUNK : (k + 1) * CHUNK] for k in range(CHUNKS)])


def _lived_in_rows(
    shape: str, size: int, result: dict[str, float], empty: dict[str, float] | None, peer: dict[str, float]
) -> list[Row]:
    name = f"scale {shape} {_label(size)} stored"
    rate, ingest, commit = result["rate"], result["ingest_rate"], result["commit_ms"]
    empty_rate = empty["rate"] if empty else 0.0
    empty_commit = empty["commit_ms"] if empty else 0.0
    return [
        _rate_row(
            f"{name}: validate+ingest",
            (rate, empty_rate, "empty store, same shape, same run"),
            TARGET_VS_EMPTY,
            f"Metering.record_events, median of {CHUNKS} chunks of {CHUNK:,}",
        ),
        _rate_row(
            f"{name}: ingest only vs DuckDB's Arrow append",
            (ingest, result["arrow_append_rate"], "same rows, bare table, same file"),
            TARGET_VS_ARROW,
            "Ingestor.ingest of pre-validated events vs INSERT ... SELECT from the same Arrow table + COMMIT",
        ),
        _rate_row(
            f"{name}: ingest only vs the PostgreSQL peer",
            (ingest, peer["rate"], "PostgreSQL peer, same traffic"),
            TARGET_VS_PEER,
            "COPY + ON CONFLICT DO NOTHING + rollup upsert on a bulk-built PostgreSQL store of the same size",
        ),
        Row(
            f"{name}: 32-event group commit",
            f"{commit:.2f} ms",
            baseline=f"{empty_commit:.2f} ms (empty store, same shape)" if empty else "-",
            ratio=_ratio(empty_commit, commit),
            target=f"<= {TARGET_COMMIT_VS_EMPTY}x the empty store's ms (ratio >= {1 / TARGET_COMMIT_VS_EMPTY:.2f}x)",
            met=verdict(not empty or commit <= TARGET_COMMIT_VS_EMPTY * empty_commit),
            notes=f"median of {COMMITS}; {commit / result['floor_commit_ms']:.1f}x the bare 32-row INSERT + COMMIT "
            f"on the same file ({result['floor_commit_ms']:.2f} ms); PostgreSQL peer {peer['commit_ms']:.2f} ms",
        ),
        Row(
            f"{name}: memory, re-open, disk",
            f"RSS {result['rss_open_mb']:,.0f} MB open / {result['rss_peak_mb']:,.0f} MB peak",
            baseline=f"after ingest: {result['rss_anon_mb']:,.0f} MB anonymous + {result['rss_file_mb']:,.0f} MB "
            "mapped files (key runs)",
            target=f"peak <= {TARGET_PEAK_MB:,} MB",
            met=verdict(result["rss_peak_mb"] <= TARGET_PEAK_MB),
            notes=f"re-open {fmt_ms(result['reopen_s'])}; CHECKPOINT after the run {result['checkpoint_ms']:,.0f} ms; "
            f"disk {result['disk_mb']:,.0f} MB; {int(result['stored']):,} events after the run; "
            "default configuration (DuckDB memory_limit 512MB)",
        ),
    ]


def _rate_row(title: str, measured: tuple[float, float, str], target: float, notes: str) -> Row:
    """A rate (ev/s) against a baseline rate of the same run (0: none), with a target ratio."""
    rate, baseline, what = measured
    return Row(
        title,
        fmt_rate(rate, "ev/s"),
        baseline=f"{fmt_rate(baseline, 'ev/s')} ({what})" if baseline else "-",
        ratio=_ratio(rate, baseline),
        target=f">= {target}x",
        met=verdict(not baseline or rate >= target * baseline),
        notes=notes,
    )


def _fill_row(shape: str, state: Any) -> Row:
    rates = state.rates
    curve = ", ".join(f"{k + 1}M {rate / 1000:.0f}k" for k, rate in enumerate(rates))
    sustained = ", ".join(f"{rate / 1000:.0f}k" for rate in state.sustained)
    return Row(
        f"scale {shape}: fill rate per million events added (0 -> {_label(state.events)})",
        f"{rates[-1]:,.0f} ev/s at the last million",
        baseline=f"{rates[0]:,.0f} ev/s (the first million)",
        ratio=_ratio(rates[-1], rates[0]),
        notes=f"validate+ingest through record_events while filling, median chunk per million: {curve}; "
        f"sustained (each million over its wall time, checkpoints and merges included): {sustained}; "
        "fill process peak RSS "
        f"{state.peak_rss_mb:,.0f} MB; {state.seconds:,.0f} s (node restarts at each cached size)",
    )


def bench_scale(sizes: list[int], repeats: int = 1) -> tuple[list[Row], str]:
    lived = [size for size in sizes if size <= LIVED_IN_MAX]
    bulk = [size for size in sizes if size > LIVED_IN_MAX]
    rows, info = bench_lived_in(lived, repeats) if lived else ([], "")
    if bulk:
        bulk_rows, bulk_info = bench_bulk_built([0, *bulk])
        rows += bulk_rows
        info += "; " + bulk_info
    return rows, info
