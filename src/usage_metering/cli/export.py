"""`usage-metering export`: events out to Parquet, CSV or JSON lines.

export reads the database file read-only (no migrations, no writer), so it runs
on the node's snapshot while the node is up, or on the main file once it is
stopped. The columns are the event format, so `import` reads the file back.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from usage_metering.store import Lake, StoreLockedError
from usage_metering.store.export import FORMATS

from .common import EXIT_FAILED, EXIT_INVALID, CliError, root_options
from .output import emit

EXPORT_COLUMNS = ("rows", "format", "path")


def _export_format(fmt: str | None, output: Path | None) -> str:
    if fmt is not None:
        return fmt
    suffix = output.suffix.lower().lstrip(".") if output is not None else ""
    return {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl"}.get(
        suffix, "parquet"
    )


def _open_read_only(db: Path, lake: Lake | None) -> Any:
    from usage_metering.metering import Metering

    if lake is not None:
        return Metering.open(db, lake=lake, read_only=True)
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
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="File format (default: from --output's extension, else parquet).",
)
@click.option(
    "--from", "start", type=click.DateTime(["%Y-%m-%d"]), metavar="YYYY-MM-DD", help="First UTC day (inclusive)."
)
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), metavar="YYYY-MM-DD", help="Last UTC day (inclusive).")
@click.option("--tenant", "tenant_id", metavar="TENANT", help="Only this tenant's events.")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: events.<format>)."
)
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
    if root_options(ctx)["url"]:
        raise CliError(
            "export needs the database file, not --url: use --db with the node's snapshot "
            "(e.g. --db data/metering.snapshot.duckdb) or with the main file while the node is stopped",
            EXIT_INVALID,
        )
    fmt = _export_format(fmt, output)
    target = output if output is not None else Path(f"events.{fmt}")
    metering = _open_read_only(root_options(ctx)["db"], root_options(ctx)["lake"])
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
