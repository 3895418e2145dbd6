"""Run the benchmarks: `PYTHONPATH=src python -m bench [--quick] [--only ingest,http,billing] [--profile]`.

Prints one markdown table (medians over --repeat runs, each with a baseline
measured in the same run) and writes it to bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import io
import pstats
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .common import Row, machine_info, markdown_table

SECTIONS = ("ingest", "scale", "http-batch", "http-single", "quota", "billing")
RESULTS = Path(__file__).resolve().parent / "results" / "latest.md"


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; --quick keeps a smoke run under ~90 s on 2 cores."""

    ingest_events: int
    naive_rows: int
    http_batches: int
    http_singles: int
    http_quotas: int
    http_health: int
    http_max_seconds: float
    billing_events: int
    billing_tenants: int


FULL = Sizes(200_000, 5_000, 100, 20_000, 40_000, 40_000, 60.0, 10_000_000, 1_000)
QUICK = Sizes(30_000, 1_000, 10, 2_000, 4_000, 4_000, 15.0, 1_000_000, 100)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test (< 90 s)")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections to run, from: {', '.join(SECTIONS)}"
    )
    parser.add_argument("--repeat", type=int, default=None, help="runs per measurement (default 3, quick 2)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print cProfile of in-process ingest and of the HTTP server's event loop",
    )
    parser.add_argument("--wrk", action="store_true", help="cross-check quota GETs with wrk if installed")
    parser.add_argument(
        "--scale-sizes",
        default=None,
        metavar="N,N,...",
        help="stored-event counts for the scale section (default 0,1000000,10000000,20000000; quick 0,1000000); "
        "past 20M the stores are bulk-built",
    )
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    return args


def run(args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    sizes = QUICK if args.quick else FULL
    repeats = args.repeat or (2 if args.quick else 3)
    sections = set(args.only.split(","))
    rows: list[Row] = []
    notes: list[str] = []
    if "ingest" in sections:
        from .ingest import bench_ingest, profile_ingest, profile_small_commits

        _step("in-process ingest")
        rows += bench_ingest(sizes.ingest_events, sizes.naive_rows, repeats)
        if args.profile:
            notes.append(
                "### cProfile: in-process validate + ingest (inline, no writer thread)\n\n```\n"
                + profile_ingest(min(sizes.ingest_events, 100_000))
                + "```"
            )
            notes.append(
                "### cProfile: 100 group commits of 32 pre-validated events\n\n```\n" + profile_small_commits() + "```"
            )
    if "scale" in sections:
        from .scale import bench_scale

        _step("scale curve (first run builds the stores)")
        default = "0,1000000" if args.quick else "0,1000000,10000000,20000000"
        scale_rows, info = bench_scale([int(n) for n in (args.scale_sizes or default).split(",")], repeats)
        rows += scale_rows
        notes.append(info)
    http = {"http-batch": "batch", "http-single": "single", "quota": "quota"}
    http_sections = {http[s] for s in sections & http.keys()}
    if http_sections:
        from .http_api import HttpSizes, bench_http, wrk_cross_check

        _step(f"HTTP ({', '.join(sorted(http_sections))})")
        http_sizes = HttpSizes(
            sizes.http_batches,
            sizes.http_singles,
            sizes.http_quotas,
            sizes.http_health,
            sizes.http_max_seconds,
            repeats,
        )
        with tempfile.TemporaryDirectory(prefix="bench-prof-") as tmp:
            profile_out = str(Path(tmp) / "server.prof") if args.profile else ""
            http_rows = bench_http(http_sizes, http_sections, profile_out)
            for row in http_rows if profile_out else ():
                row.notes += "; SERVER UNDER cProfile: slower, not comparable to a run without --profile"
            rows += http_rows
            if profile_out and Path(profile_out).exists():
                notes.append(
                    "### cProfile: HTTP server main thread (event loop) over the whole HTTP section\n\n```\n"
                    + _top(profile_out)
                    + "```"
                )
        if args.wrk:
            out = wrk_cross_check()
            notes.append(
                "### wrk cross-check (quota GET, 16 conns)\n\n```\n" + out + "```"
                if out
                else "wrk not installed: no cross-check"
            )
    if "billing" in sections:
        from .billing import bench_billing

        _step("billing report (first run builds the dataset)")
        billing_rows, info = bench_billing(sizes.billing_events, sizes.billing_tenants, max(repeats, 5))
        rows += billing_rows
        notes.append(info)
    return rows, notes


def _top(profile_path: str, top: int = 30) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile_path, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def _step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text} ...", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    header = machine_info()
    rows, notes = run(args)
    mode = "quick" if args.quick else "full"
    report = (
        f"# Usage Metering benchmarks ({mode}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n{header}\n"
        f"- wall time {time.perf_counter() - started:.0f} s; medians of {args.repeat or (2 if args.quick else 3)} "
        f"runs (billing: 5); ratio > 1 means better than the baseline\n\n"
        + markdown_table(rows)
        + "\n\n"
        + "\n\n".join(notes)
        + "\n"
    )
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
