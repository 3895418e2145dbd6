"""The bottom of the command line: errors and exit codes, shared options, and what a command talks to.

Exit codes:

- 0: success.
- 1: the request was understood but could not be done: an unknown tenant, plan
  or metric; an event blocked by a quota; any event of ``import`` rejected or
  blocked; the database file held by another process (the message suggests
  ``--url``); the server refused the API key.
- 2: invalid input: a bad option or argument (click's usage errors) or a value
  the library refuses (``Error: <field>: <message>``).
- 3: the server could not be reached or failed (connection error, HTTP 5xx).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import click
from click.core import ParameterSource

from usage_metering.client import MeteringClient, MeteringHttpError, MeteringUnreachable
from usage_metering.schemas import NotFoundError, ValidationError
from usage_metering.schemas.topics import DEFAULT_GROUP_ID, DEFAULT_MAX_POLL_RECORDS, DEFAULT_SESSION_TIMEOUT_MS
from usage_metering.store import LakeError, NewerFileFormatError, StoreLockedError

if TYPE_CHECKING:
    from usage_metering.metering import Metering
    from usage_metering.node.config import HttpOptions, KafkaOptions

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3


class CliError(click.ClickException):
    """Printed as `Error: <message>` on stderr, no traceback; exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares a ClassVar but reads it per instance


