"""Recording events: `record` (one event) and `import` (a JSON-lines or CSV file, in chunks).

import backfills through the same path as live traffic: the library's
`Metering.record_events` (or POST /api/events/batch with --url), in chunks, so
event ids deduplicate and quotas apply exactly as for live traffic.
`record --file` is the same as `import` of a JSON-lines file.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from usage_metering.client import MeteringClient
from usage_metering.metering import Metering
from usage_metering.schemas import ValidationError, batch_summary
from usage_metering.store import DeadLetter
from usage_metering.store.dead_letters import dead_letter_reason

from .common import EXIT_FAILED, EXIT_INVALID, CliError, open_metering, output_format
from .output import RECORD_COLUMNS, SUMMARY_COLUMNS, as_json, emit

RECORD_CHUNK = 1000  # events per ingest batch (and per HTTP batch request)
CSV_REQUIRED = ("tenant_id", "metric", "quantity")
CSV_OPTIONAL = ("user_id", "event_id", "timestamp", "properties")
SHOWN_LINES = 5  # line numbers listed per rejection code

Row = tuple[int, str, Any]  # (line number, raw text, event dict or ValidationError)


def _parse_properties(pairs: Sequence[str]) -> dict[str, str] | None:
    properties: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="'--property'")
        properties[key] = value
    return properties or None


def _quantity(text: str | None) -> Decimal | str | None:
    """A number as an exact JSON number (like a JSON client sends); anything else as text for the library to judge."""
    if text is not None and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text.strip()):
        return Decimal(text.strip())
    return text


def read_json_lines(stream: IO[str], on_bytes: Callable[[int], None]) -> Iterator[Row]:
    """(line number, the line, parsed JSON or a ValidationError) for each non-blank line."""
    for number, line in enumerate(stream, start=1):
        on_bytes(len(line.encode("utf-8", "replace")))
        if not line.strip():
            continue
        try:
            yield number, line, json.loads(line, parse_float=Decimal)
        except ValueError as exc:
            yield number, line, ValidationError(None, f"not valid JSON: {exc}", "malformed_json")


T = TypeVar("T")


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most `size` items (the last may be shorter)."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@click.command()
@click.option("--tenant", "tenant_id", metavar="TENANT", help="Tenant the usage is billed to.")
@click.option("--metric", metavar="METRIC", help="What was used, e.g. api_calls.")
@click.option("--quantity", metavar="Q", help="How much was used: a decimal >= 0.")
@click.option("--user", "user_id", metavar="USER", help="The tenant's end user.")
@click.option("--event-id", metavar="ID", help="Idempotency key (a UUIDv7 is generated when absent).")
@click.option("--timestamp", metavar="TS", help="RFC 3339 time of the usage (default now).")
@click.option("--property", "properties", multiple=True, metavar="KEY=VALUE", help="A property (repeatable).")
@click.option(
    "--file",
    "events_file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
    help="Record a JSON-lines file ('-' = stdin) instead of one event: the same as `import FILE`.",
)
@click.pass_context
def record(
    ctx: click.Context,
    tenant_id: str | None,
    metric: str | None,
    quantity: str | None,
    user_id: str | None,
    event_id: str | None,
    timestamp: str | None,
    properties: tuple[str, ...],
    events_file: Path | None,
) -> None:
    """Record one usage event (or, with --file, a JSON-lines file exactly as `import` does)."""
    single = (tenant_id, metric, quantity, user_id, event_id, timestamp)
    if events_file is not None:
        if any(v is not None for v in single) or properties:
            raise click.UsageError("--file cannot be combined with single-event options")
        ctx.invoke(import_command, file=events_file, fmt="jsonl")
        return
    if tenant_id is None and metric is None and quantity is None:
        raise click.UsageError("give --tenant, --metric and --quantity, or --file")
    event: dict[str, Any] = {"tenant_id": tenant_id, "metric": metric, "quantity": _quantity(quantity)}
    optional = {
        "user_id": user_id,
        "event_id": event_id,
        "timestamp": timestamp,
        "properties": _parse_properties(properties),
    }
    event.update({k: v for k, v in optional.items() if v is not None})
    with open_metering(ctx, writes="events") as metering:
        result = as_json(metering.record(event))
    if result["status"] == "blocked":
        message = (result.get("error") or {}).get("message", "blocked by the quota")
        raise CliError(f"event {result.get('event_id')} blocked: {message}", EXIT_FAILED)
    data = {"event_id": result["event_id"], "status": result["status"]}
    emit(data, [data], RECORD_COLUMNS)


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


def _import_letter(source: str, row: Row, error: ValidationError) -> DeadLetter:
    line, raw, _data = row
    return DeadLetter("import", raw.encode("utf-8"), dead_letter_reason(error), topic=source, offset=line)


def _rejected(error: ValidationError) -> dict[str, Any]:
    return {"event_id": None, "status": "rejected", "error": error.as_dict()}


def import_batch(metering: Metering | MeteringClient, rows: Sequence[Row], source: str) -> list[dict[str, Any]]:
    """Record one chunk; a result per row in order. On the file (not over HTTP), rejected rows
    become dead letters (source 'import', topic = the file, offset = the line) in the same commit."""
    valid = [row for row in rows if not isinstance(row[2], ValidationError)]
    events = [row[2] for row in valid]
    if isinstance(metering, Metering):
        malformed = [_import_letter(source, row, row[2]) for row in rows if isinstance(row[2], ValidationError)]
        recorded = metering.node.submit_events(
            events,
            dead_letter_for=lambda index, error: _import_letter(source, valid[index], error),
            dead_letters=malformed,
        ).result()
    else:
        recorded = metering.record_events(events)
    results = iter(as_json(recorded))
    return [_rejected(row[2]) if isinstance(row[2], ValidationError) else next(results) for row in rows]


def import_rows(metering: Metering | MeteringClient, rows: Iterator[Row], source: str) -> dict[str, Any]:
    """Import in chunks: the batch summary and, per error code, how many and the first lines."""
    statuses: list[str] = []
    reasons: dict[str, dict[str, Any]] = {}

    def note(line: int, result: Mapping[str, Any]) -> None:
        statuses.append(result["status"])
        if result["status"] in ("rejected", "blocked"):
            error = result.get("error") or {}
            group = reasons.setdefault(
                error.get("code") or result["status"], {"count": 0, "lines": [], "message": error.get("message")}
            )
            group["count"] += 1
            if len(group["lines"]) < SHOWN_LINES:
                group["lines"].append(line)

    for chunk in chunked(rows, RECORD_CHUNK):
        for (line, _raw, _data), result in zip(chunk, import_batch(metering, chunk, source)):
            note(line, result)
    return {**batch_summary(statuses), "reasons": reasons}


def _reader(fmt: str) -> Callable[[IO[str], Callable[[int], None]], Iterator[Row]]:
    return read_csv_rows if fmt == "csv" else read_json_lines


def _import_stream(
    metering: Metering | MeteringClient, stream: IO[str], fmt: str, source: str, size: int | None
) -> dict[str, Any]:
    """Import with a progress bar on stderr when the size is known (a file, not stdin)."""
    if not size:
        return import_rows(metering, _reader(fmt)(stream, lambda _n: None), source)
    with click.progressbar(length=size, label="Importing events", file=sys.stderr) as bar:
        return import_rows(metering, _reader(fmt)(stream, bar.update), source)


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    help="Default: from FILE's extension (.csv, else JSON lines).",
)
@click.pass_context
def import_command(ctx: click.Context, file: Path, fmt: str | None) -> None:
    """Backfill events from a JSON-lines or CSV file ('-' = stdin) through the normal ingest path.

    Idempotent on (tenant_id, event_id): importing a file again gives duplicates.
    CSV columns: tenant_id, metric, quantity, and optionally user_id, event_id,
    timestamp, properties (JSON text). Prints recorded, duplicates, blocked and
    rejected, with rejection reasons grouped by code and their first line numbers;
    rejected lines also go to the dead letters (source 'import'; on the file only).
    Exits 1 if any line was rejected or blocked; the others are recorded all the same.
    """
    fmt = fmt or ("csv" if file.suffix.lower() == ".csv" else "jsonl")
    newline = "" if fmt == "csv" else None
    with open_metering(ctx, writes="events") as metering:
        if str(file) == "-":
            stream = click.open_file("-", encoding="utf-8")
            summary = _import_stream(metering, stream, fmt, "stdin", None)
        else:
            with file.open("r", encoding="utf-8", newline=newline) as stream:
                summary = _import_stream(metering, stream, fmt, file.name, file.stat().st_size)
    emit(summary, [summary], SUMMARY_COLUMNS)
    if output_format() != "json":
        for code, group in summary["reasons"].items():
            more = ", ..." if group["count"] > len(group["lines"]) else ""
            lines = ", ".join(str(n) for n in group["lines"])
            click.echo(f"{code}: {group['count']} (lines {lines}{more}): {group['message']}", err=True)
    if summary["rejected"] or summary["blocked"]:
        ctx.exit(EXIT_FAILED)
