"""Kafka commands of the CLI: `kafka init` (topics) and `consume` (one consumer-group member)."""

from __future__ import annotations

from typing import Any

import click

from usage_metering.schemas.topics import DEFAULT_PARTITIONS, DEFAULT_TOPIC

from .common import (
    kafka_group_options,
    kafka_options,
    log_format_option,
    log_level_option,
    maintenance_interval_option,
    require_file_mode,
    run_node_command,
    webhook_secret_option,
    webhook_url_option,
)

_BOOTSTRAP = click.option(
    "--bootstrap-servers",
    required=True,
    envvar="KAFKA_BOOTSTRAP_SERVERS",
    show_envvar=True,
    metavar="HOST:PORT[,...]",
    help="Kafka brokers to start from.",
)
_TOPIC = click.option("--topic", default=DEFAULT_TOPIC, show_default=True, help="Usage events topic.")


@click.group("kafka")
def kafka_group() -> None:
    """Kafka topics for the usage-events pipeline."""


@kafka_group.command("init")
@_BOOTSTRAP
@_TOPIC
@click.option(
    "--partitions",
    default=DEFAULT_PARTITIONS,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Partitions of the events topic (the unit of scale-out; events are keyed by tenant).",
)
@click.option("--dead-letter-topic", default=None, help="Default: <topic>-dead-letters ('' = none).")
def kafka_init(bootstrap_servers: str, topic: str, partitions: int, dead_letter_topic: str | None) -> None:
    """Create the events topic and its dead-letter topic (existing ones are left as they are)."""
    from usage_metering.kafka.topics import create_topics
    from usage_metering.schemas.topics import dead_letter_topic_for

    if dead_letter_topic is None:
        dead_letter_topic = dead_letter_topic_for(topic)
    created = create_topics(bootstrap_servers, topic, partitions, dead_letter_topic)
    for name in [topic] + ([dead_letter_topic] if dead_letter_topic else []):
        click.echo(f"{name}: {'created' if name in created else 'exists'}")


@click.command("consume")
@_BOOTSTRAP
@_TOPIC
@kafka_group_options
@maintenance_interval_option
@webhook_url_option
@webhook_secret_option
@log_format_option
@log_level_option
@click.pass_context
def consume_command(ctx: click.Context, /, bootstrap_servers: str, topic: str, **options: Any) -> None:
    """Consume usage events from Kafka into --db (or --lake), exactly once, until SIGTERM/SIGINT (then exit 0).

    This process becomes the database file's one writer (a file held by another
    process fails at once), so it also delivers the quota alerts its batches
    record, as `serve` does.
    """
    require_file_mode(ctx, "consume")
    kafka = kafka_options(bootstrap_servers, topic, options)
    run_node_command(ctx, options, http=None, kafka=kafka)