class MeteringGroup(click.Group):
    """Turns the library's user errors into `Error: ...` lines and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ValidationError as error:
            raise CliError(str(error), EXIT_INVALID) from None
        except NotFoundError as error:
            raise CliError(str(error), EXIT_FAILED) from None
        except (StoreLockedError, NewerFileFormatError) as error:
            raise CliError(str(error), EXIT_FAILED) from None
        except LakeError as error:
            raise CliError(str(error), EXIT_UNAVAILABLE) from None
        except MeteringUnreachable as error:
            raise CliError(str(error), EXIT_UNAVAILABLE) from None
        except MeteringHttpError as error:  # 401/403 and 409 are refusals; 5xx (but a held file) is the node failing
            failed = error.status >= 500 and error.code != "store_locked"
            raise CliError(str(error), EXIT_UNAVAILABLE if failed else EXIT_FAILED) from None


def load_json(text: str, what: str) -> Any:
    """Parse JSON with exact decimals (like the HTTP API); a syntax error is invalid input."""
    try:
        return json.loads(text, parse_float=Decimal)
    except ValueError as exc:
        raise CliError(f"{what} is not valid JSON: {exc}", EXIT_INVALID) from None


def root_options(ctx: click.Context) -> dict[str, Any]:
    """The options of the `usage-metering` group: db, lake, url, api_key, format, late_window, memory_limit."""
    return cast(dict[str, Any], ctx.find_root().obj)


def output_format() -> str:
    return str(root_options(click.get_current_context())["format"])


@contextmanager
def open_metering(ctx: click.Context, *, writes: str | None = None) -> Iterator[Metering | MeteringClient]:
    """The node over HTTP when --url is given, else the library on the --db file or --lake (closed afterwards).

    Both have the same methods and return types, so a command works the same either way.
    `writes`: None (reads only), "config" (plans, tenants, metrics, keys) or "events". On a lake,
    reads open it read-only, configuration is written beside the nodes (no writer thread here),
    and events go through a node (--url): its consumer group owns the tenants' partitions.
    """
    options = root_options(ctx)
    if options["url"]:
        if ctx.find_root().get_parameter_source("late_window_days") is ParameterSource.COMMANDLINE:
            raise CliError(
                "--late-window-days applies to the database file (--db); with --url the node's "
                "own window applies (set it on its serve command)",
                EXIT_INVALID,
            )
        with MeteringClient(options["url"], api_key=options["api_key"]) as client:
            yield client
        return
    from usage_metering.metering import Metering

    lake = options["lake"]
    if lake is not None and writes == "events":
        raise CliError(
            "on a lake (--lake), events are recorded through a running node: --url http://NODE:PORT", EXIT_INVALID
        )
    with Metering.open(
        options["db"],
        lake=lake,
        read_only=lake is not None and writes is None,
        ingest=lake is None,
        late_window=options["late_window"],
        memory_limit=options["memory_limit"],
    ) as metering:
        yield metering


def require_file_mode(ctx: click.Context, command: str) -> None:
    if root_options(ctx)["url"]:
        raise CliError(f"{command} works on the database file (--db), not with --url", EXIT_INVALID)


log_format_option = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line (with a request_id and an access line per HTTP request).",
)
log_level_option = click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Least severe level logged.",
)

webhook_url_option = click.option(
    "--webhook-url", metavar="URL", help="Where quota alerts go for tenants without their own webhook_url."
)
webhook_secret_option = click.option(
    "--webhook-secret",
    metavar="SECRET",
    envvar="USAGE_METERING_WEBHOOK_SECRET",
    show_envvar=True,
    help="HMAC key signing alert webhooks (default: generated once into <db>.webhook-secret).",
)


maintenance_interval_option = click.option(
    "--maintenance-interval",
    type=click.FloatRange(min=0),
    default=3600,
    show_default=True,
    metavar="SECONDS",
    help="With --lake: run a lake maintenance pass (merge small files, expire snapshots) this often; 0 = never.",
)


period_option = click.option("--period", metavar="YYYY-MM", help="Billing period starting in this month.")


def kafka_group_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The consumer-group member's options, the same on `serve` (Kafka mode) and `consume`."""
    options = [
        click.option("--group-id", default=DEFAULT_GROUP_ID, show_default=True, help="Consumer group."),
        click.option(
            "--instance-id", default=None, help="Static membership: a restart takes its partitions back at once."
        ),
        click.option(
            "--dead-letter-topic",
            default=None,
            help="Where malformed and blocked messages are copied. Default: <topic>-dead-letters "
            "('' = only the dead_letters table).",
        ),
        click.option(
            "--max-poll-records",
            default=DEFAULT_MAX_POLL_RECORDS,
            show_default=True,
            type=click.IntRange(1, 1_000_000),
            help="Most records per poll batch (one DuckDB transaction).",
        ),
        click.option(
            "--session-timeout-ms",
            default=DEFAULT_SESSION_TIMEOUT_MS,
            show_default=True,
            type=click.IntRange(1000, 3_600_000),
            help="How long the group waits for a silent member before giving its partitions to the others "
            "(within the broker's group.min/max.session.timeout.ms).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def kafka_options(bootstrap_servers: str, topic: str, options: dict[str, Any]) -> KafkaOptions:
    """The node's group membership from the command's options (see `kafka_group_options`)."""
    from usage_metering.node.config import KafkaOptions

    return KafkaOptions(
        bootstrap_servers,
        topic,
        options["group_id"],
        options["instance_id"],
        options["dead_letter_topic"],
        options["max_poll_records"],
        options["session_timeout_ms"],
    )


def run_node_command(
    ctx: click.Context,
    options: dict[str, Any],
    *,
    http: HttpOptions | None,
    kafka: KafkaOptions | None,
    demo: bool = False,
) -> None:
    """Run the node the root options (--db, --lake, --late-window-days) and the command's describe; exits
    with the node's code (the library's errors become messages in MeteringGroup)."""
    from usage_metering.node.config import NodeConfig, WebhookOptions
    from usage_metering.node.server import run_node

    root = root_options(ctx)
    config = NodeConfig(
        db_path=root["db"],
        lake=root["lake"],
        late_window=root["late_window"],
        memory_limit=root["memory_limit"],
        http=http,
        kafka=kafka,
        webhooks=WebhookOptions(options["webhook_url"], options["webhook_secret"]),
        maintenance_interval=options["maintenance_interval"],
        demo=demo,
        log_format=options["log_format"],
        log_level=options["log_level"].lower(),
    )
    ctx.exit(run_node(config))
