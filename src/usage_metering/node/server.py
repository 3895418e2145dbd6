"""Starting a node: the one builder `serve` and `consume` share, and the process's signal handling.

`run_node` opens the store (this process becomes its one writer), starts what runs beside ingest
(alert delivery, lake maintenance, snapshots), then serves HTTP (uvicorn, with a Kafka consumer
thread in Kafka mode) or runs the Kafka consumer in the main thread, until SIGTERM/SIGINT: then the
current batch is committed and the process exits 0.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn

from usage_metering.api.app import create_app
from usage_metering.api.auth import serving_host
from usage_metering.metering import Metering

from .config import HttpOptions, KafkaOptions, NodeConfig
from .demo import init_demo
from .kafka_mode import KafkaMode
from .logs import configure_logging
from .maintenance import LakeMaintenance
from .runtime import tune_garbage_collector
from .snapshots import SnapshotScheduler
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


def run_node(config: NodeConfig) -> int:
    """Run the node `config` describes until stopped; returns the exit code (0 after a clean stop).

    Opening the store comes first, so a file held by another process fails (StoreLockedError) before
    anything connects to Kafka or binds a port.
    """
    configure_logging(config.log_format, config.log_level)
    tune_garbage_collector()
    hooks = config.webhooks
    webhooks = webhook_settings(
        config.db_path, hooks.url, hooks.secret, hooks.retry_base_seconds, hooks.retry_max_seconds
    )
    kafka = KafkaMode(config.kafka) if config.kafka is not None and config.http is not None else None
    publisher = kafka.producer if kafka is not None else None
    metering = Metering.open(
        config.db_path,
        lake=config.lake,
        memory_limit=config.memory_limit,
        late_window=config.late_window,
        publisher=publisher,
    )
    try:
        if config.demo:
            log.info("demo data ready: %s", init_demo(metering))
        dispatcher = WebhookDispatcher(metering, webhooks).start()
        maintenance = LakeMaintenance(metering, config.maintenance_interval).start()
        try:
            if config.http is not None:
                return _serve_http(metering, config, config.http, kafka)
            assert config.kafka is not None, "a node serves HTTP, consumes Kafka, or both"
            return _consume(metering, config.kafka)
        finally:
            maintenance.stop()
            dispatcher.stop()
    finally:
        metering.close()  # commits whatever the ingestor still holds


def _serve_http(metering: Metering, config: NodeConfig, http: HttpOptions, kafka: KafkaMode | None) -> int:
    host = serving_host(http.host, metering)  # loopback only while no API key exists
    where = f"ducklake:{config.lake.catalog}" if config.lake else config.db_path
    log.info("serving %s on http://%s:%d", where, host, http.port)
    snapshots = SnapshotScheduler(metering, 0 if config.lake else http.snapshot_interval, http.snapshot_path).start()
    app = create_app(metering, close_on_shutdown=False)  # closed by run_node, after the dispatcher stops
    if kafka is not None:
        kafka.start(metering, app, node_url=http.advertise_url or f"http://{host}:{http.port}")
    server_config = uvicorn.Config(
        app,
        host=host,
        port=http.port,
        log_level=config.log_level,
        access_log=False,
        log_config=None if config.log_format == "json" else uvicorn.config.LOGGING_CONFIG,  # None: ours, in JSON
        http="auto",
        loop="auto",
        timeout_keep_alive=30,
        timeout_graceful_shutdown=10,
    )
    try:
        NodeServer(server_config).run()
    finally:
        if kafka is not None:
            kafka.stop()
        snapshots.stop()  # the last snapshot, after the HTTP server has drained
    return 0


def _consume(metering: Metering, kafka: KafkaOptions) -> int:
    """The Kafka consumer in the main thread until SIGTERM/SIGINT: the current batch is finished and
    committed, then the consumer closes. A failed DuckDB commit propagates (nothing after it is
    acknowledged; a restart resumes from the stored offsets)."""
    consumer = metering.node.kafka_consumer(kafka.bootstrap_servers, **kafka.consumer_options())
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing the current batch", signal.Signals(signum).name)
        stop.set()
        consumer.stop()

    previous = {}
    try:
        if threading.current_thread() is threading.main_thread():
            previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGTERM, signal.SIGINT)}
        log.info("consuming %s as group %s into %s", consumer.topic, consumer.group_id, consumer.database.path)
        consumer.run(stop)
    finally:
        consumer.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    log.info("stopped cleanly: %s", json.dumps(consumer.stats.as_dict()))
    return 0
