"""`serve` (run a node on the --db file) and `init-demo`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from usage_metering.schemas.topics import DEFAULT_TOPIC

from .common import (
    EXIT_FAILED,
    EXIT_INVALID,
    CliError,
    kafka_group_options,
    kafka_options,
    log_format_option,
    log_level_option,
    maintenance_interval_option,
    open_metering,
    require_file_mode,
    root_options,
    run_node_command,
    webhook_secret_option,
    webhook_url_option,
)
from .output import SUMMARY_COLUMNS, emit


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8005, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--init-demo", is_flag=True, help="Load the demo metrics, plans, tenants and events first.")
@log_format_option
@log_level_option
@webhook_url_option
@webhook_secret_option
@click.option(
    "--snapshot-interval",
    type=click.FloatRange(min=0),
    default=300,
    show_default=True,
    metavar="SECONDS",
    help="Publish the read-only analyst snapshot this often (and at shutdown); 0 = never.",
)
@click.option(
    "--snapshot-path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Snapshot file (default: <db stem>.snapshot.duckdb next to --db).",
)
@click.option(
    "--kafka-bootstrap-servers",
    metavar="HOST:PORT[,...]",
    envvar="USAGE_METERING_KAFKA",
    show_envvar=True,
    help="Kafka mode: POST /api/events produces to Kafka (202 after acks=all) and this node consumes the topic.",
)
@click.option("--kafka-topic", default=DEFAULT_TOPIC, show_default=True, help="Usage events topic (Kafka mode).")
@kafka_group_options
@maintenance_interval_option
@click.option(
    "--advertise-url",
    metavar="URL",
    help="With --lake and Kafka: where the other nodes reach this one "
    "(default http://HOST:PORT); they forward quota checks about its partitions' tenants here.",
)
@click.pass_context
def serve(ctx: click.Context, /, **options: Any) -> None:
    """Run the metering node: this process owns --db (or writes to --lake) and serves the HTTP API.

    Also serves GET /metrics (Prometheus), /healthz (liveness) and /readyz (readiness),
    and POSTs quota alerts to webhooks. The Kafka group options apply in Kafka mode.
    """
    require_file_mode(ctx, "serve")
    from usage_metering.node.config import HttpOptions

    http = HttpOptions(
        options["host"],
        options["port"],
        options["advertise_url"],
        options["snapshot_interval"],
        options["snapshot_path"],
    )
    bootstrap_servers = options["kafka_bootstrap_servers"]
    kafka = kafka_options(bootstrap_servers, options["kafka_topic"], options) if bootstrap_servers else None
    run_node_command(ctx, options, http=http, kafka=kafka, demo=options["init_demo"])


@click.command("init-demo")
@click.pass_context
def init_demo_command(ctx: click.Context) -> None:
    """Create the demo metrics, plans and tenants and record sample events (safe to repeat)."""
    require_file_mode(ctx, "init-demo")
    from usage_metering.metering import Metering
    from usage_metering.node.demo import init_demo

    with open_metering(ctx, writes="events") as metering:
        assert isinstance(metering, Metering)  # require_file_mode: the library on the file, not a client
        counts = init_demo(metering)
    emit(counts, [counts], SUMMARY_COLUMNS)


@click.command("upgrade-file")
@click.pass_context
def upgrade_file_command(ctx: click.Context) -> None:
    """Convert a --db file written by DuckDB 2.x (an earlier version) to this version's DuckDB.

    Exports it with DuckDB 2.0.1 (fetched from PyPI into a cache directory),
    imports the export, checks every table's row count, and keeps the original
    as <file>.duckdb-2.0.1. Stop the node first.
    """
    require_file_mode(ctx, "upgrade-file")
    from usage_metering.store.file_format import convert_newer_file

    path = root_options(ctx)["db"]
    if not Path(path).exists():
        raise CliError(f"{path} does not exist", EXIT_INVALID)
    conversion = convert_newer_file(path)
    if conversion is None:
        click.echo(f"{path} is already readable by this version: nothing to convert", err=True)
        return
    summary = {
        "path": str(conversion.path),
        "backup": str(conversion.backup),
        "tables": len(conversion.rows),
        "rows": sum(conversion.rows.values()),
    }
    emit(summary, [summary], ("path", "backup", "tables", "rows"))


@click.command("maintain")
@click.option(
    "--keep-snapshots-hours",
    type=click.FloatRange(min=0),
    default=24,
    show_default=True,
    help="Expire lake snapshots older than this (time travel and reads running longer than it may fail).",
)
@click.pass_context
def maintain_command(ctx: click.Context, keep_snapshots_hours: float) -> None:
    """One maintenance pass over --lake: flush inlined rows, merge small files, expire snapshots, delete files.

    Safe while nodes ingest; nodes also run it on their own (--maintenance-interval).
    Exits 1 when a step failed (it is tried again by the next pass).
    """
    require_file_mode(ctx, "maintain")
    lake = root_options(ctx)["lake"]
    if lake is None:
        raise CliError("maintain works on a lake: give --lake (a DuckDB file needs no maintenance)", EXIT_INVALID)
    from usage_metering.metering import Metering

    report = Metering.maintain(lake, timedelta(hours=keep_snapshots_hours))
    rows = [{"step": step, "result": str(count)} for step, count in report.done.items()]
    rows += [{"step": step, "result": f"failed: {error}"} for step, error in report.failed.items()]
    emit(report.as_dict(), rows, ("step", "result"))
    if report.failed:
        ctx.exit(EXIT_FAILED)
