"""Shared bits: result rows, medians, the markdown table and machine info."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Row:
    """One line of the results table; units are part of the text so the table reads alone."""

    benchmark: str
    result: str
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    met: str = "-"
    p50: str = "-"
    p99: str = "-"
    cpu: str = "-"
    notes: str = ""
    extra: dict[str, float] = field(default_factory=dict)


COLUMNS = ("benchmark", "result", "baseline", "ratio", "target", "met?", "p50", "p99", "CPU (server / client)", "notes")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def timed(function: Callable[[], T]) -> tuple[float, T]:
    """Wall seconds and the result of one call (perf_counter: monotonic, highest resolution)."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def fmt_rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def fmt_ratio(result: float, baseline: float, higher_is_better: bool = True) -> str:
    """How many times better than the baseline (>1 = better), whatever the direction of the unit."""
    if not baseline or not result:
        return "-"
    ratio = result / baseline if higher_is_better else baseline / result
    return f"{ratio:,.1f}x"


def verdict(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = (r.benchmark, r.result, r.baseline, r.ratio, r.target, r.met, r.p50, r.p99, r.cpu, r.notes)
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def machine_info() -> str:
    import duckdb
    import pyarrow

    try:
        import uvloop

        # uvloop sets __version__ but leaves it out of its __all__, so a strict check calls it private
        uvloop_version = uvloop.__version__  # type: ignore[attr-defined]
    except ImportError:
        uvloop_version = "not installed"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"- cores: {os.cpu_count()} ({platform.processor() or platform.machine()}), "
        f"load average before run: {load}\n"
        f"- python {sys.version.split()[0]} ({platform.python_implementation()}), {platform.platform()}\n"
        f"- duckdb {duckdb.__version__}, pyarrow {pyarrow.__version__}, uvloop {uvloop_version}"
    )
