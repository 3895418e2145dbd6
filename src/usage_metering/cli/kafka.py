"""Kafka commands of the CLI: `kafka init` (topics) and `consume` (one consumer-group member)."""

from __future__ import annotations

import click

from usage_metering.schemas import ValidationError
from usage_metering.schemas.topics import DEFAULT_GROUP_ID, DEFAULT_PARTITIONS, DEFAULT_TOPIC
from usage_metering.store import StoreLockedError

from .common import (
    EXIT_FAILED,
    EXIT_INVALID,
    CliError,
    log_format_option,
    log_level_option,
    maintenance_interval_option,
    require_file_mode,
    root_options,
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
@click.option("--group-id", default=DEFAULT_GROUP_ID, show_default=True, help="Consumer group.")
@click.option("--instance-id", default=None, help="Static membership: a restart takes its partitions back at once.")
@click.option(
    "--dead-letter-topic",
    default=None,
    help="Where malformed and blocked messages are copied. Default: <topic>-dead-letters "
    "('' = only the dead_letters table).",
)
@click.option(
    "--max-poll-records",
    default=5000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Most records per poll batch (one DuckDB transaction).",
)
@click.option(
    "--session-timeout-ms",
    default=45_000,
    show_default=True,
    type=click.IntRange(1000, 3_600_000),
    help="How long the group waits for a silent member before giving its partitions to the others "
    "(within the broker's group.min/max.session.timeout.ms).",
)
@maintenance_interval_option
@webhook_url_option
@webhook_secret_option
@log_format_option
@log_level_option
@click.pass_context
def consume_command(
    ctx: click.Context,
    bootstrap_servers: str,
    topic: str,
    group_id: str,
    instance_id: str | None,
    dead_letter_topic: str | None,
    max_poll_records: int,
    session_timeout_ms: int,
    maintenance_interval: float,
    webhook_url: str | None,
    webhook_secret: str | None,
    log_format: str,
    log_level: str,
) -> None:
    """Consume usage events from Kafka into --db (or --lake), exactly once, until SIGTERM/SIGINT (then exit 0).

    This process becomes the database file's one writer (a file held by another
    process fails at once), so it also delivers the quota alerts its batches
    record, as `serve` does.
    """
    from usage_metering.kafka.consumer import run_consumer
    from usage_metering.metering import Metering
    from usage_metering.node.logs import configure_logging
    from usage_metering.node.maintenance import LakeMaintenance
    from usage_metering.node.runtime import tune_garbage_collector
    from usage_metering.node.webhooks import WebhookDispatcher, webhook_settings

    require_file_mode(ctx, "consume")
    configure_logging(log_format, log_level.lower())
    tune_garbage_collector()
    options = root_options(ctx)
    try:
        webhooks = webhook_settings(options["db"], webhook_url, webhook_secret)
        metering = Metering.open(options["db"], lake=options["lake"], late_window=options["late_window"])
    except ValidationError as error:
        raise CliError(str(error), EXIT_INVALID) from None
    except StoreLockedError as error:
        raise CliError(str(error), EXIT_FAILED) from None
    with metering:
        dispatcher = WebhookDispatcher(metering, webhooks).start()
        maintenance = LakeMaintenance(metering, maintenance_interval).start()
        try:
            consumer = metering.node.kafka_consumer(
                bootstrap_servers,
                topic=topic,
                group_id=group_id,
                group_instance_id=instance_id,
                dead_letter_topic=dead_letter_topic,
                max_poll_records=max_poll_records,
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=max(100, session_timeout_ms // 3),
            )
            code = run_consumer(consumer)
        finally:
            maintenance.stop()
            dispatcher.stop()
    ctx.exit(code)
