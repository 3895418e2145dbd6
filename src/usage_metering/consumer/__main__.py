"""`python -m usage_metering.consumer --bootstrap-servers HOST:PORT --db PATH`: run a consumer node.

Exit codes: 0 after SIGTERM/SIGINT (current batch committed), 2 for usage
errors or a database file held by another process, 1 for anything else.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import timedelta

from usage_metering.schemas import DEFAULT_LATE_WINDOW
from usage_metering.store import StoreLockedError

from .kafka_consumer import DEFAULT_GROUP_ID, run_consumer_process
from .topics import DEFAULT_DEAD_LETTER_TOPIC, DEFAULT_PARTITIONS, DEFAULT_TOPIC, create_topics


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m usage_metering.consumer",
        description="Consume usage events from Kafka into DuckDB, exactly once.",
    )
    parser.add_argument("--bootstrap-servers", required=True, help="Kafka bootstrap servers, HOST:PORT[,...]")
    parser.add_argument("--db", required=True, help="DuckDB file this node owns (one writer process)")
    parser.add_argument("--topic", default=DEFAULT_TOPIC)
    parser.add_argument("--group-id", default=DEFAULT_GROUP_ID)
    parser.add_argument("--dead-letter-topic", default=DEFAULT_DEAD_LETTER_TOPIC,
                        help="where malformed/blocked messages are copied; '' disables")
    parser.add_argument("--instance-id", default=None,
                        help="static group membership (group.instance.id): a restart takes its "
                             "partitions back without waiting for a rebalance")
    parser.add_argument("--max-poll-records", type=int, default=5000)
    parser.add_argument("--late-window-days", type=float, default=DEFAULT_LATE_WINDOW.total_seconds() / 86400)
    parser.add_argument("--session-timeout-ms", type=int, default=None)
    parser.add_argument("--create-topics", action="store_true",
                        help=f"create the topics first if missing ({DEFAULT_PARTITIONS} partitions)")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    options = {}
    if args.session_timeout_ms is not None:
        options["session_timeout_ms"] = args.session_timeout_ms
    try:
        if args.create_topics:
            create_topics(args.bootstrap_servers, args.topic, dead_letter_topic=args.dead_letter_topic or None)
        return run_consumer_process(
            args.bootstrap_servers,
            args.db,
            args.topic,
            group_id=args.group_id,
            dead_letter_topic=args.dead_letter_topic or None,
            max_poll_records=args.max_poll_records,
            late_window=timedelta(days=args.late_window_days),
            group_instance_id=args.instance_id,
            **options,
        )
    except StoreLockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
