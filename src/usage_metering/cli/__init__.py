"""The `usage-metering` command line: a thin click layer over the `Metering` library.

Every command works two ways with the same output:

- on the database file (``--db``, default ``data/metering.duckdb``), through
  ``Metering.open`` in this process, when no node is running; or
- against a running node over HTTP (``--url http://HOST:PORT``, optionally
  ``--api-key``), since DuckDB allows one writer process per file.

One module per command group; `common` (errors, options, the library or its HTTP client) and
`output` (JSON, CSV, tables) are the bottom they all build on. Exit codes are
listed in `common`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import click
from click.core import ParameterSource

from usage_metering import __version__
from usage_metering.schemas import DEFAULT_LATE_WINDOW
from usage_metering.store.database import DEFAULT_DB_PATH, DEFAULT_LAKE_NODE_PATH, DEFAULT_MEMORY_LIMIT
from usage_metering.store.lake import Lake

from . import config, events, export, kafka, keys, node, reports
from .common import MeteringGroup

MEMORY_LIMIT = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)", re.IGNORECASE)


def _memory_limit(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """--memory-limit as DuckDB reads it; anything else is a usage error, before a store is opened."""
    if not MEMORY_LIMIT.fullmatch(value.strip()):
        raise click.BadParameter(f"{value!r} is not a size such as 512MB or 4GB")
    return value.strip()


@click.group(cls=MeteringGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_DB_PATH,
    show_default=True,
    envvar="USAGE_METERING_DB",
    show_envvar=True,
    help="The DuckDB file, opened in this process (only when no node holds it). With --lake: where this "
    f"node keeps its local files (default {DEFAULT_LAKE_NODE_PATH}).",
)
@click.option(
    "--lake",
    metavar="CATALOG",
    envvar="USAGE_METERING_LAKE",
    show_envvar=True,
    help="Use a DuckLake instead of the file: its catalog, e.g. 'postgres:host=H dbname=D user=U' "
    "(cluster mode; every node names the same one).",
)
@click.option(
    "--lake-data",
    metavar="PATH|URL",
    envvar="USAGE_METERING_LAKE_DATA",
    show_envvar=True,
    help="The lake's data path (a directory every node shares, or s3://...); needed when the lake is created.",
)
@click.option(
    "--url",
    metavar="URL",
    envvar="USAGE_METERING_URL",
    show_envvar=True,
    help="Talk to a running node over HTTP (e.g. http://127.0.0.1:8005) instead of opening --db.",
)
@click.option(
    "--api-key",
    metavar="KEY",
    envvar="USAGE_METERING_API_KEY",
    show_envvar=True,
    help="API key sent as 'Authorization: Bearer KEY' with --url.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "csv"], case_sensitive=False),
    default="table",
    show_default=True,
    help="Output: an aligned table, JSON (the API's shapes) or CSV with a header.",
)
@click.option(
    "--late-window-days",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_LATE_WINDOW.total_seconds() / 86400,
    show_default=True,
    envvar="USAGE_METERING_LATE_WINDOW_DAYS",
    show_envvar=True,
    help="Accept event timestamps this many days old (serve, consume, record, import on --db; raise it to backfill).",
)
@click.option(
    "--memory-limit",
    default=DEFAULT_MEMORY_LIMIT,
    callback=_memory_limit,
    show_default=True,
    envvar="USAGE_METERING_MEMORY_LIMIT",
    show_envvar=True,
    help="DuckDB's buffer pool on --db or --lake, in DuckDB's syntax (512MB, 4GB): with the key index, what "
    "bounds a node's memory; raise it for large reports.",
)
@click.version_option(__version__, prog_name="usage-metering")
@click.pass_context
def cli(
    ctx: click.Context,
    db: Path,
    lake: str | None,
    lake_data: str | None,
    url: str | None,
    api_key: str | None,
    output_format: str,
    late_window_days: float,
    memory_limit: str,
) -> None:
    """Usage metering: record usage events, check quotas, report usage and bills.

    Works on the DuckDB file (--db) when no node is running, or on a running
    node over HTTP (--url). Exit codes: 0 ok; 1 failed (unknown id, events
    rejected or blocked, database held by another process); 2 invalid input;
    3 server unreachable or failing.
    """
    if lake_data is not None and lake is None:
        raise click.UsageError("--lake-data needs --lake (the lake's catalog)")
    if lake is not None and ctx.get_parameter_source("db") is ParameterSource.DEFAULT:
        db = DEFAULT_LAKE_NODE_PATH
    ctx.obj = {
        "db": db,
        "lake": Lake(lake, lake_data) if lake else None,
        "url": url,
        "api_key": api_key,
        "format": output_format.lower(),
        "late_window": timedelta(days=late_window_days),
        "memory_limit": memory_limit,
    }


for command in (
    node.serve,
    node.init_demo_command,
    node.upgrade_file_command,
    node.maintain_command,
    events.record,
    events.import_command,
    export.export_command,
    reports.usage,
    reports.quota,
    reports.report,
    reports.top_users_command,
    reports.dead_letters,
    reports.alerts,
    config.plans,
    config.tenants,
    config.metrics,
    keys.keys,
    kafka.kafka_group,
    kafka.consume_command,
):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (`usage-metering`, `python -m usage_metering`)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="usage-metering")
