"""`usage-metering export` and `usage-metering import`: events out to files and back in.

export reads the database file read-only (no migrations, no writer), so it runs
on the node's snapshot while the node is up, or on the main file once it is
stopped. import backfills through the same path as `record`: the library's
`Metering.record_events` (or POST /api/events/batch with --url), in chunks, so
event ids deduplicate and quotas apply exactly as for live traffic.
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping, Sequence

import click

from .cli import (
    EXIT_FAILED,
    EXIT_INVALID,
    RECORD_CHUNK,
    SUMMARY_COLUMNS,
    CliError,
    LocalBackend,
    _read_lines,
    chunked,
    emit,
    open_backend,
    status_summary,
)
from .schemas import ValidationError
from .store import DeadLetter, StoreLockedError
from .store.export import FORMATS

EXPORT_COLUMNS = ("rows", "format", "path")
CSV_REQUIRED = ("tenant_id", "metric", "quantity")
CSV_OPTIONAL = ("user_id", "event_id", "timestamp", "properties")
SHOWN_LINES = 5  # line numbers listed per rejection code

Row = tuple[int, str, Any]  # (line number, raw text, event dict or ValidationError)


# -- export ------------------------------------------------------------------------------


def _export_format(fmt: str | None, output: Path | None) -> str:
    if fmt is not None:
        return fmt
    suffix = output.suffix.lower().lstrip(".") if output is not None else ""
    return {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl"}.get(suffix, "parquet")


def _open_read_only(db: Path) -> Any:
    from .metering import Metering

    if not db.exists():
        raise CliError(f"{db} does not exist", EXIT_FAILED)
    try:
        return Metering.open(db, read_only=True)
    except StoreLockedError:
        raise CliError(
            f"{db} is held by the running node. Export from its snapshot instead: "
            f"--db {db.with_name(db.stem + '.snapshot.duckdb')} (or stop the node)",
            EXIT_FAILED,
        ) from None


@click.command("export")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="File format (default: from --output's extension, else parquet).")
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), metavar="YYYY-MM-DD", help="First UTC day (inclusive).")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), metavar="YYYY-MM-DD", help="Last UTC day (inclusive).")
@click.option("--tenant", "tenant_id", metavar="TENANT", help="Only this tenant's events.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: events.<format>).")
@click.pass_context
def export_command(
    ctx: click.Context,
    fmt: str | None,
    start: datetime | None,
    end: datetime | None,
    tenant_id: str | None,
    output: Path | None,
) -> None:
    """Export events as Parquet, CSV or JSON lines, with exact decimal quantities and UTC times.

    Reads --db read-only: while the node runs, point --db at its snapshot
    (<db stem>.snapshot.duckdb). The columns are the event format, so the file
    can be imported again with `usage-metering import`.
    """
    if ctx.find_root().obj["url"]:
        raise CliError(
            "export needs the database file, not --url: use --db with the node's snapshot "
            "(e.g. --db data/metering.snapshot.duckdb) or with the main file while the node is stopped",
            EXIT_INVALID,
        )
    fmt = _export_format(fmt, output)
    target = output if output is not None else Path(f"events.{fmt}")
    metering = _open_read_only(ctx.find_root().obj["db"])
    try:
        with click.progressbar(length=100, label="Exporting events", file=sys.stderr) as bar:
            rows = metering.export_events(
                target,
                fmt,
                start=start.date() if start else None,
                end=end.date() if end else None,
                tenant_id=tenant_id,
                on_progress=lambda percent: bar.update(max(0, int(percent) - bar.pos)),
            )
    finally:
        metering.close()
    summary = {"rows": rows, "format": fmt, "path": str(target)}
    emit(summary, [summary], EXPORT_COLUMNS)


# -- import ------------------------------------------------------------------------------


def _counted_lines(stream: IO[str], on_bytes: Callable[[int], None], taken: list[str]) -> Iterator[str]:
    for line in stream:
        on_bytes(len(line.encode("utf-8", "replace")))
        taken.append(line)
        yield line


def _csv_event(record: Mapping[str, str | None]) -> dict[str, Any]:
    """A CSV row as event JSON: empty cells are absent, properties is JSON text."""
    event: dict[str, Any] = {k: v for k, v in record.items() if v not in (None, "")}
    if None in event:  # more cells than header columns
        raise ValidationError(None, "the row has more cells than the header has columns", "malformed_csv")
    if "properties" in event:
        try:
            event["properties"] = json.loads(event["properties"], parse_float=Decimal)
        except ValueError as exc:
            raise ValidationError("properties", f"not valid JSON: {exc}", "malformed_json") from None
    return event


def read_csv_rows(stream: IO[str], on_bytes: Callable[[int], None]) -> Iterator[Row]:
    """(line number, raw text, event dict or ValidationError) per CSV row after the header."""
    taken: list[str] = []
    reader = csv.DictReader(_counted_lines(stream, on_bytes, taken))
    header = reader.fieldnames or []
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise CliError(
            f"the CSV header lacks {', '.join(missing)}; columns are {', '.join(CSV_REQUIRED + CSV_OPTIONAL)}",
            EXIT_INVALID,
        )
    taken.clear()
    for record in reader:
        line, raw = reader.line_num, "".join(taken)
        taken.clear()
        try:
            yield line, raw, _csv_event(record)
        except ValidationError as error:
            yield line, raw, error


def dead_letter_reason(error: ValidationError) -> str:
    return f"{error.code}: {error.field or '-'}: {error.message}"


def _import_letter(source: str, row: Row, error: ValidationError) -> DeadLetter:
    line, raw, _data = row
    return DeadLetter("import", raw.encode("utf-8"), dead_letter_reason(error), topic=source, offset=line)


def _rejected(error: ValidationError) -> dict[str, Any]:
    return {"event_id": None, "status": "rejected", "error": error.as_dict()}


def import_batch(backend: Any, rows: Sequence[Row], source: str) -> list[dict[str, Any]]:
    """Record one chunk; a result per row in order. Locally, rejected rows become dead letters
    (source 'import', topic = the file, offset = the line) in the same commit as the events."""
    valid = [row for row in rows if not isinstance(row[2], ValidationError)]
    if isinstance(backend, LocalBackend):
        malformed = [_import_letter(source, row, row[2]) for row in rows if isinstance(row[2], ValidationError)]
        results = iter(
            result.to_json_dict()
            for result in backend.metering.record_events(
                [row[2] for row in valid],
                dead_letter_for=lambda index, error: _import_letter(source, valid[index], error),
                dead_letters=malformed,
            )
        )
    else:
        results = iter(backend.record_batch([row[2] for row in valid]) if valid else [])
    return [_rejected(row[2]) if isinstance(row[2], ValidationError) else next(results) for row in rows]


def import_rows(backend: Any, rows: Iterator[Row], source: str) -> dict[str, Any]:
    """Import in chunks; counts per status and, per error code, how many and the first lines."""
    counts = {"recorded": 0, "duplicate": 0, "blocked": 0, "rejected": 0}
    reasons: dict[str, dict[str, Any]] = {}

    def flush(chunk: list[Row]) -> None:
        for (line, _raw, _data), result in zip(chunk, import_batch(backend, chunk, source)):
            counts[result["status"]] += 1
            if result["status"] in ("rejected", "blocked"):
                error = result.get("error") or {}
                group = reasons.setdefault(error.get("code") or result["status"],
                                           {"count": 0, "lines": [], "message": error.get("message")})
                group["count"] += 1
                if len(group["lines"]) < SHOWN_LINES:
                    group["lines"].append(line)

    for chunk in chunked(rows, RECORD_CHUNK):
        flush(chunk)
    return {**status_summary(counts), "reasons": reasons}


def _reader(fmt: str) -> Callable[[IO[str], Callable[[int], None]], Iterator[Row]]:
    return read_csv_rows if fmt == "csv" else _read_lines


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), help="Default: from FILE's extension (.csv, else JSON lines).")
@click.pass_context
def import_command(ctx: click.Context, file: Path, fmt: str | None) -> None:
    """Backfill events from a JSON-lines or CSV file through the normal ingest path.

    Idempotent on (tenant_id, event_id): importing a file again gives duplicates.
    CSV columns: tenant_id, metric, quantity, and optionally user_id, event_id,
    timestamp, properties (JSON text). Prints recorded, duplicates, blocked and
    rejected, with rejection reasons grouped by code and their first line numbers;
    rejected lines also go to the dead letters (source 'import'; on the file only).
    Exits 1 if any line was rejected or blocked; the others are recorded all the same.
    """
    fmt = fmt or ("csv" if file.suffix.lower() == ".csv" else "jsonl")
    with open_backend(ctx) as backend, file.open("r", encoding="utf-8", newline="" if fmt == "csv" else None) as stream:
        with click.progressbar(length=file.stat().st_size or 1, label="Importing events", file=sys.stderr) as bar:
            summary = import_rows(backend, _reader(fmt)(stream, bar.update), file.name)
    emit(summary, [summary], SUMMARY_COLUMNS)
    if ctx.find_root().obj["format"] != "json":
        for code, group in summary["reasons"].items():
            more = ", ..." if group["count"] > len(group["lines"]) else ""
            lines = ", ".join(str(n) for n in group["lines"])
            click.echo(f"{code}: {group['count']} (lines {lines}{more}): {group['message']}", err=True)
    if summary["rejected"] or summary["blocked"]:
        ctx.exit(EXIT_FAILED)
