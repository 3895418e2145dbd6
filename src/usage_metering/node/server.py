"""Starting the node: the library, the ASGI app and uvicorn in one process."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import uvicorn

from usage_metering.api.app import create_app
from usage_metering.api.auth import serving_host
from usage_metering.metering import Metering
from usage_metering.schemas import DEFAULT_LATE_WINDOW
from usage_metering.schemas.topics import DEFAULT_TOPIC
from usage_metering.store import Lake

from .demo import init_demo
from .kafka_mode import KafkaMode
from .logs import configure_logging
from .maintenance import DEFAULT_MAINTENANCE_INTERVAL, LakeMaintenance
from .runtime import tune_garbage_collector
from .snapshots import DEFAULT_SNAPSHOT_INTERVAL, SnapshotScheduler
from .webhooks import WebhookDispatcher, webhook_settings

log = logging.getLogger("usage_metering")


class NodeServer(uvicorn.Server):
    """uvicorn, except that SIGTERM/SIGINT end in a clean exit 0 after the graceful shutdown.

    Stock uvicorn re-raises the caught signal once it has shut down, so the
    process dies by the signal (exit -15), which supervisors and CI read as a crash.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def run_server(
    db_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8005,
    demo: bool = False,
    log_level: str = "info",
    log_format: str = "text",
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    webhook_retry_base_seconds: float = 1.0,
    webhook_retry_max_seconds: float = 300.0,
    snapshot_interval: float = DEFAULT_SNAPSHOT_INTERVAL,
    snapshot_path: str | Path | None = None,
    kafka_bootstrap_servers: str | None = None,
    kafka_topic: str = DEFAULT_TOPIC,
    late_window: timedelta = DEFAULT_LATE_WINDOW,
    lake: Lake | None = None,
    maintenance_interval: float = DEFAULT_MAINTENANCE_INTERVAL,
    advertise_url: str | None = None,
) -> None:
    """Open the database (this process becomes its one writer) and serve until stopped.

    With `lake`, the store is that DuckLake (`db_path` is where this node keeps its local
    files) and no snapshot is published: analysts attach the lake itself. A lake maintenance
    pass runs every `maintenance_interval` seconds (0 = never). With a lake and Kafka, the node
    records `advertise_url` (default http://HOST:PORT) as the owner of the partitions it
    consumes, and other nodes forward quota checks about those tenants there.

    Events with timestamps older than `late_window` are rejected (HTTP and Kafka alike).

    Quota alerts go to each tenant's webhook_url, else `webhook_url`, signed with
    `webhook_secret` (see usage_metering.node.webhooks.resolve_secret when None).

    `log_format="json"` logs one JSON object per line, with an access line per request.

    Every `snapshot_interval` seconds (0 = never) and at shutdown, an analyst snapshot
    is published at `snapshot_path` (default `<db stem>.snapshot.duckdb`).

    With `kafka_bootstrap_servers`, events posted over HTTP are produced to
    `kafka_topic` and a consumer in this process ingests the topic (Kafka mode).
    """
    configure_logging(log_format, log_level)
    tune_garbage_collector()
    webhooks = webhook_settings(
        db_path, webhook_url, webhook_secret, webhook_retry_base_seconds, webhook_retry_max_seconds
    )
    kafka = KafkaMode(kafka_bootstrap_servers, kafka_topic) if kafka_bootstrap_servers else None
    metering = Metering.open(db_path, lake=lake, late_window=late_window, publisher=kafka.producer if kafka else None)
    if demo:
        counts = init_demo(metering)
        log.info("demo data ready: %s", counts)
    host = serving_host(host, metering)  # loopback only while no API key exists
    log.info("serving %s on http://%s:%d", f"ducklake:{lake.catalog}" if lake else db_path, host, port)
    dispatcher = WebhookDispatcher(metering, webhooks).start()
    snapshots = SnapshotScheduler(metering, 0 if lake else snapshot_interval, snapshot_path).start()
    maintenance = LakeMaintenance(metering, maintenance_interval).start()
    app = create_app(metering, close_on_shutdown=False)  # closed below, after the dispatcher stops
    if kafka is not None:
        kafka.start(metering, app, node_url=advertise_url or f"http://{host}:{port}")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        log_config=None if log_format == "json" else uvicorn.config.LOGGING_CONFIG,  # None: ours, in JSON
        http="auto",
        loop="auto",
        timeout_keep_alive=30,
        timeout_graceful_shutdown=10,
    )
    try:
        NodeServer(config).run()
    finally:
        if kafka is not None:
            kafka.stop()
        maintenance.stop()
        dispatcher.stop()
        snapshots.stop()  # the last snapshot, after the HTTP server has drained
        metering.close()  # commits whatever the ingestor still holds
